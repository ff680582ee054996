"""The What-if page's click-rate tab: a target recommendation policy's click rate per shown slot,
estimated off-policy from the recommendations log (core/whatif/evaluate.py), with the user-level
estimate beside a logged policy's row-level one. Definitions: docs/METRICS.md, "What-if".
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core import figures_whatif
from core.errors import TenureError
from core.store import Store
from core.whatif import diagnostics
from core.whatif.estimators import ESTIMATORS
from core.whatif.evaluate import WhatIfResult, WhatIfSpec
from pages.shared import cached_whatif, ui, url_params

TARGET_KINDS = {
    "uniform": "Uniform over the logged items",
    "popularity": "Popularity (best click rate first)",
    "greedy": "Greedy (reward model, 10% exploration)",
    "policy": "A logged policy",
    "file": "Upload probabilities (CSV)",
    "mix": "Mixture of two",
}
SIMPLE_TARGETS = ("uniform", "popularity", "greedy")
ALL_ROWS = "(all rows)"
DEFAULT_ESTIMATORS = ("ipw", "snipw", "dr")
DEFAULT_RESAMPLES = 200
# The user-level click rate beside a logged policy's row-level one: every slot from assignment to the
# data's end, as the simulator's truth.policy_values.click_rate counts them.
USER_CLICK_RATE = "click_rate:all"
DONE_KEY = "wi_click_done"


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _upload_path(upload, suffix: str) -> Path:
    """The upload saved under a name made of its content's hash: a stable cache key for that content."""
    data = upload.getvalue()
    path = Path(tempfile.gettempdir()) / f"tenure_whatif_{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path


def _click_controls(policies: list[str], params: dict[str, str]) -> tuple[WhatIfSpec | None, str | None]:
    """The per-recommendation what-if's spec (None until a file is uploaded) and the uploaded name."""
    logs = [ALL_ROWS, *policies]
    simple = [*SIMPLE_TARGETS, *(f"policy:{name}" for name in policies)]
    ui.seed_control("wi_log", policies[0], param="log", parse=url_params.choice(logs, "log"))
    ui.seed_control(
        "wi_target", "policy", param="target", parse=url_params.choice(tuple(TARGET_KINDS), "target")
    )
    ui.seed_control(
        "wi_target_policy",
        policies[-1],
        param="target_policy",
        parse=url_params.choice(policies, "target_policy"),
    )
    ui.seed_control("wi_mix_a", "uniform", param="mix_a", parse=url_params.choice(simple, "mix_a"))
    ui.seed_control("wi_mix_b", simple[-1], param="mix_b", parse=url_params.choice(simple, "mix_b"))
    ui.seed_control("wi_mix_weight", 0.5, param="mix_w", parse=_share)
    ui.seed_control(
        "wi_estimators",
        list(DEFAULT_ESTIMATORS),
        param="estimators",
        parse=url_params.names(ESTIMATORS, "estimator"),
    )
    ui.seed_control("wi_resamples", DEFAULT_RESAMPLES, param="resamples", parse=url_params.whole(10, 5000))
    ui.seed_control("wi_seed", 0, param="seed", parse=url_params.whole(0, 2**31 - 1))
    first, second, third = st.columns([1, 1.4, 1])
    log = first.selectbox(
        "Logged rows of", logs, key="wi_log", help="The rows of the recommendations log to read."
    )
    kind = second.selectbox(
        "Target policy", tuple(TARGET_KINDS), key="wi_target", format_func=TARGET_KINDS.__getitem__
    )
    estimators = third.multiselect(
        "Estimators",
        ESTIMATORS,
        key="wi_estimators",
        help="ipw, snipw (self-normalised): weights only; dm: reward model only; dr, sndr: both (doubly robust).",
    )
    target: str | None = kind
    uploaded = None
    if kind == "policy":
        target = "policy:" + st.selectbox("Logged policy as the target", policies, key="wi_target_policy")
    elif kind == "mix":
        left, middle, right = st.columns(3)
        a = left.selectbox("Policy A", simple, key="wi_mix_a")
        b = middle.selectbox("Policy B", simple, key="wi_mix_b")
        weight = right.slider("Share of A", 0.0, 1.0, step=0.05, key="wi_mix_weight")
        target = f"mix:{a},{b},{weight:g}"
    elif kind == "file":
        upload = st.file_uploader(
            "Target probabilities: CSV with item_id,position,probability (each position sums to 1)",
            type=["csv"],
            key="wi_target_file",
        )
        target = f"file:{_upload_path(upload, '.csv')}" if upload is not None else None
        uploaded = upload.name if upload is not None else None
    left, right = st.columns(2)
    resamples = left.number_input(
        "Bootstrap resamples", min_value=10, max_value=5000, step=50, key="wi_resamples"
    )
    seed = right.number_input("Seed", min_value=0, step=1, key="wi_seed")
    params.update(
        log=log,
        target=kind,
        estimators=",".join(estimators),
        resamples=str(int(resamples)),
        seed=str(int(seed)),
    )
    if kind == "policy":
        params["target_policy"] = st.session_state["wi_target_policy"]
    if kind == "mix":
        params.update(mix_a=a, mix_b=b, mix_w=f"{weight:g}")
    if target is None or not estimators:
        return None, uploaded
    spec = WhatIfSpec(
        target=target,
        log_policy=None if log == ALL_ROWS else log,
        estimators=tuple(estimators),
        seed=int(seed),
        resamples=int(resamples),
    )
    return spec, uploaded


