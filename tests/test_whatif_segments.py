"""Rule segments as of each user's assignment (core/whatif/segments.py): the lifecycle stage against
an independent pandas walk of each user's activity days, the churn-risk deciles against
``score_model`` run over the whole population at each assignment day with scipy's ranks, and the
rules and the CLI that use them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import write_store
from model_helpers import copy_store, train_run
from scipy.stats import rankdata

from core.cli import main
from core.errors import TenureError
from core.lifecycle import StageSpec, stage_users, stages_at_sql
from core.models import registry
from core.models.training import score_model
from core.population import Filters
from core.store import Store
from core.whatif import user_policies
from core.whatif.rules import Rule, build_rule, parse_rule
from core.whatif.segments import (
    CHURN_RISK_DECILE,
    LIFECYCLE_STAGE,
    churn_risk_at_assignment,
    rule_attributes,
    segment_values,
    stages_at_assignment,
)
from core.whatif.user_policies import UserPolicySpec, evaluate_user_policy
from core.whatif.users import parse_outcome
from tests.test_lifecycle import reference_stages

ORIGIN = dt.datetime(2026, 3, 1)


@pytest.fixture(scope="module")
def stage_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 users with histories of every shape before a random assignment time: silent spells of
    random length just before assignment (at risk, dormant, churned), returns after long gaps
    (reactivated), users assigned at their first event (new) or before it (not started), and
    events on the assignment day both before and after the assignment instant."""
    rng = np.random.default_rng(7)
    n = 300
    ids = [f"u{i:03d}" for i in range(n)]
    rows = []
    assigned = []
    for index, user in enumerate(ids):
        when = ORIGIN + dt.timedelta(days=float(rng.uniform(0, 20)))
        assigned.append(when)
        shape = rng.random()
        if shape < 0.1:
            start = when  # assigned at their first event
        elif shape < 0.15:
            start = when + dt.timedelta(hours=float(rng.uniform(1, 48)))  # not started by then
        else:
            start = when - dt.timedelta(days=float(rng.uniform(0.2, 90)))
        silent_from = when - dt.timedelta(days=float(rng.uniform(0, 45)))
        silent_to = silent_from + dt.timedelta(days=float(rng.uniform(0, 40)))
        times = [start]
        for offset in rng.uniform(0, 120, rng.poisson(25)):
            moment = start + dt.timedelta(days=float(offset))
            if not silent_from <= moment < silent_to:
                times.append(moment)
        if rng.random() < 0.3:
            times.append(when - dt.timedelta(minutes=float(rng.uniform(1, 60))))
        if rng.random() < 0.3:
            times.append(when + dt.timedelta(minutes=float(rng.uniform(1, 60))))
        times = [t for t in times if t >= start]
        rows += [(user, t, "view", 0.0, f"s{index}") for t in times]
    events = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name", "revenue", "session_id"])
    treated = rng.random(n) < 0.5
    assignments = pd.DataFrame(
        {
            "user_id": ids,
            "experiment": "exp",
            "variant": np.where(treated, "b", "a"),
            "assigned_time": assigned,
            "propensity": 0.5,
        }
    )
    path = tmp_path_factory.mktemp("segments") / "stages.duckdb"
    write_store(path, events, assignments).close()
    return path


