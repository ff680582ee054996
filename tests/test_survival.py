"""Survival: durations against a plain pandas reference, statistics against lifelines called directly."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test, proportional_hazard_test
from lifelines.utils import median_survival_times, restricted_mean_survival_time

from core.errors import TenureError
from core.population import Filters, StartSpec
from core.store import Store
from core.survival import (
    SurvivalSpec,
    at_risk_ticks,
    churned_at_start,
    cox_model,
    durations,
    kaplan_meier,
    log_rank,
    restricted_mean,
    rmst_difference,
    terminal_event_starts_users,
)

DAY = pd.Timedelta(days=1)


def reference_durations(
    events: pd.DataFrame,
    inactivity_days: float = 30,
    terminal_event: str | None = None,
    starts: pd.Series | None = None,
) -> pd.DataFrame:
    """The docs/METRICS.md rule, written plainly over a user_id/event_time/event_name frame."""
    end = events["event_time"].max()
    if starts is None:
        starts = events.groupby("user_id")["event_time"].min()
    rows = []
    for user_id, start in starts.items():
        mine = events[(events["user_id"] == user_id) & (events["event_time"] >= start)]
        if terminal_event is None:
            last = mine["event_time"].max() if len(mine) else start
            churned = last <= end - pd.Timedelta(days=inactivity_days)
            stop = last if churned else end
        else:
            terminal = mine.loc[mine["event_name"] == terminal_event, "event_time"]
            churned = len(terminal) > 0
            stop = terminal.min() if churned else end
        rows.append((user_id, start, (stop - start) / DAY, bool(churned)))
    frame = pd.DataFrame(rows, columns=["user_id", "start_time", "duration_days", "churned"])
    return frame.sort_values("user_id", ignore_index=True)


def load_events(path: Path) -> pd.DataFrame:
    with Store(path, read_only=True) as store:
        return store.query_df("SELECT user_id, event_time, event_name FROM events")


@pytest.fixture(scope="module")
def small_events(small_store_path: Path) -> pd.DataFrame:
    return load_events(small_store_path)


def assert_durations_equal(ours: pd.DataFrame, reference: pd.DataFrame) -> None:
    ours = ours.sort_values("user_id", ignore_index=True)
    assert list(ours["user_id"]) == list(reference["user_id"])
    np.testing.assert_allclose(ours["duration_days"], reference["duration_days"], rtol=0, atol=1e-9)
    assert list(ours["churned"]) == list(reference["churned"])
    assert (ours["start_time"].to_numpy() == reference["start_time"].to_numpy()).all()


@pytest.mark.parametrize("inactivity_days", [30, 7, 0.5])
def test_durations_match_pandas_on_simulated_store(small_store_path, small_events, inactivity_days):
    with Store(small_store_path, read_only=True) as store:
        ours = durations(store, SurvivalSpec(inactivity_days=inactivity_days), Filters())
    reference = reference_durations(small_events, inactivity_days)
    assert_durations_equal(ours, reference)
    assert set(ours["group"]) == {"all"}
    assert 0 < ours["churned"].mean() < 1


def test_durations_terminal_event_and_breakdown_match_pandas(small_store_path, small_events):
    spec = SurvivalSpec(terminal_event="purchase", breakdown="country")
    with Store(small_store_path, read_only=True) as store:
        ours = durations(store, spec, Filters())
        users = store.query_df("SELECT user_id, CAST(country AS VARCHAR) AS country FROM users")
    assert_durations_equal(ours, reference_durations(small_events, terminal_event="purchase"))
    expected = ours[["user_id"]].merge(users, on="user_id", how="left")["country"].fillna("(none)")
    assert list(ours.sort_values("user_id")["group"]) == list(expected)


def test_durations_start_event_and_filters_match_pandas(small_store_path, small_events):
    spec = SurvivalSpec(start=StartSpec("event", "purchase"))
    filters = Filters(segments=(("plan", ("pro",)),))
    with Store(small_store_path, read_only=True) as store:
        ours = durations(store, spec, filters)
        pro = set(store.query_df("SELECT user_id FROM users WHERE plan = 'pro'")["user_id"])
    starts = small_events[small_events["event_name"] == "purchase"].groupby("user_id")["event_time"].min()
    starts = starts[starts.index.isin(pro)]
    assert len(starts) > 10
    assert_durations_equal(ours, reference_durations(small_events, starts=starts))


def hand_made_store(path: Path) -> tuple[dt.datetime, dict[str, list[tuple[dt.datetime, str]]]]:
    """Edge cases around W = 30 days; the data's end is user 'active's last event."""
    t0 = dt.datetime(2025, 1, 1)
    end = t0 + dt.timedelta(days=100)
    day = dt.timedelta(days=1)
    events = {
        "one_event": [(t0, "open")],
        "active": [(t0 + 10 * day, "open"), (end, "open")],
        "gap_then_return": [(t0, "open"), (t0 + 50 * day, "open"), (t0 + 80 * day, "open")],
        "exactly_w": [(t0 + 20 * day, "open"), (end - 30 * day, "open")],
        "just_inside": [(t0 + 20 * day, "open"), (end - 30 * day + dt.timedelta(microseconds=1), "open")],
        "cancel": [(t0 + 5 * day, "open"), (t0 + 9 * day, "cancel"), (t0 + 95 * day, "open")],
        "late_signup": [(t0 + 3 * day, "open")],
    }
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN plan VARCHAR")
        cursor.execute(
            "INSERT INTO users (user_id, signup_time, plan) VALUES ('late_signup', ?, 'pro'), ('one_event', ?, NULL)",
            [t0 + 40 * day, t0 - 2 * day],
        )
        cursor.executemany(
            "INSERT INTO events (user_id, event_time, event_name) VALUES (?, ?, ?)",
            [(user, when, name) for user, rows in events.items() for when, name in rows],
        )
    return end, events


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("survival") / "hand.duckdb"
    hand_made_store(path)
    return path


