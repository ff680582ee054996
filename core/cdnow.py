"""The CDNOW cohort as a built-in dataset: conversion to canonical events, and its store.

CDNOW (Fader, Hardie & Lee 2005, "Counting your customers the easy way", Marketing Science
24(2)): every customer who first bought at the online music store CDNOW in the first quarter of
1997 (23,570 customers) and all their purchases to the end of June 1998, one row per purchase
record: customer id, date (YYYYMMDD), number of CDs, dollar value.

``convert_cdnow`` turns the whitespace-separated master file into a canonical events CSV:
user_id = the customer id as written (zero-padded, ``00001``), event_time = the date (midnight
UTC; the file has no time of day), event_name = ``purchase``, revenue = the dollar value (some
are 0), and ``number_of_cds`` and ``source_line`` (the record's line in the master file) as extra
columns, which the ingest puts into ``properties`` (``{"number_of_cds": 2, "source_line": 17}``). Values are copied as text, so revenue keeps the file's
cents exactly. The output is byte-for-byte reproducible (gzip without a timestamp), which is how
the shipped ``sample_data/cdnow_events.csv.gz`` is checked against a fresh conversion.

The master file has records that repeat in every column (same customer, day, CD count and value:
255 of 69,659): repeat purchases on one day, not copies of one row. ``source_line`` keeps them
apart, so the ingest's exact-duplicate rule (meant for rows written twice) keeps every purchase
and the store holds all 69,659 rows and the file's total revenue.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from core.errors import TenureError
from core.ingest import ingest_file
from core.store import PROJECT_ROOT, SAMPLE_DATA_DIR, Store

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

SHIPPED_EVENTS = SAMPLE_DATA_DIR / "cdnow_events.csv.gz"
SHIPPED_SOURCE_NAME = "cdnow_events.csv.gz"
SHARED_MASTER = PROJECT_ROOT.parent / "shared" / "datasets" / "cdnow" / "CDNOW_master.txt.gz"
DATASET_NAME = "cdnow"
SOURCE_DESCRIPTION = "CDNOW cohort (Fader, Hardie & Lee 2005), purchases Jan 1997 - Jun 1998"
MASTER_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def read_cdnow_master(source: Path) -> pd.DataFrame:
    """The master file as text columns customer_id, date, number_of_cds, dollar_value."""
    if not Path(source).exists():
        raise TenureError(f"CDNOW master file {source} does not exist", "point to CDNOW_master.txt(.gz)")
    frame = pd.read_csv(source, sep=r"\s+", dtype=str, keep_default_na=False)
    if tuple(frame.columns) != MASTER_COLUMNS:
        raise TenureError(
            f"{source} does not look like CDNOW_master.txt: columns {list(frame.columns)}",
            f"expected the header {' '.join(MASTER_COLUMNS)}",
        )
    return frame


def convert_cdnow(source: Path, target: Path) -> int:
    """Write the canonical events CSV (gzip) of the CDNOW master file; returns its row count."""
    master = read_cdnow_master(source)
    dates = master["date"]
    events = pd.DataFrame(
        {
            "user_id": master["customer_id"],
            "event_time": dates.str[0:4] + "-" + dates.str[4:6] + "-" + dates.str[6:8],
            "event_name": "purchase",
            "revenue": master["dollar_value"],
            "number_of_cds": master["number_of_cds"],
            "source_line": range(2, len(master) + 2),
        }
    )
    text = events.to_csv(index=False, lineterminator="\n")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        packed.write(text.encode("utf-8"))
    os.replace(partial, target)
    logger.info("converted %s rows of %s into %s", len(events), source, target)
    return len(events)


def build_cdnow_store(path: Path, progress: ProgressCallback | None = None) -> str:
    """Build a fresh store at ``path`` from the shipped CDNOW events; returns a one-line summary.

    Loads ``sample_data/cdnow_events.csv.gz`` through ``ingest_file`` (so it lands in
    ``load_history`` like any file), then fills ``users`` with one row per customer whose
    signup_time is their first purchase (the cohort is defined by first purchase), and records
    ``dataset`` and ``source`` in ``store_meta``.
    """
    path = Path(path)
    report = progress or (lambda fraction, message: None)
    if path.exists():
        raise TenureError(f"store {path} already exists", "build the CDNOW store into a new file")
    if not SHIPPED_EVENTS.exists():
        raise TenureError(
            f"{SHIPPED_EVENTS} is missing",
            "restore it from the repository, or rebuild it with core.cdnow.convert_cdnow",
        )
    report(0.0, "loading CDNOW purchases")
    with Store(path) as store:
        loaded = ingest_file(store, SHIPPED_EVENTS, table="events", source_name=SHIPPED_SOURCE_NAME)
        report(0.8, "deriving customers")
        with store.transaction() as cursor:
            cursor.execute(
                "INSERT INTO users (user_id, signup_time) SELECT user_id, min(event_time) FROM events "
                "WHERE user_id NOT IN (SELECT user_id FROM users) GROUP BY user_id"
            )
            store.set_meta(cursor, "dataset", DATASET_NAME)
            store.set_meta(cursor, "source", SOURCE_DESCRIPTION)
        customers = store.query_one("SELECT count(*) FROM users")[0]
        with store.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    report(1.0, "CDNOW store built")
    return (
        f"cdnow: {loaded.rows_accepted:,} purchases by {customers:,} customers "
        f"({loaded.duplicates_dropped:,} exact duplicate rows dropped)"
    )
