from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from scipy.special import betaln, gammaln

from core.models.btyd import (
    PREDICTION_COLUMNS,
    SUMMARY_COLUMNS,
    BGNBDFitter,
    BTYDModel,
    GammaGammaFitter,
    rfm_summary,
    rfm_summary_at_instants,
)
from core.population import Filters
from core.store import Store

CDNOW_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cdnow" / "CDNOW_sample.txt.gz"
CALIBRATION_END = pd.Timestamp("1997-09-30")
HOLDOUT_END = pd.Timestamp("1998-06-30")


def _read_cdnow_sample() -> pd.DataFrame:
    if not CDNOW_SAMPLE.exists():
        pytest.skip(f"the CDNOW sample is not at {CDNOW_SAMPLE} (see shared/datasets/README.md)")
    raw = pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["master_customer_id", "customer_id", "date", "number_of_cds", "dollar_value"],
        dtype={"date": str, "customer_id": str},
    )
    raw["day"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return raw


@pytest.fixture(scope="module")
def cdnow() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(calibration summary, purchase days) of the CDNOW 1/10 sample, per shared/datasets/README.md.

    Same-day purchases merged (their dollar values summed), time in weeks, calibration purchases
    up to and including 1997-09-30, T from the first purchase to 1997-09-30.
    """
    raw = _read_cdnow_sample()
    days = raw.groupby(["customer_id", "day"], as_index=False)["dollar_value"].sum()
    days = days.sort_values(["customer_id", "day"])
    calibration = days[days["day"] <= CALIBRATION_END]
    rows = []
    for customer, purchases in calibration.groupby("customer_id"):
        first, last = purchases["day"].iloc[0], purchases["day"].iloc[-1]
        repeats = purchases["dollar_value"].iloc[1:]
        rows.append(
            {
                "user_id": customer,
                "frequency": len(repeats),
                "recency": (last - first).days / 7,
                "T": (CALIBRATION_END - first).days / 7,
                "monetary_value": repeats.mean() if len(repeats) else 0.0,
                "purchaser": True,
            }
        )
    return pd.DataFrame(rows), days


@pytest.fixture(scope="module")
def cdnow_model(cdnow: tuple[pd.DataFrame, pd.DataFrame]) -> BTYDModel:
    summary, _ = cdnow
    return BTYDModel().fit(summary, as_of=dt.datetime(1997, 10, 1))


def test_cdnow_summary_matches_the_published_sample(cdnow: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    summary, _ = cdnow
    assert len(summary) == 2357
    assert (summary["frequency"] > 0).sum() == 946  # the "RFM and CLV" paper's repeat buyers
    first_day = summary.loc[summary["T"].idxmax(), "T"]
    assert first_day == pytest.approx(272 / 7)


def test_bgnbd_reproduces_the_published_cdnow_parameters(cdnow_model: BTYDModel) -> None:
    fitted = cdnow_model.purchase_model_
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert {name: round(value, 3) for name, value in fitted.params_.items()} == published
    assert abs(fitted.log_likelihood_ - (-9582.4)) < 0.1
    assert fitted.n_customers_ == 2357


def test_gamma_gamma_reproduces_the_published_cdnow_parameters(cdnow_model: BTYDModel) -> None:
    fitted = cdnow_model.spend_model_
    assert {name: round(value, 2) for name, value in fitted.params_.items()} == {
        "p": 6.25,
        "q": 3.74,
        "gamma": 15.44,
    }
    assert fitted.n_customers_ == 946


def _integrate(params: np.ndarray, x: int, t_x: float, age: float, payoff=None) -> tuple[float, float]:
    """Integrals over the prior Gamma(r, alpha) x Beta(a, b) of the history's likelihood, split by
    whether the customer is alive at T: (alive part times payoff(lambda, p), dropped-out part).

    Alive at T after x repeat purchases: lambda^x exp(-lambda T) (1 - p)^x; dropped out right after
    the last one (x > 0 only): lambda^x exp(-lambda t_x) p (1 - p)^(x - 1).
    """
    r, alpha, a, b = params

    def prior(lam: float, p: float) -> float:
        log_gamma = r * math.log(alpha) + (r - 1) * math.log(lam) - alpha * lam - gammaln(r)
        log_beta = (a - 1) * math.log(p) + (b - 1) * math.log1p(-p) - betaln(a, b)
        return math.exp(log_gamma + log_beta)

    def alive(lam: float, p: float) -> float:
        value = lam**x * math.exp(-lam * age) * (1 - p) ** x * prior(lam, p)
        return value * payoff(lam, p) if payoff is not None else value

    def dead(lam: float, p: float) -> float:
        return lam**x * math.exp(-lam * t_x) * p * (1 - p) ** (x - 1) * prior(lam, p)

    parts = []
    for integrand in (alive, dead):
        total = 0.0
        if integrand is dead and x == 0:
            parts.append(0.0)
            continue
        for low, high in ((0.0, 0.05), (0.05, 2.0), (2.0, 50.0)):
            value, _ = integrate.dblquad(integrand, 0.0, 1.0, low, high, epsabs=1e-14, epsrel=1e-10)
            total += value
        parts.append(total)
    return parts[0], parts[1]


def test_bgnbd_log_likelihood_matches_the_integral_over_lambda_and_p(cdnow_model: BTYDModel) -> None:
    fitter = cdnow_model.purchase_model_
    params = np.array([fitter.params_[name] for name in BGNBDFitter.PARAMETER_NAMES])
    for x, t_x, age in [(0, 0.0, 30.0), (1, 5.0, 30.0), (4, 20.0, 35.0)]:
        closed = fitter._log_likelihood(params, np.array([x], float), np.array([t_x]), np.array([age]))[0]
        assert closed == pytest.approx(math.log(sum(_integrate(params, x, t_x, age))), abs=1e-6)


@pytest.mark.parametrize(
    "params",
    [(0.243, 4.414, 0.793, 2.426), (0.8, 6.0, 2.5, 4.0)],
    ids=["cdnow_a_below_1", "a_above_1"],
)
@pytest.mark.parametrize("history", [(0, 0.0, 20.0), (2, 10.0, 30.0), (6, 25.0, 38.0)])
def test_p_alive_expected_and_no_purchase_match_numerical_integration(
    params: tuple[float, float, float, float], history: tuple[int, float, float]
) -> None:
    fitter = BGNBDFitter()
    fitter.params_ = dict(zip(BGNBDFitter.PARAMETER_NAMES, params, strict=True))
    x, t_x, age = history
    horizon = 90 / 7
    values = np.array(params)
    # Alive at T with (lambda, p): purchases over the next t have mean (1 - exp(-lambda p t)) / p
    # (a Poisson process stopped by a geometric number of purchases), none with exp(-lambda t).
    alive_evidence, dead_evidence = _integrate(values, x, t_x, age)
    evidence = alive_evidence + dead_evidence
    alive = alive_evidence / evidence
    expected = (
        _integrate(values, x, t_x, age, lambda lam, p: -math.expm1(-lam * p * horizon) / p)[0] / evidence
    )
    silent_alive = _integrate(values, x, t_x, age, lambda lam, p: math.exp(-lam * horizon))[0] / evidence
    assert fitter.p_alive(x, t_x, age) == pytest.approx(alive, rel=1e-5)
    assert fitter.expected_purchases(horizon, x, t_x, age) == pytest.approx(expected, rel=1e-5)
    assert fitter.prob_no_purchases(horizon, x, t_x, age) == pytest.approx(1 - alive + silent_alive, rel=1e-5)


def _simulate_bgnbd(params: tuple[float, float, float, float], age: np.ndarray, horizon: float, seed: int):
    """Simulate BG/NBD customers (first purchase at 0) over (0, T + horizon]."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    n = len(age)
    rate = rng.gamma(r, 1 / alpha, n)
    dropout = rng.beta(a, b, n)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)
    frequency = np.zeros(n, dtype=int)
    recency = np.zeros(n)
    holdout = np.zeros(n, dtype=int)
    alive_at_age = np.ones(n, dtype=bool)
    while active.any():
        now[active] += rng.exponential(1 / rate[active])
        buying = active & (now <= age + horizon)
        calibration = buying & (now <= age)
        frequency[calibration] += 1
        recency[calibration] = now[calibration]
        holdout[buying & ~calibration] += 1
        drops = buying & (rng.random(n) < dropout)
        alive_at_age[drops & calibration] = False
        active = buying & ~drops
    return frequency, recency, holdout, alive_at_age


