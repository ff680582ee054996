"""Store info and headline figures against plain pandas."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.overview import activity_series, headline, store_info
from core.population import Filters
from core.store import Store
from tests.test_retention import generate_data, write_store


@pytest.fixture(scope="module")
def data():
    return generate_data(seed=21, n_users=200)


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("overview") / "store.duckdb"
    write_store(path, *data)
    with Store(path) as writable, writable.transaction() as cursor:
        cursor.execute("CREATE SCHEMA truth")
        cursor.execute("CREATE TABLE truth.user_params AS SELECT user_id, 0.5 AS churn_rate FROM users")
        cursor.execute(
            "INSERT INTO load_history VALUES (1, 'events.csv', 'events', 'abc', 10, 1, 2, TIMESTAMP '2024-08-01')"
        )
        writable.set_meta(cursor, "dataset", "test")
    with Store(path, read_only=True) as opened:
        yield opened


def population(events: pd.DataFrame, users: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    starts = events.groupby("user_id")["event_time"].min()
    keep = starts.index.to_series()
    if filters.start_date:
        keep = keep[starts[keep].dt.date >= filters.start_date]
    if filters.end_date:
        keep = keep[starts[keep].dt.date <= filters.end_date]
    for attribute, values in filters.segments:
        allowed = set(users.loc[users[attribute].isin(values), "user_id"])
        keep = keep[keep.isin(allowed)]
    return events[events["user_id"].isin(set(keep))]


FILTERS = [Filters(), Filters(dt.date(2024, 3, 1), None, (("country", ("FR",)),))]


@pytest.mark.parametrize("filters", FILTERS, ids=["all", "filtered"])
def test_headline_matches_pandas(store, data, filters):
    events, users = data
    chosen = population(events, users, filters)
    figures = headline(store, filters)
    n_users = chosen["user_id"].nunique()
    assert figures.users == n_users
    assert figures.events == len(chosen)
    assert figures.first_event == chosen["event_time"].min()
    assert figures.last_event == chosen["event_time"].max()
    assert figures.revenue == pytest.approx(chosen["revenue"].sum())
    assert figures.revenue_per_user == pytest.approx(chosen["revenue"].sum() / n_users)
    paying = chosen[chosen["revenue"] > 0]["user_id"].nunique()
    assert figures.paying_share == pytest.approx(paying / n_users)

    data_end = events["event_time"].max()
    days = pd.date_range(data_end.normalize() - pd.Timedelta(days=27), data_end.normalize(), freq="D")
    daily = chosen.assign(day=chosen["event_time"].dt.normalize()).groupby("day")["user_id"].nunique()
    assert figures.daily_active_users == pytest.approx(daily.reindex(days, fill_value=0).mean())

    week_starts = chosen["event_time"].dt.normalize() - pd.to_timedelta(
        chosen["event_time"].dt.day_of_week, unit="D"
    )
    weekly = chosen.assign(week=week_starts).groupby("week")["user_id"].nunique()
    last_monday = data_end.normalize() - pd.Timedelta(days=data_end.weekday())
    complete_weeks = [last_monday - pd.Timedelta(weeks=n) for n in range(1, 13)]
    assert all(week + pd.Timedelta(days=7) <= data_end for week in complete_weeks)
    assert figures.weekly_active_users == pytest.approx(weekly.reindex(complete_weeks, fill_value=0).mean())


def test_headline_of_empty_population(store):
    figures = headline(store, Filters(start_date=dt.date(2031, 1, 1)))
    assert figures.users == 0 and figures.events == 0 and figures.first_event is None
    assert np.isnan(figures.revenue_per_user) and np.isnan(figures.paying_share)


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_activity_series_matches_pandas(store, data, period):
    events, _ = data
    series = activity_series(store, Filters(), period)
    assert list(series.columns) == ["period_start", "active_users", "events", "revenue", "complete"]
    frequency = {"day": "D", "week": "W-MON", "month": "MS"}[period]
    starts = (
        events["event_time"].dt.to_period({"day": "D", "week": "W-SUN", "month": "M"}[period]).dt.start_time
    )
    grouped = events.assign(period_start=starts).groupby("period_start")
    expected = pd.DataFrame(
        {
            "active_users": grouped["user_id"].nunique(),
            "events": grouped.size(),
            "revenue": grouped["revenue"].sum(),
        }
    )
    index = pd.date_range(expected.index.min(), expected.index.max(), freq=frequency)
    expected = expected.reindex(index, fill_value=0)
    np.testing.assert_array_equal(
        series["period_start"].to_numpy(dtype="datetime64[us]"), index.to_numpy(dtype="datetime64[us]")
    )
    np.testing.assert_array_equal(series["active_users"], expected["active_users"])
    np.testing.assert_array_equal(series["events"], expected["events"])
    np.testing.assert_allclose(series["revenue"], expected["revenue"])
    assert series["complete"].iloc[:-1].all() and not series["complete"].iloc[-1]
    with pytest.raises(TenureError):
        activity_series(store, Filters(), "year")


def test_store_info(store, data):
    events, users = data
    info = store_info(store)
    tables = {table.name: table for table in info.tables}
    assert list(tables)[:5] == ["events", "users", "items", "assignments", "recommendations"]
    assert "load_history" not in tables and "store_meta" not in tables
    assert tables["events"].rows == len(events)
    assert tables["events"].first == events["event_time"].min()
    assert tables["events"].last == events["event_time"].max()
    assert tables["users"].rows == len(users)
    assert tables["users"].last == users["signup_time"].max()
    assert tables["items"].rows == 0 and tables["items"].time_column is None
    assert [(table.schema, table.name, table.rows) for table in info.truth_tables] == [
        ("truth", "user_params", len(users))
    ]
    assert info.meta == {"dataset": "test"}
    assert info.loads[0]["rows_accepted"] == 10
    text = info.to_text()
    assert "events" in text and "truth" in text and "events.csv" in text and "dataset: test" in text
    as_dict = info.to_dict()
    assert as_dict["tables"][0]["name"] == "events" and as_dict["truth_tables"][0]["name"] == "user_params"


def test_activity_chart(store):
    from core.figures import activity_chart

    series = activity_series(store, Filters(), "week")
    figure = activity_chart(series)
    assert list(figure.data[0].y) == list(series["active_users"])
    assert list(figure.data[1].y) == list(series["events"])


def test_store_without_user_keys_gives_the_same_figures(store, data, tmp_path):
    # A read-only store from before events.user_key: the queries hash user_id themselves.
    path = tmp_path / "old.duckdb"
    write_store(path, *data)
    with duckdb.connect(str(path)) as connection:
        connection.execute("ALTER TABLE events DROP COLUMN user_key")
    filters = Filters(dt.date(2024, 2, 1), None, (("country", ("DE", "US")),))
    with Store(path, read_only=True) as old:
        for chosen in (Filters(), filters):
            ours, theirs = headline(old, chosen), headline(store, chosen)
            for name in (
                "users",
                "events",
                "first_event",
                "last_event",
                "daily_active_users",
                "paying_share",
            ):
                assert getattr(ours, name) == getattr(theirs, name)
            assert ours.revenue == pytest.approx(theirs.revenue)
            pd.testing.assert_frame_equal(activity_series(old, chosen), activity_series(store, chosen))
