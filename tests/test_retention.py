"""Cohort retention against an independent plain-pandas reference of docs/METRICS.md's definitions.

The reference walks users one by one and finds each period's bounds with timestamp arithmetic
(``start + k * P``, or calendar period starts with ``DateOffset``), then checks for a return with a
binary search: nothing is shared with the SQL's integer-division formulation.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql
from core.retention import (
    DEFAULT_MAX_PERIODS,
    RetentionSpec,
    _user_pieces_sql,
    retention_curve,
    retention_table,
    retention_users,
)
from core.stats import wilson_interval
from core.store import Store
from core.user_index import user_index_ready

PERIOD_LENGTH = {"day": pd.Timedelta(days=1), "week": pd.Timedelta(days=7), "month": pd.Timedelta(days=30)}
MODES = ("classic", "unbounded", "consecutive")
PERIODS = ("day", "week", "month")


# ---------------------------------------------------------------------------------------------
# Test data: a few hundred users over about six months, with the edge cases written in.


def generate_data(seed: int = 11, n_users: int = 320) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    origin = pd.Timestamp("2024-01-01")
    rows: list[tuple[str, pd.Timestamp, str, float]] = []
    signups: list[tuple[str, pd.Timestamp | None, str | None]] = []
    for number in range(n_users):
        user = f"u{number:04d}"
        start = origin + pd.Timedelta(seconds=int(rng.integers(0, 180 * 86400)))
        rows.append((user, start, "open", 0.0))
        kind = number % 10
        if kind == 0:
            pass  # the start is the user's only event
        elif kind == 1:
            # Events exactly on period boundaries: start + k * P for each period length.
            for k in (1, 2, 3):
                rows.append((user, start + k * pd.Timedelta(days=1), "view", 0.0))
                rows.append((user, start + k * pd.Timedelta(days=7), "view", 0.0))
                rows.append((user, start + k * pd.Timedelta(days=30), "purchase", 9.0))
        else:
            scale_days = float(rng.choice([2.0, 10.0, 40.0]))
            for _ in range(int(rng.integers(1, 25))):
                offset = pd.Timedelta(seconds=int(rng.exponential(scale_days * 86400)))
                name = str(rng.choice(["view", "view", "click", "purchase"]))
                revenue = float(np.round(rng.uniform(1, 50), 2)) if name == "purchase" else 0.0
                rows.append((user, start + offset, name, revenue))
        # Signup: before the first event, after it (events then precede the start), or unknown.
        country = [None, "DE", "FR", "US"][int(rng.integers(0, 4))]
        if number % 7 == 3:
            continue  # no users row at all
        if number % 5 == 0:
            signup = None
        elif number % 5 == 1:
            signup = start + pd.Timedelta(hours=int(rng.integers(1, 400)))
        else:
            signup = start - pd.Timedelta(hours=int(rng.integers(0, 100)))
        signups.append((user, signup, country))
    events = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name", "revenue"])
    events["event_time"] = events["event_time"].astype("datetime64[us]")
    data_end = pd.Timestamp("2024-07-20 13:00:00")
    events = events[events["event_time"] <= data_end].reset_index(drop=True)
    users = pd.DataFrame(signups, columns=["user_id", "signup_time", "country"])
    users["signup_time"] = pd.to_datetime(users["signup_time"]).astype("datetime64[us]")
    return events, users


def write_store(path, events: pd.DataFrame, users: pd.DataFrame) -> None:
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN country VARCHAR")
        cursor.register("events_frame", events)
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name, revenue) "
            "SELECT user_id, event_time, event_name, revenue FROM events_frame"
        )
        cursor.register("users_frame", users)
        cursor.execute(
            "INSERT INTO users (user_id, signup_time, country) SELECT user_id, signup_time, country FROM users_frame"
        )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_data()


@pytest.fixture(scope="module", params=["indexed", "scanned"])
def store(request, tmp_path_factory, data):
    """The test store, once with its user index (core/user_index.py) and once with an index that
    no longer counts every event (an outside writer's edit): the query then finds first events
    itself. Both must give the reference's answers."""
    events, users = data
    path = tmp_path_factory.mktemp("retention") / "store.duckdb"
    write_store(path, events, users)
    if request.param == "scanned":
        with duckdb.connect(str(path)) as connection:
            connection.execute("UPDATE user_index_state SET events_rows = events_rows - 1")
    with Store(path, read_only=True) as opened:
        with opened.cursor() as cursor:
            assert user_index_ready(cursor) == (request.param == "indexed")
        spec = RetentionSpec()
        assert _user_pieces_sql(opened, spec, Filters()).user_column == (
            "user_no" if request.param == "indexed" else "user_key"
        )
        yield opened


# ---------------------------------------------------------------------------------------------
# The reference implementation.


def calendar_start(time: pd.Timestamp, period: str) -> pd.Timestamp:
    day = time.normalize()
    if period == "day":
        return day
    if period == "week":
        return day - pd.Timedelta(days=day.weekday())
    return day.replace(day=1)


def calendar_shift(begin: pd.Timestamp, period: str, k: int) -> pd.Timestamp:
    if period == "month":
        return begin + pd.DateOffset(months=k)
    return begin + k * PERIOD_LENGTH[period]


def reference_starts(events: pd.DataFrame, users: pd.DataFrame, start: StartSpec) -> pd.Series:
    first = events.groupby("user_id")["event_time"].min()
    if start.kind == "first_event":
        return first
    if start.kind == "event":
        return events[events["event_name"] == start.event_name].groupby("user_id")["event_time"].min()
    signup = users.groupby("user_id")["signup_time"].min()
    return pd.Series(
        {
            user: (signup[user] if user in signup.index and pd.notna(signup[user]) else t)
            for user, t in first.items()
        }
    )


def reference_users(
    events: pd.DataFrame, users: pd.DataFrame, spec: RetentionSpec, filters: Filters | None = None
) -> pd.DataFrame:
    """One row per (user, k) for k in 0..cap: cohort, complete, retained (loops over users)."""
    filters = filters or Filters()
    data_end = events["event_time"].max()
    starts = reference_starts(events, users, spec.start)
    country = users.groupby("user_id")["country"].min()
    selected = {}
    for user, start in starts.items():
        if filters.start_date and start.date() < filters.start_date:
            continue
        if filters.end_date and start.date() > filters.end_date:
            continue
        for _attribute, values in filters.segments:
            if user not in country.index or country[user] not in values:
                break
        else:
            selected[user] = start
    returns = events if not spec.return_events else events[events["event_name"].isin(spec.return_events)]
    times_by_user = {
        user: np.sort(group.to_numpy()) for user, group in returns.groupby("user_id")["event_time"]
    }

    def bounds(start: pd.Timestamp, k: int) -> tuple[pd.Timestamp, pd.Timestamp]:
        if spec.calendar:
            first = calendar_start(start, spec.period)
            return max(start, calendar_shift(first, spec.period, k)), calendar_shift(
                first, spec.period, k + 1
            )
        return start + k * PERIOD_LENGTH[spec.period], start + (k + 1) * PERIOD_LENGTH[spec.period]

    last_complete = -1
    for start in selected.values():
        k = 0
        while bounds(start, k)[1] <= data_end:
            k += 1
        last_complete = max(last_complete, k - 1)
    if spec.max_periods is not None:
        cap = spec.max_periods
    else:
        cap = min(DEFAULT_MAX_PERIODS[spec.period], max(last_complete, 0))

    records = []
    for user, start in selected.items():
        times = times_by_user.get(user, np.array([], dtype="datetime64[us]"))
        times = times[times >= start.to_datetime64()]

        def returned_in(k: int, start: pd.Timestamp = start, times: np.ndarray = times) -> bool:
            begin, end = bounds(start, k)
            lo = np.searchsorted(times, begin.to_datetime64(), side="left")
            hi = np.searchsorted(times, end.to_datetime64(), side="left")
            return hi > lo

        streak_ok = True
        for k in range(cap + 1):
            begin, end = bounds(start, k)
            if k == 0:
                retained = True
            elif spec.mode == "classic":
                retained = returned_in(k)
            elif spec.mode == "unbounded":
                retained = len(times) > 0 and times[-1] >= begin.to_datetime64()
            else:
                streak_ok = streak_ok and returned_in(k)
                retained = streak_ok
            records.append(
                {
                    "user_id": user,
                    "start_time": start,
                    "cohort": calendar_start(start, spec.period).date(),
                    "country": country.get(user),
                    "period": k,
                    "complete": end <= data_end,
                    "retained": retained,
                }
            )
    return pd.DataFrame(records)


def reference_table(per_user: pd.DataFrame) -> pd.DataFrame:
    per_user = per_user.assign(hit=per_user["complete"] & per_user["retained"])
    table = (
        per_user.groupby(["cohort", "period"])
        .agg(cohort_size=("user_id", "size"), eligible=("complete", "sum"), retained=("hit", "sum"))
        .reset_index()
    )
    table["rate"] = np.where(
        table["eligible"] > 0, table["retained"] / table["eligible"].clip(lower=1), np.nan
    )
    table["excluded"] = table["cohort_size"] - table["eligible"]
    table["incomplete"] = table["eligible"] == 0
    return table


def assert_tables_equal(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    columns = ["cohort", "period", "cohort_size", "eligible", "retained", "rate", "excluded", "incomplete"]
    pd.testing.assert_frame_equal(
        ours[columns].reset_index(drop=True),
        theirs[columns].sort_values(["cohort", "period"]).reset_index(drop=True),
        check_dtype=False,
    )


# ---------------------------------------------------------------------------------------------
# The table against the reference.


@pytest.mark.parametrize("period", PERIODS)
@pytest.mark.parametrize("mode", MODES)
def test_table_matches_reference(store, data, mode, period):
    spec = RetentionSpec(period=period, mode=mode)
    ours = retention_table(store, spec, Filters())
    assert_tables_equal(ours, reference_table(reference_users(*data, spec)))
    # Some cells must be incomplete, some complete, and the rule must matter.
    assert ours["incomplete"].any() and not ours["incomplete"].all()
    assert (ours["excluded"] > 0).any()


@pytest.mark.parametrize("period", PERIODS)
@pytest.mark.parametrize("mode", MODES)
def test_calendar_periods_match_reference(store, data, mode, period):
    spec = RetentionSpec(period=period, mode=mode, calendar=True, max_periods=8)
    assert_tables_equal(
        retention_table(store, spec, Filters()), reference_table(reference_users(*data, spec))
    )


@pytest.mark.parametrize(
    "spec",
    [
        RetentionSpec(return_events=("purchase",)),
        RetentionSpec(mode="consecutive", period="day", return_events=("view", "click"), max_periods=20),
        RetentionSpec(start=StartSpec("signup")),
        RetentionSpec(start=StartSpec("signup"), mode="unbounded", period="day", max_periods=40),
        RetentionSpec(start=StartSpec("event", "purchase"), return_events=("purchase",), period="month"),
        RetentionSpec(start=StartSpec("event", "click"), mode="consecutive", calendar=True),
        RetentionSpec(max_periods=0),
        RetentionSpec(period="day", max_periods=300),  # several mask words, rows past the data
    ],
    ids=lambda spec: json.dumps(spec.to_dict()),
)
def test_variants_match_reference(store, data, spec):
    assert_tables_equal(
        retention_table(store, spec, Filters()), reference_table(reference_users(*data, spec))
    )


@pytest.mark.parametrize("mode", MODES)
def test_filters_match_reference(store, data, mode):
    filters = Filters(dt.date(2024, 2, 1), dt.date(2024, 5, 15), (("country", ("DE", "US")),))
    spec = RetentionSpec(mode=mode)
    ours = retention_table(store, spec, filters)
    assert_tables_equal(ours, reference_table(reference_users(*data, spec, filters)))
    assert ours["cohort"].min() >= dt.date(2024, 1, 29)


def test_table_shape_and_types(store):
    table = retention_table(store, RetentionSpec(max_periods=5), Filters())
    assert list(table.columns) == [
        "cohort",
        "period",
        "cohort_size",
        "eligible",
        "retained",
        "rate",
        "excluded",
        "incomplete",
    ]
    assert all(isinstance(value, dt.date) for value in table["cohort"])
    assert all(value.weekday() == 0 for value in table["cohort"])
    # A row for every (cohort, k <= cap), incomplete ones included.
    assert len(table) == table["cohort"].nunique() * 6
    assert table.groupby("cohort")["period"].apply(list).map(lambda ks: ks == list(range(6))).all()
    assert table["rate"][table["incomplete"]].isna().all()
    period_zero = table[(table["period"] == 0) & ~table["incomplete"]]
    assert (period_zero["retained"] == period_zero["cohort_size"]).all()


# ---------------------------------------------------------------------------------------------
# Edge cases, each on a tiny hand-made store.


def tiny_store(tmp_path, rows: list[tuple[str, str]]) -> Store:
    events = pd.DataFrame(rows, columns=["user_id", "event_time"])
    events["event_time"] = pd.to_datetime(events["event_time"], format="ISO8601").astype("datetime64[us]")
    events["event_name"] = "open"
    events["revenue"] = 0.0
    users = pd.DataFrame({"user_id": [], "signup_time": [], "country": []})
    users["signup_time"] = users["signup_time"].astype("datetime64[us]")
    path = tmp_path / "tiny.duckdb"
    write_store(path, events, users.astype({"user_id": object, "country": object}))
    return Store(path, read_only=True)


def test_event_exactly_at_period_boundary_belongs_to_the_next_period(tmp_path):
    rows = [
        ("a", "2024-01-01 10:00:00"),
        ("a", "2024-01-08 10:00:00"),  # exactly start + 7 days: period 1, not 0
        ("a", "2024-01-15 09:59:59.999999"),  # one microsecond before period 2
        ("b", "2024-03-01 00:00:00"),  # fixes the data end
    ]
    with tiny_store(tmp_path, rows) as store:
        table = retention_table(store, RetentionSpec(period="week", max_periods=3), Filters())
        cells = table[table["cohort"] == dt.date(2024, 1, 1)].set_index("period")
        assert cells.loc[1, "retained"] == 1
        assert cells.loc[2, "retained"] == 0
        assert list(
            retention_users(store, RetentionSpec(max_periods=3), Filters(), "2024-01-01", 1, True)["user_id"]
        ) == ["a"]


def test_user_whose_only_event_is_the_start(tmp_path):
    rows = [("solo", "2024-01-03 12:00:00"), ("late", "2024-02-20 00:00:00")]
    with tiny_store(tmp_path, rows) as store:
        for mode in MODES:
            table = retention_table(store, RetentionSpec(mode=mode, max_periods=4), Filters())
            cells = table[table["cohort"] == dt.date(2024, 1, 1)].set_index("period")
            assert cells.loc[0, "retained"] == 1 and cells.loc[0, "eligible"] == 1
            assert (cells.loc[1:, "retained"] == 0).all() and (cells.loc[1:, "eligible"] == 1).all()


def test_cohort_whose_users_are_all_incomplete(tmp_path):
    rows = [
        ("old", "2024-01-01 00:00:00"),
        ("old", "2024-01-20 00:00:00"),
        ("new1", "2024-01-22 08:00:00"),
        ("new2", "2024-01-23 08:00:00"),
        ("end", "2024-01-30 12:00:00"),  # data end: period 1 of new1/new2 ends after it
    ]
    with tiny_store(tmp_path, rows) as store:
        table = retention_table(store, RetentionSpec(max_periods=2), Filters())
        latest = table[table["cohort"] == dt.date(2024, 1, 22)].set_index("period")
        assert latest.loc[0, "eligible"] == 2 and latest.loc[0, "retained"] == 2
        assert latest.loc[1, "incomplete"] and np.isnan(latest.loc[1, "rate"])
        assert latest.loc[1, "eligible"] == 0 and latest.loc[1, "excluded"] == 2
        assert retention_users(store, RetentionSpec(max_periods=2), Filters(), "2024-01-22", 1).empty


def test_empty_population(tmp_path):
    with tiny_store(tmp_path, [("a", "2024-01-01")]) as store:
        filters = Filters(start_date=dt.date(2030, 1, 1))
        assert retention_table(store, RetentionSpec(), filters).empty
        assert retention_curve(store, RetentionSpec(), filters).empty


# ---------------------------------------------------------------------------------------------
# Drill-down and curves agree with the table.


@pytest.mark.parametrize("mode", MODES)
def test_drill_down_matches_table_and_reference(store, data, mode):
    spec = RetentionSpec(mode=mode, max_periods=10)
    table = retention_table(store, spec, Filters())
    per_user = reference_users(*data, spec)
    cells = table[~table["incomplete"]].sample(12, random_state=3)
    for cell in cells.itertuples():
        retained = retention_users(store, spec, Filters(), cell.cohort, cell.period, retained=True)
        lost = retention_users(store, spec, Filters(), cell.cohort, cell.period, retained=False)
        everyone = retention_users(store, spec, Filters(), cell.cohort, cell.period)
        assert len(retained) == cell.retained
        assert len(lost) == cell.eligible - cell.retained
        assert len(everyone) == cell.eligible
        expected = per_user[
            (per_user["cohort"] == cell.cohort) & (per_user["period"] == cell.period) & per_user["complete"]
        ]
        assert set(retained["user_id"]) == set(expected[expected["retained"]]["user_id"])
        assert set(everyone["user_id"]) == set(expected["user_id"])
        assert list(retained.columns) == ["user_id", "start_time"]


def test_drill_down_rejects_bad_cells(store):
    with pytest.raises(TenureError):
        retention_users(store, RetentionSpec(max_periods=4), Filters(), "2024-01-01", 5)
    with pytest.raises(TenureError):
        retention_users(store, RetentionSpec(), Filters(), "not a date", 1)


@pytest.mark.parametrize("mode", MODES)
def test_curve_pools_the_table(store, mode):
    spec = RetentionSpec(mode=mode, period="week")
    table = retention_table(store, spec, Filters())
    curve = retention_curve(store, spec, Filters())
    sums = table.groupby("period")[["eligible", "retained"]].sum().reset_index()
    assert list(curve.columns) == ["period", "eligible", "retained", "rate", "lower", "upper"]
    np.testing.assert_array_equal(curve["period"], sums["period"])
    np.testing.assert_array_equal(curve["eligible"], sums["eligible"])
    np.testing.assert_array_equal(curve["retained"], sums["retained"])
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(curve["rate"], sums["retained"] / sums["eligible"].replace(0, np.nan))
    lower, upper = wilson_interval(sums["retained"], sums["eligible"])
    np.testing.assert_allclose(curve["lower"], lower)
    np.testing.assert_allclose(curve["upper"], upper)
    complete = curve["eligible"] > 0
    assert (curve["lower"][complete] <= curve["rate"][complete]).all()
    assert (curve["rate"][complete] <= curve["upper"][complete]).all()


def assert_curve_by_segment(curve: pd.DataFrame, per_user: pd.DataFrame, segment: pd.Series) -> None:
    """The curve's counts per segment and period equal the reference's (``reference_users`` rows)."""
    per_user = per_user.assign(segment=segment, hit=per_user["complete"] & per_user["retained"])
    expected = (
        per_user.groupby(["segment", "period"])
        .agg(eligible=("complete", "sum"), retained=("hit", "sum"))
        .reset_index()
        .sort_values(["segment", "period"], ignore_index=True)
    )
    pd.testing.assert_frame_equal(
        curve[["segment", "period", "eligible", "retained"]], expected, check_dtype=False
    )


def test_curve_by_segment_matches_reference(store, data):
    spec = RetentionSpec(mode="classic", period="week", max_periods=12)
    curve = retention_curve(store, spec, Filters(), by="country")
    per_user = reference_users(*data, spec)
    assert set(curve["segment"]) == {"(none)", "DE", "FR", "US"}
    assert_curve_by_segment(curve, per_user, per_user["country"].fillna("(none)"))


def test_curve_by_experiment_variant_matches_reference(data, tmp_path):
    """Users assigned to one variant, to two (``(several)``) or never (``(none)``)."""
    events, users = data
    path = tmp_path / "assigned.duckdb"
    write_store(path, events, users)
    user_ids = sorted(events["user_id"].unique())
    rows = [
        (user, "a" if number % 3 == 0 else "b") for number, user in enumerate(user_ids) if number % 3 != 2
    ]
    rows += [(user_ids[0], "b"), (user_ids[3], "a")]  # two users in both variants
    with Store(path) as store:
        with store.transaction() as cursor:
            cursor.executemany(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time) "
                "VALUES (?, 'onboarding', ?, TIMESTAMP '2024-01-01')",
                rows,
            )
            cursor.execute(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time) "
                "VALUES (?, 'other', 'x', TIMESTAMP '2024-01-01')",
                [user_ids[1]],
            )
        spec = RetentionSpec(mode="consecutive", period="week", max_periods=10)
        curve = retention_curve(store, spec, Filters(), by="experiment:onboarding")
    variants = pd.DataFrame(rows, columns=["user_id", "variant"]).groupby("user_id")["variant"]
    group = variants.agg(lambda values: values.iloc[0] if values.nunique() == 1 else "(several)")
    per_user = reference_users(events, users, spec)
    assert set(curve["segment"]) == {"(none)", "(several)", "a", "b"}
    assert_curve_by_segment(curve, per_user, per_user["user_id"].map(group).fillna("(none)"))


