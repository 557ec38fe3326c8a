"""Dataset factory and dataset facts for the bundle configs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from monai.data import Dataset

from monai_das.data.listing import POCUS_CLASSES, pocus_listing, split_by_fold
from monai_das.data.medmnist3d import MEDMNIST3D_NAMES, MedMNIST3DDataset, medmnist_info
from monai_das.data.synthetic import SPLIT_SEED_OFFSETS, SYNTHETIC_CLASS_NAMES, SyntheticVolumeDataset

__all__ = ["DATASET_NAMES", "VIDEO_DATASETS", "SYNTHETIC_DEFAULT_SAMPLES", "DATA_ENV", "POCUS_ROOT_ENV",
           "resolve_data_dir", "pocus_root", "get_dataset", "dataset_info"]

DATASET_NAMES = ("synthetic", "pocus") + MEDMNIST3D_NAMES
#: default number of synthetic volumes per split
SYNTHETIC_DEFAULT_SAMPLES = {"train": 768, "val": 64, "test": 64}
#: environment variable with the shared data folder (``<it>/medmnist3d``, ``<it>/video/covid19_lus_pocus``)
DATA_ENV = "MONAI_DAS_DATA"
_SUBDIRS = {"pocus": ("video", "covid19_lus_pocus"), "medmnist": ("medmnist3d",)}
#: environment variable naming the POCUS folder (the one with MANIFEST.csv)
POCUS_ROOT_ENV = "POCUS_ROOT"
#: dataset names handled as ultrasound clips (layout "video")
VIDEO_DATASETS = ("pocus",)
#: default clip length of the POCUS dataset
POCUS_DEFAULT_FRAMES = 32


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}.")
    return key


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None) -> str | None:
    """
    The folder to read the ready-made dataset ``name`` from, one rule for the Python API and the bundles: ``data_dir``
    when given (``None``, ``""``, ``"none"``/``"null"`` are not); else ``$MONAI_DAS_DATA/medmnist3d`` (MedMNIST3D) or
    ``$MONAI_DAS_DATA/video/covid19_lus_pocus`` (POCUS) when ``$MONAI_DAS_DATA`` is set; else ``$POCUS_ROOT`` for
    POCUS; else ``None`` (MedMNIST then falls back to ``$MEDMNIST_ROOT`` / ``~/.medmnist``; synthetic needs nothing).
    The first of these that is set is the folder, not a search through them.
    """
    from monai_das.utils.config import optional

    if optional(data_dir) is not None:
        return str(Path(data_dir).expanduser())
    key = str(name).lower()
    if key == "synthetic":
        return None
    video = key in VIDEO_DATASETS
    if os.environ.get(DATA_ENV):
        return str(Path(os.environ[DATA_ENV], *_SUBDIRS["pocus" if video else "medmnist"]))
    return (os.environ.get(POCUS_ROOT_ENV) or None) if video else None


def pocus_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The POCUS folder (:func:`resolve_data_dir`); ``FileNotFoundError`` when none is given."""
    root = resolve_data_dir("pocus", data_dir)
    if root is None:
        raise FileNotFoundError(f"no POCUS folder given: pass data_dir= (--data_dir) or set ${DATA_ENV} (its "
                                f"video/covid19_lus_pocus) or ${POCUS_ROOT_ENV} (the folder with MANIFEST.csv).")
    return Path(root)


