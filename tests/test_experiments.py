"""A/B reviews: per-user metrics against a pandas walk of the events, every statistic against
scipy / statsmodels or a numpy hand computation, and the review end to end on the generated
experiments (true effects from the simulator's counterfactual runs)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats import multitest, proportion, weightstats

from core.cli import main as cli_main
from core.errors import TenureError
from core.experiments.analysis import CONTRACT_COLUMNS, Options, choose_control, compare, review
from core.experiments.assignments import experiment_overview, experiment_users, latest_assigning
from core.experiments.metrics import Design, MetricSpec, parse_metrics, user_values
from core.experiments.moments import aggregates
from core.store import Store

ORIGIN = dt.datetime(2026, 1, 1)


def _build(path: Path, seed: int = 3, users: int = 400) -> pd.DataFrame:
    """A hand-made experiment: random events around each user's assignment, a few users in both
    variants, and events up to a known data end. Returns the events as a frame."""
    rng = np.random.default_rng(seed)
    assignments, events = [], []
    for index in range(users):
        user = f"u{index:04d}"
        variant = "control" if index % 2 == 0 else "treatment"
        assigned = ORIGIN + dt.timedelta(days=float(rng.uniform(0, 40)))
        assignments.append((user, "exp", variant, assigned, 0.5))
        if index % 97 == 0:
            assignments.append(
                (user, "exp", "treatment" if variant == "control" else "control", assigned, 0.5)
            )
        for _ in range(int(rng.poisson(6))):
            offset = float(rng.uniform(-20, 45))
            name = str(rng.choice(["view", "purchase", "click"], p=[0.6, 0.15, 0.25]))
            revenue = float(rng.gamma(2, 10)) if name == "purchase" else 0.0
            session = f"s{index}-{int(offset // 1.5)}"
            if index % 5 == 0 and int(offset) % 3 == 0:
                session = None  # events without a session still count, as no session
            if assigned + dt.timedelta(days=offset) > ORIGIN + dt.timedelta(days=44):
                continue  # the data ends on day 44: late users' day 7 has not ended
            events.append((user, assigned + dt.timedelta(days=offset), name, revenue, session))
    events.append(("u9999", ORIGIN + dt.timedelta(days=44), "view", 0.0, "s-end"))
    frame = pd.DataFrame(events, columns=["user_id", "event_time", "event_name", "revenue", "session_id"])
    with Store(path) as store, store.transaction() as cursor:
        cursor.executemany(
            "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) VALUES (?, ?, ?, ?, ?)",
            assignments,
        )
        cursor.executemany(
            "INSERT INTO events (user_id, event_time, event_name, revenue, session_id) VALUES (?, ?, ?, ?, ?)",
            events,
        )
    return frame


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    path = tmp_path_factory.mktemp("ab") / "ab.duckdb"
    events = _build(path)
    with Store(path, read_only=True) as store:
        assignments = store.query_df("SELECT * FROM assignments")
    return path, events, assignments


def _reference_values(events: pd.DataFrame, assignments: pd.DataFrame, days: int) -> pd.DataFrame:
    """The per-user metrics by a plain pandas walk over each user's events."""
    several = assignments.groupby("user_id")["variant"].nunique()
    clean = assignments[assignments["user_id"].isin(several[several == 1].index)]
    clean = (
        clean.groupby("user_id")
        .agg(variant=("variant", "first"), assigned=("assigned_time", "min"))
        .reset_index()
    )
    data_end = events["event_time"].max()
    rows = []
    for user in clean.itertuples():
        own = events[events["user_id"] == user.user_id]
        elapsed = (own["event_time"] - user.assigned).dt.total_seconds() / 86_400
        window = (elapsed >= 0) & (elapsed < days)
        before = (elapsed < 0) & (elapsed >= -days)
        rows.append(
            {
                "user_id": user.user_id,
                "variant": user.variant,
                "conversion": float(((own["event_name"] == "purchase") & window).any()),
                "pre_conversion": float(((own["event_name"] == "purchase") & before).any()),
                "retention7": float(((elapsed >= 7) & (elapsed < 8)).any()),
                "retention7_ok": user.assigned + dt.timedelta(days=8) <= data_end,
                "pre_events": float(before.sum()),
                "revenue": float(own.loc[window, "revenue"].sum()),
                "pre_revenue": float(own.loc[before, "revenue"].sum()),
                "events": float(window.sum()),
                "sessions": float(own.loc[window, "session_id"].nunique()),
            }
        )
    return pd.DataFrame(rows).set_index("user_id").sort_index()


