"""Predicted LTV as an experiment metric: scoring restricted to a set of users against a run over
the whole population, the per-day as-of rule against a pandas walk of the assignments, the Welch
figures against scipy, Holm over the joint family against statsmodels, and the ``ab`` flag."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_helpers import AS_OF, HORIZON_DAYS, SEED, TINY_GBM
from scipy import stats
from statsmodels.stats import multitest

from core.cli import main as cli_main
from core.errors import TenureError
from core.experiments.analysis import CONTRACT_COLUMNS, Options, review
from core.experiments.ltv import LTV_METRIC, USER_COLUMNS, ltv_review, predicted_ltv, with_ltv_rows
from core.experiments.metrics import Design, parse_metrics
from core.models.spec import ModelSpec
from core.models.training import score_model, train_models
from core.store import Store

EXPERIMENT = "ltv_exp"
ASSIGNMENT_DAYS = pd.date_range("2026-02-02", periods=4, freq="D")
DAYS = 14


@pytest.fixture(scope="module")
def run_dir(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BG/NBD and GBM models trained at ``AS_OF`` (90-day horizon); the sequence models'
    restricted scoring is tested in tests/test_sequence_model.py, beside their fitted model."""
    out = tmp_path_factory.mktemp("ltv_models")
    with Store(small_store_path, read_only=True) as store:
        train_models(
            store,
            ModelSpec(AS_OF, HORIZON_DAYS),
            ["btyd", "gbm"],
            "users",
            SEED,
            out,
            gbm_config=TINY_GBM,
        )
    return out


