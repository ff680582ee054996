"""Lifecycle statuses and point-in-time stages against plain-Python references of docs/METRICS.md.

The references walk users one by one with Python sets of calendar periods (found with pandas
timestamp arithmetic) and sorted lists of days: nothing is shared with the SQL's bit masks.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pandas as pd
import pytest

from core.errors import TenureError
from core.lifecycle import (
    NOT_STARTED,
    STAGES,
    STATUSES,
    TABLE_COLUMNS,
    LifecycleSpec,
    StageSpec,
    lifecycle_table,
    lifecycle_users,
    stage_table,
    stage_transitions,
    stage_users,
    transition_matrix,
)
from core.population import Filters, StartSpec
from core.store import Store
from tests.test_retention import calendar_shift, calendar_start, generate_data, reference_starts, write_store


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_data(seed=5, n_users=260)


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("lifecycle") / "store.duckdb"
    write_store(path, *data)
    with Store(path, read_only=True) as opened:
        yield opened


@pytest.fixture(scope="module")
def simulated(small_store_path):
    with Store(small_store_path, read_only=True) as opened:
        events = opened.query_df("SELECT user_id, event_time, event_name, revenue FROM events")
        users = opened.query_df("SELECT user_id, signup_time, country FROM users")
        yield opened, events, users


# --- References ---------------------------------------------------------------------------------


def selected_starts(events, users, start: StartSpec, filters: Filters) -> dict[str, pd.Timestamp]:
    starts = reference_starts(events, users, start)
    country = users.groupby("user_id")["country"].min()
    selected = {}
    for user, begin in starts.items():
        if pd.isna(begin):
            continue
        if filters.start_date and begin.date() < filters.start_date:
            continue
        if filters.end_date and begin.date() > filters.end_date:
            continue
        if any(user not in country.index or country[user] not in values for _, values in filters.segments):
            continue
        selected[user] = begin
    return selected


def reference_statuses(events, users, spec: LifecycleSpec, filters: Filters | None = None) -> pd.DataFrame:
    """One row per (period, user, status), looping over users and periods."""
    filters = filters or Filters()
    data_end = events["event_time"].max()
    starts = {
        user: begin
        for user, begin in selected_starts(events, users, spec.start, filters).items()
        if begin <= data_end
    }
    activity = events if not spec.activity_events else events[events["event_name"].isin(spec.activity_events)]
    periods_of = {
        user: {calendar_start(time, spec.period) for time in group}
        for user, group in activity.groupby("user_id")["event_time"]
    }
    # The range does not depend on the filters: the store's first event, or an earlier signup.
    earliest = events["event_time"].min()
    if spec.start.kind == "signup":
        earliest = min(earliest, users["signup_time"].min())
    first = calendar_start(earliest, spec.period)
    last = calendar_start(data_end, spec.period)
    periods = [first]
    while periods[-1] < last:
        periods.append(calendar_shift(first, spec.period, len(periods)))
    rows = []
    for user, begin in starts.items():
        start_period = calendar_start(begin, spec.period)
        active = {period for period in periods_of.get(user, set()) if period >= start_period} | {start_period}
        for index, period in enumerate(periods):
            previous = periods[index - 1] if index else None
            now, before = period in active, previous in active
            if period == start_period:
                status = "new"
            elif now and before:
                status = "returning"
            elif now:
                status = "resurrecting"
            elif before:
                status = "dormant"
            else:
                continue
            rows.append((period.date(), user, status))
    frame = pd.DataFrame(rows, columns=["period", "user_id", "status"])
    frame.attrs["periods"] = [period.date() for period in periods]
    return frame


def reference_table(statuses: pd.DataFrame) -> pd.DataFrame:
    counts = statuses.groupby(["period", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=statuses.attrs["periods"], columns=list(STATUSES), fill_value=0)
    return counts.rename_axis("period").reset_index()


def assert_table_matches(table: pd.DataFrame, statuses: pd.DataFrame) -> None:
    expected = reference_table(statuses)
    assert list(table["period"]) == list(expected["period"])
    for status in STATUSES:
        assert list(table[status]) == list(expected[status]), status
    assert list(table["active"]) == list(expected["new"] + expected["returning"] + expected["resurrecting"])
    assert table["partial"].tolist() == [False] * (len(table) - 1) + [True]


# --- Per-period lifecycle -------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["day", "week", "month"])
@pytest.mark.parametrize("start", [StartSpec(), StartSpec("signup"), StartSpec("event", "purchase")])
def test_table_matches_reference(store, data, period, start):
    spec = LifecycleSpec(period=period, start=start)
    assert_table_matches(lifecycle_table(store, spec, Filters()), reference_statuses(*data, spec))


def test_activity_events_and_filters(store, data):
    spec = LifecycleSpec(period="week", start=StartSpec("signup"), activity_events=("purchase", "click"))
    filters = Filters(dt.date(2024, 2, 1), dt.date(2024, 5, 31), (("country", ("DE", "FR")),))
    table = lifecycle_table(store, spec, filters)
    assert_table_matches(table, reference_statuses(*data, spec, filters))
    assert table["new"].sum() < len(data[1])


@pytest.mark.parametrize("period", ["day", "week"])
def test_start_event_with_activity_events_over_many_mask_words(store, data, period):
    # Daily periods over half a year need several 62-bit words per user.
    spec = LifecycleSpec(
        period=period, start=StartSpec("event", "view"), activity_events=("purchase", "click")
    )
    filters = Filters(start_date=dt.date(2024, 1, 20))
    assert_table_matches(lifecycle_table(store, spec, filters), reference_statuses(*data, spec, filters))


def test_simulated_store_matches_reference(simulated):
    opened, events, users = simulated
    for period in ("week", "month"):
        spec = LifecycleSpec(period=period)
        assert_table_matches(
            lifecycle_table(opened, spec, Filters()), reference_statuses(events, users, spec)
        )


def test_quick_ratio(store):
    table = lifecycle_table(store, LifecycleSpec(period="week"), Filters())
    dormant = table["dormant"]
    expected = (table["new"] + table["resurrecting"]) / dormant.where(dormant > 0)
    pd.testing.assert_series_equal(table["quick_ratio"], expected, check_names=False)
    assert table.loc[dormant == 0, "quick_ratio"].isna().all()


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_drill_down_counts_each_user_once(store, data, period):
    spec = LifecycleSpec(period=period, start=StartSpec("signup"))
    statuses = reference_statuses(*data, spec)
    table = lifecycle_table(store, spec, Filters())
    for index in (1, 5, len(table) // 2, len(table) - 1):
        day = table["period"][index]
        listed = {status: lifecycle_users(store, spec, Filters(), day, status) for status in STATUSES}
        everyone = pd.concat(listed.values())["user_id"]
        assert not everyone.duplicated().any()
        for status, users in listed.items():
            assert len(users) == table[status][index]
            expected = statuses[(statuses["period"] == day) & (statuses["status"] == status)]
            assert sorted(users["user_id"]) == sorted(expected["user_id"])


# A hand-made store: weeks of 2024 start on Mondays 01-01, 01-08, 01-15, ...; data end Wed 02-07.
EDGE_EVENTS = [
    ("a", "2024-01-17 10:00", "view"),  # signup 01-01: new wk1 (no event), dormant wk2, back wk3
    ("a", "2024-01-29 08:00", "view"),
    ("b", "2024-01-02 00:00", "view"),  # weeks 1, 2, gap, 5 (Sunday 23:59 is still week 4)
    ("b", "2024-01-14 23:59", "purchase"),
    ("b", "2024-02-04 23:59", "view"),
    ("c", "2024-02-06 12:00", "view"),  # starts in the last, partial week
    ("d", "2024-01-08 00:00", "view"),  # data's edge cases: one event only
    ("e", "2024-02-07 18:00", "view"),  # the data end
    ("e", "2024-01-22 09:00", "view"),
]
EDGE_SIGNUPS = [("a", "2024-01-01 09:00"), ("e", "2024-01-21 23:00")]
# Weeks 01-01, 01-08, 01-15, 01-22, 01-29, 02-05 with a signup start:
# a: new w1, dormant w2, resurrecting w3, dormant w4, resurrecting w5, dormant w6
# b: new w1, returning w2, dormant w3, resurrecting w5 (02-04 is a Sunday), dormant w6
# c: new w6; d: new w2, dormant w3; e: signup Sunday 01-21 -> new w3, returning w4, dormant w5,
# resurrecting w6.
EDGE_EXPECTED = {
    "new": [2, 1, 1, 0, 0, 1],
    "returning": [0, 1, 0, 1, 0, 0],
    "resurrecting": [0, 0, 1, 0, 2, 1],
    "dormant": [0, 1, 2, 1, 1, 2],
}


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("edges") / "edges.duckdb"
    with Store(path) as opened, opened.transaction() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN country VARCHAR")
        cursor.executemany(
            "INSERT INTO events (user_id, event_time, event_name) VALUES (?, CAST(? AS TIMESTAMP), ?)",
            EDGE_EVENTS,
        )
        cursor.executemany(
            "INSERT INTO users (user_id, signup_time, country) VALUES (?, CAST(? AS TIMESTAMP), 'DE')",
            EDGE_SIGNUPS,
        )
    with Store(path, read_only=True) as opened:
        yield opened


def test_hand_made_edge_cases(edge_store):
    table = lifecycle_table(edge_store, LifecycleSpec(period="week", start=StartSpec("signup")), Filters())
    assert [day.isoformat() for day in table["period"]] == [
        "2024-01-01",
        "2024-01-08",
        "2024-01-15",
        "2024-01-22",
        "2024-01-29",
        "2024-02-05",
    ]
    for status, expected in EDGE_EXPECTED.items():
        assert table[status].tolist() == expected, status
    assert table["partial"].tolist() == [False] * 5 + [True]
    # Filters select users (a and e have a users row), their whole history stays.
    only_de = lifecycle_table(
        edge_store,
        LifecycleSpec(period="week", start=StartSpec("signup")),
        Filters(segments=(("country", ("DE",)),)),
    )
    assert only_de["new"].tolist() == [1, 0, 1, 0, 0, 0]
    assert only_de["dormant"].tolist() == [0, 1, 0, 1, 1, 1]
    users = lifecycle_users(
        edge_store,
        LifecycleSpec(period="week", start=StartSpec("signup")),
        Filters(),
        "2024-02-07",
        "dormant",
    )
    assert users["user_id"].tolist() == ["a", "b"]


def test_first_event_start_ignores_signup(edge_store):
    table = lifecycle_table(edge_store, LifecycleSpec(period="week"), Filters())
    # a now starts on 01-17 (week 3), e on 01-22 (week 4).
    assert table["new"].tolist() == [1, 1, 1, 1, 0, 1]


def test_drill_down_errors(store):
    spec = LifecycleSpec(period="week")
    with pytest.raises(TenureError):
        lifecycle_users(store, spec, Filters(), "2030-01-07", "new")
    with pytest.raises(TenureError):
        lifecycle_users(store, spec, Filters(), "2024-03-04", "sleeping")
    with pytest.raises(TenureError):
        lifecycle_users(store, spec, Filters(), "not a date", "new")


def test_empty_store(tmp_path):
    with Store(tmp_path / "empty.duckdb") as empty:
        table = lifecycle_table(empty, LifecycleSpec(), Filters())
        assert table.empty and list(table.columns) == list(TABLE_COLUMNS)


def test_filters_that_keep_nobody(store):
    nobody = Filters(start_date=dt.date(2024, 5, 1), end_date=dt.date(2024, 4, 1))
    table = lifecycle_table(store, LifecycleSpec(), nobody)
    assert len(table) > 0
    assert (table[["new", "returning", "resurrecting", "dormant", "active"]] == 0).all().all()


def test_spec_round_trips_and_errors():
    spec = LifecycleSpec(
        period="month", start=StartSpec("event", "purchase"), activity_events=("view", "click")
    )
    assert LifecycleSpec.from_query_params(spec.to_query_params()) == spec
    assert LifecycleSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(TenureError):
        LifecycleSpec(period="year")  # type: ignore[arg-type]
    with pytest.raises(TenureError):
        LifecycleSpec(activity_events="view")  # type: ignore[arg-type]


# --- Point-in-time stages -------------------------------------------------------------------------


def reference_stages(events, users, spec: StageSpec, day: dt.date) -> dict[str, str]:
    """Each started user's stage at the end of ``day``, first matching rule wins."""
    starts = selected_starts(events, users, spec.start, Filters())
    activity = events if not spec.activity_events else events[events["event_name"].isin(spec.activity_events)]
    times_of = {user: list(group) for user, group in activity.groupby("user_id")["event_time"]}
    stages = {}
    for user, begin in starts.items():
        start_day = begin.date()
        if start_day > day:
            stages[user] = NOT_STARTED
            continue
        days = sorted({time.date() for time in times_of.get(user, []) if time >= begin} | {start_day})
        days = [active for active in days if active <= day]
        idle = (day - days[-1]).days
        returns = [
            later
            for earlier, later in itertools.pairwise(days)
            if (later - earlier).days >= spec.dormant_days
        ]
        if (day - start_day).days < spec.new_days:
            stages[user] = "new"
        elif idle >= spec.churned_days:
            stages[user] = "churned"
        elif idle >= spec.dormant_days:
            stages[user] = "dormant"
        elif idle >= spec.at_risk_days:
            stages[user] = "at_risk"
        elif returns and (day - returns[-1]).days < spec.new_days:
            stages[user] = "reactivated"
        else:
            stages[user] = "active"
    return stages