@pytest.mark.parametrize("params", [(0.243, 4.414, 0.793, 2.426), (0.8, 6.0, 2.5, 4.0)])
def test_predictions_match_a_simulation_of_the_model(params: tuple[float, float, float, float]) -> None:
    """Summed over simulated customers, predictions must match the simulated outcomes (total
    expectation), within 4 standard errors."""
    n = 40_000
    age = np.random.default_rng(7).uniform(26, 39, n)
    horizon = 90 / 7
    frequency, recency, holdout, alive_at_age = _simulate_bgnbd(params, age, horizon, seed=11)
    fitter = BGNBDFitter()
    fitter.params_ = dict(zip(BGNBDFitter.PARAMETER_NAMES, params, strict=True))
    checks = [
        (fitter.p_alive(frequency, recency, age), alive_at_age.astype(float)),
        (fitter.expected_purchases(horizon, frequency, recency, age), holdout.astype(float)),
        (fitter.prob_no_purchases(horizon, frequency, recency, age), (holdout == 0).astype(float)),
    ]
    for predicted, observed in checks:
        error = observed - predicted
        standard_error = error.std() * math.sqrt(n)
        assert abs(error.sum()) < 4 * standard_error


def test_bgnbd_recovers_simulated_parameters() -> None:
    params = (0.8, 6.0, 2.5, 4.0)
    age = np.random.default_rng(3).uniform(26, 39, 20_000)
    frequency, recency, _, _ = _simulate_bgnbd(params, age, 0.0, seed=5)
    fitted = BGNBDFitter().fit(frequency, recency, age).params_
    for name, truth in zip(BGNBDFitter.PARAMETER_NAMES, params, strict=True):
        assert fitted[name] == pytest.approx(truth, rel=0.25)


