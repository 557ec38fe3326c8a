"""Pooling of per-frame embeddings over time."""

from __future__ import annotations

import torch
import torch.nn as nn

from monai_das.networks.utils import SavedSettings, check_count

__all__ = ["TemporalHead", "TEMPORAL_HEADS"]

TEMPORAL_HEADS = ("mean", "max", "attention", "gated")


class TemporalHead(SavedSettings, nn.Module):
    """
    Pool ``k`` frame embeddings into one: ``mean``, ``max``, ``attention`` (a learned softmax weight per frame from a
    linear score) or ``gated``: gated attention multiple-instance pooling (Ilse, Tomczak & Welling, *Attention-based
    Deep Multiple Instance Learning*, ICML 2018), weights ``softmax_k(wᵀ(tanh(V·z_k) ⊙ σ(U·z_k)))`` over the frames,
    ``V``, ``U`` of width ``hidden_features``.

    Args:
        in_features: ``F``, the width of a frame embedding.
        mode: one of :data:`TEMPORAL_HEADS`.
        hidden_features: width of the ``gated`` head's ``V`` and ``U`` (ignored by the other heads).

    Shapes: input ``B×k×F`` → output ``B×F``.

    State dict: the mode is saved with the weights (``settings``): ``mean`` and ``max`` have none of their own, and
    weights saved with one are refused by a head of the other.
    """

    settings_hint = "build it with the training run's temporal_head (the bundle's model card records it)"

    def __init__(self, in_features: int, mode: str = "mean", hidden_features: int = 128) -> None:
        super().__init__()
        if mode not in TEMPORAL_HEADS:
            raise ValueError(f"temporal_head must be one of {TEMPORAL_HEADS}, got {mode!r}.")
        self.mode = mode
        self.score = nn.Linear(in_features, 1) if mode == "attention" else None
        self.gated: nn.ModuleDict | None = None
        if mode == "gated":
            hidden = check_count(hidden_features, "hidden_features")
            self.gated = nn.ModuleDict({
                "value": nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh()),
                "gate": nn.Sequential(nn.Linear(in_features, hidden), nn.Sigmoid()),
                "score": nn.Linear(hidden, 1),
            })

    def _settings_tensor(self) -> torch.Tensor:
        """``[mode index in TEMPORAL_HEADS]`` as int64."""
        return torch.tensor([TEMPORAL_HEADS.index(self.mode)], dtype=torch.int64)

    @staticmethod
    def _settings_of(v: list[int]) -> dict:
        return {"mode": TEMPORAL_HEADS[v[0]]} if len(v) == 1 and 0 <= v[0] < len(TEMPORAL_HEADS) else {"unreadable": v}

    def weights(self, z: torch.Tensor) -> torch.Tensor | None:
        """Softmax weights ``B×k×1`` of the frames (``attention``, ``gated``); ``None`` for ``mean`` and ``max``."""
        if self.score is not None:
            return torch.softmax(self.score(z), dim=1)
        if self.gated is not None:
            g = self.gated
            return torch.softmax(g["score"](g["value"](z) * g["gate"](z)), dim=1)
        return None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.weights(z)
        if w is not None:
            return (w * z).sum(1)
        return z.mean(1) if self.mode == "mean" else z.amax(1)
