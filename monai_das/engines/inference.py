"""
Batch inference over many studies: listing (folder, CSV or dataset split), sharding across workers, resuming from
an existing predictions file, and a dataset that turns an unreadable study into an error item instead of stopping.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_das.engines.utils import flag, optional
from monai_das.transforms.temporal import SOURCE_INDICES

__all__ = [
    "VOLUME_EXTENSIONS",
    "predictions_path",
    "read_done_ids",
    "list_studies",
    "select_studies",
    "study_transform",
    "StudyDataset",
    "merge_predictions",
]

logger = logging.getLogger(__name__)

#: single-file volume formats picked up from a folder (DICOM series are folders of ``.dcm`` files)
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".npy")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def predictions_path(output_dir: str | os.PathLike, shard_index: int = 0, shard_count: int = 1,
                     name: str = "predictions") -> str:
    """``<output_dir>/predictions.csv``, or ``predictions.shard<i>of<n>.csv`` when the work is split in shards."""
    _check_shard(shard_index, shard_count)
    suffix = "" if int(shard_count) == 1 else f".shard{int(shard_index)}of{int(shard_count)}"
    return str(Path(output_dir) / f"{name}{suffix}.csv")


def _check_shard(shard_index: int, shard_count: int) -> None:
    if int(shard_count) < 1 or not 0 <= int(shard_index) < int(shard_count):
        raise ValueError(f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
                         f"shard_count={shard_count}.")


def read_done_ids(csv_path: str | os.PathLike, id_column: str = "id") -> set[str]:
    """Ids of the studies already in a predictions CSV (rows cut short by a kill are ignored)."""
    path = Path(csv_path)
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or id_column not in reader.fieldnames:
            raise ValueError(f"predictions file '{path}' has no '{id_column}' column; move it away or fix it.")
        return {row[id_column] for row in reader if _complete(row) and row[id_column]}


def _complete(row: dict) -> bool:
    """A CSV row with exactly the header's columns (a row cut short by a kill has missing values)."""
    return None not in row and None not in row.values()


def _is_dicom_file(path: Path) -> bool:
    from monai_das.data import is_dicom

    return is_dicom(path)


def _list_folder(folder: Path, layout: str) -> list[dict]:
    """Studies under ``folder``: one per volume/clip file; for volumes a folder of DICOM files is one series."""
    from monai_das.data import VIDEO_EXTENSIONS

    items: list[dict] = []
    if layout == "video":
        exts = {e.lower() for e in VIDEO_EXTENSIONS}
        for f in sorted(folder.rglob("*")):
            if f.is_file() and (f.suffix.lower() in exts or _is_dicom_file(f)):
                items.append({"id": str(f.relative_to(folder)), "image": str(f)})
        return items
    exts = set(VOLUME_EXTENSIONS)
    dicom_dirs: set[Path] = set()
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        if _suffix(f) in exts:
            items.append({"id": str(f.relative_to(folder)), "image": str(f)})
        elif f.suffix.lower() in (".dcm", ".dicom") or (not f.suffix and _is_dicom_file(f)):
            dicom_dirs.add(f.parent)
    for d in sorted(dicom_dirs):
        items.append({"id": str(d.relative_to(folder)) if d != folder else folder.name, "image": str(d)})
    return sorted(items, key=lambda it: it["id"])


def _list_csv(csv_path: Path, image_column: str = "image") -> list[dict]:
    base = csv_path.parent
    items = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or image_column not in reader.fieldnames:
            raise ValueError(f"study list '{csv_path}' needs a '{image_column}' column (path of each study).")
        for i, row in enumerate(reader):
            path = Path(row[image_column]).expanduser()
            path = path if path.is_absolute() else base / path
            item = {"id": row.get("id") or str(row[image_column]), "image": str(path)}
            if row.get("label") not in (None, ""):
                item["label"] = int(row["label"])
            items.append(item)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"study list '{csv_path}' has duplicate ids; add a unique 'id' column.")
    return items


def list_studies(
    source: str | os.PathLike | None = None,
    layout: str = "volume",
    dataset: Sequence | None = None,
    id_prefix: str = "",
) -> list[dict]:
    """
    The studies to run, as ``[{"id": str, "image": path}]`` (files) or ``[{"id": str, "index": int}]`` (items of
    ``dataset``), sorted by id.

    Args:
        source: a folder (every volume file — ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.npy`` —,
            every folder of DICOM slices (one series), or for ``layout="video"`` every clip file, recursively; ids
            are paths relative to the folder) or a CSV with an ``image`` column (paths relative to the CSV) and
            optional ``id`` and ``label`` columns. ``None``: use ``dataset``.
        layout: ``"volume"`` or ``"video"`` (which files count as studies in a folder).
        dataset: used when ``source`` is ``None``: every item of it (e.g. a MedMNIST test split).
        id_prefix: prefix of the ids of dataset items (``<prefix><index>``).
    """
    if optional(source) is None:
        if dataset is None:
            raise ValueError("list_studies needs a source (folder or CSV) or a dataset.")
        return [{"id": f"{id_prefix}{i:06d}", "index": i} for i in range(len(dataset))]
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"study source '{path}' does not exist (expected a folder or a CSV file).")
    items = _list_csv(path) if path.is_file() else _list_folder(path, layout)
    if not items:
        raise ValueError(f"no studies found in '{path}' (layout={layout!r}).")
    return sorted(items, key=lambda it: it["id"])


