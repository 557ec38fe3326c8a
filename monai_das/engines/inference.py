"""
Batch inference over many studies: sharding the studies of :func:`monai_das.data.list_studies` across workers,
resuming from an existing predictions file (keyed on each study's source and fingerprint), and a dataset that turns an
unreadable or refused study into an error item instead of stopping. Finding, identifying, fingerprinting and loading
the studies is the study layer's job (:mod:`monai_das.data.studies`), shared with the Deploy and MONAI Label apps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_das.engines.utils import flag, optional
from monai_das.transforms.temporal import SOURCE_INDICES
from monai_das.utils.io import (
    file_digest, hold_lock, input_folder_name, open_in_place, read_checkpoint, refuse_link, release_lock
)
from monai_das.utils.logs import first_cause, root_cause

__all__ = [
    "predictions_path",
    "prediction_key",
    "resume_predictions",
    "select_studies",
    "shard_of",
    "launcher_shard",
    "StudyDataset",
    "merge_predictions",
    "merge_shards",
    "exit_status",
    "hold_predictions",
    "release_predictions",
]

logger = logging.getLogger(__name__)


def predictions_path(output_dir: str | os.PathLike, shard_index: int = 0, shard_count: int = 1,
                     name: str = "predictions") -> str:
    """``<output_dir>/predictions.csv``, or ``predictions.shard<i>of<n>.csv`` when the work is split in shards."""
    _check_shard(shard_index, shard_count)
    return str(Path(output_dir) / f"{name}{_shard_suffix(shard_index, shard_count)}.csv")


#: exit status of a batch inference whose predictions file holds studies that could not be classified (as the Deploy
#: app's): 0 would tell a script or a scheduler that every study was done
ERRORS_EXIT_STATUS = 3


def _lock_names(path: Path) -> tuple[str, str]:
    return f".{path.name}.lock", f".{path.name}.owner"


def hold_predictions(predictions_csv: str | os.PathLike) -> None:
    """
    Lock the predictions file ``predictions_csv`` for this process, before anything reads or rewrites it (an OS file
    lock on a hidden file beside it, :func:`monai_das.utils.io.lock_folder`: the operating system lets go of it when
    the process ends, killed or not). Two runs into one output folder resumed, truncated and appended one file under
    each other: rows of two models in one file, one run's rows dropped by the other's resume, or a file emptied and
    appended without its header (trial T67c). The second run is refused, naming the file and the first run. Nothing
    happens when this process holds the lock already (a second run in the same Python session).

    Raises:
        RuntimeError: another process holds the lock.
    """
    path = Path(predictions_csv)
    # read, emptied, appended: never through a link (T69b); nor its lock files (a link there left the run unlocked)
    for written in (path, path.with_suffix(".json"), *(path.parent / name for name in _lock_names(path))):
        refuse_link(written, "predictions file")
    hold_lock(path.parent, *_lock_names(path), what="batch inference", refusal=lambda o: (
        f"another batch inference is writing '{path}'{f' ({o})' if o else ''}: wait for it to finish, or give this "
        "run another --output_dir."))


def release_predictions(predictions_csv: str | os.PathLike) -> None:
    """Let go of :func:`hold_predictions`'s lock on ``predictions_csv`` and delete its hidden files (nothing when this
    process holds none)."""
    path = Path(predictions_csv)
    release_lock(path.parent, *_lock_names(path))


def exit_status(predictions_csv: str | os.PathLike) -> str | os.PathLike:
    """
    The last step of the bundles' batch inference (``run``) and of their shard merge (``merge``): exit with
    :data:`ERRORS_EXIT_STATUS` when ``predictions_csv`` (the whole file, rows of earlier runs included) holds error
    rows, after every study was written, logging how many and the first; return ``predictions_csv`` otherwise. A
    shard started by ``torchrun`` (:func:`launcher_shard`) logs them and returns: a failing worker would make
    ``torchrun`` stop the shards still predicting; a shard started on its own (``--shard_index``) exits as a single
    run does. The run's lock on the file (:func:`hold_predictions`) is let go once the file is read.
    """
    from monai_das.handlers.predictions import read_predictions_csv

    try:  # read before the run lets go of the file: a run starting in between could empty it (skip_done false)
        if not Path(predictions_csv).is_file():
            return predictions_csv
        _, rows, _ = read_predictions_csv(predictions_csv)
    finally:
        release_predictions(predictions_csv)
    failed = [r for r in rows if r.get("error")]
    if not failed:
        return predictions_csv
    torchrun = launcher_shard()[1] > 1
    logger.error(f"{len(failed)} of {len(rows)} studies in '{predictions_csv}' could not be classified (their 'error' "
                 f"cells say why; the first, {failed[0].get('id')!r}: {failed[0]['error']})"
                 + (" (a torchrun shard: exit status 0, so that the other shards finish)" if torchrun
                    else f": exit status {ERRORS_EXIT_STATUS}"))
    if not torchrun:
        raise SystemExit(ERRORS_EXIT_STATUS)
    return predictions_csv


def inference_output_dir(bundle_root: str | os.PathLike, input: str | os.PathLike | None = None,
                         split: str = "test") -> str:
    """
    Where bundle inference writes by default: for a dataset ``split``, beside the evaluation's reports of that split
    (``<bundle_root>/eval`` for the test split, ``<bundle_root>/eval/<split>`` for another: a ``--split val`` run
    replaced the test split's predictions file), ``<bundle_root>/predictions/<name>-<tag>`` for ``--input``
    (``<name>``: the input folder's or file's own name; ``<tag>``: 8 hex digits of its absolute path, so that the
    series folders of one name in a PACS export, ``P1/ST1/SE2_CT`` and ``P3/ST1/SE2_CT``, get their own), so that
    predicting new studies replaces neither a split's predictions nor those of another input (a predictions file
    keeps the rows of its own listing only).
    """
    if optional(input) is None:  # another split name is refused by the dataset, naming the one to give
        return str(Path(bundle_root, "eval", *([split] if split in ("train", "val") else [])))
    return str(Path(bundle_root) / "predictions" / input_folder_name(input))


def _shard_suffix(shard_index: int, shard_count: int) -> str:
    """``.shard<i>of<n>`` (nothing for one shard): what names a shard's predictions file (read by ``_SHARD_NAME``)."""
    return "" if int(shard_count) == 1 else f".shard{int(shard_index)}of{int(shard_count)}"