STAGE_SPECS = [
    StageSpec(),
    StageSpec(new_days=14, at_risk_days=3, dormant_days=10, churned_days=20, start=StartSpec("signup")),
    StageSpec(activity_events=("purchase",), dormant_days=7, churned_days=7),
]


@pytest.mark.parametrize("spec", STAGE_SPECS)
@pytest.mark.parametrize("day", [dt.date(2024, 3, 3), dt.date(2024, 6, 30), dt.date(2024, 7, 20)])
def test_stages_match_reference(store, data, spec, day):
    expected = reference_stages(*data, spec, day)
    table = stage_table(store, spec, Filters(), day).set_index("stage")
    listed = []
    for stage in STAGES:
        users = stage_users(store, spec, Filters(), day, stage)
        listed += list(users["user_id"])
        assert sorted(users["user_id"]) == sorted(u for u, s in expected.items() if s == stage), stage
        assert table.loc[stage, "users"] == len(users)
    # Exhaustive and exclusive: every started user is in exactly one stage.
    assert sorted(listed) == sorted(u for u, s in expected.items() if s != NOT_STARTED)
    assert table["users"].sum() == len(listed)
    assert table["share"].sum() == pytest.approx(1.0)


def test_stage_revenue_share(store, data):
    events, users = data
    spec = StageSpec()
    day = dt.date(2024, 5, 15)
    stages = reference_stages(events, users, spec, day)
    window = events[
        (events["event_time"] >= pd.Timestamp(day) - pd.Timedelta(days=29))
        & (events["event_time"] < pd.Timestamp(day) + pd.Timedelta(days=1))
    ]
    revenue = window.groupby("user_id")["revenue"].sum()
    per_stage = {stage: sum(revenue.get(u, 0.0) for u, s in stages.items() if s == stage) for stage in STAGES}
    total = sum(per_stage.values())
    table = stage_table(store, spec, Filters(), day).set_index("stage")
    for stage in STAGES:
        assert table.loc[stage, "revenue"] == pytest.approx(per_stage[stage])
        assert table.loc[stage, "revenue_share"] == pytest.approx(per_stage[stage] / total)


