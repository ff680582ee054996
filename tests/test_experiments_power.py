"""Planning: the measured baseline against pandas, the minimum detectable effect against
statsmodels' power classes, the users needed against the textbook normal formula, CUPED's saving
against the pre-period correlation, and a seeded simulation at the planned size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import BuiltExperiment, build_experiment_store
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower

from core.errors import TenureError
from core.experiments.metrics import Design, parse_metrics, user_values
from core.experiments.power import (
    Baseline,
    PowerSettings,
    mde_by_days,
    measure_baseline,
    minimum_detectable_effects,
    users_needed,
)
from core.store import Store

DESIGN = Design(
    "exp", tuple(parse_metrics("conversion:purchase,retention:7,events,revenue_per_session")), days=10
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltExperiment:
    return build_experiment_store(tmp_path_factory.mktemp("power") / "power.duckdb", users=1200, seed=5)


@pytest.fixture(scope="module")
def values(built: BuiltExperiment) -> pd.DataFrame:
    with Store(built.path, read_only=True) as store:
        return user_values(store, DESIGN)


def _sd(values: pd.DataFrame, column: str, eligible: str) -> float:
    return float(values.loc[values[eligible], column].std(ddof=1))


def test_baseline_is_the_pooled_per_user_metric(built: BuiltExperiment, values: pd.DataFrame) -> None:
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
        control = measure_baseline(store, DESIGN, variant="control").table().set_index("metric")
        with pytest.raises(TenureError, match="not an arm"):
            measure_baseline(store, DESIGN, variant="missing")
    table = baseline.table().set_index("metric")
    eligible = values[values["ok1"]]
    assert table.loc["retention:7", "users"] == len(eligible) < len(values)
    assert table.loc["retention:7", "mean"] == pytest.approx(eligible["m1"].mean())
    assert table.loc["events", "sd"] == pytest.approx(values["m2"].std(ddof=1), rel=1e-9)
    rho = np.corrcoef(values["m2"], values["pre_m2"])[0, 1]
    assert table.loc["events", "variance_reduction"] == pytest.approx(rho**2, rel=1e-9)
    ratio = values["m3_num"].sum() / values["m3_den"].sum()
    assert table.loc["revenue_per_session", "mean"] == pytest.approx(ratio)
    in_control = values[values["variant"] == "control"]
    assert control.loc["events", "mean"] == pytest.approx(in_control["m2"].mean())
    assigned = built.assignments["assigned_time"]
    days = (assigned.max() - assigned.min()).total_seconds() / 86_400
    assert baseline.daily_users == pytest.approx(len(assigned) / days)


def test_mde_of_a_mean_matches_statsmodels_t_power(built: BuiltExperiment, values: pd.DataFrame) -> None:
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    table = minimum_detectable_effects(baseline, [50, 400, 3000]).set_index(["metric", "users_per_arm"])
    sd = values["m2"].std(ddof=1)
    for n in (50, 400, 3000):
        d = TTestIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
        assert table.loc[("events", n), "mde_abs"] == pytest.approx(d * sd, rel=1e-4), n
        assert table.loc[("events", n), "mde_rel"] == pytest.approx(d * sd / values["m2"].mean(), rel=1e-4)


def test_mde_of_a_rate_matches_statsmodels_normal_power(built: BuiltExperiment, values: pd.DataFrame) -> None:
    settings = PowerSettings(power=0.9, alpha=0.01)
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    table = minimum_detectable_effects(baseline, [500], settings).set_index("metric")
    for metric, column, eligible in (("conversion:purchase", "m0", "ok0"), ("retention:7", "m1", "ok1")):
        sd = _sd(values, column, eligible)
        d = NormalIndPower().solve_power(nobs1=500, alpha=0.01, power=0.9, ratio=1.0)
        assert table.loc[metric, "mde_abs"] == pytest.approx(d * sd, rel=1e-4), metric


def test_users_needed_matches_the_textbook_formula(built: BuiltExperiment, values: pd.DataFrame) -> None:
    """n = 2 (z_{1-alpha/2} + z_power)^2 sigma^2 / delta^2 per arm (t for means: within 1%)."""
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    table = users_needed(baseline, 0.1, daily_users=40).set_index("metric")
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    for metric, column, eligible in (("conversion:purchase", "m0", "ok0"), ("events", "m2", "ok2")):
        part = values.loc[values[eligible], column]
        delta = 0.1 * part.mean()
        textbook = 2 * z**2 * part.var(ddof=1) / delta**2
        row = table.loc[metric]
        assert row["users_per_arm"] == pytest.approx(textbook, rel=0.01), metric
        assert row["abs_effect"] == pytest.approx(delta)
        assert row["total_users"] == 2 * row["users_per_arm"]
        assert row["days"] == np.ceil(row["total_users"] / 40)


def test_cuped_divides_the_users_needed_by_one_minus_rho_squared(
    built: BuiltExperiment, values: pd.DataFrame
) -> None:
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    plain = users_needed(baseline, 0.05).set_index("metric").loc["events"]
    adjusted = users_needed(baseline, 0.05, PowerSettings(cuped=True)).set_index("metric").loc["events"]
    rho = np.corrcoef(values["m2"], values["pre_m2"])[0, 1]
    assert adjusted["cuped"] and not plain["cuped"]
    assert adjusted["users_per_arm"] == pytest.approx(plain["users_per_arm"] * (1 - rho**2), rel=0.01)
    mde_plain = minimum_detectable_effects(baseline, [1000]).set_index("metric").loc["events", "mde_abs"]
    mde_cuped = (
        minimum_detectable_effects(baseline, [1000], PowerSettings(cuped=True))
        .set_index("metric")
        .loc["events", "mde_abs"]
    )
    assert mde_cuped == pytest.approx(mde_plain * np.sqrt(1 - rho**2), rel=1e-3)


def test_mde_by_days_uses_the_daily_traffic(built: BuiltExperiment) -> None:
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    table = mde_by_days(baseline, (7, 14, 28, 56), daily_users=100)
    events = table[table["metric"] == "events"]
    assert events["days"].tolist() == [7, 14, 28, 56]
    assert events["users_per_arm"].tolist() == [350, 700, 1400, 2800]
    assert events["mde_abs"].is_monotonic_decreasing
    same = minimum_detectable_effects(baseline, [1400]).set_index("metric").loc["events", "mde_abs"]
    assert events.set_index("days").loc[28, "mde_abs"] == pytest.approx(same)
    three_arms = mde_by_days(baseline, (28,), PowerSettings(arms=3), daily_users=100)
    assert three_arms["users_per_arm"].iloc[0] == 933


def test_a_simulated_test_at_the_planned_size_has_the_planned_power(
    built: BuiltExperiment, values: pd.DataFrame
) -> None:
    """2,000 seeded experiments resampling the store's own users (events per user), the treatment
    arm shifted by the planned effect, analysed with Welch's t: about 80% reject at 5%."""
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    row = users_needed(baseline, 0.1).set_index("metric").loc["events"]
    n = int(row["users_per_arm"])
    population = values["m2"].to_numpy()
    rng = np.random.default_rng(20261202)
    control = rng.choice(population, size=(2000, n))
    treatment = rng.choice(population, size=(2000, n)) + row["abs_effect"]
    p_values = stats.ttest_ind(treatment, control, axis=1, equal_var=False).pvalue
    assert np.mean(p_values < 0.05) == pytest.approx(0.8, abs=0.03), n


