"""Funnels against a plain Python reference that walks each user's sorted events.

The reference is written from docs/METRICS.md, independently of the SQL: for every try (each
step-1 event; for ``any`` order each step event) it walks forward through the user's events and
takes the longest try. A second walk (one pass keeping the latest valid end of each step) gives
the time between steps and must agree on the levels; on small users an exhaustive search over
all chains checks that the longest greedy try is the longest chain.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from core import figures_funnels
from core.errors import TenureError
from core.funnels import (
    LIFECYCLE_STAGES,
    STEP_TIME_COLUMNS,
    TABLE_COLUMNS,
    FunnelSpec,
    LifecycleFunnelSpec,
    conversion_over_time,
    funnel_table,
    funnel_users,
    lifecycle_funnel,
    step_time_histogram,
    step_times,
    walk_funnel,
)
from core.population import Filters
from core.stats import wilson_interval
from core.store import Store

ORDERS = ("ordered", "strict", "any")
US = dt.timedelta(microseconds=1)


# --- The reference --------------------------------------------------------------------------------


def sorted_events(events: list[tuple[pd.Timestamp, str]], spec: FunnelSpec) -> list[tuple[pd.Timestamp, str]]:
    """Time order; at one instant the steps in funnel order, every other name after them."""
    rank = {name: index for index, name in enumerate(spec.steps)}
    return sorted(events, key=lambda event: (event[0], rank.get(event[1], len(spec.steps))))


def first_exclusion_from(events, spec: FunnelSpec, start: pd.Timestamp):
    times = [time for time, name in events if name == spec.exclusion and time >= start]
    return min(times) if times else None


def usable(time, anchor_time, stop, spec: FunnelSpec) -> bool:
    return time - anchor_time <= spec.window and (stop is None or time < stop)


def reference_level(events: list[tuple[pd.Timestamp, str]], spec: FunnelSpec) -> int:
    """The user's level: the longest try, each try walked forward from its first event."""
    ordered = sorted_events(events, spec)
    steps = spec.steps
    best = 0
    for index, (anchor_time, anchor_name) in enumerate(ordered):
        stop = first_exclusion_from(ordered, spec, anchor_time)
        if spec.order == "any":
            if anchor_name not in steps:
                continue
            seen = {anchor_name} | {
                name
                for time, name in ordered
                if time >= anchor_time and usable(time, anchor_time, stop, spec)
            }
            level = 0
            while level < len(steps) and steps[level] in seen:
                level += 1
            best = max(best, level)
            continue
        if anchor_name != steps[0]:
            continue
        level = 1
        for time, name in ordered[index + 1 :]:
            if level == len(steps) or not usable(time, anchor_time, stop, spec):
                break
            if name == steps[level]:
                level += 1
            elif spec.order == "strict":
                break
        best = max(best, level)
    return best


def reference_gaps(events: list[tuple[pd.Timestamp, str]], spec: FunnelSpec) -> tuple[int, dict[int, float]]:
    """One pass keeping, per step, the latest event ending a valid try (its anchor the latest):
    returns the level and, per step j >= 2, seconds from step j-1 on the first completion of j."""
    ordered = sorted_events(events, spec)
    steps = spec.steps
    latest_end: dict[int, tuple[pd.Timestamp, pd.Timestamp, object]] = {}  # step -> (time, anchor, stop)
    gaps: dict[int, float] = {}
    previous_step = None
    level = 0
    for time, name in ordered:
        step = steps.index(name) + 1 if name in steps else None
        follows = step is not None and step >= 2 and step - 1 in latest_end
        if spec.order == "strict":
            follows = follows and previous_step is not None and previous_step[0] == step - 1
        ended = None
        if step == 1:
            ended = (time, time, first_exclusion_from(ordered, spec, time))
        elif follows:
            before_time, anchor, stop = previous_step[1] if spec.order == "strict" else latest_end[step - 1]
            if usable(time, anchor, stop, spec):
                ended = (time, anchor, stop)
                gaps.setdefault(step, (time - before_time).total_seconds())
        if ended is not None:
            latest_end[step] = ended
            level = max(level, step)
        previous_step = (step, ended) if ended is not None else None
    return level, gaps


