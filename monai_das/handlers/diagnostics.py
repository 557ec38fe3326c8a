"""Per-epoch diagnostics of what the sampler keeps: evidence kept, selection entropy, adaptivity, churn, and a guard
against validation predictions that do not depend on the input."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.metrics import (
    MIN_ITEMS_PER_CLASS, bootstrap_intervals, class_support, few_items_named, label_indices, present_classes_roc_auc
)
from monai_das.handlers.sampling import SampledIndicesHandler
from monai_das.handlers.utils import attach_once, gather_items, move_to_end
from monai_das.networks.utils import network_device, unwrap_network
from monai_das.handlers.warmup import sampler_warming_up
from monai_das.utils.logs import bounded_repr

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = ["SelectionDiagnosticsHandler", "jaccard_distance", "not_best_reason", "DEGENERATE_ATTR", "WARMUP_ATTR",
           "KEPT_ATTR"]

#: ``engine.state`` attribute set to ``True`` for an epoch whose predictions do not vary across items; the
#: best-model saver (:class:`monai_das.handlers.AtomicCheckpointSaver`) never keeps such an epoch
DEGENERATE_ATTR = "degenerate_predictions"
#: ``engine.state`` attribute set to ``True`` when the validated model's learned sampler was still in its warm-up
#: (:class:`monai_das.handlers.SamplerWarmupHandler`): such a model is the encoder with an untrained sampler, so it
#: is not kept as the best model either
WARMUP_ATTR = "sampler_warming_up"
#: ``engine.state`` attribute holding each validation item's kept frames (sorted index lists) of the last epoch, what
#: the next epoch's churn is measured against; kept on the engine's state so that a resumed run can restore it (the
#: bundle's ``validator_state``, :class:`monai_das.handlers.EngineStateAttributes`) and measures the first churn after
#: a restart as the uninterrupted run does
KEPT_ATTR = "kept_sets"
#: the MONAI workflow's record of its best epoch (``monai.engines.Workflow``), put back when an epoch is vetoed
_BEST_ATTRS = ("best_metric", "best_metric_epoch")


def not_best_reason(state: Any) -> str | None:
    """
    Why the validation epoch of ``state`` (an evaluator's ``engine.state``, as left by
    :class:`SelectionDiagnosticsHandler`) may not become the best model, or ``None`` when it may.
    """
    if getattr(state, DEGENERATE_ATTR, False):
        return "predictions do not vary across items"
    if getattr(state, WARMUP_ATTR, False):
        return "the sampler is still in its warm-up (it has not learned yet)"
    return None


def _is_nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def jaccard_distance(a: set, b: set) -> float:
    """``1 - |a ∩ b| / |a ∪ b|`` (0 for two empty sets)."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def _mean_pairwise_jaccard(sets: Sequence[set], max_items: int) -> float:
    sets = list(sets)[:max_items]
    n = len(sets)
    if n < 2:
        return float("nan")
    total = sum(jaccard_distance(sets[i], sets[j]) for i in range(n) for j in range(i + 1, n))
    return total / (n * (n - 1) / 2)


@dataclass
class _Item:
    """What one validation item contributed in an epoch: its true class and whichever of the rest its output had."""

    label: int | None
    prob: torch.Tensor | None = None  # the network's class probabilities
    kept: set | None = None  # the kept frame indices
    even: torch.Tensor | None = None  # the probabilities with k evenly spaced frames instead (``evenly_spaced``)
    group: str | None = None  # its patient (a datalist's ``group``): the AUC interval draws whole patients