METRICS = "conversion:purchase,retention:7,revenue,events,revenue_per_session"


@pytest.mark.parametrize("days", [10, 3])
def test_per_user_values_match_a_pandas_walk(
    built: tuple[Path, pd.DataFrame, pd.DataFrame], days: int
) -> None:
    """With 3 days the window and day-7 retention read apart spans of time (days 3 to 6 are read
    by no metric, and the query drops them)."""
    path, events, assignments = built
    design = Design("exp", tuple(parse_metrics(METRICS)), days=days)
    with Store(path, read_only=True) as store:
        ours = user_values(store, design).set_index("user_id").sort_index()
    reference = _reference_values(events, assignments, days=days)
    assert list(ours.index) == list(reference.index)
    assert (ours["variant"] == reference["variant"]).all()
    pairs = {
        "m0": "conversion",
        "pre_m0": "pre_conversion",
        "m1": "retention7",
        "pre_m1": "pre_events",
        "m2": "revenue",
        "pre_m2": "pre_revenue",
        "m3": "events",
        "m4_num": "revenue",
        "m4_den": "sessions",
    }
    for ours_column, reference_column in pairs.items():
        np.testing.assert_allclose(
            ours[ours_column], reference[reference_column], atol=1e-9, err_msg=ours_column
        )
    assert (ours["ok1"] == reference["retention7_ok"]).all()
    assert not reference["retention7_ok"].all(), "the fixture must have users whose day 7 has not ended"


def test_without_the_pre_period_the_window_values_are_unchanged(
    built: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    """The command without CUPED skips the pre-period: same values after assignment, zeros before."""
    path, _, _ = built
    full = Design("exp", tuple(parse_metrics(METRICS)), days=10)
    after_only = Design("exp", tuple(parse_metrics(METRICS)), days=10, pre_period=False)
    with Store(path, read_only=True) as store:
        with_pre = user_values(store, full).set_index("user_id").sort_index()
        without = user_values(store, after_only).set_index("user_id").sort_index()
        with pytest.raises(TenureError, match="pre-period"):
            review(store, after_only, Options(cuped=True))
    pre = [c for c in with_pre.columns if c.startswith("pre_")]
    assert with_pre[pre].to_numpy().sum() > 0, "the fixture must have pre-period activity"
    assert (without[pre].to_numpy() == 0).all()
    pd.testing.assert_frame_equal(without.drop(columns=pre), with_pre.drop(columns=pre))


def test_users_in_several_variants_are_excluded_and_counted(
    built: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    path, _, assignments = built
    with Store(path, read_only=True) as store:
        info = experiment_users(store, "exp")
        overview = experiment_overview(store)
    several = assignments.groupby("user_id")["variant"].nunique()
    assert info.excluded_multiple == int((several > 1).sum()) > 0
    clean = assignments[assignments["user_id"].isin(several[several == 1].index)]
    assert info.users == clean["variant"].value_counts().sort_index().to_dict()
    observed = np.array(list(info.users.values()), dtype=float)
    expected = observed.sum() / 2
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert info.srm_p_value == pytest.approx(stats.chi2.sf(chi2, df=1), rel=1e-9)
    assert overview.loc[0, "users"] == sum(info.users.values())


def test_days_running_stop_at_the_last_assignment_of_a_stopped_test(tmp_path: Path) -> None:
    day = dt.timedelta(days=1)
    rows = [(f"s{i}", "stopped", "ab"[i % 2], ORIGIN + i * day, None) for i in range(11)]
    rows += [(f"r{i}", "running", "ab"[i % 2], ORIGIN + 20 * day + i * day, None) for i in range(40)]
    with Store(tmp_path / "s.duckdb") as store:
        with store.transaction() as cursor:
            cursor.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?)", rows)
            cursor.execute(
                "INSERT INTO events (user_id, event_time, event_name) VALUES ('s0', ?, 'view')",
                [ORIGIN + 60 * day],
            )
        overview = experiment_overview(store).set_index("experiment")
    assert overview.loc["stopped", "status"] == "stopped"
    assert overview.loc["stopped", "days_running"] == pytest.approx(10.0)
    assert overview.loc["running", "status"] == "running"
    assert overview.loc["running", "days_running"] == pytest.approx(40.0)
    listed = overview.reset_index()
    assert latest_assigning(listed, ["stopped", "running"]) == "running"
    assert latest_assigning(listed, ["stopped", "unknown"]) == "stopped"
    assert latest_assigning(listed, ["unknown"]) is None


def test_srm_uses_the_recorded_split(tmp_path: Path) -> None:
    """A 90/10 rollout observed at 90/10 passes; the same counts against 50/50 would fail."""
    rows = [
        (f"u{i}", "rollout", "new" if i < 100 else "old", ORIGIN, 0.1 if i < 100 else 0.9)
        for i in range(1000)
    ]
    with Store(tmp_path / "s.duckdb") as store:
        with store.transaction() as cursor:
            cursor.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?)", rows)
        info = experiment_users(store, "rollout")
    assert info.intended_share == pytest.approx({"new": 0.1, "old": 0.9})
    assert info.srm_p_value == pytest.approx(1.0)
    assert stats.chisquare([100, 900]).pvalue < 0.001


