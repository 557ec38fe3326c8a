"""
Documented recipes that turn a study file into the network's input: :func:`volume_preprocessing` for volumes
(NIfTI, DICOM series, ...), and :func:`recipe_transforms`, which builds the transforms of a bundle's plain-data
``recipe`` (volume or video layout; :func:`check_recipe` describes its keys).
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
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
    ScaleIntensityRangePercentiles,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import TransformBackends, convert_to_tensor

from monai_das.networks.utils import check_finite
from monai_das.transforms.temporal import (
    NO_SOURCE,
    FramePositions,
    SOURCE_INDICES,
    source_coordinates,
    affine_evidence_slices,
    affine_source_indices,
)
from monai_das.utils.logs import bounded_repr

__all__ = [
    "RECIPE_KEYS",
    "check_axcodes",
    "check_intensity",
    "check_pixdim",
    "check_recipe",
    "recipe_transforms",
    "volume_preprocessing",
    "RequireVolume",
    "RequireVolumed",
    "RequireVolumeD",
    "RequireVolumeDict",
    "CheckIntensityWindow",
    "CheckIntensityWindowd",
    "CheckIntensityWindowD",
    "CheckIntensityWindowDict",
    "window_warning",
    "constant_warning",
    "intensity_warning",
    "ScaleIntensityPercentiles",
    "ScaleIntensityPercentilesd",
    "ScaleIntensityPercentilesD",
    "ScaleIntensityPercentilesDict",
    "map_evidence",
    "MapEvidence",
    "MapEvidenced",
    "MapEvidenceD",
    "MapEvidenceDict",
    "frame_source_indices",
    "SourceIndices",
    "SourceIndicesd",
    "SourceIndicesD",
    "SourceIndicesDict",
]


class ScaleIntensityPercentiles(ScaleIntensityRangePercentiles):
    """
    MONAI's :class:`~monai.transforms.ScaleIntensityRangePercentiles` (same arguments, same output up to float
    rounding) with both percentiles taken by one ``numpy.percentile`` selection. MONAI computes each percentile of a
    tensor below 10⁶ elements with its own ``torch.quantile`` (a full sort): on a 40×44×36 study that was 17 ms of
    the 37 ms a study took to load, preprocess and resize (``cProfile``, 2026-11-30); here 4 ms.

    One difference: where both percentiles are equal (a sparse image: e.g. 16 of the 382 VesselMNIST3D test volumes
    are 0 at their 99.5th percentile), MONAI's range scaling divides by zero and returns the image unscaled and
    unclipped (values up to 255 there); here the image's minimum and maximum are taken instead (min–max scaling; a
    constant image becomes ``b_min``). And ``lower < upper`` is required (MONAI accepts swapped or equal percentiles
    and would invert or flatten the image). A constant image is warned about (``logging``, once per file:
    :func:`constant_warning`; ``warn_constant=False``: not, where the caller says it itself).

    Input ``C×spatial`` tensor or array → the same shape scaled, as MONAI's.
    """

    def __init__(self, lower: float, upper: float, b_min: float | None, b_max: float | None, clip: bool = False,
                 relative: bool = False, channel_wise: bool = False, dtype=np.float32,
                 warn_constant: bool = True) -> None:
        super().__init__(lower, upper, b_min, b_max, clip, relative, channel_wise, dtype)
        self.warn_constant = bool(warn_constant)
        self._warned: set[str] = set()
        # MONAI accepts swapped or equal percentiles and would scale between them (inverting or flattening the image)
        check_intensity(percentiles=(lower, upper))

    def __call__(self, img):
        # the file's name, for the warning about a constant image (MONAI's __call__ drops the meta before _normalize);
        # a context variable, not an attribute: threads of a CacheDataset/ThreadDataLoader share this transform
        token = _IMAGE_NAME.set(str((getattr(img, "meta", {}) or {}).get("filename_or_obj") or "image"))
        try:
            return super().__call__(img)
        finally:
            _IMAGE_NAME.reset(token)

    def _normalize(self, img):
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        a_min, a_max = (float(v) for v in np.percentile(arr, [self.lower, self.upper]))
        b_min, b_max = self.b_min, self.b_max
        if self.relative:  # as MONAI's: the output range follows the percentiles
            if b_min is None or b_max is None:
                raise ValueError("If it is relative, b_min and b_max should not be None.")
            b_min, b_max = ((b_max - b_min) * (self.lower / 100.0) + b_min,
                            (b_max - b_min) * (self.upper / 100.0) + b_min)
        if a_max <= a_min:  # degenerate percentiles: min-max instead of an unscaled, unclipped image
            a_min, a_max = float(arr.min()), float(arr.max())
        if a_max <= a_min:  # a constant image: the lower end of the output range, and a warning (once per file)
            if self.warn_constant:
                _warn_constant(arr, _IMAGE_NAME.get(), self._warned)
            return convert_to_tensor(torch.full_like(torch.as_tensor(img, dtype=torch.float32),
                                                     float(b_min or 0.0)), track_meta=False)
        img = ScaleIntensityRange(a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=self.clip,
                                  dtype=self.dtype)(img)
        return convert_to_tensor(img, track_meta=False)


class ScaleIntensityPercentilesd(ScaleIntensityRangePercentilesd):
    """Dictionary twin of :class:`ScaleIntensityPercentiles` (the arguments of MONAI's
    ``ScaleIntensityRangePercentilesd``, and ``warn_constant``)."""

    def __init__(self, keys: KeysCollection, lower: float, upper: float, b_min: float | None, b_max: float | None,
                 clip: bool = False, relative: bool = False, channel_wise: bool = False, dtype=np.float32,
                 allow_missing_keys: bool = False, warn_constant: bool = True) -> None:
        super().__init__(keys, lower, upper, b_min, b_max, clip, relative, channel_wise, dtype, allow_missing_keys)
        self.scaler = ScaleIntensityPercentiles(lower, upper, b_min, b_max, clip, relative, channel_wise, dtype,
                                                warn_constant)


ScaleIntensityPercentilesD = ScaleIntensityPercentilesDict = ScaleIntensityPercentilesd


#: the most channels a 2D image is taken to have (grey, RGB, RGBA): ``RequireVolume`` reads 3 axes with a longer first
#: one as a volume without its channel axis
MAX_IMAGE_CHANNELS = 4


class RequireVolume(Transform):
    """
    Refuse an image that is not a volume, before it is resized into one: a 2D image (``C×H×W``) or a volume with
    fewer than ``min_slices`` slices along an axis (e.g. a one-slice DICOM series, ``C×H×W×1``) would otherwise be
    stretched to a grid that is constant along that axis and still get a prediction. A volume with NaN or infinite
    values (NaN outside a registered field of view) is refused too: the intensity scaling would make all of it NaN.

    Args:
        min_slices: the least number of slices along each spatial axis (default 2). ``1`` accepts one-slice
            volumes, and turns a 2D image into a one-slice volume (a trailing axis of size 1). Three axes whose first
            is longer than :data:`MAX_IMAGE_CHANNELS` (4) are refused either way: a volume ``D×H×W`` without its
            channel axis, whose slices would become channels.

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
            if shape[0] > MAX_IMAGE_CHANNELS:  # D×H×W read as C×H×W: a min_slices=1 hint made slices channels
                raise ValueError(
                    f"'{name}' has 3 axes {shape}, the first of {shape[0]}: a volume D×H×W without its channel axis? "
                    "Add it (MONAI's EnsureChannelFirst, LoadImage(ensure_channel_first=True), or x[None]); a 2D "
                    f"image of more than {MAX_IMAGE_CHANNELS} channels is not taken for a one-slice volume."
                )
            if self.min_slices > 1:
                raise ValueError(f"'{name}' is a 2D image (channel-first shape {shape}), not a volume; {hint}.")
            img = append_axis(img)
            shape = (*shape, 1)
        if len(shape) != 4:
            raise ValueError(f"'{name}' has channel-first shape {shape}: expected a volume C×D×H×W.")
        thin = [i for i, s in enumerate(shape[1:]) if s < self.min_slices]
        if thin:
            raise ValueError(
                f"'{name}' has {shape[1 + thin[0]]} slice(s) along spatial axis {thin[0]} (channel-first shape "
                f"{shape}), fewer than min_slices={self.min_slices}: a single slice is not a volume; {hint}."
            )
        # NaN outside a registered field of view would turn the percentile scaling into NaN
        check_finite(img, f"'{name}'", f" (channel-first shape {shape}; values beyond float32's range, ±3.4e38, become "
                     "infinite when read); replace them (e.g. with the background value) before training or inference")
        return img