def test_gamma_gamma_expected_spend_is_the_posterior_mean() -> None:
    fitter = GammaGammaFitter()
    fitter.params_ = {"p": 6.25, "q": 3.74, "gamma": 15.44}
    p, q, gamma = 6.25, 3.74, 15.44
    x, mean_spend = 3, 40.0
    # Posterior of nu given x transactions averaging m: Gamma(q + p x, gamma + x m); E[z] = p / nu.
    shape, rate = q + p * x, gamma + x * mean_spend
    numeric, _ = integrate.quad(
        lambda nu: (
            p
            / nu
            * math.exp(shape * math.log(rate) + (shape - 1) * math.log(nu) - rate * nu - gammaln(shape))
        ),
        0,
        np.inf,
    )
    assert fitter.conditional_expected_spend(x, mean_spend) == pytest.approx(numeric, rel=1e-8)
    assert fitter.conditional_expected_spend(0, 0.0) == pytest.approx(p * gamma / (q - 1))


def _pandas_rfm(events: pd.DataFrame, as_of: pd.Timestamp, purchase_event: str | None = None) -> pd.DataFrame:
    before = events[events["event_time"] < as_of]
    starts = before.groupby("user_id")["event_time"].min()
    if purchase_event is None:
        purchases = before[before["revenue"] > 0]
    else:
        purchases = before[before["event_name"] == purchase_event]
    purchases = purchases.assign(day=purchases["event_time"].dt.floor("D"))
    days = (
        purchases.groupby(["user_id", "day"], as_index=False)["revenue"].sum().sort_values(["user_id", "day"])
    )
    last_observed = (as_of - pd.Timedelta(microseconds=1)).floor("D")
    rows = []
    by_user = {user: group for user, group in days.groupby("user_id")}
    for user, start in starts.items():
        group = by_user.get(user)
        if group is None:
            rows.append((user, 0, 0.0, (last_observed - start.floor("D")).days / 7, 0.0, False))
            continue
        first, last = group["day"].iloc[0], group["day"].iloc[-1]
        repeats = group["revenue"].iloc[1:]
        rows.append(
            (
                user,
                len(repeats),
                (last - first).days / 7,
                (last_observed - first).days / 7,
                repeats.mean() if len(repeats) else 0.0,
                True,
            )
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)).sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize("as_of", ["2024-03-01 00:00:00", "2024-04-17 13:30:00"])
@pytest.mark.parametrize("purchase_event", [None, "purchase"])
def test_rfm_summary_matches_pandas_and_ignores_later_events(
    small_store_path: Path, tmp_path: Path, as_of: str, purchase_event: str | None
) -> None:
    with Store(small_store_path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, event_name, revenue FROM events")
        first, last = events["event_time"].min(), events["event_time"].max()
        moment = pd.Timestamp(as_of)
        if not first < moment < last:
            moment = (first + (last - first) / 2).floor("D") + (moment - moment.floor("D"))
        summary = rfm_summary(store, moment.to_pydatetime(), purchase_event=purchase_event)
    expected = _pandas_rfm(events, moment, purchase_event)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert summary["purchaser"].any() and (summary["frequency"] > 0).any() and not summary["purchaser"].all()
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False, check_exact=False, rtol=1e-12)
    truncated = tmp_path / "truncated.duckdb"
    shutil.copy(small_store_path, truncated)
    with Store(truncated) as store:
        with store.transaction() as cursor:
            cursor.execute("DELETE FROM events WHERE event_time >= ?", [moment.to_pydatetime()])
        pd.testing.assert_frame_equal(
            rfm_summary(store, moment.to_pydatetime(), purchase_event=purchase_event), summary
        )


