"""Sampler → 2D frame encoder → temporal head → linear classifier."""

from __future__ import annotations

import torch
import torch.nn as nn

from monai_das.networks.blocks.temporal_head import TemporalHead
from monai_das.networks.nets.sampler import BaseSampler, SamplerOutput, check_count, parameter_dtype

__all__ = ["SubsampledClassifier", "LAYOUTS"]

LAYOUTS = ("volume", "video")


class SubsampledClassifier(nn.Module):
    """
    Classifies a volume or a video from ``k`` of its ``T`` slices/frames chosen by ``sampler``.

    Args:
        sampler: a :class:`BaseSampler` (``das``, ``dps``, ``adps``, ``uniform``, ``random``, ``full``).
        encoder: 2D network ``N×C×H×W → N×E`` with an ``out_features`` attribute (e.g. ``MobileNetV3Small``).
        num_classes: number of output logits.
        layout: ``"volume"``: input ``B×C×D×H×W`` (MONAI channel-first), frames are the slices along spatial axis
            ``slice_axis``; ``"video"``: input ``B×T×C×H×W``.
        slice_axis: 0, 1 or 2 for slices along D, H or W (``layout="volume"`` only).
        temporal_head: ``"mean"`` (default), ``"max"`` or ``"attention"`` pooling of the ``k`` frame embeddings.
        dropout: dropout before the final linear layer.

    Shapes: ``forward(x)`` → logits ``B×num_classes``; :meth:`sample` → :class:`SamplerOutput`.

    Dtypes: floating point input is cast to the dtype of the network's parameters (float16/bfloat16/float64 input to
    a float32 network is computed in float32, and :meth:`sample` returns float32 frames); for half precision convert
    the network (``net.half()``) or use ``torch.autocast``. Integer input is refused by the sampler.
    """

    def __init__(
        self,
        sampler: BaseSampler,
        encoder: nn.Module,
        num_classes: int,
        layout: str = "volume",
        slice_axis: int = 0,
        temporal_head: str = "mean",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (D, H, W), got {slice_axis}.")
        num_classes = check_count(num_classes, "num_classes")
        self.sampler, self.encoder = sampler, encoder
        self.layout, self.slice_axis, self.num_classes = layout, slice_axis, num_classes
        self.in_channels = getattr(encoder, "in_channels", None)
        features = int(encoder.out_features)
        self.temporal_head = TemporalHead(features, temporal_head)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def to_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Input as the network takes it → frame sequence ``B×T×C×H×W`` (floating input in the parameters' dtype)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            expected = "B×C×D×H×W" if self.layout == "volume" else "B×T×C×H×W"
            raise ValueError(f"expected a 5D input {expected} (layout={self.layout!r}), got {shape}.")
        if self.layout == "volume":
            x = x.movedim(2 + self.slice_axis, 1)
        channels = x.shape[2]
        if self.in_channels is not None and channels != self.in_channels:
            raise ValueError(
                f"input has {channels} channel(s) but the encoder expects {self.in_channels} "
                f"(layout={self.layout!r}: channels are dim {1 if self.layout == 'volume' else 2})."
            )
        return self._cast(x)

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        # a float16 study into float32 weights would fail in the first matmul/conv with an error naming neither
        dtype = parameter_dtype(self)
        return x if dtype is None or x.dtype == dtype or not x.is_floating_point() else x.to(dtype)

    def sample(self, x: torch.Tensor) -> SamplerOutput:
        """The sampler's choice for ``x`` (same layout as :meth:`forward`)."""
        return self.sampler(self.to_frames(x))

    def classify_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits ``B×num_classes`` from kept frames ``B×k×C×H×W`` (floating frames cast as in :meth:`to_frames`)."""
        frames = self._cast(frames)
        b, k = frames.shape[:2]
        z = self.encoder(frames.reshape(b * k, *frames.shape[2:])).reshape(b, k, -1)
        return self.classifier(self.temporal_head(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify_frames(self.sample(x).frames)