def get_dataset(
    name: str,
    split: str,
    size: int = 28,
    data_dir: str | os.PathLike | None = None,
    transform: Callable | Sequence[Callable] | None = None,
    seed: int = 0,
    num_samples: int | None = None,
    **kwargs,
) -> Dataset:
    """
    A split of a dataset as a MONAI ``Dataset``.

    - ``"synthetic"`` and MedMNIST3D names: ``{"image": float32 1×D×H×W, "label": int64, ...}`` (volume layout).
    - ``"pocus"``: the convex POCUS clips as a :class:`VideoDataset` of ``{"image": float32 T×1×size×size,
      "label", "group", "fold", ...}`` (video layout), patient-level cross-validation.

    Args:
        name: ``"synthetic"``, ``"pocus"`` or a MedMNIST3D name (``"vesselmnist3d"``, ...).
        split: ``"train"``, ``"val"`` or ``"test"``. For ``"pocus"``: test = fold ``fold``, val = the next fold,
            train = the other folds (:func:`split_by_fold`).
        size: volumes: 28 or 64 (``D = H = W = size``); pocus: frame side.
        data_dir: the MedMNIST or POCUS folder (else :func:`resolve_data_dir`'s rule); ignored for synthetic.
        transform: MONAI transform(s) applied to each item.
        seed: synthetic: base seed (each split adds its own offset, :data:`SPLIT_SEED_OFFSETS`); MedMNIST: seed
            of the ``num_samples`` subset; pocus: seed of the fold assignment.
        num_samples: synthetic: items in the split (default :data:`SYNTHETIC_DEFAULT_SAMPLES`); MedMNIST: a seeded
            random subset of the split; pocus: the first ``num_samples`` clips of the split. ``None``: all.
        kwargs: synthetic: ``num_classes``, ``num_informative``, ``noise``, ...; MedMNIST: ``download``,
            ``check_md5``; pocus: ``fold`` (0), ``num_folds`` (5), ``num_frames`` (32), ``grayscale``,
            ``temporal_mode``, ``cache_rate``, ``num_workers``, ``on_error`` of :class:`VideoDataset`.
    """
    key = _check_name(name)
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEED_OFFSETS)}, got {split!r}.")
    if key == "synthetic":
        n = SYNTHETIC_DEFAULT_SAMPLES[split] if num_samples is None else int(num_samples)
        return SyntheticVolumeDataset(
            n, size=size, seed=int(seed) + SPLIT_SEED_OFFSETS[split], transform=transform, **kwargs
        )
    if key == "pocus":
        from monai_das.data.video import VideoDataset

        fold, num_folds = int(kwargs.pop("fold", 0)), int(kwargs.pop("num_folds", 5))
        kwargs.setdefault("num_frames", POCUS_DEFAULT_FRAMES)
        items = split_by_fold(pocus_listing(pocus_root(data_dir), num_folds=num_folds, seed=seed), fold)[split]
        items = items if num_samples is None else items[: int(num_samples)]
        return VideoDataset(items, spatial_size=size, transform=transform, **kwargs)
    return MedMNIST3DDataset(
        key, split, size, root=resolve_data_dir(key, data_dir), transform=transform, num_samples=num_samples,
        seed=seed, **kwargs
    )


def dataset_info(
    name: str,
    size: int = 28,
    data_dir: str | os.PathLike | None = None,
    num_classes: int = 2,
    num_frames: int | None = None,
    grayscale: bool = True,
) -> dict:
    """
    ``{"num_classes", "in_channels", "num_frames", "label_names", "task", "layout"}`` of a dataset, from metadata
    only (no file is read; ``data_dir`` is accepted for symmetry with :func:`get_dataset`).

    Volumes (synthetic, MedMNIST3D): ``num_frames = size`` (sliced along one axis), ``layout = "volume"``;
    ``num_classes`` applies to ``"synthetic"`` only. ``"pocus"``: ``num_frames`` (default 32) and ``grayscale``
    as given to :func:`get_dataset`, ``layout = "video"``.
    """
    key = _check_name(name)
    if key == "pocus":
        return {
            "num_classes": len(POCUS_CLASSES),
            "in_channels": 1 if grayscale else 3,
            "num_frames": int(num_frames or POCUS_DEFAULT_FRAMES),
            "label_names": list(POCUS_CLASSES),
            "task": "multi-class",
            "layout": "video",
        }
    if key == "synthetic":
        if not 2 <= int(num_classes) <= len(SYNTHETIC_CLASS_NAMES):
            raise ValueError(f"num_classes must be in 2..{len(SYNTHETIC_CLASS_NAMES)}, got {num_classes}.")
        names = list(SYNTHETIC_CLASS_NAMES[: int(num_classes)])
        task = "binary-class" if len(names) == 2 else "multi-class"
        return {"num_classes": len(names), "in_channels": 1, "num_frames": int(size), "label_names": names,
                "task": task, "layout": "volume"}
    if int(size) not in (28, 64):
        raise ValueError(f"MedMNIST3D size must be 28 or 64, got {size}.")
    info = medmnist_info(key)
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    return {"num_classes": len(names), "in_channels": int(info["n_channels"]), "num_frames": int(size),
            "label_names": names, "task": info["task"], "layout": "volume"}
