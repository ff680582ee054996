"""Time to churn and retention per variant: durations and retention against a pandas walk of
each user's events, Kaplan-Meier against a numpy product-limit, the log-rank test against
statsmodels, RMST against numerical integration and its standard error against a bootstrap, and
the generated sample store's experiments against the simulator's counterfactual truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import restricted_mean_survival_time
from scipy.stats import norm
from statsmodels.duration.survfunc import survdiff
from statsmodels.stats.proportion import proportion_confint

from core.errors import TenureError
from core.experiments.survival import (
    CURVE_COLUMNS,
    RETENTION_COLUMNS,
    RMST_COLUMNS,
    durations,
    variant_retention,
    variant_survival,
)
from core.figures_experiments_survival import variant_retention_figure, variant_survival_figure
from core.store import Store

ORIGIN = dt.datetime(2026, 1, 1)
DATA_END = ORIGIN + dt.timedelta(days=120)
DAY = dt.timedelta(days=1)
W = 30


def _edge_cases() -> tuple[list[tuple], list[tuple]]:
    """Assignments and events of users that exercise each rule at its boundary."""
    a = ORIGIN + dt.timedelta(days=10)
    late = DATA_END - dt.timedelta(days=5)
    assignments = [
        ("only_before", "exp", "control", a, 0.5),  # events only before assignment: churn at 0
        ("none_late", "exp", "treatment", late, 0.5),  # no event yet, assigned 5 days before end
        ("at_assignment", "exp", "control", a, 0.5),  # one event exactly at the assignment
        ("exact_window", "exp", "treatment", a, 0.5),  # last event exactly W before the end
        ("inside_window", "exp", "treatment", a, 0.5),  # last event 1 us less than W before end
        ("gap_return", "exp", "control", a, 0.5),  # a gap longer than W, then a return
        ("both", "exp", "control", a, 0.5),  # in both variants: left out
        ("both", "exp", "treatment", a + DAY, 0.5),
        ("twice", "exp", "treatment", a + 3 * DAY, 0.5),  # assigned twice: the first counts
        ("twice", "exp", "treatment", a, 0.5),
        ("after_end", "exp", "control", DATA_END + DAY, 0.5),  # assigned after the data's end
        ("day_edges", "exp", "treatment", a, 0.5),  # events at exactly +1 day and 1 us before +2
        ("other_exp", "other", "control", a, 0.5),
    ]
    us = dt.timedelta(microseconds=1)
    events = [
        ("only_before", a - 2 * DAY),
        ("at_assignment", a),
        ("exact_window", a + DAY),
        ("exact_window", DATA_END - W * DAY),
        ("inside_window", a + DAY),
        ("inside_window", DATA_END - W * DAY + us),
        ("gap_return", a + DAY),
        ("gap_return", a + 50 * DAY),
        ("both", a + 2 * DAY),
        ("twice", a + 2 * DAY),
        ("after_end", DATA_END - DAY),
        ("day_edges", a + DAY),
        ("day_edges", a + 2 * DAY - us),
        ("other_exp", a + 3 * DAY),
        ("sentinel", DATA_END),  # fixes the data's end; never assigned
    ]
    return assignments, events


def _build(path: Path, seed: int = 7, users: int = 300) -> None:
    """A hand-made experiment: each user is active from before their assignment until a random
    lifetime after it (longer in treatment), with the edge cases above mixed in."""
    rng = np.random.default_rng(seed)
    assignments, events = _edge_cases()
    for index in range(users):
        user = f"u{index:04d}"
        variant = "control" if index % 2 == 0 else "treatment"
        assigned = ORIGIN + dt.timedelta(days=float(rng.uniform(0, 100)))
        assignments.append((user, "exp", variant, assigned, 0.5))
        lifetime = float(rng.exponential(20.0 if variant == "control" else 32.0))
        offsets = rng.uniform(-15, lifetime, size=int(rng.poisson(3 + lifetime / 3)))
        events += [
            (user, assigned + dt.timedelta(days=float(offset)))
            for offset in offsets
            if assigned + dt.timedelta(days=float(offset)) < DATA_END
        ]
    with Store(path) as store, store.transaction() as cursor:
        cursor.executemany(
            "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) VALUES (?, ?, ?, ?, ?)",
            assignments,
        )
        cursor.executemany(
            "INSERT INTO events (user_id, event_time, event_name, revenue) VALUES (?, ?, 'view', 0)", events
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ab_survival") / "ab.duckdb"
    _build(path)
    return path


@pytest.fixture(scope="module")
def raw(built: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(built, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time FROM events")
        assignments = store.query_df("SELECT * FROM assignments WHERE experiment = 'exp'")
    return events, assignments


def _clean(assignments: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    several = assignments.groupby("user_id")["variant"].nunique()
    kept = assignments[assignments["user_id"].isin(several[several == 1].index)]
    clean = kept.groupby("user_id").agg(variant=("variant", "first"), assigned=("assigned_time", "min"))
    return clean[clean["assigned"] <= data_end]


def _reference_durations(events: pd.DataFrame, assignments: pd.DataFrame, window: float) -> pd.DataFrame:
    """Each clean user's duration from their events after the assignment, in pandas."""
    data_end = events["event_time"].max()
    clean = _clean(assignments, data_end)
    joined = events.merge(clean, left_on="user_id", right_index=True)
    last = joined[joined["event_time"] >= joined["assigned"]].groupby("user_id")["event_time"].max()
    last = last.reindex(clean.index).fillna(clean["assigned"])
    churned = last <= data_end - pd.Timedelta(days=window)
    end = last.where(churned, data_end)
    return pd.DataFrame(
        {
            "variant": clean["variant"],
            "duration_days": (end - clean["assigned"]).dt.total_seconds() / 86_400,
            "churned": churned.astype(bool),
        }
    ).sort_index()