def brute_force_level(events: list[tuple[pd.Timestamp, str]], spec: FunnelSpec) -> int:
    """Ordered mode by exhaustive search over every chain of distinct events (small users only)."""
    ordered = sorted_events(events, spec)
    best = 0
    for length in range(1, len(spec.steps) + 1):
        for chain in itertools.combinations(range(len(ordered)), length):
            names = [ordered[i][1] for i in chain]
            if names != list(spec.steps[:length]):
                continue
            anchor = ordered[chain[0]][0]
            stop = first_exclusion_from(ordered, spec, anchor)
            if all(usable(ordered[i][0], anchor, stop, spec) for i in chain[1:]):
                best = max(best, length)
    return best


def events_by_user(frame: pd.DataFrame) -> dict[str, list[tuple[pd.Timestamp, str]]]:
    grouped: dict[str, list] = defaultdict(list)
    for user, time, name in frame[["user_id", "event_time", "event_name"]].itertuples(index=False):
        grouped[user].append((pd.Timestamp(time), str(name)))
    return grouped


def reference_window_level(events: list[tuple[pd.Timestamp, str]], spec: FunnelSpec) -> int:
    """The level from the events within the window of the first step-1 event (``any``: the first
    step event), the rule of conversion over time."""
    entries = spec.steps if spec.order == "any" else spec.steps[:1]
    anchors = [time for time, name in events if name in entries]
    if not anchors:
        return 0
    cut = min(anchors) + spec.window
    return reference_level([(time, name) for time, name in events if time <= cut], spec)


def reference_window_counts(grouped, spec: FunnelSpec) -> list[int]:
    levels = [reference_window_level(events, spec) for events in grouped.values()]
    return [sum(level >= step for level in levels) for step in range(1, len(spec.steps) + 1)]


def reference_counts(grouped, spec: FunnelSpec) -> list[int]:
    levels = [reference_level(events, spec) for events in grouped.values()]
    return [sum(level >= step for level in levels) for step in range(1, len(spec.steps) + 1)]


# --- Stores ----------------------------------------------------------------------------------------


def tie_heavy_events(seed: int, users: int = 150) -> pd.DataFrame:
    """Events on a 10-minute grid (many ties) over a few hours, with exclusions and other names."""
    rng = np.random.default_rng(seed)
    origin = pd.Timestamp("2025-03-03 08:00")
    names = ["a", "b", "c", "d", "x", "o"]
    rows = []
    for number in range(users):
        for _ in range(int(rng.integers(1, 14))):
            minute = 10 * int(rng.integers(0, 18))
            name = str(rng.choice(names, p=[0.25, 0.2, 0.17, 0.15, 0.1, 0.13]))
            rows.append((f"u{number:03d}", origin + pd.Timedelta(minutes=minute), name))
    frame = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name"])
    frame["event_time"] = frame["event_time"].astype("datetime64[us]")
    return frame


def write_events(path, events: pd.DataFrame, users: pd.DataFrame | None = None) -> None:
    with Store(path) as store, store.transaction() as cursor:
        cursor.register("events_frame", events)
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name) SELECT user_id, event_time, event_name FROM events_frame"
        )
        if users is not None:
            cursor.execute("ALTER TABLE users ADD COLUMN country VARCHAR")
            cursor.register("users_frame", users)
            cursor.execute("INSERT INTO users (user_id, country) SELECT user_id, country FROM users_frame")