@pytest.fixture(scope="module")
def store_path(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated store plus experiment ``ltv_exp``: 240 users who started before 2026-02-01,
    assigned at random times on four days (few scoring runs), one user in both variants (left
    out) and one assigned user without any event (``ghost``)."""
    path = Path(shutil.copy(small_store_path, tmp_path_factory.mktemp("ltv_store") / "ltv.duckdb"))
    rng = np.random.default_rng(5)
    with Store(path) as store:
        users = store.query_df(
            "SELECT user_id FROM events GROUP BY user_id HAVING min(event_time) < '2026-02-01' "
            "ORDER BY user_id LIMIT 241"
        )["user_id"].tolist()
        rows = [
            (
                user,
                EXPERIMENT,
                "control" if index % 2 == 0 else "treatment",
                ASSIGNMENT_DAYS[index % 4] + pd.Timedelta(seconds=int(rng.integers(0, 86_400))),
            )
            for index, user in enumerate(users[:240])
        ]
        rows.append(("ghost", EXPERIMENT, "treatment", ASSIGNMENT_DAYS[0] + pd.Timedelta(hours=9)))
        rows += [
            (users[240], EXPERIMENT, variant, ASSIGNMENT_DAYS[1]) for variant in ("control", "treatment")
        ]
        with store.transaction() as cursor:
            cursor.executemany(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time) VALUES (?, ?, ?, ?)",
                [(u, e, v, pd.Timestamp(a).to_pydatetime()) for u, e, v, a in rows],
            )
    return path


@pytest.fixture(scope="module")
def store(store_path: Path):
    with Store(store_path, read_only=True) as opened:
        yield opened


@pytest.fixture(scope="module")
def predicted(store: Store, run_dir: Path) -> pd.DataFrame:
    return predicted_ltv(store, EXPERIMENT, run_dir / "gbm", DAYS)


def _clean_assignments(store: Store, experiment: str) -> pd.DataFrame:
    """Users in exactly one variant with their first assignment time, by pandas."""
    rows = store.query_df("SELECT * FROM assignments WHERE experiment = ?", [experiment])
    variants = rows.groupby("user_id")["variant"].nunique()
    clean = rows[rows["user_id"].isin(variants[variants == 1].index)]
    return clean.groupby("user_id").agg(variant=("variant", "first"), assigned_time=("assigned_time", "min"))


def _scored(predicted: pd.DataFrame, variant: str) -> np.ndarray:
    chosen = predicted[(predicted["variant"] == variant) & (predicted["status"] == "scored")]
    return chosen["ltv_pred"].to_numpy(dtype=float)


@pytest.mark.parametrize("kind", ["btyd", "gbm"])
def test_restricted_scoring_equals_the_same_users_in_a_full_run(
    store: Store, run_dir: Path, kind: str
) -> None:
    as_of = pd.Timestamp("2026-02-10").to_pydatetime()
    full = score_model(store, run_dir / kind, as_of)
    chosen = [*full["user_id"].iloc[::7].tolist(), "nobody-has-this-id"]
    restricted = score_model(store, run_dir / kind, as_of, users=chosen)
    assert restricted["user_id"].tolist() == sorted(chosen[:-1])
    expected = full[full["user_id"].isin(chosen)].reset_index(drop=True)
    columns = ["churn_prob", "ltv_pred"]
    np.testing.assert_allclose(restricted[columns], expected[columns], rtol=1e-5, atol=1e-6)
    pd.testing.assert_series_equal(restricted["median_weeks_to_churn"], expected["median_weeks_to_churn"])
    assert score_model(store, run_dir / kind, as_of, users=[]).empty


def test_predicted_ltv_equals_a_full_scoring_per_as_of_day(
    store: Store, run_dir: Path, predicted: pd.DataFrame
) -> None:
    assert list(predicted.columns) == list(USER_COLUMNS)
    clean = _clean_assignments(store, EXPERIMENT)
    assert len(predicted) == len(clean) == 241  # the user in both variants is left out
    frame = predicted.set_index("user_id")
    expected_as_of = clean["assigned_time"].dt.floor("D") + pd.Timedelta(days=DAYS + 1)
    pd.testing.assert_series_equal(frame["as_of"], expected_as_of.reindex(frame.index), check_names=False)
    assert (frame["variant"] == clean["variant"].reindex(frame.index)).all()
    assert frame["as_of"].nunique() == len(ASSIGNMENT_DAYS)
    scored = 0
    for as_of, users in frame.groupby("as_of"):
        full = score_model(store, run_dir / "gbm", as_of.to_pydatetime()).set_index("user_id")
        present = users.index.isin(full.index)
        assert (users.loc[present, "status"] == "scored").all()
        np.testing.assert_allclose(
            users.loc[present, "ltv_pred"], full.loc[users.index[present], "ltv_pred"], rtol=1e-9
        )
        assert users.loc[~present].index.tolist() == ["ghost"] * int((~present).sum())
        scored += int(present.sum())
    assert scored == 240
    assert frame.loc["ghost", "status"] == "not_in_population" and np.isnan(frame.loc["ghost", "ltv_pred"])


def test_btyd_scores_at_instants_equal_a_full_run_per_instant(store: Store, run_dir: Path) -> None:
    """BG/NBD scores every user at their own as-of in one pass (one summary query): each score
    must be the one a full run at that instant gives. (Sequence models:
    tests/test_sequence_model.py.)"""
    predicted = predicted_ltv(store, EXPERIMENT, run_dir / "btyd", DAYS)
    assert (predicted["status"] == "scored").sum() == 240
    for as_of, users in predicted[predicted["status"] == "scored"].groupby("as_of"):
        full = score_model(store, run_dir / "btyd", as_of.to_pydatetime()).set_index("user_id")
        np.testing.assert_allclose(users["ltv_pred"], full.loc[users["user_id"], "ltv_pred"], rtol=1e-9)


def test_users_at_many_instants_cost_one_scoring_pass(
    store: Store, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users scored at the midnight before their first event and signup (as the What-if page's
    churn risk at assignment does for users assigned on arrival) are in no population, and the
    other users get the scores a full run at their instant gives; all of them, over many
    distinct instants, in one scoring pass."""
    from core.experiments import ltv as ltv_module

    firsts = store.query_df(
        "SELECT e.user_id, least(min(e.event_time), min(u.signup_time)) AS earliest FROM events e "
        "LEFT JOIN users u USING (user_id) GROUP BY e.user_id ORDER BY e.user_id LIMIT 40"
    )
    unstarted = pd.DataFrame({"user_id": firsts["user_id"], "as_of": firsts["earliest"].dt.floor("D")})
    assert unstarted["as_of"].nunique() > 5
    instant = pd.Timestamp("2026-02-10")
    started_ids = firsts.loc[firsts["earliest"] < instant, "user_id"].head(6).tolist()
    assert len(started_ids) == 6
    started = pd.DataFrame({"user_id": started_ids, "as_of": instant})
    runs: list[list[str]] = []
    real_batch = ltv_module.score_model_at_instants

    def counted_batch(store, model_dir, instants):
        runs.append(instants["user_id"].tolist())
        return real_batch(store, model_dir, instants)

    monkeypatch.setattr(ltv_module, "score_model_at_instants", counted_batch)
    result = ltv_module.score_at_instants(
        store, run_dir / "gbm", pd.concat([unstarted, started], ignore_index=True)
    )
    assert runs == [[*unstarted["user_id"], *started_ids]]
    assert (result["status"].iloc[: len(unstarted)] == "not_in_population").all()
    assert result["ltv_pred"].iloc[: len(unstarted)].isna().all()
    expected = score_model(store, run_dir / "gbm", instant.to_pydatetime()).set_index("user_id")
    tail = result.iloc[len(unstarted) :]
    assert (tail["status"] == "scored").all()
    np.testing.assert_allclose(tail["ltv_pred"], expected.loc[started_ids, "ltv_pred"], rtol=1e-9)


def test_users_whose_window_is_open_are_left_out_and_counted(store: Store, run_dir: Path) -> None:
    data_end = store.data_end()
    # the as-of of the second day's users is the data's last midnight; the later days' lie after it
    days = (data_end.floor("D") - ASSIGNMENT_DAYS[1]).days - 1
    users = predicted_ltv(store, EXPERIMENT, run_dir / "gbm", days)
    late = users["assigned_time"] >= ASSIGNMENT_DAYS[2]
    assert (users.loc[late, "status"] == "window_open").all() and users.loc[late, "ltv_pred"].isna().all()
    assert (users.loc[~late & (users["user_id"] != "ghost"), "status"] == "scored").all()
    table = ltv_review(store, EXPERIMENT, run_dir / "gbm", days)
    row = table.iloc[0]
    assert (row["window_open"], row["not_in_population"]) == (int(late.sum()), 1)
    assert row["control_users"] + row["variant_users"] == len(users) - int(late.sum()) - 1


def test_weekly_as_of_rule_on_a_simulated_experiment(small_store_path: Path, run_dir: Path) -> None:
    experiment, days = "checkout_button_color", 120  # assigned up to 2026-03-17; data end 2026-06-30
    with Store(small_store_path, read_only=True) as simulated:
        users = predicted_ltv(simulated, experiment, run_dir / "gbm", days, bucket="week")
        clean = _clean_assignments(simulated, experiment)
        data_end = simulated.data_end()
    shifted = clean["assigned_time"] + pd.Timedelta(days=days)
    monday = shifted.dt.floor("D") - pd.to_timedelta(shifted.dt.day_of_week, unit="D")
    expected = (monday + pd.Timedelta(days=7)).reindex(users["user_id"])
    assert (users["as_of"].to_numpy() == expected.to_numpy()).all()
    assert (users["as_of"].dt.day_of_week == 0).all()
    open_window = users["as_of"] > data_end
    assert 0 < open_window.sum() < len(users)
    assert (users["status"] == np.where(open_window, "window_open", "scored")).all()


def test_an_unknown_bucket_is_refused(store: Store, run_dir: Path) -> None:
    with pytest.raises(TenureError, match="bucket"):
        predicted_ltv(store, EXPERIMENT, run_dir / "gbm", DAYS, bucket="month")


def test_welch_figures_match_scipy(store: Store, run_dir: Path, predicted: pd.DataFrame) -> None:
    table = ltv_review(store, EXPERIMENT, run_dir / "gbm", DAYS, Options(alpha=0.1))
    assert len(table) == 1
    row = table.iloc[0]
    control, treatment = _scored(predicted, "control"), _scored(predicted, "treatment")
    test = stats.ttest_ind(treatment, control, equal_var=False)
    interval = test.confidence_interval(0.9)
    assert row["metric"] == LTV_METRIC and row["variant"] == "treatment"
    assert row["control_value"] == pytest.approx(control.mean(), rel=1e-9)
    assert row["variant_value"] == pytest.approx(treatment.mean(), rel=1e-9)
    assert row["abs_diff"] == pytest.approx(treatment.mean() - control.mean(), rel=1e-9)
    assert row["p_value"] == pytest.approx(test.pvalue, rel=1e-6)
    assert row["p_adjusted"] == pytest.approx(test.pvalue, rel=1e-6)  # one test in its own family
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high), rel=1e-6)
    assert row["se"] == pytest.approx(
        np.sqrt(control.var(ddof=1) / len(control) + treatment.var(ddof=1) / len(treatment)), rel=1e-9
    )
    assert (row["control_users"], row["variant_users"]) == (len(control), len(treatment))
    assert row["model_based"] and row["model_kind"] == "gbm" and row["model_dir"] == str(run_dir / "gbm")
    assert row["test"] == "Welch t" and not row["cuped"]


