"""A MONAI dataset of clips (video files / multi-frame DICOM) with optional in-memory caching of the decoded clips."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from monai.transforms import Compose

from monai_das.data.cache import NamedCacheDataset
from monai_das.data.listing import read_video_listing
from monai_das.data.video_io import read_video

__all__ = ["VideoDataset", "video_transform"]

logger = logging.getLogger(__name__)


def video_transform(
    num_frames: int | None = 32,
    spatial_size: Sequence[int] | int | None = (112, 112),
    grayscale: bool = True,
    temporal_mode: str = "uniform",
    transform: Callable | Sequence[Callable] | None = None,
    image_key: str = "image",
    min_frames: int = 2,
) -> Compose:
    """
    ``Compose([LoadVideod(image_key, ...), MapEvidenced("evidence", ...), *transform])``: the deterministic decoding
    step first, so ``CacheDataset`` / ``PersistentDataset`` cache the decoded clip and only ``transform`` (e.g. random
    augmentation) runs per epoch. Arguments as :class:`monai_das.transforms.LoadVideo` (``min_frames``: clips with
    fewer frames, e.g. a single-frame DICOM, are refused; ``1`` accepts them). An item's ``evidence`` (frame indices of
    the file, e.g. a listing's ``evidence`` column) is mapped onto the decoded clip's frames, padded to ``T`` with
    ``-1`` so that items batch alike (:class:`~monai_das.transforms.MapEvidenced`; items without it are left alone).
    """
    from monai_das.transforms import MapEvidenced
    from monai_das.transforms.io import LoadVideod

    extra = [] if transform is None else list(transform) if isinstance(transform, Sequence) else [transform]
    load = LoadVideod(image_key, num_frames, spatial_size, grayscale, temporal_mode, min_frames=min_frames)
    return Compose([load, MapEvidenced("evidence", image_key=image_key, frame_axis=0), *extra])


class VideoDataset(NamedCacheDataset):
    """
    Clips as ``{"image": float32 T×C×H×W in [0, 1] (MetaTensor), "label": int, "group": str, ...}``.

    Args:
        data: a listing (list of dicts with ``"image"`` = path, ``"label"``, ``"group"``, e.g. from
            :func:`pocus_listing`) or a CSV / folder for :func:`read_video_listing`.
        num_frames: fixed clip length ``T`` (``None``: every frame). spatial_size: frame ``(H, W)``.
        grayscale: ``C=1`` or RGB ``C=3``. temporal_mode: how short clips are lengthened
            (``"uniform"``/``"loop"``/``"edge"``, see ``monai_das.transforms.temporal_resample_indices``).
        transform: further MONAI transform(s) after decoding (augmentation goes here).
        cache_rate: fraction of clips decoded once and kept in memory (``CacheDataset``); ``0`` (default) decodes on
            every access. For an on-disk cache use ``monai.data.PersistentDataset(data, video_transform(...),
            cache_dir)``.
        num_workers: threads for filling the cache.
        min_frames: clips with fewer frames (a single-frame DICOM, a one-frame GIF) are refused (``1`` accepts
            them, repeated to ``num_frames``).
        on_error: ``"raise"`` (default): a missing file raises here, an unreadable clip raises when loaded (naming
            the file); ``"skip"``: every clip is probed now (opened and decoded at a tiny size) and unreadable,
            truncated or empty clips are dropped, counted in one warning log line (``skipped`` lists them).
        **listing_kwargs: passed to :func:`read_video_listing` when ``data`` is a path.
    """

    def __init__(
        self,
        data: Sequence[dict] | str | os.PathLike,
        num_frames: int | None = 32,
        spatial_size: Sequence[int] | int | None = (112, 112),
        grayscale: bool = True,
        temporal_mode: str = "uniform",
        transform: Callable | Sequence[Callable] | None = None,
        cache_rate: float = 0.0,
        num_workers: int | None = 1,
        on_error: str = "raise",
        min_frames: int = 2,
        **listing_kwargs,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        if isinstance(data, (str, os.PathLike)):
            data = read_video_listing(data, on_error=on_error, **listing_kwargs)
        items = [dict(it) for it in data]
        self.skipped: list[tuple[str, str]] = []
        kept = []
        for it in items:
            if "image" not in it:
                raise ValueError(f"listing item {it} has no 'image' path.")
            path = Path(it["image"])
            try:
                if path.is_dir():
                    raise IsADirectoryError(f"clip '{path}' is a directory, expected a video or DICOM file.")
                if not path.is_file():
                    raise FileNotFoundError(f"clip file '{path}' does not exist.")
                if on_error == "skip":
                    frames, _ = read_video(path, spatial_size=8, grayscale=True)
                    if len(frames) < int(min_frames):
                        raise ValueError(f"clip '{path}' has {len(frames)} frame(s), fewer than "
                                         f"min_frames={min_frames}.")
            except (FileNotFoundError, RuntimeError, ValueError) as e:
                if on_error == "raise":
                    raise
                self.skipped.append((str(path), str(e)))
                continue
            kept.append(it)
        if self.skipped:
            logger.warning("VideoDataset skipped %d of %d clips: %s", len(self.skipped), len(items),
                           "; ".join(msg for _, msg in self.skipped[:5]))
        if not kept:
            raise ValueError("VideoDataset has no readable clips.")
        self.num_frames, self.spatial_size, self.grayscale = num_frames, spatial_size, grayscale
        self.in_channels = 1 if grayscale else 3
        super().__init__(
            kept,
            video_transform(num_frames, spatial_size, grayscale, temporal_mode, transform, min_frames=min_frames),
            cache_rate=cache_rate,
            num_workers=num_workers,
            progress=False,
        )