@pytest.fixture(scope="module")
def tie_data(tmp_path_factory):
    events = tie_heavy_events(seed=5)
    users = pd.DataFrame({"user_id": sorted(events["user_id"].unique())})
    users["country"] = ["DE", "FR", "US"] * (len(users) // 3) + ["DE", "FR", "US"][: len(users) % 3]
    path = tmp_path_factory.mktemp("funnels") / "ties.duckdb"
    write_events(path, events, users)
    with Store(path, read_only=True) as store:
        yield store, events, users


@pytest.fixture(scope="module")
def simulated(small_store_path):
    with Store(small_store_path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, event_name FROM events")
        yield store, events


# --- Reference comparisons -------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    ("steps", "window"),
    [
        (("app_open", "view", "click", "purchase"), dt.timedelta(days=7)),
        (("view", "add_to_cart", "purchase"), dt.timedelta(hours=1)),
        (("app_open", "recommendation_click", "add_to_cart"), dt.timedelta(days=1)),
    ],
)
def test_simulated_store_matches_reference(simulated, order, steps, window):
    store, events = simulated
    spec = FunnelSpec(steps, window, order)
    table = funnel_table(store, spec, Filters())
    assert list(table.columns) == list(TABLE_COLUMNS)
    expected = reference_counts(events_by_user(events), spec)
    assert table["users"].tolist() == expected
    assert expected[0] > 0


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("exclusion", [None, "x"])
@pytest.mark.parametrize("minutes", [0, 20, 60])
def test_ties_and_exclusions_match_reference(tie_data, order, exclusion, minutes):
    store, events, _ = tie_data
    window = dt.timedelta(minutes=minutes) if minutes else US
    spec = FunnelSpec(("a", "b", "c", "d"), window, order, exclusion)
    grouped = events_by_user(events)
    assert funnel_table(store, spec, Filters())["users"].tolist() == reference_counts(grouped, spec)


@pytest.mark.parametrize("order", ["ordered", "strict"])
@pytest.mark.parametrize("exclusion", [None, "x"])
def test_step_times_match_reference_walk(tie_data, order, exclusion):
    store, events, _ = tie_data
    spec = FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=40), order, exclusion)
    grouped = events_by_user(events)
    per_step: dict[int, list[float]] = defaultdict(list)
    for user_events in grouped.values():
        level, gaps = reference_gaps(user_events, spec)
        assert level == reference_level(user_events, spec)
        assert sorted(gaps) == list(range(2, level + 1))
        for step, seconds in gaps.items():
            per_step[step].append(seconds)
    times = step_times(store, spec, Filters())
    for row in times.itertuples():
        values = np.array(per_step[row.step])
        assert row.users == len(values)
        assert row.median_seconds == pytest.approx(np.quantile(values, 0.5))
        assert row.q1_seconds == pytest.approx(np.quantile(values, 0.25))
        assert row.q3_seconds == pytest.approx(np.quantile(values, 0.75))
    histogram = step_time_histogram(store, spec, Filters())
    for step, values in per_step.items():
        rows = histogram[histogram["step"] == step]
        assert rows["users"].sum() == len(values)
        under_ten_minutes = sum(value < 600 for value in values)
        assert rows.loc[rows["upper_seconds"] <= 600, "users"].sum() == under_ten_minutes


def test_greedy_tries_are_the_longest_chains(tie_data):
    _, events, _ = tie_data
    grouped = events_by_user(events)
    for exclusion in (None, "x"):
        spec = FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30), "ordered", exclusion)
        checked = 0
        for user_events in grouped.values():
            if len(user_events) <= 9:
                assert reference_level(user_events, spec) == brute_force_level(user_events, spec)
                checked += 1
        assert checked > 50


def test_breakdown_counts_per_group(tie_data):
    store, events, users = tie_data
    spec = FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30), "ordered", breakdown="country")
    table = funnel_table(store, spec, Filters())
    assert list(table.columns) == ["group", *TABLE_COLUMNS]
    grouped = events_by_user(events)
    for country, members in users.groupby("country")["user_id"]:
        mine = {user: grouped[user] for user in members if user in grouped}
        rows = table[table["group"] == country]
        assert rows["users"].tolist() == reference_counts(mine, spec)


def test_a_breakdown_walk_serves_the_whole_funnel_views(tie_data):
    """The page walks once with its breakdown: the overall table, the histogram, conversion by
    week and the drill-down read from that walk must be those of all entered users."""
    store, events, users = tie_data
    plain = FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30), "ordered")
    spec = FunnelSpec(plain.steps, plain.window, plain.order, breakdown="country")
    walk = walk_funnel(store, spec, Filters())
    grouped = events_by_user(events)
    overall = walk.table(by_group=False)
    assert list(overall.columns) == list(TABLE_COLUMNS)
    assert overall["users"].tolist() == reference_counts(grouped, plain)
    by_country = walk.table()
    assert by_country.groupby("step")["users"].sum().tolist() == reference_counts(grouped, plain)
    assert set(by_country["group"]) == set(users["country"])
    pd.testing.assert_frame_equal(walk.step_time_histogram(), step_time_histogram(store, plain, Filters()))
    pd.testing.assert_frame_equal(walk.conversion_over_time(), conversion_over_time(store, plain, Filters()))
    levels = {user: reference_level(user_events, plain) for user, user_events in grouped.items()}
    dropped = walk.step_users(store, 2, "dropped")
    assert dropped["user_id"].tolist() == sorted(user for user, level in levels.items() if level == 1)
    times = walk.step_times()
    assert list(times.columns) == ["group", *STEP_TIME_COLUMNS]
    assert times.groupby("step")["users"].sum().tolist() == reference_counts(grouped, plain)[1:]