def select_studies(
    items: Sequence[dict],
    shard_index: int = 0,
    shard_count: int = 1,
    done_csv: str | os.PathLike | None = None,
    skip_done: bool = True,
) -> list[dict]:
    """
    This worker's share of ``items`` (every ``shard_count``-th item from ``shard_index``, on the id-sorted list so
    every worker agrees), minus the ids already in ``done_csv`` when ``skip_done`` (resume after a kill).
    """
    _check_shard(shard_index, shard_count)
    mine = sorted(items, key=lambda it: it["id"])[int(shard_index)::int(shard_count)]
    done = read_done_ids(done_csv) if (flag(skip_done) and optional(done_csv)) else set()
    todo = [it for it in mine if it["id"] not in done]
    logger.info(f"shard {shard_index}/{shard_count}: {len(mine)} studies, {len(mine) - len(todo)} already done, "
                f"{len(todo)} to run.")
    return todo


def study_transform(layout: str = "volume", size: int = 28, num_frames: int = 32, **kwargs: Any) -> Callable:
    """
    File → network input: ``layout="volume"``: :func:`monai_das.transforms.preprocessing.volume_preprocessing`
    (NIfTI/DICOM/... → ``1×size³`` in [0, 1]); ``"video"``: ``LoadVideod`` (clip → ``num_frames×1×size×size``).
    ``kwargs`` go to ``volume_preprocessing`` (e.g. ``intensity_range`` for CT).
    """
    if layout == "video":
        from monai_das.data import video_transform

        return video_transform(num_frames=num_frames, spatial_size=(int(size), int(size)), grayscale=True)
    if layout != "volume":
        raise ValueError(f"layout must be 'volume' or 'video', got {layout!r}.")
    from monai_das.transforms.preprocessing import volume_preprocessing

    return volume_preprocessing(keys="image", spatial_size=int(size), **kwargs)


class StudyDataset(torch.utils.data.Dataset):
    """
    One study per item, loaded lazily (memory bounded by the data loader's batch and prefetch), as
    ``{"id", "source", "image", "label", "error", "source_indices"}`` (``source_indices``: for clips, the frame
    number in the file of each of the ``T`` input frames; ``-1`` when not known, e.g. for volumes). A study that
    cannot be read or gives the wrong shape becomes an
    error item: ``error`` holds the message and ``image`` zeros of ``image_shape``, so that the batch still goes
    through and the writer records the error for that study alone.

    Args:
        items: from :func:`list_studies` / :func:`select_studies`.
        image_shape: expected input shape of one study (``C×D×H×W`` or ``T×C×H×W``).
        transform: file item → dict with ``"image"`` (for ``{"image": path}`` items).
        dataset: source of ``{"index": i}`` items (already transformed).
    """

    def __init__(
        self,
        items: Sequence[dict],
        image_shape: Sequence[int],
        transform: Callable | None = None,
        dataset: Sequence | None = None,
    ) -> None:
        self.items = list(items)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.transform = transform
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, item: dict) -> dict:
        if "index" in item:
            if self.dataset is None:
                raise ValueError("dataset items need StudyDataset(dataset=...).")
            return dict(self.dataset[int(item["index"])])
        if not Path(item["image"]).exists():
            raise FileNotFoundError(f"study file '{item['image']}' does not exist.")
        return dict(self.transform({"image": item["image"]}) if self.transform is not None else item)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        out = {"id": str(item["id"]), "source": str(item.get("image", item.get("index", ""))), "label": -1, "error": ""}
        out["source_indices"] = torch.full((self.image_shape[0],), -1, dtype=torch.long)
        try:
            d = self._load(item)
            image = d["image"]
            src = getattr(image, "meta", {}).get(SOURCE_INDICES)
            if src is not None and len(src) == self.image_shape[0]:  # clips: frame numbers in the file
                out["source_indices"] = torch.as_tensor(src, dtype=torch.long)
            image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
            image = image.float().contiguous()
            if tuple(image.shape) != self.image_shape:
                raise ValueError(f"study '{out['source']}' loads as shape {tuple(image.shape)}, "
                                 f"expected {self.image_shape}.")
            if not bool(torch.isfinite(image).all()):
                raise ValueError(f"study '{out['source']}' has NaN/Inf values.")
            label = d.get("label", item.get("label", -1))
            out.update(image=image, label=int(torch.as_tensor(label).reshape(-1)[0]) if label is not None else -1)
        except Exception as e:  # one bad study must not stop the others
            root = e
            while root.__cause__ is not None:  # MONAI wraps the reader's error: report the original one
                root = root.__cause__
            msg = f"{type(root).__name__}: {root}".replace("\n", " ")
            if out["source"] not in msg:
                msg = f"cannot read '{out['source']}': {msg}"
            logger.warning(f"study {out['id']!r}: {msg}")
            out.update(image=torch.zeros(self.image_shape), error=msg[:500])
        out["label"] = torch.tensor(out["label"], dtype=torch.long)
        return out


def merge_predictions(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> str:
    """Concatenate shard CSVs (same columns) into ``output``, sorted by id, one row per id (the last one wins)."""
    rows: dict[str, dict] = {}
    fields: list[str] | None = None
    for p in paths:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if fields is None:
                fields = list(reader.fieldnames or [])
            elif list(reader.fieldnames or []) != fields:
                raise ValueError(f"'{p}' has columns {reader.fieldnames}, expected {fields}.")
            for row in reader:
                if _complete(row):
                    rows[row["id"]] = row
    if fields is None:
        raise ValueError("no prediction files to merge.")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))
    return str(output)
