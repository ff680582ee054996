"""Which torch device the sequence models run on: CUDA, then Apple MPS, then the CPU.

The choice is made once per run and recorded in metrics.json and model.json, so a figure can
always be traced to the hardware that produced it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import TenureError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else MPS, else CPU; a named device must be available."""
    import torch

    if requested not in DEVICE_CHOICES:
        raise TenureError(f"unknown device '{requested}'", f"use one of {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise TenureError(
            "--device cuda was asked for but no CUDA GPU is available", "use --device auto or cpu"
        )
    if requested == "mps" and not mps:
        raise TenureError(
            "--device mps was asked for but Apple MPS is not available", "use --device auto or cpu"
        )
    return torch.device(requested)
