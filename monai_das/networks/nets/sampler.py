"""The sampler interface shared by every subsampling method."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from monai_das.networks.blocks.gumbel import indices_to_matrix, select_frames
from monai_das.networks.utils import check_count, check_finite, check_num_kept, refuse_scripting

__all__ = ["SamplerOutput", "BaseSampler", "is_exporting", "check_count", "parameter_dtype", "cast_to_parameters",
           "input_given_as"]

#: the shape of the input as a sampler's caller was given it (see :func:`input_given_as`)
_GIVEN_SHAPE: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar("monai_das_given_shape",
                                                                                       default=None)


@contextmanager
def input_given_as(shape: Any) -> Iterator[None]:
    """
    Within it, :meth:`BaseSampler.check_input` names ``shape`` in a refusal of the input's values: the input as the
    user gave it (a classifier's volume ``B×C×D×H×W``), not the frame sequence ``B×T×C×H×W`` the sampler got from it
    (a volume ``(1, 1, 28, 28, 28)`` was refused as ``(1, 28, 1, 28, 28)``). Nothing changes while exporting.
    """
    if is_exporting():
        yield
        return
    token = _GIVEN_SHAPE.set(tuple(int(s) for s in shape))
    try:
        yield
    finally:
        _GIVEN_SHAPE.reset(token)


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

    def detach(self) -> "SamplerOutput":
        """The same choice without the straight-through gradient (frames and matrix detached)."""
        return SamplerOutput(self.frames.detach(), self.matrix.detach(), self.indices)


def is_exporting() -> bool:
    """True while tracing, scripting or exporting (TorchScript, ONNX, ``torch.export``): data-dependent checks are
    skipped then (``torch.export`` stopped on the NaN check, a data-dependent branch)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


def parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """dtype of the first floating point parameter of ``module`` (``None`` when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def cast_to_parameters(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """
    Floating ``x`` in the dtype of ``module``'s parameters (:func:`parameter_dtype`): mixing dtypes (a float16 study
    into float32 weights) would fail in the first matmul/conv with an error that names neither the input nor the
    module. Under ``torch.autocast`` the parameters stay float32 and autocast still picks the matmul precision.
    """
    dtype = parameter_dtype(module)
    return x if dtype is None or x.dtype == dtype or not x.is_floating_point() else x.to(dtype)


class BaseSampler(nn.Module):
    """
    Base class of the samplers: ``forward(x)`` with ``x`` of shape ``B×T×C×H×W`` returns a :class:`SamplerOutput`
    with ``k = num_samples`` distinct frames; ``forward(x, num_samples=k)`` keeps another number of frames with the
    same parameters (samplers whose parameters do not depend on ``k``: ``any_k``), e.g. a frame budget chosen at
    inference.

    Subclasses implement :meth:`select` (``B×k×T`` one-hot matrix and ``B×k`` indices, any row order),
    :meth:`sampling_matrix` (the matrix only) or :meth:`sampling_indices` (``B×k`` distinct indices, any order). One
    whose parameters are tied to ``T`` sets it with :meth:`fix_num_frames`, one built for ``C`` channels sets
    :attr:`in_channels`: :meth:`check_input` refuses another ``T`` or ``C``, naming the sampler and both values.

    Floating point input is cast to the dtype of the sampler's parameters (e.g. float16/bfloat16 input to a float32
    sampler is computed, and returned, in float32; see :meth:`cast_input`); samplers without parameters keep the input
    dtype. Integer input is refused.

    Args:
        num_samples: ``k``, the number of frames kept by default.
    """

    #: whether the sampler has learnable parameters that need the straight-through gradient
    learnable: bool = False
    #: whether ``forward(x, num_samples=k)`` may keep any ``1 <= k <= T`` frames (parameters not tied to ``k``)
    any_k: bool = True
    #: whether an ONNX export can take ``k`` as an input (``k`` is a tensor size there, not an unrolled loop count)
    export_any_k: bool = True
    #: whether ``warming_up`` changes training (DAS, DPS: random subsets while the encoder warms up)
    supports_warmup: bool = False
    #: whether the sampler keeps one score per frame in :attr:`scores` when :attr:`record_scores` is on (DAS, DPS)
    has_scores: bool = False
    #: whether ``eval()`` still draws the frames at random (the ``random`` baseline): two runs keep other frames
    random_in_eval: bool = False
    #: why a sampler without ``any_k`` refuses another ``k`` (in its error message)
    fixed_k_reason: str = "its parameters are tied to k"
    #: ``T`` of a sampler whose parameters are tied to it (DPS, ADPS: :meth:`fix_num_frames`); ``None``: any ``T``
    num_frames: int | None = None
    #: ``C`` of a sampler whose frame features are built for it (DAS, ADPS); ``None``: any ``C``
    in_channels: int | None = None

    __prepare_scriptable__ = refuse_scripting  # traced or exported, never scripted

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.num_samples = check_count(num_samples, "num_samples (k)")
        #: in training, keep ``k`` frames drawn uniformly at random instead of the learned choice (the sampler gets no
        #: straight-through gradient; only :class:`monai_das.losses.FrameRelevanceLoss`, when on, teaches its scores):
        #: the encoder warm-up of :class:`monai_das.handlers.SamplerWarmupHandler`. No effect in eval.
        self.warming_up = False
        #: in training with gradients, learnable samplers keep their frame scores (``B×T`` logits) of the last
        #: forward pass in :attr:`scores`, for a loss on the selection (:class:`monai_das.losses.FrameRelevanceLoss`)
        self.record_scores = False
        self.scores: torch.Tensor | None = None

    def fix_num_frames(self, num_frames: Any) -> int:
        """Set :attr:`num_frames` (``T``, an integer ``>= k``) for a sampler whose parameters are tied to it."""
        t = check_count(num_frames, "num_frames (T)")
        if t < self.num_samples:
            raise ValueError(f"num_frames={t} must be >= num_samples={self.num_samples}.")
        self.num_frames = t
        return t

    def keep_scores(self, logits: torch.Tensor) -> None:
        """Remember ``logits`` (``B×T``) as :attr:`scores` when :attr:`record_scores` applies, else forget them."""
        self.scores = logits if self.record_scores and self.training and torch.is_grad_enabled() else None

    def num_kept(self, num_frames: int, num_samples: Any = None) -> Any:
        """``k`` for an input of ``num_frames`` frames (``num_samples`` when given, else the default)."""
        return self.num_samples if num_samples is None else num_samples

    def check_num_samples(self, num_samples: Any, num_frames: int) -> Any:
        """
        Refuse a ``k`` that is not an integer in ``1..T``, or any other ``k`` than the built one without ``any_k``;
        returns ``k`` as an ``int`` (``4.0`` or a one-element integer tensor given as ``num_samples`` become ``4``;
        ``None`` and sizes while exporting are returned as they are).
        """
        if num_samples is None or is_exporting():
            return num_samples
        k = check_num_kept(num_samples, num_frames)
        if not self.any_k and k != self.num_kept(num_frames):
            raise ValueError(f"{type(self).__name__} keeps k={self.num_kept(num_frames)} frames; it cannot keep "
                             f"k={k} ({self.fixed_k_reason}).")
        return k

    @classmethod
    def input_limit(cls, num_frames: int, dtype: torch.dtype) -> tuple[float, str] | None:
        """
        ``(max_abs, why)``: the largest ``|x|`` this sampler computes without overflow for ``num_frames`` frames in
        ``dtype`` (the dtype it computes in), and why (the end of :meth:`check_input`'s refusal); ``None``: no limit
        but finiteness (samplers without statistics of the intensities). A class method: an ONNX export of the
        sampler (:class:`~monai_das.networks.OnnxClassifier`, which knows its class name) applies the same limit.
        """
        return None

    def check_input(self, x: torch.Tensor, num_samples: Any = None) -> None:
        """Raise ``ValueError`` for a wrong shape, ``k`` outside ``1..T``, non-finite values or values beyond
        :meth:`input_limit`."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape B×T×C×H×W, got {type(x).__name__}.")
        if x.ndim != 5:
            raise ValueError(f"expected input of shape B×T×C×H×W (5 dimensions), got shape {tuple(x.shape)}.")
        if any(s == 0 for s in x.shape):
            raise ValueError(f"input has an empty dimension: shape {tuple(x.shape)}.")
        self.check_num_samples(num_samples, x.shape[1])
        k, t = self.num_kept(x.shape[1], num_samples), x.shape[1]
        if not is_exporting() and k > t:  # compared first: k and T may be symbolic sizes under torch.compile
            check_num_kept(k, t)  # raises, naming both
        if not x.is_floating_point():
            raise ValueError(f"expected a floating point input, got dtype {x.dtype}.")
        if not is_exporting():
            limit = self.input_limit(x.shape[1], parameter_dtype(self) or x.dtype)
            max_abs, beyond = limit if limit is not None else (None, "")
            given = _GIVEN_SHAPE.get()  # the caller's shape of these values (not of another tensor)
            shape = given if given is not None and math.prod(given) == x.numel() else None
            check_finite(x, "input", inf="Inf", max_abs=max_abs, beyond=beyond, shape=shape)
        # last, as the samplers checked them after the rest (k > T first: AdaptiveSubsample reads that message)
        if self.num_frames is not None and x.shape[1] != self.num_frames:
            raise ValueError(f"{type(self).__name__} was built for T={self.num_frames} frames, got T={x.shape[1]}.")
        if self.in_channels is not None and x.shape[2] != self.in_channels:
            raise ValueError(f"{type(self).__name__} was built for in_channels={self.in_channels} but the input "
                             f"B×T×C×H×W of shape {tuple(x.shape)} has C={x.shape[2]} channel(s).")

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """Floating ``x`` in the dtype of the sampler's parameters (:func:`cast_to_parameters`)."""
        return cast_to_parameters(self, x)

    def sampling_indices(self, x: torch.Tensor, num_samples: Any) -> torch.Tensor:
        """``B×k`` distinct frame indices (any order)."""
        raise NotImplementedError

    def sampling_matrix(self, x: torch.Tensor, num_samples: Any) -> torch.Tensor:
        """``B×k×T`` one-hot sampling matrix (any row order)."""
        return indices_to_matrix(self.sampling_indices(x, num_samples), x.shape[1], x.dtype)

    def select(self, x: torch.Tensor, num_samples: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """
        ``(P, indices)``: ``B×k×T`` one-hot matrix and its ``B×k`` arg-max indices (rows in any order). A sampler
        that gives indices (:meth:`sampling_indices`, :meth:`sampling_matrix` not its own) returns them as they are:
        the matrix is then built from them and not read back by an arg-max, so an exported graph, whose outputs
        need the indices only, computes no matrix at all.
        """
        gives_indices = type(self).sampling_indices is not BaseSampler.sampling_indices
        if gives_indices and type(self).sampling_matrix is BaseSampler.sampling_matrix:
            indices = self.sampling_indices(x, num_samples)
            return indices_to_matrix(indices, x.shape[1], x.dtype), indices
        matrix = self.sampling_matrix(x, num_samples)
        return matrix, matrix.detach().argmax(-1)

    def forward(self, x: torch.Tensor, num_samples: Any = None) -> SamplerOutput:
        self.check_input(x, num_samples)
        num_samples = self.check_num_samples(num_samples, x.shape[1])  # an int from here on (4.0 → 4)
        x = self.cast_input(x)
        matrix, indices = self.select(x, self.num_kept(x.shape[1], num_samples))
        return self.apply_matrix(matrix, x, indices)

    @staticmethod
    def apply_matrix(matrix: torch.Tensor, x: torch.Tensor, indices: torch.Tensor | None = None) -> SamplerOutput:
        """Sort the rows of ``matrix`` (B×k×T, arg-max ``indices``) by frame index and compute ``P·x``."""
        if indices is None:
            indices = matrix.detach().argmax(-1)
        indices, order = indices.sort(dim=1)
        if matrix.requires_grad:
            matrix = torch.gather(matrix, 1, order[..., None].expand_as(matrix))
        else:  # no gradient to carry: the sorted one-hot rows are the sorted indices
            matrix = indices_to_matrix(indices, x.shape[1], matrix.dtype)
        return SamplerOutput(select_frames(matrix, x, indices), matrix, indices)