def test_hand_made_edge_cases(hand_store):
    with Store(hand_store, read_only=True) as store:
        frame = durations(store, SurvivalSpec(inactivity_days=30), Filters()).set_index("user_id")
    assert frame.loc["one_event", "churned"] and frame.loc["one_event", "duration_days"] == 0
    assert not frame.loc["active", "churned"] and frame.loc["active", "duration_days"] == 90
    # A 50-day gap followed by a return is not a churn; the last event (day 80) is within W of the end.
    assert (
        not frame.loc["gap_then_return", "churned"] and frame.loc["gap_then_return", "duration_days"] == 100
    )
    assert frame.loc["exactly_w", "churned"] and frame.loc["exactly_w", "duration_days"] == 50
    assert not frame.loc["just_inside", "churned"] and frame.loc["just_inside", "duration_days"] == 80
    assert not frame.loc["cancel", "churned"] and frame.loc["cancel", "duration_days"] == 95
    reference = reference_durations(load_events(hand_store), 30)
    assert_durations_equal(frame.reset_index(), reference)


def test_hand_made_terminal_event_and_signup_start(hand_store):
    with Store(hand_store, read_only=True) as store:
        terminal = durations(store, SurvivalSpec(terminal_event="cancel"), Filters()).set_index("user_id")
        signup = durations(store, SurvivalSpec(start=StartSpec("signup"), breakdown="plan"), Filters())
    assert terminal["churned"].sum() == 1 and terminal.loc["cancel", "duration_days"] == 4
    assert terminal.loc["active", "duration_days"] == 90 and not terminal.loc["active", "churned"]
    signup = signup.set_index("user_id")
    # Signup after the only event: no activity after the start, so it churns at its start.
    assert signup.loc["late_signup", "churned"] and signup.loc["late_signup", "duration_days"] == 0
    assert signup.loc["late_signup", "group"] == "pro" and signup.loc["one_event", "group"] == "(none)"
    assert signup.loc["one_event", "duration_days"] == 2 and signup.loc["active", "group"] == "(none)"


