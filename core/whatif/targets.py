"""Target policies: what a what-if asks about, as probabilities pi_e(item, position | context).

A target turns the log's vocabulary into an array ``probabilities`` of shape (1 or C, K, P):
contexts (1 when the target ignores the context), the K candidate items (every item of the
``recommendations`` table) and the P positions; each (context, position) column sums to 1. The
importance weight of a logged row is ``probabilities[context, item, position] / propensity``; the
direct method needs the whole column (``expected_reward``).

Targets learned from the log (``popularity``, ``greedy``) are fitted on the log's ``fit`` window
(the earliest rows) and evaluated on the rest, so they never grade themselves on the rows they
learned from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np
import pandas as pd

from core.errors import TenureError
from core.whatif.log import LOG_TABLE, Log

SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TargetProbabilities:
    """A target's probabilities and what a reader must know about them.

    ``note`` says in words when they are estimated rather than known (empty when exact).
    """

    probabilities: np.ndarray
    note: str = ""

    @property
    def context_dependent(self) -> bool:
        return self.probabilities.shape[0] > 1


class Target(Protocol):
    """A target policy: a name for the output and its probabilities over the log's candidates."""

    name: str
    learns_from_log: bool

    def probabilities(
        self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int
    ) -> TargetProbabilities: ...


@dataclass(frozen=True)
class Uniform:
    """1/K over the K items of the log, the same in every position and context."""

    name: str = "uniform"
    learns_from_log: bool = False

    def probabilities(self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int) -> TargetProbabilities:
        shape = (1, len(log.items), len(log.positions))
        return TargetProbabilities(np.full(shape, 1.0 / len(log.items)))


@dataclass(frozen=True)
class FileTarget:
    """Probabilities from a CSV with columns item_id, position, probability (one row per pair;
    pairs not in the file have probability 0); context-free."""

    path: Path
    learns_from_log: bool = False

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    def probabilities(self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int) -> TargetProbabilities:
        return TargetProbabilities(read_target_file(self.path, log.items, log.positions))


def read_target_file(path: Path, items: tuple[str, ...], positions: tuple[int, ...]) -> np.ndarray:
    """Read and validate a target file into a (1, K, P) array.

    Raises TenureError naming the line and column of the first problem: a missing column, an
    unknown item or position, a probability outside [0, 1], a repeated pair, or a position whose
    probabilities do not sum to 1 (within 0.001).
    """
    if not Path(path).exists():
        raise TenureError(
            f"target file {path} does not exist", "give a CSV with item_id,position,probability"
        )
    try:
        frame = pd.read_csv(path, dtype={"item_id": "string"})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise TenureError(
            f"target file {path} is not a readable CSV: {error}", "save it as plain CSV"
        ) from error
    missing = [column for column in ("item_id", "position", "probability") if column not in frame.columns]
    if missing:
        raise TenureError(
            f"target file {path}: missing column {', '.join(missing)}",
            "the header must be item_id,position,probability",
        )
    item_code = {item: index for index, item in enumerate(items)}
    position_code = {position: index for index, position in enumerate(positions)}
    result = np.zeros((1, len(items), len(positions)))
    seen: set[tuple[int, int]] = set()
    for row_number, (item, position, probability) in enumerate(
        frame[["item_id", "position", "probability"]].itertuples(index=False), start=2
    ):
        where = f"target file {path}, line {row_number}"
        if pd.isna(item) or str(item) not in item_code:
            raise TenureError(
                f"{where}, column item_id: unknown item '{item}'", "use items that the log shows"
            )
        try:
            position_value = int(position)
            if position_value != float(position):
                raise ValueError
        except (TypeError, ValueError):
            raise TenureError(f"{where}, column position: '{position}' is not a whole number") from None
        if position_value not in position_code:
            known = ", ".join(str(value) for value in positions)
            raise TenureError(
                f"{where}, column position: unknown position {position_value}", f"positions: {known}"
            )
        try:
            value = float(probability)
        except (TypeError, ValueError):
            raise TenureError(f"{where}, column probability: '{probability}' is not a number") from None
        if not (0.0 <= value <= 1.0) or math.isnan(value):
            raise TenureError(f"{where}, column probability: {probability} is not in [0, 1]")
        key = (item_code[str(item)], position_code[position_value])
        if key in seen:
            raise TenureError(f"{where}: item '{item}' at position {position_value} appears twice")
        seen.add(key)
        result[0, key[0], key[1]] = value
    sums = result[0].sum(axis=0)
    for index, total in enumerate(sums):
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise TenureError(
                f"target file {path}, column probability: position {positions[index]} sums to {total:.6g}, not 1",
                "each position's probabilities must sum to 1",
            )
    return result / sums[None, None, :]