def test_filters_select_users_not_events(tie_data):
    store, events, users = tie_data
    spec = FunnelSpec(("a", "b"), dt.timedelta(minutes=30), "ordered")
    filters = Filters(segments=(("country", ("FR",)),))
    grouped = events_by_user(events)
    french = set(users.loc[users["country"] == "FR", "user_id"])
    expected = reference_counts({user: grouped[user] for user in grouped if user in french}, spec)
    assert funnel_table(store, spec, filters)["users"].tolist() == expected


def test_conversion_columns_and_intervals(tie_data):
    store, _, _ = tie_data
    table = funnel_table(store, FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30)), Filters())
    users = table["users"].to_numpy()
    assert table["conversion_from_start"].tolist() == pytest.approx((users / users[0]).tolist())
    assert table["conversion_from_previous"].iloc[1:].tolist() == pytest.approx(
        (users[1:] / users[:-1]).tolist()
    )
    lower, upper = wilson_interval(users[1:], users[:-1])
    assert table["lower_from_previous"].iloc[1:].tolist() == pytest.approx(lower.tolist())
    assert table["upper_from_previous"].iloc[1:].tolist() == pytest.approx(upper.tolist())
    assert table.loc[0, ["conversion_from_start", "lower_from_start", "upper_from_start"]].tolist() == [
        1,
        1,
        1,
    ]


def test_users_and_weeks_match_reference(tie_data):
    store, events, _ = tie_data
    spec = FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30), "ordered", "x")
    grouped = events_by_user(events)
    levels = {user: reference_level(user_events, spec) for user, user_events in grouped.items()}
    reached = funnel_users(store, spec, Filters(), 2, "reached")
    assert reached["user_id"].tolist() == sorted(user for user, level in levels.items() if level >= 2)
    dropped = funnel_users(store, spec, Filters(), 3, "dropped")
    assert dropped["user_id"].tolist() == sorted(user for user, level in levels.items() if level == 2)
    assert (dropped["level"] == 2).all()
    first_a = {user: min(time for time, name in grouped[user] if name == "a") for user in reached["user_id"]}
    assert [pd.Timestamp(value) for value in reached["first_step_time"]] == [
        first_a[u] for u in reached["user_id"]
    ]
    weekly = conversion_over_time(store, spec, Filters())
    assert set(weekly["week"]) == {dt.date(2025, 3, 3)}
    assert weekly["users"].tolist() == reference_window_counts(grouped, spec)
    assert weekly["users"].tolist() != reference_counts(grouped, spec), "later tries must matter here"
    assert not weekly["complete"].any()  # the data ends hours after the week began


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("exclusion", [None, "x"])
def test_window_levels_match_reference_on_ties(tie_data, order, exclusion):
    store, events, _ = tie_data
    spec = FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30), order, exclusion)
    weekly = conversion_over_time(store, spec, Filters())
    assert weekly["users"].tolist() == reference_window_counts(events_by_user(events), spec)