def _stages_by_pandas(path: Path, spec: StageSpec) -> pd.Series:
    """Each user's stage at their assignment instant: the Lifecycle tests' pandas reference at
    the end of the assignment day, fed only the user's events before the instant (and their first
    event, which makes their start); a start after the instant is not started."""
    with Store(path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, event_name FROM events")
        assignments = store.query_df("SELECT user_id, assigned_time FROM assignments")
    no_users = pd.DataFrame({"user_id": [], "country": [], "signup_time": []})
    stages = {}
    for user, instant in zip(assignments["user_id"], assignments["assigned_time"], strict=True):
        own = events[events["user_id"] == user]
        first = own["event_time"].min()
        if first > instant:
            stages[user] = "not_started"
            continue
        seen = own[(own["event_time"] < instant) | (own["event_time"] == first)]
        stages[user] = reference_stages(seen, no_users, spec, instant.date())[user]
    return pd.Series(stages).sort_index()


@pytest.mark.parametrize("spec", [StageSpec(), StageSpec(new_days=3, at_risk_days=4, dormant_days=9)])
def test_stage_at_assignment_matches_pandas(stage_store: Path, spec: StageSpec) -> None:
    with Store(stage_store, read_only=True) as store:
        ours = stages_at_assignment(store, "exp", spec).set_index("user_id")[LIFECYCLE_STAGE]
    expected = _stages_by_pandas(stage_store, spec)
    assert ours.index.tolist() == expected.index.tolist()
    mismatched = ours[ours != expected]
    assert mismatched.empty, pd.DataFrame({"ours": mismatched, "expected": expected[mismatched.index]})
    assert set(expected) == {"new", "active", "reactivated", "at_risk", "dormant", "churned", "not_started"}


def test_stage_at_midnight_is_the_stage_table_stage(stage_store: Path) -> None:
    """At T = D + 1 day 00:00 the per-user stage is ``stage_table``'s stage at the end of D."""
    day = dt.date(2026, 3, 10)
    spec = StageSpec()
    with Store(stage_store, read_only=True) as store:
        instants = "SELECT user_key, CAST(? AS TIMESTAMP) AS as_of_time FROM events GROUP BY user_key"
        sql, params = stages_at_sql(store, spec, instants, [dt.datetime(2026, 3, 11)])
        ours = store.query_df(
            f"SELECT DISTINCT e.user_id, s.stage FROM ({sql}) s JOIN events e ON e.user_key = s.user_key",
            params,
        ).set_index("user_id")["stage"]
        table = pd.concat(
            [
                stage_users(store, spec, Filters(), day, stage).assign(stage=stage)
                for stage in ("new", "active", "reactivated", "at_risk", "dormant", "churned")
            ]
        ).set_index("user_id")["stage"]
    assert (ours[ours != "not_started"].sort_index() == table.sort_index()).all()
    assert len(table) == int((ours != "not_started").sum())


def test_lifecycle_rule_targets_by_stage(stage_store: Path) -> None:
    rule = build_rule([(LIFECYCLE_STAGE, "at_risk", "b"), (LIFECYCLE_STAGE, "dormant", "b")], "a", "risky")
    spec = UserPolicySpec("exp", parse_outcome("events:3"), rule=rule, folds=2, survival_resamples=0)
    with Store(stage_store, read_only=True) as store:
        result = evaluate_user_policy(store, spec)
        frame = store.query_df(
            "SELECT user_id, variant, assigned_time FROM assignments ORDER BY user_id"
        ).set_index("user_id")
    stages = _stages_by_pandas(stage_store, StageSpec())
    target = np.where(stages.isin(["at_risk", "dormant"]), "b", "a")
    assert result.target == "risky"
    assert result.target_share["b"] == pytest.approx(np.mean(target == "b"))
    assert result.rows == len(frame)


def test_rule_refuses_a_stage_no_user_has(stage_store: Path) -> None:
    rule = parse_rule("attribute,value,variant\nlifecycle_stage,at risk,b\n*,*,a\n", "r.csv")
    spec = UserPolicySpec("exp", parse_outcome("events:3"), rule=rule, folds=2)
    with (
        Store(stage_store, read_only=True) as store,
        pytest.raises(TenureError, match=r"line 2: no user .* 'at risk'"),
    ):
        evaluate_user_policy(store, spec)


def test_build_rule_round_trips_and_checks() -> None:
    rule = build_rule([("plan", "pro, annual", "b"), (CHURN_RISK_DECILE, "10", "b")], "a")
    assert parse_rule(rule.to_text()) == rule
    assert rule.segments == (CHURN_RISK_DECILE,)
    with pytest.raises(TenureError, match="only allowed in the default"):
        build_rule([("plan", "*", "b")], "a")


# --- churn-risk deciles from a tiny model ----------------------------------------------------

RISK_DAYS = pd.date_range("2026-03-02", periods=3, freq="D")


@pytest.fixture(scope="module")
def risk_store(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated store plus experiment ``risk``: 150 users who started before 2026-02-01,
    assigned at random times on three days with a propensity of b that differs between users
    (0.3 or 0.6), and one user assigned at their first event, after 2026-03-04 (not scored)."""
    path = copy_store(small_store_path, tmp_path_factory.mktemp("risk") / "risk.duckdb")
    with Store(path) as store:
        late, late_first = store.query_one(
            "SELECT user_id, min(event_time) FROM events GROUP BY user_id "
            "HAVING min(event_time) > '2026-03-04' ORDER BY user_id LIMIT 1"
        )
        users = store.query_df(
            "SELECT user_id FROM events GROUP BY user_id HAVING min(event_time) < '2026-02-01' "
            "ORDER BY user_id LIMIT 150"
        )["user_id"].tolist()
        rng = np.random.default_rng(11)
        rows = []
        for index, user in enumerate(users):
            p = 0.3 if index % 3 == 0 else 0.6
            variant = "b" if rng.random() < p else "a"
            when = RISK_DAYS[index % 3] + pd.Timedelta(seconds=int(rng.integers(0, 86_400)))
            rows.append((user, "risk", variant, when.to_pydatetime(), p if variant == "b" else 1 - p))
        rows.append((late, "risk", "a", late_first, 0.5))
        with store.transaction() as cursor:
            cursor.executemany(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
    return path


@pytest.fixture(scope="module")
def risk_model(risk_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(risk_store, tmp_path_factory.mktemp("risk_model"), ("gbm",)) / "gbm"


def test_churn_risk_deciles_match_scoring_each_day(risk_store: Path, risk_model: Path) -> None:
    messages: list[str] = []
    with Store(risk_store, read_only=True) as store:
        ours = churn_risk_at_assignment(store, "risk", risk_model, lambda f, m: messages.append(m)).set_index(
            "user_id"
        )
        assignments = store.query_df(
            "SELECT user_id, assigned_time FROM assignments WHERE experiment = 'risk'"
        ).set_index("user_id")
        expected = {}
        for day in RISK_DAYS:
            everyone = score_model(store, risk_model, day.to_pydatetime()).set_index("user_id")["churn_prob"]
            mine = assignments.index[assignments["assigned_time"].dt.normalize() == day]
            expected.update({user: everyone[user] for user in mine if user in everyone.index})
    expected = pd.Series(expected).sort_index()
    assert (ours["as_of"] <= assignments["assigned_time"].reindex(ours.index)).all()
    scored = ours[ours["status"] == "scored"]
    assert scored.index.tolist() == expected.index.tolist()
    np.testing.assert_allclose(scored["churn_prob"], expected, rtol=1e-9)
    deciles = np.ceil(10 * rankdata(expected.to_numpy(), method="average") / len(expected))
    np.testing.assert_array_equal(scored[CHURN_RISK_DECILE].to_numpy(), deciles)
    assert ours.loc[ours["status"] != "scored", CHURN_RISK_DECILE].isna().all()
    assert (ours["status"] == "not_in_population").sum() == 1
    assert messages[-1] == f"scored {len(scored)} users"


def events_rule_spec(rule: Rule, model: Path) -> UserPolicySpec:
    """7-day events under a decile rule on the ``risk`` experiment, cheap: 2 folds, no survival."""
    return UserPolicySpec(
        "risk", parse_outcome("events:7"), rule=rule, folds=2, model_dir=str(model), survival_resamples=0
    )


def test_decile_rule_value_matches_numpy(risk_store: Path, risk_model: Path) -> None:
    with Store(risk_store, read_only=True) as store:
        risk = churn_risk_at_assignment(store, "risk", risk_model).set_index("user_id")
        high = sorted(d for d in risk[CHURN_RISK_DECILE].dropna().unique() if d >= 6)
        rule = build_rule([(CHURN_RISK_DECILE, str(int(d)), "b") for d in high], "a", "riskiest")
        spec = events_rule_spec(rule, risk_model)
        result = evaluate_user_policy(store, spec)
        frame = store.query_df(
            "SELECT a.user_id, a.variant, a.propensity, count(e.user_id) AS y FROM assignments a "
            "LEFT JOIN events e ON e.user_id = a.user_id AND e.event_time >= a.assigned_time "
            "AND e.event_time < a.assigned_time + INTERVAL 7 DAY WHERE a.experiment = 'risk' "
            "GROUP BY ALL ORDER BY a.user_id"
        ).set_index("user_id")
    target = np.where(risk[CHURN_RISK_DECILE].reindex(frame.index) >= 6, "b", "a")
    assert 0 < np.mean(target == "b") < 1
    p_target = np.where(frame["variant"] == target, frame["propensity"], 1 - frame["propensity"])
    weight = (frame["variant"] == target) / p_target
    assert result.rows == len(frame)
    assert result.estimate("ipw").value == pytest.approx(np.mean(weight * frame["y"]))
    assert result.target_share["b"] == pytest.approx(np.mean(target == "b"))


def test_decile_rule_without_model_is_refused(risk_store: Path, tmp_path: Path, capsys) -> None:
    rule_file = tmp_path / "risky.csv"
    rule_file.write_text("attribute,value,variant\nchurn_risk_decile,10,b\n*,*,a\n")
    code = main(
        [
            *("whatif-users", "--db", str(risk_store), "--experiment", "risk"),
            *("--rule", str(rule_file), "--outcome", "events:7"),
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1
    assert "churn_risk_decile" in error and "--model" in error


def test_whatif_users_takes_the_risk_model_by_its_registry_id(
    risk_store: Path, risk_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_store(risk_store, tmp_path / "registered.duckdb")
    with Store(path) as store:
        (model_id,) = registry.register(store, risk_model.parent)
        riskiest = rule_attributes(store, "risk", str(risk_model))[CHURN_RISK_DECILE][-1]
    rule_file = tmp_path / "risky.csv"
    rule_file.write_text(f"attribute,value,variant\n{CHURN_RISK_DECILE},{riskiest},b\n*,*,a\n")
    common = ["whatif-users", "--db", str(path), "--experiment", "risk", "--rule", str(rule_file)]
    common += ["--outcome", "events:7", "--format", "json", "--model"]
    outputs = []
    for model in (str(risk_model), model_id):
        assert main([*common, model]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]


def test_rule_attributes_lists_segments(risk_store: Path, risk_model: Path) -> None:
    with Store(risk_store, read_only=True) as store:
        plain = rule_attributes(store, "risk")
        with_model = rule_attributes(store, "risk", str(risk_model))
        stages = stages_at_assignment(store, "risk")
        countries = store.query_df(
            "SELECT DISTINCT country FROM users JOIN assignments USING (user_id) WHERE experiment = 'risk'"
        )
        risk = churn_risk_at_assignment(store, "risk", risk_model)
    assert CHURN_RISK_DECILE not in plain
    assert plain["country"] == sorted(countries["country"].dropna())
    assert set(plain[LIFECYCLE_STAGE]) == set(stages[LIFECYCLE_STAGE])
    deciles = sorted(int(d) for d in risk[CHURN_RISK_DECILE].dropna().unique())
    assert with_model[CHURN_RISK_DECILE] == [str(d) for d in deciles]
    assert len(deciles) > 1


def test_cli_lifecycle_rule_with_survival_interval(stage_store: Path, tmp_path: Path, capsys) -> None:
    rule_file = tmp_path / "stage.csv"
    rule_file.write_text("attribute,value,variant\nlifecycle_stage,new,b\n*,*,a\n")
    code = main(
        [
            *("whatif-users", "--db", str(stage_store), "--experiment", "exp", "--rule", str(rule_file)),
            *("--outcome", "events:3", "--folds", "2", "--format", "json", "--details"),
        ]
    )
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert payload["target"] == "stage.csv"
    stages = _stages_by_pandas(stage_store, StageSpec())
    assert payload["target_share"]["b"] == pytest.approx(np.mean(stages == "new"))
    record = payload["survival"][0]
    assert list(record) == ["policy", "day", "survival", "ci_low", "ci_high"]
    assert record["ci_low"] <= record["survival"] <= record["ci_high"]


def test_precomputed_segments_are_used_as_given(
    risk_store: Path, risk_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page scores deciles once and passes them to every outcome: no second scoring."""
    with Store(risk_store, read_only=True) as store:
        known = segment_values(store, "risk", [LIFECYCLE_STAGE, CHURN_RISK_DECILE], risk_model)
        top = max(known[CHURN_RISK_DECILE].dropna(), key=int)
        rule = build_rule([(CHURN_RISK_DECILE, top, "b")], "a", "riskiest")
        spec = events_rule_spec(rule, risk_model)
        expected = evaluate_user_policy(store, spec)

        def no_scoring(*args: object, **kwargs: object) -> None:
            raise AssertionError("segments were computed again")

        monkeypatch.setattr(user_policies, "segment_values", no_scoring)
        given = evaluate_user_policy(store, spec, segments=known)
    assert given.estimates == expected.estimates
    assert given.target_share == expected.target_share