def _show_click_result(result: WhatIfResult, spec: WhatIfSpec, truth: pd.DataFrame | None) -> pd.DataFrame:
    policy = spec.target.removeprefix("policy:") if spec.target.startswith("policy:") else None
    target_truth = figures_whatif.truth_value(truth, policy, "click_rate")
    log_truth = figures_whatif.truth_value(truth, spec.log_policy, "click_rate")
    spread, overlap = diagnostics.agreement(result.estimates)
    cells = st.columns(6)
    cells[0].metric("Rows evaluated", f"{result.rows:,}")
    cells[1].metric("Logged click rate", f"{result.logged_value:.2%}")
    cells[2].metric("Effective sample size", f"{result.ess:,.0f}", help="(sum w)^2 / sum w^2 of the weights.")
    cells[3].metric("Largest weight", f"{result.max_weight:,.2f}")
    cells[4].metric("Share without support", f"{result.unsupported_share:.1%}")
    cells[5].metric(
        "Estimators' spread",
        f"{100 * spread:.2f} pts" if pd.notna(spread) else "n/a",
        help="Largest minus smallest estimate, in percentage points; "
        + ("their intervals overlap." if overlap else "their intervals do not overlap."),
    )
    for warning in result.warnings:
        st.warning(warning[:1].upper() + warning[1:], icon=":material/warning:")
    table = figures_whatif.click_rate_table(result.estimates, spec.target, target_truth)
    st.dataframe(table, hide_index=True, key="wi_click_table")
    st.plotly_chart(
        figures_whatif.estimates_figure(
            table,
            result.logged_value,
            f"Click rate per shown slot of {spec.target}",
            "click rate",
            percent=True,
        ),
        key="wi_click_chart",
    )
    notes = [
        f"Click rate = expected reward per shown slot; 95% bootstrap intervals over requests "
        f"({spec.resamples} resamples). The logged click rate is the logging policy's own on these rows."
    ]
    if truth is not None:
        known = [
            f"{name}: {value:.2%}"
            for name, value in ((spec.target, target_truth), (f"logging policy {spec.log_policy}", log_truth))
            if value is not None
        ]
        notes.append(
            "Simulator ground truth (known only because the data are simulated): "
            + (", ".join(known) if known else "none for this target (only logged policies have one)")
            + "."
        )
    st.caption(" ".join(notes))
    frame = table.copy()
    for name in ("rows", "logged_value", "ess", "max_weight", "unsupported_share"):
        frame[name] = getattr(result, name)
    frame.insert(0, "log_policy", spec.log_policy or ALL_ROWS)
    return frame


