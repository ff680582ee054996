"""Segment breakdowns: each segment's row against a review of a store holding only that
segment's users and against scipy on the per-user values; Benjamini-Hochberg against statsmodels;
Cochran's Q against statsmodels' meta-analysis and a numpy hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import NONE_LABEL, BuiltExperiment, build_experiment_store, write_store
from scipy import stats
from statsmodels.stats import meta_analysis, multitest

from core.errors import TenureError
from core.experiments.analysis import Options, review
from core.experiments.metrics import Design, parse_metrics, user_values
from core.experiments.segments import DEFAULT_MIN_USERS, cochran_q, segment_review
from core.store import Store

METRICS = "conversion:purchase,retention:7,revenue,revenue_per_session"
DESIGN = Design("exp", tuple(parse_metrics(METRICS)), days=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltExperiment:
    return build_experiment_store(tmp_path_factory.mktemp("segments") / "seg.duckdb")


@pytest.fixture(scope="module")
def by_country(built: BuiltExperiment) -> pd.DataFrame:
    with Store(built.path, read_only=True) as store:
        return segment_review(store, DESIGN, attribute="country").results


def test_segments_are_the_users_attribute_with_none_for_missing(
    built: BuiltExperiment, by_country: pd.DataFrame
) -> None:
    expected = built.segment.value_counts()
    ours = by_country.drop_duplicates("segment").set_index("segment")["segment_users"]
    assert set(ours.index) == set(expected.index)
    assert ours.to_dict() == expected.to_dict()
    assert list(ours.index)[-1] == NONE_LABEL, "(none) is shown last"
    assert expected[NONE_LABEL] > 0


def test_each_segment_matches_a_review_of_only_its_users(
    built: BuiltExperiment, by_country: pd.DataFrame
) -> None:
    """Rebuild a store per segment from the frames (the sentinel event keeps the data end) and
    review it: every value, interval and raw p-value of tested rows must agree."""
    compared = ["control_value", "variant_value", "abs_diff", "rel_diff", "control_users", "variant_users"]
    for segment, members in built.segment.groupby(built.segment):
        users = set(members.index)
        events = built.events[built.events["user_id"].isin(users | {"sentinel"})]
        assignments = built.assignments[built.assignments["user_id"].isin(users)]
        with write_store(":memory:", events, assignments) as store:
            expected = review(store, DESIGN).results.set_index("metric")
        ours = by_country[by_country["segment"] == segment].set_index("metric")
        for metric in expected.index:
            row, reference = ours.loc[metric], expected.loc[metric]
            for column in compared:
                assert row[column] == pytest.approx(reference[column], rel=1e-9, nan_ok=True), (
                    segment,
                    metric,
                )
            if row["tested"]:
                for column in ("ci_low", "ci_high", "p_value", "se"):
                    assert row[column] == pytest.approx(reference[column], rel=1e-9), (
                        segment,
                        metric,
                        column,
                    )


def test_segment_tests_match_scipy_on_the_per_user_values(
    built: BuiltExperiment, by_country: pd.DataFrame
) -> None:
    """Welch's t for revenue and the unpooled two-proportion z for conversion, per segment."""
    with Store(built.path, read_only=True) as store:
        values = user_values(store, DESIGN).set_index("user_id")
    values["segment"] = built.segment.reindex(values.index)
    tested = by_country[by_country["tested"]].set_index(["segment", "metric"])
    checked = 0
    for segment, part in values.groupby("segment"):
        control, treatment = part[part["variant"] == "control"], part[part["variant"] == "treatment"]
        if (segment, "revenue") not in tested.index:
            continue
        welch = stats.ttest_ind(treatment["m2"], control["m2"], equal_var=False)
        assert tested.loc[(segment, "revenue"), "p_value"] == pytest.approx(welch.pvalue, rel=1e-6)
        p_c, p_t = control["m0"].mean(), treatment["m0"].mean()
        se = np.sqrt(p_c * (1 - p_c) / len(control) + p_t * (1 - p_t) / len(treatment))
        z_p = 2 * stats.norm.sf(abs(p_t - p_c) / se)
        assert tested.loc[(segment, "conversion:purchase"), "p_value"] == pytest.approx(z_p, rel=1e-6)
        checked += 1
    assert checked >= 3


def test_small_segments_are_shown_without_a_test(built: BuiltExperiment, by_country: pd.DataFrame) -> None:
    per_arm = by_country[["control_users", "variant_users"]].min(axis=1)
    small = per_arm < DEFAULT_MIN_USERS
    assert small.any() and (~small).any()
    assert not by_country.loc[small, "tested"].any()
    assert by_country.loc[small, ["p_value", "p_adjusted", "ci_low", "ci_high"]].isna().all().all()
    assert by_country.loc[small, "variant_value"].notna().all(), "values are still shown"
    assert by_country.loc[~small, "p_value"].notna().all()
    with Store(built.path, read_only=True) as store:
        everything = segment_review(store, DESIGN, attribute="country", min_users=2)
    assert everything.results["tested"].all()


