"""What-if (off-policy) estimates: formulas against numpy, unbiasedness and interval coverage on
synthetic bandit logs with known truth, diagnostics, targets, the CLI contract, OBD and the sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.ingest import ingest_file
from core.store import Store
from core.whatif.diagnostics import agreement
from core.whatif.estimators import ESTIMATORS, bootstrap, request_sums
from core.whatif.evaluate import WhatIfSpec, evaluate
from core.whatif.log import LogSpec, open_log
from core.whatif.targets import FileTarget, LoggedPolicy, Mixture, Popularity, Uniform, parse_target

ROOT = Path(__file__).resolve().parents[1]
OBD = Path("/work/shared/datasets/obd")
SAMPLE = ROOT / "sample_data" / "tenure.duckdb"

# A bandit with 3 context segments (shares SEGMENT_SHARE), 5 items, 2 positions; the logging
# policy depends on the segment, clicks depend on segment and item.
SEGMENT_SHARE = np.array([0.5, 0.3, 0.2])
LOGGING = np.array([[0.4, 0.3, 0.15, 0.1, 0.05], [0.1, 0.2, 0.4, 0.2, 0.1], [0.05, 0.05, 0.1, 0.3, 0.5]])
CLICK = np.array(
    [[0.10, 0.05, 0.02, 0.08, 0.20], [0.03, 0.15, 0.05, 0.10, 0.02], [0.06, 0.02, 0.12, 0.04, 0.30]]
)
POSITIONS = 2


def simulate_log(seed: int, requests: int, logging: np.ndarray = LOGGING) -> pd.DataFrame:
    """Each request: a segment, then each position an independent draw from the logging row."""
    rng = np.random.default_rng(seed)
    segment = np.repeat(rng.choice(3, size=requests, p=SEGMENT_SHARE), POSITIONS)
    cumulative = logging.cumsum(axis=1)[segment]
    item = (rng.random(len(segment))[:, None] > cumulative).sum(axis=1)
    reward = (rng.random(len(segment)) < CLICK[segment, item]).astype(float)
    return pd.DataFrame(
        {
            "request": np.repeat(np.arange(requests), POSITIONS),
            "segment": segment,
            "item": item,
            "position": np.tile(np.arange(1, POSITIONS + 1), requests),
            "propensity": logging[segment, item],
            "reward": reward,
        }
    )


def true_value(target: np.ndarray) -> float:
    """Exact per-slot value of a context-free target (K,) used at every position."""
    return float(SEGMENT_SHARE @ (CLICK @ target))


UNIFORM = np.full(5, 0.2)
SKEWED = np.array([0.05, 0.1, 0.15, 0.3, 0.4])


def load_store(log: pd.DataFrame, policy: str = "logger") -> Store:
    store = Store(":memory:")
    frame = pd.DataFrame(
        {
            "rec_time": pd.Timestamp("2025-01-01") + pd.to_timedelta(log["request"], unit="min"),
            "request_id": "r" + log["request"].astype(str),
            "user_id": "u" + (log["request"] % 50).astype(str),
            "policy": policy,
            "item_id": "i" + log["item"].astype(str),
            "position": log["position"],
            "propensity": log["propensity"],
            "reward": log["reward"],
            "context": '{"segment": "s' + log["segment"].astype(str) + '"}',
        }
    )
    with store.transaction() as cursor:
        cursor.register("frame", frame)
        cursor.execute(
            "INSERT INTO recommendations (rec_time, request_id, user_id, policy, item_id, position, "
            "propensity, reward, context) SELECT rec_time, request_id, user_id, policy, item_id, position, "
            "propensity, reward, context::JSON FROM frame"
        )
    return store


# -- estimators against numpy -------------------------------------------------------------------


def test_every_estimator_equals_its_numpy_formula():
    rng = np.random.default_rng(3)
    rows = 500
    request = rng.integers(0, 180, rows)
    weight = rng.gamma(1.0, 1.0, rows)
    reward = (rng.random(rows) < 0.2).astype(float)
    q = rng.uniform(0, 0.4, rows)
    direct = rng.uniform(0, 0.4, rows)
    table = bootstrap(request_sums(request, reward, weight, q, direct), ESTIMATORS, resamples=50, seed=1)
    values = dict(zip(table["estimator"], table["value"], strict=True))
    dm = direct.mean()
    assert values["ipw"] == pytest.approx(np.mean(weight * reward), rel=1e-12)
    assert values["snipw"] == pytest.approx(np.sum(weight * reward) / np.sum(weight), rel=1e-12)
    assert values["dm"] == pytest.approx(dm, rel=1e-12)
    assert values["dr"] == pytest.approx(dm + np.mean(weight * (reward - q)), rel=1e-12)
    assert values["sndr"] == pytest.approx(dm + np.sum(weight * (reward - q)) / np.sum(weight), rel=1e-12)
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()


def test_bootstrap_resamples_requests_with_the_seed():
    rng = np.random.default_rng(4)
    request = np.repeat(np.arange(100), 3)
    reward = rng.random(300)
    sums = request_sums(request, reward, np.ones(300), np.zeros(300), np.zeros(300))
    first = bootstrap(sums, ("ipw",), resamples=400, seed=9)
    assert first.equals(bootstrap(sums, ("ipw",), resamples=400, seed=9))
    assert not first.equals(bootstrap(sums, ("ipw",), resamples=400, seed=10))
    # Whole requests are resampled: the interval's width matches the spread of request means.
    per_request = reward.reshape(100, 3).mean(axis=1)
    expected_width = 2 * 1.96 * per_request.std(ddof=1) / np.sqrt(100)
    width = float(first["ci_high"].iloc[0] - first["ci_low"].iloc[0])
    assert width == pytest.approx(expected_width, rel=0.2)


def _estimates(log: pd.DataFrame, target: np.ndarray, resamples: int, seed: int) -> pd.DataFrame:
    weight = target[log["item"]] / log["propensity"]
    # A deliberately poor reward model: DR must stay unbiased because the weights are exact.
    q = np.full(len(log), 0.05)
    direct = np.full(len(log), float(target @ np.full(5, 0.05)))
    sums = request_sums(log["request"], log["reward"], weight, q, direct)
    return bootstrap(sums, ("ipw", "snipw", "dr", "sndr"), resamples=resamples, seed=seed)


def test_ipw_and_dr_are_unbiased_over_many_logs():
    truth = true_value(SKEWED)
    values = np.array([_estimates(simulate_log(seed, 400), SKEWED, 1, seed)["value"] for seed in range(300)])
    mean, error = values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(values))
    ipw, dr = mean[0], mean[2]
    assert abs(ipw - truth) < 3 * error[0], (ipw, truth)
    assert abs(dr - truth) < 3 * error[2], (dr, truth)
    assert truth != pytest.approx(simulate_log(0, 400)["reward"].mean(), abs=0.005)


def test_intervals_cover_the_truth_at_close_to_the_nominal_rate():
    truth = true_value(UNIFORM)
    covered = []
    for seed in range(100):
        table = _estimates(simulate_log(1000 + seed, 1500), UNIFORM, 200, seed)
        covered.append(((table["ci_low"] <= truth) & (truth <= table["ci_high"])).to_numpy())
    rate = np.mean(covered, axis=0)
    assert ((rate >= 0.88) & (rate <= 0.99)).all(), rate


# -- the pipeline on a store ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_log() -> pd.DataFrame:
    return simulate_log(11, 6000)


@pytest.fixture(scope="module")
def synthetic_store(synthetic_log):
    with load_store(synthetic_log) as store:
        yield store


def test_pipeline_weights_sums_and_diagnostics_equal_numpy(synthetic_store, synthetic_log):
    result = evaluate(synthetic_store, WhatIfSpec(target="uniform", estimators=("ipw", "snipw"), seed=2))
    weight = 0.2 / synthetic_log["propensity"].to_numpy()
    reward = synthetic_log["reward"].to_numpy()
    assert result.rows == len(synthetic_log)
    assert result.logged_value == pytest.approx(reward.mean())
    values = dict(zip(result.estimates["estimator"], result.estimates["value"], strict=True))
    assert values["ipw"] == pytest.approx(np.mean(weight * reward), rel=1e-10)
    assert values["snipw"] == pytest.approx(np.sum(weight * reward) / weight.sum(), rel=1e-10)
    assert result.ess == pytest.approx(weight.sum() ** 2 / np.sum(weight**2), rel=1e-10)
    assert result.max_weight == pytest.approx(weight.max())
    assert result.unsupported_share == 0.0
    assert result.details["requests"] == 6000 and result.details["bootstrap_unit"] == "request"
    truth = true_value(UNIFORM)
    row = result.estimates.set_index("estimator").loc["ipw"]
    assert row["ci_low"] <= truth <= row["ci_high"]


def test_doubly_robust_and_direct_method_on_a_store_cover_the_truth(synthetic_store):
    result = evaluate(synthetic_store, WhatIfSpec(target="uniform", seed=0, max_model_rows=20_000))
    truth = true_value(UNIFORM)
    table = result.estimates.set_index("estimator")
    assert list(table.index) == list(ESTIMATORS)
    for name in ("ipw", "snipw", "dr", "sndr"):
        assert table.loc[name, "ci_low"] <= truth <= table.loc[name, "ci_high"], name
    # The context (segment) is logged, so the reward model can learn the clicks: DM is close.
    assert table.loc["dm", "value"] == pytest.approx(truth, abs=0.01)
    spread, overlap = agreement(result.estimates)
    assert spread == pytest.approx(table["value"].max() - table["value"].min())
    assert overlap == (table["ci_low"].max() <= table["ci_high"].min())


def test_unsupported_share_is_the_target_mass_the_logger_never_showed():
    logging = LOGGING.copy()
    logging[:, 4] = 0.0
    logging /= logging.sum(axis=1, keepdims=True)
    with load_store(simulate_log(5, 2000, logging)) as store:
        result = evaluate(store, WhatIfSpec(target="uniform", estimators=("ipw",)))
    # Item i4 is in no row: not a candidate, so uniform is over 4 items, all supported.
    assert result.unsupported_share == 0.0
    # Seen by another policy: i4 becomes a candidate that the logger never showed.
    extra = simulate_log(6, 50)
    with load_store(pd.concat([simulate_log(5, 2000, logging), extra[extra["item"] == 4]])) as store:
        store.query_one("SELECT 1")
        with store.transaction() as cursor:
            cursor.execute("UPDATE recommendations SET policy = 'other' WHERE item_id = 'i4'")
        result = evaluate(store, WhatIfSpec(target="uniform", log_policy="logger", estimators=("ipw",)))
    assert result.unsupported_share == pytest.approx(0.2)
    assert any("never showed" in warning for warning in result.warnings)


def test_support_is_per_context_for_a_policy_of_the_logged_context():
    logging = LOGGING.copy()
    logging[0] = [0.5, 0.5, 0.0, 0.0, 0.0]
    log = simulate_log(8, 3000, logging)
    with load_store(log) as store:
        result = evaluate(store, WhatIfSpec(target="uniform", estimators=("ipw",)))
    segment0 = (log["segment"] == 0).mean()
    assert result.details["support_mode"] == "per context"
    # In segment s0 only i0 and i1 are shown: 3/5 of uniform's mass there is unsupported.
    assert result.unsupported_share == pytest.approx(segment0 * 0.6)
    assert result.details["unsupported_share_whole_log"] == 0.0


# -- targets ------------------------------------------------------------------------------------


def _probabilities(store: Store, target, fit_fraction: float = 0.3) -> tuple[np.ndarray, str]:
    with store.cursor() as cursor:
        log = open_log(cursor, LogSpec(fit_fraction=fit_fraction))
        result = target.probabilities(cursor, log, 0)
        return result.probabilities, result.note


def test_popularity_ranks_items_by_reward_rate_in_the_fit_window(synthetic_store, synthetic_log):
    probabilities, _ = _probabilities(synthetic_store, Popularity())
    fit = synthetic_log[synthetic_log["request"] < 0.3 * 6000]
    rates = fit.groupby("item")["reward"].mean().sort_values(ascending=False)
    assert probabilities.shape == (1, 5, 2)
    assert probabilities[0, rates.index[0], 0] == 1.0 and probabilities[0, rates.index[1], 1] == 1.0
    assert probabilities.sum(axis=1).tolist() == [[1.0, 1.0]]


def test_logged_policy_target_is_exact_when_context_free_and_estimated_otherwise(synthetic_log):
    constant = synthetic_log.assign(propensity=0.2)
    with load_store(constant, policy="flat") as store:
        probabilities, note = _probabilities(store, LoggedPolicy("flat"))
    assert note == "" and np.allclose(probabilities, 0.2)
    with load_store(synthetic_log) as store:
        probabilities, note = _probabilities(store, LoggedPolicy("logger"))
        with pytest.raises(TenureError, match="policy:nobody"):
            _probabilities(store, LoggedPolicy("nobody"))
    shares = synthetic_log.groupby(["position", "item"]).size().unstack(0)
    assert "estimated" in note
    assert np.allclose(probabilities[0], (shares / shares.sum()).to_numpy())


def test_mixture_and_greedy_are_distributions(synthetic_store):
    mixed, _ = _probabilities(synthetic_store, Mixture(Uniform(), Popularity(), 0.3))
    popular, _ = _probabilities(synthetic_store, Popularity())
    assert np.allclose(mixed, 0.3 * 0.2 + 0.7 * popular)
    greedy, _ = _probabilities(synthetic_store, parse_target("greedy", epsilon=0.1))
    assert greedy.shape == (3, 5, 2)
    assert np.allclose(greedy.sum(axis=1), 1.0)
    assert np.isclose(greedy.max(axis=1), 0.9 + 0.02).all() and np.isclose(greedy.min(axis=1), 0.02).all()
    # In the segment where i4 clicks best by far (s2), greedy puts it first.
    assert greedy[2, 4, 0] == pytest.approx(0.92)


def write_target(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "target.csv"
    path.write_text(text)
    return path


GOOD_FILE = "item_id,position,probability\ni0,1,0.5\ni1,1,0.5\ni2,2,1.0\n"


def test_file_target_reads_probabilities(synthetic_store, tmp_path):
    probabilities, _ = _probabilities(synthetic_store, FileTarget(write_target(tmp_path, GOOD_FILE)))
    expected = np.zeros((1, 5, 2))
    expected[0, [0, 1], 0] = 0.5
    expected[0, 2, 1] = 1.0
    assert np.array_equal(probabilities, expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("item_id,position\ni0,1\n", "missing column probability"),
        (
            "item_id,position,probability\ni0,1,0.5\ni9,1,0.5\ni2,2,1\n",
            "line 3, column item_id: unknown item 'i9'",
        ),
        ("item_id,position,probability\ni0,1,1.5\ni2,2,1\n", "line 2, column probability: 1.5 is not in"),
        ("item_id,position,probability\ni0,1,0.5\ni2,2,1\n", "column probability: position 1 sums to 0.5"),
        ("item_id,position,probability\ni0,7,1\n", "line 2, column position: unknown position 7"),
        ("item_id,position,probability\ni0,1,x\n", "line 2, column probability: 'x' is not a number"),
        (
            "item_id,position,probability\ni0,1,0.5\ni0,1,0.5\n",
            "line 3: item 'i0' at position 1 appears twice",
        ),
    ],
)
def test_file_target_validation_names_line_and_column(synthetic_store, tmp_path, text, message):
    with pytest.raises(TenureError, match=message.replace("(", r"\(")):
        _probabilities(synthetic_store, FileTarget(write_target(tmp_path, text)))


@pytest.mark.parametrize(
    "text", ["nonsense", "policy:", "mix:uniform,popularity", "mix:uniform,popularity,2"]
)
def test_unknown_targets_are_bad_input(text):
    with pytest.raises(TenureError):
        parse_target(text)


# -- the CLI contract ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_db(synthetic_log, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("whatif") / "log.duckdb"
    with load_store(synthetic_log) as memory, Store(path) as store:
        frame = memory.query_df("SELECT * FROM recommendations")
        with store.transaction() as cursor:
            cursor.register("frame", frame)
            cursor.execute("INSERT INTO recommendations SELECT * FROM frame")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", "whatif", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_cli_prints_the_contract_in_json_and_csv(synthetic_db, tmp_path):
    done = run_cli("--db", str(synthetic_db), "--target", "uniform", "--log-policy", "logger",
                   "--estimators", "ipw,snipw", "--seed", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert list(output) == [
        "target",
        "rows",
        "logged_value",
        "ess",
        "max_weight",
        "unsupported_share",
        "estimates",
    ]
    assert output["target"] == "uniform" and output["rows"] == 12_000
    assert [row["estimator"] for row in output["estimates"]] == ["ipw", "snipw"]
    assert set(output["estimates"][0]) == {"estimator", "value", "ci_low", "ci_high"}
    csv = run_cli("--db", str(synthetic_db), "--target", "uniform", "--estimators", "ipw,snipw",
                  "--seed", "3", "--format", "csv")  # fmt: skip
    assert csv.returncode == 0, csv.stderr
    frame = pd.read_csv(pd.io.common.StringIO(csv.stdout))
    assert list(frame.columns) == [
        "target", "rows", "logged_value", "ess", "max_weight", "unsupported_share",
        "estimator", "value", "ci_low", "ci_high",
    ]  # fmt: skip
    assert frame["value"].tolist() == pytest.approx([row["value"] for row in output["estimates"]])


@pytest.mark.parametrize(
    "args",
    [
        ["--target", "nonsense"],
        ["--target", "uniform", "--log-policy", "nobody"],
        ["--target", "uniform", "--estimators", "ipw,magic"],
        ["--target", "file:/no/such/file.csv"],
        ["--target", "uniform", "--format", "xml"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(synthetic_db, args, capsys):
    from core.cli import main

    try:
        code = main(["whatif", "--db", str(synthetic_db), *args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 or "usage:" in captured.err


# -- real data: the Open Bandit Dataset -----------------------------------------------------------


@pytest.fixture(scope="module")
def obd_store():
    paths = {policy: OBD / policy / "all.csv.gz" for policy in ("random", "bts")}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        pytest.skip(
            f"Open Bandit Dataset sample not found at {missing} (see /work/shared/datasets/README.md)"
        )
    with Store(":memory:") as store:
        for policy, path in paths.items():
            ingest_file(store, path, table="recommendations", constants={"policy": policy})
        yield store


@pytest.mark.parametrize(
    ("log_policy", "target", "truth"), [("random", "bts", 0.0042), ("bts", "random", 0.0038)]
)
def test_obd_the_other_policys_live_click_rate_is_inside_the_ipw_interval(
    obd_store, log_policy, target, truth
):
    """Each OBD log's mean click is its policy's live value (README: random 0.0038, bts 0.0042)."""
    result = evaluate(
        obd_store, WhatIfSpec(target=f"policy:{target}", log_policy=log_policy, estimators=("ipw", "snipw"))
    )
    assert result.rows == 10_000
    assert result.logged_value == pytest.approx(
        truth + (0.0004 if log_policy == "bts" else -0.0004), abs=1e-4
    )
    for row in result.estimates.itertuples():
        assert row.ci_low <= truth <= row.ci_high, row
    if target == "bts":
        assert "estimated" in result.details["target_note"]
        assert result.unsupported_share == 0.0 and result.details["support_mode"] == "context-free"
    else:
        assert result.details["support_mode"] == "whole log"
        assert result.ess < 0.1 * result.rows


# -- the simulated sample -----------------------------------------------------------------------


def test_sample_popularity_from_the_personalised_log(small_store_path):
    """popularity's propensities are exact (context-free); personalised's are exact too, though
    they depend on a hidden taste: IPW is unbiased for popularity's click rate on the personalised
    users' slots, which is close to truth.policy_values (everyone under popularity)."""
    with Store(small_store_path, read_only=True) as store:
        truth = store.query_one("SELECT click_rate FROM truth.policy_values WHERE policy = 'popularity'")[0]
        result = evaluate(
            store,
            WhatIfSpec(target="policy:popularity", log_policy="personalised", estimators=("ipw", "snipw")),
        )
    assert result.details["target_note"] == ""
    assert result.unsupported_share < 0.05
    for row in result.estimates.itertuples():
        assert row.ci_low <= truth <= row.ci_high, (row, truth)


