"""The logged recommendations an off-policy estimate reads, as one temporary DuckDB table.

Each row of ``recommendations`` is one shown slot: the item, its position, the logging policy's
probability of that item in that slot (``propensity``) and the reward. ``open_log`` copies the
rows of one logging policy (or all of them) into a temporary table with small integer codes for
item, position and context, the request the row belongs to (the bootstrap's unit; the row itself
when the log has no ``request_id``), a cross-fitting fold and the time window:

- ``fit``: the first ``fit_fraction`` of the rows by ``rec_time`` (whole requests: rows of one
  request share a time), where targets learned from the log (``popularity``, ``greedy``) are fitted;
- ``eval``: the rest, where those targets are evaluated.

Targets that learn nothing from the log are evaluated on every row. The temporary table lives in
one cursor, so everything of one estimate runs inside ``with store.cursor() as cursor``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from core.errors import TenureError

LOG_TABLE = "whatif_log"

# Every distinct context is expanded to (items x positions) cells for the reward model and the
# context-dependent targets; beyond this many cells the context has to be made coarser.
MAX_CELLS = 20_000_000


@dataclass(frozen=True)
class LogSpec:
    """Which rows form the log.

    Args:
        log_policy: the ``policy`` whose rows are read; None reads every row (each row is then
            weighted by its own logging policy's propensity).
        fit_fraction: the share of the rows, earliest first, in the window where targets learned
            from the log are fitted (default 0.3).
    """

    log_policy: str | None = None
    fit_fraction: float = 0.3


@dataclass(frozen=True)
class Log:
    """The log's vocabulary and shape; the rows themselves are in the temporary ``whatif_log``.

    ``items`` and ``positions`` are every item and position of the whole ``recommendations``
    table (all policies): the candidates a target chooses from. ``contexts`` holds one row of
    parsed context features per context code (0..C-1, the distinct ``context`` values of the
    log). ``item_features`` holds per-item features from the ``items`` table (may be empty).
    """

    spec: LogSpec
    items: tuple[str, ...]
    positions: tuple[int, ...]
    contexts: pd.DataFrame
    item_features: pd.DataFrame
    rows: int
    fit_rows: int
    eval_rows: int
    has_requests: bool


def _check_policy(cursor: duckdb.DuckDBPyConnection, policy: str | None) -> None:
    if policy is None:
        return
    known = [
        row[0] for row in cursor.execute("SELECT DISTINCT policy FROM recommendations ORDER BY 1").fetchall()
    ]
    if policy not in known:
        names = ", ".join(str(name) for name in known) or "none"
        raise TenureError(
            f"--log-policy '{policy}': no rows of recommendations have that policy",
            f"logged policies: {names}",
        )


def open_log(cursor: duckdb.DuckDBPyConnection, spec: LogSpec, seed: int = 0) -> Log:
    """Create the temporary log table in ``cursor`` and describe it.

    Raises TenureError when the log is empty or a row lacks its propensity or reward: without the
    logging probability of what was shown, no importance weight exists.
    """
    if not 0.0 <= spec.fit_fraction < 1.0:
        raise TenureError(f"fit fraction {spec.fit_fraction} is not in [0, 1)", "use e.g. 0.3")
    _check_policy(cursor, spec.log_policy)
    where = "WHERE policy = $policy" if spec.log_policy is not None else ""
    params: dict[str, object] = {"policy": spec.log_policy} if spec.log_policy is not None else {}
    count, missing_propensity, bad_propensity, missing_reward = cursor.execute(
        f"""SELECT count(*), count(*) FILTER (propensity IS NULL),
               count(*) FILTER (propensity <= 0 OR propensity > 1), count(*) FILTER (reward IS NULL)
           FROM recommendations {where}""",
        params,
    ).fetchone()
    label = f"policy '{spec.log_policy}'" if spec.log_policy is not None else "the table"
    if count == 0:
        raise TenureError(
            f"recommendations: no rows for {label}",
            "load a log with `python -m core ingest --table recommendations`",
        )
    for number, column, what in (
        (missing_propensity, "propensity", "is empty"),
        (bad_propensity, "propensity", "is not in (0, 1]"),
        (missing_reward, "reward", "is empty"),
    ):
        if number:
            raise TenureError(
                f"recommendations: column {column} {what} in {number} rows of {label}",
                "off-policy estimates need each shown item's logging probability and its reward",
            )
    items = tuple(
        row[0] for row in cursor.execute("SELECT DISTINCT item_id FROM recommendations ORDER BY 1").fetchall()
    )
    positions = tuple(
        int(row[0])
        for row in cursor.execute(
            "SELECT DISTINCT coalesce(position, 1) FROM recommendations ORDER BY 1"
        ).fetchall()
    )
    cursor.execute(f"DROP TABLE IF EXISTS {LOG_TABLE}")
    cursor.execute("DROP TABLE IF EXISTS whatif_items")
    cursor.execute("DROP TABLE IF EXISTS whatif_contexts")
    item_frame = pd.DataFrame({"item_id": list(items), "item": np.arange(len(items), dtype=np.int32)})
    cursor.register("whatif_item_codes", item_frame)
    cursor.execute("CREATE TEMP TABLE whatif_items AS SELECT * FROM whatif_item_codes")
    cursor.unregister("whatif_item_codes")
    cursor.execute(
        f"""CREATE TEMP TABLE whatif_contexts AS
            SELECT context_text, (row_number() OVER (ORDER BY context_text) - 1)::INTEGER AS context
            FROM (SELECT DISTINCT coalesce(CAST(context AS VARCHAR), '{{}}') AS context_text
                  FROM recommendations {where})""",
        params,
    )
    cursor.execute(
        f"""CREATE TEMP TABLE {LOG_TABLE} AS
        WITH rows AS (
            SELECT r.rec_time, r.request_id, r.propensity, r.reward,
                   i.item, coalesce(r.position, 1)::INTEGER AS position_value, c.context,
                   row_number() OVER (ORDER BY r.rec_time, r.request_id, r.position, r.item_id) AS row_id
            FROM recommendations r
            JOIN whatif_items i ON i.item_id = r.item_id
            JOIN whatif_contexts c ON c.context_text = coalesce(CAST(r.context AS VARCHAR), '{{}}')
            {where.replace("WHERE policy", "WHERE r.policy")}
        ), cut AS (
            SELECT coalesce(max(rec_time) FILTER (WHERE row_id <= $fit_rows), TIMESTAMP '0001-01-01') AS split_time
            FROM rows
        )
        SELECT row_id, coalesce(request_id, 'row:' || row_id::VARCHAR) AS request_key,
               item, position_value, context, propensity, reward,
               CASE WHEN $fit_rows > 0 AND rec_time <= split_time THEN 'fit' ELSE 'eval' END AS time_window,
               (hash(coalesce(request_id, 'row:' || row_id::VARCHAR), $seed::BIGINT) % 2)::INTEGER AS fold
        FROM rows, cut""",
        {**params, "fit_rows": int(np.floor(spec.fit_fraction * count)), "seed": seed},
    )
    codes = pd.DataFrame(
        {"position_value": list(positions), "position": np.arange(len(positions), dtype=np.int32)}
    )
    cursor.register("whatif_position_codes", codes)
    cursor.execute(
        f"""CREATE OR REPLACE TEMP TABLE {LOG_TABLE} AS
            SELECT l.*, p.position FROM {LOG_TABLE} l JOIN whatif_position_codes p USING (position_value)"""
    )
    cursor.unregister("whatif_position_codes")
    fit_rows, eval_rows = cursor.execute(
        f"SELECT count(*) FILTER (time_window = 'fit'), count(*) FILTER (time_window = 'eval') FROM {LOG_TABLE}"
    ).fetchone()
    has_requests = cursor.execute(
        f"SELECT count(request_id) > 0 FROM recommendations {where}", params
    ).fetchone()[0]
    texts = cursor.execute("SELECT context_text FROM whatif_contexts ORDER BY context").fetchall()
    contexts = context_features([row[0] for row in texts])
    if len(contexts) * len(items) * len(positions) > MAX_CELLS:
        raise TenureError(
            f"recommendations: {len(contexts)} distinct contexts x {len(items)} items x "
            f"{len(positions)} positions is too many cells for the reward model",
            "keep the context to a few coarse fields (e.g. country, platform, plan)",
        )
    return Log(
        spec=spec,
        items=items,
        positions=positions,
        contexts=contexts,
        item_features=item_features(cursor, items),
        rows=int(count),
        fit_rows=int(fit_rows),
        eval_rows=int(eval_rows),
        has_requests=bool(has_requests),
    )


def context_features(texts: list[str]) -> pd.DataFrame:
    """One row of features per context JSON text: text and true/false values as categories,
    numbers as floats; nested values and absent fields are left out / missing."""
    records = []
    for text in texts:
        try:
            value = json.loads(text) if text else {}
        except json.JSONDecodeError:
            value = {}
        records.append(value if isinstance(value, dict) else {})
    frame = pd.DataFrame.from_records(records, index=pd.RangeIndex(len(records)))
    columns: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        kind = pd.api.types.infer_dtype(column, skipna=True)
        if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
            columns[f"ctx_{name}"] = pd.to_numeric(column, errors="coerce").astype("float64")
        elif kind in ("string", "boolean"):
            columns[f"ctx_{name}"] = column.astype("string").astype("category")
    return pd.DataFrame(columns, index=frame.index)


def item_features(cursor: duckdb.DuckDBPyConnection, items: tuple[str, ...]) -> pd.DataFrame:
    """Per-item features from the ``items`` table, in the order of ``items``: numeric columns and
    text columns with fewer than 100 values (a category, not a title). Empty when unknown."""
    table = cursor.execute("SELECT * FROM items").df()
    frame = pd.DataFrame(index=pd.RangeIndex(len(items)))
    if table.empty:
        return frame
    table = table.drop_duplicates("item_id").set_index("item_id").reindex(list(items))
    for name in table.columns:
        column = table[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            frame[f"item_{name}"] = column.to_numpy(dtype="float64", na_value=np.nan)
        elif column.nunique() < 100:
            frame[f"item_{name}"] = pd.Categorical(column.astype("string").to_numpy())
    return frame
