"""
What the bundle configs call to get data: one function for the dataset of a split and one for the facts the
network needs, covering the synthetic volumes, every MedMNIST3D set and the POCUS ultrasound clips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from monai.data import Dataset

from monai_das.engines.utils import optional

__all__ = ["VIDEO_DATASETS", "DATA_ENV", "bundle_info", "bundle_dataset", "resolve_data_dir"]

#: dataset names handled as ultrasound clips (layout "video")
VIDEO_DATASETS = ("pocus",)
#: environment variable with the shared data folder (``<it>/medmnist3d``, ``<it>/video/covid19_lus_pocus``)
DATA_ENV = "MONAI_DAS_DATA"
_SUBDIRS = {"pocus": ("video", "covid19_lus_pocus"), "medmnist": ("medmnist3d",)}


def resolve_data_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> str | None:
    """
    The folder to read ``dataset`` from: ``data_dir`` when given; else, when ``$MONAI_DAS_DATA`` is set,
    ``$MONAI_DAS_DATA/medmnist3d`` (MedMNIST3D) or ``$MONAI_DAS_DATA/video/covid19_lus_pocus`` (POCUS); else ``None``
    (MedMNIST then falls back to ``$MEDMNIST_ROOT`` / ``~/.medmnist``; synthetic needs nothing).
    """
    if optional(data_dir) is not None:
        return str(Path(data_dir).expanduser())
    key = str(dataset).lower()
    env = os.environ.get(DATA_ENV)
    if key == "synthetic" or not env:
        return None
    return str(Path(env, *_SUBDIRS["pocus" if key in VIDEO_DATASETS else "medmnist"]))


def bundle_info(
    dataset: str = "synthetic",
    size: int = 28,
    data_dir: str | os.PathLike | None = None,
    num_frames: int = 32,
    num_classes: int = 2,
) -> dict:
    """
    Facts for building the network: ``{"num_classes", "in_channels", "num_frames", "label_names", "layout",
    "image_shape"}`` (``image_shape`` is one item's input without batch dimension: ``C×D×H×W`` for volumes,
    ``T×C×H×W`` for clips).

    Args:
        dataset: ``"synthetic"``, a MedMNIST3D name (e.g. ``"vesselmnist3d"``) or ``"pocus"``.
        size: volume side (28/64; synthetic: any) or clip frame side (``size×size``).
        data_dir: unused except for symmetry with :func:`bundle_dataset`.
        num_frames: clip length ``T`` (``pocus`` only; volumes have ``T = size`` slices).
        num_classes: ``synthetic`` only.
    """
    key = str(dataset).lower()
    if key in VIDEO_DATASETS:
        from monai_das.data import POCUS_CLASSES

        return {
            "num_classes": len(POCUS_CLASSES),
            "in_channels": 1,
            "num_frames": int(num_frames),
            "label_names": list(POCUS_CLASSES),
            "layout": "video",
            "image_shape": [int(num_frames), 1, int(size), int(size)],
        }
    from monai_das.data import dataset_info

    info = dict(dataset_info(key, size=size, data_dir=data_dir, num_classes=num_classes))
    info["layout"] = "volume"
    info["image_shape"] = [int(info["in_channels"]), int(size), int(size), int(size)]
    return info


def bundle_dataset(
    dataset: str = "synthetic",
    split: str = "train",
    size: int = 28,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    num_samples: int | None = None,
    transform: Callable | Sequence[Callable] | None = None,
    fold: int = 0,
    num_folds: int = 5,
    num_frames: int = 32,
    probe: str | None = "convex",
    cache_rate: float = 1.0,
    num_workers: int = 1,
    num_classes: int = 2,
) -> Dataset:
    """
    The ``split`` (``"train"``, ``"val"``, ``"test"``) of ``dataset`` as a MONAI ``Dataset`` of
    ``{"image", "label", ...}`` dicts.

    - ``synthetic`` / MedMNIST3D: :func:`monai_das.data.get_dataset` (``num_samples``: synthetic split size,
      MedMNIST seeded subset; ``seed``; ``data_dir`` via :func:`resolve_data_dir`).
    - ``pocus``: :func:`monai_das.data.pocus_listing` (patient-level stratified ``num_folds`` folds; ``probe``),
      :func:`monai_das.data.split_by_fold` with test fold ``fold`` (val: the next fold), clips decoded to
      ``num_frames×1×size×size`` and cached in memory (``cache_rate``) by :class:`monai_das.data.VideoDataset`;
      ``num_samples`` keeps the first ``num_samples`` clips of the split (smoke runs).
    """
    key = str(dataset).lower()
    root = resolve_data_dir(key, data_dir)
    n = None if optional(num_samples) is None else int(num_samples)
    if key in VIDEO_DATASETS:
        from monai_das.data import VideoDataset, pocus_listing, split_by_fold

        if root is None:
            raise FileNotFoundError(
                f"dataset {dataset!r} needs data_dir (the folder with MANIFEST.csv) or ${DATA_ENV} to be set."
            )
        items = split_by_fold(pocus_listing(root, probe=probe, num_folds=num_folds, seed=seed), int(fold))[split]
        items = items[:n] if n is not None else items
        return VideoDataset(
            items,
            num_frames=num_frames,
            spatial_size=(int(size), int(size)),
            grayscale=True,
            transform=transform,
            cache_rate=cache_rate,
            num_workers=num_workers,
        )
    from monai_das.data import get_dataset

    kwargs = {"num_classes": num_classes} if key == "synthetic" else {}
    return get_dataset(
        key, split, size=size, data_dir=root, transform=transform, seed=seed, num_samples=n, **kwargs
    )
