"""The Experiments page, run headless with AppTest over a small hand-made experiment store.

The store holds two experiments: ``checkout_flow`` (an even split; treatment raises the purchase
probability) and ``signup_broken`` (twice as many control users as treatment users against an
intended even split: a sample ratio mismatch). Expected numbers come from the frames written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_helpers import APP, TIMEOUT, open_page, open_tab, table_with
from experiment_helpers import write_store
from lifelines.statistics import multivariate_logrank_test
from streamlit.testing.v1 import AppTest

PAGE = "pages/experiments/experiments.py"
ORIGIN = dt.datetime(2026, 1, 1)
USERS = 600
GOOD = "checkout_flow"
BROKEN = "signup_broken"


def build_frames(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Events from 14 days before to 40 days after each user's assignment to ``GOOD``."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:04d}" for i in range(USERS)])
    variant = np.where(np.arange(USERS) % 2 == 0, "control", "treatment")
    assigned = pd.to_datetime(ORIGIN) + pd.to_timedelta(rng.uniform(0, 20, USERS), unit="D")
    rate = rng.gamma(2.0, 0.5, USERS)
    counts = rng.poisson(rate * 54)
    owner = np.repeat(np.arange(USERS), counts)
    offsets = rng.uniform(-14, 40, owner.size)
    treated = (offsets >= 0) & (variant[owner] == "treatment")
    purchase = rng.random(owner.size) < np.where(treated, 0.1, 0.08)
    # Treatment also keeps users a little more active after assignment: control loses 8% of those events.
    kept = ~((offsets >= 0) & (variant[owner] == "control") & (rng.random(owner.size) < 0.08))
    owner, offsets, purchase = owner[kept], offsets[kept], purchase[kept]
    events = pd.DataFrame(
        {
            "user_id": ids[owner],
            "event_time": assigned[owner] + pd.to_timedelta(offsets, unit="D"),
            "event_name": np.where(
                purchase, "purchase", np.where(rng.random(owner.size) < 0.5, "view", "click")
            ),
            "revenue": np.where(purchase, rng.gamma(2.0, 10.0, owner.size), 0.0),
            "session_id": [f"s{o}-{int(e // 2)}" for o, e in zip(owner, offsets, strict=True)],
        }
    )
    good = pd.DataFrame(
        {"user_id": ids, "experiment": GOOD, "variant": variant, "assigned_time": assigned, "propensity": 0.5}
    )
    broken_ids = ids[:300]
    broken = pd.DataFrame(
        {
            "user_id": broken_ids,
            "experiment": BROKEN,
            "variant": np.where(np.arange(300) < 200, "control", "treatment"),
            "assigned_time": assigned[:300],
            "propensity": 0.5,
        }
    )
    users = pd.DataFrame({"user_id": ids, "country": np.where(np.arange(USERS) % 3 == 0, "US", "DE")})
    return events, pd.concat([good, broken], ignore_index=True), users


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return build_frames()


@pytest.fixture(scope="module")
def experiment_store(tmp_path_factory: pytest.TempPathFactory, frames) -> Path:
    path = tmp_path_factory.mktemp("experiments") / "experiments.duckdb"
    events, assignments, users = frames
    write_store(path, events, assignments, users).close()
    return path


@pytest.fixture
def exp_app(experiment_store: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TENURE_DB", str(experiment_store))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def results_table(at: AppTest) -> pd.DataFrame:
    return table_with(at, "metric", "variant", "control value", "abs diff [95% CI]", "p-value")


def adjusted(at: AppTest, correction: str) -> list[float]:
    column = f"adjusted p ({correction})"
    return [0.0 if text == "<0.0001" else float(text) for text in results_table(at)[column]]


def direct_conversion(frames, variant: str, days: int = 14) -> float:
    """Share of ``GOOD``'s users of ``variant`` with a purchase within ``days`` of assignment."""
    events, assignments, _ = frames
    arm = assignments[(assignments["experiment"] == GOOD) & (assignments["variant"] == variant)]
    joined = events.merge(arm[["user_id", "assigned_time"]], on="user_id")
    elapsed = (joined["event_time"] - joined["assigned_time"]) / pd.Timedelta(days=1)
    hit = joined[(joined["event_name"] == "purchase") & (elapsed >= 0) & (elapsed < days)]
    return hit["user_id"].nunique() / len(arm)


