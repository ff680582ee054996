"""The CDNOW built-in dataset: the shipped file matches a fresh conversion; the store adds up."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

import core.store
from core.cdnow import SHIPPED_EVENTS, SOURCE_DESCRIPTION, build_cdnow_store, convert_cdnow
from core.store import Store

MASTER = Path(core.store.PROJECT_ROOT).parent / "shared" / "datasets" / "cdnow" / "CDNOW_master.txt.gz"


def master_frame() -> pd.DataFrame:
    if not MASTER.exists():
        pytest.skip(f"CDNOW master file not found at {MASTER} (see /work/shared/datasets/README.md)")
    return pd.read_csv(MASTER, sep=r"\s+", dtype={"customer_id": str, "date": str})


def test_shipped_file_equals_a_fresh_conversion(tmp_path):
    master_frame()
    fresh = tmp_path / "cdnow_events.csv.gz"
    assert convert_cdnow(MASTER, fresh) == 69_659
    assert gzip.decompress(fresh.read_bytes()) == gzip.decompress(SHIPPED_EVENTS.read_bytes())


@pytest.fixture(scope="module")
def cdnow_store(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("cdnow") / "cdnow.duckdb"
    steps: list[float] = []
    summary = build_cdnow_store(path, progress=lambda fraction, message: steps.append(fraction))
    assert steps[0] == 0.0 and steps[-1] == 1.0
    return path, summary


def test_store_counts_match_the_raw_file(cdnow_store):
    raw = master_frame()
    path, summary = cdnow_store
    assert int(raw.duplicated().sum()) == 255  # same-day repeat purchases, all kept
    with Store(path, read_only=True) as store:
        rows, users, revenue = store.query_one(
            "SELECT count(*), count(DISTINCT user_id), sum(revenue) FROM events"
        )
        history = store.query_one(
            "SELECT source, rows_accepted, rows_rejected, duplicates_dropped FROM load_history"
        )
        assert store.query_one("SELECT count(*) FROM users")[0] == 23_570
        assert store.meta() == {"dataset": "cdnow", "source": SOURCE_DESCRIPTION}
    assert users == raw["customer_id"].nunique() == 23_570
    assert rows == len(raw) == 69_659
    assert history == ("cdnow_events.csv.gz", rows, 0, 0)
    assert "0 exact duplicate rows dropped" in summary
    assert revenue == pytest.approx(raw["dollar_value"].sum(), abs=1e-6)


def test_events_and_users_follow_the_conversion_rules(cdnow_store):
    raw = master_frame()
    path, _ = cdnow_store
    with Store(path, read_only=True) as store:
        events = store.query_df(
            "SELECT user_id, event_time, event_name, revenue, properties->>'number_of_cds' AS cds FROM events"
        )
        users = store.query_df("SELECT user_id, signup_time FROM users")
    assert set(events["event_name"]) == {"purchase"}
    assert events["cds"].astype(int).sum() == raw["number_of_cds"].sum()
    first_purchase = pd.to_datetime(raw.groupby("customer_id")["date"].min(), format="%Y%m%d")
    signup = users.set_index("user_id")["signup_time"]
    assert signup.sort_index().equals(
        first_purchase.sort_index().rename("signup_time").rename_axis("user_id")
    )
    assert events["event_time"].min() == pd.Timestamp("1997-01-01")
    assert events["event_time"].max() == pd.Timestamp("1998-06-30")