@pytest.mark.parametrize("purchase_event", [None, "purchase"])
def test_rfm_summary_at_instants_equals_one_run_per_instant(
    small_store_path: Path, purchase_event: str | None
) -> None:
    """One query over users at their own as-of gives the rows a run at each as-of gives them."""
    with Store(small_store_path, read_only=True) as store:
        first, last = store.query_one("SELECT min(event_time), max(event_time) FROM events")
        span = pd.Timestamp(last) - pd.Timestamp(first)
        moments = [(pd.Timestamp(first) + span * share).floor("h") for share in (0.3, 0.55, 0.8)]
        ids = store.query_df("SELECT DISTINCT user_id FROM events ORDER BY user_id")["user_id"].tolist()
        rows = [(user, moments[index % 3]) for index, user in enumerate(ids)]
        rows += [(user, moments[2]) for user in ids[0:90:3]]  # also asked at another instant
        rows.append(("nobody-has-this-id", moments[1]))
        rows += rows[:5]  # asked twice: one row each
        instants = pd.DataFrame(rows, columns=["user_id", "as_of"])
        batch = rfm_summary_at_instants(store, instants, time_unit_days=7, purchase_event=purchase_event)
        expected = []
        for moment, group in instants.groupby("as_of"):
            one = rfm_summary(store, moment.to_pydatetime(), time_unit_days=7, purchase_event=purchase_event)
            expected.append(one[one["user_id"].isin(group["user_id"])].assign(as_of=moment))
    expected = pd.concat(expected).sort_values(["as_of", "user_id"], ignore_index=True)
    assert len(expected) > 200 and expected["purchaser"].any()
    pd.testing.assert_frame_equal(
        batch, expected[batch.columns], check_dtype=False, check_exact=False, rtol=1e-12
    )


def test_rfm_summary_keeps_only_filtered_users(small_store_path: Path) -> None:
    with Store(small_store_path, read_only=True) as store:
        country = store.query_one("SELECT country FROM users WHERE country IS NOT NULL LIMIT 1")[0]
        users = set(store.query_df("SELECT user_id FROM users WHERE country = ?", [country])["user_id"])
        as_of = store.data_end().to_pydatetime()
        everyone = rfm_summary(store, as_of)
        filtered = rfm_summary(store, as_of, Filters(segments=(("country", (country,)),)))
    assert 0 < len(filtered) < len(everyone)
    assert set(filtered["user_id"]) == users & set(everyone["user_id"])
    pd.testing.assert_frame_equal(
        filtered.reset_index(drop=True),
        everyone[everyone["user_id"].isin(users)].reset_index(drop=True),
    )