def _product_limit(duration: np.ndarray, churned: np.ndarray) -> pd.DataFrame:
    """Kaplan-Meier by hand: S(t_j) = prod (1 - d_i / n_i), with Greenwood's variance."""
    times, index = np.unique(duration, return_inverse=True)
    at_risk = (len(duration) - np.searchsorted(np.sort(duration), times, side="left")).astype(float)
    deaths = np.bincount(index, weights=churned.astype(float), minlength=len(times))
    survival = np.cumprod(1 - deaths / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(at_risk > deaths, deaths / (at_risk * (at_risk - deaths)), 0.0))
    return pd.DataFrame(
        {"day": times, "at_risk": at_risk, "deaths": deaths, "survival": survival, "greenwood": greenwood}
    )


def _area(table: pd.DataFrame, tau: float, points: int = 400_001) -> float:
    """The area under the step function S on [0, tau] by the midpoint rule on a fine grid."""
    step = tau / (points - 1)
    grid = np.arange(points - 1) * step + step / 2
    index = np.searchsorted(table["day"].to_numpy(), grid, side="right") - 1
    values = np.where(index >= 0, table["survival"].to_numpy()[np.clip(index, 0, None)], 1.0)
    return float(values.sum() * step)


# --- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [30.0, 7.5])
def test_durations_match_a_pandas_walk(
    built: Path, raw: tuple[pd.DataFrame, pd.DataFrame], window: float
) -> None:
    events, assignments = raw
    with Store(built, read_only=True) as store:
        ours = durations(store, "exp", window).set_index("user_id").sort_index()
    reference = _reference_durations(events, assignments, window)
    assert list(ours.index) == list(reference.index)
    assert (ours["variant"] == reference["variant"]).all()
    assert (ours["churned"] == reference["churned"]).all()
    np.testing.assert_allclose(ours["duration_days"], reference["duration_days"], rtol=0, atol=1e-9)


def test_duration_edge_cases(built: Path) -> None:
    with Store(built, read_only=True) as store:
        ours = durations(store, "exp", W).set_index("user_id")
    gap = 120 - 10
    assert {"both", "after_end", "other_exp", "sentinel"}.isdisjoint(ours.index)
    assert ours.loc["only_before", ["duration_days", "churned"]].tolist() == [0.0, True]
    assert ours.loc["at_assignment", ["duration_days", "churned"]].tolist() == [0.0, True]
    assert ours.loc["none_late", ["duration_days", "churned"]].tolist() == [5.0, False]
    assert ours.loc["exact_window", ["duration_days", "churned"]].tolist() == [gap - W, True]
    assert not ours.loc["inside_window", "churned"]
    assert ours.loc["inside_window", "duration_days"] == pytest.approx(gap)
    assert ours.loc["gap_return", ["duration_days", "churned"]].tolist() == [50.0, True]
    assert ours.loc["twice", "duration_days"] == pytest.approx(2.0)


