"""The parsers of view settings read from a shared link: what they accept, and the words of
their refusals (``seed_control`` shows them as warnings)."""

from __future__ import annotations

import datetime as dt

import pytest

from core.errors import TenureError
from pages.shared import url_params

EVENTS = ["app_open", "view", "purchase"]


def test_names_lists_what_the_page_offers():
    parse = url_params.names(EVENTS, "metric")
    assert parse("view,purchase") == ["view", "purchase"]
    with pytest.raises(
        ValueError, match=r"^unknown metric: cart; this page offers app_open, view, purchase$"
    ):
        parse("view,cart")
    many = [f"e{i}" for i in range(url_params.MAX_LISTED + 1)]
    with pytest.raises(ValueError, match=r"^unknown event: cart$"):
        url_params.names(many, "event")("cart")


def test_iso_date():
    assert url_params.iso_date("stage_at")("2026-03-01") == dt.date(2026, 3, 1)
    with pytest.raises(ValueError, match=r"^stage_at must be a date written YYYY-MM-DD$"):
        url_params.iso_date("stage_at")("March")


def test_start_kind_and_event():
    kind, event = url_params.start_kind(EVENTS), url_params.start_event(EVENTS, "app_open")
    assert [kind(text) for text in ("first_event", "signup", "event:purchase")] == [
        "first_event",
        "signup",
        "event",
    ]
    assert [event(text) for text in ("first_event", "signup", "event:purchase")] == [
        "app_open",
        "app_open",
        "purchase",
    ]
    with pytest.raises(ValueError, match="the start event must be one of"):
        kind("event:cart")
    assert event("event:cart") == "app_open"
    with pytest.raises(TenureError):
        kind("first")