_SHARD_NAME = re.compile(r".*\.shard(\d+)of(\d+)\.csv")


def _check_shard(shard_index: int, shard_count: int) -> None:
    if int(shard_count) < 1 or not 0 <= int(shard_index) < int(shard_count):
        raise ValueError(f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
                         f"shard_count={shard_count}.")


def launcher_shard() -> tuple[int, int]:
    """
    ``(shard_index, shard_count)`` for batch inference started by ``torchrun``: its ``RANK`` and ``WORLD_SIZE`` (each
    process predicts its own shard into its own file), recognised by ``LOCAL_RANK`` and ``TORCHELASTIC_RUN_ID``
    being set too, so a stray ``RANK`` in the environment does not shard a single process. ``(0, 1)`` otherwise.
    """
    env = os.environ
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")):
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    return 0, 1


def shard_of(study_id: str, shard_count: int) -> int:
    """
    The shard (``0..shard_count-1``) of a study: its id's SHA-256 modulo ``shard_count``. It depends on the id alone,
    not on the other studies listed, so adding a study to a folder never moves others between shards.
    """
    if int(shard_count) == 1:
        return 0
    return int(hashlib.sha256(study_id.encode("utf-8")).hexdigest()[:12], 16) % int(shard_count)


def _item_source(item: dict) -> str:
    """The ``source`` column of a study (what :class:`StudyDataset` reports)."""
    return str(item.get("image", item.get("index", "")))


def _check_predictions_header(path: Path, header: Sequence[str]) -> None:
    """Refuse to rewrite a file that is not a predictions CSV (e.g. the study list given as output by mistake)."""
    needed = ("id", "source", "pred_label", "error")
    if not set(needed) <= set(header):
        raise ValueError(f"'{path}' is not a predictions file (columns {list(header)}, expected at least "
                         f"{list(needed)}); move it away or choose another output.")


