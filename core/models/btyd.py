"""BG/NBD purchase model and Gamma-Gamma spend model: the "buy till you die" churn/LTV baseline.

Definitions (docs/METRICS.md, "BG/NBD and Gamma-Gamma baseline"):

- **As-of date** ``as_of``: an instant (UTC, naive timestamps as in the store). Only events with
  ``event_time < as_of`` are read. Churn and LTV are about the horizon ``[as_of, as_of + H)``.
- **Purchase**: an event with ``revenue > 0``; or, when ``purchase_event`` is given, any event of
  that name whatever its revenue (the CDNOW cohort has purchase records of $0, which the
  published fits count as purchases).
- **Purchase day**: a UTC calendar day with at least one purchase; same-day purchases are merged
  into one, whose revenue is the day's sum (Fader, Hardie & Lee 2005).
- **Time** is counted in whole days, in units of ``time_unit_days`` (7: weeks). A purchase day is
  the point at its day number; the observation ends at the **last observed day**, the UTC day of
  the last instant before ``as_of`` (``as_of`` at midnight of 1997-10-01: 1997-09-30).
- Per user: ``frequency`` = number of purchase days - 1 (repeat purchase days); ``recency`` =
  last purchase day - first purchase day; ``T`` = last observed day - first purchase day;
  ``monetary_value`` = mean revenue of the repeat purchase days (0 when ``frequency`` = 0). With
  1997-01-01 as first purchase day and ``as_of`` = 1997-10-01, ``T`` = 272/7 weeks.
- **Population**: the users (after the global filters) whose start (first event of any name) is
  before ``as_of``. BG/NBD models purchasers: it assumes a first purchase at time 0. Users who
  started but never purchased before ``as_of`` are kept, flagged ``purchaser = False``, with
  ``frequency = recency = monetary_value = 0`` and ``T`` from their start day: the model is fitted
  on purchasers only, and scores the others as if their start were their first purchase (so
  P(alive) = 1, and their spend is the Gamma-Gamma population mean).

Models: BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way: an alternative to
the Pareto/NBD model", Marketing Science 24(2), 275-284) and Gamma-Gamma (Fader, Hardie & Lee
2005, "RFM and CLV: using iso-value curves for customer base analysis", Journal of Marketing
Research 42(4), 415-430; Colombo & Jiang 1999), fitted by maximum likelihood with scipy.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from core.errors import TenureError
from core.models.artifacts import MODEL_FILE, library_versions, write_model_json
from core.models.labels import instants_sql
from core.population import Filters, StartSpec, population_sql
from core.store import Store

SUMMARY_COLUMNS = ("user_id", "frequency", "recency", "T", "monetary_value", "purchaser")
PREDICTION_COLUMNS = ("user_id", "churn_prob", "ltv_pred", "p_alive", "expected_purchases", "purchaser")
DEFAULT_HORIZON_DAYS = 90.0
DEFAULT_TIME_UNIT_DAYS = 7.0
MODEL_KIND = "btyd"
FORMAT_VERSION = 1

_MICROSECONDS_PER_DAY = 86_400_000_000


def _rfm_sql(
    chosen: str,
    chosen_params: list[Any],
    as_of: tuple[str, list[Any]] | None,
    time_unit_days: float,
    purchase_event: str | None,
) -> tuple[str, list[Any]]:
    """The summary query over ``chosen``, a SELECT of ``(user_id, as_of, start_time)``: each row's
    frequency, recency, age and mean repeat spend from the purchases before its own ``as_of``.

    ``as_of``: SQL and parameters of the one as-of every row of ``chosen`` shares, or None when
    each row has its own. With one as-of the purchases are read with a constant bound and without
    a join to ``chosen`` (a third faster on 10M events); with several, each user's purchases are
    joined to their rows of ``chosen``.
    """
    if time_unit_days <= 0:
        raise TenureError(f"time unit of {time_unit_days} days", "use a positive number of days")
    is_purchase = "e.event_name = ?" if purchase_event is not None else "e.revenue > 0"
    purchase_params: list[Any] = [purchase_event] if purchase_event is not None else []
    unit = _MICROSECONDS_PER_DAY * time_unit_days
    if as_of is None:  # each row its own T: join the purchases to the rows, keep T in the keys
        source, bound, bound_params = "events e JOIN chosen c USING (user_id)", "c.as_of", []
        keys, as_of_key, joined = "e.user_id, c.as_of", "as_of, ", " AND b.as_of = c.as_of"
    else:
        source, bound, bound_params = "events e", as_of[0], list(as_of[1])
        keys, as_of_key, joined = "e.user_id", "", ""
    sql = f"""