def test_page_lists_experiments_and_reviews_the_first(exp_app: AppTest, frames) -> None:
    open_page(exp_app, PAGE)
    assert [title.value for title in exp_app.title] == ["Experiments"]
    listing = table_with(exp_app, "experiment", "status", "variants", "users", "SRM check")
    _, assignments, _ = frames
    assert listing["experiment"].tolist() == [GOOD, BROKEN]
    assert listing["users"].tolist() == [
        int((assignments["experiment"] == GOOD).sum()),
        int((assignments["experiment"] == BROKEN).sum()),
    ]
    assert listing["SRM check"].tolist() == ["passed", "failed"]
    assert exp_app.selectbox(key="exp_experiment").value == GOOD
    assert any("Sample ratio check passed" in box.value for box in exp_app.success)
    assert not any("cannot be trusted" in box.value for box in exp_app.error)
    summary = [block.value for block in exp_app.markdown if "Variant treatment" in block.value]
    assert summary and "7 tests (7 metrics x 1 variant comparison) were Holm-adjusted" in summary[0]
    table = results_table(exp_app).set_index("metric")
    moved = [metric for metric, p in zip(table.index, adjusted(exp_app, "Holm"), strict=True) if p < 0.05]
    assert moved, "the planted effect should move a metric"
    for metric in table.index:
        assert (f"raised {metric} by" in summary[0] or f"lowered {metric} by" in summary[0]) == (
            metric in moved
        )
    row = table.loc["conversion to purchase within 14 days"]
    assert row["control value"] == f"{direct_conversion(frames, 'control'):.1%}"
    assert row["variant value"] == f"{direct_conversion(frames, 'treatment'):.1%}"
    assert "always-valid 95% CI (for daily peeking)" in table.columns
    assert "CUPED variance reduction" not in table.columns
    assert len(exp_app.get("plotly_chart")) == 1, "only the open tab (Results) runs"
    assert exp_app.query_params.get("experiment") == GOOD
    assert exp_app.query_params.get("correction") == "holm"
    assert exp_app.query_params.get("tab") == "results"


def test_cuped_and_correction_change_the_adjusted_p_values(exp_app: AppTest) -> None:
    open_page(exp_app, PAGE)
    holm = adjusted(exp_app, "Holm")
    exp_app.toggle(key="exp_cuped").set_value(True).run()
    assert not exp_app.exception, exp_app.exception
    table = results_table(exp_app)
    assert "CUPED variance reduction" in table.columns
    reduction = table.set_index("metric").loc["events per user over 14 days", "CUPED variance reduction"]
    assert reduction != "not applied" and float(reduction.rstrip("%")) > 0
    cuped_holm = adjusted(exp_app, "Holm")
    assert cuped_holm != holm
    exp_app.selectbox(key="exp_correction").set_value("bh").run()
    assert not exp_app.exception, exp_app.exception
    assert "adjusted p (Holm)" not in results_table(exp_app).columns
    bh = adjusted(exp_app, "Benjamini-Hochberg")
    assert all(b <= h + 1e-12 for b, h in zip(bh, cuped_holm, strict=True))
    assert bh != cuped_holm
    assert exp_app.query_params.get("cuped") == "1" and exp_app.query_params.get("correction") == "bh"


def test_sample_ratio_mismatch_shows_the_banner(exp_app: AppTest) -> None:
    open_page(exp_app, PAGE)
    exp_app.selectbox(key="exp_experiment").set_value(BROKEN).run()
    assert not exp_app.exception, exp_app.exception
    banners = [box.value for box in exp_app.error if "cannot be trusted" in box.value]
    assert banners and "control 200, treatment 100" in banners[0]
    assert not any("Sample ratio check passed" in box.value for box in exp_app.success)
    assert any("sample ratio check failed" in block.value for block in exp_app.markdown)


def test_controls_come_from_the_url(exp_app: AppTest) -> None:
    exp_app.query_params.update(
        {
            "experiment": BROKEN,
            "metrics": "revenue,retention:7",
            "days": "7",
            "winsorize": "99",
            "segment": "country",
            "inactivity": "14",
        }
    )
    exp_app.switch_page(PAGE).run()
    assert not exp_app.exception, exp_app.exception
    assert exp_app.selectbox(key="exp_experiment").value == BROKEN
    assert exp_app.multiselect(key="exp_metrics").value == ["revenue", "retention:7"]
    assert exp_app.number_input(key="exp_days").value == 7
    table = results_table(exp_app)
    assert table["metric"].tolist() == ["revenue per user over 7 days", "day-7 retention"]
    assert exp_app.query_params.get("winsorize") == "99"
    # The closed survival tab's control keeps its URL value, and the tab opens with it.
    assert exp_app.query_params.get("inactivity") == "14"
    open_tab(exp_app, "exp_tab", "Retention & survival")
    assert exp_app.number_input(key="exp_inactivity").value == 14.0
    assert exp_app.query_params.get("tab") == "survival"


def test_the_open_tab_comes_from_the_url(exp_app: AppTest) -> None:
    exp_app.query_params.update({"tab": "segments", "segment": "country"})
    exp_app.switch_page(PAGE).run()
    assert not exp_app.exception, exp_app.exception
    assert exp_app.selectbox(key="exp_segment").value == "country"
    segments = table_with(exp_app, "segment", "users", "metric", "adjusted p (Benjamini-Hochberg)")
    assert set(segments["segment"]) == {"US", "DE"}
    assert exp_app.query_params.get("tab") == "segments"


