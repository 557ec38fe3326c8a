"""DAS: the input-adaptive, attention-guided sampler of Deep Attention-guided Adaptive Subsampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_das.networks.blocks.frame_features import FEATURE_NAMES, FrameFeatures
from monai_das.networks.blocks.gumbel import gumbel_top_k, spread_radius
from monai_das.networks.nets.sampler import BaseSampler, check_count
from monai_das.networks.utils import settings_mismatch

__all__ = ["DASampler"]

#: state-dict entry of a DAS sampler trained with ``spread=True`` (absent otherwise)
SPREAD_KEY = "spread"


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, out_features))


class DASampler(BaseSampler):
    """
    Deep Attention-guided Adaptive Subsampling (arXiv 2510.12376): picks ``k`` frames per input in one pass.

    1. :class:`FrameFeatures` (variance, inter-frame variance, Sobel and Laplacian magnitudes at ``scales``, frame
       position) are embedded by a small MLP into ``F`` (``B×T×d``).
    2. Multi-head self-attention over frames gives, per head ``h``, base scores ``a_base[h]`` (``B×T``): a learned
       projection of the head's attention output plus its value (the frame's own evidence).
    3. An MLP on the sequence summary ``F̄`` gives one non-negative scale per head, ``s = softplus(MLP_s(F̄))``
       (``B×H``: how much each head counts for this input); logits ``A[b, t] = mean_h s[b, h] · a_base[h][b, t]``
       (``B×T``).
    4. Adaptive temperature ``τ = τ0·(0.5 + σ(MLP_temp(F̄)))`` per input.
    5. Row ``j`` of ``P`` takes a frame by Gumbel-softmax over the frames not taken by the rows above, with a
       straight-through estimator (training), in one vectorised Gumbel-top-``k`` step (:func:`gumbel_top_k`). In
       ``eval()`` the selection is deterministic: the top-``k`` of ``A``.

    No parameter depends on ``k``: the same trained sampler keeps any ``k <= T`` frames
    (``forward(x, num_samples=k)``), a frame budget chosen at inference.

    With ``spread=True`` step 5 suppresses neighbours: each pick is the best frame more than
    ``r = (T // k - 1) // 2`` frames away from the picks before it (:func:`spread_radius`; ``r = 0``, no change, for
    ``k > T / 3``), in training, warm-up and eval alike, so that a low frame budget is not spent on near-duplicate
    neighbouring frames. ``k`` sequential steps: an ONNX export then keeps the exported ``k`` (``export_any_k``).
    The setting is saved with the weights (``spread`` entry, only when on); loading them into a sampler built the
    other way is an error naming both.

    Args:
        num_samples: ``k``, frames kept by default.
        in_channels: channels ``C`` of a frame (checked against the input; the features average over channels).
        embed_dim: ``d``, width of ``F``.
        num_heads: attention heads ``H`` (``embed_dim`` must be divisible by it).
        hidden_dim: width of the scale and temperature MLPs.
        tau0: base temperature ``τ0``.
        scales: pooling factors of the frame features.
        features: frame features used, a subset of ``("intensity", "variance", "sobel", "laplacian")``.
        positional: give the attention the frame position.
        feature_size: frames are area-averaged to at most this many pixels a side before the features are computed.
        spread: neighbour suppression of the picks (above); off by default.

    Shapes: ``x`` ``B×T×C×H×W`` → :class:`SamplerOutput` (``B×k×C×H×W``, ``B×k×T``, ``B×k``). Floating input is
    cast to the parameters' dtype (float32 unless the sampler was converted), see :meth:`BaseSampler.cast_input`.
    """

    learnable = True
    supports_warmup = True
    has_scores = True

    def __init__(
        self,
        num_samples: int,
        in_channels: int = 1,
        embed_dim: int = 32,
        num_heads: int = 4,
        hidden_dim: int = 32,
        tau0: float = 1.0,
        scales: Sequence[int] = (1, 2),
        features: Sequence[str] = FEATURE_NAMES,
        positional: bool = True,
        feature_size: int | None = 32,
        spread: bool = False,
    ) -> None:
        super().__init__(num_samples)
        in_channels = check_count(in_channels, "in_channels")
        embed_dim, num_heads = check_count(embed_dim, "embed_dim"), check_count(num_heads, "num_heads")
        hidden_dim = check_count(hidden_dim, "hidden_dim")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}.")
        if tau0 <= 0:
            raise ValueError(f"tau0 must be positive, got {tau0}.")
        self.in_channels, self.num_heads, self.tau0 = in_channels, num_heads, float(tau0)
        self.spread = bool(spread)
        self.export_any_k = not self.spread  # the greedy suppression unrolls k steps in an exported graph
        self.frame_features = FrameFeatures(scales, features, positional, feature_size)
        self.embed = nn.Sequential(_mlp(self.frame_features.out_features, embed_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.base_score = nn.Parameter(torch.randn(num_heads, embed_dim // num_heads) / (embed_dim // num_heads) ** 0.5)
        self.head_scales = _mlp(embed_dim, hidden_dim, num_heads)
        self.temp_mlp = _mlp(embed_dim, hidden_dim, 1)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[override]
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.spread:  # written only when on: checkpoints of the default keep their entries
            destination[prefix + SPREAD_KEY] = torch.ones(1, dtype=torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        # no parameter depends on `spread`, but the same weights keep other frames with and without it: refuse a
        # mismatch rather than select differently from training without a word
        saved = state_dict.pop(prefix + SPREAD_KEY, None)
        trained = saved is not None and bool(torch.as_tensor(saved).reshape(-1)[:1].sum())
        if trained != self.spread:
            message = (f"{prefix}{SPREAD_KEY}: the weights were trained with spread={trained} but this DAS sampler was "
                       f"built with spread={self.spread}")
            settings_mismatch(message, "build it with the training run's sampler settings (the bundle's "
                              "`sampler_kwargs`, recorded in the model card as das_model#sampler_kwargs)", error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @classmethod
    def input_limit(cls, num_frames: int, dtype: torch.dtype) -> tuple[float, str]:
        """:meth:`FrameFeatures.max_input`: beyond it the frame statistics (squared differences) overflow."""
        limit = FrameFeatures.max_input(num_frames, dtype)
        dtype_name = str(dtype).replace("torch.", "")
        return limit, (f": beyond {limit:.2g} the DAS frame statistics (squared differences over T={num_frames} "
                       f"frames) can overflow {dtype_name} to Inf/NaN; scale the intensities first (e.g. to [0, 1])")

    def embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``F``: ``B×T×d``."""
        return self.embed(self.frame_features(x))

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling logits ``A`` (``B×T``) and the sequence summary ``F̄`` (``B×d``)."""
        f = self.embed_frames(x)
        b, t, d = f.shape
        heads = self.num_heads
        # B×3H×T×dh, split into q, k, v (B×H×T×dh each): one Reshape, Transpose and Split in the ONNX graph
        q, k, v = self.qkv(f).reshape(b, t, 3 * heads, d // heads).transpose(1, 2).chunk(3, 1)
        # softmax(q·kᵀ/√dh)·v written out: F.scaled_dot_product_attention exports with a shape computation for kᵀ
        # (10 more ONNX nodes, each a fixed cost at batch 1); the same values up to rounding
        attn = torch.softmax((q * (d // heads) ** -0.5) @ k.transpose(-1, -2), -1) @ v  # B×H×T×dh
        a_base = ((attn + v) @ self.base_score[..., None]).reshape(b, heads, t)  # B×H×T
        summary = f.mean(1)  # B×d
        s = F.softplus(self.head_scales(summary))  # B×H
        logits = (s[:, None] @ a_base).reshape(b, t) / heads  # mean over heads of s[h]·a_base[h]
        return logits, summary

    def temperature(self, summary: torch.Tensor) -> torch.Tensor:
        """Adaptive temperature ``τ`` (``B×1``) from the sequence summary ``F̄``."""
        return self.tau0 * (0.5 + torch.sigmoid(self.temp_mlp(summary)))

    def logits_and_temperature(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling logits ``A`` (``B×T``) and temperature ``τ`` (``B×1``)."""
        logits, summary = self.logits(x)
        return logits, self.temperature(summary)

    def select(self, x: torch.Tensor, num_samples: Any) -> tuple[torch.Tensor, torch.Tensor]:
        r = spread_radius(x.shape[1], num_samples) if self.spread else 0
        warm = self.training and self.warming_up
        if warm:  # encoder warm-up: k frames at random, no straight-through gradient
            if self.record_scores:  # only a relevance loss needs the scores
                self.keep_scores(self.logits(x)[0])
            return gumbel_top_k(x.new_zeros(x.shape[:2]), num_samples, noisy=True, radius=r)
        logits, summary = self.logits(x)
        self.keep_scores(logits)
        if not self.training:  # deterministic top-k of A: τ > 0 does not change the order, so it is not computed
            return gumbel_top_k(logits, num_samples, noisy=False, radius=r)
        return gumbel_top_k(logits, num_samples, self.temperature(summary), noisy=True, radius=r)