@pytest.mark.parametrize("order", ORDERS)
def test_conversion_over_time_matches_reference_by_week(simulated, order):
    store, events = simulated
    spec = FunnelSpec(("view", "add_to_cart", "purchase"), dt.timedelta(days=3), order)
    grouped = events_by_user(events)
    data_end = events["event_time"].max()
    expected = defaultdict(lambda: [0, 0, 0])
    for user_events in grouped.values():
        anchors = [
            time for time, name in user_events if name in (spec.steps if order == "any" else spec.steps[:1])
        ]
        if not anchors:
            continue
        week = (min(anchors) - pd.Timedelta(days=min(anchors).day_of_week)).normalize()
        level = reference_window_level(user_events, spec)
        for step in range(level):
            expected[week][step] += 1
    weekly = conversion_over_time(store, spec, Filters())
    assert sorted(expected) == sorted(pd.Timestamp(week) for week in weekly["week"].unique())
    for week, rows in weekly.groupby("week"):
        assert rows["users"].tolist() == expected[pd.Timestamp(week)]
        complete = pd.Timestamp(week) + pd.Timedelta(days=7) + spec.window <= data_end + pd.Timedelta(
            microseconds=1
        )
        assert rows["complete"].tolist() == [complete] * 3
    assert weekly["complete"].any() and not weekly["complete"].all()


# --- Named edge cases ------------------------------------------------------------------------------


def small_store(tmp_path, rows: list[tuple[str, str, str]], name: str = "edge") -> Store:
    frame = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], format="ISO8601").astype("datetime64[us]")
    path = tmp_path / f"{name}.duckdb"
    write_events(path, frame)
    return Store(path, read_only=True)


def levels_of(store: Store, spec: FunnelSpec) -> list[int]:
    return funnel_table(store, spec, Filters())["users"].tolist()


def test_equal_timestamps_follow_the_funnel_order(tmp_path):
    with small_store(
        tmp_path,
        [("u1", "2025-01-01 10:00", "b"), ("u1", "2025-01-01 10:00", "a"), ("u1", "2025-01-01 10:00", "c")],
    ) as store:
        # Whatever order they were stored in, events at one instant satisfy consecutive steps
        # in the funnel's order, in every order mode and for any order of the steps.
        for order in ORDERS:
            assert levels_of(store, FunnelSpec(("a", "b", "c"), order=order)) == [1, 1, 1]
            assert levels_of(store, FunnelSpec(("c", "b", "a"), order=order)) == [1, 1, 1]


def test_earlier_instant_does_not_chain_backwards(tmp_path):
    rows = [("u1", "2025-01-01 10:00", "b"), ("u1", "2025-01-01 09:00", "a")]
    with small_store(tmp_path, rows) as store:
        assert levels_of(store, FunnelSpec(("b", "a"))) == [1, 0]
        assert levels_of(store, FunnelSpec(("a", "b"))) == [1, 1]


def test_event_outside_the_window(tmp_path):
    rows = [
        ("u1", "2025-01-01 00:00", "a"),
        ("u1", "2025-01-08 00:00", "b"),
        ("u1", "2025-01-08 00:00:01", "c"),
    ]
    with small_store(tmp_path, rows) as store:
        # b exactly at the window's end counts, c one second later does not.
        assert levels_of(store, FunnelSpec(("a", "b", "c"), dt.timedelta(days=7))) == [1, 1, 0]


def test_second_try_goes_deeper(tmp_path):
    rows = [
        ("u1", "2025-01-01", "a"),
        ("u1", "2025-01-02", "b"),
        ("u1", "2025-01-20", "a"),
        ("u1", "2025-01-21", "b"),
        ("u1", "2025-01-22", "c"),
    ]
    with small_store(tmp_path, rows) as store:
        assert levels_of(store, FunnelSpec(("a", "b", "c"), dt.timedelta(days=7))) == [1, 1, 1]
        times = step_times(store, FunnelSpec(("a", "b", "c"), dt.timedelta(days=7)), Filters())
        assert times["median_seconds"].tolist() == [86_400, 86_400]


def test_exclusion_between_steps_ends_the_try(tmp_path):
    rows = [
        ("u1", "2025-01-01 00:00", "a"),
        ("u1", "2025-01-01 01:00", "b"),
        ("u1", "2025-01-01 02:00", "x"),
        ("u1", "2025-01-01 03:00", "c"),
        ("u2", "2025-01-01 00:00", "a"),
        ("u2", "2025-01-01 01:00", "b"),
        ("u2", "2025-01-01 03:00", "c"),
    ]
    with small_store(tmp_path, rows) as store:
        for order in ORDERS:
            assert levels_of(store, FunnelSpec(("a", "b", "c"), order=order, exclusion="x")) == [2, 2, 1]
            assert levels_of(store, FunnelSpec(("a", "b", "c"), order=order)) == [
                2,
                2,
                2 if order != "strict" else 1,
            ]