def test_empty_population(small_store_path):
    with Store(small_store_path, read_only=True) as store:
        frame = durations(store, SurvivalSpec(), Filters(start_date=dt.date(2099, 1, 1)))
    assert frame.empty and list(frame.columns) == [
        "user_id",
        "start_time",
        "duration_days",
        "churned",
        "group",
    ]
    result = kaplan_meier(frame, SurvivalSpec())
    assert all(part.empty for part in result)
    assert math.isnan(log_rank(frame).p_value)


@pytest.fixture(scope="module")
def country_durations(small_store_path) -> pd.DataFrame:
    with Store(small_store_path, read_only=True) as store:
        return durations(store, SurvivalSpec(breakdown="country"), Filters())


def test_kaplan_meier_matches_lifelines(country_durations):
    spec = SurvivalSpec(breakdown="country", survival_days=(7, 30, 90), horizon_days=60)
    result = kaplan_meier(country_durations, spec, ticks=[0, 10, 50])
    assert sorted(result.curve["group"].unique()) == sorted(country_durations["group"].unique())
    for group, members in country_durations.groupby("group"):
        times, observed = members["duration_days"].to_numpy(), members["churned"].to_numpy()
        fitter = KaplanMeierFitter().fit(times, observed)
        curve = result.curve[result.curve["group"] == group]
        distinct = np.unique(times)
        np.testing.assert_array_equal(curve["day"], distinct)
        np.testing.assert_allclose(curve["survival"], fitter.survival_function_at_times(distinct), atol=1e-12)
        band = fitter.confidence_interval_.loc[distinct].to_numpy()
        np.testing.assert_allclose(curve[["lower", "upper"]].to_numpy(), band, atol=1e-12)
        assert list(curve["at_risk"]) == [int((times >= t).sum()) for t in distinct]
        at_risk = result.at_risk[result.at_risk["group"] == group]
        assert list(at_risk["at_risk"]) == [int((times >= t).sum()) for t in (0, 10, 50)]
        medians = result.medians.set_index("group").loc[group]
        assert medians["users"] == len(times) and medians["churned"] == observed.sum()
        assert medians["median"] == pytest.approx(fitter.median_survival_time_)
        bounds = median_survival_times(fitter.confidence_interval_).to_numpy()[0]
        assert medians["lower"] == pytest.approx(bounds[0]) and medians["upper"] == pytest.approx(bounds[1])
        at_days = result.survival_at[result.survival_at["group"] == group].set_index("day")
        for day in (7, 30, 90):
            assert at_days.loc[day, "survival"] == pytest.approx(float(fitter.predict(day)))
            index = np.searchsorted(distinct, day, side="right") - 1
            assert at_days.loc[day, "lower"] == pytest.approx(band[index, 0])
        rmst = result.rmst.set_index("group").loc[group]
        assert rmst["rmst"] == pytest.approx(restricted_mean_survival_time(fitter, t=60), rel=1e-10)
        assert rmst["lower"] == pytest.approx(rmst["rmst"] - 1.959963984540054 * rmst["se"])


def test_survival_beyond_follow_up_is_missing_unless_everyone_churned():
    censored_last = pd.DataFrame(
        {"duration_days": [1.0, 2.0, 5.0], "churned": [True, True, False], "group": "all"}
    )
    result = kaplan_meier(censored_last, SurvivalSpec(survival_days=(2, 6), horizon_days=6))
    assert result.survival_at["survival"].iloc[0] == pytest.approx(1 / 3)
    assert math.isnan(result.survival_at["survival"].iloc[1]) and math.isnan(result.rmst["rmst"].iloc[0])

    churned_last = pd.DataFrame(
        {"duration_days": [1.0, 2.0, 5.0], "churned": [True, False, True], "group": "all"}
    )
    fitter = KaplanMeierFitter().fit(churned_last["duration_days"], churned_last["churned"])
    result = kaplan_meier(churned_last, SurvivalSpec(survival_days=(2, 6), horizon_days=6))
    assert result.survival_at["survival"].tolist() == pytest.approx([2 / 3, 0.0])
    assert float(fitter.predict(6)) == 0.0
    rmst = result.rmst.iloc[0]
    assert rmst["rmst"] == pytest.approx(restricted_mean_survival_time(fitter, t=6), rel=1e-12)
    assert rmst["rmst"] == pytest.approx(1 + 2 / 3 * 4)
    assert result.medians["median"].iloc[0] == 5.0


