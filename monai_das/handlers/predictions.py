"""Streaming writer of per-study predictions (CSV, one row per study, flushed every iteration; JSON at the end)."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["PredictionWriter"]


def _s(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    return str(v)


class PredictionWriter:
    """
    Appends one CSV row per study as soon as its batch is done, so a killed run loses at most the batch in flight
    and can resume (see :func:`monai_das.engines.inference.select_studies`). Columns: ``id``, ``source``, ``label``
    (``-1`` when unknown), ``pred_label``, ``pred_name``, ``prob_<class>`` per class, ``kept_indices`` (the frames
    the sampler kept, indices into the network input, ``;``-separated), ``source_frames`` (for clips: the same frames
    numbered as in the file, from the batch item's ``source_indices``; empty otherwise), ``error`` (empty on
    success; for an unreadable study the prediction columns are empty). At the end the whole CSV is also written as
    JSON (``json_path``, a list of rows with numbers parsed).

    ``id``, ``source``, ``error`` and ``source_indices`` are read from the (decollated) batch items
    (``engine.state.batch``), the probabilities, label and kept indices from the output items.

    Args:
        filepath: the CSV file; appended to when it exists (a header is written only for a new file).
        label_names: class names (their count sets the number of probability columns).
        prob_key: output key of the class probabilities (after ``Activationsd(softmax=True)``).
        indices_key: output key of the kept indices (see :class:`SampledIndicesHandler`).
        json_path: JSON file written on completion (default: the CSV path with ``.json``); ``""`` to skip.
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        label_names: Sequence[str],
        prob_key: str = "pred",
        indices_key: str = "indices",
        json_path: str | os.PathLike | None = None,
    ) -> None:
        self.filepath = Path(filepath)
        self.label_names = [str(x) for x in label_names]
        self.prob_key, self.indices_key = prob_key, indices_key
        if json_path is None:
            json_path = self.filepath.with_suffix(".json")
        self.json_path = Path(json_path) if json_path else None
        self.fields = ["id", "source", "label", "pred_label", "pred_name"]
        self.fields += [f"prob_{n}" for n in self.label_names] + ["kept_indices", "source_frames", "error"]
        self.logger = logging.getLogger(__name__)
        self.num_written = 0
        self.num_errors = 0

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _open(self, engine: Any = None) -> None:
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        if self.filepath.is_file() and self.filepath.stat().st_size > 0:
            with open(self.filepath, newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.fields:
                raise ValueError(
                    f"'{self.filepath}' has columns {header}, expected {self.fields}: it was written by another "
                    "model/config; choose another output file."
                )
            with open(self.filepath, "rb+") as f:  # a kill mid-row leaves no newline: close that row
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        else:
            with open(self.filepath, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def _row(self, item: dict) -> list[str]:
        row = {"id": _s(item.get("id", "")), "source": _s(item.get("source", "")), "label": _s(item.get("label", -1))}
        error = _s(item.get("error", "") or "")
        if error:
            row["error"] = error.replace("\n", " ")
        else:
            probs = torch.as_tensor(item[self.prob_key]).float().reshape(-1)
            if probs.numel() != len(self.label_names):
                raise ValueError(f"{probs.numel()} probabilities for {len(self.label_names)} classes.")
            pred = int(probs.argmax())
            row.update(pred_label=str(pred), pred_name=self.label_names[pred])
            row.update({f"prob_{n}": f"{float(p):.6f}" for n, p in zip(self.label_names, probs)})
            if self.indices_key in item:
                kept = torch.as_tensor(item[self.indices_key]).long().reshape(-1)
                row["kept_indices"] = ";".join(str(int(i)) for i in kept)
                src = item.get("source_indices")
                if src is not None:
                    src = torch.as_tensor(src).long().reshape(-1)
                    if bool((src >= 0).all()) and int(kept.max()) < len(src):
                        row["source_frames"] = ";".join(str(int(i)) for i in src[kept])
        return [row.get(k, "") for k in self.fields]

    def __call__(self, engine: Any) -> None:
        items = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch] * len(items)
        if len(batch) != len(items):
            raise RuntimeError(f"{len(batch)} batch items for {len(items)} outputs: use decollate=True.")
        meta_keys = ("id", "source", "error", "source_indices")
        rows = [self._row({**{k: b[k] for k in meta_keys if k in b}, **it}) for b, it in zip(batch, items)]
        with open(self.filepath, "a", newline="") as f:
            csv.writer(f).writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        self.num_written += len(rows)
        self.num_errors += sum(1 for r in rows if r[-1])

    def _complete(self, engine: Any = None) -> None:
        if self.json_path is not None:
            from monai_das.handlers.report import write_json_atomic

            with open(self.filepath, newline="") as f:
                rows = [r for r in csv.DictReader(f) if None not in r and None not in r.values()]
            for r in rows:
                r["label"] = int(r["label"]) if r["label"] not in ("", None) else -1
                r["pred_label"] = int(r["pred_label"]) if r["pred_label"] else None
                for key in ("kept_indices", "source_frames"):
                    r[key] = [int(i) for i in r[key].split(";")] if r[key] else []
                for n in self.label_names:
                    r[f"prob_{n}"] = float(r[f"prob_{n}"]) if r[f"prob_{n}"] else None
            write_json_atomic(rows, self.json_path)
        msg = (f"predictions: {self.num_written} studies written to {self.filepath} "
               f"({self.num_errors} unreadable)")
        self.logger.info(msg)
        print(msg, flush=True)