WITH chosen AS ({chosen}),
purchase_days AS (
    SELECT {keys}, date_trunc('day', e.event_time) AS day, sum(coalesce(e.revenue, 0)) AS revenue
    FROM {source}
    WHERE e.event_time < {bound} AND {is_purchase}
    GROUP BY ALL
),
purchasers AS (
    SELECT user_id, {as_of_key}count(*) - 1 AS frequency, min(day) AS first_day, max(day) AS last_day,
        sum(revenue) - arg_min(revenue, day) AS repeat_revenue
    FROM purchase_days
    GROUP BY ALL
)
SELECT c.user_id, c.as_of,
    coalesce(b.frequency, 0) AS frequency,
    coalesce(epoch_us(b.last_day) - epoch_us(b.first_day), 0) / {unit} AS recency,
    (epoch_us(date_trunc('day', c.as_of - INTERVAL 1 MICROSECOND))
        - epoch_us(coalesce(b.first_day, date_trunc('day', c.start_time)))) / {unit} AS "T",
    CASE WHEN b.frequency > 0 THEN b.repeat_revenue / b.frequency ELSE 0 END AS monetary_value,
    b.user_id IS NOT NULL AS purchaser
FROM chosen c
LEFT JOIN purchasers b ON b.user_id = c.user_id{joined}
ORDER BY c.as_of, c.user_id
"""
    return sql, [*chosen_params, *bound_params, *purchase_params]


def rfm_summary_sql(
    store: Store,
    as_of: dt.datetime,
    filters: Filters | None = None,
    time_unit_days: float = DEFAULT_TIME_UNIT_DAYS,
    purchase_event: str | None = None,
) -> tuple[str, list[Any]]:
    """The one query of ``rfm_summary`` and its bound parameters (``SUMMARY_COLUMNS`` after ``as_of``)."""
    population, population_params = population_sql(store, StartSpec(), filters or Filters())
    as_of = pd.Timestamp(as_of).to_pydatetime()
    constant = ("CAST(? AS TIMESTAMP)", [as_of])
    chosen = f"SELECT user_id, {constant[0]} AS as_of, start_time FROM ({population}) p WHERE start_time < ?"
    return _rfm_sql(
        chosen,
        [as_of, *population_params, as_of],
        constant,
        time_unit_days,
        purchase_event,
    )


def rfm_summary(
    store: Store,
    as_of: dt.datetime,
    filters: Filters | None = None,
    time_unit_days: float = DEFAULT_TIME_UNIT_DAYS,
    purchase_event: str | None = None,
) -> pd.DataFrame:
    """Each user's frequency, recency, age and mean repeat spend before ``as_of`` (module docstring).

    Args:
        store: the event store.
        as_of: only events strictly before this instant are read.
        filters: the global filters (they select users); None = everyone.
        time_unit_days: the unit of ``recency`` and ``T`` in days (7 = weeks).
        purchase_event: count events of this name as purchases; None = events with revenue > 0.

    Returns:
        DataFrame ``user_id, frequency (int), recency, T, monetary_value, purchaser (bool)``,
        one row per user of the population, sorted by ``user_id``.
    """
    sql, params = rfm_summary_sql(store, as_of, filters, time_unit_days, purchase_event)
    return _typed_summary(store.query_df(sql, params))[list(SUMMARY_COLUMNS)]


def rfm_summary_at_instants(
    store: Store,
    instants: pd.DataFrame,
    time_unit_days: float = DEFAULT_TIME_UNIT_DAYS,
    purchase_event: str | None = None,
) -> pd.DataFrame:
    """``rfm_summary`` of each ``instants`` row (``user_id``, ``as_of``) at its own as-of, in one
    query: the rows a run at each instant gives, for the users of the population then (a row
    asked twice is one).

    Returns:
        DataFrame ``user_id, as_of`` then the other ``SUMMARY_COLUMNS``, sorted by as_of, user_id.
    """
    population, population_params = population_sql(store, StartSpec(), Filters())
    relation, instant_params = instants_sql(instants)
    chosen = (
        f"SELECT i.user_id, i.as_of, p.start_time FROM ({relation}) i "
        f"JOIN ({population}) p ON p.user_id = i.user_id WHERE p.start_time < i.as_of"
    )
    sql, params = _rfm_sql(
        chosen, [*instant_params, *population_params], None, time_unit_days, purchase_event
    )
    return _typed_summary(store.query_df(sql, params))


def _typed_summary(summary: pd.DataFrame) -> pd.DataFrame:
    summary["frequency"] = summary["frequency"].astype("int64")
    summary["purchaser"] = summary["purchaser"].astype(bool)
    return summary.sort_values(["as_of", "user_id"]).reset_index(drop=True)


def _as_arrays(*values: Any) -> list[np.ndarray]:
    return [np.asarray(value, dtype=float) for value in values]


def _minimize_negative(objective: Any, start: np.ndarray) -> Any:
    """Minimise ``objective`` over log-parameters: Nelder-Mead, then BFGS from its optimum."""
    coarse = minimize(
        objective, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20_000}
    )
    fine = minimize(objective, coarse.x, method="BFGS", options={"gtol": 1e-8})
    best = fine if fine.fun <= coarse.fun else coarse
    if not np.isfinite(best.fun):
        raise TenureError(
            "the model's likelihood could not be maximised", "check the summary for empty or invalid rows"
        )
    return best


class BGNBDFitter:
    """BG/NBD: repeat purchases at rate lambda ~ Gamma(r, alpha) while alive; after each repeat
    purchase the customer drops out with probability p ~ Beta(a, b).

    Fitted by maximum likelihood of the exact individual likelihood (Fader, Hardie & Lee 2005,
    eq. 6), over log-parameters, with ``scipy.optimize.minimize`` from the fixed start
    r = alpha = a = b = 1. Learned: ``params_`` (dict r, alpha, a, b), ``log_likelihood_`` (the
    maximised total log-likelihood), ``n_customers_``.

    Inputs ``frequency`` (x), ``recency`` (t_x) and ``T`` are per customer, in one time unit.
    """

    PARAMETER_NAMES = ("r", "alpha", "a", "b")

    def fit(self, frequency: Any, recency: Any, T: Any) -> BGNBDFitter:
        x, t_x, age = _as_arrays(frequency, recency, T)
        if len(x) == 0:
            raise TenureError(
                "no purchasers to fit BG/NBD on", "choose a later as-of date or a wider population"
            )

        def objective(log_params: np.ndarray) -> float:
            value = -np.sum(self._log_likelihood(np.exp(log_params), x, t_x, age))
            return value if np.isfinite(value) else np.inf

        best = _minimize_negative(objective, np.zeros(4))
        self.params_ = dict(zip(self.PARAMETER_NAMES, np.exp(best.x).tolist(), strict=True))
        self.log_likelihood_ = float(-best.fun)
        self.n_customers_ = len(x)
        return self

    @staticmethod
    def _log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Each customer's log L(r, alpha, a, b | x, t_x, T) (Fader, Hardie & Lee 2005, eq. 6)."""
        r, alpha, a, b = params
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
        still_alive = -(r + x) * np.log(alpha + age)
        repeat = x > 0
        dropped = np.full_like(x, -np.inf)
        dropped[repeat] = (
            np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
        )
        return common + np.logaddexp(still_alive, dropped)

    def _params(self) -> tuple[float, float, float, float]:
        return tuple(self.params_[name] for name in self.PARAMETER_NAMES)  # type: ignore[return-value]

    def _dropout_odds(self, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
        """delta(x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x)."""
        r, alpha, a, b = self._params()
        odds = np.zeros(np.broadcast(x, t_x, age).shape)
        x, t_x, age = np.broadcast_arrays(x, t_x, age)
        repeat = x > 0
        odds[repeat] = np.exp(
            np.log(a)
            - np.log(b + x[repeat] - 1)
            + (r + x[repeat]) * (np.log(alpha + age[repeat]) - np.log(alpha + t_x[repeat]))
        )
        return odds

    def p_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(alive at T | x, t_x, T) = 1 / (1 + delta(x > 0) a / (b + x - 1) ((alpha+T)/(alpha+t_x))^(r+x)).

        Reference: Fader, Hardie & Lee 2005, eq. 11 (and the note "Computing P(alive)", 2008).
        """
        x, t_x, age = _as_arrays(frequency, recency, T)
        return 1.0 / (1.0 + self._dropout_odds(x, t_x, age))

    def expected_purchases(self, t: float, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in (T, T + t] (Fader, Hardie & Lee 2005, eq. 10).

        (a + b + x - 1) / (a - 1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
        * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] * P(alive), with the Gaussian
        hypergeometric function 2F1 of ``scipy.special.hyp2f1``. Valid for any a > 0 (with a < 1,
        as on CDNOW, both the ratio and the bracket are negative); at a = 1 exactly it is 0/0.
        """
        r, alpha, a, b = self._params()
        x, t_x, age = _as_arrays(frequency, recency, T)
        shrink = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + t)))
        hypergeometric = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + age + t))
        unconditional = (a + b + x - 1) / (a - 1) * (1.0 - shrink * hypergeometric)
        return unconditional / (1.0 + self._dropout_odds(x, t_x, age))

    def prob_no_purchases(self, t: float, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(no purchase in (T, T + t] | x, t_x, T) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+t))^(r+x).

        Why: in BG/NBD a customer drops out only right after a purchase, so a customer alive at T
        who makes no purchase in (T, T + t] is still alive throughout, and does so with
        probability exp(-lambda t). Given alive at T and the history, the likelihood in lambda is
        lambda^x exp(-lambda T) (the dropout coins do not involve lambda), so the posterior of
        lambda is Gamma(r + x, alpha + T), under which E[exp(-lambda t)] =
        ((alpha + T) / (alpha + T + t))^(r + x). A customer who is not alive never buys again.
        """
        r, alpha, _, _ = self._params()
        x, t_x, age = _as_arrays(frequency, recency, T)
        alive = 1.0 / (1.0 + self._dropout_odds(x, t_x, age))
        silent_if_alive = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + t)))
        return 1.0 - alive + alive * silent_if_alive


class GammaGammaFitter:
    """Gamma-Gamma spend: a customer's transaction values are Gamma(p, nu), nu ~ Gamma(q, gamma).

    Fitted by maximum likelihood of the mean transaction value m_x of customers with x > 0 repeat
    transactions (Fader, Hardie & Lee 2005, "RFM and CLV", appendix; Colombo & Jiang 1999):
    f(m_x | p, q, gamma, x) = Gamma(px + q) / (Gamma(px) Gamma(q)) gamma^q m_x^(px-1) x^(px)
    / (gamma + m_x x)^(px + q), over log-parameters from the fixed start p = q = gamma = 1,
    evaluated as -log B(px, q) - log m_x - px log(1 + gamma / (x m_x)) - q log(1 + x m_x / gamma)
    (the same value, computed without cancellation). When the spread of m_x across customers does
    not narrow as x grows (the model's only evidence of within-customer variation), the maximum lies
    at p -> infinity with p gamma fixed: the limit where m_x is inverse-gamma(q, p gamma)
    whatever x; the fit then stops at a large p whose likelihood and predictions are that limit's.
    Learned: ``params_`` (dict p, q, gamma), ``log_likelihood_``, ``n_customers_``.
    """

    PARAMETER_NAMES = ("p", "q", "gamma")

    def fit(self, frequency: Any, monetary_value: Any) -> GammaGammaFitter:
        x, spend = _as_arrays(frequency, monetary_value)
        keep = (x > 0) & (spend > 0)
        x, spend = x[keep], spend[keep]
        if len(x) == 0:
            raise TenureError(
                "no repeat purchasers with spend to fit Gamma-Gamma on", "choose a later as-of date"
            )

        total = x * spend

        def objective(log_params: np.ndarray) -> float:
            p, q, gamma = np.exp(log_params)
            px = p * x
            # The density above, rearranged so that no two large terms cancel: as p grows (spend
            # nearly constant within each customer) the likelihood tends to a finite limit, while
            # gammaln(px + q) - gammaln(px) and px log(x m_x) - px log(gamma + x m_x) each lose all
            # their digits once px passes about 1e15, which the optimiser then exploits.
            log_density = (
                -betaln(px, q) - np.log(spend) - px * np.log1p(gamma / total) - q * np.log1p(total / gamma)
            )
            value = -np.sum(log_density)
            return value if np.isfinite(value) else np.inf

        best = _minimize_negative(objective, np.zeros(3))
        self.params_ = dict(zip(self.PARAMETER_NAMES, np.exp(best.x).tolist(), strict=True))
        self.log_likelihood_ = float(-best.fun)
        self.n_customers_ = len(x)
        return self

    def conditional_expected_spend(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """E[M | x, m_x] = p (gamma + x m_x) / (p x + q - 1); for x = 0 the mean p gamma / (q - 1).

        A weighted mean of the population mean and the customer's own mean spend (Fader, Hardie &
        Lee 2005, "RFM and CLV", eq. 5). Needs p x + q > 1 (for x = 0: q > 1), which is checked.
        """
        p, q, gamma = (self.params_[name] for name in self.PARAMETER_NAMES)
        x, spend = _as_arrays(frequency, monetary_value)
        if np.any(p * x + q <= 1):
            raise TenureError(f"Gamma-Gamma q = {q:.4g}: the mean spend is unbounded", "refit on more data")
        return p * (gamma + x * spend) / (p * x + q - 1)


@dataclass(frozen=True)
class DataWindow:
    """What a model was fitted on: the as-of date and the counts of users."""

    as_of: str | None
    users: int
    purchasers: int
    repeat_purchasers: int


class BTYDModel:
    """BG/NBD + Gamma-Gamma behind the models' interface.

    Data is an RFM summary (``rfm_summary``: columns ``SUMMARY_COLUMNS``; ``purchaser`` optional,
    True when absent). ``fit(summary)`` fits BG/NBD on purchasers and Gamma-Gamma on repeat
    purchasers; ``predict(summary, horizon_days)`` returns ``PREDICTION_COLUMNS``:

    - ``churn_prob`` = P(no purchase over the horizon) (``BGNBDFitter.prob_no_purchases``): the
      issue's churn (no activity) when the activity considered is purchasing;
    - ``expected_purchases`` = E[purchases over the horizon]; ``p_alive`` = P(alive at as-of);
    - ``ltv_pred`` = expected_purchases x Gamma-Gamma conditional expected spend per purchase
      (undiscounted revenue over the horizon, in the store's revenue unit).

    Args:
        time_unit_days: the unit of the summary's ``recency`` and ``T`` (must match it).
        horizon_days: the default horizon of ``predict``.
    """

    def __init__(
        self, time_unit_days: float = DEFAULT_TIME_UNIT_DAYS, horizon_days: float = DEFAULT_HORIZON_DAYS
    ) -> None:
        self.time_unit_days = time_unit_days
        self.horizon_days = horizon_days

    def fit(self, summary: pd.DataFrame, as_of: dt.datetime | None = None) -> BTYDModel:
        """Fit both models; ``as_of`` (the summary's date) is recorded in the data window."""
        purchasers = _purchasers(summary)
        self.purchase_model_ = BGNBDFitter().fit(
            purchasers["frequency"], purchasers["recency"], purchasers["T"]
        )
        self.spend_model_ = GammaGammaFitter().fit(purchasers["frequency"], purchasers["monetary_value"])
        self.data_window_ = DataWindow(
            as_of=None if as_of is None else pd.Timestamp(as_of).isoformat(),
            users=len(summary),
            purchasers=len(purchasers),
            repeat_purchasers=int((purchasers["frequency"] > 0).sum()),
        )
        return self

    def predict(self, summary: pd.DataFrame, horizon_days: float | None = None) -> pd.DataFrame:
        """Churn probability and LTV over ``horizon_days`` (default: the model's) per user."""
        horizon = (self.horizon_days if horizon_days is None else horizon_days) / self.time_unit_days
        purchaser = _purchaser_flags(summary)
        frequency, recency, age = (
            summary[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T")
        )
        expected = self.purchase_model_.expected_purchases(horizon, frequency, recency, age)
        spend = self.spend_model_.conditional_expected_spend(
            frequency, summary["monetary_value"].to_numpy(dtype=float)
        )
        return pd.DataFrame(
            {
                "user_id": summary["user_id"].to_numpy(),
                "churn_prob": np.clip(
                    self.purchase_model_.prob_no_purchases(horizon, frequency, recency, age), 0, 1
                ),
                "ltv_pred": expected * spend,
                "p_alive": self.purchase_model_.p_alive(frequency, recency, age),
                "expected_purchases": expected,
                "purchaser": purchaser,
            }
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` (parameters, config, data window, library versions) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "kind": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "config": {"time_unit_days": self.time_unit_days, "horizon_days": self.horizon_days},
            "parameters": {
                "bgnbd": self.purchase_model_.params_,
                "gamma_gamma": self.spend_model_.params_,
            },
            "fit": {
                "bgnbd_log_likelihood": self.purchase_model_.log_likelihood_,
                "bgnbd_customers": self.purchase_model_.n_customers_,
                "gamma_gamma_log_likelihood": self.spend_model_.log_likelihood_,
                "gamma_gamma_customers": self.spend_model_.n_customers_,
            },
            "data_window": asdict(self.data_window_),
            "versions": library_versions(scipy=scipy.__version__),
        }
        return write_model_json(directory, document)

    @classmethod
    def load(cls, directory: str | Path) -> BTYDModel:
        """Read a model written by ``save`` (JSON only; nothing is unpickled)."""
        path = Path(directory) / MODEL_FILE
        if not path.exists():
            raise TenureError(
                f"no {MODEL_FILE} in {directory}", "point to a folder written by BTYDModel.save"
            )
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("kind") != MODEL_KIND or document.get("format_version") != FORMAT_VERSION:
            raise TenureError(
                f"{path} is not a BTYD model of format {FORMAT_VERSION}",
                "refit the model with this version of Tenure",
            )
        config = document["config"]
        model = cls(time_unit_days=config["time_unit_days"], horizon_days=config["horizon_days"])
        fit = document["fit"]
        model.purchase_model_ = BGNBDFitter()
        model.purchase_model_.params_ = dict(document["parameters"]["bgnbd"])
        model.purchase_model_.log_likelihood_ = fit["bgnbd_log_likelihood"]
        model.purchase_model_.n_customers_ = fit["bgnbd_customers"]
        model.spend_model_ = GammaGammaFitter()
        model.spend_model_.params_ = dict(document["parameters"]["gamma_gamma"])
        model.spend_model_.log_likelihood_ = fit["gamma_gamma_log_likelihood"]
        model.spend_model_.n_customers_ = fit["gamma_gamma_customers"]
        model.data_window_ = DataWindow(**document["data_window"])
        return model


def _purchaser_flags(summary: pd.DataFrame) -> np.ndarray:
    missing = [column for column in SUMMARY_COLUMNS[:5] if column not in summary.columns]
    if missing:
        raise TenureError(f"the summary lacks the columns {missing}", "build it with rfm_summary")
    if "purchaser" not in summary.columns:
        return np.ones(len(summary), dtype=bool)
    return summary["purchaser"].to_numpy(dtype=bool)


def _purchasers(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[_purchaser_flags(summary)]