def test_try_after_the_exclusion_still_counts(tmp_path):
    rows = [("u1", "2025-01-01 00:00", "a"), ("u1", "2025-01-01 01:00", "x"), ("u1", "2025-01-01 02:00", "a")]
    rows += [("u1", "2025-01-01 03:00", "b")]
    with small_store(tmp_path, rows) as store:
        assert levels_of(store, FunnelSpec(("a", "b"), exclusion="x")) == [1, 1]


def test_strict_mode_with_an_interleaved_event(tmp_path):
    rows = [("u1", "2025-01-01 00:00", "a"), ("u1", "2025-01-01 00:10", "o"), ("u1", "2025-01-01 00:20", "b")]
    rows += [("u2", "2025-01-01 00:00", "a"), ("u2", "2025-01-01 00:20", "b")]
    with small_store(tmp_path, rows) as store:
        assert levels_of(store, FunnelSpec(("a", "b"), order="strict")) == [2, 1]
        assert levels_of(store, FunnelSpec(("a", "b"), order="ordered")) == [2, 2]


def test_any_order(tmp_path):
    rows = [("u1", "2025-01-01 00:00", "c"), ("u1", "2025-01-01 00:10", "a"), ("u1", "2025-01-01 00:20", "b")]
    with small_store(tmp_path, rows) as store:
        assert levels_of(store, FunnelSpec(("a", "b", "c"), order="any")) == [1, 1, 1]
        assert levels_of(store, FunnelSpec(("a", "b", "c"), order="ordered")) == [1, 1, 0]
        assert levels_of(store, FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=10), order="any")) == [
            1,
            1,
            0,
        ]


# --- Spec, input and empty cases -------------------------------------------------------------------


def test_url_and_dict_round_trip():
    spec = FunnelSpec(
        ("view", "add_to_cart", "purchase"), dt.timedelta(hours=36), "strict", "refund", "cohort:week"
    )
    assert FunnelSpec.from_query_params(spec.to_query_params()) == spec
    assert FunnelSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_query_params()["window"] == "36h"
    plain = FunnelSpec(("a", "b"))
    assert FunnelSpec.from_query_params(plain.to_query_params()) == plain
    lifecycle = LifecycleFunnelSpec(key_event="view", active_days=4, breakdown="country")
    assert LifecycleFunnelSpec.from_dict(lifecycle.to_dict()) == lifecycle


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": ("a",)}, "2 to 10 steps, got 1"),
        ({"steps": tuple("abcdefghijk")}, "2 to 10 steps, got 11"),
        ({"steps": ("a", "b", "a")}, "more than once"),
        ({"steps": ("a", "b"), "order": "sideways"}, "unknown funnel order"),
        ({"steps": ("a", "b"), "exclusion": "b"}, "also a step"),
        ({"steps": "a,b"}, "not the string"),
    ],
)
def test_bad_specs_are_explained(kwargs, message):
    with pytest.raises(TenureError, match=message):
        FunnelSpec(**kwargs)


def test_unknown_event_name_is_explained(tie_data):
    store, _, _ = tie_data
    with pytest.raises(TenureError, match="no event named 'nope'"):
        funnel_table(store, FunnelSpec(("a", "nope")), Filters())
    with pytest.raises(TenureError, match="no event named 'nada'"):
        funnel_table(store, FunnelSpec(("a", "b"), exclusion="nada"), Filters())


def test_empty_population_gives_zero_counts(tie_data):
    store, _, _ = tie_data
    filters = Filters(start_date=dt.date(2030, 1, 1))
    table = funnel_table(store, FunnelSpec(("a", "b")), filters)
    assert table["users"].tolist() == [0, 0]
    assert table["conversion_from_start"].isna().all()
    assert conversion_over_time(store, FunnelSpec(("a", "b")), filters).empty
    assert step_times(store, FunnelSpec(("a", "b")), filters).empty


def test_drill_down_arguments_are_checked(tie_data):
    store, _, _ = tie_data
    spec = FunnelSpec(("a", "b"))
    with pytest.raises(TenureError, match="out of range"):
        funnel_users(store, spec, Filters(), 3)
    with pytest.raises(TenureError, match="nobody drops"):
        funnel_users(store, spec, Filters(), 1, "dropped")