def test_the_same_seed_gives_the_same_intervals(synthetic_store):
    spec = WhatIfSpec(target="uniform", estimators=("ipw", "snipw"), seed=5)
    first = evaluate(synthetic_store, spec).estimates
    assert first.equals(evaluate(synthetic_store, spec).estimates)


class _CellModel:
    """A stand-in reward model with q(x, a, p) = (x + 1) / (a + 2) + p / 10, for checking which
    cells are scored and how the direct term is summed."""

    @staticmethod
    def predict_cells(log, context: np.ndarray, item: np.ndarray, position: np.ndarray) -> np.ndarray:
        return (np.asarray(context) + 1.0) / (np.asarray(item) + 2.0) + np.asarray(position) / 10.0

    def predict(self, log, contexts: np.ndarray) -> np.ndarray:
        context, item, position = np.meshgrid(contexts, np.arange(6), np.arange(2), indexing="ij")
        return self.predict_cells(log, context, item, position)


@pytest.mark.parametrize("sparse", [True, False])
def test_fold_predictions_score_the_needed_cells_like_the_whole_grid(sparse):
    from core.whatif.evaluate import _fold_predictions

    rng = np.random.default_rng(3)
    probabilities = rng.random((4, 6, 2))
    if sparse:
        probabilities[probabilities < 0.8] = 0.0
        probabilities[:, 0, :] += 0.1
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    context, item, position = rng.integers(0, 4, 5), rng.integers(0, 6, 5), rng.integers(0, 2, 5)
    q, direct = _fold_predictions(None, _CellModel(), probabilities, context, item, position)
    expected_direct = [
        sum(probabilities[x, a, p] * _CellModel.predict_cells(None, x, a, p) for a in range(6))
        for x, p in zip(context, position, strict=True)
    ]
    np.testing.assert_allclose(q, _CellModel.predict_cells(None, context, item, position))
    np.testing.assert_allclose(direct, expected_direct)
