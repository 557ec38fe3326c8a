"""
Streaming writer of per-study predictions (CSV, one row per study, flushed every iteration; JSON at the end), and the
helpers that read such a CSV back safely after a kill (partial last row, duplicate ids) and rewrite it atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.data.studies import kept_source_indices, repeated_source_warning
from monai_das.handlers.utils import attach_once, gather_items, rank_world
from monai_das.utils.io import atomic_file, open_in_place, refuse_link, write_failure, write_json_atomic
from monai_das.utils.logs import bounded_repr

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "PredictionWriter",
    "read_predictions_csv",
    "write_predictions_csv",
    "csv_cell",
    "csv_value",
    "write_predictions_json",
    "dedupe_predictions",
    "label_name",
    "upgrade_rows",
]

logger = logging.getLogger(__name__)


def _s(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    return str(v)


#: columns a predictions CSV gained in later versions, and what the rows of a file without them get when a run
#: resumes it (an empty warnings cell would read as "nothing to say"; ``None``: computed from the row,
#: ``label_name`` from ``label``)
ADDED_COLUMNS = {"label_name": None,
                 "warnings": "not recorded: predicted by an older version (skip_done false predicts it again)"}

#: first characters that make a spreadsheet take a cell for a formula (OWASP "CSV injection"): ``=``, ``+``, ``-``,
#: ``@``, a tab or a carriage return
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def label_name(label: Any, names: Sequence[str]) -> str:
    """The class name of a ``label`` cell (``""`` when unknown: ``-1``, empty, or no class of ``names``)."""
    try:
        index = int(label)
    except (TypeError, ValueError):
        return ""
    return str(names[index]) if 0 <= index < len(names) else ""


def upgrade_rows(header: Sequence[str], rows: Iterable[dict], fields: Sequence[str]) -> list[dict] | None:
    """
    The ``rows`` of a predictions CSV written by an older version (``header``: ``fields`` without some of the
    :data:`ADDED_COLUMNS`, in the same order) in the columns ``fields``, the added cells filled (``label_name`` from
    ``label`` and the ``prob_<class>`` columns' class order); ``None`` when ``header`` is not such a layout.
    """
    added = [c for c in fields if c not in header]
    if not added or not set(added) <= set(ADDED_COLUMNS) or [c for c in fields if c in header] != list(header):
        return None
    names = [c[len("prob_"):] for c in fields if c.startswith("prob_")]
    return [{k: r[k] if k in r else label_name(r.get("label"), names) if k == "label_name"
             else ADDED_COLUMNS.get(k) or "" for k in fields} for r in rows]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(text: str) -> str:
    """
    ``text`` as a cell of a predictions CSV. Study ids, file names, class names and error messages come from outside
    (a file named ``=HYPERLINK(...).nii.gz``): a text a spreadsheet would run as a formula (starting with one of
    :data:`FORMULA_START`; numbers such as ``-1`` excepted) is written with a leading ``'``, and so is a text that
    starts with ``'`` itself, so that :func:`csv_value` gives back exactly the original text.
    """
    if text and (text[0] == "'" or (text[0] in FORMULA_START and not _is_number(text))):
        return "'" + text
    return text


def csv_value(cell: str) -> str:
    """The text of a predictions CSV cell written by :func:`csv_cell` (its leading ``'``, if any, removed)."""
    return cell[1:] if cell.startswith("'") else cell


def read_predictions_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]], int]:
    """
    Read a predictions CSV written by :class:`PredictionWriter`, ignoring what a kill may have left behind.

    A row is written with its line end in one ``write`` and the file is fsynced per batch, so text after the last
    line end is a row cut short by a kill: it is dropped, even when the cut happened to leave the right number of
    fields (e.g. inside the last column). Rows whose number of fields differs from the header's are dropped too.

    Args:
        path: the CSV file (missing or empty: no header, no rows).

    Returns:
        ``(header, rows, num_dropped)``: the header fields, the complete rows as dicts (in file order, duplicates
        kept; cell texts as :func:`csv_value` gives them back) and how many rows or row fragments were dropped.

    Raises:
        ValueError: the file is not UTF-8 text.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return [], [], 0
    raw = path.read_bytes()
    dropped = 0
    if not raw.endswith(b"\n"):  # a partial last row (killed mid-write): drop it
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut >= 0 else b""
        dropped += 1
    try:
        text = raw.decode("utf-8-sig")  # a file saved again by a spreadsheet starts with a BOM
    except UnicodeDecodeError as e:
        raise ValueError(f"predictions file '{path}' is not UTF-8 text (byte {e.start}); move it away.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    rows = []
    for values in reader:
        if len(values) != len(header):
            dropped += 1
            continue
        rows.append(dict(zip(header, map(csv_value, values))))
    return header, rows, dropped


def _truncate_partial_row(path: Path) -> int:
    """Cut the bytes after the last line end off ``path`` (a row cut short by a kill); returns how many."""
    with open_in_place(path, "rb+", "predictions file") as f:
        size = f.seek(0, os.SEEK_END)
        start = size
        while start > 0:  # look backwards for the last line end, 64 KiB at a time
            start = max(0, start - (1 << 16))
            f.seek(start)
            chunk = f.read(size - start)
            if chunk.endswith(b"\n"):
                return 0
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return size - (start + cut + 1)
        f.truncate(0)
        return size


def write_predictions_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[dict]) -> str:
    """
    Write ``header`` and ``rows`` (texts as :func:`read_predictions_csv` returns them) to ``path`` atomically
    (:func:`monai_das.utils.io.atomic_file`), fsynced; cells through :func:`csv_cell`.
    """
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(header))
        writer.writeheader()
        writer.writerows({k: csv_cell("" if v is None else str(v)) for k, v in r.items()} for r in rows)
        f.flush()
        os.fsync(f.fileno())
    return str(path)


def dedupe_predictions(rows: Iterable[dict], id_column: str = "id") -> list[dict]:
    """One row per id (the last one wins: a re-run replaces an older row), sorted by id."""
    by_id = {r[id_column]: r for r in rows}
    return [by_id[k] for k in sorted(by_id)]


def _json_rows(header: Sequence[str], rows: Iterable[dict]) -> list[dict]:
    prob_columns = [c for c in header if c.startswith("prob_")]
    out = []
    for src in rows:
        r: dict[str, Any] = dict(src)
        if "label" in r:
            r["label"] = int(r["label"]) if r["label"] not in ("", None) else -1
        if "pred_label" in r:
            r["pred_label"] = int(r["pred_label"]) if r["pred_label"] else None
        for key in ("kept_indices", "source_frames"):
            if key in r:  # a source frame may be "padding" (kept_source_indices): kept as that text
                r[key] = [int(i) if i.lstrip("-").isdigit() else i for i in r[key].split(";")] if r[key] else []
        for c in prob_columns:
            r[c] = float(r[c]) if r[c] else None
        out.append(r)
    return out


def write_predictions_json(csv_path: str | os.PathLike, json_path: str | os.PathLike | None = None) -> str:
    """
    Write the complete rows of a predictions CSV as JSON (a list of rows, numbers parsed, one row per id), atomically.

    Args:
        csv_path: the predictions CSV.
        json_path: output (default: ``csv_path`` with ``.json``).
    """
    json_path = Path(csv_path).with_suffix(".json") if json_path is None else Path(json_path)
    header, rows, _ = read_predictions_csv(csv_path)
    return write_json_atomic(_json_rows(header, dedupe_predictions(rows) if "id" in header else rows), json_path)


class PredictionWriter:
    """
    Appends one CSV row per study as soon as its batch is done, so a killed run loses at most the batch in flight
    and can resume (see :func:`monai_das.engines.select_studies`). Columns: ``id`` (the study id of
    :func:`monai_das.data.discover_studies`, the same as the Deploy report's ``study_id``), ``source`` (absolute
    path of the study, or the dataset index), ``fingerprint`` (what identifies the study's content: size and
    modification time of its file(s), or ``<dataset>/<split>/<index>``; see :func:`monai_das.data.study_fingerprint`),
    ``label`` (``-1`` when unknown), ``label_name`` (its class name, empty when unknown, as the evaluation's CSV),
    ``pred_label``, ``pred_name``, ``prob_<class>`` per class, ``kept_indices``
    (the frames the sampler kept, indices into the network input, ``;``-separated), ``source_frames`` (the same
    frames as the file's own slice/frame numbers — slice index along the file's axis, for a DICOM series in
    ``InstanceNumber`` order, or clip frame — from the batch item's ``source_indices`` through
    :func:`monai_das.data.kept_source_indices`, as the Deploy report's ``kept_source_indices``; ``padding`` for a
    kept frame that is padding of ``resize="pad"``; empty when unknown),
    ``error`` (empty on success; for an unreadable study the prediction columns are empty), ``warnings`` (what the
    study layer said of the study, `` | ``-separated: another modality than the training's, a gap in a series, a
    nearly blank volume, kept frames that repeat one of the file, ...; as the Deploy report's ``warnings``),
    ``model`` (``model_key``:
    what the prediction depends on besides the study — checkpoint and inference settings, see
    :func:`monai_das.engines.prediction_key` — so that a resume never keeps a row of another model or ``k``).

    On start, a partial last row left by a kill is cut off the file. On completion the CSV is rewritten atomically
    with exactly one row per id (the last one written wins), sorted by id, and also written as JSON (``json_path``,
    a list of rows with numbers parsed).

    ``id``, ``source``, ``fingerprint``, ``error`` and ``source_indices`` are read from the (decollated) batch items
    (``engine.state.batch``), the probabilities, label and kept indices from the output items. An item without an
    ``id`` (a plain MONAI pipeline's) is named by its image's ``filename_or_obj`` (id and source); one without either
    is refused (rows without an id would replace each other).

    Distributed runs (``torch.distributed`` initialised, several processes): attach the writer on every rank; the
    rows of each iteration are gathered to rank 0, which alone writes the files and logs.

    Args:
        filepath: the CSV file; appended to when it exists (a header is written only for a new file). Starting
            afresh or dropping stale rows is the job of :func:`~monai_das.engines.select_studies`.
        label_names: class names (their count sets the number of probability columns).
        prob_key: output key of the class probabilities (after ``Activationsd(softmax=True)``).
        indices_key: output key of the kept indices (see :class:`SampledIndicesHandler`).
        json_path: JSON file written on completion (default: the CSV path with ``.json``); ``""`` to skip.
        model_key: written in every row's ``model`` column (:func:`monai_das.engines.prediction_key`).
    """

    META_KEYS = ("id", "source", "fingerprint", "error", "warnings", "source_indices")

    def __init__(
        self,
        filepath: str | os.PathLike,
        label_names: Sequence[str],
        prob_key: str = "pred",
        indices_key: str = "indices",
        json_path: str | os.PathLike | None = None,
        model_key: str = "",
    ) -> None:
        self.filepath = Path(filepath)
        self.model_key = str(model_key)
        self.label_names = [str(x) for x in label_names]
        self.prob_key, self.indices_key = prob_key, indices_key
        if json_path is None:
            json_path = self.filepath.with_suffix(".json")
        self.json_path = Path(json_path) if json_path else None
        self.fields = ["id", "source", "fingerprint", "label", "label_name", "pred_label", "pred_name"]
        self.fields += [f"prob_{n}" for n in self.label_names] + ["kept_indices", "source_frames", "error", "warnings",
                                                                 "model"]
        self.logger = logger
        self.num_written = 0
        self.num_errors = 0

    def attach(self, engine: Any) -> None:
        attach_once(engine, Events.STARTED, self._open)
        attach_once(engine, Events.ITERATION_COMPLETED, self)
        attach_once(engine, Events.COMPLETED, self._complete)

    def _open(self, engine: Any = None) -> None:
        self.num_written = self.num_errors = 0
        if rank_world()[0] != 0:
            return
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        refuse_link(self.filepath, "predictions file")  # read and rewritten in place: never through a link (T69b)
        if self.filepath.is_file() and self.filepath.stat().st_size > 0:
            with open(self.filepath, newline="", encoding="utf-8-sig", errors="replace") as f:
                header = next(csv.reader(f), [])
            # written before the columns added since (warnings, label_name): the same rows, the new cells filled
            upgraded = upgrade_rows(header, read_predictions_csv(self.filepath)[1], self.fields) \
                if header != self.fields else None
            if upgraded is not None:
                write_predictions_csv(self.filepath, self.fields, upgraded)
                self.logger.info(f"'{self.filepath}': columns {[c for c in self.fields if c not in header]} added to "
                                 f"its {len(upgraded)} rows.")
                header = self.fields
            if header != self.fields:
                raise ValueError(
                    f"'{self.filepath}' has columns {header}, expected {self.fields}: it was written by another "
                    "model/config (or an older version); choose another output file or start afresh "
                    "(skip_done false)."
                )
            cut = _truncate_partial_row(self.filepath)
            if cut:
                self.logger.warning(f"'{self.filepath}': dropped a partial last row ({cut} bytes) left by an "
                                    "interrupted run.")
        if not self.filepath.is_file() or self.filepath.stat().st_size == 0:
            with open_in_place(self.filepath, "w", "predictions file", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self.fields)

    def _row(self, item: dict) -> list[str]:
        row = {
            "id": _s(item.get("id", "")),
            "source": _s(item.get("source", "")),
            "fingerprint": _s(item.get("fingerprint", "")),
            "label": _s(item.get("label", -1)),
            "model": self.model_key,
        }
        row["label_name"] = label_name(row["label"], self.label_names)
        said = [w for w in _s(item.get("warnings", "") or "").replace("\r", " ").replace("\n", " ").split(" | ") if w]
        error = _s(item.get("error", "") or "")
        probs = None
        if not error:
            probs = torch.as_tensor(item[self.prob_key]).float().reshape(-1)
            if probs.numel() != len(self.label_names):
                raise ValueError(f"study {row['id']!r}: {probs.numel()} probabilities for {len(self.label_names)} "
                                 f"classes {bounded_repr(self.label_names)}.")
            if not bool(torch.isfinite(probs).all()):  # a damaged model: never a label argmax'd out of NaN
                error = (f"the model gave non-finite probabilities {probs.tolist()} for study '{row['source']}' "
                         "(a damaged or diverged checkpoint?)")
        if error:
            row["error"] = error.replace("\r", " ").replace("\n", " ")
        else:
            pred = int(probs.argmax())
            row.update(pred_label=str(pred), pred_name=self.label_names[pred])
            row.update({f"prob_{n}": f"{float(p):.6f}" for n, p in zip(self.label_names, probs)})
            if self.indices_key in item:
                kept = torch.as_tensor(item[self.indices_key]).long().reshape(-1)
                row["kept_indices"] = ";".join(str(int(i)) for i in kept)
                frames = kept_source_indices(kept, item.get("source_indices"))
                if frames is not None:
                    row["source_frames"] = ";".join(str(i) for i in frames)
                    t = torch.as_tensor(item["source_indices"]).numel()
                    warning = repeated_source_warning(f"{row['id']!r} ({row['source']})", frames, t)
                    if warning:
                        self.logger.warning(warning)
                        said.append(warning)
        row["warnings"] = " | ".join(said)
        return [csv_cell(row.get(k, "")) for k in self.fields]

    def _meta(self, item: Mapping, engine: Any) -> dict:
        """The :data:`META_KEYS` of a batch item; an item without an ``id`` (a plain MONAI dataset's) is named by its
        image's ``filename_or_obj`` (the file its reader loaded), else refused: the file keeps one row per id, and
        the rows of items without one were all one row (8 predictions written, 1 kept)."""
        meta = {k: item[k] for k in self.META_KEYS if k in item}
        if _s(meta.get("id", "")).strip():
            return meta
        image = item.get("image") if isinstance(item, Mapping) else None
        name = getattr(image, "meta", {}).get("filename_or_obj") if image is not None else None
        if isinstance(name, (list, tuple)):  # a collated meta value
            name = name[0] if len(name) == 1 else None
        if not isinstance(name, (str, os.PathLike)) or not str(name):
            raise ValueError(
                f"PredictionWriter: a batch item of iteration {engine.state.iteration} has no 'id' (nor an image "
                "whose meta names its file): the predictions file keeps one row per id, so items without one would "
                "replace each other. Give every item an 'id' (monai_das.data.list_studies does), or keep the image's "
                "meta data up to the network (LoadImaged names the file in it; EnsureTyped(track_meta=False) drops "
                "it).")
        return {**meta, "id": str(name), "source": meta.get("source") or str(name)}

    def __call__(self, engine: Any) -> None:
        items = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch] * len(items)
        if len(batch) != len(items):
            raise RuntimeError(f"{len(batch)} batch items for {len(items)} outputs: use decollate=True.")
        rows = [self._row({**self._meta(b, engine), **it}) for b, it in zip(batch, items)]
        rows = gather_items(rows)  # every rank takes part in the gather; rank 0 writes every rank's rows
        if rank_world()[0] != 0:
            return
        try:
            with open_in_place(self.filepath, "a", "predictions file", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)  # one row per write: a kill leaves at most a partial last row
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk said "[Errno 27] File too large" alone (trial T70a)
            raise write_failure(e, f"could not append to the predictions file '{self.filepath}'",
                                "the rows written before are kept (a partial last row is dropped when the run is "
                                "resumed)") from e
        self.num_written += len(rows)
        self.num_errors += sum(1 for r in rows if r[self.fields.index("error")])

    def _complete(self, engine: Any = None) -> None:
        if rank_world()[0] != 0:
            return
        header, rows, _ = read_predictions_csv(self.filepath)
        unique = dedupe_predictions(rows)
        write_predictions_csv(self.filepath, header, unique)  # exactly one row per id, sorted
        if self.json_path is not None:
            write_json_atomic(_json_rows(header, unique), self.json_path)
        total_errors = sum(1 for r in unique if r.get("error"))
        self.logger.info(
            f"predictions: {self.num_written} studies written to {self.filepath} ({self.num_errors} unreadable); "
            f"the file holds {len(unique)} studies ({total_errors} with errors)."
        )
