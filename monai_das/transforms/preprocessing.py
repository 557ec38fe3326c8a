"""A documented recipe that turns a clinical volume file (NIfTI, DICOM series, ...) into the network's input."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = ["volume_preprocessing", "RequireVolume", "RequireVolumed", "RequireVolumeD", "RequireVolumeDict"]


class RequireVolume(Transform):
    """
    Refuse an image that is not a volume, before it is resized into one: a 2D image (``C×H×W``) or a volume with
    fewer than ``min_slices`` slices along an axis (e.g. a one-slice DICOM series, ``C×H×W×1``) would otherwise be
    stretched to a grid that is constant along that axis and still get a prediction.

    Args:
        min_slices: the least number of slices along each spatial axis (default 2). ``1`` accepts one-slice
            volumes, and turns a 2D image into a one-slice volume (a trailing axis of size 1).

    Input ``C×H×W`` or ``C×D×H×W`` (channel first) → ``C×D×H×W`` unchanged (``C×H×W×1`` for an accepted 2D image).

    Raises:
        ValueError: naming the file (``filename_or_obj`` of a MetaTensor's meta), its shape and ``min_slices``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, min_slices: int = 2) -> None:
        if int(min_slices) < 1:
            raise ValueError(f"min_slices must be >= 1, got {min_slices}.")
        self.min_slices = int(min_slices)

    def __call__(self, img: torch.Tensor, name: str | None = None) -> torch.Tensor:
        meta = getattr(img, "meta", {}) or {}
        name = name or meta.get("filename_or_obj") or "image"
        shape = tuple(int(s) for s in img.shape)
        hint = "pass min_slices=1 to accept it as a one-slice volume"
        if len(shape) == 3:
            if self.min_slices > 1:
                raise ValueError(f"'{name}' is a 2D image (channel-first shape {shape}), not a volume; {hint}.")
            img = _append_axis(img)
            shape = (*shape, 1)
        if len(shape) != 4:
            raise ValueError(f"'{name}' has channel-first shape {shape}: expected a volume C×D×H×W.")
        thin = [i for i, s in enumerate(shape[1:]) if s < self.min_slices]
        if thin:
            raise ValueError(
                f"'{name}' has {shape[1 + thin[0]]} slice(s) along spatial axis {thin[0]} (channel-first shape "
                f"{shape}), fewer than min_slices={self.min_slices}: a single slice is not a volume; {hint}."
            )
        return img


class RequireVolumed(MapTransform):
    """
    Dictionary twin of :class:`RequireVolume`.

    Args:
        keys: keys of the channel-first images.
        min_slices: see :class:`RequireVolume`.
        allow_missing_keys: don't raise for a missing key.
    """

    backend = RequireVolume.backend

    def __init__(self, keys: KeysCollection, min_slices: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = RequireVolume(min_slices)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {}) or {}
            d[key] = self.checker(d[key], name=meta.get("filename_or_obj") or f"image '{key}'")
        return d


RequireVolumeD = RequireVolumeDict = RequireVolumed


def _append_axis(img: torch.Tensor) -> torch.Tensor:
    """``C×H×W`` → ``C×H×W×1``, with a 3D affine for a MetaTensor."""
    if not isinstance(img, MetaTensor):
        return img[..., None]
    from monai.data.utils import to_affine_nd

    meta = dict(img.meta)
    meta["affine"] = to_affine_nd(3, img.affine)
    return MetaTensor(img.as_tensor()[..., None], meta=meta)


def volume_preprocessing(
    keys: KeysCollection = "image",
    spatial_size: Sequence[int] | int = (28, 28, 28),
    pixdim: Sequence[float] | float | None = None,
    axcodes: str | None = "RAS",
    intensity_range: Sequence[float] | None = None,
    percentiles: Sequence[float] | None = (0.5, 99.5),
    output_range: Sequence[float] = (0.0, 1.0),
    resize: str = "stretch",
    reader: str | None = None,
    load: bool = True,
    min_slices: int = 2,
) -> Compose:
    """
    MONAI ``Compose`` for a volume: file → float32 ``C×D×H×W`` of ``spatial_size`` in ``output_range``.

    Steps, in order:

    1. ``LoadImaged(reader, ensure_channel_first=True, image_only=True)`` (skipped when ``load=False``, i.e. the
       input is already a channel-first MetaTensor). NIfTI is read by nibabel, a DICOM series folder (or file)
       by ITK (``reader="ITKReader"``; the default picks by file type). A 4D NIfTI gives its 4th axis as channels.
       Then :class:`RequireVolumed` (``min_slices``): a 2D image or a volume with fewer than ``min_slices`` slices
       along an axis (a one-slice DICOM series) is refused with an error naming the file, rather than stretched into
       a volume that is constant along that axis; ``min_slices=1`` accepts it (a 2D image becomes one slice).
    2. ``Orientationd(axcodes)``: reorient to a fixed anatomical frame (default RAS), so slice axis 0 means the
       same direction for every scan. ``None`` skips it.
    3. ``Spacingd(pixdim, mode="bilinear")``: resample to a voxel size in mm (e.g. ``(1.5, 1.5, 1.5)``);
       ``None`` (default) keeps the native spacing (the resize below fixes the grid size anyway).
    4. Intensity scaling to ``output_range``: ``intensity_range=(a_min, a_max)`` clips and scales a fixed window
       (CT: e.g. ``(-1000, 400)`` HU); otherwise ``percentiles=(lower, upper)`` clips and scales between these
       percentiles of each volume (MR, ultrasound); both ``None``: min–max scaling.
    5. Resize to ``spatial_size`` (area interpolation, anti-aliased): ``resize="stretch"`` resizes each axis
       independently; ``resize="pad"`` keeps the aspect ratio (longest side to ``max(spatial_size)``) and then
       pads / crops centrally to ``spatial_size``.
    6. ``EnsureTyped(dtype=float32)``.

    Args:
        keys: keys of the image(s) in the data dict.
        spatial_size: output grid ``(D, H, W)`` or one int for a cube (MedMNIST3D-like: 28 or 64).
        pixdim, axcodes, intensity_range, percentiles, output_range, resize, reader, load, min_slices: see the
            steps.
    """
    if resize not in ("stretch", "pad"):
        raise ValueError(f"resize must be 'stretch' or 'pad', got {resize!r}.")
    size = (int(spatial_size),) * 3 if isinstance(spatial_size, int) else tuple(int(s) for s in spatial_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"spatial_size must be a positive int or (D, H, W), got {spatial_size}.")
    b_min, b_max = (float(v) for v in output_range)
    xforms: list = []
    if load:
        xforms.append(LoadImaged(keys, reader=reader, image_only=True, ensure_channel_first=True))
    xforms.append(RequireVolumed(keys, min_slices=min_slices))
    if axcodes:
        xforms.append(Orientationd(keys, axcodes=axcodes))
    if pixdim is not None:
        xforms.append(Spacingd(keys, pixdim=pixdim, mode="bilinear"))
    if intensity_range is not None:
        a_min, a_max = (float(v) for v in intensity_range)
        xforms.append(ScaleIntensityRanged(keys, a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True))
    elif percentiles is not None:
        lower, upper = (float(v) for v in percentiles)
        xforms.append(
            ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=b_min, b_max=b_max, clip=True)
        )
    else:
        xforms.append(ScaleIntensityd(keys, minv=b_min, maxv=b_max))
    if resize == "stretch":
        xforms.append(Resized(keys, spatial_size=size, mode="area"))
    else:
        xforms.append(Resized(keys, spatial_size=max(size), size_mode="longest", mode="area"))
        xforms.append(ResizeWithPadOrCropd(keys, spatial_size=size))
    xforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(xforms)