def test_everyone_churned_at_the_start():
    frame = pd.DataFrame({"duration_days": [0.0, 0.0, 0.0, 3.0], "churned": [True] * 4, "group": "all"})
    assert churned_at_start(frame) == 3
    assert terminal_event_starts_users(frame, SurvivalSpec(terminal_event="purchase"))
    assert not terminal_event_starts_users(frame, SurvivalSpec())  # 0 days is legitimate there
    quarter = pd.DataFrame({"duration_days": [0.0] + [5.0] * 3, "churned": [True] * 4, "group": "all"})
    fewer = pd.DataFrame({"duration_days": [0.0] + [5.0] * 4, "churned": [True] * 5, "group": "all"})
    assert terminal_event_starts_users(quarter, SurvivalSpec(terminal_event="purchase"))
    assert not terminal_event_starts_users(fewer, SurvivalSpec(terminal_event="purchase"))
    result = kaplan_meier(frame, SurvivalSpec(survival_days=(7,), horizon_days=90))
    assert result.survival_at["survival"].tolist() == [0.0]
    assert result.rmst["rmst"].iloc[0] == pytest.approx(0.25 * 3)


def plain_rmst_variance(times: np.ndarray, churned: np.ndarray, horizon: float) -> tuple[float, float]:
    """RMST and its variance by the textbook loop (Klein & Moeschberger 4.5), written independently."""
    distinct = sorted(set(times))
    survival, points = 1.0, [(0.0, 1.0)]
    steps = []
    for t in distinct:
        n = int((times >= t).sum())
        d = int(((times == t) & churned).sum())
        if d:
            survival *= 1 - d / n
            steps.append((t, n, d))
        points.append((t, survival))

    def area(a: float, b: float) -> float:
        total = 0.0
        for (t0, s0), (t1, _) in zip(points, [*points[1:], (math.inf, 0.0)], strict=True):
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo:
                total += s0 * (hi - lo)
        return total

    variance = sum(area(t, horizon) ** 2 * d / (n * (n - d)) for t, n, d in steps if t <= horizon and n > d)
    return area(0, horizon), variance


def test_rmst_variance_against_a_plain_loop_and_the_uncensored_case(country_durations):
    members = country_durations[country_durations["group"] == "US"]
    times, churned = members["duration_days"].to_numpy(), members["churned"].to_numpy()
    result = kaplan_meier(members, SurvivalSpec(horizon_days=60))
    mean, variance = plain_rmst_variance(times, churned, 60)
    assert result.rmst["rmst"].iloc[0] == pytest.approx(mean, rel=1e-10)
    assert result.rmst["se"].iloc[0] ** 2 == pytest.approx(variance, rel=1e-10)
    # Without censoring the RMST is the mean of min(T, tau), its variance var(min(T, tau)) / n.
    rng = np.random.default_rng(3)
    sample = rng.exponential(20, 300)
    fitter = KaplanMeierFitter().fit(sample, np.ones(300, dtype=bool))
    table = fitter.event_table[fitter.event_table["removed"] > 0]
    mean, variance = restricted_mean(
        table.index.to_numpy(),
        fitter.survival_function_.loc[table.index].to_numpy()[:, 0],
        table["at_risk"].to_numpy(),
        table["observed"].to_numpy(),
        25.0,
    )
    clipped = np.minimum(sample, 25.0)
    assert mean == pytest.approx(clipped.mean(), rel=1e-12)
    assert variance == pytest.approx(clipped.var() / 300, rel=1e-10)


