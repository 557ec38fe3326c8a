"""MedMNIST v3 3D datasets (organ, nodule, adrenal, fracture, vessel, synapse) as MONAI datasets."""

from __future__ import annotations

import logging
import os
import shlex
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai.data import Dataset

from monai_das.utils.io import file_digest

__all__ = [
    "MEDMNIST3D_NAMES",
    "MEDMNIST3D_SIZES",
    "SPLITS",
    "medmnist_info",
    "medmnist_root",
    "medmnist_filename",
    "ensure_medmnist_file",
    "MedMNIST3DDataset",
]

logger = logging.getLogger(__name__)

MEDMNIST3D_NAMES = (
    "organmnist3d",
    "nodulemnist3d",
    "adrenalmnist3d",
    "fracturemnist3d",
    "vesselmnist3d",
    "synapsemnist3d",
)
MEDMNIST3D_SIZES = (28, 64)
SPLITS = ("train", "val", "test")
#: environment variable naming the folder with the ``*.npz`` files
ROOT_ENV = "MEDMNIST_ROOT"

_md5_cache: dict[tuple[str, int, int], str] = {}


def medmnist_info(name: str) -> dict[str, Any]:
    """``medmnist.INFO[name]`` (names, classes, splits, file urls, MD5s) for a 3D dataset; ValueError otherwise."""
    from medmnist.info import INFO

    key = str(name).lower()
    if key not in MEDMNIST3D_NAMES:
        raise ValueError(f"unknown MedMNIST3D dataset {name!r}; expected one of {MEDMNIST3D_NAMES}.")
    return INFO[key]


def _found_elsewhere(path: Path, folder: Path) -> str:
    """A sentence naming ``$MEDMNIST_ROOT`` or ``~/.medmnist`` when it holds the file ``path.name`` that ``folder``
    lacks (an earlier place in the order, e.g. ``$MONAI_DAS_DATA/medmnist3d`` without the file, hides it), else
    ``""``."""
    for where, other in ((f"${ROOT_ENV}", os.environ.get(ROOT_ENV)), ("~/.medmnist", "~/.medmnist")):
        place = Path(other).expanduser() if other else None
        if place is not None and place != folder and (place / path.name).is_file():
            return (f" The file is in {where} ('{place}'), which an earlier place in that order hid: give "
                    f"--data_dir {shlex.quote(str(place))} (the Python API's root=).")
    return ""