@dataclass(frozen=True)
class Popularity:
    """Deterministic: position k shows the k-th best item by reward rate (reward / shows) in the
    fit window; ties go to the item shown more, then the smaller item id. Items never shown in the
    window rank last."""

    name: str = "popularity"
    learns_from_log: bool = True

    def probabilities(self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int) -> TargetProbabilities:
        ranked = cursor.execute(
            f"""SELECT item FROM {LOG_TABLE} WHERE time_window = 'fit'
                GROUP BY item ORDER BY avg(reward) DESC, count(*) DESC, item"""
        ).fetchall()
        order = [row[0] for row in ranked]
        order += [item for item in range(len(log.items)) if item not in set(order)]
        return TargetProbabilities(ranked_probabilities(np.asarray([order]), len(log.positions), 0.0))


def ranked_probabilities(order: np.ndarray, n_positions: int, epsilon: float) -> np.ndarray:
    """(C, K) item orders -> (C, K, P): position k takes the k-th item with probability
    1 - epsilon, and epsilon is spread uniformly over all K items."""
    n_contexts, n_items = order.shape
    result = np.full((n_contexts, n_items, n_positions), epsilon / n_items)
    for position in range(n_positions):
        chosen = order[:, position % n_items]
        result[np.arange(n_contexts), chosen, position] += 1.0 - epsilon
    return result


@dataclass(frozen=True)
class Greedy:
    """A reward model fitted on the fit window ranks the items in each context (by predicted
    reward averaged over positions); position k takes the k-th, with probability epsilon spread
    uniformly over all items (exploration)."""

    epsilon: float = 0.1
    max_rows: int = 200_000
    name: str = "greedy"
    learns_from_log: bool = True

    def probabilities(self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int) -> TargetProbabilities:
        from core.whatif.reward_model import RewardModel, sample_rows

        if not 0.0 <= self.epsilon <= 1.0:
            raise TenureError(f"greedy epsilon {self.epsilon} is not in [0, 1]")
        rows = sample_rows(cursor, "fit", None, self.max_rows, seed)
        model = RewardModel(seed=seed).fit(
            log,
            rows["context"].to_numpy(),
            rows["item"].to_numpy(),
            rows["position"].to_numpy(),
            rows["reward"].to_numpy(),
        )
        contexts = np.asarray(
            [
                row[0]
                for row in cursor.execute(f"SELECT DISTINCT context FROM {LOG_TABLE} ORDER BY 1").fetchall()
            ]
        )
        score = model.predict(log, contexts).mean(axis=2)
        order = np.argsort(-score, axis=1, kind="stable")
        result = np.full((len(log.contexts), len(log.items), len(log.positions)), 1.0 / len(log.items))
        result[contexts] = ranked_probabilities(order, len(log.positions), self.epsilon)
        return TargetProbabilities(result)


