"""
Clip listings (``{"image": path, "label": int, "group": str}`` dicts) from a CSV or a folder, patient-level
cross-validation folds, and the ready-made POCUS lung-ultrasound listing.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_das.data.studies import is_hidden
from monai_das.data.video_io import DICOM_EXTENSIONS, VIDEO_EXTENSIONS
from monai_das.utils.logs import bounded_repr

__all__ = [
    "POCUS_CLASSES",
    "POCUS_LABEL_MAP",
    "read_video_listing",
    "assign_group_folds",
    "split_by_fold",
    "pocus_listing",
]

logger = logging.getLogger(__name__)

POCUS_CLASSES = ("covid", "pneumonia", "healthy")
#: MANIFEST.csv labels → the 3-class benchmark (bacterial and viral pneumonia merged)
POCUS_LABEL_MAP = {"covid": 0, "bacterial_pneumonia": 1, "viral_pneumonia": 1, "pneumonia": 1, "healthy": 2}


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")


def _label_index(value: str, label_names: Sequence[str] | Mapping[str, int], where: str) -> int:
    if not value:  # a blank cell is a missing label, never a class of its own
        raise ValueError(f"{where}: the label is blank.")
    if isinstance(label_names, Mapping):
        if value not in label_names:
            raise ValueError(f"{where}: label {bounded_repr(value)} is not one of {bounded_repr(sorted(label_names))}.")
        return int(label_names[value])
    if value in label_names:
        return list(label_names).index(value)
    try:
        idx = int(value)
    except ValueError:
        hint = ""
        try:  # "0.0" (a spreadsheet's number): an index written as a float
            number = float(value)
            if number.is_integer() and 0 <= number < len(label_names):
                hint = (f" (a class index is an integer: {int(number)} for {label_names[int(number)]!r}; a "
                        "spreadsheet may have written it as a number with decimals)")
        except ValueError:
            pass
        raise ValueError(f"{where}: label {bounded_repr(value)} is not one of {bounded_repr(list(label_names))}"
                         f"{hint}.") from None
    if not 0 <= idx < len(label_names):
        raise ValueError(f"{where}: label {idx} is outside 0..{len(label_names) - 1} "
                         f"({bounded_repr(list(label_names))}).")
    return idx


def read_video_listing(
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    label_names: Sequence[str] | Mapping[str, int] | None = None,
    path_column: str = "file",
    label_column: str = "label",
    group_column: str | None = "patient_id",
    on_error: str = "raise",
    extensions: Sequence[str] = VIDEO_EXTENSIONS + DICOM_EXTENSIONS,
) -> list[dict]:
    """
    Listing of clips as ``[{"image": path, "label": int, "label_name": str, "group": str, ...}, ...]``
    (``label_name`` is the label as written in the source).

    Args:
        source: a CSV file (one row per clip; columns ``path_column``, ``label_column`` and, if given,
            ``group_column``; other columns are carried over, an ``evidence`` column read as a datalist's:
            frame indices separated by ``;``, ``'11;12;13'``, into a list, blank: ``[]``) or a folder laid out as
            ``<source>/<label>/<clip>`` (``group`` = the clip's file stem, i.e. each clip its own group: give a CSV
            when several clips come from one patient).
        root: folder that relative CSV paths are relative to (default: the CSV's folder).
        label_names: class names (index = position) or a name → index mapping. Default: as in a datalist, integer
            labels are class indices ``0..max`` (each must occur), else the distinct names sorted (two names that
            differ only in case are refused).
        path_column, label_column, group_column: CSV column names (``group_column=None``: group = file stem).
        on_error: ``"raise"``: a row whose file is missing, whose label is blank or unknown, or whose group is blank
            raises (naming the file and line, header = line 1); ``"skip"``: such rows are dropped and counted in one
            warning log line.
        extensions: clip extensions picked up when ``source`` is a folder.
    """
    _check_on_error(on_error)
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"listing source '{source}' does not exist (expected a CSV file or a folder).")
    rows: list[tuple[str, Path | None, str, str, dict]] = []  # (where, path, label, group, extra)
    if source.is_dir():
        exts = {e.lower() for e in extensions}

        def hidden(path: Path) -> bool:
            return any(is_hidden(part) for part in path.relative_to(source).parts)

        for label_dir in sorted(p for p in source.iterdir() if p.is_dir() and not hidden(p)):
            clips = [f for f in sorted(label_dir.rglob("*"))
                     if f.is_file() and f.suffix.lower() in exts and not hidden(f)]
            if not clips:  # a class without clips would vanish from the label set without a word
                raise ValueError(f"class folder '{label_dir}' holds no clips with extensions {sorted(exts)}; add "
                                 "its clips or remove the folder.")
            rows += [(str(f), f, label_dir.name, f.stem, {}) for f in clips]
        if not rows:
            raise ValueError(f"no clips with extensions {sorted(exts)} found under '{source}/<label>/'.")
    else:
        from monai_das.data.datalist import _not_utf8

        base = Path(root) if root is not None else source.parent
        needed = {path_column, label_column} | ({group_column} if group_column else set())
        try:
            with open(source, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheets write a BOM
                reader = csv.DictReader(fh)
                missing = needed - set(reader.fieldnames or [])
                if missing:
                    raise ValueError(f"CSV '{source}' lacks the column(s) {sorted(missing)} (has {reader.fieldnames}).")
                for r in reader:
                    where = f"CSV '{source}' line {reader.line_num}"  # physical line, header = line 1
                    if None in r:  # more cells than columns: a shifted row would lose its group silently
                        raise ValueError(f"{where}: more cells than the header's {len(reader.fieldnames or [])} "
                                         f"columns (extra: {r[None]}); quote a value that holds a comma.")
                    raw = (r[path_column] or "").strip()
                    p = Path(raw) if raw else None
                    p = p if p is None or p.is_absolute() else base / p
                    # a missing group is an error, not the group "None": one such group would join unrelated clips
                    group = (r[group_column] or "").strip() if group_column else (p.stem if p else "")
                    extra = {k: v for k, v in r.items() if k not in needed}
                    rows.append((where, p, (r[label_column] or "").strip(), group, extra))
        except UnicodeDecodeError as e:
            raise _not_utf8(source, e) from None
    if label_names is None:  # as a datalist: integer labels are class indices, else the names sorted
        from monai_das.data.datalist import classes_of_labels

        firsts: dict[str, str] = {}
        for where, _, label, _, _ in rows:
            if label:
                firsts.setdefault(label, where)
        names = classes_of_labels(firsts, str(source), Counter(label for _, _, label, _, _ in rows if label))
    else:
        names = label_names
    items, problems = [], []
    first: dict[str, str] = {}  # clip file -> where it was listed first
    for where, path, label, group, extra in rows:
        try:
            if path is None:
                raise ValueError(f"{where}: the path ('{path_column}') is blank.")
            if not group:
                raise ValueError(f"{where}: the group ('{group_column}') is blank; every clip needs its patient id "
                                 "so that no patient is split across folds.")
            if not path.is_file():
                raise FileNotFoundError(f"{where}: clip file '{path}' does not exist.")
            key = os.path.realpath(path)
            if key in first:  # counted twice, and under two patients it could sit in the train and the test fold
                raise ValueError(f"{where}: clip file '{path}' is listed twice (first at {first[key]}).")
            first[key] = where
            idx = _label_index(label, names, where)
        except (FileNotFoundError, ValueError) as e:
            if on_error == "raise":
                raise
            problems.append(str(e))
            continue
        if "evidence" in extra:  # a CSV's '11;12;13' (a string: map_evidence read it character by character)
            from monai_das.data.datalist import _evidence

            try:
                extra = {**extra, "evidence": _evidence(extra["evidence"], where) or []}
            except ValueError as e:
                if on_error == "raise":
                    raise
                problems.append(str(e))
                continue
        items.append({**extra, "image": str(path), "label": idx, "label_name": label, "group": group})
    if problems:
        logger.warning("skipped %d of %d listing rows: %s", len(problems), len(rows), "; ".join(problems[:5]))
    return items


def assign_group_folds(
    items: Sequence[dict], num_folds: int = 5, seed: int = 0, stratified: bool = True, group_key: str = "group"
) -> list[dict]:
    """
    Copies of ``items`` with ``"fold"`` (0..num_folds-1) assigned per group (patient): every clip of a group is in
    the same fold, so no patient is in two folds. ``stratified`` balances the labels across folds
    (``sklearn.model_selection.StratifiedGroupKFold``, shuffled with ``seed``), else ``GroupKFold``.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    items = [dict(it) for it in items]
    blank = [it for it in items if it.get(group_key) is None or not str(it[group_key]).strip()]
    if blank:  # str(None) would put every such clip into one group "None"
        raise ValueError(f"{len(blank)} item(s) have no '{group_key}' (e.g. {blank[0].get('image', blank[0])}); "
                         "every clip needs its patient id.")
    groups = np.array([str(it[group_key]) for it in items])
    labels = np.array([int(it["label"]) for it in items])
    n_groups = len(set(groups.tolist()))
    if not 2 <= int(num_folds) <= n_groups:
        raise ValueError(f"num_folds must be in 2..{n_groups} (the number of groups), got {num_folds}.")
    if stratified:
        splitter = StratifiedGroupKFold(n_splits=int(num_folds), shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=int(num_folds))
    for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(items)), labels, groups)):
        for i in test_idx:
            items[i]["fold"] = fold
    return items


