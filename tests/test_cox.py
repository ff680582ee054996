"""core.cox against lifelines' CoxPHFitter and proportional_hazard_test, fitted to a tight tolerance
on the same design: heavily tied times (Efron's correction at work), censoring, a covariate that
breaks proportional hazards."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.statistics import proportional_hazard_test

from core.cox import CoxConvergenceError, fit_cox


def _tied_design(seed: int, n: int = 1500) -> pd.DataFrame:
    """Whole-day durations (many ties), censored at day 30; ``late`` raises the hazard only after
    day 10 (not proportional)."""
    rng = np.random.default_rng(seed)
    plan = rng.integers(0, 2, n).astype(float)
    usage = rng.normal(size=n)
    late = rng.integers(0, 2, n).astype(float)
    early = rng.exponential(12 * np.exp(-0.6 * plan + 0.4 * usage))
    days = np.where((late == 1) & (early > 10), 10 + (early - 10) / 3, early)
    days = np.ceil(days)
    return pd.DataFrame(
        {"duration": np.minimum(days, 30), "churned": days < 30, "plan": plan, "usage": usage, "late": late}
    )


def _lifelines(design: pd.DataFrame) -> tuple[CoxPHFitter, pd.DataFrame]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = CoxPHFitter().fit(
            design, duration_col="duration", event_col="churned", fit_options={"precision": 1e-12}
        )
        ph = proportional_hazard_test(fitter, design, time_transform="rank").summary
    return fitter, ph


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_equals_lifelines_with_tied_times(seed: int) -> None:
    design = _tied_design(seed)
    assert design["duration"].nunique() <= 31  # ~50 users per distinct time
    ours = fit_cox(design, "duration", "churned")
    reference, ph = _lifelines(design)
    names = list(ours.names)
    assert names == ["plan", "usage", "late"]
    np.testing.assert_allclose(ours.coef, reference.params_[names], rtol=1e-5)
    np.testing.assert_allclose(ours.standard_errors, reference.standard_errors_[names], rtol=1e-5)
    np.testing.assert_allclose(ours.log_likelihood, reference.log_likelihood_, rtol=1e-12)
    summary = ours.summary(0.9).set_index("covariate")
    reference90 = CoxPHFitter(alpha=0.1).fit(
        design, duration_col="duration", event_col="churned", fit_options={"precision": 1e-12}
    )
    np.testing.assert_allclose(summary["lower"], reference90.summary["exp(coef) lower 90%"], rtol=1e-5)
    np.testing.assert_allclose(summary["upper"], reference90.summary["exp(coef) upper 90%"], rtol=1e-5)
    np.testing.assert_allclose(summary["p_value"], reference.summary["p"], rtol=1e-4, atol=1e-300)
    np.testing.assert_allclose(ours.ph_statistic, ph.loc[names, "test_statistic"], rtol=1e-4)
    np.testing.assert_allclose(summary["ph_p_value"], ph.loc[names, "p"], rtol=1e-4)
    assert ours.concordance == pytest.approx(reference.concordance_index_, abs=1e-9)
    # The covariate built to break proportional hazards is the one the check flags.
    assert summary.loc["late", "ph_p_value"] < 0.01 < summary.loc["usage", "ph_p_value"]


def test_a_separating_covariate_or_a_constant_one_is_refused() -> None:
    design = _tied_design(2, n=300)
    separated = design.assign(flag=design["churned"].astype(float) * design["duration"])
    separated["flag"] = (separated["duration"] < separated["duration"].median()).astype(float)
    separated["duration"] = np.where(separated["flag"] == 1, 1.0, separated["duration"] + 5)
    separated["churned"] = True
    with pytest.raises(CoxConvergenceError):
        fit_cox(separated[["duration", "churned", "flag"]], "duration", "churned")
    with pytest.raises(CoxConvergenceError, match="constant"):
        fit_cox(design.assign(plan=1.0), "duration", "churned")