def test_an_unknown_tab_in_the_url_is_reported(exp_app: AppTest) -> None:
    exp_app.query_params.update({"tab": "nonsense"})
    exp_app.switch_page(PAGE).run()
    assert not exp_app.exception, exp_app.exception
    assert any("tab=nonsense" in box.value for box in exp_app.warning)
    assert not results_table(exp_app).empty
    assert exp_app.query_params.get("tab") == "results"


def test_segments_and_planning_tabs(exp_app: AppTest) -> None:
    open_page(exp_app, PAGE)
    open_tab(exp_app, "exp_tab", "Segments")
    assert exp_app.query_params.get("tab") == "segments"
    assert any("Sample ratio check passed" in box.value for box in exp_app.success), "shown above the tabs"
    results_shown = [
        frame
        for frame in exp_app.dataframe
        if "abs diff [95% CI]" in frame.value.columns and "segment" not in frame.value.columns
    ]
    assert not results_shown, "the closed Results tab does not run"
    segments = table_with(exp_app, "segment", "users", "metric", "adjusted p (Benjamini-Hochberg)")
    assert set(segments["segment"]) == {"US", "DE"}
    heterogeneity = table_with(exp_app, "metric", "variant", "segments", "q", "p_value", "i_squared")
    assert len(heterogeneity) == len(exp_app.multiselect(key="exp_metrics").value)
    assert any("tests were run" in box.value for box in exp_app.warning)
    open_tab(exp_app, "exp_tab", "Planning")
    mde = table_with(exp_app, "metric", "7 days", "14 days", "28 days", "56 days")
    assert len(mde) == len(heterogeneity)
    needed = table_with(exp_app, "metric", "rel_effect", "users_per_arm", "days")
    assert (needed["rel_effect"] == 0.05).all()
    exp_app.number_input(key="exp_plan_effect").set_value(10.0).run()
    assert not exp_app.exception, exp_app.exception
    larger = table_with(exp_app, "metric", "rel_effect", "users_per_arm", "days")
    assert (larger["users_per_arm"] < needed["users_per_arm"]).all()
    assert exp_app.query_params.get("segment") == "country"
    open_tab(exp_app, "exp_tab", "Predicted LTV")
    assert any("No registered model" in box.value for box in exp_app.info)


def test_store_without_assignments_explains_how_to_load_them(app: AppTest) -> None:
    open_page(app, PAGE)
    assert any("no experiments" in box.value for box in app.info)
    assert not app.dataframe


def direct_churn(frames, inactivity_days: float = 30.0) -> pd.DataFrame:
    """Per assigned user: variant, duration from assignment and churned, by the inactivity rule in pandas."""
    events, assignments, _ = frames
    arm = assignments[assignments["experiment"] == GOOD]
    end = events["event_time"].max()
    joined = events.merge(arm[["user_id", "assigned_time"]], on="user_id")
    after = joined[joined["event_time"] >= joined["assigned_time"]]
    last = after.groupby("user_id")["event_time"].max()
    users = arm.set_index("user_id")
    last = last.reindex(users.index).fillna(users["assigned_time"])
    churned = last <= end - pd.Timedelta(days=inactivity_days)
    stop = last.where(churned, end)
    duration = (stop - users["assigned_time"]) / pd.Timedelta(days=1)
    return pd.DataFrame({"variant": users["variant"], "duration": duration, "churned": churned})


def direct_logrank_p(frames, inactivity_days: float = 30.0) -> float:
    """lifelines' log-rank over ``direct_churn``'s durations."""
    churn = direct_churn(frames, inactivity_days)
    return float(multivariate_logrank_test(churn["duration"], churn["variant"], churn["churned"]).p_value)


def test_survival_tab_compares_variants_from_assignment(exp_app: AppTest, frames) -> None:
    open_page(exp_app, PAGE)
    open_tab(exp_app, "exp_tab", "Retention & survival")
    shown = [metric.value for metric in exp_app.metric if metric.label == "Log-rank p (all variants)"]
    expected = direct_logrank_p(frames)
    assert shown == ["<0.0001" if expected < 0.0001 else f"{expected:.4f}"]
    per_variant = direct_churn(frames).groupby("variant")["churned"].agg(["sum", "size"])
    assert {
        metric.label: metric.value for metric in exp_app.metric if metric.label.startswith("Churned: ")
    } == {
        f"Churned: {variant}": f"{row['sum']:,} of {row['size']:,}" for variant, row in per_variant.iterrows()
    }
    rmst = table_with(exp_app, "variant", "RMST (days)", "control RMST (days)", "difference [95% CI]")
    assert rmst["variant"].tolist() == ["treatment"]
    retention = table_with(exp_app, "variant", "day", "eligible", "retained", "rate")
    assert retention["day"].max() <= 60
    exp_app.number_input(key="exp_inactivity").set_value(7.0).run()
    assert not exp_app.exception, exp_app.exception
    shown = [metric.value for metric in exp_app.metric if metric.label == "Log-rank p (all variants)"]
    expected = direct_logrank_p(frames, 7.0)
    assert shown == ["<0.0001" if expected < 0.0001 else f"{expected:.4f}"]
    assert exp_app.query_params.get("inactivity") == "7"
