"""Parsers for view settings read from the URL (``ui.seed_control(parse=...)``).

A shared link may carry values this store does not have (another dataset, a renamed event);
each parser raises ``ValueError`` with a message naming the parameter, which ``seed_control``
shows as a warning before falling back to the default.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from core.population import StartSpec

# Up to this many offered names are listed in a message about an unknown one.
MAX_LISTED = 12


def choice(options: Sequence[str], name: str) -> Callable[[str], str]:
    """One of ``options`` (an empty option reads as 'none' in the message)."""

    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(
                f"{name} must be one of {', '.join(option or 'none' for option in options) or 'none'}"
            )
        return text

    return parse


def tab(tabs: dict[str, str]) -> Callable[[str], str]:
    """The label of the tab whose URL name is given; ``tabs`` maps each label to its URL name."""
    labels = {name: label for label, name in tabs.items()}

    def parse(text: str) -> str:
        if text not in labels:
            raise ValueError(f"tab must be one of {', '.join(labels)}")
        return labels[text]

    return parse


def names(known: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """A comma-separated list of names, each one of ``known``."""

    def parse(text: str) -> list[str]:
        listed = [name for name in text.split(",") if name]
        unknown = [name for name in listed if name not in known]
        if unknown:
            offered = f"; this page offers {', '.join(known)}" if 0 < len(known) <= MAX_LISTED else ""
            raise ValueError(f"unknown {what}: {', '.join(unknown)}{offered}")
        return listed

    return parse


def whole(low: int, high: int, name: str = "the value") -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{name} must be from {low} to {high}")
        return value

    return parse


def iso_date(name: str) -> Callable[[str], dt.date]:
    """A date written YYYY-MM-DD."""

    def parse(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} must be a date written YYYY-MM-DD") from None

    return parse


def start_kind(known: Sequence[str]) -> Callable[[str], str]:
    """The kind of a ``start`` value (``first_event``, ``signup``, ``event:NAME``); an
    ``event:NAME`` start must name one of ``known``, else the page keeps its default start."""

    def parse(text: str) -> str:
        start = StartSpec.from_text(text)
        if start.kind == "event":
            choice(known, "the start event")(start.event_name or "")
        return start.kind

    return parse


def start_event(known: Sequence[str], default: str) -> Callable[[str], str]:
    """The event named by an ``event:NAME`` start; ``default`` for any other start, or for an
    event not in ``known`` (``start_kind`` has already warned about that one)."""

    def parse(text: str) -> str:
        start = StartSpec.from_text(text)
        if start.kind == "event" and start.event_name in known:
            return start.event_name
        return default

    return parse