# --- Kaplan-Meier, log-rank, RMST ------------------------------------------------------------------


def test_kaplan_meier_matches_a_numpy_product_limit(built: Path) -> None:
    with Store(built, read_only=True) as store:
        frame = durations(store, "exp", W)
        result = variant_survival(store, "exp", "control", W)
    assert list(result.curves.columns) == list(CURVE_COLUMNS)
    z = norm.ppf(0.975)
    for variant, members in frame.groupby("variant"):
        table = _product_limit(members["duration_days"].to_numpy(), members["churned"].to_numpy())
        curve = result.curves[result.curves["variant"] == variant]
        np.testing.assert_allclose(curve["day"], table["day"], atol=1e-12)
        np.testing.assert_array_equal(curve["at_risk"], table["at_risk"])
        np.testing.assert_allclose(curve["survival"], table["survival"], atol=1e-12)
        # The log(-log) band: S ** exp(-/+ z * sqrt(V) / log S), V the Greenwood sum.
        s, v = table["survival"].to_numpy(), table["greenwood"].to_numpy()
        inside = (s > 0) & (s < 1)
        spread = z * np.sqrt(v[inside]) / np.log(s[inside])
        np.testing.assert_allclose(curve["lower"].to_numpy()[inside], s[inside] ** np.exp(-spread), atol=1e-9)
        np.testing.assert_allclose(curve["upper"].to_numpy()[inside], s[inside] ** np.exp(spread), atol=1e-9)
        assert result.users[variant] == len(members)
        assert result.churned[variant] == int(members["churned"].sum())


def test_log_rank_matches_statsmodels(built: Path) -> None:
    with Store(built, read_only=True) as store:
        frame = durations(store, "exp", W)
        result = variant_survival(store, "exp", "control", W)
    statistic, p_value = survdiff(
        frame["duration_days"].to_numpy(), frame["churned"].to_numpy(dtype=float), frame["variant"].to_numpy()
    )
    assert result.logrank_statistic == pytest.approx(statistic, rel=1e-8)
    assert result.logrank_p == pytest.approx(p_value, rel=1e-6)
    assert result.logrank_p < 0.05, "treatment users live longer by construction"


def test_rmst_difference_matches_integration_and_a_bootstrap(built: Path) -> None:
    tau = 45.0
    with Store(built, read_only=True) as store:
        frame = durations(store, "exp", W)
        result = variant_survival(store, "exp", "control", W, tau_days=tau)
    assert list(result.rmst.columns) == list(RMST_COLUMNS)
    row = result.rmst.iloc[0]
    assert row["variant"] == "treatment" and row["tau_days"] == tau == result.tau_days
    arms = {v: m for v, m in frame.groupby("variant")}
    areas = {}
    for variant, members in arms.items():
        duration, churned = members["duration_days"].to_numpy(), members["churned"].to_numpy()
        areas[variant] = _area(_product_limit(duration, churned), tau)
        lifelines_rmst = restricted_mean_survival_time(KaplanMeierFitter().fit(duration, churned), t=tau)
        assert areas[variant] == pytest.approx(lifelines_rmst, abs=1e-3)
    assert row["rmst"] == pytest.approx(areas["treatment"], abs=1e-3)
    assert row["rmst_control"] == pytest.approx(areas["control"], abs=1e-3)
    assert row["diff"] == pytest.approx(areas["treatment"] - areas["control"], abs=2e-3)
    assert row["diff"] > 0, "treatment users live longer by construction"
    # The standard error of the difference against 200 bootstrap resamples of each arm.
    rng = np.random.default_rng(11)
    boot = []
    for _ in range(200):
        means = {}
        for variant, members in arms.items():
            pick = rng.integers(0, len(members), len(members))
            table = _product_limit(
                members["duration_days"].to_numpy()[pick], members["churned"].to_numpy()[pick]
            )
            means[variant] = _area(table, tau, points=2001)
        boot.append(means["treatment"] - means["control"])
    assert row["se"] == pytest.approx(np.std(boot, ddof=1), rel=0.2)
    assert row["ci_low"] == pytest.approx(row["diff"] - norm.ppf(0.975) * row["se"])
    assert row["ci_high"] == pytest.approx(row["diff"] + norm.ppf(0.975) * row["se"])