def test_rmst_difference():
    table = pd.DataFrame(
        {"group": ["a", "b"], "horizon": [30.0, 30.0], "rmst": [12.0, 9.0], "se": [1.2, 1.6]}
    )
    result = rmst_difference(table, "a", "b")
    assert result.difference == 3.0 and result.se == pytest.approx(2.0)
    assert result.lower == pytest.approx(3.0 - 1.959963984540054 * 2.0)
    from scipy.stats import norm

    assert result.p_value == pytest.approx(2 * norm.sf(1.5))
    with pytest.raises(TenureError, match="no group 'c'"):
        rmst_difference(table, "a", "c")


def test_log_rank_matches_lifelines(country_durations):
    result = log_rank(country_durations)
    overall = multivariate_logrank_test(
        country_durations["duration_days"], country_durations["group"], country_durations["churned"]
    )
    assert result.statistic == pytest.approx(overall.test_statistic)
    assert result.p_value == pytest.approx(overall.p_value)
    assert result.degrees_of_freedom == country_durations["group"].nunique() - 1
    groups = sorted(country_durations["group"].unique())
    assert len(result.pairwise) == len(groups) * (len(groups) - 1) // 2
    for row in result.pairwise.itertuples():
        a = country_durations[country_durations["group"] == row.group_a]
        b = country_durations[country_durations["group"] == row.group_b]
        direct = logrank_test(a["duration_days"], b["duration_days"], a["churned"], b["churned"])
        assert row.statistic == pytest.approx(direct.test_statistic)
        assert row.p_value == pytest.approx(direct.p_value)


def test_cox_matches_lifelines(small_store_path, small_events):
    spec = SurvivalSpec(cox_attributes=("plan",), cox_first_week=True)
    with Store(small_store_path, read_only=True) as store:
        result = cox_model(store, spec, Filters())
        users = store.query_df("SELECT user_id, plan FROM users")
        revenue = store.query_df("SELECT user_id, event_time, revenue FROM events")
    reference = reference_durations(small_events).merge(users, on="user_id", how="left")
    reference["plan"] = reference["plan"].fillna("(none)")
    # First-week behaviour: events in [start, start + 7 days).
    merged = revenue.merge(reference[["user_id", "start_time"]], on="user_id")
    offset = (merged["event_time"] - merged["start_time"]) / DAY
    week = merged[(offset >= 0) & (offset < 7)].assign(day=np.floor(offset))
    per_user = week.groupby("user_id").agg(
        first_week_events=("day", "size"),
        first_week_active_days=("day", "nunique"),
        first_week_revenue=("revenue", "sum"),
    )
    reference = reference.merge(per_user, on="user_id", how="left").fillna(0)
    landmark = reference[reference["duration_days"] > 7].copy()
    common = landmark["plan"].value_counts().idxmax()
    design = pd.DataFrame({"duration": landmark["duration_days"] - 7, "churned": landmark["churned"]})
    for value in sorted(set(landmark["plan"]) - {common}):
        design[f"plan={value}"] = (landmark["plan"] == value).astype(float)
    for column in ("first_week_events", "first_week_active_days", "first_week_revenue"):
        design[column] = landmark[column].astype(float)
    direct = CoxPHFitter().fit(design, duration_col="duration", event_col="churned")
    assert result.references == {"plan": common}
    assert result.users == len(design) and result.landmark_days == 7 and result.sampled_from is None
    table = result.hazard_ratios.set_index("covariate")
    assert list(table.index) == list(design.columns[2:])
    np.testing.assert_allclose(table["hazard_ratio"], direct.summary["exp(coef)"], rtol=1e-6)
    np.testing.assert_allclose(table["lower"], direct.summary["exp(coef) lower 95%"], rtol=1e-6)
    np.testing.assert_allclose(table["p_value"], direct.summary["p"], rtol=1e-5)
    assert result.concordance == pytest.approx(direct.concordance_index_, rel=1e-9)
    ph = proportional_hazard_test(direct, design, time_transform="rank").summary["p"]
    np.testing.assert_allclose(table["ph_p_value"], ph.loc[table.index], rtol=1e-5)
    assert list(table["ph_fails"]) == list(ph.loc[table.index] < 0.05)


