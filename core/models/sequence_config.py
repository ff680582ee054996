"""The sequence models' settings, apart from the network code so that forms and flags can build
them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import TenureError

ENCODERS = ("seq", "gru")


@dataclass(frozen=True)
class SequenceConfig:
    """Settings of a sequence model; the defaults are the ones the benchmark reports."""

    encoder: str = "seq"
    max_events: int = 48
    hidden: int = 32
    layers: int = 2
    heads: int = 2  # head width 16: the CPU attention kernel is a third faster than with 4 heads of 8
    dropout: float = 0.1
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    max_epochs: int = 30
    patience: int = 3
    early_stopping_share: float = 0.1
    clip_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    score_batch_size: int = 2048
    score_shard_users: int = 50_000

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise TenureError(f"unknown encoder '{self.encoder}'", f"use one of {', '.join(ENCODERS)}")
        for name in ("max_events", "hidden", "layers", "heads", "batch_size", "max_epochs", "patience"):
            if int(getattr(self, name)) < 1:
                raise TenureError(
                    f"{name} must be at least 1, not {getattr(self, name)}", "use a positive number"
                )
        if self.hidden % self.heads:
            raise TenureError(
                f"hidden size {self.hidden} is not a multiple of {self.heads} attention heads",
                "choose sizes where heads divides hidden",
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})
