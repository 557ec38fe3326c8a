"""
Batch inference over many studies: listing (folder, one study file, CSV study list or dataset split), sharding across
workers, resuming from an existing predictions file (keyed on each study's source and fingerprint), and a dataset that
turns an unreadable or refused study into an error item instead of stopping.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import torch

from monai_das.engines.utils import flag, optional
from monai_das.transforms.temporal import SOURCE_INDICES

__all__ = [
    "VOLUME_EXTENSIONS",
    "predictions_path",
    "read_done_ids",
    "study_fingerprint",
    "list_studies",
    "resume_predictions",
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
    """
    Ids of the studies of a predictions CSV that have a complete, error-free row (a partial last row left by a kill
    and rows with an ``error`` are not done). This does not check the sources: :func:`select_studies` does.
    """
    from monai_das.handlers.predictions import read_predictions_csv

    header, rows, _ = read_predictions_csv(csv_path)
    if header and id_column not in header:
        raise ValueError(f"predictions file '{csv_path}' has no '{id_column}' column; move it away or fix it.")
    return {r[id_column] for r in rows if r[id_column] and not r.get("error")}


def _is_dicom_file(path: Path) -> bool:
    from monai_das.data import is_dicom

    return is_dicom(path)


def study_fingerprint(path: str | os.PathLike) -> str:
    """
    What identifies the content of a study on disk, cheaply (no file is read): ``<size>-<mtime_ns>`` of a file
    (for ``.mhd``, also of the files beside it with the same stem, e.g. its ``.raw``), ``<n>files-<hash>`` for a
    folder (a DICOM series: a hash of the name, size and ``mtime_ns`` of every file directly in it), ``missing``
    when it cannot be read. A study whose fingerprint changed is predicted again on resume.
    """
    path = Path(path)
    try:
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file())
        elif path.suffix.lower() == ".mhd":
            files = sorted(f for f in path.parent.glob(glob_escape(path.stem) + ".*") if f.is_file())
        else:
            st = path.stat()
            return f"{st.st_size}-{st.st_mtime_ns}"
        digest = hashlib.blake2b(digest_size=8)  # change detection, not security
        for f in files:
            st = f.stat()
            digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return f"{len(files)}files-{digest.hexdigest()}"
    except OSError:
        return "missing"


def _file_item(study_id: str, path: Path) -> dict:
    """A study of a file/folder: absolute path (the resume key, with the fingerprint)."""
    return {"id": study_id, "image": os.path.abspath(path), "fingerprint": study_fingerprint(path)}


def _list_folder(folder: Path, layout: str) -> list[dict]:
    """Studies under ``folder``: one per volume/clip file; for volumes a folder of DICOM files is one series."""
    from monai_das.data import VIDEO_EXTENSIONS

    items: list[dict] = []
    if layout == "video":
        exts = {e.lower() for e in VIDEO_EXTENSIONS}
        for f in sorted(folder.rglob("*")):
            if f.is_file() and (f.suffix.lower() in exts or _is_dicom_file(f)):
                items.append(_file_item(str(f.relative_to(folder)), f))
        return items
    exts = set(VOLUME_EXTENSIONS)
    dicom_dirs: set[Path] = set()
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        if _suffix(f) in exts:
            items.append(_file_item(str(f.relative_to(folder)), f))
        elif f.suffix.lower() in (".dcm", ".dicom") or (not f.suffix and _is_dicom_file(f)):
            dicom_dirs.add(f.parent)
    for d in sorted(dicom_dirs):
        items.append(_file_item(str(d.relative_to(folder)) if d != folder else folder.name, d))
    return sorted(items, key=lambda it: it["id"])


def _is_study_file(path: Path, layout: str) -> bool:
    from monai_das.data import VIDEO_EXTENSIONS

    if layout == "video":
        return path.suffix.lower() in {e.lower() for e in VIDEO_EXTENSIONS} or _is_dicom_file(path)
    return _suffix(path) in VOLUME_EXTENSIONS or _is_dicom_file(path)


def _label_names(label_names: Sequence[str] | None, num_classes: int | None) -> list[str] | None:
    if label_names is not None:
        names = [str(n) for n in label_names]
        if num_classes is not None and int(num_classes) != len(names):
            raise ValueError(f"{len(names)} label names {names} for num_classes={num_classes}.")
        return names
    return None if num_classes is None else [str(i) for i in range(int(num_classes))]


def _parse_label(value: str | None, names: list[str] | None, where: str) -> int | None:
    """A CSV label cell → class index; ``None`` for a blank cell or ``-1`` (unknown label)."""
    value = (value or "").strip()
    if value in ("", "-1"):
        return None
    if names is not None and value in names:
        return names.index(value)
    valid = f"a class index 0..{len(names) - 1} or a class name {names}" if names else "an integer class index >= 0"
    try:
        idx = int(value)
    except ValueError:
        raise ValueError(f"{where}: label {value!r} is not {valid}.") from None
    if idx < 0 or (names is not None and idx >= len(names)):
        raise ValueError(f"{where}: label {value!r} is outside the model's classes: expected {valid}.")
    return idx


def _list_csv(csv_path: Path, image_column: str = "image", label_names: list[str] | None = None) -> list[dict]:
    base = csv_path.parent
    items: list[dict] = []
    first_line: dict[str, int] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets add a BOM
            reader = csv.DictReader(f)
            if reader.fieldnames is None or image_column not in reader.fieldnames:
                raise ValueError(f"study list '{csv_path}' line 1: needs a '{image_column}' column (path of each "
                                 f"study), got the columns {reader.fieldnames}.")
            for row in reader:
                where = f"study list '{csv_path}' line {reader.line_num}"
                if None in row:
                    raise ValueError(f"{where}: {len(reader.fieldnames) + len(row[None])} fields for the "
                                     f"{len(reader.fieldnames)} columns of the header (unquoted comma?).")
                image = (row[image_column] or "").strip()
                if not image:
                    raise ValueError(f"{where}: empty '{image_column}' (path of the study).")
                path = Path(image).expanduser()
                path = path if path.is_absolute() else base / path
                item = _file_item((row.get("id") or "").strip() or image, path)
                label = _parse_label(row.get("label"), label_names, where)
                if label is not None:
                    item["label"] = label
                if item["id"] in first_line:
                    raise ValueError(f"{where}: duplicate id {item['id']!r} (also on line {first_line[item['id']]}); "
                                     "add a unique 'id' column.")
                first_line[item["id"]] = reader.line_num
                items.append(item)
    except UnicodeDecodeError as e:
        raise ValueError(f"study list '{csv_path}' is not UTF-8 text (byte {e.start}): expected a CSV file.") from None
    return items


def list_studies(
    source: str | os.PathLike | None = None,
    layout: str = "volume",
    dataset: Sequence | None = None,
    id_prefix: str = "",
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    dataset_tag: str | None = None,
) -> list[dict]:
    """
    The studies to run, as ``[{"id": str, "image": absolute path, "fingerprint": str}]`` (files, with ``"label"``
    when a CSV gives one) or ``[{"id": str, "index": int, "fingerprint": str}]`` (items of ``dataset``), sorted by
    id. ``fingerprint`` (see :func:`study_fingerprint`; ``<dataset_tag>/<index>`` for dataset items) is what
    :func:`select_studies` compares, with the source, to decide whether an earlier prediction still holds.

    Args:
        source: a folder (every volume file — ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.npy`` —,
            every folder of DICOM slices (one series), or for ``layout="video"`` every clip file, recursively; ids
            are paths relative to the folder); a CSV study list (``.csv``) with an ``image`` column (paths relative
            to the CSV) and optional ``id`` and ``label`` columns (``label``: class index or name; blank or ``-1``
            = unknown); or one study file (a volume or DICOM file, or for ``layout="video"`` a clip; id = its
            name). ``None``: use ``dataset``.
        layout: ``"volume"`` or ``"video"`` (which files count as studies).
        dataset: used when ``source`` is ``None``: every item of it (e.g. a MedMNIST test split).
        id_prefix: prefix of the ids of dataset items (``<prefix><index>``).
        label_names, num_classes: the model's classes; CSV labels outside them are refused (either is enough).
        dataset_tag: names the dataset items' content in their fingerprint (e.g. ``"<dataset>/<split>"``; default
            ``id_prefix``).

    Raises:
        FileNotFoundError: ``source`` does not exist. ValueError: an unsupported file, a bad CSV line (naming the
        file and line, header = line 1), or no study found.
    """
    if layout not in ("volume", "video"):
        raise ValueError(f"layout must be 'volume' or 'video', got {layout!r}.")
    names = _label_names(label_names, optional(num_classes))
    if optional(source) is None:
        if dataset is None:
            raise ValueError("list_studies needs a source (folder, CSV or study file) or a dataset.")
        tag = dataset_tag if dataset_tag is not None else id_prefix.rstrip("_") or "dataset"
        return [{"id": f"{id_prefix}{i:06d}", "index": i, "fingerprint": f"{tag}/{i}"} for i in range(len(dataset))]
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"study source '{path}' does not exist (expected a folder, a CSV study list or a "
                                "study file).")
    if path.is_dir():
        items = _list_folder(path, layout)
    elif path.is_file() and _suffix(path) == ".csv":
        items = _list_csv(path, label_names=names)
    elif path.is_file() and _is_study_file(path, layout):
        items = [_file_item(path.name, path)]
    else:
        kinds = ("a video or DICOM clip " + str(tuple(sorted(_video_extensions())))) if layout == "video" else \
            f"a volume file {VOLUME_EXTENSIONS} or a DICOM file"
        raise ValueError(f"input '{path}' is not supported: expected a folder of studies, a CSV study list (.csv) "
                         f"or one study file ({kinds}) for layout={layout!r}.")
    if not items:
        raise ValueError(f"no studies found in '{path}' (layout={layout!r}).")
    return sorted(items, key=lambda it: it["id"])


def _video_extensions() -> tuple[str, ...]:
    from monai_das.data import VIDEO_EXTENSIONS

    return tuple(VIDEO_EXTENSIONS)


def _item_source(item: dict) -> str:
    """The ``source`` column of a study (what :class:`StudyDataset` reports)."""
    return str(item.get("image", item.get("index", "")))


def _check_predictions_header(path: Path, header: Sequence[str]) -> None:
    """Refuse to rewrite a file that is not a predictions CSV (e.g. the study list given as output by mistake)."""
    needed = ("id", "source", "pred_label", "error")
    if not set(needed) <= set(header):
        raise ValueError(f"'{path}' is not a predictions file (columns {list(header)}, expected at least "
                         f"{list(needed)}); move it away or choose another output.")


def resume_predictions(csv_path: str | os.PathLike, items: Sequence[dict]) -> set[str]:
    """
    Keep in a predictions CSV only the rows that still hold for ``items`` and return their ids.

    A row is kept when it is complete (not the partial last row of a kill), has no ``error`` (failed studies are
    tried again) and its ``id``, ``source`` and ``fingerprint`` match a study of ``items`` (a study whose file
    moved or changed, or that is not in this listing/shard any more, is dropped); of several rows of one id the last
    one wins. When anything is dropped the CSV is rewritten atomically (temporary file + ``os.replace``), and the
    JSON beside it (``.json``) is rewritten from it, so that both hold one row per id even when nothing is left to
    run. A file from an older version (without a ``fingerprint`` column) keeps no row and is emptied.

    Raises:
        ValueError: the file is not a predictions CSV (no ``id``, ``source``, ``pred_label`` or ``error`` column).
    """
    from monai_das.handlers.predictions import (
        dedupe_predictions,
        read_predictions_csv,
        write_predictions_csv,
        write_predictions_json,
    )

    path = Path(csv_path)
    header, rows, num_cut = read_predictions_csv(path)
    if not header:
        return set()
    _check_predictions_header(path, header)
    expected = {str(it["id"]): (_item_source(it), str(it.get("fingerprint", ""))) for it in items}
    compatible = "fingerprint" in header
    reasons: dict[str, int] = {}
    kept = []
    for r in rows:
        if not compatible:
            reason = "written by an older version (no fingerprint column)"
        elif r["id"] not in expected:
            reason = "not in this listing/shard"
        elif r["error"]:
            reason = "error, run again"
        elif (r["source"], r["fingerprint"]) != expected[r["id"]]:
            reason = "source moved or changed"
        else:
            kept.append(r)
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    unique = dedupe_predictions(kept)
    if len(kept) > len(unique):
        reasons["duplicate row"] = len(kept) - len(unique)
    if num_cut:
        reasons["partial row of an interrupted run"] = num_cut
    if not compatible:  # even without rows: the writer needs the current header
        reasons.setdefault("written by an older version (no fingerprint column)", 0)
    if reasons:
        json_path = path.with_suffix(".json")
        if unique:
            write_predictions_csv(path, header, unique)
            write_predictions_json(path, json_path)
        else:  # nothing kept: an empty file gets the current header from PredictionWriter
            path.write_bytes(b"")
            json_path.unlink(missing_ok=True)
        logger.info(f"'{path}': kept {len(unique)} predictions, dropped " +
                    ", ".join(f"{n} ({why})" for why, n in sorted(reasons.items())) + ".")
    elif not path.with_suffix(".json").is_file() and unique:  # a run killed before writing it
        write_predictions_json(path, path.with_suffix(".json"))
    return {r["id"] for r in unique}


def select_studies(
    items: Sequence[dict],
    shard_index: int = 0,
    shard_count: int = 1,
    done_csv: str | os.PathLike | None = None,
    skip_done: bool = True,
) -> list[dict]:
    """
    This worker's share of ``items`` (every ``shard_count``-th item from ``shard_index``, on the id-sorted list so
    every worker agrees), minus the studies already predicted in ``done_csv``.

    Args:
        items: from :func:`list_studies`.
        shard_index, shard_count: this worker and the number of workers.
        done_csv: this worker's predictions CSV (``None``: run everything, touch no file).
        skip_done: resume: keep the rows of ``done_csv`` that still hold (complete, error-free, same id, source and
            fingerprint; see :func:`resume_predictions`, which rewrites the file without the others) and run only
            the other studies. ``False``: start afresh: ``done_csv`` and its JSON are emptied, every study runs.
    """
    _check_shard(shard_index, shard_count)
    mine = sorted(items, key=lambda it: it["id"])[int(shard_index)::int(shard_count)]
    done: set[str] = set()
    if optional(done_csv) is not None:
        path = Path(done_csv)
        if flag(skip_done):
            done = resume_predictions(path, mine)
        elif path.is_file() and path.stat().st_size > 0:
            from monai_das.handlers.predictions import read_predictions_csv

            header = read_predictions_csv(path)[0]
            if header:
                _check_predictions_header(path, header)  # never empty a file that is not ours
            path.write_bytes(b"")  # truncate: rows are not appended to an old run's
            path.with_suffix(".json").unlink(missing_ok=True)
            logger.info(f"'{path}': skip_done is false, previous predictions removed.")
    todo = [it for it in mine if it["id"] not in done]
    logger.info(f"shard {shard_index}/{shard_count}: {len(mine)} studies, {len(mine) - len(todo)} already done, "
                f"{len(todo)} to run.")
    return todo


def study_transform(
    layout: str = "volume", size: int = 28, num_frames: int = 32, min_frames: int = 2, **kwargs: Any
) -> Callable:
    """
    File → network input: ``layout="volume"``: :func:`monai_das.transforms.preprocessing.volume_preprocessing`
    (NIfTI/DICOM/... → ``1×size³`` in [0, 1]); ``"video"``: ``LoadVideod`` (clip → ``num_frames×1×size×size``).
    ``kwargs`` go to ``volume_preprocessing`` (e.g. ``intensity_range`` for CT).

    Args:
        min_frames: studies with fewer slices along any axis (volumes: a 2D image or a one-slice series) or fewer
            frames (clips: a single-frame DICOM, a one-frame GIF) are refused (an error row) instead of being
            stretched into a volume/clip that is constant along that axis; ``1`` accepts them.
    """
    if layout == "video":
        from monai_das.data import video_transform

        return video_transform(num_frames=num_frames, spatial_size=(int(size), int(size)), grayscale=True,
                               min_frames=int(min_frames))
    if layout != "volume":
        raise ValueError(f"layout must be 'volume' or 'video', got {layout!r}.")
    from monai_das.transforms.preprocessing import volume_preprocessing

    return volume_preprocessing(keys="image", spatial_size=int(size), min_slices=int(min_frames), **kwargs)


class StudyDataset(torch.utils.data.Dataset):
    """
    One study per item, loaded lazily (memory bounded by the data loader's batch and prefetch), as
    ``{"id", "source", "fingerprint", "image", "label", "error", "source_indices"}`` (``source``: the absolute
    path, or the dataset index; ``fingerprint``: from :func:`list_studies`; ``source_indices``: for clips, the frame
    number in the file of each of the ``T`` input frames; ``-1`` when not known, e.g. for volumes). A study that
    cannot be read, is refused by the transform (e.g. a 2D image or a single frame, see :func:`study_transform`) or
    gives the wrong shape becomes an error item: ``error`` holds the message and ``image`` zeros of ``image_shape``,
    so that the batch still goes through and the writer records the error for that study alone.

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
        out = {"id": str(item["id"]), "source": _item_source(item), "fingerprint": str(item.get("fingerprint", "")),
               "label": -1, "error": ""}
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
    """
    Concatenate shard CSVs (same columns) into ``output`` (written atomically), sorted by id, one row per id (the
    last one wins); partial rows left by a kill and empty files (a shard with nothing to do) are skipped.
    """
    from monai_das.handlers.predictions import dedupe_predictions, read_predictions_csv, write_predictions_csv

    rows: list[dict] = []
    fields: list[str] | None = None
    for p in paths:
        header, part, _ = read_predictions_csv(p)
        if not header:
            if not Path(p).is_file():
                raise FileNotFoundError(f"prediction file '{p}' does not exist.")
            continue
        if fields is None:
            fields = header
        elif header != fields:
            raise ValueError(f"'{p}' has columns {header}, expected {fields}.")
        if "id" not in header:
            raise ValueError(f"'{p}' is not a predictions file (no 'id' column, columns {header}).")
        rows.extend(part)
    if fields is None:
        raise ValueError("no prediction files to merge.")
    return write_predictions_csv(output, fields, dedupe_predictions(rows))