def test_tau_is_capped_at_the_shortest_longest_follow_up(built: Path) -> None:
    with Store(built, read_only=True) as store:
        frame = durations(store, "exp", W)
        result = variant_survival(store, "exp", "control", W, tau_days=10_000)
    longest = frame.groupby("variant")["duration_days"].max().min()
    assert result.tau_days == pytest.approx(longest)
    assert np.isfinite(result.rmst[["rmst", "rmst_control", "diff", "ci_low", "ci_high"]].to_numpy()).all()


def test_bad_inputs_raise_tenure_errors(built: Path) -> None:
    with Store(built, read_only=True) as store:
        with pytest.raises(TenureError, match="no assigned users"):
            variant_survival(store, "missing", "control")
        with pytest.raises(TenureError, match="control 'nope'"):
            variant_survival(store, "exp", "nope")
        with pytest.raises(TenureError, match="tau"):
            variant_survival(store, "exp", "control", tau_days=0)
        with pytest.raises(TenureError, match="inactivity"):
            durations(store, "exp", inactivity_days=-1)
        with pytest.raises(TenureError, match="max_day"):
            variant_retention(store, "exp", max_day=-1)
        with pytest.raises(TenureError, match="no assigned users"):
            variant_retention(store, "missing")


# --- retention by day since assignment --------------------------------------------------------------


def _reference_retention(events: pd.DataFrame, assignments: pd.DataFrame, max_day: int) -> pd.DataFrame:
    """Day by day: eligible when assigned + (k + 1) days <= the data's end, retained when also
    active in [assigned + k days, assigned + k + 1 days)."""
    data_end = events["event_time"].max()
    clean = _clean(assignments, data_end)
    joined = events.merge(clean, left_on="user_id", right_index=True)
    elapsed = joined["event_time"] - joined["assigned"]
    parts = []
    for day in range(max_day + 1):
        complete = clean["assigned"] + pd.Timedelta(days=day + 1) <= data_end
        on_day = (elapsed >= pd.Timedelta(days=day)) & (elapsed < pd.Timedelta(days=day + 1))
        active = clean.index.isin(joined.loc[on_day, "user_id"])
        parts.append(
            pd.DataFrame(
                {"variant": clean["variant"], "day": day, "eligible": complete, "retained": complete & active}
            )
        )
    table = pd.concat(parts).groupby(["variant", "day"])[["eligible", "retained"]].sum().reset_index()
    reached = table.loc[table["eligible"] > 0, "day"].max()
    return table[table["day"] <= reached].reset_index(drop=True)


@pytest.mark.parametrize("max_day", [0, 14, 200])
def test_retention_matches_pandas_with_the_incomplete_window(
    built: Path, raw: tuple[pd.DataFrame, pd.DataFrame], max_day: int
) -> None:
    events, assignments = raw
    with Store(built, read_only=True) as store:
        ours = variant_retention(store, "exp", max_day)
    reference = _reference_retention(events, assignments, max_day)
    assert list(ours.columns) == list(RETENTION_COLUMNS)
    pd.testing.assert_frame_equal(
        ours[["variant", "day", "eligible", "retained"]], reference, check_dtype=False
    )
    usable = ours["eligible"] > 0
    np.testing.assert_allclose(
        ours.loc[usable, "rate"], reference.loc[usable, "retained"] / reference.loc[usable, "eligible"]
    )
    lower, upper = proportion_confint(
        ours.loc[usable, "retained"], ours.loc[usable, "eligible"], method="wilson"
    )
    np.testing.assert_allclose(ours.loc[usable, "lower"], lower, atol=1e-12)
    np.testing.assert_allclose(ours.loc[usable, "upper"], upper, atol=1e-12)
    assert ours.loc[~usable, ["rate", "lower", "upper"]].isna().all().all()
    if max_day == 200:
        # Users assigned late leave the late days' denominators; day 119 is complete for nobody.
        assert ours.groupby("variant")["eligible"].apply(lambda e: e.is_monotonic_decreasing).all()
        assert ours["day"].max() < 119