def _arms(built: tuple[Path, pd.DataFrame, pd.DataFrame], metrics: str, days: int = 10) -> tuple:
    path, events, assignments = built
    design = Design("exp", tuple(parse_metrics(metrics)), days=days)
    reference = _reference_values(events, assignments, days=days)
    control = reference[reference["variant"] == "control"]
    treatment = reference[reference["variant"] == "treatment"]
    return path, design, control, treatment


def test_rates_are_a_two_proportion_z_test(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    path, design, control, treatment = _arms(built, "conversion:purchase,retention:7")
    with Store(path, read_only=True) as store:
        table = review(store, design).results.set_index("metric")
    for metric, column in (("conversion:purchase", "conversion"), ("retention:7", "retention7")):
        c, t = control, treatment
        if metric == "retention:7":
            c, t = c[c["retention7_ok"]], t[t["retention7_ok"]]
        counts = (int(t[column].sum()), len(t), int(c[column].sum()), len(c))
        test = proportion.test_proportions_2indep(*counts, method="wald", correction=False)
        low, high = proportion.confint_proportions_2indep(*counts, method="wald", correction=False)
        row = table.loc[metric]
        assert row["control_users"] == len(c) and row["variant_users"] == len(t)
        assert row["abs_diff"] == pytest.approx(t[column].mean() - c[column].mean(), abs=1e-12)
        assert row["p_value"] == pytest.approx(test.pvalue, rel=1e-6)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-6)


def test_means_are_welch_t_tests(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    path, design, control, treatment = _arms(built, "revenue,events")
    with Store(path, read_only=True) as store:
        table = review(store, design).results.set_index("metric")
    for metric in ("revenue", "events"):
        c, t = control[metric].to_numpy(), treatment[metric].to_numpy()
        welch = stats.ttest_ind(t, c, equal_var=False)
        compared = weightstats.CompareMeans(weightstats.DescrStatsW(t), weightstats.DescrStatsW(c))
        low, high = compared.tconfint_diff(usevar="unequal")
        row = table.loc[metric]
        assert row["control_value"] == pytest.approx(c.mean()) and row["variant_value"] == pytest.approx(
            t.mean()
        )
        assert row["p_value"] == pytest.approx(welch.pvalue, rel=1e-6)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-6)
        assert row["se"] == pytest.approx(np.sqrt(c.var(ddof=1) / len(c) + t.var(ddof=1) / len(t)), rel=1e-9)
        assert row["rel_diff"] == pytest.approx(t.mean() / c.mean() - 1)


