"""Run a trained frame sampler as a preprocessing transform in front of any downstream network."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
import torch.nn as nn

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.networks.utils import eval_mode
from monai.utils import TransformBackends, convert_to_tensor

from monai_das.transforms.temporal import KEPT_INDICES, VolumeToFrames, subsampled_meta

__all__ = ["AdaptiveSubsample", "AdaptiveSubsampled", "AdaptiveSubsampleD", "AdaptiveSubsampleDict"]


class AdaptiveSubsample(Transform):
    """
    Keep the ``k`` frames a trained sampler picks: ``T×C×H×W`` (or a ``C×D×H×W`` volume with ``slice_axis``)
    → ``k×C×H×W``, in temporal order. The sampler runs in ``eval()`` mode under ``torch.no_grad()`` (its previous
    train/eval mode is restored afterwards) on a batch of one; the output frames are the sampler's ``frames``.
    For a ``MetaTensor`` input the chosen indices go to ``meta["kept_indices"]`` (and ``meta["source_indices"]``,
    composed with earlier temporal steps); :attr:`last_indices` holds them for any input type.

    Args:
        sampler: any ``monai_das`` sampler module (``forward(B×T×C×H×W) -> SamplerOutput``), e.g. a trained
            ``SubsampledClassifier``'s ``.sampler``; an object with a ``.sampler`` attribute is unwrapped.
        slice_axis: ``None`` for ``T×C×H×W`` input; 0/1/2 (D/H/W) to take frames of a ``C×D×H×W`` volume.
        device: where to run the sampler (default: the device of its parameters, else the input's); the output
            is returned on the input's device.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, sampler: nn.Module, slice_axis: int | None = None, device: str | torch.device | None = None):
        if not isinstance(sampler, nn.Module) or not hasattr(sampler, "forward"):
            raise ValueError(f"sampler must be a torch.nn.Module, got {type(sampler).__name__}.")
        if hasattr(sampler, "sampler") and isinstance(sampler.sampler, nn.Module):
            sampler = sampler.sampler
        self.sampler = sampler
        self.to_frames = None if slice_axis is None else VolumeToFrames(slice_axis)
        self.device = None if device is None else torch.device(device)
        self.last_indices: torch.Tensor | None = None

    def _device(self, x: torch.Tensor) -> torch.device:
        if self.device is not None:
            return self.device
        p = next(iter(self.sampler.parameters()), None)
        if p is None:
            p = next(iter(self.sampler.buffers()), None)
        return p.device if p is not None else x.device

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        if self.to_frames is not None:
            img = self.to_frames(img)
        if img.ndim != 4:
            raise ValueError(
                f"AdaptiveSubsample expects a T×C×H×W sequence (or a C×D×H×W volume with slice_axis), "
                f"got shape {tuple(img.shape)}."
            )
        if not img.is_floating_point():
            raise ValueError(f"AdaptiveSubsample expects a floating point input, got dtype {img.dtype}.")
        x = (img.as_tensor() if isinstance(img, MetaTensor) else img)[None]
        with eval_mode(self.sampler):
            out = self.sampler(x.to(self._device(x)))
        frames, indices = out.frames[0].to(img.device), out.indices[0].detach().long().cpu()
        self.last_indices = indices
        if isinstance(img, MetaTensor):
            return MetaTensor(frames.to(img.dtype), meta=subsampled_meta(img.meta, img.shape[0], indices))
        return frames.to(img.dtype)


class AdaptiveSubsampled(MapTransform):
    """
    Dictionary form of :class:`AdaptiveSubsample`; the indices are also stored as ``d[f"{key}_kept_indices"]``
    (``k`` long tensor).
    """

    def __init__(
        self,
        keys: KeysCollection,
        sampler: nn.Module,
        slice_axis: int | None = None,
        device: str | torch.device | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.subsampler = AdaptiveSubsample(sampler, slice_axis, device)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.subsampler(d[key])
            d[f"{key}_{KEPT_INDICES}"] = self.subsampler.last_indices.clone()
        return d


AdaptiveSubsampleD = AdaptiveSubsampleDict = AdaptiveSubsampled