def test_p_values_are_benjamini_hochberg_over_every_test(by_country: pd.DataFrame) -> None:
    tested = by_country[by_country["tested"]]
    expected = multitest.multipletests(tested["p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(tested["p_adjusted"], expected, rtol=1e-9)
    assert len(tested) >= 12


def test_cochran_q_against_statsmodels_and_a_hand_computation(by_country: pd.DataFrame) -> None:
    for metric, part in by_country[by_country["tested"]].groupby("metric"):
        d, se = part["abs_diff"].to_numpy(), part["se"].to_numpy()
        q, df, p_value, i_squared, pooled = cochran_q(d, se)
        w = 1 / se**2
        hand_pooled = (w * d).sum() / w.sum()
        hand_q = sum(wi * (di - hand_pooled) ** 2 for wi, di in zip(w, d, strict=True))
        assert q == pytest.approx(hand_q, rel=1e-9) and pooled == pytest.approx(hand_pooled, rel=1e-9)
        assert df == len(d) - 1 and p_value == pytest.approx(1 - stats.chi2.cdf(hand_q, len(d) - 1), rel=1e-6)
        combined = meta_analysis.combine_effects(d, se**2)
        assert q == pytest.approx(combined.q, rel=1e-9), metric
        assert i_squared == pytest.approx(max(combined.i2, 0.0), abs=1e-9), metric  # I^2 is truncated at 0


def test_heterogeneity_finds_the_planted_segment_effect(built: BuiltExperiment) -> None:
    """Treatment raises purchases of BR users only: conversion's effect differs across countries."""
    with Store(built.path, read_only=True) as store:
        result = segment_review(store, DESIGN, Options(cuped=True), attribute="country")
    het = result.heterogeneity.set_index("metric")
    assert het.loc["conversion:purchase", "p_value"] < 0.001
    assert het.loc["conversion:purchase", "segments"] == 3
    brazil = result.results.set_index(["segment", "metric"]).loc[("BR", "conversion:purchase")]
    assert brazil["p_adjusted"] < 0.05 and brazil["ci_low"] > 0
    text = " ".join(result.warnings)
    assert f"{result.tests} tests were run" in text and "hypothesis" in text and "Cochran" in text


def test_unknown_attribute_is_refused(built: BuiltExperiment) -> None:
    with Store(built.path, read_only=True) as store, pytest.raises(TenureError, match="'signup_time'"):
        segment_review(store, DESIGN, attribute="signup_time")
    with Store(built.path, read_only=True) as store, pytest.raises(TenureError, match="not a column"):
        segment_review(store, DESIGN, attribute='country" OR 1=1 --')


def test_cochran_q_needs_two_segments() -> None:
    q, df, p_value, _, _ = cochran_q(np.array([0.1]), np.array([0.05]))
    assert np.isnan(q) and df == 0 and np.isnan(p_value)


def test_sample_store_platform_breakdown(tmp_path: Path) -> None:
    """On the sample store every platform of checkout_button_color is large enough to test."""
    path = Path(__file__).resolve().parents[1] / "sample_data" / "tenure.duckdb"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make sample-data` (make test builds it)")
    with Store(path, read_only=True) as store:
        result = segment_review(
            store, Design("checkout_button_color", tuple(parse_metrics("retention:7"))), attribute="platform"
        )
    assert set(result.segments) == {"android", "ios", "web"}
    assert result.results["tested"].all() and result.tests == 3
    assert (result.results["segment_users"].sum()) == result.users.total_users


def test_a_segment_with_one_arm_only_is_shown_untested(built: BuiltExperiment) -> None:
    """Relabel a few control users to a country no treatment user has: its row has the control's
    value, no variant value and no test, with or without CUPED."""
    assignments = built.assignments
    chosen = assignments.loc[assignments["variant"] == "control", "user_id"].iloc[:30]
    users = built.segment.rename("country").rename_axis("user_id").reset_index()
    users["country"] = np.where(users["user_id"].isin(chosen), "XX", users["country"])
    with write_store(":memory:", built.events, assignments, users) as store:
        for cuped in (False, True):
            result = segment_review(store, DESIGN, Options(cuped=cuped), attribute="country")
            lone = result.results[result.results["segment"] == "XX"]
            assert len(lone) == len(DESIGN.metrics) and not lone["tested"].any()
            assert (lone["variant_users"] == 0).all() and lone["variant_value"].isna().all()
            assert lone["control_value"].notna().all()