def test_curve_rejects_unknown_experiment(store):
    with pytest.raises(TenureError, match="no experiment named 'nope'"):
        retention_curve(store, RetentionSpec(), Filters(), by="experiment:nope")


def test_curve_rejects_unknown_attribute(store):
    with pytest.raises(TenureError, match="plan"):
        retention_curve(store, RetentionSpec(), Filters(), by="plan")


# ---------------------------------------------------------------------------------------------
# The spec.


def test_spec_round_trips_through_json_and_url():
    spec = RetentionSpec(
        period="month",
        mode="consecutive",
        max_periods=6,
        start=StartSpec("event", "purchase"),
        return_events=("purchase", "view"),
        calendar=True,
    )
    assert RetentionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert RetentionSpec.from_query_params(spec.to_query_params()) == spec
    assert RetentionSpec.from_query_params(RetentionSpec().to_query_params()) == RetentionSpec()
    assert RetentionSpec.from_dict({}) == RetentionSpec()


@pytest.mark.parametrize(
    "arguments",
    [
        {"period": "year"},
        {"mode": "rolling"},
        {"max_periods": -1},
        {"max_periods": 2.5},
        {"return_events": "purchase"},
    ],
)
def test_spec_rejects_bad_values(arguments):
    with pytest.raises(TenureError):
        RetentionSpec(**arguments)


