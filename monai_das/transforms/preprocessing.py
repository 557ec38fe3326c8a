"""A documented recipe that turns a clinical volume file (NIfTI, DICOM series, ...) into the network's input."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai.config import KeysCollection
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

__all__ = ["volume_preprocessing"]


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
) -> Compose:
    """
    MONAI ``Compose`` for a volume: file → float32 ``C×D×H×W`` of ``spatial_size`` in ``output_range``.

    Steps, in order:

    1. ``LoadImaged(reader, ensure_channel_first=True, image_only=True)`` (skipped when ``load=False``, i.e. the
       input is already a channel-first MetaTensor). NIfTI is read by nibabel, a DICOM series folder (or file)
       by ITK (``reader="ITKReader"``; the default picks by file type). A 4D NIfTI gives its 4th axis as channels.
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
        pixdim, axcodes, intensity_range, percentiles, output_range, resize, reader, load: see the steps.
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