def test_cox_flags_non_proportional_hazards_and_samples(tmp_path):
    """Group 'early' churns at once or stays for good; group 'steady' churns at a constant rate."""
    rng = np.random.default_rng(5)
    t0 = dt.datetime(2025, 1, 1)
    rows, users = [], []
    for index in range(600):
        group = "early" if index % 2 else "steady"
        days = rng.uniform(0, 3) if group == "early" and rng.random() < 0.6 else rng.exponential(40)
        if group == "early" and days > 3:
            days = 400.0
        user = f"u{index}"
        users.append((user, group))
        rows += [(user, t0, "open"), (user, t0 + dt.timedelta(days=min(days, 400.0)), "open")]
    path = tmp_path / "ph.duckdb"
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN arm VARCHAR")
        cursor.executemany("INSERT INTO users (user_id, arm) VALUES (?, ?)", users)
        cursor.executemany("INSERT INTO events (user_id, event_time, event_name) VALUES (?, ?, ?)", rows)
    with Store(path, read_only=True) as store:
        result = cox_model(store, SurvivalSpec(cox_attributes=("arm",)), Filters())
        sampled = cox_model(store, SurvivalSpec(cox_attributes=("arm",)), Filters(), max_users=200)
    assert result.hazard_ratios["ph_fails"].all()
    assert any("proportional-hazards check fails" in note for note in result.warnings)
    assert sampled.users == 200 and sampled.sampled_from == 600
    assert any("random sample of 200 of 600" in note for note in sampled.warnings)


def test_spec_round_trips():
    spec = SurvivalSpec(
        inactivity_days=14,
        terminal_event="cancel",
        start=StartSpec("event", "signup_done"),
        breakdown="experiment:rec_policy",
        horizon_days=60.5,
        survival_days=(30, 7),
        cox_attributes=("country", "plan"),
        cox_first_week=True,
    )
    assert SurvivalSpec.from_query_params(spec.to_query_params()) == spec
    assert SurvivalSpec.from_dict(spec.to_dict()) == spec
    assert spec.survival_days == (7.0, 30.0)
    assert SurvivalSpec.from_query_params({}) == SurvivalSpec()
    assert SurvivalSpec.from_query_params(SurvivalSpec().to_query_params()) == SurvivalSpec()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"inactivity_days": 0}, "inactivity must be a positive number of days"),
        ({"inactivity_days": "soon"}, "inactivity must be a number of days, not 'soon'"),
        ({"horizon_days": -5}, "horizon must be a positive"),
        ({"survival_days": 7}, "survival_days must be a tuple"),
        ({"breakdown": "cohort:year"}, "cohort breakdown by 'year'"),
        ({"cox_attributes": "country"}, "cox_attributes must be a tuple"),
    ],
)
def test_bad_spec_messages(arguments, message):
    with pytest.raises(TenureError, match=message):
        SurvivalSpec(**arguments)


def test_bad_store_inputs(small_store_path):
    with Store(small_store_path, read_only=True) as store:
        with pytest.raises(TenureError, match="no event named 'cancel'"):
            durations(store, SurvivalSpec(terminal_event="cancel"), Filters())
        with pytest.raises(TenureError, match="not a column of the users table"):
            durations(store, SurvivalSpec(breakdown="shoe_size"), Filters())
        with pytest.raises(TenureError, match="no experiment named 'nope'"):
            durations(store, SurvivalSpec(breakdown="experiment:nope"), Filters())
        with pytest.raises(TenureError, match="shoe_size are not columns"):
            cox_model(store, SurvivalSpec(cox_attributes=("shoe_size",)), Filters())
        with pytest.raises(TenureError, match="no covariate"):
            cox_model(store, SurvivalSpec(), Filters())


def test_at_risk_ticks():
    assert at_risk_ticks(0) == [0.0]
    assert at_risk_ticks(20) == [0.0, 7.0, 14.0]
    assert at_risk_ticks(400) == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0]
