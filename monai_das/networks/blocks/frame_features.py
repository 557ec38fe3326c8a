"""Cheap per-frame descriptors used by the DAS sampler (no learnable parameters)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_das.networks.utils import SavedSettings

__all__ = ["FrameFeatures", "FEATURE_NAMES"]

FEATURE_NAMES = ("intensity", "variance", "sobel", "laplacian")
#: state-dict entry holding the settings of :class:`FrameFeatures` (int64, see :meth:`FrameFeatures.settings`)
SETTINGS_KEY = "settings"


def _bin_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """
    ``n_out×n_in`` averaging matrix of adaptive average pooling: row ``i`` averages the inputs
    ``floor(i·n_in/n_out) .. ceil((i+1)·n_in/n_out) - 1``.
    """
    i, j = torch.arange(n_out, device=like.device), torch.arange(n_in, device=like.device)
    start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
    inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def _neighbour_matrix(t: int, like: torch.Tensor) -> torch.Tensor:
    """
    ``T×(T-1)`` matrix ``M`` with ``(M·d)[i] = (d[i-1] + d[i]) / 2`` for ``0 < i < T-1``, ``d[0]`` at ``i = 0`` and
    ``d[T-2]`` at ``i = T-1``: the mean of a frame's differences to its neighbours (``d[i]``: frame ``i`` to ``i+1``).
    """
    i, j = torch.arange(t, device=like.device)[:, None], torch.arange(t - 1, device=like.device)[None]
    return 0.5 * ((j == (i - 1).clamp(min=0)).to(like.dtype) + (j == i.clamp(max=t - 2)).to(like.dtype))


def _area_pool(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """
    Average ``x`` (``B×T×C×H×W``) down to ``h×w`` frames, the values of adaptive average pooling. When ``h``, ``w``
    divide ``H``, ``W``: a depthwise strided convolution of the ``T·C`` frame planes over ``(H//h)×(W//w)`` blocks;
    otherwise (overlapping bins) PyTorch's adaptive pooling, exported to ONNX as two products with the bins'
    averaging matrices, ``A_h·x·A_wᵀ``. Same values up to rounding, but ONNX Runtime (opset >= 19) runs
    ``AveragePool`` in a generic kernel 3-5× slower than this ``Conv``, and adaptive pooling is exported as a gather
    of every window (2× slower than the products).
    """
    b, t, c, hh, ww = x.shape
    if hh % h or ww % w:
        if not torch.onnx.is_in_onnx_export():  # PyTorch's adaptive pooling kernel reads every pixel once
            return F.adaptive_avg_pool2d(x.reshape(b * t, c, hh, ww), (h, w)).reshape(b, t, c, h, w)
        # the ONNX graph: two plain matrix products (no broadcast batch), one GEMM each
        cols = (x.reshape(-1, ww) @ _bin_matrix(ww, w, x).T).reshape(-1, hh, w).transpose(1, 2)  # (B·T·C)×w×H
        return (cols.reshape(-1, hh) @ _bin_matrix(hh, h, x).T).reshape(b, t, c, w, h).transpose(3, 4)
    kh, kw = hh // h, ww // w
    planes = x.reshape(b, t * c, hh, ww)
    weight = x.new_full((1, 1, kh, kw), 1.0 / (kh * kw)).expand(t * c, 1, kh, kw)
    return F.conv2d(planes, weight, stride=(kh, kw), groups=t * c).reshape(b, t, c, h, w)


class FrameFeatures(SavedSettings, nn.Module):
    """
    Per-frame statistics of a sequence, the input of the DAS attention.

    Frames larger than ``feature_size`` are first area-averaged down to at most ``feature_size`` pixels a side
    (the statistics are summaries, full resolution buys nothing but time). Then, for every frame and every scale
    (average pooling by ``s``):

    - ``intensity``: mean over C, H, W;
    - ``variance``: variance over C, H, W of the frame, and mean squared difference to its temporal neighbours
      (inter-frame variance);
    - ``sobel``: mean Sobel gradient magnitude;
    - ``laplacian``: mean absolute Laplacian response.

    Each statistic ``v`` enters twice: as ``log1p(|v|)`` (absolute level) and standardised over ``T`` within each
    sample (relative to the other frames of the same input), so the features do not depend on the intensity range of
    a dataset. Optionally the normalised frame position ``p ∈ [-1, 1]`` and ``p²`` are appended.

    Args:
        scales: average-pooling factors at which the statistics are measured.
        features: subset of :data:`FEATURE_NAMES`.
        positional: append the frame position.
        feature_size: largest frame side used for the statistics (``None``: full resolution).

    Shapes: input ``B×T×C×H×W`` → output ``B×T×out_features``.
    """

    settings_key = SETTINGS_KEY
    settings_what = "DAS frame features"
    settings_hint = ("build it with the training run's sampler settings (the bundle's `sampler_kwargs`, recorded in "
                     "the model card as das_model#sampler_kwargs)")

    def __init__(
        self,
        scales: Sequence[int] = (1, 2),
        features: Sequence[str] = FEATURE_NAMES,
        positional: bool = True,
        feature_size: int | None = 32,
    ) -> None:
        super().__init__()
        unknown = set(features) - set(FEATURE_NAMES)
        if unknown or not features:
            raise ValueError(f"features must be a non-empty subset of {FEATURE_NAMES}, got {tuple(features)}.")
        if not scales or any(int(s) < 1 for s in scales):
            raise ValueError(f"scales must be positive integers, got {tuple(scales)}.")
        if feature_size is not None and feature_size < 4:
            raise ValueError(f"feature_size must be >= 4 or None, got {feature_size}.")
        self.scales = tuple(int(s) for s in scales)
        self.features = tuple(f for f in FEATURE_NAMES if f in features)
        self.positional, self.feature_size = positional, feature_size
        per_scale = {"intensity": 1, "variance": 2, "sobel": 1, "laplacian": 1}
        self.out_features = 2 * len(self.scales) * sum(per_scale[f] for f in self.features) + 2 * positional
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        # fixed filters, not parameters; not saved in checkpoints (persistent=False) so older ones still load
        self.register_buffer("kernels", torch.stack([sobel_x, sobel_x.T, laplacian])[:, None], persistent=False)

    def _settings_tensor(self) -> torch.Tensor:
        """:meth:`settings` as int64: ``[feature_size or 0, positional, feature bits (FEATURE_NAMES order), *scales]``."""
        bits = sum(1 << i for i, name in enumerate(FEATURE_NAMES) if name in self.features)
        return torch.tensor([self.feature_size or 0, int(self.positional), bits, *self.scales], dtype=torch.int64)

    @staticmethod
    def _settings_of(v: list[int]) -> dict:
        """Decode :meth:`_settings_tensor`'s values (``{"unreadable": ...}`` when too few to be one)."""
        if len(v) < 4:
            return {"unreadable": v}
        return {"scales": v[3:], "features": [n for i, n in enumerate(FEATURE_NAMES) if v[2] >> i & 1],
                "positional": bool(v[1]), "feature_size": v[0] or None}

    @staticmethod
    def max_input(num_frames: int, dtype: torch.dtype = torch.float32) -> float:
        """
        Largest ``|x|`` whose statistics over ``num_frames`` frames cannot overflow ``dtype``. For ``|x| <= M`` the
        largest is the inter-frame variance, ``<= 4M²``; standardised over ``T`` its deviations squared are
        ``<= 16M⁴`` each and sum to ``<= 4T·M⁴`` (Popoviciu); the others are smaller (variance ``<= M²``, Sobel
        ``gx² + gy² <= 128M²``). So ``M = (max / (2·max(16, 4T)))^¼``, a factor 2 left for rounding: float32,
        ``T = 28``: ``1.1e9``. Beyond it float32 squares became Inf, then NaN features and logits. The statistics
        are computed in float32 at least (:meth:`forward`), so a float16/bfloat16 sampler has the float32 limit.
        """
        dtype = torch.promote_types(dtype, torch.float32)
        return (torch.finfo(dtype).max / (2 * max(16, 4 * int(num_frames)))) ** 0.25

    def _stats(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: B×T×C×H×W → list of B×T×1 statistics (in :data:`FEATURE_NAMES` order, the variance as two)."""
        b, t = x.shape[:2]
        out: list[torch.Tensor] = []
        flat = x.reshape(b, t, -1)
        if "intensity" in self.features or "variance" in self.features:
            mean = flat.mean(-1, keepdim=True)
            if "intensity" in self.features:
                out.append(mean)
        if "variance" in self.features:
            dev = flat - mean
            out.append((dev * dev).mean(-1, keepdim=True))  # products, not pow(): ONNX Runtime's Pow is slow
            if t > 1:
                d = flat[:, 1:] - flat[:, :-1]
                # mean squared difference to the previous and the next frame (the one neighbour at the ends), as a
                # product with a constant T×(T-1) averaging matrix: one MatMul instead of slices and concatenations
                out.append(_neighbour_matrix(t, x) @ (d * d).mean(-1, keepdim=True))
            else:
                out.append(flat.new_zeros(b, 1, 1))
        if "sobel" in self.features or "laplacian" in self.features:
            # 3×3 Sobel (x, y) and Laplacian with zero padding, each a depthwise convolution over the T·C frame
            # planes of an input (groups = T·C): under ONNX Runtime 3-6× faster than one 1→3 filter convolution of
            # every plane (a 1-channel Conv runs its generic kernel, 3 outputs are padded to the NCHWc block), and
            # than a 2-filter depthwise one (not an NCHWc kernel); elementwise magnitude and |·| then a mean over
            # the last axis: ONNX Runtime's ReduceL2 over the pair axis and ReduceL1 are 3-10× slower
            h, w = x.shape[-2:]
            planes = x.reshape(b, -1, h, w)
            n = planes.shape[1]
            kernels = self.kernels.to(x.dtype)

            def filtered(i: int) -> torch.Tensor:  # B×(T·C)×H×W
                return F.conv2d(planes, kernels[i : i + 1].expand(n, 1, 3, 3), padding=1, groups=n)

            if "sobel" in self.features:
                gx, gy = filtered(0), filtered(1)
                out.append(torch.sqrt(gx * gx + gy * gy + 1e-12).reshape(b, t, -1).mean(-1, keepdim=True))
            if "laplacian" in self.features:
                out.append(filtered(2).abs().reshape(b, t, -1).mean(-1, keepdim=True))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        dtype = x.dtype
        fs = self.feature_size
        if fs is not None and max(h, w) > fs:
            h, w = min(h, fs), min(w, fs)
            x = _area_pool(x, h, w)
        # the statistics in float32 at least: their squares of a float16 frame overflow from |x| ≈ 4 (a z-scored
        # volume of a .half() network); the features go back to the input's dtype
        x = x.to(torch.promote_types(dtype, torch.float32))
        stats: list[torch.Tensor] = []
        for s in self.scales:
            xs = x
            if s > 1 and min(h, w) >= 2 * s:  # s×s blocks, a remainder row/column dropped (avg_pool2d's floor mode)
                xs = _area_pool(x[..., : h // s * s, : w // s * s], h // s, w // s)
            stats += self._stats(xs)
        raw = torch.cat(stats, -1)  # B×T×m
        mean = raw.mean(1, keepdim=True)
        dev = raw - mean
        std = torch.sqrt((dev * dev).mean(1, keepdim=True))
        feats = [torch.log1p(raw.abs()), dev / (std + 1e-6)]
        if self.positional:
            pos = torch.linspace(-1.0, 1.0, t, device=x.device, dtype=x.dtype) if t > 1 else x.new_zeros(1)
            feats.append(torch.stack([pos, pos * pos], -1).expand(b, t, 2))
        return torch.cat(feats, -1).to(dtype)
