"""The reward model q(x, a): expected reward of an item in a position for a context.

The direct method and the doubly robust estimators need q for every candidate item, not only the
logged one; the ``greedy`` target ranks items by it. A LightGBM model on the context features,
the item (a category), the item's features and the position, fitted on a sample of logged rows.
Prediction fills a (contexts x items x positions) array, so a context is scored once however
many rows share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.whatif.log import Log

PREDICT_CHUNK = 250_000


@dataclass(frozen=True)
class LogFeatures:
    """The log's context and item features as float arrays (one row per context / item code),
    so that a design matrix is two row lookups; categories are their integer codes."""

    contexts: np.ndarray
    items: np.ndarray
    names: list[str]
    categorical: list[str]

    @property
    def width(self) -> int:
        return len(self.names)


def _as_float_columns(frame: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    columns, categorical = [], []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            columns.append(column.cat.codes.to_numpy(dtype=np.float64))
            categorical.append(name)
        else:
            columns.append(column.to_numpy(dtype=np.float64))
    matrix = np.column_stack(columns) if columns else np.empty((len(frame), 0))
    return matrix, list(frame.columns), categorical


def log_features(log: Log) -> LogFeatures:
    """The float features of ``log`` (a few hundred rows: cheap enough to build per call)."""
    contexts, context_names, context_categorical = _as_float_columns(log.contexts)
    items, item_names, item_categorical = _as_float_columns(log.item_features)
    return LogFeatures(
        contexts,
        items,
        [*context_names, *item_names, "item_code", "position_code"],
        ["item_code", *context_categorical, *item_categorical],
    )


@dataclass
class RewardModel:
    """``fit`` learns E[reward | context, item, position]; ``predict`` fills the cell array.

    Args:
        seed: LightGBM's seed.
        n_estimators, learning_rate, num_leaves, min_child_samples: LightGBM settings; small
            trees with many rows per leaf, because rewards such as clicks are rare. 30 rounds at
            0.15 reach the held-out log loss of 100 rounds at 0.05 on the sample (0.3243 both;
            docs/BENCHMARKS.md) at a third of the cost: scoring every (context, item, position)
            cell costs in proportion to the number of trees.
    """

    seed: int = 0
    n_estimators: int = 30
    learning_rate: float = 0.15
    num_leaves: int = 15
    min_child_samples: int = 100
    booster_: object | None = field(default=None, init=False)
    data_: object | None = field(default=None, init=False, repr=False)
    constant_: float = field(default=0.0, init=False)
    binary_: bool = field(default=True, init=False)

    def _design(
        self, log: Log, context: np.ndarray, item: np.ndarray, position: np.ndarray
    ) -> tuple[np.ndarray, list[str], list[str]]:
        """Numeric design matrix, its column names and the names of its categorical columns
        (integer codes, -1 for missing, which LightGBM reads as missing): the codes come from the
        log's vocabulary, so a category means the same in fitting and in prediction.

        A plain float array rather than a DataFrame: LightGBM converts a frame to this array on
        every call, which costs as much as scoring the cells."""
        features = log_features(log)
        design = np.empty((len(context), features.width))
        design[:, : features.contexts.shape[1]] = features.contexts[context]
        design[:, features.contexts.shape[1] : -2] = features.items[item]
        design[:, -2] = item
        design[:, -1] = position
        return design, features.names, features.categorical

    def _params(self) -> dict:
        return {
            "objective": "binary" if self.binary_ else "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "min_data_per_group": 50,
            "cat_smooth": 20.0,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbose": -1,
        }

    def fit(
        self, log: Log, context: np.ndarray, item: np.ndarray, position: np.ndarray, reward: np.ndarray
    ) -> RewardModel:
        """Fit on logged rows given as code arrays; a constant reward gives a constant model.

        The binned training data stays in ``data_`` so that ``refit_subsamples`` can reuse it.
        """
        import lightgbm

        reward = np.asarray(reward, dtype=np.float64)
        self.constant_ = float(reward.mean()) if len(reward) else 0.0
        self.binary_ = bool(np.isin(reward, (0.0, 1.0)).all())
        self.data_ = None
        if len(reward) < 2 or np.ptp(reward) == 0:
            self.booster_ = None
            return self
        params = self._params()
        design, names, categorical = self._design(log, context, item, position)
        self.data_ = lightgbm.Dataset(
            design,
            label=reward,
            feature_name=names,
            categorical_feature=categorical,
            params=params,
            free_raw_data=True,
        ).construct()
        self.booster_ = lightgbm.train(params, self.data_, num_boost_round=self.n_estimators)
        return self

    def refit_subsamples(
        self, reward: np.ndarray, request: np.ndarray, share: float, count: int, seed: int
    ) -> list[tuple[RewardModel, float]]:
        """``count`` models fitted like this one on seeded subsamples of its training rows: each
        request of the training rows is kept with probability ``share`` (whole requests, since
        their rows are correlated). Returns (model, share of the rows kept) pairs; the bins of the
        full training data are reused, so a refit costs its LightGBM rounds only.

        Args:
            reward, request: the training rows' rewards and request codes, in fitting order.
        """
        import lightgbm

        reward = np.asarray(reward, dtype=np.float64)
        _, group = np.unique(np.asarray(request), return_inverse=True)
        rng = np.random.default_rng(seed)
        refits = []
        for _ in range(count):
            kept = (rng.random(group.max() + 1 if len(group) else 0) < share)[group]
            rows = np.flatnonzero(kept)
            model = RewardModel(self.seed, self.n_estimators, self.learning_rate, self.num_leaves)
            model.min_child_samples = self.min_child_samples
            model.binary_ = self.binary_
            model.constant_ = float(reward[rows].mean()) if len(rows) else self.constant_
            if self.data_ is not None and len(rows) >= 2 and np.ptp(reward[rows]) > 0:
                subset = self.data_.subset(rows.tolist(), params=self._params())
                model.booster_ = lightgbm.train(self._params(), subset, num_boost_round=self.n_estimators)
            refits.append((model, len(rows) / max(len(reward), 1)))
        return refits

    def predict_cells(
        self, log: Log, context: np.ndarray, item: np.ndarray, position: np.ndarray
    ) -> np.ndarray:
        """q for given (context, item, position) code triples: shape (len(context),)."""
        if self.booster_ is None:
            return np.full(len(context), self.constant_)
        out = np.empty(len(context))
        for start in range(0, len(context), PREDICT_CHUNK):
            stop = start + PREDICT_CHUNK
            design, _, _ = self._design(log, context[start:stop], item[start:stop], position[start:stop])
            out[start:stop] = self.booster_.predict(design, num_threads=1)
        return out

    def predict(self, log: Log, contexts: np.ndarray) -> np.ndarray:
        """q for every (context in ``contexts``, item, position): shape (len(contexts), K, P)."""
        n_items, n_positions = len(log.items), len(log.positions)
        contexts = np.asarray(contexts, dtype=np.int64)
        per_context = n_items * n_positions
        out = np.empty((len(contexts), n_items, n_positions))
        step = max(1, PREDICT_CHUNK // per_context)
        item_grid = np.repeat(np.arange(n_items), n_positions)
        position_grid = np.tile(np.arange(n_positions), n_items)
        for start in range(0, len(contexts), step):
            chunk = contexts[start : start + step]
            out[start : start + len(chunk)] = self.predict_cells(
                log,
                np.repeat(chunk, per_context),
                np.tile(item_grid, len(chunk)),
                np.tile(position_grid, len(chunk)),
            ).reshape(len(chunk), n_items, n_positions)
        return out


def sample_rows(cursor, window: str | None, fold: int | None, limit: int, seed: int) -> pd.DataFrame:
    """Up to ``limit`` log rows (codes, reward and a request code) of a window and/or fold, a
    seeded choice."""
    conditions = ["TRUE"]
    params: dict[str, object] = {"limit": limit, "seed": seed}
    if window is not None:
        conditions.append("time_window = $window")
        params["window"] = window
    if fold is not None:
        conditions.append("fold = $fold")
        params["fold"] = fold
    return cursor.execute(
        f"""SELECT context, item, position, reward, hash(request_key) AS request FROM whatif_log WHERE {" AND ".join(conditions)}
            ORDER BY hash(row_id, $seed::BIGINT) LIMIT $limit""",
        params,
    ).df()
