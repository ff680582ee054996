"""Timing shared by the benchmark scripts: the best of several runs, since one run is noisy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


def timings_of(repeat: int, work: Callable[[], Result]) -> tuple[list[float], Result]:
    """Run ``work`` ``repeat`` times; every wall time in seconds and the last result.

    For a target in absolute seconds the slowest run matters as much as the best one.
    """
    timings = []
    result = None
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = work()
        timings.append(time.perf_counter() - started)
    return timings, result  # type: ignore[return-value]


def best_of(repeat: int, work: Callable[[], Result]) -> tuple[float, Result]:
    """Run ``work`` ``repeat`` times; the shortest wall time in seconds and the last result."""
    timings, result = timings_of(repeat, work)
    return min(timings), result