def _welch(diff: float, var_c: float, n_c: int, var_t: float, n_t: int) -> tuple[float, float, float]:
    se2 = var_c / n_c + var_t / n_t
    df = se2**2 / ((var_c / n_c) ** 2 / (n_c - 1) + (var_t / n_t) ** 2 / (n_t - 1))
    half = stats.t.ppf(0.975, df) * np.sqrt(se2)
    return diff - half, diff + half, 2 * stats.t.sf(abs(diff) / np.sqrt(se2), df)


def test_ratio_metric_is_the_delta_method(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    path, design, control, treatment = _arms(built, "revenue_per_session")
    with Store(path, read_only=True) as store:
        row = review(store, design).results.iloc[0]

    def arm(frame: pd.DataFrame) -> tuple[float, float, int]:
        y, x = frame["revenue"].to_numpy(), frame["sessions"].to_numpy()
        ratio = y.mean() / x.mean()
        linear = (y - ratio * x) / x.mean()  # the linearised per-user contribution
        return ratio, linear.var(ddof=1), len(frame)

    r_c, v_c, n_c = arm(control)
    r_t, v_t, n_t = arm(treatment)
    low, high, p_value = _welch(r_t - r_c, v_c, n_c, v_t, n_t)
    assert (row["control_value"], row["variant_value"]) == pytest.approx((r_c, r_t))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-6)
    assert row["p_value"] == pytest.approx(p_value, rel=1e-6)


def test_cuped_is_regression_on_the_pre_period(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    path, design, _, _ = _arms(built, "revenue,events")
    with Store(path, read_only=True) as store:
        values = user_values(store, Design("exp", (MetricSpec("revenue"),), days=10))
        row = review(store, design, Options(cuped=True)).results.set_index("metric").loc["revenue"]
    y, x = values["m0"].to_numpy(), values["pre_m0"].to_numpy()
    theta = np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1)
    adjusted = y - theta * (x - x.mean())
    is_t = (values["variant"] == "treatment").to_numpy()
    a_t, a_c = adjusted[is_t], adjusted[~is_t]
    low, high, p_value = _welch(a_t.mean() - a_c.mean(), a_c.var(ddof=1), len(a_c), a_t.var(ddof=1), len(a_t))
    assert row["abs_diff"] == pytest.approx(a_t.mean() - a_c.mean(), rel=1e-9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-6)
    assert row["p_value"] == pytest.approx(p_value, rel=1e-6)
    plain_se = np.sqrt(y[~is_t].var(ddof=1) / (~is_t).sum() + y[is_t].var(ddof=1) / is_t.sum())
    assert row["variance_reduction"] == pytest.approx(1 - (row["se"] / plain_se) ** 2, rel=1e-6)


def _store_of(tmp_path: Path, assignments: list[tuple], events: list[tuple]) -> Store:
    """A store holding these assignment rows and (user, time, name, revenue, session) events."""
    store = Store(tmp_path / "s.duckdb")
    with store.transaction() as cursor:
        cursor.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?)", assignments)
        cursor.executemany(
            "INSERT INTO events (user_id, event_time, event_name, revenue, session_id) VALUES (?, ?, ?, ?, ?)",
            events,
        )
    return store


def test_cuped_without_a_pre_period_falls_back(tmp_path: Path) -> None:
    rows = [(f"u{i}", "e", "control" if i % 2 else "b", ORIGIN, None) for i in range(40)]
    events = [(f"u{i}", ORIGIN + dt.timedelta(hours=i), "view", float(i % 3), f"s{i}") for i in range(40)]
    with _store_of(tmp_path, rows, events) as store:
        table = review(
            store, Design("e", tuple(parse_metrics("revenue,revenue_per_session"))), Options(cuped=True)
        ).results
    assert not table["cuped"].any()
    assert table["ci_low"].notna().all()


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_adjusted_p_values_match_statsmodels(
    built: tuple[Path, pd.DataFrame, pd.DataFrame], correction: str
) -> None:
    path, design, _, _ = _arms(built, METRICS)
    with Store(path, read_only=True) as store:
        table = review(store, design, Options(correction=correction)).results  # type: ignore[arg-type]
    method = {"holm": "holm", "bh": "fdr_bh"}[correction]
    expected = multitest.multipletests(table["p_value"], method=method)[1]
    np.testing.assert_allclose(table["p_adjusted"], expected, rtol=1e-9)


