"""Pooling of per-frame embeddings over time."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TemporalHead", "TEMPORAL_HEADS"]

TEMPORAL_HEADS = ("mean", "max", "attention")


class TemporalHead(nn.Module):
    """
    Pool ``k`` frame embeddings into one: ``mean``, ``max`` or ``attention`` (a learned softmax weight per frame).

    Shapes: input ``B×k×F`` → output ``B×F``.
    """

    def __init__(self, in_features: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in TEMPORAL_HEADS:
            raise ValueError(f"temporal_head must be one of {TEMPORAL_HEADS}, got {mode!r}.")
        self.mode = mode
        self.score = nn.Linear(in_features, 1) if mode == "attention" else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.score is not None:
            w = torch.softmax(self.score(z), dim=1)  # B×k×1
            return (w * z).sum(1)
        return z.mean(1) if self.mode == "mean" else z.amax(1)
