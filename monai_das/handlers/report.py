"""Evaluation report: metrics JSON, confusion matrix (JSON + PNG), logged summary."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.data.studies import kept_source_indices, repeated_source_warning
from monai_das.handlers.metrics import (
    MIN_ITEMS_PER_CLASS,
    balanced_accuracy_from_confusion,
    bootstrap_intervals,
    class_support,
    few_items_named,
    label_indices,
    per_class_metrics,
)
from monai_das.handlers.utils import attach_once, gather_items, rank_world
from monai_das.transforms.temporal import SOURCE_INDICES
from monai_das.utils.io import write_json_atomic

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

logger = logging.getLogger(__name__)

__all__ = ["ClassificationReportSaver", "write_json_atomic"]


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class ClassificationReportSaver:
    """
    At the end of an evaluation, writes ``<output_dir>/<prefix>metrics.json`` (the engine's scalar metrics with
    ``prefix`` stripped from their names, the number of samples, the confusion matrix, class names),
    ``<prefix>confusion_matrix.json``, ``<prefix>confusion_matrix.png`` and ``<prefix><predictions>`` (one row per
    evaluated item, from which every metric can be recomputed: ``index`` (position in the evaluated order), ``id``,
    ``label``, ``label_name``, ``pred_label``, ``pred_name``, ``prob_<class>`` per class, ``kept_indices``: the frames
    the sampler kept, ``;``-separated, when the output items carry them under ``indices_key``, see
    :class:`~monai_das.handlers.SampledIndicesHandler`; ``source_frames``: the same frames as the file's own
    slice/frame numbers, when the batch items carry ``source_indices`` (:class:`~monai_das.transforms.SourceIndicesd`;
    ``padding`` for a padding slice, empty when unknown), as bundle inference's ``predictions.csv`` names them),
    and logs a one-line summary
    (``evaluation on <n> samples: ...``, INFO, logger ``monai_das.handlers.report``; the bundles' ``logging.conf``
    sends it to stdout). ``metrics.json`` also holds ``intervals``: percentile-bootstrap 95 % intervals over the
    items of the macro AUC and the balanced accuracy (:func:`~monai_das.handlers.metrics.bootstrap_intervals`; a
    test list of a few dozen studies gives a wide one, which the point value alone hides), logged on a second line;
    none, with a warning, when a class has fewer than :data:`~monai_das.handlers.metrics.MIN_ITEMS_PER_CLASS` items.

    Each decollated output item is kept as (label ``label_key``, argmax of ``pred_key``, probabilities, id, kept
    indices); the confusion matrix and the intervals are both computed from them at the end. An item's ``id`` is its
    batch item's ``id`` when it has one, else ``item_ids[index]`` (the evaluated list's ids in loader order, e.g.
    :func:`monai_das.data.dataset_item_ids`: the ids bundle inference gives the same items), else empty.
    Distributed runs (``torch.distributed`` initialised, several processes): attach the saver on every rank; the
    items of all ranks are gathered (``all_gather_object``) and only rank 0 writes the files and logs (``index`` is
    then the position in the gathered order, and ``item_ids`` is not used).

    Args:
        output_dir: folder for the files.
        num_classes: number of classes.
        label_names: class names (default ``"0"``, ``"1"``, ...).
        metric_prefix: prefix of the engine metric names to strip in the report (e.g. ``"test_"``).
        file_prefix: prefix of the file names.
        pred_key: output key of the logits/probabilities.
        label_key: output key of the integer label.
        extra: constant entries added to the JSON (method, dataset, seed, ...).
        prob_key: output key of the class probabilities for the intervals (``pred`` is soft-maxed when an item
            has no such key).
        interval_resamples: bootstrap resamples of the intervals (0: no intervals).
        interval_seed: seed of the resampling.
        item_ids: ids of the evaluated items in the loader's order (unshuffled), for the ``id`` column of items
            without their own ``id``; a list of another length is not used (a warning says so).
        indices_key: output key of the kept frame indices, for the ``kept_indices`` column (empty without it).
        predictions: file name of the per-item CSV (``None`` or ``""``: not written); the bundles' evaluate.json
            writes ``<split>_predictions.csv`` (bundle inference writes its own ``predictions.csv`` beside it).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_classes: int,
        label_names: Sequence[str] | None = None,
        metric_prefix: str = "",
        file_prefix: str = "",
        pred_key: str = "pred",
        label_key: str = "label",
        extra: dict | None = None,
        prob_key: str = "prob",
        interval_resamples: int = 1000,
        interval_seed: int = 0,
        item_ids: Sequence[str] | None = None,
        indices_key: str = "kept_indices",
        predictions: str | None = "evaluated_predictions.csv",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.label_names = [str(x) for x in label_names] if label_names else [str(i) for i in range(num_classes)]
        self.metric_prefix = metric_prefix
        self.file_prefix = file_prefix
        self.pred_key, self.label_key = pred_key, label_key
        self.extra = dict(extra or {})
        self.logger = logger
        self.prob_key, self.interval_resamples, self.interval_seed = prob_key, int(interval_resamples), interval_seed
        self.item_ids = None if item_ids is None else [str(i) for i in item_ids]
        self.indices_key, self.predictions = indices_key, predictions or None
        # (label, predicted class, probabilities, id or None, kept indices or None) per item
        # (label, prediction, probabilities, id, kept indices, source frames, patient)
        self._items: list[tuple[int, int, list[float], str | None, list[int] | None, list[int | str] | None,
                                str | None]] = []
        self.report: dict = {}

    def attach(self, engine: Any) -> None:
        attach_once(engine, Events.STARTED, self._reset)
        attach_once(engine, Events.ITERATION_COMPLETED, self._update)
        attach_once(engine, Events.COMPLETED, self)

    def _reset(self, engine: Any) -> None:
        self._items = []

    def _update(self, engine: Any) -> None:
        items = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) and len(engine.state.batch) == len(items) \
            else [{}] * len(items)
        for item, data in zip(items, batch):
            pred = torch.as_tensor(item[self.pred_key]).reshape(-1)
            if item.get(self.label_key) is None:  # MONAI's evaluators put None there: "Could not infer dtype" (T63b)
                name = data.get("id") if isinstance(data, dict) else None
                raise ValueError(
                    f"{type(self).__name__}: an item{f' ({name!r})' if name else ''} has no label under label_key "
                    f"{self.label_key!r} (the engine output has {sorted(map(str, item))}): a report scores "
                    "predictions against labels. Give the items their labels (or label_key), or write unlabelled "
                    "predictions with monai_das.handlers.PredictionWriter."
                )
            label = int(label_indices([item[self.label_key]], self.num_classes)[0])
            if not 0 <= label < self.num_classes:
                raise ValueError(f"label {label} outside [0, {self.num_classes}).")
            prob = item.get(self.prob_key) if isinstance(item, dict) else None
            prob = torch.softmax(pred.float(), 0) if prob is None else torch.as_tensor(prob).reshape(-1)
            name = data.get("id") if isinstance(data, dict) else None
            kept = item.get(self.indices_key) if isinstance(item, dict) else None
            kept = None if kept is None else [int(i) for i in torch.as_tensor(kept).reshape(-1)]
            # the kept frames as the file's own slice/frame numbers (SourceIndicesd), as the inference's predictions
            frames = kept_source_indices(kept, data.get(SOURCE_INDICES) if isinstance(data, dict) else None)
            image = data.get("image") if isinstance(data, dict) else None
            image = (getattr(image, "meta", None) or {}).get("filename_or_obj") if image is not None else None
            if frames is not None:  # a short clip's k kept frames can be fewer of its own: said, as inference says it
                t = torch.as_tensor(data[SOURCE_INDICES]).numel()
                warning = repeated_source_warning(repr(self._study_name(name, image)), frames, t)
                if warning:
                    self.logger.warning(warning)
            group = data.get("group") if isinstance(data, dict) else None  # a datalist item's patient
            group = None if group is None else str(group)
            if group is not None and name is not None and os.path.isabs(group) and (
                    group == (os.path.abspath(str(image)) if image else None)
                    or Path(group).as_posix().endswith("/" + Path(str(name)).as_posix().lstrip("/"))):
                group = str(name)  # no patient given: the image itself, by its id, not its absolute path (T64a)
            self._items.append((label, int(pred.argmax()), prob.detach().float().cpu().tolist(),
                                None if name is None else str(name), kept, frames, group))

    def _study_name(self, name: Any, image: Any) -> str:
        """The item being collected, as its row of the predictions file names it (trial T69a: a warning said
        "study (no id)" of the item the file calls ``images/case001.nii.gz``): its id, else its ``item_ids`` entry
        (one process), else its image file."""
        if name is not None:
            return str(name)
        index = len(self._items)
        if self.item_ids is not None and index < len(self.item_ids) and rank_world()[1] == 1:
            return str(self.item_ids[index])
        return str(image) if image else f"item {index}"

    def _write_predictions(self, names: Sequence[str], world: int) -> None:
        """``<file_prefix><predictions>``: one row per item, in the evaluated order."""
        from monai_das.handlers.predictions import write_predictions_csv

        ids = self.item_ids if world == 1 else None
        if ids is not None and len(ids) != len(self._items):
            self.logger.warning(f"ClassificationReportSaver: {len(ids)} item ids for {len(self._items)} evaluated "
                                f"items: the ids are left out of {self.file_prefix}{self.predictions} (were the items "
                                "shuffled or cut to another count?).")
            ids = None
        header = ["index", "id", "label", "label_name", "pred_label", "pred_name"]
        header += [f"prob_{n}" for n in names] + ["kept_indices", "source_frames", "group"]
        rows = []
        for i, (label, pred, prob, name, kept, frames, group) in enumerate(self._items):
            row = {"index": i, "id": name if name is not None else (ids[i] if ids is not None else ""),
                   "label": label, "label_name": names[label], "pred_label": pred, "pred_name": names[pred],
                   "kept_indices": "" if kept is None else ";".join(map(str, kept)),
                   "source_frames": "" if frames is None else ";".join(map(str, frames)),
                   "group": "" if group is None else group}
            row.update({f"prob_{n}": repr(float(p)) for n, p in zip(names, prob)})
            rows.append(row)
        write_predictions_csv(self.output_dir / f"{self.file_prefix}{self.predictions}", header, rows)

    def __call__(self, engine: Any) -> None:
        from monai_das.visualize import plot_confusion_matrix

        self._items = gather_items(self._items)  # every rank takes part; the report covers the samples of all ranks
        rank, world = rank_world()
        if rank != 0:
            return
        labels = np.asarray([it[0] for it in self._items], dtype=np.int64)
        confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        np.add.at(confusion, (labels, np.asarray([it[1] for it in self._items], dtype=np.int64)), 1)
        metrics = {}
        for name, value in engine.state.metrics.items():
            value = _scalar(value)
            if isinstance(value, (int, float)):
                strip = bool(self.metric_prefix) and name.startswith(self.metric_prefix)
                key = name[len(self.metric_prefix):] if strip else name
                metrics[key] = None if isinstance(value, float) and math.isnan(value) else value
        cm = confusion.tolist()
        if "balanced_accuracy" not in metrics:
            metrics["balanced_accuracy"] = balanced_accuracy_from_confusion(torch.as_tensor(confusion))
        intervals = None
        probs = np.asarray([it[2] for it in self._items])
        names = [self.label_names[c] if c < len(self.label_names) else str(c) for c in range(self.num_classes)]
        groups = [it[6] for it in self._items]
        # items, or patients where the items name them: what the bootstrap draws (12 studies of 2 patients a class
        # drew [1.000, 1.000] while counting studies let it through)
        counts, unit = class_support(labels, self.num_classes, groups) if len(labels) else (np.zeros(1, np.int64),
                                                                                            "item")
        if self.interval_resamples > 0 and len(labels) and counts.min() >= MIN_ITEMS_PER_CLASS:
            intervals = bootstrap_intervals(probs, labels, self.interval_resamples, seed=self.interval_seed,
                                            groups=groups)
        elif self.interval_resamples > 0 and len(labels):
            self.logger.warning(f"the evaluated list holds {few_items_named(counts, names, unit=unit)}: no "
                                f"bootstrap interval is given (it needs >= {MIN_ITEMS_PER_CLASS} {unit}s of each "
                                "class; with fewer it would look certain, e.g. [1.000, 1.000]).")
        per_class = per_class_metrics(probs, labels, names)
        absent = [n for n, m in per_class.items() if m["support"] == 0]
        if absent and len(labels):
            self.logger.warning(
                f"the evaluated list holds no item of class(es) {absent}: the macro AUC is undefined (null in "
                f"{self.file_prefix}metrics.json) and so are their recall and AUC; the other classes' one-vs-rest "
                f"AUC, recall and precision are in its per_class. Evaluate on a list that holds every class to "
                "compare the AUC with others.")
        self.report = {
            **self.extra,
            "num_samples": len(labels),
            "metrics": metrics,
            "per_class": per_class,
            **({"intervals": intervals} if intervals is not None else {}),
            "confusion_matrix": cm,
            "label_names": self.label_names,
        }
        write_json_atomic(self.report, self.output_dir / f"{self.file_prefix}metrics.json")
        write_json_atomic(
            {"labels": self.label_names, "matrix": cm, "rows": "true", "columns": "predicted"},
            self.output_dir / f"{self.file_prefix}confusion_matrix.json",
        )
        plot_confusion_matrix(confusion, self.output_dir / f"{self.file_prefix}confusion_matrix.png", self.label_names)
        if self.predictions:
            self._write_predictions(names, world)
        summary = ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
        )
        self.logger.info(f"evaluation on {self.report['num_samples']} samples: {summary}")
        from monai_das.handlers.summary import evenly_spaced_warning

        worse = evenly_spaced_warning("auc", metrics.get("auc"), metrics.get("auc_evenly_spaced"))
        if worse:  # e.g. at a k the model was not trained at (trial V: AUC 0.333 vs 1.000 on evenly spaced frames)
            self.logger.warning(worse)
        if intervals is not None:
            auc = intervals["auc"]
            self.logger.info(
                f"{100 * intervals['level']:.0f} % bootstrap intervals over the {self.report['num_samples']} samples"
                + (f" ({intervals['num_groups']} patients, drawn whole)"
                   if intervals.get("num_groups", self.report["num_samples"]) < self.report["num_samples"] else "")
                + ": "
                f"auc {'undefined (a class without samples)' if auc is None else f'[{auc[0]:.3f}, {auc[1]:.3f}]'}, "
                f"balanced_accuracy [{intervals['balanced_accuracy'][0]:.3f}, {intervals['balanced_accuracy'][1]:.3f}]"
            )
