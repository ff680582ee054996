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


@dataclass
class RewardModel:
    """``fit`` learns E[reward | context, item, position]; ``predict`` fills the cell array.

    Args:
        seed: LightGBM's seed.
        n_estimators, learning_rate, num_leaves, min_child_samples: LightGBM settings; small
            trees with many rows per leaf, because rewards such as clicks are rare.
    """

    seed: int = 0
    n_estimators: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 100
    booster_: object | None = field(default=None, init=False)
    constant_: float = field(default=0.0, init=False)
    binary_: bool = field(default=True, init=False)

    def _design(
        self, log: Log, context: np.ndarray, item: np.ndarray, position: np.ndarray
    ) -> tuple[pd.DataFrame, list[str]]:
        """Numeric design matrix and the names of its categorical columns (integer codes, -1 for
        missing, which LightGBM reads as missing): the codes come from the log's vocabulary, so a
        category means the same in fitting and in prediction."""
        parts = [log.contexts.iloc[context].reset_index(drop=True)]
        if not log.item_features.empty:
            parts.append(log.item_features.iloc[item].reset_index(drop=True))
        columns: dict[str, np.ndarray] = {}
        categorical = ["item_code"]
        for part in parts:
            for name in part.columns:
                column = part[name]
                if isinstance(column.dtype, pd.CategoricalDtype):
                    columns[name] = column.cat.codes.to_numpy(dtype=np.int32)
                    categorical.append(name)
                else:
                    columns[name] = column.to_numpy(dtype=np.float64)
        columns["item_code"] = np.asarray(item, dtype=np.int32)
        columns["position_code"] = np.asarray(position, dtype=np.float64)
        return pd.DataFrame(columns), categorical

    def fit(
        self, log: Log, context: np.ndarray, item: np.ndarray, position: np.ndarray, reward: np.ndarray
    ) -> RewardModel:
        """Fit on logged rows given as code arrays; a constant reward gives a constant model."""
        import lightgbm

        reward = np.asarray(reward, dtype=np.float64)
        self.constant_ = float(reward.mean()) if len(reward) else 0.0
        self.binary_ = bool(np.isin(reward, (0.0, 1.0)).all())
        if len(reward) < 2 or np.ptp(reward) == 0:
            self.booster_ = None
            return self
        params = {
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
        design, categorical = self._design(log, context, item, position)
        data = lightgbm.Dataset(design, label=reward, categorical_feature=categorical, free_raw_data=True)
        self.booster_ = lightgbm.train(params, data, num_boost_round=self.n_estimators)
        return self

    def predict(self, log: Log, contexts: np.ndarray) -> np.ndarray:
        """q for every (context in ``contexts``, item, position): shape (len(contexts), K, P)."""
        n_items, n_positions = len(log.items), len(log.positions)
        contexts = np.asarray(contexts, dtype=np.int64)
        if self.booster_ is None:
            return np.full((len(contexts), n_items, n_positions), self.constant_)
        per_context = n_items * n_positions
        out = np.empty(len(contexts) * per_context)
        step = max(1, PREDICT_CHUNK // per_context)
        item_grid = np.repeat(np.arange(n_items), n_positions)
        position_grid = np.tile(np.arange(n_positions), n_items)
        for start in range(0, len(contexts), step):
            chunk = contexts[start : start + step]
            design, _ = self._design(
                log,
                np.repeat(chunk, per_context),
                np.tile(item_grid, len(chunk)),
                np.tile(position_grid, len(chunk)),
            )
            out[start * per_context : (start + len(chunk)) * per_context] = self.booster_.predict(
                design, num_threads=1
            )
        return out.reshape(len(contexts), n_items, n_positions)


def sample_rows(cursor, window: str | None, fold: int | None, limit: int, seed: int) -> pd.DataFrame:
    """Up to ``limit`` log rows (codes and reward) of a window and/or fold, a seeded choice."""
    conditions = ["TRUE"]
    params: dict[str, object] = {"limit": limit, "seed": seed}
    if window is not None:
        conditions.append("time_window = $window")
        params["window"] = window
    if fold is not None:
        conditions.append("fold = $fold")
        params["fold"] = fold
    return cursor.execute(
        f"""SELECT context, item, position, reward FROM whatif_log WHERE {" AND ".join(conditions)}
            ORDER BY hash(row_id, $seed::BIGINT) LIMIT $limit""",
        params,
    ).df()