def test_the_ltv_rows_join_the_holm_family(store: Store, run_dir: Path) -> None:
    design = Design(EXPERIMENT, tuple(parse_metrics("revenue,events,retention:7")), days=DAYS)
    plain = review(store, design)
    joint = with_ltv_rows(store, plain, run_dir / "gbm")
    assert joint.results["metric"].tolist() == [*plain.results["metric"], LTV_METRIC]
    pd.testing.assert_frame_equal(
        joint.results.iloc[:-1][CONTRACT_COLUMNS[:-1]], plain.results[CONTRACT_COLUMNS[:-1]]
    )
    p_values = joint.results["p_value"].to_numpy(dtype=float)
    expected = multitest.multipletests(p_values, method="holm")[1]
    np.testing.assert_allclose(joint.results["p_adjusted"].to_numpy(dtype=float), expected, rtol=1e-9)
    assert joint.results["model_based"].tolist() == [False] * len(plain.results) + [True]
    assert any("model-based" in note for note in joint.warnings)


def _ab(store_path: Path, *extra: str) -> list[str]:
    base = ["ab", "--db", str(store_path), "--experiment", EXPERIMENT, "--metrics", "revenue,events"]
    return [*base, "--days", str(DAYS), *extra]


def test_cli_flag_appends_the_ltv_row(
    store_path: Path, run_dir: Path, predicted: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(_ab(store_path, "--format", "json")) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli_main(_ab(store_path, "--ltv-model", str(run_dir / "gbm"), "--format", "json")) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == set(plain) == {"experiment", "srm_p_value", "users", "results"}
    assert [r["metric"] for r in payload["results"]] == ["revenue", "events", LTV_METRIC]
    for result in payload["results"]:
        assert list(result) == CONTRACT_COLUMNS
    for before, after in zip(plain["results"], payload["results"], strict=False):
        assert {k: v for k, v in before.items() if k != "p_adjusted"} == {
            k: v for k, v in after.items() if k != "p_adjusted"
        }
    ltv = payload["results"][-1]
    assert ltv["control_value"] == pytest.approx(_scored(predicted, "control").mean(), rel=1e-9)
    holm = multitest.multipletests([r["p_value"] for r in payload["results"]], method="holm")[1]
    assert [r["p_adjusted"] for r in payload["results"]] == pytest.approx(list(holm), rel=1e-9)

    flags = ("--ltv-model", str(run_dir / "gbm"), "--format", "csv", "--details")
    assert cli_main(_ab(store_path, *flags)) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    assert table.columns[: len(CONTRACT_COLUMNS)].tolist() == CONTRACT_COLUMNS
    assert table["model_based"].tolist() == [False, False, True]
    assert table["model_kind"].iloc[-1] == "gbm"
    assert "model-based" in captured.err


def test_a_model_of_another_horizon_is_refused(
    store: Store, store_path: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = shutil.copytree(run_dir / "gbm", tmp_path / "gbm30")
    document = json.loads((other / "model.json").read_text(encoding="utf-8"))
    document["spec"]["horizon_days"] = 30
    (other / "model.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TenureError, match="30-day horizon"):
        predicted_ltv(store, EXPERIMENT, other, DAYS)
    assert cli_main(_ab(store_path, "--ltv-model", str(other))) == 2
    assert "30-day horizon" in capsys.readouterr().err
    with pytest.raises(TenureError, match=r"no model\.json"):
        predicted_ltv(store, EXPERIMENT, tmp_path, DAYS)