@pytest.mark.parametrize("spec", STAGE_SPECS[:2])
def test_transition_matrix_adds_up(store, data, spec):
    first, second = dt.date(2024, 4, 1), dt.date(2024, 6, 1)
    transitions = stage_transitions(store, spec, Filters(), first, second)
    matrix = transition_matrix(transitions)
    before = stage_table(store, spec, Filters(), first).set_index("stage")["users"]
    after = stage_table(store, spec, Filters(), second).set_index("stage")["users"]
    for stage in STAGES:
        assert matrix.loc[stage].sum() == before[stage]
        assert matrix[stage].sum() == after[stage]
    at_first = reference_stages(*data, spec, first)
    at_second = reference_stages(*data, spec, second)
    started_between = sum(1 for u, s in at_first.items() if s == NOT_STARTED and at_second[u] != NOT_STARTED)
    assert matrix.loc[NOT_STARTED].sum() == started_between
    assert matrix.loc[NOT_STARTED, "new"] > 0
    pairs = pd.Series(
        [(at_first[u], at_second[u]) for u in at_second if at_second[u] != NOT_STARTED]
    ).value_counts()
    for (row, column), users in pairs.items():
        assert matrix.loc[row, column] == users


def test_stage_errors(store):
    with pytest.raises(TenureError):
        StageSpec(at_risk_days=20, dormant_days=14)
    with pytest.raises(TenureError):
        StageSpec(new_days=0)
    with pytest.raises(TenureError):
        stage_transitions(store, StageSpec(), Filters(), "2024-05-01", "2024-04-01")
    with pytest.raises(TenureError):
        stage_users(store, StageSpec(), Filters(), "2024-05-01", "sleeping")
    spec = StageSpec(new_days=3, churned_days=60, activity_events=("view",), start=StartSpec("signup"))
    assert StageSpec.from_query_params(spec.to_query_params()) == spec
    assert StageSpec.from_dict(spec.to_dict()) == spec