# --- The lifecycle funnel --------------------------------------------------------------------------


def reference_lifecycle(events: pd.DataFrame, spec: LifecycleFunnelSpec) -> list[int]:
    """The six stages in pandas, straight from the definitions."""
    frame = events.copy()
    frame["start"] = frame.groupby("user_id")["event_time"].transform("min")
    since = frame["event_time"] - frame["start"]
    key = (
        (frame["event_name"] == spec.key_event) if spec.key_event else (frame["event_time"] > frame["start"])
    )
    activated = (key & (since <= pd.Timedelta(days=spec.activation_days))).groupby(frame["user_id"]).any()
    in_engagement = frame[since < pd.Timedelta(days=spec.engagement_days)]
    days = in_engagement.groupby("user_id")["event_time"].apply(lambda times: times.dt.date.nunique())
    purchases = (frame["event_name"] == spec.purchase_event).groupby(frame["user_id"]).sum()
    end = frame["event_time"].max()
    last_monday = (end - pd.Timedelta(days=end.day_of_week)).normalize()
    recent = frame[(frame["event_time"] >= last_monday - pd.Timedelta(weeks=spec.loyal_of_weeks))]
    recent = recent[recent["event_time"] < last_monday]
    weeks = recent.groupby("user_id")["event_time"].apply(lambda times: times.dt.to_period("W").nunique())
    users = pd.DataFrame({"activated": activated})
    users["days"] = days.reindex(users.index).fillna(0)
    users["purchases"] = purchases.reindex(users.index).fillna(0)
    users["weeks"] = weeks.reindex(users.index).fillna(0)
    stages = [
        pd.Series(True, index=users.index),
        users["activated"],
        users["days"] >= spec.active_days,
        users["purchases"] >= 1,
        users["purchases"] >= 2,
        users["weeks"] >= spec.loyal_weeks,
    ]
    counts, reached = [], pd.Series(True, index=users.index)
    for stage in stages:
        reached = reached & stage.astype(bool)
        counts.append(int(reached.sum()))
    return counts


@pytest.mark.parametrize(
    "spec",
    [
        LifecycleFunnelSpec(key_event="view"),
        LifecycleFunnelSpec(key_event="add_to_cart", activation_days=3, active_days=5, engagement_days=14),
        LifecycleFunnelSpec(loyal_weeks=2, loyal_of_weeks=3),
    ],
)
def test_lifecycle_funnel_matches_pandas(simulated, spec):
    store, events = simulated
    table = lifecycle_funnel(store, spec, Filters())
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["event_name"].tolist() == list(LIFECYCLE_STAGES)
    expected = reference_lifecycle(events, spec)
    assert table["users"].tolist() == expected
    assert expected[-1] > 0 and expected[0] > expected[-1]


def test_lifecycle_breakdown_sums_to_total(simulated):
    store, _ = simulated
    spec = LifecycleFunnelSpec(key_event="view", breakdown="country")
    grouped = lifecycle_funnel(store, spec, Filters())
    total = lifecycle_funnel(store, LifecycleFunnelSpec(key_event="view"), Filters())
    assert grouped.groupby("step")["users"].sum().tolist() == total["users"].tolist()


def test_weeks_whose_window_is_open_are_drawn_apart(simulated):
    store, _ = simulated
    spec = FunnelSpec(("view", "add_to_cart"), dt.timedelta(days=3))
    weekly = conversion_over_time(store, spec, Filters())
    figure = figures_funnels.conversion_over_time(weekly)
    solid, dotted = figure.data
    steps = weekly[weekly["step"] == 2]
    complete = steps[steps["complete"]]
    open_weeks = steps[~steps["complete"]]
    assert list(solid.x) == complete["week"].tolist() and solid.line.dash is None
    assert dotted.line.dash == "dot" and not dotted.showlegend
    assert list(dotted.x) == [complete["week"].iloc[-1], *open_weeks["week"]]
    assert list(dotted.y) == [
        complete["conversion_from_start"].iloc[-1],
        *open_weeks["conversion_from_start"],
    ]