def test_winsorising_caps_at_the_pooled_percentile(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    path, events, assignments = built
    design = Design("exp", (MetricSpec("revenue"),), days=10, winsorize=95)
    reference = _reference_values(events, assignments, days=10)
    with Store(path, read_only=True) as store:
        ours = user_values(store, design).set_index("user_id").sort_index()
    cap = np.percentile(reference["revenue"], 95)
    np.testing.assert_allclose(ours["m0"], np.minimum(reference["revenue"], cap), atol=1e-9)
    np.testing.assert_allclose(
        ours["pre_m0"],
        np.minimum(reference["pre_revenue"], np.percentile(reference["pre_revenue"], 95)),
        atol=1e-9,
    )


def test_control_choice() -> None:
    assert choose_control(["b", "control", "a"], None) == "control"
    assert choose_control(["b", "a"], None) == "a"
    assert choose_control(["b", "a"], "b") == "b"
    with pytest.raises(TenureError, match="not a variant"):
        choose_control(["b", "a"], "c")


@pytest.mark.parametrize("text", ["conversion", "retention:x", "retention:-1", "ltv", "revenue:3", ""])
def test_bad_metrics_are_refused(text: str) -> None:
    with pytest.raises(TenureError):
        parse_metrics(text)


def test_cli_contract(
    built: tuple[Path, pd.DataFrame, pd.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = built
    assert (
        cli_main(
            [
                "ab",
                "--db",
                str(path),
                "--experiment",
                "exp",
                "--metrics",
                METRICS,
                "--days",
                "10",
                "--format",
                "json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"experiment", "srm_p_value", "users", "results"}
    assert payload["experiment"] == "exp" and set(payload["users"]) == {"control", "treatment"}
    assert [r["metric"] for r in payload["results"]] == METRICS.split(",")
    for result in payload["results"]:
        assert list(result) == CONTRACT_COLUMNS
        assert result["abs_diff"] == pytest.approx(result["variant_value"] - result["control_value"])
        assert result["ci_low"] <= result["abs_diff"] <= result["ci_high"]
    assert (
        cli_main(["ab", "--db", str(path), "--experiment", "exp", "--metrics", "revenue", "--format", "csv"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",".join(CONTRACT_COLUMNS) and len(lines) == 2
    assert cli_main(["ab", "--db", str(path), "--experiment", "missing"]) == 2
    assert "missing" in capsys.readouterr().err


def _products(values: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Per user, the terms the moment sums add up (n, x, x*y), zero where the window is open."""
    from core.experiments.moments import metric_columns

    terms: dict[str, np.ndarray] = {}
    for index, spec in enumerate(design.metrics):
        ok = values[f"ok{index}"].to_numpy(bool).astype(float)
        terms[f"n{index}"] = ok
        columns = metric_columns(index, spec)
        for a_i, a in enumerate(columns):
            terms[f"s__{a}"] = values[a].to_numpy(float) * ok
            for b in columns[a_i:]:
                terms[f"ss__{a}__{b}"] = values[a].to_numpy(float) * values[b].to_numpy(float) * ok
    return pd.DataFrame(terms)


def _moments_from_frame(values: pd.DataFrame, design: Design, groups: np.ndarray) -> dict[str, pd.Series]:
    """Moment sums per group straight from a per-user frame (for the A/A simulations)."""
    summed = _products(values, design).groupby(groups).sum()
    return {str(group): row for group, row in summed.iterrows()}


def test_moment_aggregates_equal_numpy(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    path, _, _ = built
    design = Design("exp", (MetricSpec("revenue"),), days=10)
    with Store(path, read_only=True) as store:
        values = user_values(store, design)
    moments = _moments_from_frame(values, design, values["variant"].to_numpy())
    aggr = aggregates(moments["control"], 0, design.metrics[0])
    part = values[values["variant"] == "control"]
    assert aggr.count() == len(part)
    assert aggr.var("m0") == pytest.approx(part["m0"].var(ddof=1), rel=1e-9)
    assert aggr.cov("m0", "pre_m0") == pytest.approx(np.cov(part["m0"], part["pre_m0"])[0, 1], rel=1e-9)


# --- the generated sample store: true effects and A/A calibration -----------------------------


def test_true_effects_lie_inside_the_intervals(sample_store: Store) -> None:
    """The simulator's counterfactual effects (truth.experiment_effects) against the review."""
    truth = sample_store.query_df("SELECT experiment, metric, effect FROM truth.experiment_effects")
    ours = {
        "conversion_14d": ("conversion:purchase", 14),
        "retention_7d": ("retention:7", 14),
        "retention_30d": ("retention:30", 14),
        "revenue_30d": ("revenue", 30),
    }
    for experiment in truth["experiment"].unique():
        for true in truth[truth["experiment"] == experiment].itertuples():
            metric, days = ours[true.metric]
            design = Design(experiment, (parse_metrics(metric)[0],), days=days)
            row = review(sample_store, design).results.iloc[0]
            assert row["ci_low"] <= true.effect <= row["ci_high"], (experiment, true.metric, row.to_dict())
    onboarding = review(
        sample_store, Design("onboarding_checklist", (MetricSpec("conversion", "purchase"),))
    ).results
    assert onboarding.iloc[0]["ci_low"] > 0, "the real lift in conversion is detected"


def test_cuped_shrinks_intervals_where_the_pre_period_predicts(sample_store: Store) -> None:
    design = Design("checkout_button_color", tuple(parse_metrics("events,retention:7")))
    plain = review(sample_store, design).results.set_index("metric")
    adjusted = review(sample_store, design, Options(cuped=True)).results.set_index("metric")
    for metric in ("events", "retention:7"):
        assert adjusted.loc[metric, "variance_reduction"] > 0.05
        width = adjusted.loc[metric, "ci_high"] - adjusted.loc[metric, "ci_low"]
        assert width < plain.loc[metric, "ci_high"] - plain.loc[metric, "ci_low"]


def test_aa_false_positive_rate_is_near_alpha(sample_store: Store) -> None:
    """200 random A/A splits of the sample's users (all of rec_policy, each from their own
    assignment): the share of tests with p < 0.05 stays between 0.02 and 0.08."""
    design = Design(
        "rec_policy",
        tuple(parse_metrics("conversion:purchase,retention:7,revenue,events,revenue_per_session")),
    )
    values = user_values(sample_store, design)
    rng = np.random.default_rng(20261202)
    rejections = []
    for _ in range(200):
        groups = np.where(rng.random(len(values)) < 0.5, "a", "b")
        table = compare(_moments_from_frame(values, design, groups), design, Options(), "a")
        rejections.append((table["p_value"] < 0.05).to_numpy())
    rate = np.mean(rejections)
    per_metric = np.mean(rejections, axis=0)
    assert 0.02 <= rate <= 0.08, (rate, per_metric)
    assert (per_metric <= 0.1).all(), per_metric


# --- the cumulative view and always-valid intervals under daily peeking ------------------------


def test_cumulative_view_ends_at_the_table(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    """The last day of the cumulative view is the whole experiment: the same estimates and
    standard errors as the table (normal intervals there, t in the table), with and without CUPED."""
    path, design, _, _ = _arms(built, METRICS)
    with Store(path, read_only=True) as store:
        for cuped in (False, True):
            result = review(store, design, Options(cuped=cuped))
            last = result.cumulative.groupby(["metric", "variant"]).tail(1).set_index("metric")
            table = result.results.set_index("metric")
            for metric in table.index:
                row = last.loc[metric]
                if cuped and metric == "revenue_per_session":
                    continue
                assert row["diff"] == pytest.approx(table.loc[metric, "abs_diff"], rel=1e-9, abs=1e-12)
                half = (row["ci_high"] - row["ci_low"]) / 2
                assert half == pytest.approx(1.959963985 * table.loc[metric, "se"], rel=1e-6)
                assert row["seq_ci_low"] == table.loc[metric, "seq_ci_low"]


def test_cumulative_days_match_a_pandas_replay(built: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    """Day by day: users assigned so far, their difference in means and its Welch variance."""
    path, _, _ = built
    design = Design("exp", (MetricSpec("revenue"),), days=10)
    with Store(path, read_only=True) as store:
        values = user_values(store, design)
        cumulative = review(store, design).cumulative
    values["day"] = values["assigned_time"].dt.floor("D")
    for row in cumulative.iloc[::7].itertuples():
        so_far = values[values["day"] <= row.day]
        c = so_far.loc[so_far["variant"] == "control", "m0"]
        t = so_far.loc[so_far["variant"] == "treatment", "m0"]
        assert (row.control_users, row.variant_users) == (len(c), len(t))
        assert row.diff == pytest.approx(t.mean() - c.mean(), abs=1e-9)
        se = np.sqrt(c.var(ddof=1) / len(c) + t.var(ddof=1) / len(t))
        assert row.ci_high - row.diff == pytest.approx(1.959963985 * se, rel=1e-6)
    widths = (cumulative["seq_ci_high"] - cumulative["seq_ci_low"]).dropna().to_numpy()
    assert (np.diff(widths) <= 1e-12).all(), "the running always-valid interval only narrows"


def test_always_valid_intervals_hold_when_peeking_daily(sample_store: Store) -> None:
    """200 A/A splits of checkout_button_color's users, looked at every assignment day (60 looks):
    the always-valid interval ever excludes 0 in at most alpha of them, while the fixed-horizon
    interval, peeked at daily, does so far more often."""
    from core.experiments.cumulative import cumulative_from_moments

    design = Design("checkout_button_color", tuple(parse_metrics("retention:7,revenue,events")))
    values = user_values(sample_store, design)
    day = values["assigned_time"].dt.floor("D").to_numpy()
    products = _products(values, design)
    rng = np.random.default_rng(7)
    ever_sequential, ever_fixed = [], []
    for _ in range(200):
        groups = np.where(rng.random(len(values)) < 0.5, "a", "b")
        moments = products.groupby([groups, day]).sum().rename_axis(["g0", "g1"]).reset_index()
        cumulative = cumulative_from_moments(moments, design, "a")
        excluded = (cumulative["seq_ci_low"] > 0) | (cumulative["seq_ci_high"] < 0)
        fixed = (cumulative["ci_low"] > 0) | (cumulative["ci_high"] < 0)
        ever_sequential.append(excluded.groupby(cumulative["metric"]).any().to_numpy())
        ever_fixed.append(fixed.groupby(cumulative["metric"]).any().to_numpy())
    assert np.mean(ever_sequential) <= 0.05, np.mean(ever_sequential, axis=0)
    assert np.mean(ever_fixed) > 0.1, np.mean(ever_fixed, axis=0)


def test_summary_card_says_what_the_table_shows(sample_store: Store) -> None:
    from core.experiments.summary import sentences

    result = review(
        sample_store, Design("onboarding_checklist", tuple(parse_metrics("conversion:purchase,retention:30")))
    )
    card = sentences(result)
    row = result.results.set_index("metric").loc["conversion:purchase"]
    assert row["p_adjusted"] < 0.05
    expected = (
        f"Variant treatment raised conversion to purchase within 14 days by {row['abs_diff'] * 100:.1f} points "
        f"(95% CI {row['ci_low'] * 100:.1f} to {row['ci_high'] * 100:.1f})."
    )
    assert card[0] == expected
    assert not any("day-30 retention by" in line for line in card), "not significant: not claimed"
    assert card[-1].startswith(f"The sample ratio check passed (p = {result.users.srm_p_value:.2g}); 2 tests")
    assert "Holm-adjusted" in card[-1]


def test_summary_card_refuses_to_read_a_failed_ratio_check(tmp_path: Path) -> None:
    from core.experiments.summary import sentences

    rows = [(f"u{i}", "e", "control" if i < 700 else "b", ORIGIN, None) for i in range(1000)]
    events = [(f"u{i}", ORIGIN + dt.timedelta(hours=1), "view", 0.0, "s") for i in range(1000)]
    with _store_of(tmp_path, rows, events) as store:
        result = review(store, Design("e", (MetricSpec("events"),)))
    assert result.users.srm_failed and not result.trustworthy
    card = sentences(result)
    assert len(card) == 1 and "cannot be trusted" in card[0]
    assert any("Sample ratio mismatch" in warning for warning in result.warnings)
