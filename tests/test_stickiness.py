"""Stickiness histograms and DAU/WAU/MAU against brute-force pandas references (day by day, user by user)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from core import figures_lifecycle
from core.errors import TenureError
from core.population import Filters
from core.stickiness import SPANS, StickinessSpec, active_users_series, stickiness_histogram
from core.store import Store
from tests.test_retention import generate_data, write_store


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_data(seed=9, n_users=200)


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("stickiness") / "store.duckdb"
    write_store(path, *data)
    with Store(path, read_only=True) as opened:
        yield opened


def user_days(events: pd.DataFrame, spec: StickinessSpec, users: set[str] | None = None) -> pd.DataFrame:
    chosen = events if spec.event is None else events[events["event_name"] == spec.event]
    if users is not None:
        chosen = chosen[chosen["user_id"].isin(users)]
    return pd.DataFrame({"user_id": chosen["user_id"], "day": chosen["event_time"].dt.date}).drop_duplicates()


def reference_histogram(events: pd.DataFrame, spec: StickinessSpec) -> dict[tuple[dt.date, int], int]:
    days = user_days(events, spec)
    last = events["event_time"].max().date()
    counts: dict[tuple[dt.date, int], int] = {}
    if spec.span == "month":
        days["month"] = [day.replace(day=1) for day in days["day"]]
        per_user = days.groupby(["month", "user_id"]).size()
        for (month, _), k in per_user.items():
            counts[(month, k)] = counts.get((month, k), 0) + 1
        return counts
    length = 7 if spec.span == "7d" else 28
    start = last - dt.timedelta(days=length - 1)
    inside = days[(days["day"] >= start) & (days["day"] <= last)]
    for _, group in inside.groupby("user_id"):
        units = {(last - day).days // 7 for day in group["day"]} if spec.span == "4w" else set(group["day"])
        counts[(start, len(units))] = counts.get((start, len(units)), 0) + 1
    return counts


@pytest.mark.parametrize("span", SPANS)
@pytest.mark.parametrize("event", [None, "purchase"])
def test_histogram_matches_reference(store, data, span, event):
    events, _ = data
    spec = StickinessSpec(event=event, span=span)
    histogram = stickiness_histogram(store, spec, Filters())
    expected = reference_histogram(events, spec)
    got = {(row.span_start, row.active_units): row.users for row in histogram.itertuples() if row.users}
    assert got == expected
    for _, span_rows in histogram.groupby("span_start"):
        if span_rows["users"].sum():
            assert span_rows["share"].sum() == pytest.approx(1.0)
        else:
            assert span_rows["share"].isna().all()
    if span == "month":
        assert histogram["partial"].tolist()[-1] and not histogram["partial"].iloc[0]
        assert histogram.groupby("span_start").size().isin([28, 29, 30, 31]).all()
    else:
        assert sorted(histogram["active_units"].unique()) == list(range(1, 8 if span == "7d" else 5))


def reference_series(
    events: pd.DataFrame, spec: StickinessSpec, users: set[str] | None = None
) -> pd.DataFrame:
    days = user_days(events, spec, users)
    first, last = events["event_time"].min().date(), events["event_time"].max().date()
    by_day = days.groupby("day")["user_id"].apply(set).to_dict()
    rows = []
    day = first
    while day <= last:

        def active(window: int, day: dt.date = day) -> int:
            seen: set[str] = set()
            for offset in range(window):
                seen |= by_day.get(day - dt.timedelta(days=offset), set())
            return len(seen)

        rows.append((day, len(by_day.get(day, set())), active(7), active(28)))
        day += dt.timedelta(days=1)
    return pd.DataFrame(rows, columns=["day", "dau", "wau", "mau"])


@pytest.mark.parametrize("event", [None, "view"])
def test_series_matches_reference(store, data, event):
    events, _ = data
    spec = StickinessSpec(event=event)
    series = active_users_series(store, spec, Filters())
    expected = reference_series(events, spec)
    assert list(series["day"]) == list(expected["day"])
    for column in ("dau", "wau", "mau"):
        assert series[column].tolist() == expected[column].tolist(), column
    mau = series["mau"]
    pd.testing.assert_series_equal(series["dau_mau"], series["dau"] / mau.where(mau > 0), check_names=False)
    assert not series["full_window"].iloc[0] and series["full_window"].iloc[-1]


def test_filters_select_users(store, data):
    events, users = data
    filters = Filters(segments=(("country", ("DE",)),))
    german = set(users.loc[users["country"] == "DE", "user_id"])
    series = active_users_series(store, StickinessSpec(), filters)
    expected = reference_series(events, StickinessSpec(), german)
    assert series["mau"].tolist() == expected["mau"].tolist()
    assert 0 < series["mau"].max() < active_users_series(store, StickinessSpec(), Filters())["mau"].max()


def test_simulated_store(small_store_path):
    with Store(small_store_path, read_only=True) as opened:
        events = opened.query_df("SELECT user_id, event_time, event_name FROM events")
        spec = StickinessSpec(event="app_open", span="4w")
        histogram = stickiness_histogram(opened, spec, Filters())
        series = active_users_series(opened, spec, Filters())
    expected = reference_histogram(events, spec)
    assert {(r.span_start, r.active_units): r.users for r in histogram.itertuples() if r.users} == expected
    assert series["wau"].tolist() == reference_series(events, spec)["wau"].tolist()


def test_spec_round_trip_and_errors():
    spec = StickinessSpec(event="purchase", span="month")
    assert StickinessSpec.from_query_params(spec.to_query_params()) == spec
    assert StickinessSpec.from_dict(spec.to_dict()) == spec
    assert StickinessSpec(span="4w").unit == "weeks"
    with pytest.raises(TenureError):
        StickinessSpec(span="2w")  # type: ignore[arg-type]


def test_the_ratio_axis_keeps_its_own_ticks_from_zero(store):
    """The DAU/MAU axis must not borrow the users axis's grid (odd ticks, a zero below the users' zero)."""
    series = active_users_series(store, StickinessSpec(), Filters())
    layout = figures_lifecycle.active_users_chart(series).layout
    assert layout.yaxis.rangemode == "tozero" and layout.yaxis2.rangemode == "tozero"
    assert layout.yaxis2.tickmode == "auto" and layout.yaxis2.showgrid is False
