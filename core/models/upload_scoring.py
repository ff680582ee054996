"""Scoring an uploaded events file with a saved model, without touching any shared store.

One run (docs/METRICS.md, "Ad hoc scoring of an uploaded file"; used by ``python -m core score
--events`` and the Score page):

1. The model folder is checked (``model_kind``) and the file's size against ``max_bytes``
   (default ``MAX_UPLOAD_BYTES``).
2. The file is loaded into a private in-memory store (``Store(":memory:")``) by the ingest
   (core/ingest.py): the same column mapping (``column_map``, ``constants``) and the same checks,
   so bad rows are named by line and column, refuse the file, or with ``skip_bad_rows`` go to a
   rejects CSV. An optional users file gives the users' attributes. More than ``max_events``
   events (default ``MAX_SCORE_EVENTS``) are refused.
3. The drift checks and the flags (core/models/drift.py) run on the private store. Attribute
   columns the model was trained with and the upload lacks are added to its ``users`` table as
   NULL (unknown for every user) and reported.
4. The users of the population at T are scored by ``score_model`` (any model kind) in batches of
   at most ``batch_users`` users: users are dealt into batches by ``user_key`` modulo the number
   of batches, and each batch's events alone are put in the store's ``events`` table before
   ``score_model`` runs on it. This is exact because a user's scores depend only on that user's
   events and attributes. ``score_model`` refuses an as-of date after the data's end: a batch
   whose events all lie before T also gets the upload's last event (on or after T; its user's
   start is then not before T, so that row adds no user to the batch's population).
5. The store is closed and dropped: nothing is written anywhere but the report (and the
   rejects file when asked).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import TenureError
from core.ingest import BadRowsError, IngestResult, bad_rows_hint, ingest_file
from core.models.artifacts import MODEL_FILE
from core.models.drift import (
    FLAG_COLUMNS,
    MIN_EVENTS,
    MIN_HISTORY_DAYS,
    DriftReport,
    drift_report,
    history_flags,
)
from core.models.training import SCORE_COLUMNS, model_kind, score_model
from core.models.training_profile import load_training_profile
from core.store import SAMPLE_DATA_DIR, Store, quote_identifier

MAX_SCORE_EVENTS = 2_000_000
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
SCORE_BATCH_USERS = 50_000
TOP_USERS = 20
FLAGS_SUFFIX = ".flags.csv"
DEFAULT_MODELS_DIR = SAMPLE_DATA_DIR / "models"
LIMIT_HINT = (
    "split the file by user and score the parts, or load it into a store with `python -m core ingest` "
    "and score the store with `python -m core score --db`"
)

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


@dataclass(frozen=True)
class UploadScoreReport:
    """The outcome of ``score_upload``.

    Attributes:
        source: the file's name.
        model_dir, model_kind: the model folder and its kind.
        as_of: T.
        scores: DataFrame ``SCORE_COLUMNS``, one row per user of the population at T, by user_id.
        flags: DataFrame ``FLAG_COLUMNS`` (core/models/drift.py), one row per user and flag.
        drift: the comparison with the model's training data.
        events: the ingest's result for the events file (rows read, rejected, duplicates dropped,
            the rejects file).
        users: the ingest's result for the users file; None without one.
        users_in_file: distinct users of the accepted events.
        users_not_scored: users whose every event is on or after T (not in the population).
        batches: how many ``score_model`` calls scored the users.
        seconds: wall time of the whole run.
    """

    source: str
    model_dir: Path
    model_kind: str
    as_of: dt.datetime
    scores: pd.DataFrame
    flags: pd.DataFrame
    drift: DriftReport
    events: IngestResult
    users: IngestResult | None
    users_in_file: int
    users_not_scored: int
    batches: int
    seconds: float

    @property
    def flagged_users(self) -> int:
        return int(self.flags["user_id"].nunique())

    def scores_with_flags(self) -> pd.DataFrame:
        """``scores`` plus a ``flag`` column: the user's flags joined by ", " (empty when none)."""
        joined = self.flags.groupby("user_id")["flag"].agg(", ".join)
        table = self.scores.copy()
        table["flag"] = table["user_id"].map(joined).fillna("")
        return table

    def most_at_risk(self, count: int = TOP_USERS) -> pd.DataFrame:
        """The ``count`` users with the highest churn_prob (ties: higher ltv_pred, then user_id)."""
        return _top(self.scores_with_flags(), ["churn_prob", "ltv_pred"], count)

    def most_valuable(self, count: int = TOP_USERS) -> pd.DataFrame:
        """The ``count`` users with the highest ltv_pred (ties: lower churn_prob, then user_id)."""
        table = self.scores_with_flags()
        ordered = table.assign(_keep=-table["churn_prob"])
        return _top(ordered, ["ltv_pred", "_keep"], count).drop(columns="_keep")

    def summary(self) -> str:
        """One line for the CLI and the page."""
        return (
            f"scored {len(self.scores):,} users from {self.events.rows_accepted:,} events of {self.source} "
            f"with the {self.model_kind} model at {pd.Timestamp(self.as_of).isoformat()} "
            f"in {self.seconds:.1f} s"
        )