class _NamedCheckd(MapTransform):
    """A dictionary twin that runs ``self.checker(img, name=...)`` on each key, naming the image by its file (the
    ``filename_or_obj`` of a MetaTensor's meta) or its key."""

    checker: Transform

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {}) or {}
            d[key] = self.checker(d[key], name=meta.get("filename_or_obj") or str(key))  # the checker quotes it
        return d


class RequireVolumed(_NamedCheckd):
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


RequireVolumeD = RequireVolumeDict = RequireVolumed


#: with more than ``1 -`` this fraction of the voxels outside an intensity window, or less than this fraction of the
#: window's width spanned by the voxels clipped to it, a volume is flattened by the window (:func:`window_warning`)
WINDOW_MIN_FRACTION = 0.01
#: share of the voxels above a fixed window's top beyond which the volume is taken for other units (a CT stored
#: without its rescale intercept holds HU + 1024: soft tissue lands above a [-1000, 400] HU window; in HU only bone
#: and contrast do, a small share of a scan)
WINDOW_MAX_ABOVE = 0.5


def window_warning(img, intensity_range: Sequence[float], name: str = "image") -> str | None:
    """
    A warning when the fixed intensity window ``intensity_range = (a_min, a_max)`` maps the volume ``img`` to almost
    one value, else ``None``: more than 99 % of its voxels lie outside the window and are clipped to its ends (e.g. a
    CT window in Hounsfield units on stored values without their rescale slope/intercept, or a ``[0, 1]`` window on
    HU), or the voxels clipped to the window span less than 1 % of its width (e.g. a HU window on a volume already
    scaled to ``[0, 1]``). Either way the network sees a nearly blank volume and predicts without a sign. Voxels at
    the window's ends are inside it: a binary mask ``0/255`` under ``[0, 255]`` is not warned about. Also when more
    than half of the voxels lie above the window's top (:data:`WINDOW_MAX_ABOVE`): e.g. a CT exported without its
    rescale intercept (stored values HU + 1024), whose soft tissue is then clipped to the top with the lesions in
    it, while its air still falls inside a HU window.
    """
    a_min, a_max = (float(v) for v in intensity_range)
    t = torch.as_tensor(img)
    if t.numel() == 0 or a_max <= a_min:
        return None
    t = t.float()
    outside = float(((t < a_min) | (t > a_max)).float().mean())
    lo, hi = float(t.min()), float(t.max())
    span = (min(hi, a_max) - max(lo, a_min)) / (a_max - a_min) if hi >= a_min and lo <= a_max else 0.0
    if outside <= 1 - WINDOW_MIN_FRACTION and span >= WINDOW_MIN_FRACTION:  # not flattened: maybe mostly above
        above = float((t > a_max).float().mean())
        if above <= WINDOW_MAX_ABOVE:
            return None
        return (f"'{name}': {above:.0%} of its voxels lie above the top of the intensity window intensity_range "
                f"[{a_min:g}, {a_max:g}] (its values run from {lo:g} to {hi:g}) and are all mapped to its top value: "
                "are its intensities in the window's units? A CT stored without its rescale slope and intercept "
                "holds e.g. HU + 1024, whose soft tissue lies above a HU window. Otherwise set another "
                "`intensity_range`, or `null` for percentile scaling.")
    return (f"'{name}': the intensity window intensity_range [{a_min:g}, {a_max:g}] maps it to almost one value "
            f"({outside:.1%} of its voxels lie outside the window; its values run from {lo:g} to {hi:g}): the "
            "network sees a nearly blank volume. Are its intensities in the window's units (e.g. Hounsfield units "
            "for CT, stored values with their rescale slope and intercept)? Otherwise set another `intensity_range`, "
            "or `null` for percentile scaling.")


def constant_warning(img, name: str = "image") -> str | None:
    """
    A warning when every voxel of ``img`` holds one value (a blank volume: an export that lost its pixel data, a
    placeholder), else ``None``: every intensity scaling maps it to one value, so the network sees no image at all and
    still gives a prediction (a confident one, as often as not) that means nothing.
    """
    t = torch.as_tensor(img)
    if t.numel() == 0:
        return None
    lo, hi = float(t.min()), float(t.max())
    if lo != hi:
        return None
    return (f"'{name}' holds a single value: every one of its {t.numel()} voxels (shape {tuple(t.shape)}) is {lo:g}, "
            "a blank volume (an export without its pixel data, a placeholder?): the network sees no image, so its "
            "prediction means nothing. Check the file.")


def intensity_warning(img, intensity_range: Sequence[float] | None, name: str = "image") -> str | None:
    """
    What is wrong with the intensities of ``img`` for the model, else ``None``: a volume that holds a single value
    (:func:`constant_warning`), said first since every scaling flattens it, and only then a window ``intensity_range``
    that maps it to almost one value (:func:`window_warning`; ``None``: percentile scaling, no window to check).
    """
    return constant_warning(img, name) or (window_warning(img, intensity_range, name)
                                           if intensity_range is not None else None)


#: the file :class:`ScaleIntensityPercentiles` is scaling, in this thread (its warning names it; trial T71e)
_IMAGE_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("monai_das_image_name", default="image")


def _warn_constant(img, name: str, warned: set[str]) -> None:
    """Log :func:`constant_warning` of ``img`` once per ``name`` (``warned``: the names warned about already)."""
    if name not in warned:
        message = constant_warning(img, name)
        if message:
            warned.add(name)
            logging.getLogger(__name__).warning(message)