def medmnist_root(root: str | os.PathLike | None = None) -> Path:
    """The folder with the files: ``root``, else ``$MEDMNIST_ROOT``, else medmnist's default (``~/.medmnist``)."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    from medmnist.info import DEFAULT_ROOT

    return Path(DEFAULT_ROOT).expanduser()


def _check_size(size: int) -> int:
    if int(size) not in MEDMNIST3D_SIZES:
        raise ValueError(f"MedMNIST3D size must be one of {MEDMNIST3D_SIZES}, got {size}.")
    return int(size)


def medmnist_filename(name: str, size: int = 28) -> str:
    """The official file name: ``{name}.npz`` (28) or ``{name}_{size}.npz``, as ``medmnist`` expects."""
    medmnist_info(name)
    return f"{name.lower()}.npz" if _check_size(size) == 28 else f"{name.lower()}_{size}.npz"


def _file_md5(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _md5_cache:
        _md5_cache[key] = file_digest(path, "md5")
    return _md5_cache[key]


def ensure_medmnist_file(
    name: str, size: int = 28, root: str | os.PathLike | None = None, download: bool = False, check_md5: bool = True
) -> Path:
    """
    Path of the official ``.npz`` file under :func:`medmnist_root`, downloaded first if ``download`` and absent
    (``monai.apps.download_url`` from medmnist's ``url``/``url_64`` with its MD5), MD5-checked if ``check_md5``
    (cached per path, size and mtime).

    Raises:
        FileNotFoundError: the file is absent and ``download`` is False (the message names the file and folder).
        FileNotFoundError: ``download`` failed (offline): naming the file, the folder and the URL.
        RuntimeError: checksum mismatch.
    """
    info = medmnist_info(name)
    size = _check_size(size)
    folder = medmnist_root(root)
    path = folder / medmnist_filename(name, size)
    url = info["url"] if size == 28 else info.get(f"url_{size}")
    md5 = info["MD5"] if size == 28 else info.get(f"MD5_{size}")
    if not path.is_file():
        if not download:
            raise FileNotFoundError(
                f"MedMNIST3D file '{path.name}' not found in '{folder}'. Put the official file there (from {url}, "
                f"md5 {md5}), or point to the folder that holds it: the bundles' --data_dir, else "
                f"$MONAI_DAS_DATA/medmnist3d, else ${ROOT_ENV}, else ~/.medmnist (in that order; the Python API's "
                "root= is --data_dir and skips $MONAI_DAS_DATA); "
                "or, in Python, pass download=True (the bundles do not download)." + _found_elsewhere(path, folder)
            )
        from monai.apps import download_url

        folder.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s to %s", url, path)
        try:
            download_url(url=url, filepath=str(path), hash_val=md5, hash_type="md5")
        except OSError as e:  # (URLError is one) offline: urllib's bare "Name or service not known" (trial T64c)
            raise FileNotFoundError(
                f"MedMNIST3D file '{path.name}' could not be downloaded to '{folder}' from {url} "
                f"({type(e).__name__}: {getattr(e, 'reason', None) or e}; no network?). Put the official file there "
                f"(md5 {md5}) by hand, or point to the folder that holds it (the bundles' --data_dir, else "
                f"$MONAI_DAS_DATA/medmnist3d, else ${ROOT_ENV}, else ~/.medmnist)." + _found_elsewhere(path, folder)
            ) from None
    if check_md5 and md5:
        actual = _file_md5(path)
        if actual != md5:
            # the official file of another set or size under this name (vesselmnist3d_64.npz as vesselmnist3d.npz)
            known = {(n, sz): i.get("MD5" if sz == 28 else f"MD5_{sz}") for n in MEDMNIST3D_NAMES
                     for sz in MEDMNIST3D_SIZES for i in [medmnist_info(n)]}
            other = next((f"It is the official {n} file of size {sz}: name it '{medmnist_filename(n, sz)}' and give "
                          f"--dataset {n} --size {sz}. " for (n, sz), m in known.items() if m == actual), "")
            raise RuntimeError(
                f"MedMNIST3D file '{path}' is corrupt or not the official release: md5 {actual}, expected {md5}. "
                + other
                + f"Put the official file in its place (from {url}; the bundles do not download; in Python, delete "
                "it and pass download=True). Files of the MedMNIST format that are not the official release "
                "(re-saved, a subset, your own) are trained on as a datalist: each volume saved as a .npy or NIfTI "
                "file and listed (--datalist; in Python, MedMNIST3DDataset(check_md5=False) reads them as they are)."
            )
    return path


class _Items(Sequence):
    """Lazy ``{"image": float32 1×D×H×W in [0, 1], "label": int64}`` views of the uint8 arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        self.images, self.labels, self.indices = images, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = self.indices[i]
        image = self.images[j].astype(np.float32)[None] / np.float32(255.0)
        return {"image": image, "label": np.int64(self.labels[j])}


class MedMNIST3DDataset(Dataset):
    """
    One split of a MedMNIST v3 3D dataset, read from the official ``.npz`` file (``medmnist.INFO`` metadata).

    Items: ``{"image": float32 1×D×H×W in [0, 1] (uint8 / 255), "label": int64 scalar}`` before ``transform``.

    Args:
        name: one of :data:`MEDMNIST3D_NAMES`.
        split: ``"train"``, ``"val"`` or ``"test"`` (official splits).
        size: 28 or 64 (``D = H = W = size``).
        root: folder with the files (else ``$MEDMNIST_ROOT``, else medmnist's default ``~/.medmnist``).
        transform: MONAI transform(s) applied to each item dict.
        download: download the file (medmnist's Zenodo url, MD5 checked) when absent; otherwise a missing file is
            a ``FileNotFoundError`` that says which file to put where.
        check_md5: verify the file against the official MD5 (a mismatch is a ``RuntimeError``).
        num_samples: keep only this many items (a seeded random subset, in file order); ``None`` keeps all.
        seed: seed of that subset.

    Attributes: ``num_classes``, ``label_names``, ``in_channels`` (1), ``task``, ``filename``, ``labels``
    (int64 array of the kept items).
    """

    def __init__(
        self,
        name: str = "vesselmnist3d",
        split: str = "train",
        size: int = 28,
        root: str | os.PathLike | None = None,
        transform: Callable | Sequence[Callable] | None = None,
        download: bool = False,
        check_md5: bool = True,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        info = medmnist_info(name)
        self.name, self.split, self.size = name.lower(), split, _check_size(size)
        self.filename = ensure_medmnist_file(name, size, root, download, check_md5)
        self.label_names = [info["label"][str(i)] for i in range(len(info["label"]))]
        self.num_classes, self.in_channels, self.task = len(self.label_names), int(info["n_channels"]), info["task"]
        images, labels = self._load(info)
        indices = np.arange(len(labels))
        if num_samples is not None:
            if int(num_samples) < 1:
                raise ValueError(f"num_samples must be >= 1 or None, got {num_samples}.")
            if int(num_samples) < len(indices):
                indices = np.sort(np.random.default_rng(seed).choice(len(indices), int(num_samples), replace=False))
        self.labels = labels[indices]
        super().__init__(_Items(images, labels, indices), transform)

    def _load(self, info: dict) -> tuple[np.ndarray, np.ndarray]:
        path, split = self.filename, self.split
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = {f"{split}_images", f"{split}_labels"} - set(npz.files)
                if missing:
                    raise ValueError(f"MedMNIST3D file '{path}' lacks the arrays {sorted(missing)} (it holds "
                                     f"{sorted(npz.files)}).")
                images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as e:
            if isinstance(e, ValueError) and str(path) in str(e):
                raise
            if "pickle" in str(e):  # numpy's advice to unpickle a file that is no .npz archive: not taken
                with open(path, "rb") as f:
                    head = f.read(16)
                raise RuntimeError(f"MedMNIST3D file '{path}' is no .npz archive (it starts with {head!r}: an error "
                                   "page saved by a failed download?); fetch it again.") from None
            raise RuntimeError(f"cannot read MedMNIST3D file '{path}' (corrupt or truncated): {e}") from e
        s = self.size
        if images.dtype != np.uint8:
            raise ValueError(f"MedMNIST3D file '{path}': {split}_images has dtype {images.dtype}, expected uint8.")
        if images.ndim != 4 or images.shape[1:] != (s, s, s):
            raise ValueError(
                f"MedMNIST3D file '{path}': {split}_images has shape {images.shape}, expected (N, {s}, {s}, {s})."
            )
        labels = np.asarray(labels)
        shape = labels.shape  # as in the file, for the message
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"MedMNIST3D file '{path}': {split}_labels has shape {shape} / dtype {labels.dtype}, expected "
                f"({len(images)}, 1) integers."
            )
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"MedMNIST3D file '{path}': {int(bad.sum())} {split} label(s) outside 0..{self.num_classes - 1} "
                f"(e.g. {int(labels[bad][0])} at index {int(np.flatnonzero(bad)[0])})."
            )
        expected = info["n_samples"][split]
        if len(labels) != expected:
            logger.warning("%s: %s has %d items, medmnist.INFO says %d.", path, split, len(labels), expected)
        return images, labels.astype(np.int64)
