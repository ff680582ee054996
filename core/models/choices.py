"""The names the training command and the Models page offer, kept apart from the training code.

Building the command-line parser or a page's selectors must not import LightGBM, PyTorch and
scipy.stats: every ``python -m core`` command would pay seconds for them before doing anything.
"""

from __future__ import annotations

SEQUENCE_MODELS = ("seq", "gru")
AVAILABLE_MODELS = ("btyd", "gbm", *SEQUENCE_MODELS)
PLANNED_MODELS: tuple[str, ...] = ()
MODEL_CHOICES = (*AVAILABLE_MODELS, "all")
SPLITS = ("users", "backtest")
DEVICES = ("auto", "cpu", "cuda")