def split_by_fold(items: Sequence[dict], fold: int, val_fold: int | None = None) -> dict[str, list[dict]]:
    """
    ``{"train", "val", "test"}`` lists for cross-validation round ``fold``: ``test`` = items of ``fold``,
    ``val`` = items of ``val_fold`` (default ``(fold + 1) % num_folds``), ``train`` = the rest.
    """
    folds = sorted({int(it["fold"]) for it in items})
    if fold not in folds:
        raise ValueError(f"fold {fold} is not one of the folds {folds}.")
    val_fold = folds[(folds.index(fold) + 1) % len(folds)] if val_fold is None else val_fold
    if val_fold == fold or val_fold not in folds:
        raise ValueError(f"val_fold must be another fold of {folds}, got {val_fold}.")
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for it in items:
        f = int(it["fold"])
        out["test" if f == fold else "val" if f == val_fold else "train"].append(it)
    return out


def pocus_listing(
    root: str | os.PathLike,
    probe: str | None = "convex",
    num_folds: int = 5,
    seed: int = 0,
    on_error: str = "raise",
) -> list[dict]:
    """
    The POCUS lung-ultrasound benchmark listing (Born et al. 2021; ``covid19_lus_pocus`` with its
    ``MANIFEST.csv``): ``[{"image", "label", "group", "fold", "probe", "label_name"}]`` with labels
    :data:`POCUS_CLASSES` (covid 0, pneumonia 1 = bacterial + viral, healthy 2), ``group`` = patient id and
    patient-level stratified folds.

    Args:
        root: the folder with ``MANIFEST.csv`` and the ``convex/`` / ``linear/`` clips.
        probe: ``"convex"`` (the common benchmark), ``"linear"``, or ``None`` for both.
        num_folds, seed: see :func:`assign_group_folds`.
        on_error: see :func:`read_video_listing`.
    """
    manifest = Path(root) / "MANIFEST.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"POCUS manifest '{manifest}' not found (root should hold MANIFEST.csv).")
    items = read_video_listing(manifest, label_names=POCUS_LABEL_MAP, group_column="patient_id", on_error=on_error)
    items = [
        {"image": it["image"], "label": it["label"], "group": it["group"], "probe": it.get("probe", ""),
         "label_name": it["label_name"]}
        for it in items
    ]
    if probe is not None:
        items = [it for it in items if it.get("probe") == probe]
        if not items:
            raise ValueError(f"no clips with probe {probe!r} in '{manifest}'.")
    return assign_group_folds(items, num_folds=num_folds, seed=seed)
