"""The sampler interface shared by every subsampling method."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from monai_das.networks.blocks.gumbel import indices_to_matrix, select_frames

__all__ = ["SamplerOutput", "BaseSampler", "is_exporting", "check_count", "parameter_dtype"]


class SamplerOutput(NamedTuple):
    """
    What a sampler returns.

    - ``frames``: ``B×k×C×H×W``, equal to ``P·x``;
    - ``matrix``: ``P``, ``B×k×T``, rows one-hot in the forward pass (soft gradients for learned samplers);
    - ``indices``: ``B×k`` long, ascending (temporal order); row ``j`` of ``P`` is one-hot at ``indices[:, j]``.
    """

    frames: torch.Tensor
    matrix: torch.Tensor
    indices: torch.Tensor


def is_exporting() -> bool:
    """True while tracing, scripting or exporting to ONNX (data-dependent checks are skipped then)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def check_count(value: Any, name: str) -> int:
    """
    ``value`` as an ``int >= 1`` (a number of frames, channels, classes...). Integers and integral floats (``4.0``,
    as a config may give) pass; ``2.7``, ``0``, ``True`` or ``"4"`` raise a ``ValueError`` naming ``name`` and the
    value, instead of a ``TypeError`` from deep inside ``nn.Linear`` or a silently truncated count.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and not isinstance(value, numbers.Integral):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """dtype of the first floating point parameter of ``module`` (``None`` when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class BaseSampler(nn.Module):
    """
    Base class of the samplers: ``forward(x)`` with ``x`` of shape ``B×T×C×H×W`` returns a :class:`SamplerOutput`
    with ``k = num_samples`` distinct frames.

    Subclasses implement :meth:`sampling_matrix` (a one-hot ``B×k×T`` matrix, in any row order) or
    :meth:`sampling_indices` (``B×k`` distinct indices, in any order).

    Floating point input is cast to the dtype of the sampler's parameters (e.g. float16/bfloat16 input to a float32
    sampler is computed, and returned, in float32; see :meth:`cast_input`); samplers without parameters keep the input
    dtype. Integer input is refused.

    Args:
        num_samples: ``k``, the number of frames kept.
    """

    #: whether the sampler has learnable parameters that need the straight-through gradient
    learnable: bool = False

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.num_samples = check_count(num_samples, "num_samples (k)")

    def num_kept(self, num_frames: int) -> int:
        """``k`` for an input of ``num_frames`` frames."""
        return self.num_samples

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` for a wrong shape, ``k > T`` or non-finite values."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape B×T×C×H×W, got {type(x).__name__}.")
        if x.ndim != 5:
            raise ValueError(f"expected input of shape B×T×C×H×W (5 dimensions), got shape {tuple(x.shape)}.")
        if any(s == 0 for s in x.shape):
            raise ValueError(f"input has an empty dimension: shape {tuple(x.shape)}.")
        k, t = self.num_kept(x.shape[1]), x.shape[1]
        if k > t:
            raise ValueError(f"cannot keep k={k} frames of an input with T={t} frames (k must be <= T).")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating point input, got dtype {x.dtype}.")
        # one reduction instead of an element-wise pass: NaN/Inf propagate into the sum
        if not is_exporting() and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or Inf values.")

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """
        Floating ``x`` in the dtype of the sampler's parameters: mixing dtypes would fail in the first matmul with
        an error that names neither the input nor the sampler. Under ``torch.autocast`` the parameters stay float32
        and autocast still picks the matmul precision.
        """
        dtype = parameter_dtype(self)
        return x if dtype is None or x.dtype == dtype or not x.is_floating_point() else x.to(dtype)

    def sampling_indices(self, x: torch.Tensor) -> torch.Tensor:
        """``B×k`` distinct frame indices (any order)."""
        raise NotImplementedError

    def sampling_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """``B×k×T`` one-hot sampling matrix (any row order)."""
        return indices_to_matrix(self.sampling_indices(x), x.shape[1], x.dtype)

    def forward(self, x: torch.Tensor) -> SamplerOutput:
        self.check_input(x)
        x = self.cast_input(x)
        return self.apply_matrix(self.sampling_matrix(x), x)

    @staticmethod
    def apply_matrix(matrix: torch.Tensor, x: torch.Tensor) -> SamplerOutput:
        """Sort the rows of ``matrix`` (B×k×T) by frame index and compute ``P·x``."""
        indices, order = matrix.detach().argmax(-1).sort(dim=1)
        matrix = torch.gather(matrix, 1, order[..., None].expand_as(matrix))
        return SamplerOutput(select_frames(matrix, x, indices), matrix, indices)
