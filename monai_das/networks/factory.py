"""Build samplers and classifiers by name (what the bundle configs call)."""

from __future__ import annotations

import math
import numbers
from typing import Any

from monai_das.networks.nets import (
    ADPSSampler,
    BaseSampler,
    DASampler,
    DPSSampler,
    FullSequenceSampler,
    MobileNetV3Small,
    RandomSampler,
    SubsampledClassifier,
    UniformSampler,
)
from monai_das.networks.nets.sampler import check_count

__all__ = ["SAMPLERS", "get_sampler", "num_kept", "build_classifier"]

SAMPLERS: dict[str, type[BaseSampler]] = {
    "das": DASampler,
    "dps": DPSSampler,
    "adps": ADPSSampler,
    "uniform": UniformSampler,
    "random": RandomSampler,
    "full": FullSequenceSampler,
}


def check_keep_ratio(keep_ratio: Any) -> float:
    """``keep_ratio`` as a float in (0, 1] (a ``ValueError`` naming the value otherwise, e.g. for ``"0.5"`` or NaN)."""
    ok = isinstance(keep_ratio, numbers.Real) and not isinstance(keep_ratio, bool)
    if not ok or not math.isfinite(keep_ratio) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be a number in (0, 1], got {keep_ratio!r}.")
    return float(keep_ratio)


def num_kept(num_frames: int, keep_ratio: float) -> int:
    """``k = max(1, round(keep_ratio·T))``; ``num_frames`` (``T``) must be an integer >= 1, ``keep_ratio`` lie in
    (0, 1]."""
    num_frames, keep_ratio = check_count(num_frames, "num_frames (T)"), check_keep_ratio(keep_ratio)
    return max(1, min(num_frames, round(keep_ratio * num_frames)))


def get_sampler(name: str, num_samples: int, num_frames: int | None = None, in_channels: int = 1,
                **kwargs: Any) -> BaseSampler:
    """
    A sampler by name: ``das``, ``dps``, ``adps``, ``uniform``, ``random`` or ``full``.

    ``num_frames`` (``T``) is required by ``dps`` and ``adps``; ``in_channels`` is used by ``das`` and ``adps``;
    other keyword arguments go to the sampler's constructor. ``num_samples`` (``k``, ignored by ``full``) must be an
    integer >= 1: ``2.7`` raises a ``ValueError`` naming it rather than failing inside torch.
    """
    if not isinstance(name, str):
        raise ValueError(f"sampler name must be a string, one of {sorted(SAMPLERS)}; got {name!r}.")
    key = name.lower()
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    if key in ("dps", "adps"):
        if num_frames is None:
            raise ValueError(f"sampler {key!r} needs num_frames (T).")
        kwargs["num_frames"] = num_frames
    if key in ("das", "adps"):
        kwargs["in_channels"] = in_channels
    return SAMPLERS[key](num_samples, **kwargs)


def build_classifier(
    method: str,
    num_classes: int,
    num_frames: int,
    in_channels: int = 1,
    keep_ratio: float = 0.5,
    layout: str = "volume",
    slice_axis: int = 0,
    temporal_head: str = "mean",
    dropout: float = 0.2,
    encoder_kwargs: dict | None = None,
    sampler_kwargs: dict | None = None,
) -> SubsampledClassifier:
    """
    A :class:`SubsampledClassifier` with a :class:`MobileNetV3Small` frame encoder and the sampler ``method``
    keeping ``num_kept(num_frames, keep_ratio)`` frames (all of them for ``full``).

    ``num_classes``, ``num_frames`` and ``in_channels`` must be integers >= 1 and ``keep_ratio`` lie in (0, 1] (checked
    for ``full`` too, which ignores it, so a config error shows whatever the method); each raises a ``ValueError``
    naming the argument and its value.
    """
    if not isinstance(method, str) or method.lower() not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}.")
    num_classes, num_frames = check_count(num_classes, "num_classes"), check_count(num_frames, "num_frames (T)")
    in_channels, keep_ratio = check_count(in_channels, "in_channels"), check_keep_ratio(keep_ratio)
    encoder = MobileNetV3Small(spatial_dims=2, in_channels=in_channels, num_classes=0, **(encoder_kwargs or {}))
    k = num_frames if method.lower() == "full" else num_kept(num_frames, keep_ratio)
    sampler = get_sampler(method, k, num_frames=num_frames, in_channels=in_channels, **(sampler_kwargs or {}))
    return SubsampledClassifier(sampler, encoder, num_classes, layout, slice_axis, temporal_head, dropout)