@dataclass(frozen=True)
class LoggedPolicy:
    """A logged policy as the target.

    When the policy's propensity of each (item, position) is the same in all its rows (a
    context-free policy such as uniform random or a fixed popularity distribution), those
    propensities are its probabilities: exact. Otherwise its probabilities are estimated by the
    share of each item among its rows at each position, which averages over whatever the policy
    adapted to (context, time): the result is labelled as an estimate.
    """

    policy: str
    learns_from_log: bool = False

    @property
    def name(self) -> str:
        return f"policy:{self.policy}"

    def probabilities(self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int) -> TargetProbabilities:
        pairs = cursor.execute(
            """SELECT i.item, p.position, count(*) AS shows, min(r.propensity) AS low, max(r.propensity) AS high
               FROM recommendations r
               JOIN whatif_items i ON i.item_id = r.item_id
               JOIN (SELECT DISTINCT position, position_value FROM whatif_log) p
                 ON p.position_value = coalesce(r.position, 1)
               WHERE r.policy = $policy GROUP BY ALL""",
            {"policy": self.policy},
        ).df()
        if pairs.empty:
            raise TenureError(
                f"target policy:{self.policy}: no rows of recommendations have that policy",
                "name a logged policy (see `python -m core info`)",
            )
        shape = (1, len(log.items), len(log.positions))
        constant = pairs["low"].notna().all() and np.allclose(
            pairs["low"], pairs["high"], rtol=1e-9, atol=1e-12
        )
        values = pairs["low"] if constant else pairs["shows"]
        result = np.zeros(shape)
        result[0, pairs["item"].to_numpy(), pairs["position"].to_numpy()] = values.to_numpy(dtype=np.float64)
        sums = result[0].sum(axis=0)
        if (sums <= 0).any():
            raise TenureError(f"target policy:{self.policy} has no rows at some positions of the log")
        result = result / sums[None, None, :]
        if constant:
            return TargetProbabilities(result)
        return TargetProbabilities(
            result,
            note=f"policy:{self.policy} is estimated: its propensities vary between rows, so its "
            "probabilities are the shares of its shown items per position",
        )


@dataclass(frozen=True)
class Mixture:
    """Follow target ``a`` with probability ``weight`` and ``b`` otherwise:
    pi = weight * pi_a + (1 - weight) * pi_b."""

    a: Target
    b: Target
    weight: float

    @property
    def name(self) -> str:
        return f"mix:{self.a.name},{self.b.name},{self.weight:g}"

    @property
    def learns_from_log(self) -> bool:
        return self.a.learns_from_log or self.b.learns_from_log

    def probabilities(self, cursor: duckdb.DuckDBPyConnection, log: Log, seed: int) -> TargetProbabilities:
        if not 0.0 <= self.weight <= 1.0:
            raise TenureError(
                f"mixture weight {self.weight} is not in [0, 1]", "e.g. mix:uniform,popularity,0.3"
            )
        first = self.a.probabilities(cursor, log, seed)
        second = self.b.probabilities(cursor, log, seed)
        mixed = self.weight * first.probabilities + (1.0 - self.weight) * second.probabilities
        return TargetProbabilities(mixed, note="; ".join(note for note in (first.note, second.note) if note))


TARGET_HELP = "uniform | popularity | greedy | policy:NAME | file:PATH | mix:A,B,W"


def parse_target(text: str, epsilon: float = 0.1) -> Target:
    """``--target`` text -> a Target; ``mix:A,B,W`` mixes two simple targets with weight W on A."""
    text = text.strip()
    if text == "uniform":
        return Uniform()
    if text == "popularity":
        return Popularity()
    if text == "greedy":
        return Greedy(epsilon=epsilon)
    if text.startswith("policy:") and text.removeprefix("policy:"):
        return LoggedPolicy(text.removeprefix("policy:"))
    if text.startswith("file:") and text.removeprefix("file:"):
        return FileTarget(Path(text.removeprefix("file:")))
    if text.startswith("mix:"):
        parts = text.removeprefix("mix:").rsplit(",", 2)
        if len(parts) == 3:
            try:
                weight = float(parts[2])
            except ValueError:
                weight = float("nan")
            if 0.0 <= weight <= 1.0:
                return Mixture(parse_target(parts[0], epsilon), parse_target(parts[1], epsilon), weight)
        raise TenureError(
            f"--target '{text}' is not mix:A,B,W with W in [0, 1]", "e.g. mix:uniform,popularity,0.3"
        )
    raise TenureError(f"--target '{text}' is not a known target", f"use {TARGET_HELP}")


def expected_reward(probabilities: np.ndarray, reward: np.ndarray, contexts: np.ndarray) -> np.ndarray:
    """The direct method's sum over candidates, sum_a pi_e(a | x, position) q(x, a, position),
    for each context in ``contexts`` (rows of ``reward``) and position: shape (len(contexts), P)."""
    pi = probabilities[contexts] if probabilities.shape[0] > 1 else probabilities
    return np.einsum("ckp,ckp->cp", np.broadcast_to(pi, reward.shape), reward)
