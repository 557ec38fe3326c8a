"""Differentiable selection of ``k`` distinct frames: Gumbel-softmax with a straight-through estimator."""

from __future__ import annotations

import torch

__all__ = ["sample_without_replacement", "gumbel_top_k", "spread_radius", "indices_to_matrix", "select_frames"]


def indices_to_matrix(indices: torch.Tensor, num_frames: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot sampling matrix ``P`` (B×k×T) from frame indices (B×k)."""
    b, k = indices.shape
    return torch.zeros(b, k, num_frames, dtype=dtype, device=indices.device).scatter(2, indices[..., None], 1.0)


def sample_without_replacement(
    logits: torch.Tensor, tau: torch.Tensor | float = 1.0, noisy: bool = True, eps: float = 1e-10
) -> torch.Tensor:
    """
    Pick one frame per row of ``logits`` (B×k×T), row after row, never a frame twice.

    Row ``j`` takes ``argmax(logits[:, j] + g)`` over the frames not yet taken (``g`` Gumbel noise when ``noisy``,
    none otherwise: greedy, deterministic). The returned rows are exactly one-hot in value; their gradient is that of
    ``softmax((logits[:, j] + g) / tau)`` over the remaining frames (straight-through estimator).

    Args:
        logits: B×k×T row logits.
        tau: softmax temperature, a float or a tensor broadcastable to B×1 (per-sample temperature).
        noisy: add Gumbel noise (training); ``False`` gives the deterministic selection (inference).

    Returns:
        ``P``: B×k×T, rows one-hot in the forward pass, no column used twice.
    """
    b, k, t = logits.shape
    taken = torch.zeros(b, t, dtype=torch.bool, device=logits.device)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    rows = []
    for j in range(k):
        row_logits = logits[:, j]
        if noisy:
            u = torch.rand_like(row_logits).clamp(eps, 1.0 - eps)
            row_logits = row_logits - torch.log(-torch.log(u))
        # scale first, then mask: d(-inf / tau)/d tau would be NaN and poison the temperature MLP
        scaled = (row_logits / tau).masked_fill(taken, float("-inf"))
        idx = scaled.argmax(-1, keepdim=True)
        hard = torch.zeros_like(scaled).scatter(1, idx, 1.0)
        if need_grad:
            soft = torch.softmax(scaled, -1)
            hard = hard + (soft - soft.detach())  # value: exactly one-hot; gradient: softmax relaxation
        taken = taken | (hard.detach() > 0.5)
        rows.append(hard)
    return torch.stack(rows, 1)


def spread_radius(num_frames: int, num_samples: int) -> int:
    """
    Neighbour-suppression radius ``r = max(0, (T // k - 1) // 2)`` of a spread selection of ``k`` of ``T`` frames.

    ``k`` windows of ``2r + 1`` frames fit in ``T``, so greedy suppression never runs out of frames; ``r = 0`` (no
    suppression) for ``k > T / 3``, e.g. at keep 50 %.
    """
    return max(0, (int(num_frames) // max(int(num_samples), 1) - 1) // 2)


def _spread_top_k(scores: torch.Tensor, num_samples: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Greedy top-``k`` with neighbour suppression: row ``j`` takes the best frame farther than ``radius`` from every
    frame taken before (the best frame not yet taken if there is none). Returns the ``B×k`` indices (pick order) and
    the ``B×k×T`` mask of the frames row ``j`` could take.
    """
    b, t = scores.shape
    pos = torch.arange(t, device=scores.device)
    near = (pos[:, None] - pos[None, :]).abs() <= radius  # T×T
    free = torch.ones(b, t, dtype=torch.bool, device=scores.device)  # not within radius of a pick
    taken = torch.zeros_like(free)
    indices, allowed = [], []
    for _ in range(num_samples):
        has_free = free.any(-1, keepdim=True)  # logical ops, not a boolean Where (ONNX Runtime has none)
        allow = (free & has_free) | (~taken & ~has_free)
        idx = scores.masked_fill(~allow, float("-inf")).argmax(-1)  # B
        indices.append(idx)
        allowed.append(allow)
        # the pick's one-hot by comparison, not scatter(..., True): torch.jit.trace cannot record aten::scatter with
        # a bool scalar (an internal assert), and the same bools come out
        taken = taken | (pos[None, :] == idx[:, None])
        free = free & ~near[idx]
    return torch.stack(indices, 1), torch.stack(allowed, 1)


def gumbel_top_k(
    scores: torch.Tensor,
    num_samples: int,
    tau: torch.Tensor | float = 1.0,
    noisy: bool = True,
    eps: float = 1e-10,
    radius: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Pick ``k = num_samples`` distinct frames from one score per frame (``B×T``) in one vectorised step.

    Row ``j`` of ``P`` is one-hot at the ``j``-th largest of ``scores + g`` (``g`` Gumbel noise when ``noisy``,
    none otherwise: plain top-``k``, deterministic, equal scores taken in frame order). With one noise draw this is
    the same distribution as drawing the rows one after the other without replacement from ``softmax(scores)``
    (Gumbel-top-``k``), without the ``k`` sequential steps. The gradient of row ``j`` is that of
    ``softmax((scores + g) / tau)`` over the frames not taken by rows ``0..j-1`` (straight-through estimator, as in
    :func:`sample_without_replacement`). ``k`` may be any ``1..T`` (also a symbolic size while exporting).

    Args:
        scores: B×T frame scores (logits).
        num_samples: ``k``.
        tau: softmax temperature, a float or a tensor broadcastable to B×1.
        noisy: add Gumbel noise (training); ``False`` gives the deterministic top-``k`` (inference).
        radius: neighbour suppression (``0``: none). With ``radius = r > 0`` the selection is greedy: row ``j`` takes
            the best frame farther than ``r`` frames from the frames taken by the rows above (while there is one),
            and its relaxation is the softmax over those frames; ``k`` sequential steps (see :func:`spread_radius`).

    Returns:
        ``(P, indices)``: ``P`` B×k×T (rows one-hot in value, in rank order), ``indices`` B×k (``P.argmax(-1)``).
    """
    if noisy:
        u = torch.rand_like(scores).clamp(eps, 1.0 - eps)
        scores = scores - torch.log(-torch.log(u))
    scaled = scores / tau  # scale first, then mask (see sample_without_replacement)
    if radius > 0:
        indices, allowed = _spread_top_k(scaled.detach(), num_samples, radius)
    else:
        # B×k, rank order, equal scores (identical frames, e.g. zero padding, without the position feature) to the
        # lower frame index: ONNX TopK orders them so (its spec), torch.topk arbitrarily, and eager PyTorch and
        # TorchScript kept other frames than ONNX Runtime (trial T70f); the exporter has no stable sort
        if torch.onnx.is_in_onnx_export():
            indices = scaled.detach().topk(num_samples, dim=-1).indices
        else:
            indices = scaled.detach().sort(dim=-1, descending=True, stable=True).indices[:, :num_samples]
    hard = indices_to_matrix(indices, scores.shape[-1], scores.dtype)
    if torch.is_grad_enabled() and scaled.requires_grad:
        # B×k×T: the frames row j could not take (taken by the rows above, or suppressed next to them)
        blocked = ~allowed if radius > 0 else torch.cumsum(hard, 1) - hard > 0.5
        soft = torch.softmax(scaled[:, None].masked_fill(blocked, float("-inf")), -1)
        hard = hard + (soft - soft.detach())
    return hard, indices


class _SelectFrames(torch.autograd.Function):
    """``frames = P·x`` computed by gathering (exact), with the gradient of the matrix product."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:  # type: ignore
        ctx.save_for_backward(matrix, x)
        return _gather(x, indices)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore
        matrix, x = ctx.saved_tensors
        b, t = x.shape[:2]
        g = grad.reshape(b, grad.shape[1], -1)
        grad_matrix = torch.bmm(g, x.reshape(b, t, -1).transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_x = torch.bmm(matrix.transpose(1, 2), g).reshape(x.shape) if ctx.needs_input_grad[1] else None
        return grad_matrix, grad_x, None


def _gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """
    ``x[b, indices[b]]`` (``B×T×...``, ``B×k`` → ``B×k×...``): rows of the ``(B·T)×...`` frame stack picked with one
    flat index, exported to ONNX as one ``Gather`` of whole frames. ``torch.gather`` along the frame axis needs an
    index per element, which ONNX Runtime materialises (``Expand`` + ``GatherElements``): 42 ms of a 315 ms batch of
    16 clips (64 frames of 112², one thread) for ``uniform``, more than DAS's whole sampler.
    """
    b, t = x.shape[:2]
    flat = (indices + torch.arange(b, device=indices.device)[:, None] * t).reshape(-1)
    return x.flatten(0, 1).index_select(0, flat).reshape(*indices.shape, *x.shape[2:])


def select_frames(matrix: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """
    ``P·x`` for a one-hot ``matrix`` (B×k×T) and ``x`` (B×T×...), given ``indices = matrix.argmax(-1)`` (B×k).

    The values are gathered, so they equal the input frames bit for bit; gradients flow to ``matrix`` and ``x`` as
    for ``einsum("bkt,bt...->bk...")``.
    """
    if torch.is_grad_enabled() and (matrix.requires_grad or x.requires_grad):
        return _SelectFrames.apply(matrix, x, indices)
    return _gather(x, indices)
