"""Loading clips (video files and multi-frame DICOM) as fixed-length ``T×C×H×W`` MetaTensors."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import torch

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_das.data.video_io import read_video
from monai_das.transforms.temporal import KEPT_INDICES, SOURCE_INDICES, uniform_indices

__all__ = ["TEMPORAL_MODES", "temporal_resample_indices", "LoadVideo", "LoadVideod", "LoadVideoD", "LoadVideoDict"]

TEMPORAL_MODES = ("uniform", "loop", "edge")


def temporal_resample_indices(num_frames: int, target: int, mode: str = "uniform") -> torch.Tensor:
    """
    Indices that make a ``num_frames`` clip exactly ``target`` frames long.

    - Clips with ``T >= target`` (every mode): ``target`` evenly spread frames (:func:`uniform_indices`), which
      covers the whole clip at a lower frame rate.
    - Shorter clips: ``"uniform"`` stretches the clip by repeating frames evenly (nearest-neighbour upsampling,
      so the clip still spans ``target`` steps); ``"loop"`` plays it again from the start (``i mod T``);
      ``"edge"`` holds the last frame (``min(i, T-1)``).
    """
    t, n = int(num_frames), int(target)
    if mode not in TEMPORAL_MODES:
        raise ValueError(f"temporal mode must be one of {TEMPORAL_MODES}, got {mode!r}.")
    if t < 1:
        raise ValueError(f"cannot resample a clip with {t} frames.")
    if t >= n or mode == "uniform":
        return uniform_indices(t, n)
    i = torch.arange(n)
    return i % t if mode == "loop" else i.clamp_max(t - 1)


class LoadVideo(Transform):
    """
    Load a clip file as a float32 ``T×C×H×W`` MetaTensor in ``[0, 1]``.

    Reader: OpenCV for video containers (mp4, avi, mpeg, mov, gif, ...; Pillow fallback for GIF), pydicom for
    (multi-frame) DICOM — see :func:`monai_das.data.video_io.read_video`.

    Args:
        num_frames: fixed clip length ``T``, reached by :func:`temporal_resample_indices` with ``temporal_mode``;
            ``None`` keeps every frame (clip lengths then differ, so batch with ``batch_size=1`` or pad).
        spatial_size: frame size ``(H, W)`` or one int; ``None`` keeps the native size.
        grayscale: ``C=1`` (luminance) if True, else ``C=3`` (RGB).
        temporal_mode: ``"uniform"`` (default), ``"loop"`` or ``"edge"``: how clips shorter than ``num_frames`` are
            lengthened (longer clips are always uniformly subsampled).
        check_frame_count: raise on a clip that decodes far fewer frames than its header declares.
        min_frames: clips that decode fewer frames are refused with a ``ValueError`` naming the file (default 2: a
            single-frame DICOM or a one-frame GIF is a still image, and repeating it ``num_frames`` times would give
            the network a clip without motion and a prediction that looks valid); ``1`` accepts them.

    Meta: ``filename_or_obj``, ``original_num_frames``, ``fps``, ``original_size`` (H, W), ``reader``, and
    ``kept_indices`` / ``source_indices`` (the frames of the file that were kept, ``T`` long).
    """

    def __init__(
        self,
        num_frames: int | None = None,
        spatial_size: Sequence[int] | int | None = None,
        grayscale: bool = True,
        temporal_mode: str = "uniform",
        check_frame_count: bool = True,
        min_frames: int = 2,
    ) -> None:
        if int(min_frames) < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}.")
        if num_frames is not None and int(num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1 or None, got {num_frames}.")
        if temporal_mode not in TEMPORAL_MODES:
            raise ValueError(f"temporal_mode must be one of {TEMPORAL_MODES}, got {temporal_mode!r}.")
        self.num_frames = None if num_frames is None else int(num_frames)
        self.spatial_size, self.grayscale = spatial_size, grayscale
        self.temporal_mode, self.check_frame_count = temporal_mode, check_frame_count
        self.min_frames = int(min_frames)

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        if not isinstance(filename, (str, os.PathLike)):
            raise ValueError(f"LoadVideo expects a file path, got {type(filename).__name__}.")
        frames, info = read_video(filename, self.spatial_size, self.grayscale, self.check_frame_count)
        t = frames.shape[0]
        if t < self.min_frames:
            raise ValueError(
                f"clip '{info['filename']}' has {t} frame(s), fewer than min_frames={self.min_frames}: "
                + ("a still image is not a clip (pass min_frames=1 to repeat it to the clip length)." if t <= 1 else
                   f"too short (pass min_frames={t} or lower to resample it to the clip length).")
            )
        if self.num_frames is None:
            idx = torch.arange(t)
        else:
            idx = temporal_resample_indices(t, self.num_frames, self.temporal_mode)
        data = torch.from_numpy(frames).permute(0, 3, 1, 2)[idx].contiguous()  # T×C×H×W
        meta = {
            "filename_or_obj": info["filename"],
            "original_num_frames": t,
            "fps": info["fps"],
            "original_size": tuple(info["original_size"] or ()),
            "reader": info["reader"],
            KEPT_INDICES: idx.clone(),
            SOURCE_INDICES: idx.clone(),
        }
        return MetaTensor(data, meta=meta)


class LoadVideod(MapTransform):
    """Dictionary form of :class:`LoadVideo`: replaces the path under each key by the loaded clip."""

    backend = LoadVideo.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_frames: int | None = None,
        spatial_size: Sequence[int] | int | None = None,
        grayscale: bool = True,
        temporal_mode: str = "uniform",
        check_frame_count: bool = True,
        min_frames: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVideo(num_frames, spatial_size, grayscale, temporal_mode, check_frame_count, min_frames)

    def __call__(self, data: Mapping[Hashable, str]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadVideoD = LoadVideoDict = LoadVideod
