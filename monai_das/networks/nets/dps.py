"""DPS: Deep Probabilistic Subsampling (Huijben et al., ICLR 2020) — learned, input-independent frame logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from monai_das.networks.blocks.gumbel import gumbel_top_k
from monai_das.networks.nets.sampler import BaseSampler

__all__ = ["DPSSampler"]


class DPSSampler(BaseSampler):
    """
    Learned static logits ``θ`` (one per frame position) with Gumbel top-``k`` sampling and a straight-through
    estimator in training; deterministic top-``k`` of ``θ`` in ``eval()``. The same frames for every input. The
    logits do not depend on ``k``: any ``k <= T`` can be asked at inference.

    Args:
        num_samples: ``k``.
        num_frames: ``T``, fixed by the learned logits.
        tau: softmax temperature of the relaxation.
    """

    learnable = True
    supports_warmup = True
    has_scores = True

    def __init__(self, num_samples: int, num_frames: int, tau: float = 1.0) -> None:
        super().__init__(num_samples)
        self.tau = float(tau)
        self.logits = nn.Parameter(1e-3 * torch.randn(self.fix_num_frames(num_frames)))

    def select(self, x: torch.Tensor, num_samples: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits[None].expand(x.shape[0], self.num_frames)
        self.keep_scores(logits)  # a relevance loss, when on, teaches the logits (also in the warm-up)
        if self.training and self.warming_up:  # encoder warm-up: k frames at random, no straight-through gradient
            return gumbel_top_k(x.new_zeros(x.shape[:2]), num_samples, noisy=True)
        return gumbel_top_k(logits, num_samples, self.tau, noisy=self.training)
