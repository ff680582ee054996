"""Training in a background thread, with progress and cancellation, for the app.

Streamlit reruns a page's script on every click; a training run of minutes cannot live inside one
run. ``start_training`` starts ``train_models`` in a daemon thread and returns a ``TrainingJob``
the page keeps in its session state: each script run reads ``job.snapshot()`` (fraction done,
message, outcome) and may call ``job.cancel()``.

- **Progress**: ``train_models`` reports (fraction, message) through its callback; the job keeps
  the latest pair, scaled to [0, 0.95] for training and (0.95, 1] for registering.
- **Cancel**: sets an event that the progress callback checks; the next report raises
  ``TrainingCancelled`` inside the training thread, which stops it. A model being fitted is not
  interrupted: the cancel takes effect at its next report (between steps). The run's folder is
  then deleted and nothing is registered, so a cancelled run leaves neither files nor registry
  rows. Once registration has begun the run completes.
- **Store**: the thread reads through its own cursors and registers through
  ``Store.transaction()``, the store's single writer, so it needs the app's ``Store`` (the only
  handle on the file that may write) and readers are never blocked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from core.errors import TenureError
from core.models import registry
from core.models.gbm import GBMConfig
from core.models.sequence_config import SequenceConfig
from core.models.spec import ModelSpec
from core.models.training import train_models
from core.population import Filters
from core.store import Store

MODELS_DIR_ENV_VAR = "TENURE_MODELS_DIR"
TRAINING_SHARE = 0.95
STATUSES = ("running", "done", "failed", "cancelled")

logger = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised inside the training thread by the progress callback after ``cancel()``."""


@dataclasses.dataclass(frozen=True)
class JobSnapshot:
    """What a job shows at one moment.

    Attributes:
        status: ``running``, ``done``, ``failed`` or ``cancelled``.
        fraction: share of the work done, in [0, 1].
        message: the latest progress message (or the outcome).
        run_dir: the run's folder (deleted again when the run fails or is cancelled).
        model_ids: the registered model ids (``done`` only).
        error: the problem when ``failed``; a ``TenureError`` when the user can fix it.
    """

    status: str
    fraction: float
    message: str
    run_dir: Path
    model_ids: tuple[str, ...] = ()
    error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.status != "running"


def default_models_dir(store: Store) -> Path:
    """Where the app writes runs: ``$TENURE_MODELS_DIR``, else ``models/<store name>/`` beside the store."""
    configured = os.environ.get(MODELS_DIR_ENV_VAR)
    if configured:
        return Path(configured)
    return store.path.resolve().parent / "models" / store.path.stem


def new_run_dir(models_dir: str | Path, now: dt.datetime | None = None) -> Path:
    """Create and return an empty run folder named by the UTC time (``YYYYmmdd-HHMMSS``, then -2, -3...)."""
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        candidate = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise TenureError(f"too many runs named {stamp} in {root}", "wait a second and train again")


class TrainingJob:
    """One background training run: train, then register (module docstring)."""

    def __init__(
        self, run_dir: Path, work: Callable[[Callable[[float, str], None]], tuple[str, ...]]
    ) -> None:
        self.run_dir = run_dir
        self._work = work
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._snapshot = JobSnapshot("running", 0.0, "starting", run_dir)
        self._thread = threading.Thread(target=self._run, name=f"training {run_dir.name}", daemon=True)

    def start(self) -> TrainingJob:
        self._thread.start()
        return self

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return self._snapshot

    def cancel(self) -> None:
        """Ask the run to stop at its next progress report."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> JobSnapshot:
        """Block until the run has finished (or ``timeout`` seconds passed); the latest snapshot."""
        self._thread.join(timeout)
        return self.snapshot()

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._snapshot = dataclasses.replace(self._snapshot, **changes)

    def _progress(self, fraction: float, message: str) -> None:
        if self._cancel.is_set():
            raise TrainingCancelled(message)
        self._update(fraction=min(max(float(fraction), 0.0), 1.0), message=message)

    def _run(self) -> None:
        try:
            model_ids = self._work(self._progress)
        except TrainingCancelled:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._update(status="cancelled", message="cancelled: nothing was saved or registered")
        except Exception as error:  # reported to the page; a bug keeps its traceback in the log
            if not isinstance(error, TenureError):
                logger.exception("training run %s failed", self.run_dir)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._update(status="failed", message=f"failed: {error}", error=error)
        else:
            self._update(
                status="done",
                fraction=1.0,
                message=f"registered {', '.join(model_ids)}",
                model_ids=tuple(model_ids),
            )


def start_training(
    store: Store,
    spec: ModelSpec,
    models: Sequence[str],
    split: str,
    seed: int,
    models_dir: str | Path,
    *,
    filters: Filters | None = None,
    gbm_config: GBMConfig | None = None,
    sequence_config: SequenceConfig | None = None,
) -> TrainingJob:
    """Train ``models`` into a new run folder under ``models_dir`` in the background, then register it.

    Args:
        store: the app's store, open for writing (the registry is written through its
            ``transaction()``).
        spec, models, split, seed, filters, gbm_config, sequence_config: as for ``train_models``.
        models_dir: the folder that receives the run's folder (``new_run_dir``).

    Returns:
        The started job.
    """
    if store.read_only:
        raise TenureError(f"store {store.path} is open read-only", "open it for writing to register models")
    run_dir = new_run_dir(models_dir)
    data_version = store.version()

    def work(progress: Callable[[float, str], None]) -> tuple[str, ...]:
        def training_progress(fraction: float, message: str) -> None:
            progress(fraction * TRAINING_SHARE, message)

        train_models(
            store,
            spec,
            models,
            split,
            seed,
            run_dir,
            training_progress,
            filters=filters,
            gbm_config=gbm_config,
            sequence_config=sequence_config,
        )
        progress(TRAINING_SHARE, "registering the models")
        return tuple(registry.register(store, run_dir, data_version=data_version))

    return TrainingJob(run_dir, work).start()