def test_bad_settings_are_refused(built: BuiltExperiment) -> None:
    with pytest.raises(TenureError):
        PowerSettings(power=0.3)
    with pytest.raises(TenureError):
        PowerSettings(alpha=0.7)
    with pytest.raises(TenureError):
        PowerSettings(arms=1)
    with Store(built.path, read_only=True) as store:
        baseline = measure_baseline(store, DESIGN)
    with pytest.raises(TenureError):
        users_needed(baseline, 0.0)
    with pytest.raises(TenureError):
        minimum_detectable_effects(baseline, [1])


def test_users_needed_survives_the_noncentral_t_tail_nan() -> None:
    """scipy's nct(df, 13).cdf(-1.96) is NaN, which stopped tea-tasting's root search for a mean
    metric needing about 5,000 users per arm; the answer must still be the textbook one."""
    n, mean, sd = 10_728, 23.480798, 21.32146
    sums = pd.Series(
        {
            "n0": n,
            "s__m0": n * mean,
            "ss__m0__m0": (n - 1) * sd**2 + n * mean**2,
            "s__pre_m0": 0.0,
            "ss__m0__pre_m0": 0.0,
            "ss__pre_m0__pre_m0": 0.0,
        }
    )
    baseline = Baseline(Design("exp", tuple(parse_metrics("events"))), "given", sums, 55.0)
    row = users_needed(baseline, 0.05).iloc[0]
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert row["users_per_arm"] == pytest.approx(2 * z**2 * sd**2 / (0.05 * mean) ** 2, rel=0.01)