def click_rate_section(
    store: Store, policies: list[str], truth: pd.DataFrame | None, params: dict[str, str]
) -> dict:
    """The tab: controls, the estimate on a button (cached), its diagnostics; returns its part of the
    page's JSON document (empty until an estimate has run)."""
    st.caption(
        "Estimated from the recommendations log: what share of shown slots a target policy would have got "
        "clicked, with the logging policy's propensities (off-policy evaluation). Definitions: docs/METRICS.md, "
        "'What-if: off-policy estimates per recommendation'."
    )
    if not policies:
        st.info(
            "This store has no recommendations log: load a recommendations file (request_id, user_id, policy, "
            "item_id, position, propensity, reward) on the Data page."
        )
        return {}
    spec, uploaded = _click_controls(policies, params)
    if spec is None:
        st.info("Upload a target file and pick at least one estimator.")
        return {}
    done: set = st.session_state.setdefault(DONE_KEY, set())
    key = (store.version(), spec)
    if st.button("Estimate click rate", key="wi_click_run", icon=":material/play_arrow:", type="primary"):
        done.add(key)
    if key not in done:
        st.caption("This reads the whole log and may take tens of seconds: press the button to run it.")
        return {}
    try:
        with st.spinner("Estimating the target's click rate from the log..."):
            result = cached_whatif.click_rate(store, spec)
    except TenureError as error:
        done.discard(key)
        if uploaded:
            ui.show_file_error(error, Path(spec.target.removeprefix("file:")), uploaded)
        else:
            ui.show_error(error)
        return {}
    frame = _show_click_result(result, spec, truth)
    ui.download_csv(frame, "whatif_click_rate.csv", key="wi_click_download")
    document = {
        "click_rate": {
            **result.to_dict(details=True),
            "simulator_ground_truth": frame[figures_whatif.TRUTH_LABEL].iloc[0],
        }
    }
    if spec.target.startswith("policy:"):
        document.update(_user_level_click_rate(store, spec.target.removeprefix("policy:"), truth))
    return document


def _user_level_click_rate(store: Store, policy: str, truth: pd.DataFrame | None) -> dict:
    """ "Everyone gets POLICY" per user, where an experiment assigned users to it with propensities."""
    _, experiments, _ = cached_whatif.options(store)
    experiment = cached_whatif.policy_experiment(store, policy, experiments)
    if experiment is None:
        return {}
    question = {
        "experiment": experiment,
        "outcome": USER_CLICK_RATE,
        "variant": policy,
        "rule_text": None,
        "survival_days": [],
        "model_dir": None,
    }
    try:
        with st.spinner(f"Estimating 'everyone gets {policy}' from experiment {experiment}'s users..."):
            result = cached_whatif.user_policy(store, question)
    except TenureError as error:
        ui.show_error(error)
        return {}
    st.subheader(f"User-level estimate: everyone gets {policy}")
    aipw = result.estimate("aipw")
    cells = st.columns(3)
    cells[0].metric(
        "User-level click rate",
        f"{aipw.value:.2%}",
        help=f"AIPW over the users of experiment {experiment}, weighted by their assignment propensities.",
    )
    cells[1].metric("User-level 95% interval", f"{aipw.ci_low:.2%} to {aipw.ci_high:.2%}")
    cells[2].metric("Users", f"{result.rows:,}")
    target_truth = figures_whatif.truth_value(truth, policy, "click_rate")
    table = figures_whatif.click_rate_table(
        pd.DataFrame(result.estimates), f"everyone {policy} (user-level)", target_truth
    )
    st.dataframe(table, hide_index=True, key="wi_click_users_table")
    st.caption(
        f"Users of experiment '{experiment}' were assigned to {policy} with recorded propensities, so "
        f"'everyone gets {policy}' has a user-level estimate: clicks per shown slot from each user's assignment "
        "to the data's end, inverse-propensity weighted over users (ratio of weighted means, delta-method 95% "
        "intervals). Trust it over the row-level estimate above when the policy is context-dependent (it shows "
        "different items to different users): rows logged by another policy do not tell its probability of "
        "each item in each context, the users' assignment does. Definitions: docs/METRICS.md, 'What-if: "
        "per-user outcomes under a policy or rule'."
    )
    return {
        "click_rate_user_level": {
            "experiment": experiment,
            "outcome": result.outcome,
            "rows": result.rows,
            "estimates": [estimate._asdict() for estimate in result.estimates],
            "simulator_ground_truth": target_truth,
        }
    }
