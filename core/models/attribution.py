"""Which events moved a sequence model's churn score: integrated gradients over event embeddings.

Definitions (docs/METRICS.md, "Sequence models", attributions): for one user at as-of date T,
x is the matrix of their events' embeddings (after the embedding layer's normalisation) and b
the **baseline**, the same matrix with every event position set to zero (the start token, the
mask and the static features unchanged: "the model knows how many events there were, not what
they were"). With f the model's raw churn probability (before calibration),

    contribution(event i) = sum_d (x_id - b_id) * mean over alpha of df/dx_id at b + alpha (x - b),

alpha at the midpoints of ``STEPS`` equal steps of [0, 1] (Sundararajan, Taly & Yan 2017,
"Axiomatic Attribution for Deep Networks"). The contributions add up to f(x) - f(b) up to the
Riemann error (completeness; tested), so each is the event's share of the change from the
baseline to the user's own churn probability: positive = pushed towards churn.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.errors import TenureError
from core.models.sequence import SequenceModel
from core.models.sequences import SequenceInputs, build_inputs, history_sql
from core.models.timeline import register_attributor
from core.store import Store

STEPS = 64
ATTRIBUTION_SHARDS = 1_000_003  # a prime: a user's shard holds about one user in a million
SINGLE_USER_COLUMNS = ("position", "event_time", "event_name", "item_id", "revenue", "contribution")


def integrated_gradients(
    model: SequenceModel, inputs: SequenceInputs, row: int, steps: int = STEPS
) -> tuple[np.ndarray, float, float]:
    """Per-position contributions of row ``row``'s events (module docstring).

    Returns:
        (contributions for positions 1..length, f(x), f(baseline)).
    """
    net = model.net_
    net.eval()
    static = model._static(inputs)
    batch = model._batch(inputs, np.array([row]), static)
    with torch.no_grad():
        embedded = net.embedding(batch).float()
    baseline = embedded.clone()
    baseline[:, 1:] = 0.0
    alphas = (torch.arange(steps, dtype=torch.float32, device=embedded.device) + 0.5) / steps
    path = baseline + alphas.view(-1, 1, 1) * (embedded - baseline)
    path.requires_grad_(True)
    repeated = {name: tensor.expand(steps, *tensor.shape[1:]) for name, tensor in batch.items()}
    probabilities = torch.sigmoid(net(repeated, embedded=path)["churn_logit"])
    (gradients,) = torch.autograd.grad(probabilities.sum(), path)
    contributions = ((embedded - baseline) * gradients.mean(dim=0, keepdim=True)).sum(-1)[0]
    with torch.no_grad():
        ends = torch.sigmoid(
            net(
                {name: tensor.expand(2, *tensor.shape[1:]) for name, tensor in batch.items()},
                embedded=torch.cat([embedded, baseline]),
            )["churn_logit"]
        )
    length = int(inputs.lengths[row])
    return contributions[1 : length + 1].detach().cpu().numpy(), float(ends[0]), float(ends[1])


def _user_shard(store: Store, user_id: str) -> tuple[int, int]:
    """The shard (n, i) of ``user_key % n = i`` holding the user: about one user in a million."""
    shard_index = int(store.query_one(f"SELECT hash(?) % {ATTRIBUTION_SHARDS}", [str(user_id)])[0])
    return ATTRIBUTION_SHARDS, shard_index


def single_user_inputs(
    model: SequenceModel, store: Store, user_id: str, as_of: dt.datetime
) -> tuple[SequenceInputs, int]:
    """The inputs of the user's shard at ``as_of`` and the user's row in them."""
    spec = dataclasses.replace(model.spec_, as_of=as_of)
    inputs = build_inputs(
        store,
        spec,
        None,
        model.vocabulary_,
        model.feature_vocabulary_,
        model.config.max_events,
        shard=_user_shard(store, user_id),
    )
    rows = np.flatnonzero(inputs.user_ids == str(user_id))
    if len(rows) == 0:
        raise TenureError(
            f"user '{user_id}' is not in the population at {spec.as_of.isoformat()}",
            "choose a user whose first event is before the as-of date",
        )
    return inputs, int(rows[0])


def user_survival(model: SequenceModel, store: Store, user_id: str, as_of: dt.datetime) -> pd.DataFrame:
    """``week, survival``: the user's S(w), w = 0..W-1 (docs/METRICS.md, "Sequence models")."""
    inputs, row = single_user_inputs(model, store, user_id, as_of)
    scored = model.predict_inputs(inputs.subset(np.array([row])), survival=True)
    columns = [column for column in scored.columns if column.startswith("survival_w")]
    return pd.DataFrame({"week": np.arange(len(columns)), "survival": scored[columns].to_numpy()[0]})


def user_attributions(model: SequenceModel, store: Store, user_id: str, as_of: dt.datetime) -> pd.DataFrame:
    """``SINGLE_USER_COLUMNS`` for the user's events before ``as_of``, oldest first."""
    spec = dataclasses.replace(model.spec_, as_of=as_of)
    shard = _user_shard(store, user_id)
    inputs, row = single_user_inputs(model, store, user_id, as_of)
    contributions, _, _ = integrated_gradients(model, inputs, row)
    sql, params = history_sql(store, spec, None, model.config.max_events, shard)
    events = store.query_df(sql, params)
    events = events[events["user_id"] == str(user_id)].sort_values("position").reset_index(drop=True)
    events["contribution"] = contributions
    return events[list(SINGLE_USER_COLUMNS)]


def _attributor(model_dir: Path, store: Store, user_id: str, as_of: dt.datetime) -> pd.DataFrame:
    return user_attributions(SequenceModel.load(model_dir, device="cpu"), store, user_id, as_of)


def _survival(model_dir: Path, store: Store, user_id: str, as_of: dt.datetime) -> pd.DataFrame:
    return user_survival(SequenceModel.load(model_dir, device="cpu"), store, user_id, as_of)


for _kind in ("seq", "gru"):
    register_attributor(_kind, _attributor, _survival)
