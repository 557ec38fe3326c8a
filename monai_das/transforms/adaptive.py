"""Run a trained frame sampler as a preprocessing transform in front of any downstream network."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.networks.utils import eval_mode
from monai.utils import TransformBackends, convert_to_tensor

from monai_das.networks.utils import check_device, network_device, unwrap_network
from monai_das.transforms.temporal import (
    EVIDENCE_KEYS,
    FRAME_RECORD_KEYS,
    KEPT_INDICES,
    VolumeToFrames,
    resolved,
    select_frames,
    subsample_frame_records,
)

__all__ = ["AdaptiveSubsample", "AdaptiveSubsampled", "AdaptiveSubsampleD", "AdaptiveSubsampleDict"]

#: one lock per sampler, held while it is switched to eval() and run: a transform in a thread pool (``CacheDataset``,
#: ``ThreadDataLoader``) must not see a sampler another thread has just put back into training mode
_SAMPLER_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _sampler_lock(sampler: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _SAMPLER_LOCKS.get(sampler)
        if lock is None:
            lock = _SAMPLER_LOCKS[sampler] = threading.RLock()
        return lock


def _new_locks_after_fork() -> None:  # a lock held by another thread at fork() stays held in the child forever
    global _SAMPLER_LOCKS, _LOCKS_GUARD
    _SAMPLER_LOCKS, _LOCKS_GUARD = weakref.WeakKeyDictionary(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


class AdaptiveSubsample(Transform):
    """
    Keep the ``k`` frames a trained sampler picks: ``T×C×H×W`` (or a ``C×D×H×W`` volume with ``slice_axis``)
    → ``k×C×H×W``, in temporal order. The sampler runs in ``eval()`` mode under ``torch.no_grad()`` (its previous
    train/eval mode is restored afterwards) on a batch of one; the output frames are the input's own frames at the
    sampler's indices (exactly, in the input's dtype).
    For a ``MetaTensor`` input the chosen indices go to ``meta["kept_indices"]`` (and ``meta["source_indices"]``,
    composed with earlier temporal steps); :meth:`subsample` returns them with the frames for any input type
    (:attr:`last_indices` holds those of the last call in this thread's order; with several threads, use
    :meth:`subsample`). Thread-safe: the switch to ``eval()`` and the pass hold a lock of that sampler, so a
    ``CacheDataset`` or ``ThreadDataLoader`` pool may run it (do not train the same sampler in another thread
    meanwhile).

    Args:
        sampler: any ``monai_das`` sampler module (``forward(B×T×C×H×W) -> SamplerOutput``), e.g. a trained
            ``SubsampledClassifier``'s ``.sampler``; an object with a ``.sampler`` attribute is unwrapped, inside
            ``DistributedDataParallel``/``DataParallel`` wrappers too.
        slice_axis: ``None`` for ``T×C×H×W`` input; 0/1/2 (D/H/W) to take frames of a ``C×D×H×W`` volume. With a
            volume classifier, another axis than the one it was built for is refused.
        device: where to run the sampler (default: the device of its parameters, else the input's); the output
            is returned on the input's device.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, sampler: nn.Module, slice_axis: int | None = None, device: str | torch.device | None = None):
        if not isinstance(sampler, nn.Module) or not hasattr(sampler, "forward"):
            raise ValueError(f"sampler must be a torch.nn.Module, got {type(sampler).__name__}.")
        #: a volume classifier's slice axis (``None`` for a bare sampler or a video classifier)
        self.model_slice_axis: int | None = None
        sampler = unwrap_network(sampler, require_sampler=False)  # a DDP-wrapped classifier ran whole as the sampler
        if hasattr(sampler, "sampler") and isinstance(sampler.sampler, nn.Module):
            if getattr(sampler, "layout", None) == "volume":
                self.model_slice_axis = getattr(sampler, "slice_axis", None)
            sampler = sampler.sampler
        if None not in (slice_axis, self.model_slice_axis) and slice_axis != self.model_slice_axis:
            # the sampler runs on any T: frames of another axis would be chosen without a word (trial T63b)
            raise ValueError(f"slice_axis={slice_axis}, but the classifier was built for slice_axis="
                             f"{self.model_slice_axis}: its sampler would choose among the slices of another axis. "
                             "Give its slice_axis (or None for T×C×H×W frames taken along it already).")
        self.sampler = sampler
        self.to_frames = None if slice_axis is None else VolumeToFrames(slice_axis)
        self.device = None if device is None else check_device(device)
        self.last_indices: torch.Tensor | None = None

    def _device(self, x: torch.Tensor) -> torch.device:
        if self.device is not None:
            return self.device
        return network_device(self.sampler, x.device)

    def _frames(self, img: torch.Tensor | np.ndarray, name: str = "AdaptiveSubsample") -> torch.Tensor:
        """``img`` as a ``T×C×H×W`` tensor (a volume's slices along ``slice_axis``), checked; ``name`` in errors."""
        img = resolved(img)
        img = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        if self.to_frames is not None:
            img = self.to_frames(img)
        if img.ndim != 4:
            raise ValueError(
                f"{name} expects a T×C×H×W sequence (or a C×D×H×W volume with slice_axis), got shape "
                f"{tuple(img.shape)}."
            )
        return img

    def subsample(self, img: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept frames (as :meth:`__call__`) and their indices (``k`` long, ascending, on the CPU)."""
        return self._choose(self._frames(img))

    def _choose(self, img: torch.Tensor, name: str = "AdaptiveSubsample") -> tuple[torch.Tensor, torch.Tensor]:
        if not img.is_floating_point():
            raise ValueError(f"{name} expects a floating point input, got dtype {img.dtype}.")
        x = (img.as_tensor() if isinstance(img, MetaTensor) else img)[None]
        with _sampler_lock(self.sampler), eval_mode(self.sampler):
            try:
                out = self.sampler(x.to(self._device(x)))
            except ValueError as e:  # "cannot keep k=7 frames of an input with T=1 frames": a volume read as a clip
                if self.to_frames is None and "cannot keep k=" in str(e):
                    axis = ("0, 1 or 2" if self.model_slice_axis is None else
                            f"{self.model_slice_axis}, the classifier's")
                    raise ValueError(f"{name}: {e} The input {tuple(img.shape)} is read as T×C×H×W (T = its first "
                                     f"axis); for a C×D×H×W volume give slice_axis ({axis}) to take its slices "
                                     "as frames.") from e
                raise
        indices = out.indices[0].detach().long().cpu()
        self.last_indices = indices
        # the input's own frames (with their meta): the sampler's P·x is computed in its dtype, and float64 frames
        # came back rounded through float32 (trial T67f)
        return select_frames(img, indices), indices

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.subsample(img)[0]


class AdaptiveSubsampled(MapTransform):
    """
    Dictionary form of :class:`AdaptiveSubsample`: the sampler chooses on the first key present (e.g. the image)
    and the same frames are kept of every other key (e.g. its segmentation; all keys must have the same ``T``, as
    in :class:`monai_das.transforms.RandTemporalSubsampled`). The indices are also stored as
    ``d[f"{key}_kept_indices"]`` (``k`` long tensor) for every key; the item's per-frame records follow the frames,
    as in :class:`monai_das.transforms.UniformTemporalSubsampled`.
    """

    backend = AdaptiveSubsample.backend

    def __init__(
        self,
        keys: KeysCollection,
        sampler: nn.Module,
        slice_axis: int | None = None,
        device: str | torch.device | None = None,
        allow_missing_keys: bool = False,
        record_keys: Sequence[Hashable] = FRAME_RECORD_KEYS,
        evidence_keys: Sequence[Hashable] = EVIDENCE_KEYS,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.subsampler = AdaptiveSubsample(sampler, slice_axis, device)
        self.record_keys, self.evidence_keys = tuple(record_keys), tuple(evidence_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        name = type(self).__name__
        seqs = {key: self.subsampler._frames(d[key], f"{name}[{key!r}]") for key in keys}
        lengths = {key: int(v.shape[0]) for key, v in seqs.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{name}: all keys must have the same number of frames T (the sampler chooses on "
                             f"{keys[0]!r} for all), got {lengths}.")
        d[keys[0]], indices = self.subsampler._choose(seqs[keys[0]], f"{name}[{keys[0]!r}]")
        d[f"{keys[0]}_{KEPT_INDICES}"] = indices.clone()
        for key in keys[1:]:
            d[key] = select_frames(seqs[key], indices)
            d[f"{key}_{KEPT_INDICES}"] = indices.clone()
        subsample_frame_records(d, indices, lengths[keys[0]], name, self.record_keys, self.evidence_keys)
        return d


AdaptiveSubsampleD = AdaptiveSubsampleDict = AdaptiveSubsampled
