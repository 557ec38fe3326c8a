"""One line at the end of training that says how it went: the best validation epoch and what it kept."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.metrics import MIN_ITEMS_PER_CLASS
from monai_das.handlers.utils import attach_once
from monai_das.utils.io import file_digest

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = ["TrainingSummaryHandler"]


def evenly_spaced_warning(metric: str, score: float | None, even: float | None, margin: float = 0.05) -> str | None:
    """The warning when the same network scores ``even`` on evenly spaced frames, more than ``margin`` above the
    learned selection's ``score`` (training's best epoch, or an evaluation, e.g. at another k than trained); else
    ``None``."""
    if score is None or even is None or not even > score + margin:
        return None
    return (f"the learned selection does worse than evenly spaced frames with the same network ({metric} {score:.3f} "
            f"vs {even:.3f}): the sampler may be drawn to frames that look busy rather than informative, or, at "
            "another k than it was trained at, keep the frames it ranks first rather than the evidence. Compare with "
            "--method uniform on validation data, and try --relevance_weight 1.0 --sampler_gradient none "
            "(in Python: monai_das.losses.FrameRelevanceLoss, build_classifier(..., "
            "sampler_gradient=\"none\"); benchmarks/README.md, \"Frame statistics that mislead\").")


class TrainingSummaryHandler:
    """
    Logs, when training completes, the epoch of the best model that ``saver`` kept with that epoch's ``report``
    metrics, e.g.
    ``training done: best val_auc 0.981 at epoch 7 of 8 (val_evidence_kept 0.953, val_adaptivity 0.41)``.

    The line describes the file actually kept: the best epoch is the one the best-model saver
    (:class:`~monai_das.handlers.AtomicCheckpointSaver` with ``save_key_metric``) chose, so it follows the saver's
    vetoes (an epoch whose predictions did not vary across items, a learned sampler still in its warm-up) and stays
    right after a resume (the saver's ``best_epoch``/``best_metrics`` are in ``last.pt``). ``best`` holds
    ``{"epoch": ..., <metrics>}`` once training completed with a best model, else ``None``.

    When that epoch's metrics hold the key metric's bootstrap interval (``<key_metric>_low``/``_high``, from
    :class:`~monai_das.handlers.SelectionDiagnosticsHandler` with ``auc_interval``), the line shows it, and a warning
    says so when it reaches 0.5 (a validation list too small to tell the model from chance). When they hold
    ``<key_metric>_evenly_spaced`` (``evenly_spaced``: the same network on evenly spaced frames), the line shows it,
    and a warning says so when it beats the learned selection by more than ``evenly_spaced_margin``.

    Attach to the trainer.

    Args:
        saver: the validator's best-model saver.
        key_metric: name of the saver's key metric, for the message (its value is the saver's score).
        report: other metrics of that epoch to show (missing ones are left out).
        evenly_spaced_margin: how far the evenly spaced frames' score may exceed the learned selection's before a
            warning (AUC; small differences between two selections of one network are noise on a validation list).
        reports_dir: the evaluation's reports folder (a bundle's ``eval/``): a warning when a ``metrics.json`` in it
            or in its folders two levels down (``val/``, ``k4/``, an external datalist's) describes another model
            than the best-model file this training leaves (its ``checkpoint_sha256``, or none: written by an older
            version), so that an earlier model's reports are not read as this one's.
        evidence_key, evidence_margin: a warning when the best epoch's ``evidence_key`` (the fraction of known
            evidence frames kept, :class:`SelectionDiagnosticsHandler`) is less than ``evidence_margin`` above what as
            many frames taken at random would keep (``<prefix>evidence_at_random`` beside it): a learned sampler
            (one that reports ``<key_metric>_evenly_spaced``) no better than chance at finding the evidence.
    """

    def __init__(self, saver: Any, key_metric: str = "val_auc",
                 report: Sequence[str] = ("val_evidence_kept", "val_adaptivity", "val_balanced_accuracy"),
                 evenly_spaced_margin: float = 0.05, reports_dir: str | os.PathLike | None = None,
                 evidence_key: str = "val_evidence_kept", evidence_margin: float = 0.1) -> None:
        if getattr(saver, "_key_metric_checkpoint", None) is None:
            raise ValueError("TrainingSummaryHandler needs the best-model saver (AtomicCheckpointSaver with "
                             f"save_key_metric=True), got {type(saver).__name__} without a key-metric checkpoint.")
        self.saver = saver
        self.key_metric = key_metric
        self.report = tuple(report)
        self.evenly_spaced_margin = float(evenly_spaced_margin)
        self.reports_dir = None if reports_dir is None else Path(reports_dir)
        if not evidence_key.endswith("evidence_kept"):
            raise ValueError(f"evidence_key must be a <prefix>evidence_kept metric, got {evidence_key!r}.")
        self.evidence_key, self.evidence_margin = evidence_key, float(evidence_margin)
        # SelectionDiagnosticsHandler's yardstick beside it: <prefix>evidence_at_random
        self._at_random_key = evidence_key[: -len("kept")] + "at_random"
        self.logger = logging.getLogger(__name__)
        self.best: dict | None = None

    def attach(self, engine: Any) -> None:
        attach_once(engine, Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch, score = self.saver.best_epoch, self.saver.best_score
        warnings: list[str] = []
        unscored = epoch is None or score is None or score == float("-inf")
        if unscored:
            msg = f"training done after {engine.state.epoch} epochs: no validation epoch with a usable {self.key_metric}"
            moved = self.saver.set_aside_unsaved() if hasattr(self.saver, "set_aside_unsaved") else None
            if moved is not None:
                msg += f"; the model file found there was another run's, moved to '{moved.name}'"
            elif epoch is not None:  # a NaN score ranks below every real one, but the first is kept for lack of one
                msg += (f"; the best-model file is epoch {epoch}'s, kept for lack of a score, not chosen by "
                        f"{self.key_metric} (give every class validation items)")
        else:
            self.best = {**self.saver.best_metrics, self.key_metric: score, "epoch": epoch}
            extra = ", ".join(f"{k} {self.best[k]:.3f}" for k in self.report if k in self.best)
            low, high = self.best.get(f"{self.key_metric}_low"), self.best.get(f"{self.key_metric}_high")
            interval = "" if low is None or high is None else f" [95 % interval {low:.3f}, {high:.3f}]"
            msg = (f"training done: best {self.key_metric} {score:.3f}{interval} at epoch {epoch} of "
                   f"{engine.state.epoch}" + (f" ({extra})" if extra else ""))
            even = self.best.get(f"{self.key_metric}_evenly_spaced")
            if even is not None:
                msg += f"; with evenly spaced frames instead: {even:.3f}"
                worse = evenly_spaced_warning(self.key_metric, score, even, self.evenly_spaced_margin)
                if worse:
                    warnings.append(worse)
            evidence, at_random = self.best.get(self.evidence_key), self.best.get(self._at_random_key)
            # a learned sampler's only (they alone report the evenly spaced AUC): uniform and random keep k/T of the
            # evidence by construction; `full` keeps every frame (evidence 1.0, at random 1.0)
            if (even is not None and evidence is not None and at_random is not None
                    and evidence < min(1.0, at_random + self.evidence_margin)):
                warnings.append(
                    f"the best epoch's kept frames hold {evidence:.3f} of the known evidence frames, hardly more than "
                    f"as many frames taken at random would ({at_random:.3f}): the frames kept do not follow the "
                    "evidence (a learned sampler has not found it; see 'Training details' in the bundle docs)."
                )
            if low is None and self.key_metric.endswith("auc"):
                warnings.append(
                    f"the best epoch's {self.key_metric} comes without a 95 % interval (the validation list holds "
                    f"fewer than {MIN_ITEMS_PER_CLASS} items of a class, or intervals are off): it may be chance; "
                    "validate on more items, and evaluate on a test list (evaluate.json) before trusting this model."
                )
            if low is not None and low <= 0.5:
                warnings.append(
                    f"the best epoch's {self.key_metric} cannot be told from chance on this validation list (its 95 % "
                    f"bootstrap interval over the items, [{low:.3f}, {high:.3f}], reaches 0.5): validate on more "
                    "items, and evaluate on a test list (evaluate.json) before trusting this model."
                )
        if idist.get_rank() == 0:
            stale = self._stale_reports()
            # no usable score in any epoch (a class without validation items: NaN AUC): the model was not chosen by
            # it, said at WARNING (it was an INFO line, after a warning at the start; trial T57)
            (self.logger.warning if unscored else self.logger.info)(msg)
            for warning in warnings + ([stale] if stale else []):
                self.logger.warning(warning)

    def _stale_reports(self) -> str | None:
        """Why evaluation reports in ``reports_dir`` are not this training's model's, ``None`` when they are (or when
        there are none): a retrain into one bundle_root left the earlier model's metrics.json and predictions in
        eval/ (and in its folders of other splits, other k, external data), while the model card had dropped its
        test metrics (trial Z, recheck R53)."""
        path = self.saver.best_model_path() if hasattr(self.saver, "best_model_path") else None
        if path is None or self.reports_dir is None or not path.is_file() or not self.reports_dir.is_dir():
            return None
        reports = [r for depth in ("", "*/", "*/*/")  # eval/, eval/val/, eval/k4/, eval/<site>/k4/
                   for r in sorted(self.reports_dir.glob(f"{depth}metrics.json"))]
        if not reports:  # nothing to compare: the model file is not read
            return None
        model, stale = file_digest(path), []
        for report in reports:
            try:
                with open(report, encoding="utf-8") as fh:
                    evaluated = json.load(fh).get("checkpoint_sha256")
            except (OSError, ValueError, AttributeError):
                evaluated = None
            if evaluated != model:
                stale.append((report, evaluated))
        if not stale:
            return None
        report, evaluated = stale[0]
        which = f"checkpoint sha256 {str(evaluated)[:12]}..." if evaluated else "no checkpoint_sha256: an older version"
        others = f" and {len(stale) - 1} other evaluation report(s) in '{self.reports_dir}'" if len(stale) > 1 else ""
        return (f"'{report}'{others} (with their predictions and confusion matrices) describe another model than this "
                f"training's '{path}' ({which}; this one {model[:12]}...): evaluate it (evaluate.json) before reading "
                "them.")