def prediction_key(checkpoint: str | os.PathLike, settings: Any = None) -> str:
    """
    What a prediction depends on besides the study, as a 16-hex-digit digest: the SHA-256 of the checkpoint's bytes
    and the inference ``settings`` (e.g. keep ratio, method, preprocessing recipe; any JSON-able value). Written in
    the predictions' ``model`` column (:class:`monai_das.handlers.PredictionWriter`) and checked on resume
    (:func:`resume_predictions`): rows of another checkpoint or another ``k`` are predicted again, never kept. A
    missing or damaged checkpoint, or one holding other Python objects than tensors and containers, is refused here
    (:func:`monai_das.utils.io.read_checkpoint`, ``weights_only=True``), before any earlier prediction is touched.
    """
    read_checkpoint(checkpoint)  # checked and loaded as the engine will load it: refused now, before rows are dropped
    path = Path(checkpoint)
    weights = file_digest(path)
    text = json.dumps({"checkpoint": weights, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _label_text(item: dict) -> str:
    """An item's label as the predictions CSV writes it (items of a study list that has labels; dataset items get
    theirs only when loaded, so theirs are not compared)."""
    from monai_das.handlers.predictions import _s

    return _s(item["label"])


def _expected_rows(items: Sequence[dict]) -> dict[str, tuple[str, str, str | None]]:
    """What a row must say of each listed study: ``id`` → (``source``, ``fingerprint``, ``label`` or ``None`` when the
    listing has none to compare)."""
    return {str(it["id"]): (_item_source(it), str(it.get("fingerprint", "")),
                            _label_text(it) if "label" in it else None) for it in items}


def _old_version(header: Sequence[str], model_key: str | None) -> str | None:
    """Why a predictions file written by an older version cannot be compared (a column missing), else ``None``."""
    missing = [c for c in ("fingerprint", "model" if model_key is not None else "") if c and c not in header]
    return f"written by an older version (no {' or '.join(missing)} column)" if missing else None


#: why a predictions row of another study is dropped: not in the listing (shard) of this run, its id now names another
#: file (moved, or another study under that id), or its file changed since
UNLISTED, MOVED, CHANGED = "not in this listing/shard", "another file under its id", "file changed since"
OTHER_MODEL = "another model or inference setting (checkpoint, engine, k, preprocessing)"
#: an error row dropped for one of these reasons holds no result: said at INFO, not as replaced predictions (an error
#: row of another file under its id, e.g. a list's missing image given again with --dataset_dir, was; trial T70c)
_ERROR_ROW = {UNLISTED: "error row of a study not listed any more", MOVED: "error row of another file under its id",
              OTHER_MODEL: "error row of another model or inference setting"}


def _stale_reason(row: dict, expected: dict, model_key: str | None, unlisted: str = "not in this listing") -> str | None:
    """Why a complete predictions row no longer holds for the listing ``expected`` (:func:`_expected_rows`) and the
    run's ``model_key``; ``None`` when it does (an error row holds too: it is the study's result until retried)."""
    if model_key is not None and row.get("model") != model_key:
        return OTHER_MODEL
    if row["id"] not in expected:
        return unlisted
    if row.get("source") != expected[row["id"]][0]:
        return MOVED
    if row.get("fingerprint") != expected[row["id"]][1]:
        return CHANGED
    if "label" in row and expected[row["id"]][2] is not None and row["label"] != expected[row["id"]][2]:
        return "label changed in the study list"
    return None


def resume_predictions(csv_path: str | os.PathLike, items: Sequence[dict], model_key: str | None = None) -> set[str]:
    """
    Keep in a predictions CSV only the rows that still hold for ``items`` and return their ids.

    A row is kept when it is complete (not the partial last row of a kill), has no ``error`` (failed studies are
    tried again) and its ``id``, ``source``, ``fingerprint`` and ``label`` match a study of ``items`` (a study whose
    file moved or changed, whose label was corrected in the study list, or that is not in this listing/shard any more,
    is dropped); with ``model_key``
    (:func:`prediction_key`) its ``model`` column must match it too (a row of another checkpoint, ``k`` or
    preprocessing is dropped); of several rows of one id the last one wins. When anything is dropped the CSV is
    rewritten atomically (temporary file + ``os.replace``); the JSON beside it (``.json``) is rewritten from the CSV
    whenever rows are kept, so that both hold one row per id even when nothing is left to run (a run killed after
    appending its CSV rows left the JSON behind). A file from an older version (without a
    ``fingerprint`` column, or without ``model`` when ``model_key`` is given) keeps no row and is emptied.

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
    expected = _expected_rows(items)
    old_version = _old_version(header, model_key)
    reasons: dict[str, int] = {}
    kept = []
    for r in rows:
        reason = old_version or _stale_reason(r, expected, model_key, UNLISTED)
        if reason is None and r["error"]:
            reason = "error, run again"
        elif reason in _ERROR_ROW and r["error"]:  # no result of another listing, file or model: nothing is lost
            reason = _ERROR_ROW[reason]
        if reason is None:
            kept.append(r)
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    unique = dedupe_predictions(kept)
    if len(kept) > len(unique):
        reasons["duplicate row"] = len(kept) - len(unique)
    if num_cut:
        reasons["partial row of an interrupted run"] = num_cut
    if old_version:  # even without rows: the writer needs the current header
        reasons.setdefault(old_version, 0)
    if reasons:
        json_path = path.with_suffix(".json")
        if unique:
            write_predictions_csv(path, header, unique)
            write_predictions_json(path, json_path)
        else:  # nothing kept: an empty file gets the current header from PredictionWriter
            open_in_place(path, "w", "predictions file").close()
            json_path.unlink(missing_ok=True)
        text = (f"'{path}': kept {len(unique)} predictions, dropped "
                + ", ".join(f"{n} ({why})" for why, n in sorted(reasons.items())) + ".")
        # rows of other studies (another --input, or another study under the same id) are results a user may still
        # want: said as a warning, with how to keep them; a retry of errors or a cut row is routine
        replaced, changed = reasons.get(UNLISTED, 0) + reasons.get(MOVED, 0), reasons.get(CHANGED, 0)
        # a study whose file changed since (size or modification time) is predicted again, rightly: said, without the
        # advice for another input's rows
        again = (f" {changed} stud(y/ies) changed since their prediction (a file's size or modification time; a "
                 "dataset item's data options) and are predicted again." if changed else "")
        if replaced:
            logger.warning(text + f" This run replaces the predictions of {replaced} earlier stud(y/ies) of another "
                           "listing in that file; to keep an earlier run's, give each input its own --output_dir."
                           + again)
        elif reasons.get(OTHER_MODEL):  # another model's results, gone from the file: said (it was an INFO line)
            logger.warning(text + f" This run replaces {reasons[OTHER_MODEL]} prediction(s) of another model or "
                           "setting in that file; to keep them, give this run its own --output_dir." + again)
        elif changed:
            logger.warning(text + again)
        else:
            logger.info(text)
    elif unique:  # the JSON follows the CSV: a run killed before its end (or a missing JSON) left it behind
        write_predictions_json(path, path.with_suffix(".json"))
    return {r["id"] for r in unique}


def select_studies(
    items: Sequence[dict],
    shard_index: int = 0,
    shard_count: int = 1,
    done_csv: str | os.PathLike | None = None,
    skip_done: bool = True,
    model_key: str | None = None,
) -> list[dict]:
    """
    This worker's share of ``items`` (:func:`shard_of` each study's id is ``shard_index``: every worker agrees, and a
    study stays in its shard when others are added to or removed from the listing, so no shard's finished work moves
    to another), minus the studies already predicted in ``done_csv``.

    Args:
        items: from :func:`monai_das.data.list_studies`.
        shard_index, shard_count: this worker and the number of workers.
        done_csv: this worker's predictions CSV (``None``: run everything, touch no file).
        skip_done: resume: keep the rows of ``done_csv`` that still hold (complete, error-free, same id, source and
            fingerprint; see :func:`resume_predictions`, which rewrites the file without the others) and run only
            the other studies. ``False``: start afresh: ``done_csv`` and its JSON are emptied, every study runs.
        model_key: :func:`prediction_key` of this run; rows written with another are predicted again.
    """
    _check_shard(shard_index, shard_count)
    mine = sorted((it for it in items if shard_of(str(it["id"]), shard_count) == int(shard_index)),
                  key=lambda it: it["id"])
    done: set[str] = set()
    if optional(done_csv) is not None:
        path = Path(done_csv)
        if int(shard_count) > 1 and not path.name.endswith(f"{_shard_suffix(shard_index, shard_count)}.csv"):
            raise ValueError(f"predictions file '{path}' is not named for shard {shard_index} of {shard_count} "
                             f"(*.shard{shard_index}of{shard_count}.csv): the shards would write one file; leave "
                             "predictions_csv at its default or name each shard's file so.")
        hold_predictions(path)  # before the file is read, rewritten or emptied: one run per file
        if not mine and not path.is_file():  # an empty file says the shard ran and had nothing (merge skips it)
            path.parent.mkdir(parents=True, exist_ok=True)
            open_in_place(path, "w", "predictions file").close()
        if flag(skip_done):
            done = resume_predictions(path, mine, model_key)
        elif path.is_file() and path.stat().st_size > 0:
            from monai_das.handlers.predictions import read_predictions_csv

            header = read_predictions_csv(path)[0]
            if header:
                _check_predictions_header(path, header)  # never empty a file that is not ours
            open_in_place(path, "w", "predictions file").close()  # truncate: rows are not appended to an old run's
            path.with_suffix(".json").unlink(missing_ok=True)
            logger.info(f"'{path}': skip_done is false, previous predictions removed.")
    todo = [it for it in mine if it["id"] not in done]
    logger.info(f"shard {shard_index}/{shard_count}: {len(mine)} studies, {len(mine) - len(todo)} already done, "
                f"{len(todo)} to run.")
    return todo


class StudyDataset(torch.utils.data.Dataset):
    """
    One study per item, loaded lazily (memory bounded by the data loader's batch and prefetch), as
    ``{"id", "source", "fingerprint", "image", "label", "error", "source_indices"}`` (``source``: the absolute
    path, or the dataset index; ``fingerprint``: from :func:`monai_das.data.list_studies`; ``source_indices``: the
    file's own slice/frame number of each of the ``num_frames`` input frames, from the loaded image's
    ``meta["source_indices"]`` (see :class:`monai_das.data.LoadStudy`); ``-1`` when not known, e.g. for dataset
    items). A study that cannot be read, is refused by the transform (e.g. a 2D image or a single frame) or gives the
    wrong shape becomes an error item: ``error`` holds the message and ``image`` zeros of ``image_shape``, so that
    the batch still goes through and the writer records the error for that study alone.

    Args:
        items: from :func:`monai_das.data.list_studies` / :func:`select_studies`.
        image_shape: expected input shape of one study (``C×D×H×W`` or ``T×C×H×W``).
        transform: ``{"image": study}`` → dict with ``"image"``, for file items; ``study`` is the item's
            :class:`monai_das.data.StudySource` (``os.PathLike``: path-based transforms accept it) or, for items
            without one, the ``image`` path. Typically :class:`monai_das.data.LoadStudyd` with the bundle's recipe.
        dataset: source of ``{"index": i}`` items (already transformed).
        num_frames: ``T``, the length of ``source_indices`` (default ``image_shape[0]``, right for ``T×C×H×W``; give
            it for volumes).
    """

    def __init__(
        self,
        items: Sequence[dict],
        image_shape: Sequence[int],
        transform: Callable | None = None,
        dataset: Sequence | None = None,
        num_frames: int | None = None,
    ) -> None:
        self.items = list(items)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.transform = transform
        self.dataset = dataset
        self.num_frames = int(num_frames) if optional(num_frames) is not None else self.image_shape[0]

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, item: dict) -> dict:
        if "index" in item:
            if self.dataset is None:
                raise ValueError("dataset items need StudyDataset(dataset=...).")
            return dict(self.dataset[int(item["index"])])
        if not Path(item["image"]).exists():
            raise FileNotFoundError(f"study file '{item['image']}' does not exist.")
        if self.transform is None:
            return dict(item)
        study = item.get("study")
        return dict(self.transform({"image": study if study is not None else item["image"]}))

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        try:  # the listing's label, kept on an error row too (a merge compares it with the listing)
            listed = int(item.get("label", -1))
        except (TypeError, ValueError):
            listed = -1
        out = {"id": str(item["id"]), "source": _item_source(item), "fingerprint": str(item.get("fingerprint", "")),
               "label": listed, "error": "", "warnings": ""}
        out["source_indices"] = torch.full((self.num_frames,), -1, dtype=torch.long)
        try:
            d = self._load(item)
            image = d["image"]
            src = getattr(image, "meta", {}).get(SOURCE_INDICES)
            if src is not None and len(src) == self.num_frames:  # the file's own slice/frame numbers
                out["source_indices"] = torch.as_tensor(src, dtype=torch.long).reshape(-1).clone()
            image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
            image = image.float().contiguous()
            if tuple(image.shape) != self.image_shape:
                raise ValueError(f"study '{out['source']}' loads as shape {tuple(image.shape)}, "
                                 f"expected {self.image_shape}.")
            if not bool(torch.isfinite(image).all()):
                raise ValueError(f"study '{out['source']}' has NaN/Inf values.")
            label = d.get("label", item.get("label", -1))
            out.update(image=image, label=int(torch.as_tensor(label).reshape(-1)[0]) if label is not None else -1)
            # what the study layer said of it (another modality, a gap in a series, a nearly blank volume, ...): in
            # the row, as the Deploy report has them (the log alone left a confident prediction without them)
            study = next((v for v in d.values() if isinstance(getattr(v, "info", None), dict)), None)
            said = list(dict.fromkeys(study.info.get("warnings") or [])) if study is not None else []
            out["warnings"] = " | ".join(str(w).replace("\n", " ") for w in said)
        except Exception as e:  # one bad study must not stop the others
            # MONAI wraps a transform's error ("applying transform ..."): report the first error under it (this
            # package's, which names the file at fault, e.g. one slice of a series), and the reader's at the root
            first, root = first_cause(e), root_cause(e)
            msg = f"{type(first).__name__}: {first}"
            if root is not first and str(root) not in str(first):
                msg += f" (from {type(root).__name__}: {root})"
            msg = msg.replace("\n", " ")
            if out["source"] not in msg:
                msg = f"cannot read '{out['source']}': {msg}"
            logger.warning(f"study {out['id']!r}: {msg}")
            out.update(image=torch.zeros(self.image_shape), error=msg[:500])
        out["label"] = torch.tensor(out["label"], dtype=torch.long)
        return out


def merge_predictions(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    studies: Sequence[dict] | None = None,
    model_key: str | None = None,
) -> str:
    """
    Concatenate shard CSVs (same columns) into ``output`` (written atomically), sorted by id, one row per id (the
    last one wins); partial rows left by a kill and empty files (a shard with nothing to do) are skipped.

    Refused, naming the files: shard files (``*.shard<i>of<n>.csv``) that are not all ``n`` shards of one split (a
    shard left out would silently drop its studies from the merged file), and rows written by different models or
    inference settings (their ``model`` column, :func:`prediction_key`: shards run with another checkpoint or ``k``).

    Given the listing the shards ran on (``studies``, from :func:`monai_das.data.list_studies`), the merge also
    proves the result whole: every listed study has a row (a shard killed before it finished, even one killed after
    writing only its header, is named with the studies it still owes), and every row still holds for the listing
    (same ``source``, ``fingerprint`` and ``label``; no row of a study that is no longer listed; with ``model_key``
    the row's ``model`` is this run's). Error rows count as results: the ``error`` column says why. Refused otherwise,
    naming each shard file and what it lacks; running that shard again resumes it and fixes exactly that.
    """
    from monai_das.handlers.predictions import (
        dedupe_predictions, read_predictions_csv, upgrade_rows, write_predictions_csv
    )

    if Path(output).resolve() in {Path(p).resolve() for p in paths} and len(paths) > 1:
        raise ValueError(f"the merged file '{output}' would overwrite one of the files it merges.")
    shards = [_SHARD_NAME.fullmatch(Path(p).name) for p in paths]
    if any(shards):
        counts = {int(m.group(2)) for m in shards if m}
        have = sorted(int(m.group(1)) for m in shards if m)
        if not all(shards) or len(counts) != 1 or have != list(range(next(iter(counts)))):
            raise ValueError(
                f"cannot merge {[Path(p).name for p in paths]}: shard files must be all shards 0..n-1 of one split "
                f"(got shards {have} of {sorted(counts)}); a shard left out would drop its studies.")
    by_index = {int(m.group(1)): p for m, p in zip(shards, paths)} if shards and all(shards) else {}
    expected = None if studies is None else _expected_rows(studies)
    rows: list[dict] = []
    fields: list[str] | None = None
    models: dict[str, str] = {}
    stale: dict[str, dict[str, int]] = {}
    for p in paths:
        header, part, _ = read_predictions_csv(p)
        if not header:
            if not Path(p).is_file() and expected is None:
                raise FileNotFoundError(f"prediction file '{p}' does not exist (a shard not run yet?).")
            continue  # with the listing, a shard file not written yet owes its studies: named below
        if fields is None:
            fields = header
        elif header != fields:  # a shard finished by an older version beside one of this version: one layout
            newer = upgrade_rows(header, part, fields)
            older = None if newer is not None else upgrade_rows(fields, rows, header)
            if newer is None and older is None:
                raise ValueError(f"'{p}' has columns {header}, expected {fields}.")
            part, rows, fields = (newer, rows, fields) if newer is not None else (part, older, header)
            header = fields
        if "id" not in header:
            raise ValueError(f"'{p}' is not a predictions file (no 'id' column, columns {header}).")
        part = dedupe_predictions(part)
        old_version = _old_version(header, model_key)
        for r in part:
            if r.get("model"):
                models.setdefault(r["model"], str(p))
            if expected is not None:
                reason = old_version or _stale_reason(r, expected, model_key)
                if reason is not None:
                    stale.setdefault(str(p), {}).setdefault(reason, 0)
                    stale[str(p)][reason] += 1
        rows.extend(part)
    if len(models) > 1:
        raise ValueError("the predictions to merge come from different models or inference settings (model column): "
                         + ", ".join(f"{k} in '{v}'" for k, v in models.items())
                         + "; rerun the shards with one checkpoint and one k.")
    if expected is not None:
        problems = [f"'{p}': " + ", ".join(f"{n} row(s) {why}" for why, n in sorted(r.items())) for p, r in stale.items()]
        have_ids = {r["id"] for r in rows}
        owed: dict[str, list[str]] = {}
        for i in sorted(set(expected) - have_ids):
            owner = (str(by_index[shard_of(i, len(paths))]) if by_index
                     else ", ".join(map(str, paths)))  # files not named by shard: any of them
            owed.setdefault(owner, []).append(i)
        problems += [f"'{p}': no row for {len(ids)} listed stud{'y' if len(ids) == 1 else 'ies'} "
                     f"({', '.join(repr(i) for i in ids[:3])}{', ...' if len(ids) > 3 else ''}: not run yet, or "
                     "the shard was killed)"
                     for p, ids in owed.items()]
        if problems:
            raise ValueError(f"cannot merge into '{output}': the predictions are not those of this listing "
                             f"({len(expected)} studies): " + "; ".join(problems)
                             + ". First check that the merge got the inference command's exact options (input, "
                               "keep ratio or num_kept, engine, method, checkpoint, preprocessing): the listing and "
                               "the model key are computed from them. If it did, run inference again for those "
                               "shards (it resumes: only what is missing or stale runs), then merge.")
    if fields is None:
        raise ValueError("no prediction files to merge.")
    merged = dedupe_predictions(rows)
    logger.info(f"merged {len(paths)} file(s) into '{output}': {len(merged)} studies, "
                f"{sum(bool(r.get('error')) for r in merged)} with an error.")
    return write_predictions_csv(output, fields, merged)


def merge_shards(
    predictions_csv: str | os.PathLike,
    shard_count: int,
    studies: Sequence[dict] | None = None,
    model_key: str | None = None,
    output: str | os.PathLike | None = None,
) -> str:
    """
    Merge the ``shard_count`` shard files of a sharded batch inference into one predictions CSV (and its JSON), as
    the bundles' ``merge`` entry does (``python -m monai.bundle run merge --config_file inference.json
    --shard_count <n> ...``, with the inference command's own options): :func:`merge_predictions` of
    ``predictions.shard0of<n>.csv`` ... (named from ``predictions_csv``, any shard's name) checked against the
    listing ``studies`` and the run's ``model_key``.

    Args:
        predictions_csv: one shard's file name (``*.shard<i>of<n>.csv``; with one shard, the predictions file).
        shard_count: ``n``.
        studies, model_key: see :func:`merge_predictions`.
        output: default ``predictions_csv`` without its ``.shard<i>of<n>`` part.

    Returns:
        the merged CSV's path.
    """
    from monai_das.handlers.predictions import write_predictions_json

    path = Path(predictions_csv)
    n = int(shard_count)
    _check_shard(0, n)
    suffix = next((_shard_suffix(i, n) for i in range(n) if path.name.endswith(f"{_shard_suffix(i, n)}.csv")), None)
    if suffix is None:
        raise ValueError(f"'{path}' is not named for one of {n} shards (*.shard<i>of{n}.csv).")
    stem = path.name[: len(path.name) - len(suffix) - len(".csv")]
    paths = [path.with_name(f"{stem}{_shard_suffix(i, n)}.csv") for i in range(n)]
    out = Path(output) if optional(output) is not None else path.with_name(f"{stem}.csv")
    merged = merge_predictions(paths, out, studies=studies, model_key=model_key)
    write_predictions_json(merged)
    return merged