def _top(table: pd.DataFrame, columns: list[str], count: int) -> pd.DataFrame:
    ordered = table.sort_values([*columns, "user_id"], ascending=[False] * len(columns) + [True])
    return ordered.head(count).reset_index(drop=True)


def check_upload_size(path: Path, max_bytes: int = MAX_UPLOAD_BYTES, name: str | None = None) -> None:
    """Refuse a file larger than ``max_bytes`` (before reading it)."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise TenureError(
            f"{name or path} is {size / 1024**2:,.1f} MiB; ad hoc scoring reads files of at most "
            f"{max_bytes / 1024**2:,.1f} MiB (MAX_UPLOAD_BYTES)",
            LIMIT_HINT,
        )


def file_as_of(store: Store) -> dt.datetime:
    """The default T of an upload: UTC midnight of the day of its last event.

    Scoring needs every user's history observed up to T, so T may not pass the file's end; the
    last day is usually partial (an extract taken during the day), so it is left out, as a model's
    own as-of date is a midnight.
    """
    last = store.query_one("SELECT max(event_time) FROM events")[0]
    if last is None:
        raise TenureError("the file has no events", "give a file with events")
    return pd.Timestamp(last).normalize().to_pydatetime()


def _check_events(store: Store, name: str, as_of: dt.datetime, max_events: int) -> tuple[int, int]:
    """Refuse too many events or an as-of date the file cannot be scored at; (users, users scored)."""
    events, users, scored, first, last = store.query_one(
        "SELECT count(*), count(DISTINCT user_key), "
        "count(DISTINCT user_key) FILTER (WHERE event_time < ?), min(event_time), max(event_time) FROM events",
        [as_of],
    )
    if events > max_events:
        raise TenureError(
            f"{name} has {events:,} events; ad hoc scoring takes at most {max_events:,} (MAX_SCORE_EVENTS)",
            LIMIT_HINT,
        )
    moment = pd.Timestamp(as_of).isoformat()
    if pd.Timestamp(as_of) > pd.Timestamp(last):
        raise TenureError(
            f"the as-of date {moment} is after the last event of {name} ({pd.Timestamp(last).isoformat()})",
            "score at a date on or before the file's last event",
        )
    if scored == 0:
        raise TenureError(
            f"{name} has no event before the as-of date {moment} (its first: {pd.Timestamp(first).isoformat()})",
            "choose a later as-of date",
        )
    return int(users), int(scored)


def _add_unknown_attributes(store: Store, columns: tuple[str, ...]) -> None:
    """Give the private ``users`` table the training attribute columns it lacks, all NULL (unknown)."""
    if not columns:
        return
    with store.transaction() as cursor:
        for column in columns:
            cursor.execute(f"ALTER TABLE users ADD COLUMN {quote_identifier(column)} VARCHAR")


def _score_in_batches(
    store: Store, model_dir: Path, as_of: dt.datetime, users: int, batch_users: int, progress: Progress
) -> tuple[pd.DataFrame, int]:
    """``score_model`` over batches of users (module docstring, step 4); (scores, batches)."""
    batches = max(1, math.ceil(users / max(1, batch_users)))
    if batches == 1:
        return score_model(store, model_dir, as_of, progress=progress), 1
    with store.transaction() as cursor:
        cursor.execute("CREATE TABLE upload_events AS SELECT * FROM events")
        cursor.execute("DELETE FROM events")
    frames = []
    for batch in range(batches):
        with store.transaction() as cursor:
            cursor.execute("DELETE FROM events")
            cursor.execute(
                "INSERT INTO events SELECT * FROM upload_events WHERE user_key % ? = ?", [batches, batch]
            )
            cursor.execute(
                "INSERT INTO events SELECT * FROM upload_events "
                "WHERE NOT EXISTS (SELECT 1 FROM events WHERE event_time >= ?) "
                "ORDER BY event_time DESC, user_id LIMIT 1",
                [as_of],
            )

        def batch_progress(fraction: float, message: str, batch: int = batch) -> None:
            progress((batch + fraction) / batches, f"batch {batch + 1}/{batches}: {message}")

        frames.append(score_model(store, model_dir, as_of, progress=batch_progress))
    scores = pd.concat(frames, ignore_index=True).sort_values("user_id").reset_index(drop=True)
    return scores, batches


def score_upload(
    events_path: str | Path,
    model_dir: str | Path,
    as_of: dt.datetime | None,
    *,
    column_map: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    skip_bad_rows: bool = False,
    rejects_path: str | Path | None = None,
    users_path: str | Path | None = None,
    source_name: str | None = None,
    progress: Progress | None = None,
    batch_users: int = SCORE_BATCH_USERS,
    max_events: int = MAX_SCORE_EVENTS,
    max_bytes: int = MAX_UPLOAD_BYTES,
    min_events: int = MIN_EVENTS,
    min_history_days: float = MIN_HISTORY_DAYS,
) -> UploadScoreReport:
    """Score the users of an events file at ``as_of`` with the model in ``model_dir`` (module docstring).

    Args:
        events_path: a CSV (any delimiter, optionally gzip) or Parquet file of events.
        model_dir: a model folder written by ``train`` (holding model.json).
        as_of: T, a naive UTC datetime; None = ``file_as_of``, midnight of the file's last day.
        column_map, constants, skip_bad_rows, rejects_path: as ``core.ingest.ingest_file``.
        users_path: an optional users file (attributes), loaded the same way.
        source_name: the file's name in messages (default the file name; the page passes the
            uploaded name).
        progress: called with (fraction done, message).
        batch_users, max_events, max_bytes: the batch size and the limits.
        min_events, min_history_days: the thresholds of the flags (core/models/drift.py).

    Raises:
        BadRowsError: the file has bad rows and ``skip_bad_rows`` is off.
        TenureError: the model folder, the file, its size or the as-of date cannot be used.
    """
    started = time.perf_counter()
    progress = progress or _no_progress
    events_path, model_dir = Path(events_path), Path(model_dir)
    name = source_name or events_path.name
    kind = model_kind(model_dir)
    if not events_path.is_file():
        raise TenureError(f"{name} does not exist", "give the path of an events file")
    check_upload_size(events_path, max_bytes, name)
    if users_path is not None:
        check_upload_size(Path(users_path), max_bytes)
    progress(0.0, f"reading {name}")
    with Store(":memory:") as store:
        try:
            events = ingest_file(
                store,
                events_path,
                table="events",
                column_map=column_map,
                constants=constants,
                skip_bad_rows=skip_bad_rows,
                rejects_path=None if rejects_path is None else Path(rejects_path),
                source_name=name,
            )
        except BadRowsError as error:
            raise BadRowsError(
                error.message.replace(str(events_path), name).replace("nothing loaded", "nothing scored"),
                bad_rows_hint("score the good rows with --skip-bad-rows"),
                error.bad_rows,
            ) from error
        users = None if users_path is None else ingest_file(store, Path(users_path), table="users")
        as_of = file_as_of(store) if as_of is None else pd.Timestamp(as_of).to_pydatetime()
        users_in_file, users_scored = _check_events(store, name, as_of, max_events)
        progress(0.3, f"checking {events.rows_accepted:,} events against the model's training data")
        drift = drift_report(store, load_training_profile(model_dir), as_of)
        _add_unknown_attributes(store, drift.missing_attributes)
        flags = history_flags(store, as_of, min_events, min_history_days)

        def scoring_progress(fraction: float, message: str) -> None:
            progress(0.4 + 0.55 * fraction, message)

        scores, batches = _score_in_batches(
            store, model_dir, as_of, users_scored, batch_users, scoring_progress
        )
    progress(1.0, f"scored {len(scores):,} users")
    return UploadScoreReport(
        source=name,
        model_dir=model_dir,
        model_kind=kind,
        as_of=as_of,
        scores=scores[list(SCORE_COLUMNS)],
        flags=flags[list(FLAG_COLUMNS)],
        drift=drift,
        events=events,
        users=users,
        users_in_file=users_in_file,
        users_not_scored=users_in_file - users_scored,
        batches=batches,
        seconds=time.perf_counter() - started,
    )


def flags_path(out: str | Path) -> Path:
    """The flags file beside a scores file: ``scores.csv`` -> ``scores.flags.csv``."""
    out = Path(out)
    return out.with_name(out.stem + FLAGS_SUFFIX)


def model_folders(root: str | Path = DEFAULT_MODELS_DIR) -> list[Path]:
    """Folders under ``root`` (at any depth) holding a ``model.json``, sorted; none when it is missing."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(path.parent for path in root.rglob(MODEL_FILE))