def test_save_and_load_round_trip_as_json(cdnow_model: BTYDModel, cdnow, tmp_path: Path) -> None:
    summary, _ = cdnow
    path = cdnow_model.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json"]
    document = json.loads(path.read_text())
    assert document["parameters"]["bgnbd"] == cdnow_model.purchase_model_.params_
    assert document["data_window"]["as_of"] == "1997-10-01T00:00:00"
    assert {"numpy", "scipy", "pandas", "duckdb", "python"} <= set(document["versions"])
    loaded = BTYDModel.load(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.predict(summary), cdnow_model.predict(summary))
    assert loaded.spend_model_.params_ == cdnow_model.spend_model_.params_


def test_predict_on_cdnow_is_plausible_against_the_holdout(cdnow_model: BTYDModel, cdnow) -> None:
    summary, days = cdnow
    holdout_days = (HOLDOUT_END - CALIBRATION_END).days  # weeks 40-78: 273 days
    predicted = cdnow_model.predict(summary, horizon_days=holdout_days)
    assert list(predicted.columns) == list(PREDICTION_COLUMNS)
    assert predicted["churn_prob"].between(0, 1).all() and predicted["p_alive"].between(0, 1).all()
    assert (predicted["ltv_pred"] >= 0).all()
    holdout = days[(days["day"] > CALIBRATION_END) & (days["day"] <= HOLDOUT_END)]
    # Aggregate holdout purchase days, revenue and silent customers. The model's totals are a
    # plausibility check, not a published figure: BG/NBD's conditional forecast on this sample is
    # 1,653 purchase days for 1,882 observed (-12%), $59,932 for $70,976 (-16%) and 1,740
    # silent customers for 1,673 (+4%), so the bound is 20%.
    assert predicted["expected_purchases"].sum() == pytest.approx(len(holdout), rel=0.20)
    assert predicted["ltv_pred"].sum() == pytest.approx(holdout["dollar_value"].sum(), rel=0.20)
    silent = ~summary["user_id"].isin(holdout["customer_id"])
    assert predicted["churn_prob"].sum() == pytest.approx(silent.sum(), rel=0.20)


def test_non_purchasers_are_scored_from_their_start(cdnow_model: BTYDModel) -> None:
    summary = pd.DataFrame(
        {
            "user_id": ["never_bought"],
            "frequency": [0],
            "recency": [0.0],
            "T": [10.0],
            "monetary_value": [0.0],
            "purchaser": [False],
        }
    )
    predicted = cdnow_model.predict(summary).iloc[0]
    r, alpha = cdnow_model.purchase_model_.params_["r"], cdnow_model.purchase_model_.params_["alpha"]
    p, q, gamma = (cdnow_model.spend_model_.params_[name] for name in ("p", "q", "gamma"))
    assert predicted["p_alive"] == 1.0
    assert predicted["churn_prob"] == pytest.approx(((alpha + 10) / (alpha + 10 + 90 / 7)) ** r)
    assert predicted["ltv_pred"] == pytest.approx(predicted["expected_purchases"] * p * gamma / (q - 1))
    assert not predicted["purchaser"]


def test_gamma_gamma_fit_stays_exact_when_spend_is_constant_per_customer() -> None:
    """Constant spend per customer puts the maximum at p -> infinity: the inverse-gamma limit.

    There, the Gamma-Gamma likelihood of m_x tends to the inverse-gamma(q, p gamma) likelihood,
    whatever x, so scipy's inverse-gamma fit of the m_x gives the supremum independently. The
    fit must approach it from below (an earlier form of the likelihood lost every digit at large
    p and reported log-likelihoods above zero) and predict that limit's mean spend.
    """
    rng = np.random.default_rng(0)
    frequency = rng.geometric(0.5, 300)
    spend = stats.invgamma(3.0, scale=50.0).rvs(300, random_state=rng)
    fitted = GammaGammaFitter().fit(frequency, spend)
    shape, _, scale = stats.invgamma.fit(spend, floc=0)
    supremum = stats.invgamma(shape, scale=scale).logpdf(spend).sum()
    assert supremum - 1e-2 < fitted.log_likelihood_ <= supremum + 1e-6
    assert fitted.params_["q"] == pytest.approx(shape, rel=1e-3)
    assert fitted.conditional_expected_spend(0, 0.0) == pytest.approx(scale / (shape - 1), rel=1e-3)
