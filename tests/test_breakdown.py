"""Breakdown groups and duration parsing, checked against plain pandas on the simulated store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from core.breakdown import MISSING_GROUP, SEVERAL_GROUPS, Breakdown, group_sql, parse_breakdown
from core.durations import format_duration, parse_duration
from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql
from core.store import Store


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", dt.timedelta(days=30)),
        ("12h", dt.timedelta(hours=12)),
        ("2w", dt.timedelta(days=14)),
        ("90m", dt.timedelta(minutes=90)),
        ("7", dt.timedelta(days=7)),
        ("1.5d", dt.timedelta(hours=36)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "abc", "0d", "-3d", "3y", "d"])
def test_parse_duration_refuses_with_the_flag_name(text: str) -> None:
    with pytest.raises(TenureError, match="--window"):
        parse_duration(text, "--window")


def test_parse_breakdown_forms() -> None:
    assert parse_breakdown("") is None
    assert parse_breakdown("country") == Breakdown("attribute", "country")
    assert parse_breakdown("attribute:plan") == Breakdown("attribute", "plan")
    assert parse_breakdown("cohort:month") == Breakdown("cohort", "month")
    assert parse_breakdown("experiment:rec_policy") == Breakdown("experiment", "rec_policy")
    assert parse_breakdown("cohort:week").to_text() == "cohort:week"
    with pytest.raises(TenureError, match="cohort"):
        parse_breakdown("cohort:year")


def _reference_frames(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as connection:
        events = connection.execute("SELECT user_id, event_time FROM events").df()
        users = connection.execute("SELECT * FROM users").df()
        assignments = connection.execute("SELECT user_id, experiment, variant FROM assignments").df()
    starts = events.groupby("user_id")["event_time"].min().rename("start_time").reset_index()
    return starts, users, assignments


@pytest.mark.parametrize("by_key", [False, True])
@pytest.mark.parametrize("text", ["country", "cohort:week", "cohort:month", "experiment:rec_policy"])
def test_groups_match_pandas(small_store_path: Path, text: str, by_key: bool) -> None:
    starts, users, assignments = _reference_frames(small_store_path)
    breakdown = parse_breakdown(text)
    if breakdown.kind == "attribute":
        expected = starts.merge(users[["user_id", "country"]], on="user_id", how="left")["country"].fillna(
            MISSING_GROUP
        )
    elif breakdown.kind == "cohort":
        day = starts["start_time"].dt.normalize()
        if breakdown.name == "week":
            day = day - pd.to_timedelta(day.dt.day_of_week, unit="D")
        else:
            day = day.dt.to_period("M").dt.start_time
        expected = day.dt.strftime("%Y-%m-%d")
    else:
        policy = assignments[assignments["experiment"] == "rec_policy"]
        variants = policy.groupby("user_id")["variant"].agg(["nunique", "min"])
        merged = starts.merge(variants, left_on="user_id", right_index=True, how="left")
        expected = (
            merged["min"]
            .where(merged["nunique"] == 1, SEVERAL_GROUPS)
            .where(merged["nunique"].notna(), MISSING_GROUP)
        )
    expected = pd.Series(expected.to_numpy(), index=starts["user_id"]).sort_index()
    with Store(small_store_path, read_only=True) as store:
        events = keyed_events_sql(store) if by_key else "events"
        population, params = population_sql(store, StartSpec(), Filters(), by_key=by_key, events=events)
        sql, group_params = group_sql(store, breakdown, population, by_key=by_key)
        if by_key:
            sql = f'SELECT e.user_id, g."group" FROM ({sql}) g JOIN (SELECT DISTINCT user_id, user_key FROM events) e USING (user_key)'
        actual = store.query_df(sql, params + group_params).set_index("user_id")["group"].sort_index()
    assert actual.index.tolist() == expected.index.tolist()
    assert actual.tolist() == expected.tolist()
    assert actual.nunique() > 1


def test_unknown_attribute_and_experiment_are_named(small_store_path: Path) -> None:
    with Store(small_store_path, read_only=True) as store:
        population, _ = population_sql(store, StartSpec(), Filters())
        with pytest.raises(TenureError, match="nosuch"):
            group_sql(store, parse_breakdown("nosuch"), population)
        with pytest.raises(TenureError, match="no experiment named 'ghost'"):
            group_sql(store, parse_breakdown("experiment:ghost"), population)