class CheckIntensityWindow(Transform):
    """
    Warn (``logging``, once per file and process) when the intensity window ``intensity_range`` would map a volume
    to almost one value (:func:`window_warning`), or when the volume holds a single value (:func:`constant_warning`,
    said instead); the image is returned unchanged. Put it before the window's
    ``ScaleIntensityRange``: a volume in other units than the window's trains and predicts on a blank image
    otherwise, without a word.

    Args:
        intensity_range: ``(a_min, a_max)`` of the window.

    Input any array or tensor → the same object.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, intensity_range: Sequence[float]) -> None:
        self.intensity_range = tuple(float(v) for v in intensity_range)
        self._warned: set[str] = set()

    def __call__(self, img, name: str | None = None):
        name = name or (getattr(img, "meta", {}) or {}).get("filename_or_obj") or "image"
        if str(name) not in self._warned:
            message = intensity_warning(img, self.intensity_range, str(name))
            if message:
                self._warned.add(str(name))
                logging.getLogger(__name__).warning(message)
        return img


class CheckIntensityWindowd(_NamedCheckd):
    """
    Dictionary twin of :class:`CheckIntensityWindow`.

    Args:
        keys: keys of the images.
        intensity_range: see :class:`CheckIntensityWindow`.
        allow_missing_keys: don't raise for a missing key.
    """

    backend = CheckIntensityWindow.backend

    def __init__(self, keys: KeysCollection, intensity_range: Sequence[float], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckIntensityWindow(intensity_range)


CheckIntensityWindowD = CheckIntensityWindowDict = CheckIntensityWindowd


def append_axis(img: torch.Tensor) -> torch.Tensor:
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
    check_window: bool = True,
) -> Compose:
    """
    MONAI ``Compose`` for a volume: file → float32 ``C×D×H×W`` of ``spatial_size`` in ``output_range``.

    Steps, in order:

    1. ``LoadImaged(reader, ensure_channel_first=True, image_only=True)`` (skipped when ``load=False``, i.e. the
       input is already a channel-first MetaTensor). NIfTI is read by nibabel, a DICOM series folder (or file)
       by ITK (``reader="ITKReader"``; the default picks by file type). A 4D NIfTI gives its 4th axis as channels;
       a 4D ``.npy`` is ``C×D×H×W`` (:class:`~monai_das.data.readers.VolumeNumpyReader`, when ``reader`` is ``None``).
       Then :class:`RequireVolumed` (``min_slices``): a 2D image or a volume with fewer than ``min_slices`` slices
       along an axis (a one-slice DICOM series) is refused with an error naming the file, rather than stretched into
       a volume that is constant along that axis; ``min_slices=1`` accepts it (a 2D image becomes one slice).
    2. ``Orientationd(axcodes)``: reorient to a fixed anatomical frame (default RAS), so slice axis 0 means the
       same direction for every scan. ``None`` skips it. Three capital letters, one of L/R, A/P and S/I each
       (:func:`check_axcodes`).
    3. ``Spacingd(pixdim, mode="bilinear")``: resample to a voxel size in mm: one number (isotropic) or one per axis
       (e.g. ``(1.5, 1.5, 1.5)``; a value ``<= 0`` keeps that axis' native spacing, e.g. ``(0.7, 0.7, 0)``; any
       other count is refused: :func:`check_pixdim`); ``None`` (default) keeps the native spacing (the resize below
       fixes the grid size anyway).
    4. Intensity scaling to ``output_range``: ``intensity_range=(a_min, a_max)`` clips and scales a fixed window
       (CT: e.g. ``(-1000, 400)`` HU), after :class:`CheckIntensityWindowd` (``check_window``), which warns once per
       file when the window maps the volume to almost one value (intensities in other units than the window's) or
       the volume holds one value; otherwise ``percentiles=(lower, upper)`` clips and scales between these
       percentiles of each volume (MR, ultrasound; a constant volume is warned about when ``check_window``); both
       ``None``: min–max scaling.
    5. Resize to ``spatial_size`` (area interpolation, anti-aliased): ``resize="stretch"`` resizes each axis
       independently; ``resize="pad"`` scales all axes by one factor (longest side to ``max(spatial_size)``) and
       then pads with zeros / crops centrally to ``spatial_size``: the ratio of the voxel counts is kept, which is
       the ratio in millimetres only for isotropic voxels (set ``pixdim`` to resample to them first). Padding slices
       have no source slice (``-1`` in :class:`~monai_das.data.LoadStudy`'s ``source_indices``, ``"padding"`` in the
       reports).
    6. ``EnsureTyped(dtype=float32)``.

    Args:
        keys: keys of the image(s) in the data dict.
        spatial_size: output grid ``(D, H, W)`` or one int for a cube (MedMNIST3D-like: 28 or 64).
        pixdim, axcodes, intensity_range, percentiles, output_range, resize, reader, load, min_slices, check_window:
            see the steps.
    """
    if resize not in ("stretch", "pad"):
        raise ValueError(f"resize must be 'stretch' or 'pad', got {bounded_repr(resize)}.")
    size = (int(spatial_size),) * 3 if isinstance(spatial_size, int) else tuple(int(s) for s in spatial_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"spatial_size must be a positive int or (D, H, W), got {bounded_repr(spatial_size)}.")
    check_intensity(intensity_range, percentiles, output_range)
    axcodes = check_axcodes(axcodes)
    check_pixdim(pixdim)
    b_min, b_max = (float(v) for v in output_range)
    xforms: list = []
    if load:
        loader = LoadImaged(keys, reader=reader, image_only=True, ensure_channel_first=True)
        if reader is None:  # a .npy volume with or without its channel axis, as the study check reads it
            from monai_das.data.readers import VolumeNumpyReader

            loader.register(VolumeNumpyReader())
        xforms.append(loader)
    xforms.append(RequireVolumed(keys, min_slices=min_slices))
    if axcodes:
        # labels=None: the axis labels follow the image's "space" (MONAI's current default), given so that MONAI's
        # notice of the changed default is not logged by every run
        xforms.append(Orientationd(keys, axcodes=axcodes, labels=None))
    if pixdim is not None:
        xforms.append(Spacingd(keys, pixdim=pixdim, mode="bilinear"))
    if intensity_range is not None:
        a_min, a_max = (float(v) for v in intensity_range)
        if check_window:
            xforms.append(CheckIntensityWindowd(keys, (a_min, a_max)))
        xforms.append(ScaleIntensityRanged(keys, a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True))
    elif percentiles is not None:
        lower, upper = (float(v) for v in percentiles)
        xforms.append(
            ScaleIntensityPercentilesd(keys, lower=lower, upper=upper, b_min=b_min, b_max=b_max, clip=True,
                                       warn_constant=check_window)
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


#: the keys of a preprocessing recipe (see :func:`check_recipe`)
RECIPE_KEYS = (
    "layout", "spatial_size", "slice_axis", "num_frames", "axcodes", "pixdim", "intensity_range", "percentiles",
    "output_range", "resize", "grayscale", "temporal_mode", "min_frames", "modalities", "geometry",
)


def _pair(value, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be null or two numbers, got {bounded_repr(value)}.") from None
    if not (math.isfinite(a) and math.isfinite(b)):  # a card's [0, inf] failed every study in a JSON writer (T71g)
        raise ValueError(f"{name} must be null or two finite numbers, got {bounded_repr(value)}.")
    return a, b


#: MONAI's ``Orientation`` axis codes: one letter of each pair, in any order
AXCODE_PAIRS = ("LR", "AP", "SI")


def check_axcodes(axcodes, option: str = "axcodes") -> str | None:
    """
    ``axcodes`` as one string (a list ``["R", "A", "S"]``, as ``Orientationd`` also takes, joined), ``None`` for
    ``None`` / ``""`` / ``"none"`` / ``"null"`` (no reorientation); refused unless it is three capital letters, one
    of L/R, one of A/P and one of S/I, in any order (``RAS``, ``LPS``, ``SLP``). MONAI's ``Orientation`` takes only
    capitals and fails on every image with "Not all axis codes ..." otherwise, and it accepts a repeated direction
    (``RRS``) and reorients to a frame that is no orientation.

    Raises:
        ValueError: naming ``option`` and the value.
    """
    if axcodes is None or (isinstance(axcodes, str) and axcodes.strip().lower() in ("", "none", "null")):
        return None
    text = "".join(map(str, axcodes)) if isinstance(axcodes, (list, tuple)) else str(axcodes)
    letters = [next((c for c in text.upper() if c in pair), None) for pair in AXCODE_PAIRS]
    if len(text) == 3 and text == text.upper() and None not in letters and sorted(text) == sorted(letters):
        return text
    if len(text) == 3 and text != text.upper() and check_axcodes(text.upper()) is not None:
        why = f"MONAI's Orientation takes capital letters: give {text.upper()!r}"
    else:
        missing = [pair for pair, c in zip(AXCODE_PAIRS, letters) if c is None]
        why = (f"it has {len(text)} letters" if len(text) != 3
               else f"it has none of {'/'.join(missing[0])}" if missing else "it names a direction twice")
    raise ValueError(f"{option} {axcodes!r} is not an orientation ({why}): give three capital letters, one of L/R, "
                     "one of A/P and one of S/I, in any order (e.g. 'RAS', 'LPS'), or null to keep each file's "
                     "orientation.")


def check_pixdim(pixdim, option: str = "pixdim") -> None:
    """
    Refuse a ``pixdim`` (``Spacingd``'s voxel size in mm) that is not ``None``, one number (isotropic) or three
    numbers (one per axis of the oriented volume): MONAI's ``Spacing`` repeats the last value of a shorter list, so
    ``[0.7, 0.7]`` resamples a volume's 5 mm slice axis to 0.7 mm too. A value ``<= 0`` keeps that axis' native
    spacing (MONAI's rule), e.g. ``[0.7, 0.7, 0]``.

    Raises:
        ValueError: naming ``option`` and the value.
    """
    if pixdim is None:
        return
    if isinstance(pixdim, (list, tuple)):
        values = list(pixdim)
    elif isinstance(pixdim, (np.ndarray, torch.Tensor)):  # as Spacingd takes them
        values = np.asarray(pixdim.tolist() if isinstance(pixdim, torch.Tensor) else pixdim).reshape(-1).tolist()
    else:
        values = [pixdim]
    try:
        numbers = [float(v) for v in values if not isinstance(v, bool)]
    except (TypeError, ValueError):
        numbers = []
    if len(values) in (1, 3) and len(numbers) == len(values) and all(math.isfinite(v) for v in numbers):
        return
    hint = ""
    if len(numbers) == len(values) == 2:
        hint = (f" (MONAI would repeat the last value: {[*values, values[-1]]}; give "
                f"{[*values, values[-1]]} for that, or {[*values, 0]} to keep the native spacing of the third axis)")
    raise ValueError(f"{option} {pixdim!r} must be null, one number (an isotropic voxel size in mm) or three numbers "
                     f"(one per axis; a value <= 0 keeps that axis' native spacing){hint}.")


def check_intensity(intensity_range=None, percentiles=None, output_range=(0.0, 1.0)) -> None:
    """
    Refuse intensity options that would silently give a wrong input: ``intensity_range`` ``[a_min, a_max]`` with
    ``a_min >= a_max`` (an inverted or zero-width window: MONAI's range scaling flips or divides by zero),
    ``percentiles`` ``[lower, upper]`` outside ``[0, 100]`` or with ``lower >= upper``, ``output_range`` with
    ``b_min >= b_max``. Each is ``None`` or two numbers (``output_range`` two numbers).

    Raises:
        ValueError: naming the option and its value.
    """
    window = _pair(intensity_range, "intensity_range")
    if window is not None and not window[0] < window[1]:
        raise ValueError(f"intensity_range [a_min, a_max] must have a_min < a_max, got [{window[0]:g}, "
                         f"{window[1]:g}]: swapped values would invert the image, equal ones divide by zero.")
    pct = _pair(percentiles, "percentiles")
    if pct is not None and not 0.0 <= pct[0] < pct[1] <= 100.0:
        raise ValueError(
            f"percentiles [lower, upper] must satisfy 0 <= lower < upper <= 100, got [{pct[0]:g}, {pct[1]:g}].")
    out = _pair(output_range, "output_range")
    if out is None or not out[0] < out[1]:
        raise ValueError(f"output_range [b_min, b_max] must be two numbers with b_min < b_max, got "
                         f"{bounded_repr(output_range)}.")


def check_recipe(recipe: Mapping) -> dict:
    """
    Check a preprocessing recipe and fill in its defaults; returns a new plain dict.

    A recipe is plain data (what a bundle config defines under ``recipe``), describing how a study file becomes the
    network input:

    - ``layout="volume"`` (input ``C×D×H×W``): ``spatial_size`` ``[D, H, W]`` (or one int), ``slice_axis`` (0, 1
      or 2, default 0: the axis whose slices are the sampler's frames), ``axcodes`` (default ``"RAS"``; ``None``
      keeps the file's orientation; :func:`check_axcodes`), ``pixdim`` (default ``None``; one number or three,
      :func:`check_pixdim`), ``intensity_range`` ``[a_min, a_max]`` (default
      ``None``: ``percentiles``, default ``[0.5, 99.5]``), ``output_range`` (default ``[0, 1]``), ``resize``
      (``"stretch"``, default, or ``"pad"``), ``min_frames`` (default 2: fewer slices along an axis are refused);
      see :func:`volume_preprocessing`.
    - ``layout="video"`` (input ``T×C×H×W``): ``num_frames`` ``T``, ``spatial_size`` ``[H, W]`` of a frame (or one
      int), ``grayscale`` (default ``True``: ``C=1``, else RGB ``C=3``), ``temporal_mode`` (``"uniform"``, default,
      ``"loop"`` or ``"edge"``), ``min_frames`` (default 2: still images are refused), ``output_range``; see
      :class:`monai_das.transforms.LoadVideo`.

    Both layouts: ``modalities`` (default ``None``: not known), the DICOM modalities of the studies the model was
    trained on (e.g. ``["CT"]``; a bundle records its training datalist's): a DICOM study of another modality is
    warned about by :class:`monai_das.data.LoadStudy` (its prediction may mean nothing); it changes no step.
    ``geometry`` (default ``None``: not known), the training volumes' range of physical extent and voxel size
    (``{"extent_mm": {"min": [3 mm], "max": [3 mm]}, "spacing_mm": {...}}``, per axis after ``axcodes``; a bundle
    records its training datalist's NIfTI files'): a volume far outside it is warned about by
    :class:`monai_das.data.LoadStudy` (:func:`monai_das.data.studies.geometry_warning`); it changes no step. For
    clips, ``{"frame_aspect": {"min": h/w, "max": h/w}}``, the training clips' range of frame height / width (a
    bundle records its training datalist's): a clip whose frames are resized to the grid with an aspect far outside
    it (stretched unlike any training clip) is warned about (:func:`monai_das.data.studies.aspect_warning`); with
    ``"clip_seconds": {"min": s, "max": s}``, the training clips' range of duration (frames / the frame rate their
    files declare), a clip far shorter or longer (its ``T`` frames span another stretch of time) is warned about too
    (:func:`monai_das.data.studies.duration_warning`).

    Either layout may carry the other's keys for studies of the other kind (``temporal_mode`` for a clip read as a
    volume, ``axcodes``/``intensity_range``/... for a volume read as a clip): :class:`monai_das.data.LoadStudy` uses
    them.

    Raises:
        ValueError: naming the key: an unknown key (typo), a missing ``layout``/``spatial_size``/``num_frames``, or a
        bad value.
    """
    if not isinstance(recipe, Mapping):
        raise ValueError(f"a recipe is a dict (see check_recipe), got {type(recipe).__name__}.")
    unknown = sorted(str(k) for k in recipe if k not in RECIPE_KEYS)
    if unknown:
        raise ValueError(f"recipe has unknown key(s) {unknown}; the keys are {list(RECIPE_KEYS)}.")
    layout = recipe.get("layout")
    if layout not in ("volume", "video"):
        raise ValueError(f"recipe 'layout' must be 'volume' or 'video', got {bounded_repr(layout)}.")
    if recipe.get("spatial_size") is None:
        raise ValueError(f"recipe {dict(recipe)} has no 'spatial_size'.")
    dims = 3 if layout == "volume" else 2
    size = recipe["spatial_size"]
    what = "[D, H, W]" if layout == "volume" else "[H, W] of a frame"
    try:  # a raw "invalid literal for int()" named no key
        size = [int(size)] * dims if isinstance(size, (int, float, str)) else [int(s) for s in size]
    except (TypeError, ValueError):
        size = []
    if len(size) != dims or min(size) < 1:
        raise ValueError(f"recipe 'spatial_size' must be a positive int or {what}, got "
                         f"{bounded_repr(recipe['spatial_size'])}.")
    out = {
        "layout": layout,
        "spatial_size": size,
        "slice_axis": _recipe_int(recipe, "slice_axis", 0, "0, 1 or 2 (the axis of the volume turned to 'axcodes'; "
                                  "a bundle's --slice_axis axial is recorded as its index)"),
        "axcodes": recipe.get("axcodes", "RAS") or None,
        "pixdim": recipe.get("pixdim"),
        "intensity_range": _pair(recipe.get("intensity_range"), "recipe 'intensity_range'"),
        "percentiles": _pair(recipe.get("percentiles", (0.5, 99.5)), "recipe 'percentiles'"),
        "output_range": _pair(recipe.get("output_range", (0.0, 1.0)), "recipe 'output_range'"),
        "resize": str(recipe.get("resize", "stretch")),
        "grayscale": bool(recipe.get("grayscale", True)),
        "temporal_mode": str(recipe.get("temporal_mode", "uniform")),
        "min_frames": _recipe_int(recipe, "min_frames", 2, ">= 1"),
        "modalities": _modalities(recipe.get("modalities")),
        "geometry": _geometry(recipe.get("geometry")),
    }
    try:  # also refuses a null output_range
        check_intensity(out["intensity_range"], out["percentiles"], out["output_range"])
        out["axcodes"] = check_axcodes(out["axcodes"], "'axcodes'")
        pixdim = out["pixdim"]
        if isinstance(pixdim, (list, tuple)) and len(pixdim) == 2:  # a card of a model trained before check_pixdim
            out["pixdim"] = [*pixdim, pixdim[-1]]  # what MONAI's Spacing made of it in that training
            logging.getLogger(__name__).warning(
                f"recipe 'pixdim' {list(pixdim)} has two values (a model trained before they were refused): read as "
                f"MONAI's Spacing read it in that training, {out['pixdim']}.")
        check_pixdim(out["pixdim"], "'pixdim'")
    except ValueError as e:
        raise ValueError(f"recipe {e}") from None
    if out["slice_axis"] not in (0, 1, 2):
        raise ValueError(f"recipe 'slice_axis' must be 0, 1 or 2, got {recipe.get('slice_axis')!r}.")
    if out["resize"] not in ("stretch", "pad"):
        raise ValueError(f"recipe 'resize' must be 'stretch' or 'pad', got {out['resize']!r}.")
    if out["min_frames"] < 1:
        raise ValueError(f"recipe 'min_frames' must be >= 1, got {recipe.get('min_frames')!r}.")
    from monai_das.transforms.io import TEMPORAL_MODES

    if out["temporal_mode"] not in TEMPORAL_MODES:
        raise ValueError(f"recipe 'temporal_mode' must be one of {TEMPORAL_MODES}, got {out['temporal_mode']!r}.")
    if layout == "video":
        if recipe.get("num_frames") is None or int(recipe["num_frames"]) < 1:
            raise ValueError(f"a video recipe needs 'num_frames' >= 1, got {recipe.get('num_frames')!r}.")
        out["num_frames"] = int(recipe["num_frames"])
    else:
        out["num_frames"] = size[out["slice_axis"]]
        if recipe.get("num_frames") is not None and int(recipe["num_frames"]) != out["num_frames"]:
            raise ValueError(f"recipe 'num_frames'={recipe['num_frames']} disagrees with spatial_size {size} along "
                             f"slice_axis {out['slice_axis']}.")
    return out


def _recipe_int(recipe: Mapping, key: str, default: int, rule: str) -> int:
    """``recipe[key]`` as an int (``default`` when absent or null), or a ``ValueError`` naming the key and ``rule``."""
    value = recipe.get(key)
    if value is None:
        return default
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"recipe '{key}' must be {rule}, got {bounded_repr(value)}.") from None


def _modalities(value: Any) -> list[str] | None:
    """A recipe's ``modalities``: ``None``, or DICOM modality names (upper case, sorted, once each)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
            isinstance(m, str) and m.strip() for m in value):
        raise ValueError(f"recipe 'modalities' must be null or a list of DICOM modalities (e.g. [\"CT\"]), got "
                         f"{value!r}.")
    return sorted({m.strip().upper() for m in value}) or None


def _geometry(value: Any) -> dict | None:
    """A recipe's ``geometry``: ``None``, ``{"extent_mm"|"spacing_mm": {"min"|"max": 3 positive numbers}}`` (volumes)
    or ``{"frame_aspect": {"min"|"max": a positive number}}`` (clips: height / width of their frames), optionally with
    ``"clip_seconds": {"min"|"max": a positive number}`` (clips: their duration, frames / declared frame rate)."""
    if value is None:
        return None
    clips = isinstance(value, Mapping) and "frame_aspect" in value
    try:
        if clips:
            parts = [p for p in ("frame_aspect", "clip_seconds") if p in value]
            out = {p: {k: float(value[p][k]) for k in ("min", "max")} for p in parts}
            ok = len(value) == len(parts) and all(0 < v["min"] <= v["max"] < math.inf for v in out.values())
        else:
            out = {part: {k: [float(v) for v in value[part][k]] for k in ("min", "max")}
                   for part in ("extent_mm", "spacing_mm")}
            ok = all(len(v) == 3 and min(v) > 0 for part in out.values() for v in part.values())
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        form = ("of clips must be {\"frame_aspect\": {\"min\": h/w, \"max\": h/w}} (and optionally \"clip_seconds\": "
                "{\"min\": s, \"max\": s}) with 0 < min <= max" if clips else
                "must be null or {\"extent_mm\": {\"min\": [3 mm], \"max\": [3 mm]}, \"spacing_mm\": {...}} with "
                "positive numbers")
        raise ValueError(f"recipe 'geometry' {form}, got {bounded_repr(value)}.")
    return out


def recipe_volume_kwargs(recipe: Mapping) -> dict:
    """The :func:`volume_preprocessing` arguments of a (checked) recipe, ``spatial_size`` and ``min_slices`` aside."""
    return {k: recipe[k] for k in ("pixdim", "axcodes", "intensity_range", "percentiles", "output_range", "resize")}


def recipe_transforms(recipe: Mapping, keys: KeysCollection = "image", load: bool = True) -> Compose:
    """
    The MONAI ``Compose`` of a plain-data recipe (see :func:`check_recipe`): what a bundle's transform list built
    from the same settings does, as one call.

    - ``layout="volume"``: :func:`volume_preprocessing` (``LoadImaged`` → :class:`RequireVolumed` (``min_frames``) →
      ``Orientationd`` → ``Spacingd`` → intensity scaling → ``Resized`` → float32).
    - ``layout="video"``: :class:`monai_das.transforms.LoadVideod` (decode, resample to ``num_frames``, resize
      frames, grayscale; clips with fewer than ``min_frames`` frames are refused) → scaling from ``[0, 1]`` to
      ``output_range`` when it is not ``[0, 1]`` → float32.

    These are the transforms of plain file paths. :class:`monai_das.data.LoadStudyd` applies the same recipe to any
    study (DICOM series split by series, multi-frame DICOM, a clip for a volume network, ...) and records which
    slice/frame of the file each input frame is.

    Args:
        recipe: the recipe dict.
        keys: keys of the images in the data dict.
        load: volumes only: ``False`` when the input is already a channel-first ``MetaTensor`` (no ``LoadImaged``).
            A video recipe decodes and resamples in one step and needs ``load=True``.
    """
    r = check_recipe(recipe)
    if r["layout"] == "volume":
        return volume_preprocessing(keys=keys, spatial_size=r["spatial_size"], load=load, min_slices=r["min_frames"],
                                    **recipe_volume_kwargs(r))
    if not load:
        raise ValueError("a video recipe decodes and resamples the clip in one step (LoadVideod): use load=True.")
    from monai_das.transforms.io import LoadVideod

    xforms: list = [LoadVideod(keys, num_frames=r["num_frames"], spatial_size=r["spatial_size"],
                               grayscale=r["grayscale"], temporal_mode=r["temporal_mode"], min_frames=r["min_frames"])]
    b_min, b_max = r["output_range"]
    if (b_min, b_max) != (0.0, 1.0):
        xforms.append(ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=b_min, b_max=b_max))
    xforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(xforms)


_WARNED_NO_RECORD: list[bool] = []  # map_evidence's warnings about a volume (True) / clip without metadata: once each
#: MONAI transforms (``applied_operations`` class names) that resample by interpolation, blending neighbouring slices
_INTERPOLATING = frozenset({"SpatialResample", "Spacing", "ResampleToMatch", "Affine", "RandAffine", "Zoom", "RandZoom",
                            "Rotate", "RandRotate", "Rand2DElastic", "Rand3DElastic", "Resample"})


def _interpolates(op: Mapping) -> bool:
    """Whether a traced operation (a ``MetaTensor.applied_operations`` entry) blends slices as no area resize does."""
    name = str(op.get("class", "")) if isinstance(op, Mapping) else ""
    if name == "Resize":
        return (op.get("extra_info") or {}).get("mode") != "area"
    return name in _INTERPOLATING


def map_evidence(evidence: Sequence[int], img: torch.Tensor, frame_axis: int) -> list[int]:
    """
    A datalist's evidence (slice or frame indices in the *file's* numbering) as positions along ``frame_axis`` of
    ``img``, the network input after loading, orientation, spacing and resizing, padded with ``-1`` to the input's
    length ``T`` (so every item of a dataset carries a list of the same length and batches collate; PyTorch's
    ``default_collate`` makes a list of ``T`` tensors of ``B`` entries of it, position ``j`` of every item, not one list
    per item: ``torch.stack(batch["evidence"], 1)`` gives ``B×T``, and MONAI's ``decollate_batch`` the items' lists).

    Each input frame has a source index in the file: a clip loaded by :class:`~monai_das.transforms.LoadVideo`
    records them (meta ``source_indices``); for a volume (a MetaTensor with ``original_affine``, as
    :class:`monai.transforms.LoadImage` gives) they come through the affines (:func:`affine_source_indices`, as
    for :class:`monai_das.data.LoadStudy`), so orientation flips and permutations, spacing and resizing are followed.
    A clip's evidence is the input frames that *are* an evidence frame (none when temporal resampling dropped them:
    warned);
    a volume's, for each evidence slice the input slices that carry the largest share of it, all of them on a tie,
    after orientation and an area resize (a slice shared half and half between two input slices is both; padding
    carries none: :func:`~monai_das.transforms.affine_evidence_slices`), else (an interpolating resampling such as
    ``Spacing`` in the image's ``applied_operations``, a resize of another mode, or a volume read by
    :class:`~monai_das.data.LoadStudy`, its ``source_indices`` with ``frame_axis`` ≥ 1) the input slice(s) nearest
    to it; a thin finding is never lost by a downsampling. A volume already turned into frames (``VolumeToFramesd``) is
    refused: map the evidence before. For a DICOM series folder (read by position, with ITK) the
    evidence counts its slices in ``InstanceNumber`` order, the numbering of the reports' source indices
    (:func:`monai_das.data.series_slice_ranks`). Without any record, the indices are the input's own.
    Entries ``< 0`` are padding and ignored. ``frame_axis`` is the frame dimension of ``img`` (1 + ``slice_axis``
    for a channel-first volume, 0 for a ``T×C×H×W`` clip).

    Raises:
        ValueError: an evidence index outside the file's slices/frames, naming the file, the index and the length.
    """
    meta = getattr(img, "meta", {}) or {}
    name = meta.get("filename_or_obj") or "image"
    if not 0 <= int(frame_axis) < img.ndim:
        raise ValueError(f"'{name}': frame_axis {frame_axis} is not a dimension of the image of shape "
                         f"{tuple(img.shape)} (1 + slice_axis for a channel-first volume, 0 for a T×C×H×W clip).")
    t = int(img.shape[frame_axis])
    if isinstance(evidence, (str, bytes)):  # iterated, '12' was frames 1 and 2
        raise ValueError(f"'{name}': evidence {evidence!r} is a string, not a list of indices: read a CSV's "
                         "'11;12;13' with load_datalist or read_video_listing (or split it on ';').")
    odd = [i for i in evidence if isinstance(i, bool) or not float(i).is_integer()]
    if odd:  # 2.7 was taken as 2
        raise ValueError(f"'{name}': evidence index {odd[0]!r} is not a whole number: give slice/frame numbers.")
    wanted = sorted({int(i) for i in evidence if int(i) >= 0})
    if "slice_axis" in meta:  # VolumeToFrames' mark: a volume turned into frames (frame_axis 1 gave [-1] silently)
        raise _volume_as_frames(name, frame_axis, img.shape)
    if SOURCE_INDICES in meta and frame_axis >= 1:  # a volume read by LoadStudy: the nearest input slices
        source = [int(i) for i in torch.as_tensor(meta[SOURCE_INDICES]).reshape(-1)]
        if len(source) != t:
            raise ValueError(f"'{name}': frame_axis {frame_axis} (length {t}) is not the axis of the study's "
                             f"{len(source)} slices/frames (shape {tuple(img.shape)}): give frame_axis = 1 + the "
                             "recipe's slice_axis for a channel-first volume, 0 for a T×C×H×W clip.")
        _check_evidence(wanted, int(meta.get("original_num_frames", max(source) + 1)), name, "slices")
        kept = _nearest_slices([i if i >= 0 else math.inf for i in source], wanted)  # padding: no slice of the file
    elif SOURCE_INDICES in meta:  # a clip: the input frames that are an evidence frame
        source = [int(i) for i in torch.as_tensor(meta[SOURCE_INDICES]).reshape(-1)]
        _check_evidence(wanted, int(meta.get("original_num_frames", max(source) + 1)), name, "frames")
        evidence_frames = set(wanted)
        kept = [j for j, i in enumerate(source) if i in evidence_frames]
        if wanted and not kept:  # an item that carried evidence would silently count as one without
            logging.getLogger(__name__).warning(
                f"'{name}': none of its evidence frames {wanted} is among the {t} frames the network sees (its "
                f"{meta.get('original_num_frames', '?')} frames resampled to {t}): the item counts as one without "
                "evidence in evidence_kept. Give evidence as runs of frames, or a larger num_frames.")
    elif isinstance(img, MetaTensor) and meta.get("original_affine") is not None:
        if not 1 <= frame_axis <= 3 or img.ndim != 4:
            raise _volume_as_frames(name, frame_axis, img.shape)
        source_shape = [int(s) for s in meta.get("spatial_shape", img.shape[1:])]
        source, src_axis = affine_source_indices(meta["original_affine"], img.affine, img.shape[1:], source_shape,
                                                 frame_axis - 1, outside=NO_SOURCE)  # padding is no evidence
        _check_evidence(wanted, source_shape[src_axis], name, "slices")
        if wanted and src_axis == 2 and os.path.isdir(str(name)):
            # a DICOM series folder: evidence counts its slices in InstanceNumber order, as the reports' source
            # indices do, whatever the numbering's direction or interleaving and whichever reader stacked them
            from monai_das.data.studies import series_slice_ranks

            ranks = series_slice_ranks(name, meta["original_affine"], source_shape[2])
            wanted = sorted(ranks.index(i) for i in wanted)
        if any(_interpolates(op) for op in getattr(img, "applied_operations", None) or []):
            # resampled (Spacing, ...): the input slice(s) nearest to each, by their continuous coordinates in the
            # file (rounded ones tied slices 9 and 10 at file slices 13 and 15 around a finding at 14), padding none
            coords = source_coordinates(meta["original_affine"], img.affine, img.shape[1:], frame_axis - 1)[0]
            kept = _nearest_slices([c if i >= 0 else math.inf for c, i in zip(coords, source)], wanted)
        else:  # oriented and area-resized: the input slices that show each most, ties all (a slice shared half and
            # half between two: the nearest alone counted a kept one showing the whole finding as a miss)
            kept = affine_evidence_slices(meta["original_affine"], img.affine, img.shape[1:], frame_axis - 1, wanted)
    else:  # no record of how the frames were produced: the indices are the input's own
        _check_evidence(wanted, t, name, "frames")
        volume = frame_axis >= 1
        if wanted and volume not in _WARNED_NO_RECORD:  # a volume or clip without its metadata (once a process each)
            _WARNED_NO_RECORD.append(volume)
            logging.getLogger(__name__).warning(
                f"'{name}': a {'volume' if volume else 'clip'} without the record of how its "
                f"{'slices' if volume else 'frames'} were produced (no MetaTensor affines, no source_indices: "
                "EnsureTyped(track_meta=False), or a plain tensor, before MapEvidenced?): its evidence indices are "
                "taken as the input's own, wrong after any flip, resize or temporal resampling. Map the evidence "
                f"right after {'the resize' if volume else 'LoadVideod'}, on the MetaTensor "
                f"{'LoadImaged' if volume else 'it'} gives.")
        kept = wanted
    return FramePositions(kept + [-1] * (t - len(kept)))


def _nearest_slices(source: Sequence[float], wanted: Sequence[int]) -> list[int]:
    """The input slices whose coordinate in the file's slices (``source``, one per input slice; ``inf`` for padding,
    never evidence) is nearest to each ``wanted`` slice (all of them on a tie), ascending."""
    src = np.asarray(source, dtype=float)
    kept = set()
    for i in wanted:
        distance = np.abs(src - i)
        if not np.isfinite(distance.min()):  # padding only
            continue
        kept.update(int(j) for j in np.flatnonzero(distance <= distance.min() + 1e-6))
    return sorted(kept)


def _volume_as_frames(name: str, frame_axis: int, shape: Sequence[int], what: str = "evidence",
                      transform: str = "MapEvidenced") -> ValueError:
    """The refusal of ``what`` mapped on a volume that is no longer channel-first ``C×D×H×W`` (``VolumeToFramesd``)."""
    return ValueError(f"'{name}': a volume's {what} is mapped on the channel-first volume C×D×H×W (frame_axis = 1 + "
                      f"slice_axis), got frame_axis {frame_axis} on shape {tuple(shape)}: put {transform} before "
                      "VolumeToFramesd.")


def _check_evidence(evidence: list[int], length: int, name: str, what: str) -> None:
    bad = [i for i in evidence if i >= length]
    if bad:
        raise ValueError(f"'{name}': evidence index {bad[0]} is outside its {length} {what} (0..{length - 1}).")


class MapEvidence(Transform):
    """
    Array transform: :func:`map_evidence` — a datalist's evidence list (slice/frame numbers in the file) as the
    positions along ``frame_axis`` of ``img`` (the network input after loading and the spatial transforms) that show
    it, ascending, padded with ``-1`` to the input's length ``T``. Called with the evidence and the image:
    ``MapEvidence(frame_axis=3)(evidence, img)``.

    Args:
        frame_axis: frame dimension of the image (1 + ``slice_axis`` for a channel-first volume, 0 for a clip).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, frame_axis: int = 1) -> None:
        self.frame_axis = int(frame_axis)

    def __call__(self, evidence: Sequence[int], img: torch.Tensor) -> list[int]:
        return map_evidence(evidence, img, self.frame_axis)


class MapEvidenced(MapTransform):
    """
    Dictionary transform: replaces the evidence list under each key (a datalist item's ``evidence``, in the file's
    slice/frame numbering) by :func:`map_evidence` of it against ``data[image_key]``, so the evidence diagnostics
    and figures count the slices the network actually sees. Put it after the last spatial transform (``Resized``)
    and before the image's meta data is dropped (``EnsureTyped(track_meta=False)``). The new list holds the input's
    evidence slices/frames, ascending, padded with ``-1`` to the input's length ``T`` (items batch alike; see
    :class:`MapEvidence`, its array form).

    Args:
        keys: evidence keys (default ``"evidence"``; items without one are left as they are with
            ``allow_missing_keys``).
        image_key: the loaded image.
        frame_axis: frame dimension of the image (1 + ``slice_axis`` for a channel-first volume, 0 for a clip).
        allow_missing_keys: don't raise for a missing key (default ``True``: evidence is optional).
    """

    backend = MapEvidence.backend

    def __init__(self, keys: KeysCollection = "evidence", image_key: str = "image", frame_axis: int = 1,
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.transform = image_key, MapEvidence(frame_axis)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.image_key not in d:  # a bare KeyError 'image' before (trial T63b)
                raise KeyError(f"MapEvidenced: the item has evidence under {key!r} but no image under image_key "
                               f"{self.image_key!r} (its keys: {sorted(map(str, d))}) to map it on.")
            d[key] = self.transform(d[key], d[self.image_key])
        return d


MapEvidenceD = MapEvidenceDict = MapEvidenced


def frame_source_indices(img: torch.Tensor, frame_axis: int) -> list[int] | None:
    """
    For each of the ``T`` frames of ``img`` along ``frame_axis`` (the network input after loading, orientation,
    spacing and resizing), its slice/frame number in the file, as the reports' ``kept_source_indices`` and the
    predictions' ``source_frames`` name them: a clip's from :class:`~monai_das.transforms.LoadVideo` (meta
    ``source_indices``), a volume's through the affines (:func:`affine_source_indices`, the nearest slice; a DICOM
    series folder's in ``InstanceNumber`` order, :func:`monai_das.data.series_slice_ranks`); :data:`NO_SOURCE`
    (``-1``) for a padding slice. ``None`` when ``img`` carries no record of how its frames were produced (a plain
    tensor, an array dataset's item) or a series' files cannot be numbered.

    ``frame_axis``: 1 + ``slice_axis`` for a channel-first volume, 0 for a ``T×C×H×W`` clip. A volume already turned
    into frames (``VolumeToFramesd``) is refused: take its numbers before.
    """
    meta = getattr(img, "meta", {}) or {}
    if "slice_axis" in meta:  # VolumeToFrames' mark: its frames' numbers were all -1, said by nothing (trial T63b)
        raise _volume_as_frames(meta.get("filename_or_obj") or "image", frame_axis, img.shape, "slice numbering",
                                "SourceIndicesd")
    t = int(img.shape[frame_axis])
    if SOURCE_INDICES in meta:  # a clip (LoadVideo) or a volume read by LoadStudy: the file's own numbers
        source = [int(i) for i in torch.as_tensor(meta[SOURCE_INDICES]).reshape(-1)]
        return source if len(source) == t else None
    if not (isinstance(img, MetaTensor) and meta.get("original_affine") is not None and img.ndim == 4
            and 1 <= frame_axis <= 3):
        return None
    source_shape = [int(s) for s in meta.get("spatial_shape", img.shape[1:])]
    source, src_axis = affine_source_indices(meta["original_affine"], img.affine, img.shape[1:], source_shape,
                                             frame_axis - 1, outside=NO_SOURCE)
    name = meta.get("filename_or_obj")
    if src_axis == 2 and name and os.path.isdir(str(name)):  # a DICOM series folder: InstanceNumber order
        from monai_das.data.studies import series_slice_ranks

        try:
            ranks = series_slice_ranks(name, meta["original_affine"], source_shape[2])
        except (ValueError, OSError, RuntimeError):  # files without number or position, unreadable: no numbering
            return None
        source = [ranks[i] if i >= 0 else i for i in source]
    return source


class SourceIndices(Transform):
    """
    Array transform: :func:`frame_source_indices` of an image as a ``T``-long int64 tensor, all ``-1`` when unknown
    (the value :func:`monai_das.data.kept_source_indices` reads as unknown), so that every item of a dataset carries
    one of the same length and batches collate.

    Args:
        frame_axis: frame dimension of the image (1 + ``slice_axis`` for a channel-first volume, 0 for a clip).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, frame_axis: int = 1) -> None:
        self.frame_axis = int(frame_axis)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        source = frame_source_indices(img, self.frame_axis)
        if source is None:
            return torch.full((int(img.shape[self.frame_axis]),), NO_SOURCE, dtype=torch.long)
        return torch.as_tensor(source, dtype=torch.long)


class SourceIndicesd(MapTransform):
    """
    Dictionary transform of :class:`SourceIndices`: writes the frames' numbers in the file of ``data[key]`` under
    ``output_key``, for the evaluation's per-item predictions (``source_frames``). Put it after the last spatial
    transform and before the image's meta data is dropped (``EnsureTyped(track_meta=False)``), as
    :class:`MapEvidenced`.

    Args:
        keys: the image key (one).
        frame_axis: frame dimension of the image (1 + ``slice_axis`` for a channel-first volume, 0 for a clip).
        output_key: where the indices go (default ``"source_indices"``, the key the predictions writers read).
        allow_missing_keys: don't raise for a missing key.
    """

    backend = SourceIndices.backend

    def __init__(self, keys: KeysCollection = "image", frame_axis: int = 1, output_key: str = SOURCE_INDICES,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SourceIndicesd takes one image key, got {list(self.keys)}.")
        self.transform, self.output_key = SourceIndices(frame_axis), str(output_key)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key])
        return d


SourceIndicesD = SourceIndicesDict = SourceIndicesd