class SelectionDiagnosticsHandler:
    """
    Attach to a validation evaluator (``decollate=True``, the MONAI default, or ``False``; data loader not
    shuffled). Every epoch it adds to ``engine.state.metrics``, so that ``StatsHandler`` prints and ``MLFlowHandler``
    records them (attach it before those; an :class:`~monai_das.handlers.AtomicCheckpointSaver` attached earlier has
    its best-model decision moved after this handler, so the veto below holds in either order):

    - ``<prefix>evidence_kept``: fraction of the known evidence frames that were kept, over the items that carry a
      list of them (``evidence_keys``: the synthetic data's ``informative``, a datalist's ``evidence``; frame indices
      along the network's frame axis). Absent when no item carries evidence.
    - ``<prefix>evidence_at_random``: what as many frames taken at random would keep of it, ``k / T`` (the
      yardstick of ``evidence_kept``: a sampler that keeps no more has not found the evidence). Absent with it.
    - ``<prefix>selection_entropy``: entropy of the distribution of kept positions over all items, divided by
      ``log T`` (1: every position equally often; ``log k / log T``: the same ``k`` positions for everyone).
    - ``<prefix>adaptivity``: mean pairwise Jaccard distance of the kept sets of the first ``max_items`` items
      (0: the same frames for every input).
    - ``<prefix>churn``: mean Jaccard distance between each item's kept set and the previous epoch's (from the
      second epoch on; items matched by position, so the loader must not shuffle). The previous epoch's sets are
      ``engine.state.kept_sets`` (:data:`KEPT_ATTR`): checkpoint that attribute (``EngineStateAttributes``) and a
      resumed run measures the same churn as an uninterrupted one.
    - ``<prefix>prediction_std``: the largest standard deviation across items of a class probability. Below
      ``min_prediction_std`` the network answers the same whatever the input (BatchNorm running statistics that lag
      the weights, a collapsed model): a warning is logged and ``engine.state.degenerate_predictions`` is set, so the
      best-model saver does not keep this epoch, however good its (tie-broken) AUC.
    - ``<prefix>auc_low``, ``<prefix>auc_high`` (with ``auc_interval``): the 95 % percentile-bootstrap interval over
      the items of the macro one-vs-rest AUC (:func:`~monai_das.handlers.bootstrap_intervals`, fixed seed, no
      global random state touched): how much a validation list of that size says. Absent when a class has fewer
      than :data:`MIN_ITEMS_PER_CLASS` items (a warning says so once).
    - ``<prefix>auc_evenly_spaced`` (with ``evenly_spaced``, for a sampler with parameters: DAS, DPS, ADPS): the macro
      AUC of the same network on the same items when it sees ``k`` evenly spaced frames instead of its sampler's
      choice (``UniformSampler``'s frames, computed on each validation batch in the same pass over the data: no
      second loader pass, no random state touched). Higher than ``<prefix>auc`` means the learned selection does
      worse than no selection (:class:`~monai_das.handlers.TrainingSummaryHandler` warns), e.g. when the frames'
      statistics mislead the sampler.

    In a distributed run (``multi_gpu_train.json``) every rank gathers the items of all ranks first, so every metric
    above, and the veto, are those of the whole validation list, as one process measures them.

    With ``output_dir`` it also writes, after every epoch, ``<output_dir>/<file_prefix>kept_positions.json`` (for every
    frame position the fraction of items that kept it, over all items and per true class, with the item counts) and
    ``<file_prefix>kept_positions.png`` (the same as curves): where the sampler looks, e.g. a positional bias towards
    the ends of a volume, or class-dependent choices.

    It also sets ``engine.state.sampler_warming_up`` (:data:`WARMUP_ATTR`) when the network's learned sampler is in
    its warm-up (:class:`~monai_das.handlers.SamplerWarmupHandler`): the validated model then pairs the encoder with
    a sampler that has not learned, and is no candidate for the best model (see :func:`not_best_reason`).

    An epoch that :func:`not_best_reason` vetoes does not count as MONAI's best epoch either: the workflow's own
    ``engine.state.best_metric``/``best_metric_epoch`` (updated by the evaluator before its handlers run) are put back
    to their values before the epoch (``-1``/``-1`` while no epoch has counted), and a real key metric replaces a NaN
    best (an AUC of a split with one class), as in the saver; so ``StatsHandler``'s "Key metric ... best value ... at
    epoch" names the epoch of the best model that was saved.

    Args:
        network: the ``SubsampledClassifier`` (DDP wrappers are unwrapped); a forward hook on its sampler reads the
            kept indices of the very pass that made the prediction.
        prob_key: output key of the class probabilities (after softmax).
        evidence_keys: batch keys holding the known evidence frames of an item.
        prefix: metric name prefix.
        max_items: items used for the pairwise adaptivity (cost grows with its square).
        min_prediction_std: threshold of ``prediction_std`` below which predictions count as constant.
        output_dir: folder for ``kept_positions.json``/``.png`` (``None``: not written).
        label_key: batch key of the true class (for the per-class positions).
        label_names: class names in those files (default ``"0"``, ``"1"``, ...).
        split: name of the evaluated split (e.g. ``"test"``, or ``"val"`` when evaluate.json is run with
            ``--validate#split val``), written into ``kept_positions.json`` and the plot's title.
        file_prefix: prefix of the file names (``None``: ``prefix``); the bundles' evaluate.json gives
            ``<split>_`` (``val_kept_positions.json`` in ``eval/val/``; the metric names keep ``prefix``).
        auc_interval: also add the AUC's bootstrap interval (``<prefix>auc_low``/``<prefix>auc_high``).
        evenly_spaced: also add ``<prefix>auc_evenly_spaced`` (learned samplers only).
        image_key: batch key of the network input (read for ``evenly_spaced``).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        prob_key: str = "prob",
        evidence_keys: Sequence[str] = ("evidence", "informative"),
        prefix: str = "val_",
        max_items: int = 256,
        min_prediction_std: float = 1e-3,
        output_dir: str | os.PathLike | None = None,
        label_key: str = "label",
        label_names: Sequence[str] | None = None,
        split: str | None = None,
        file_prefix: str | None = None,
        auc_interval: bool = False,
        evenly_spaced: bool = False,
        image_key: str = "image",
    ) -> None:
        self.indices = SampledIndicesHandler(network, output_key="_kept_indices")
        self.image_key = image_key
        self.split = split
        self.prob_key = prob_key
        self._warned_no_prob = False
        self.evidence_keys = tuple(evidence_keys)
        self.prefix = prefix
        self.file_prefix = prefix if file_prefix is None else file_prefix
        self._checked_stale = False
        self.max_items = int(max_items)
        self.min_prediction_std = float(min_prediction_std)
        self.logger = logging.getLogger(__name__)
        self._items: list[_Item] = []
        self._evidence = [0, 0]  # kept, total
        self._num_frames = 0
        self._best_before: dict[str, Any] = {}  # the workflow's best epoch before this epoch (see _reset)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.label_key = label_key
        self.label_names = None if label_names is None else [str(n) for n in label_names]
        self.auc_interval = bool(auc_interval)
        self.evenly_spaced = bool(evenly_spaced)
        self._told_too_few = False

    def attach(self, engine: Any) -> None:
        self.indices.attach(engine)
        attach_once(engine, Events.EPOCH_STARTED, self._reset)
        attach_once(engine, Events.ITERATION_COMPLETED, self._collect)
        attach_once(engine, Events.EPOCH_COMPLETED, self)
        # ignite runs an event's handlers in the order they were attached: a saver listed first in val_handlers
        # (MONAI's usual order) kept an epoch with constant predictions as the best model before this handler
        # flagged it (trial T71e); its best-model decision now runs after this check
        from monai_das.handlers.checkpoint import AtomicCheckpointSaver

        move_to_end(engine, Events.EPOCH_COMPLETED, (AtomicCheckpointSaver,), "metrics_completed")

    def _reset(self, engine: Any) -> None:
        self._items, self._evidence = [], [0, 0]
        self._best_before = {a: getattr(engine.state, a) for a in _BEST_ATTRS if hasattr(engine.state, a)}
        setattr(engine.state, DEGENERATE_ATTR, False)
        setattr(engine.state, WARMUP_ATTR, sampler_warming_up(self.indices.network))

    def _collect(self, engine: Any) -> None:
        outputs, batch = engine.state.output, engine.state.batch
        if isinstance(outputs, dict):  # decollate=False: its items, as decollate=True gives them (it collected none)
            from monai.data import decollate_batch

            outputs = decollate_batch(outputs, detach=True)
            batch = decollate_batch(batch, detach=True) if isinstance(batch, dict) else batch
        outputs = outputs if isinstance(outputs, list) else []
        batch = batch if isinstance(batch, list) else [{}] * len(outputs)
        if self.evenly_spaced:
            self._collect_evenly_spaced(outputs, batch)  # before the kept indices are popped below
        for item, data in zip(outputs, batch):
            group = data.get("group") if isinstance(data, dict) else None
            record = _Item(self._label(data), even=item.pop("_even_prob", None),
                           group=None if group is None else str(group))
            self._items.append(record)
            if self.prob_key in item:
                record.prob = torch.as_tensor(item[self.prob_key]).detach().float().reshape(-1).cpu()
            elif not self._warned_no_prob and isinstance(item, dict):
                self._warned_no_prob = True  # once: the check is off for the whole run, not broken per item
                self.logger.warning(
                    f"SelectionDiagnosticsHandler: the engine's output has no '{self.prob_key}' (it has "
                    f"{sorted(map(str, item))}): {self.prefix}prediction_std and the constant-prediction check are "
                    "off. Give prob_key the key of the class probabilities (MONAI's evaluators put the network "
                    "output under 'pred': prob_key='pred' after an Activationsd(softmax=True) postprocessing).")
            if "_kept_indices" not in item:
                continue
            kept = record.kept = {int(i) for i in torch.as_tensor(item.pop("_kept_indices")).reshape(-1)}
            self._num_frames = max(self._num_frames, max(kept) + 1, self.indices.num_frames or 0)
            evidence = next((data[k] for k in self.evidence_keys if isinstance(data, dict) and k in data), None)
            if evidence is not None:
                ev = {int(i) for i in torch.as_tensor(evidence).reshape(-1) if int(i) >= 0}
                t = self.indices.num_frames
                if t is not None and ev and max(ev) >= t:  # counted as never kept: evidence_kept silently low
                    image = data.get(self.image_key) if isinstance(data, dict) else None
                    name = (data.get("id") or data.get("source_line") or (getattr(image, "meta", None) or {}).get(
                        "filename_or_obj")) if isinstance(data, dict) else None
                    raise ValueError(
                        f"{type(self).__name__}: item {name!r} has evidence at frame {max(ev)}, but the network "
                        f"saw {t} frames: the evidence numbers frames of another sequence (map it with MapEvidenced "
                        "after the last spatial step; a subsampling before the network must renumber it: the "
                        "monai_das dictionary subsamplings do, see subsample_frame_records).")
                self._evidence[0] += len(ev & kept)
                self._evidence[1] += len(ev)

    def _collect_evenly_spaced(self, outputs: list, batch: list) -> None:
        """
        The network's probabilities for this batch's items with ``k`` evenly spaced frames (``k`` of the pass), put
        in each item's output as ``_even_prob`` (taken out again by :meth:`_collect`).
        """
        from monai.networks import eval_mode

        from monai_das.networks.utils import preserved_modes, uniform_indices

        net = unwrap_network(self.indices.network, require_sampler=False)
        sampler = getattr(net, "sampler", None)
        items = [(d, out) for d, out in zip(batch, outputs) if isinstance(d, dict) and self.image_key in d]
        if not items or sampler is None or not any(True for _ in sampler.parameters()):
            return
        kept = items[0][1].get("_kept_indices")
        device = network_device(net)
        # eval mode as in the evaluator's own pass (which has left it by now: a trainer's network is back in train
        # mode, where BatchNorm would learn validation statistics and dropout draw random numbers)
        with preserved_modes(net), eval_mode(net), torch.no_grad():
            seq = net.to_frames(torch.stack([torch.as_tensor(d[self.image_key]) for d, _ in items]).to(device))
            k = int(torch.as_tensor(kept).numel()) if kept is not None else sampler.num_kept(seq.shape[1])
            even = uniform_indices(seq.shape[1], k, device=seq.device).expand(seq.shape[0], k)
            probs = torch.softmax(net.classify_kept(seq, even).float(), 1)
        for (_, out), prob in zip(items, probs.cpu()):
            out["_even_prob"] = prob

    def _label(self, data: Any) -> int | None:
        """The true class of a decollated batch item (an index or a one-hot vector), ``None`` without one."""
        label = data.get(self.label_key) if isinstance(data, dict) else None
        if label is None:
            return None
        return int(label_indices([label])[0])

    def _gather_ranks(self) -> None:
        """
        A distributed validator's rank holds only its share of the items (its ``DistributedSampler`` slice): gather
        every rank's items (as plain lists) and evidence counts, so that every rank computes the diagnostics, the
        veto and the AUC interval of the whole validation list, as one process does. Items are ordered by rank,
        the same order every epoch (what churn compares).
        """
        if idist.get_world_size() < 2:
            return

        def plain(t: torch.Tensor | None) -> list | None:
            return None if t is None else t.tolist()

        mine = [(i.label, plain(i.prob), None if i.kept is None else sorted(i.kept), plain(i.even), i.group)
                for i in self._items]
        self._items = [_Item(label, None if prob is None else torch.tensor(prob), None if kept is None else set(kept),
                             None if even is None else torch.tensor(even), group)
                       for label, prob, kept, even, group in gather_items(mine)]
        self._evidence = [int(v) for v in idist.all_reduce(torch.tensor(self._evidence, dtype=torch.float64))]
        self._num_frames = int(idist.all_reduce(torch.tensor(self._num_frames), op="MAX"))

    def __call__(self, engine: Any) -> None:
        self._gather_ranks()
        metrics = engine.state.metrics
        p = self.prefix
        kept_items = [i for i in self._items if i.kept is not None]
        kept_sets = [i.kept for i in kept_items]
        if self._evidence[1]:
            metrics[f"{p}evidence_kept"] = self._evidence[0] / self._evidence[1]
            if kept_sets:  # what as many frames taken at random would hold: k / T, the yardstick of evidence_kept
                metrics[f"{p}evidence_at_random"] = sum(map(len, kept_sets)) / len(kept_sets) / max(self._num_frames, 1)
                self._warn_if_below_chance(engine, metrics[f"{p}evidence_kept"], metrics[f"{p}evidence_at_random"])
        if kept_sets:
            counts = _position_counts(kept_sets, max(self._num_frames, 2))
            freq = counts / counts.sum()
            nz = freq[freq > 0]
            metrics[f"{p}selection_entropy"] = float(-(nz * nz.log()).sum() / math.log(len(counts)))
            adaptivity = _mean_pairwise_jaccard(kept_sets, self.max_items)
            if not math.isnan(adaptivity):
                metrics[f"{p}adaptivity"] = adaptivity
            previous = getattr(engine.state, KEPT_ATTR, None)
            if previous is not None and len(previous) == len(kept_sets):
                metrics[f"{p}churn"] = sum(map(jaccard_distance, kept_sets, map(set, previous))) / len(kept_sets)
            setattr(engine.state, KEPT_ATTR, [sorted(k) for k in kept_sets])
            if self.output_dir is not None:
                self._write_positions(counts, kept_items, engine)
        scored = [i for i in self._items if i.prob is not None]
        if len(scored) >= 2:
            std = float(torch.stack([i.prob for i in scored]).std(dim=0).max())
            metrics[f"{p}prediction_std"] = std
            if std < self.min_prediction_std:
                setattr(engine.state, DEGENERATE_ATTR, True)
                self.logger.warning(
                    f"epoch {engine.state.epoch}: validation predictions do not vary across the {len(scored)} "
                    f"items (largest std of a class probability {std:.2e} < {self.min_prediction_std:g}); the "
                    "network ignores its input (BatchNorm statistics lagging the weights? try --precise_bn_batches "
                    "-1 in a bundle; in Python, monai_das.handlers.PreciseBNHandler on the trainer). This epoch is not "
                    "kept as the best model."
                )
        # every item is here, also in a distributed run (gathered above)
        if self.auc_interval and len(scored) >= 2 and all(i.label is not None for i in scored):
            probs, labels = torch.stack([i.prob for i in scored]).numpy(), np.asarray([i.label for i in scored])
            groups = [i.group for i in scored]
            # items, or patients where the items name them: what the bootstrap draws
            counts, unit = class_support(labels, probs.shape[1], groups) if labels.max() < probs.shape[1] else (
                np.bincount(labels, minlength=probs.shape[1]), "item")
            if labels.max() < probs.shape[1] and counts.min() >= MIN_ITEMS_PER_CLASS:
                interval = bootstrap_intervals(probs, labels, groups=groups)["auc"]
                if interval is not None:
                    metrics[f"{p}auc_low"], metrics[f"{p}auc_high"] = interval
            elif not self._told_too_few and idist.get_rank() == 0:
                self._told_too_few = True
                absent = [self.label_names[c] if self.label_names and c < len(self.label_names) else str(c)
                           for c in np.flatnonzero(counts == 0)]
                if absent and probs.shape[1] - len(absent) >= 2:  # (so 3 classes or more)
                    msg = (f"the validation list holds no item of the class(es) {bounded_repr(absent)}: the "
                           "validation AUC averages the other classes, and no interval is given.")
                elif absent:
                    msg = (f"the validation list holds no item of the class(es) {bounded_repr(absent)}: the "
                           "validation AUC is undefined")
                else:
                    few = few_items_named(counts, self.label_names or [], unit=unit) or f"{len(labels)} item(s)"
                    msg = (f"the validation list holds {few}: its AUC says little, and no interval is given (the "
                           f"bootstrap needs >= {MIN_ITEMS_PER_CLASS} {unit}s of each class).")
                self.logger.warning(msg)
        even = [i for i in self._items if i.even is not None]
        if even and all(i.label is not None for i in even):
            probs = torch.stack([i.even for i in even])
            labels = torch.tensor([i.label for i in even])
            # the classes present, as val_auc (PresentClassesROCAUC) takes them; none to compare with one class
            if int(labels.max()) < probs.shape[1] and len(labels.unique()) >= 2:
                onehot = torch.nn.functional.one_hot(labels, probs.shape[1])
                auc = present_classes_roc_auc(probs, onehot)
                if not math.isnan(auc):
                    metrics[f"{p}auc_evenly_spaced"] = auc
        self._follow_the_saver(engine)

    def _follow_the_saver(self, engine: Any) -> None:
        """Make MONAI's record of the best epoch agree with the best-model saver's: a vetoed epoch puts back the values
        before it, and a real key metric beats a NaN best (the saver scores NaN as ``-inf``; MONAI's ``>`` never
        beats a NaN)."""
        state = engine.state
        if not_best_reason(state) is not None:
            for name, value in self._best_before.items():
                setattr(state, name, value)
            return
        name = getattr(state, "key_metric_name", None)
        current, best = state.metrics.get(name) if name else None, getattr(state, "best_metric", None)
        if _is_nan(best) and current is not None and not _is_nan(current):
            state.best_metric, state.best_metric_epoch = current, state.epoch

    def _warn_if_below_chance(self, engine: Any, evidence_kept: float, chance: float) -> None:
        """
        Warn when the kept frames hold less than half of the known evidence that as many frames chosen at random
        would hold (``chance``, ``k / T``): the sampler looks away from the evidence (a collapse, or frame statistics
        that mislead). Not during a learned sampler's warm-up, whose random choice is not the sampler's.
        """
        if getattr(engine.state, WARMUP_ATTR, False):
            return
        if evidence_kept < chance / 2:
            self.logger.warning(
                f"epoch {engine.state.epoch}: the kept frames hold {evidence_kept:.2f} of the known evidence frames, "
                f"less than half of what {chance:.2f} of the frames taken at random would hold: the sampler looks "
                "away from the evidence. Compare with --method uniform on validation data; for a learned sampler "
                "see the bundle docs ('Training details': --sampler_lr, --relevance_weight; in Python, "
                "build_classifier('uniform', ...), a smaller learning rate of the sampler's parameters, "
                "monai_das.losses.FrameRelevanceLoss)."
            )

    def _write_positions(self, counts: torch.Tensor, kept: Sequence[_Item], engine: Any) -> None:
        """
        ``kept_positions.json``/``.png``: per position, the fraction of the ``kept`` items (all, per class) that kept
        it; ``counts`` are those of all of them (every rank's, gathered); rank 0 writes.
        """
        from monai_das.utils.io import write_json_atomic
        from monai_das.visualize import plot_kept_positions

        t = len(counts)
        known = [i.label for i in kept if i.label is not None]
        num_classes = len(self.label_names) if self.label_names else max(known, default=-1) + 1
        table = torch.zeros(num_classes + 1, t + 1, dtype=torch.float64)  # row 0: all items; last column: item count
        table[0, :t], table[0, t] = counts, len(kept)
        for label in range(num_classes):
            sets = [i.kept for i in kept if i.label == label]
            table[label + 1, :t], table[label + 1, t] = _position_counts(sets, t), len(sets)
        if idist.get_rank() != 0:
            return
        curves, items = {}, {}
        for row, name in enumerate(["all", *(self.label_names or [str(c) for c in range(num_classes)])]):
            n = int(table[row, t])
            if n:
                curves[name], items[name] = (table[row, :t] / n).tolist(), n
        stem = self.output_dir / f"{self.file_prefix}kept_positions"
        ks = sorted({len(i.kept) for i in kept})  # one k per run (any k at inference: said in the file and title)
        record = {"epoch": int(engine.state.epoch), "num_frames": t, "num_kept": ks[0] if len(ks) == 1 else ks,
                  "items": items, "kept_fraction": curves}
        if self.split is not None:
            record["split"] = self.split
        write_json_atomic(record, stem.with_suffix(".json"))
        where = f"{self.split} split" if self.split is not None else (self.prefix.rstrip("_") or "kept")
        k = f", k={ks[0]} of T={t}" if len(ks) == 1 else ""
        plot_kept_positions(curves, stem.with_suffix(".png"), items=items,
                            title=f"{where}{k}: fraction of the {items['all']} items that kept each position")
        self._remove_stale_positions(stem)

    def _remove_stale_positions(self, stem: Path) -> None:
        """
        Up to volume 0.6.30 / video 0.6.32 the files were always named after ``prefix``: evaluate.json on
        ``--validate#split val`` wrote ``eval/val/test_kept_positions.json``/``.png``. Once this evaluation has written
        ``stem`` (its ``file_prefix`` name), such a file of the same split beside it (its JSON's ``split``) is an
        earlier evaluation's, stale: it is removed, with a warning naming both, so that nothing reads it for this one.
        """
        old = self.output_dir / f"{self.prefix}kept_positions"
        if self._checked_stale or old == stem or self.split is None:
            return
        self._checked_stale = True
        try:
            recorded = json.loads(old.with_suffix(".json").read_text(encoding="utf-8")).get("split")
        except (OSError, ValueError, AttributeError):  # none there, unreadable, not a JSON object: not ours to touch
            return
        if recorded != self.split:
            return
        for suffix in (".json", ".png"):
            old.with_suffix(suffix).unlink(missing_ok=True)
        self.logger.warning(
            f"removed '{old}.json'/.png: an earlier version's name of this {self.split} split's kept positions (from "
            f"an earlier evaluation); this evaluation wrote '{stem}.json'/.png (the name after volume 0.6.30 / "
            "video 0.6.32: read that one)."
        )


def _position_counts(kept_sets: Sequence[set], num_frames: int) -> torch.Tensor:
    """How many of ``kept_sets`` contain each of the ``num_frames`` positions."""
    counts = torch.zeros(num_frames)
    for kept in kept_sets:
        counts[list(kept)] += 1
    return counts
