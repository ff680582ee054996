"""Lengths of time written by people: ``30d``, ``7d``, ``12h``, ``2w``, ``90m`` (minutes).

The CLI flags (``--inactivity 30d``, ``--window 7d``, ``--horizon 90d``) and the pages share
this one parser so that a window means the same everywhere.
"""

from __future__ import annotations

import datetime as dt
import re

from core.errors import TenureError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str, name: str = "duration") -> dt.timedelta:
    """``'30d'`` -> 30 days. A bare number means days. Units: s, m (minutes), h, d, w.

    Raises:
        TenureError: the text is not a positive length of time; the message names ``name``.

    Example:
        >>> parse_duration("7d")
        datetime.timedelta(days=7)
        >>> parse_duration("36h")
        datetime.timedelta(days=1, seconds=43200)
    """
    match = _PATTERN.match(str(text).lower())
    if not match:
        raise TenureError(
            f"{name} '{text}' is not a length of time", "write a number and a unit, e.g. 30d, 12h, 2w"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "d"]
    if seconds <= 0:
        raise TenureError(f"{name} '{text}' must be longer than zero", "for example 30d")
    return dt.timedelta(seconds=seconds)


def format_duration(length: dt.timedelta) -> str:
    """The short form ``parse_duration`` reads back: ``30d``, ``12h``, ``90m`` or ``45s``."""
    seconds = length.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