@pytest.mark.parametrize(
    "text, start",
    [
        ("first_event", StartSpec()),
        ("signup", StartSpec("signup")),
        ("event:purchase", StartSpec("event", "purchase")),
        ("event:event:odd", StartSpec("event", "event:odd")),
    ],
)
def test_start_text_is_the_cli_form(text, start):
    assert StartSpec.from_text(text) == start
    assert start.to_text() == text


@pytest.mark.parametrize("text", ["first", "event:", ""])
def test_start_text_rejects_unknown_kinds(text):
    with pytest.raises(TenureError):
        StartSpec.from_text(text)


def test_spec_from_query_params_rejects_bad_numbers():
    with pytest.raises(TenureError):
        RetentionSpec.from_query_params({"max_periods": "many"})


# ---------------------------------------------------------------------------------------------
# Figures built from the frames.


def test_figures_from_frames(store):
    from core.figures import retention_curves, retention_heatmap

    spec = RetentionSpec(max_periods=10)
    table = retention_table(store, spec, Filters())
    heatmap = retention_heatmap(table)
    trace = heatmap.data[0]
    assert len(trace.y) == table["cohort"].nunique() and len(trace.x) == 11
    z = np.array(trace.z, dtype=float)
    assert np.isnan(z).sum() == table["incomplete"].sum()
    assert (np.array(trace.text) == "…").sum() == table["incomplete"].sum()
    # Each cell's hover numbers are the table's, cell for cell (checked against a pandas pivot).
    for position, column in enumerate(("retained", "eligible", "excluded", "cohort_size")):
        expected = table.pivot(index="cohort", columns="period", values=column).to_numpy()
        assert np.array_equal(np.asarray(trace.customdata)[:, :, position], expected), column
    rates = table.pivot(index="cohort", columns="period", values="rate").to_numpy()
    assert np.allclose(
        z,
        np.where(table.pivot(index="cohort", columns="period", values="incomplete"), np.nan, rates),
        equal_nan=True,
    )
    curves = retention_curves(retention_curve(store, spec, Filters(), by="country"))
    assert {trace.name for trace in curves.data if trace.mode == "lines+markers"} == {
        "(none)",
        "DE",
        "FR",
        "US",
    }
    assert len(retention_heatmap(table.iloc[0:0]).data) == 0


