"""Dataset factory and dataset facts for the bundle configs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from monai.data import Dataset

from monai_das.data.medmnist3d import MEDMNIST3D_NAMES, MedMNIST3DDataset, medmnist_info
from monai_das.data.synthetic import SPLIT_SEED_OFFSETS, SYNTHETIC_CLASS_NAMES, SyntheticVolumeDataset

__all__ = ["DATASET_NAMES", "SYNTHETIC_DEFAULT_SAMPLES", "get_dataset", "dataset_info"]

DATASET_NAMES = ("synthetic",) + MEDMNIST3D_NAMES
#: default number of synthetic volumes per split
SYNTHETIC_DEFAULT_SAMPLES = {"train": 256, "val": 64, "test": 64}


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}.")
    return key


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
    A split of a volume dataset as a MONAI ``Dataset`` of ``{"image": float32 1×D×H×W, "label": int64, ...}``.

    Args:
        name: ``"synthetic"`` or a MedMNIST3D name (``"vesselmnist3d"``, ...).
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: 28 or 64 (``D = H = W = size``).
        data_dir: MedMNIST folder (else ``$MEDMNIST_ROOT``, else ``~/.medmnist``); ignored for synthetic.
        transform: MONAI transform(s) applied to each item.
        seed: synthetic: base seed (each split adds its own offset, :data:`SPLIT_SEED_OFFSETS`); MedMNIST: seed
            of the ``num_samples`` subset.
        num_samples: synthetic: items in the split (default :data:`SYNTHETIC_DEFAULT_SAMPLES`); MedMNIST: a seeded
            random subset of the split (``None``: the whole split).
        kwargs: synthetic: ``num_classes``, ``num_informative``, ``noise``, ...; MedMNIST: ``download``,
            ``check_md5``.
    """
    key = _check_name(name)
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEED_OFFSETS)}, got {split!r}.")
    if key == "synthetic":
        n = SYNTHETIC_DEFAULT_SAMPLES[split] if num_samples is None else int(num_samples)
        return SyntheticVolumeDataset(
            n, size=size, seed=int(seed) + SPLIT_SEED_OFFSETS[split], transform=transform, **kwargs
        )
    return MedMNIST3DDataset(
        key, split, size, root=data_dir, transform=transform, num_samples=num_samples, seed=seed, **kwargs
    )


def dataset_info(name: str, size: int = 28, data_dir: str | os.PathLike | None = None, num_classes: int = 2) -> dict:
    """
    ``{"num_classes", "in_channels", "num_frames", "label_names", "task"}`` of a dataset, from metadata only
    (no file is read; ``data_dir`` is accepted for symmetry with :func:`get_dataset`). ``num_frames = size``
    (volumes are sliced along one axis). ``num_classes`` applies to ``"synthetic"`` only.
    """
    key = _check_name(name)
    if int(size) not in (28, 64) and key != "synthetic":
        raise ValueError(f"MedMNIST3D size must be 28 or 64, got {size}.")
    if key == "synthetic":
        if not 2 <= int(num_classes) <= len(SYNTHETIC_CLASS_NAMES):
            raise ValueError(f"num_classes must be in 2..{len(SYNTHETIC_CLASS_NAMES)}, got {num_classes}.")
        names = list(SYNTHETIC_CLASS_NAMES[: int(num_classes)])
        return {
            "num_classes": len(names),
            "in_channels": 1,
            "num_frames": int(size),
            "label_names": names,
            "task": "binary-class" if len(names) == 2 else "multi-class",
        }
    info = medmnist_info(key)
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    return {
        "num_classes": len(names),
        "in_channels": int(info["n_channels"]),
        "num_frames": int(size),
        "label_names": names,
        "task": info["task"],
    }
