"""Samplers without learnable parameters: full sequence, uniform and random."""

from __future__ import annotations

from typing import Any

import torch

from monai_das.networks.nets.sampler import BaseSampler, SamplerOutput
from monai_das.networks.utils import uniform_indices

__all__ = ["FullSequenceSampler", "UniformSampler", "RandomSampler"]


class FullSequenceSampler(BaseSampler):
    """
    Keeps every frame (``k = T``, ``P`` the identity). The constructor's ``num_samples`` is accepted and ignored;
    ``forward(x, num_samples=k)`` accepts only ``k = T`` (another ``k`` is refused: :class:`UniformSampler` keeps
    ``k`` evenly spaced frames).
    """

    def __init__(self, num_samples: int | None = None) -> None:
        super().__init__(1)
        self.num_samples = 0  # 0 means "all frames"

    any_k = False
    export_any_k = False
    fixed_k_reason = "it keeps every frame; the 'uniform' sampler keeps k evenly spaced frames"

    def num_kept(self, num_frames: int, num_samples: Any = None) -> int:
        return num_frames

    def sampling_indices(self, x: torch.Tensor, num_samples: Any) -> torch.Tensor:
        b, t = x.shape[:2]
        return torch.arange(t, device=x.device).expand(b, t)

    def forward(self, x: torch.Tensor, num_samples: Any = None) -> SamplerOutput:
        self.check_input(x, num_samples)
        x = self.cast_input(x)
        b, t = x.shape[:2]
        indices = self.sampling_indices(x, t)
        # P is the identity and P·x is x itself: no selection to run
        return SamplerOutput(x, torch.eye(t, dtype=x.dtype, device=x.device).expand(b, t, t), indices)


class UniformSampler(BaseSampler):
    """Keeps ``k`` frames evenly spread: frame ``floor((j + 0.5)·T/k)`` for ``j = 0..k-1``."""

    def sampling_indices(self, x: torch.Tensor, num_samples: Any) -> torch.Tensor:
        b, t = x.shape[:2]
        return uniform_indices(t, num_samples, device=x.device).expand(b, num_samples)


class RandomSampler(BaseSampler):
    """Keeps ``k`` distinct frames drawn uniformly at random for every input (training and inference alike).

    Uses torch's global random generator, so ``torch.manual_seed`` / ``monai.utils.set_determinism`` make it
    reproducible.
    """

    random_in_eval = True

    def sampling_indices(self, x: torch.Tensor, num_samples: Any) -> torch.Tensor:
        b, t = x.shape[:2]
        return torch.rand(b, t, device=x.device).argsort(dim=1)[:, :num_samples]