def test_daily_triangle_sends_numbers_not_strings(store):
    """A daily triangle has a cell per cohort and day: its hover must not cost a string per cell."""
    from core.figures import retention_heatmap

    table = retention_table(store, RetentionSpec(period="day"), Filters())
    figure = retention_heatmap(table)
    assert figure.data[0].text is None and figure.data[0].texttemplate is None
    assert len(table) > 10_000
    # 4 bytes of rate and at most 4 x 4 bytes of counts per cell, base64-encoded: under 32 bytes.
    assert len(figure.to_json()) < 32 * len(table) + 20_000


# ---------------------------------------------------------------------------------------------
# Users are counted by their integer key (events.user_key); stores without usable keys hash
# user_id in the query and must give the same answers.


def test_store_without_usable_keys_gives_the_same_answers(store, data, tmp_path):
    assert keyed_events_sql(store) == "events"
    path = tmp_path / "old.duckdb"
    write_store(path, *data)
    with duckdb.connect(str(path)) as connection:
        connection.execute("ALTER TABLE events DROP COLUMN user_key")
    specs = [
        RetentionSpec(mode=mode, start=start, max_periods=10)
        for mode in MODES
        for start in (StartSpec(), StartSpec("signup"), StartSpec("event", "purchase"))
    ]
    filters = Filters(dt.date(2024, 2, 1), dt.date(2024, 5, 15), (("country", ("DE", "US")),))
    with Store(path, read_only=True) as old:
        assert keyed_events_sql(old) != "events"
        for spec in specs:
            for chosen in (Filters(), filters):
                assert_tables_equal(retention_table(old, spec, chosen), retention_table(store, spec, chosen))
        spec = RetentionSpec(max_periods=10)
        pd.testing.assert_frame_equal(
            retention_curve(old, spec, Filters(), by="country"),
            retention_curve(store, spec, Filters(), by="country"),
        )
        pd.testing.assert_frame_equal(
            retention_users(old, spec, filters, "2024-02-05", 2, retained=True),
            retention_users(store, spec, filters, "2024-02-05", 2, retained=True),
        )


def test_consecutive_streak_across_mask_words(tmp_path):
    # Daily activity for 130 days, then a gap: streaks cross two 62-period mask words.
    rows = [("steady", f"{day:%Y-%m-%d} 08:00:00") for day in pd.date_range("2024-01-01", periods=131)]
    rows += [("gap", "2024-01-01 09:00:00"), ("gap", "2024-01-02 09:00:00"), ("end", "2024-07-01 00:00:00")]
    with tiny_store(tmp_path, rows) as store:
        spec = RetentionSpec(period="day", mode="consecutive", max_periods=150)
        cells = retention_table(store, spec, Filters())
        cells = cells[cells["cohort"] == dt.date(2024, 1, 1)].set_index("period")
        steady = [int(k <= 130) for k in range(151)]
        gap = [int(k <= 1) for k in range(151)]
        assert cells["retained"].tolist() == [a + b for a, b in zip(steady, gap, strict=True)]