def test_retention_day_boundaries() -> None:
    """An event exactly one day after the assignment is day 1, not day 0; one 1 us before the
    end of day 1 is still day 1; an event before the assignment counts for no day."""
    assigned = ORIGIN + dt.timedelta(days=10)
    us = dt.timedelta(microseconds=1)
    with Store(":memory:") as store:
        with store.transaction() as cursor:
            cursor.execute(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time) "
                "VALUES ('edges', 'exp', 'a', ?)",
                [assigned],
            )
            cursor.executemany(
                "INSERT INTO events (user_id, event_time, event_name) VALUES (?, ?, 'view')",
                [
                    ("edges", assigned - us),
                    ("edges", assigned + DAY),
                    ("edges", assigned + 2 * DAY - us),
                    ("sentinel", assigned + 4 * DAY + us),
                ],
            )
        ours = variant_retention(store, "exp", 10)
    # Days 0..3 end by the data's end (4 days and 1 us after the assignment); day 4 does not.
    assert ours["day"].tolist() == [0, 1, 2, 3]
    assert ours["eligible"].tolist() == [1, 1, 1, 1]
    assert ours["retained"].tolist() == [0, 1, 0, 0]


# --- figures --------------------------------------------------------------------------------------


def test_figures_draw_each_variant_with_its_band(built: Path) -> None:
    with Store(built, read_only=True) as store:
        survival = variant_survival(store, "exp", "control", W)
        retention = variant_retention(store, "exp", 30)
    km = variant_survival_figure(survival)
    lines = [trace for trace in km.data if trace.name in ("control", "treatment")]
    assert [trace.name for trace in lines] == ["control", "treatment"]
    for trace in lines:
        curve = survival.curves[survival.curves["variant"] == trace.name]
        np.testing.assert_allclose(trace.y, [1.0, *curve["survival"]])
    assert sum(trace.fill == "tonexty" for trace in km.data) == 2
    assert any(shape.x0 == survival.tau_days for shape in km.layout.shapes)
    curves = variant_retention_figure(retention)
    lines = [trace for trace in curves.data if trace.mode == "lines+markers"]
    assert [trace.name for trace in lines] == ["control", "treatment"]
    for trace in lines:
        part = retention[(retention["variant"] == trace.name) & (retention["eligible"] > 0)]
        np.testing.assert_allclose(trace.y, part["rate"])
    assert sum(trace.fill == "toself" for trace in curves.data) == 2


# --- the generated sample store --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_store() -> Store:
    path = Path(__file__).resolve().parents[1] / "sample_data" / "tenure.duckdb"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make sample-data` (make test builds it)")
    with Store(path, read_only=True) as store:
        yield store


def test_onboarding_checklist_keeps_users_longer(sample_store: Store) -> None:
    """The checklist's real lift shows as a positive RMST difference at every horizon from two
    weeks to six months (it is too small for the log-rank test to be sure of)."""
    for tau in (14, 30, 90, 180):
        result = variant_survival(sample_store, "onboarding_checklist", "control", tau_days=tau)
        assert result.rmst.iloc[0]["diff"] > 0, (tau, result.rmst.to_dict("records"))


def test_true_retention_lies_inside_the_intervals(sample_store: Store) -> None:
    """The simulator's counterfactual day-7 and day-30 retention of each arm (every assigned user
    under that variant, truth.experiment_effects) inside that arm's 95% Wilson interval."""
    truth = sample_store.query_df(
        "SELECT experiment, metric, control_value, treatment_value FROM truth.experiment_effects "
        "WHERE metric IN ('retention_7d', 'retention_30d')"
    )
    for experiment in truth["experiment"].unique():
        table = variant_retention(sample_store, experiment, 30).set_index(["variant", "day"])
        for row in truth[truth["experiment"] == experiment].itertuples():
            day = 7 if row.metric == "retention_7d" else 30
            for variant, value in (("control", row.control_value), ("treatment", row.treatment_value)):
                cell = table.loc[(variant, day)]
                assert cell["lower"] <= value <= cell["upper"], (experiment, row.metric, variant)
