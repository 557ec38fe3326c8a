"""Classification metrics for the engines (ignite metrics, gathered across ranks under DDP)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import ROCAUCMetric, compute_roc_auc
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.utils import gather_items

ConfusionMatrix, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ConfusionMatrix")
Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
NotComputableError, _ = optional_import(
    "ignite.exceptions", IgniteInfo.OPT_IMPORT_VERSION, min_version, "NotComputableError"
)

__all__ = [
    "BalancedAccuracy", "EpochLoss", "PresentClassesROCAUC", "present_classes_roc_auc",
    "balanced_accuracy_from_confusion", "bootstrap_intervals", "label_indices", "paired_bootstrap", "per_class_metrics"
]


def label_indices(y, num_classes: int | None = None) -> torch.Tensor:
    """
    Class indices ``N`` (long) of labels given as class indices (``N``, or decollated items of one value each) or as
    one-hot vectors (``N×C``, or decollated items of ``C`` values: ``AsDiscreted(to_onehot=C)``), taken by argmax.

    Raises:
        ValueError: an item of another number of values than 1 or ``num_classes`` (when given), naming both.
    """
    if isinstance(y, (list, tuple)):  # decollated items (MONAI engines)
        items = [torch.as_tensor(t).reshape(-1) for t in y]
    else:
        y = torch.as_tensor(y)
        items = list(y.reshape(y.shape[0], -1)) if y.ndim >= 2 else list(y.reshape(-1, 1))
    out = []
    for t in items:
        if t.numel() != 1 and (t.numel() == 0 or (num_classes is not None and t.numel() != num_classes)):
            raise ValueError(f"a label of {t.numel()} values: give a class index or a one-hot vector of "
                             f"{num_classes if num_classes is not None else 'C'} values (AsDiscreted(to_onehot=C)).")
        if t.numel() > 1:
            t = t.float()
            if not bool(((t == 0) | (t == 1)).all()) or float(t.sum()) != 1.0:  # multi-hot or soft: no one class
                raise ValueError(f"a label {t.tolist()} is not one-hot (one 1, the rest 0): give class indices or "
                                 "one-hot vectors; a multi-label or soft target has no single class to score.")
            out.append(t.argmax())
        else:
            out.append(t[0])
    return torch.stack(out).long() if out else torch.zeros(0, dtype=torch.long)


def balanced_accuracy_from_confusion(cm: torch.Tensor) -> float:
    """
    Mean per-class recall of a ``C×C`` confusion matrix (rows: true class), over the classes that occur
    (as ``sklearn.metrics.balanced_accuracy_score``). NaN when no class occurs.
    """
    cm = torch.as_tensor(cm, dtype=torch.float64)
    support = cm.sum(dim=1)
    present = support > 0
    if not bool(present.any()):
        return float("nan")
    return float((cm.diagonal()[present] / support[present]).mean())


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """
    ROC AUC of ``scores`` (``n``) for the binary ``positive`` (``n``) under each row of item ``weights`` (``B×n``,
    bootstrap counts): the Mann-Whitney statistic with ties counted one half, as ``monai.metrics.compute_roc_auc``
    and ``sklearn.metrics.roc_auc_score``. NaN for a row without positives or negatives.
    """
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first item of every group of tied scores
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)  # B×G: weight of the positives per score group
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # weight of the negatives scored strictly lower
    total = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos * (below + 0.5 * neg)).sum(1) / total, np.nan)


#: items of every class a list needs for a bootstrap interval of its AUC (validation: :class:`SelectionDiagnosticsHandler`;
#: evaluation: :class:`ClassificationReportSaver`); with fewer, the resamples that keep the class tell nothing of its
#: uncertainty (e.g. 3 per class, all ranked right: [1.000, 1.000])
MIN_ITEMS_PER_CLASS = 5


def few_items_named(counts: Sequence[int], names: Sequence[str], minimum: int = MIN_ITEMS_PER_CLASS,
                    unit: str = "item") -> str:
    """Every class with fewer than ``minimum`` items (``unit``: ``"patient"`` for :func:`class_support`'s patient
    counts), fewest first: ``"2 item(s) of class 'mass' and 2 of class 'nodule'"`` (a warning named the rarest class
    only, when several were as rare)."""
    few = sorted((int(n), str(names[c]) if c < len(names) else str(c)) for c, n in enumerate(counts) if n < minimum)
    parts = [f"{n} of class '{name}'" for n, name in few]
    if not parts:
        return ""
    parts[0] = parts[0].replace(" of class", f" {unit}(s) of class", 1)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _group_index(groups: Sequence | None, n: int) -> tuple[np.ndarray, int]:
    """Each item's group as ``0..G-1`` in order of first appearance, and ``G``; ``groups`` ``None`` (or blank): every
    item a group of its own, which makes the group draws below the item draws."""
    if groups is None:
        return np.arange(n), n
    if len(groups) != n:
        raise ValueError(f"groups must give one patient per item ({n}), got {len(groups)}.")
    keys = [str(g).strip() if g is not None and str(g).strip() else None for g in groups]
    index: dict[str, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, key in enumerate(keys):
        out[i] = index.setdefault(f"\0item{i}" if key is None else key, len(index))  # a blank patient: its own
    return out, len(index)


def class_support(labels: Sequence[int] | np.ndarray, num_classes: int, groups: Sequence | None = None
                  ) -> tuple[np.ndarray, str]:
    """
    Per class, how many independent units a bootstrap draws: its items, or, where ``groups`` names patients (not
    every item a patient of its own), its distinct patients (a patient counts for each class it has studies of); and
    the unit's name (``"item"`` or ``"patient"``). What :data:`MIN_ITEMS_PER_CLASS` is checked against: 12 studies
    of 2 patients a class drew an interval of [1.000, 1.000] that counting studies let through.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    group_of, num_groups = _group_index(groups, len(labels))
    if num_groups == len(labels):
        return np.bincount(labels, minlength=num_classes), "item"
    return np.array([len(set(group_of[labels == k].tolist())) for k in range(num_classes)]), "patient"


def _draw_groups(rng: np.random.Generator, group_of: np.ndarray, num_groups: int, resamples: int,
                 strata: np.ndarray | None = None) -> np.ndarray:
    """``B×n`` item weights of ``resamples`` bootstrap draws of whole groups with replacement (within each stratum
    when ``strata``, one label per group, is given: its group count stays): an item weighs as often as its group was
    drawn. With every item a group of its own this is the plain item bootstrap."""
    counts = np.zeros((resamples, num_groups))
    rows = np.arange(resamples)[:, None]
    for members in ([np.arange(num_groups)] if strata is None else
                    [np.flatnonzero(strata == s) for s in sorted(set(strata.tolist()))]):
        np.add.at(counts, (rows, members[rng.integers(0, len(members), size=(resamples, len(members)))]), 1.0)
    return counts[:, group_of]


def _group_strata(labels: np.ndarray, group_of: np.ndarray, num_groups: int) -> np.ndarray:
    """Each group's stratum: its class when all its items are of one class, else one shared stratum of the patients
    with studies of several classes (a stratum per set of classes left patients alone in theirs, always drawn once:
    an interval too narrow, 0.87 coverage at 95 % in a simulation of 4 classes). Every item of its own: the classes."""
    c = int(labels.max()) + 1 if len(labels) else 0
    sets = [set(labels[group_of == g].tolist()) for g in range(num_groups)]
    return np.array([next(iter(k)) if len(k) == 1 else c for k in sets])


def _method(name: str, num_groups: int, n: int, within: str) -> str:
    """How a bootstrap drew its resamples, for the reports."""
    if num_groups == n:
        return f"{name} over items, drawn with replacement{within}"
    return f"{name} over patients ({num_groups} groups of {n} items), whole patients drawn with replacement{within}"


def bootstrap_intervals(
    probs: np.ndarray, labels: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0,
    groups: Sequence | None = None,
) -> dict:
    """
    Percentile-bootstrap intervals over items of the macro one-vs-rest ROC AUC (MONAI's ``ROCAUC(average="macro")``,
    the bundles' ``val_auc`` with every class present) and of the balanced accuracy (argmax of ``probs``).

    Args:
        probs: ``n×C`` class probabilities (or any scores ranked per class).
        labels: ``n`` integer labels in ``[0, C)``.
        resamples: bootstrap resamples (items drawn with replacement, ``n`` per resample).
        level: coverage of the two-sided interval.
        seed: seed of the resampling (the same items give the same interval).
        groups: ``n`` patients (a datalist's ``group``), or ``None``: with patients, whole patients are drawn (a
            patient's studies are not independent: drawing them one by one made the interval too narrow); a blank
            one is a patient of its own.

    Returns:
        ``{"auc": [low, high] or None, "balanced_accuracy": [low, high], "level", "resamples", "resamples_used",
        "seed", "method"}``. A resample in which a class is missing is not used for the AUC (undefined there, as
        for ``ROCAUC``); ``auc`` is ``None`` when a class has no item at all (the AUC itself is then undefined).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(np.int64).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"probs must be n×C and labels n with n >= 1, got shapes {probs.shape} and {labels.shape}.")
    n, c = probs.shape
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must be in [0, {c}), got values {labels.min()}..{labels.max()}.")
    rng = np.random.default_rng(seed)
    group_of, num_groups = _group_index(groups, n)
    weights = _draw_groups(rng, group_of, num_groups, int(resamples))
    present = np.unique(labels)
    tail = 100 * (1 - level) / 2
    out: dict = {"level": level, "resamples": int(resamples), "seed": seed, "num_groups": num_groups,
                 "method": _method("percentile bootstrap", num_groups, n, "")}
    out["balanced_accuracy"] = np.percentile(_balanced_accuracy(probs, labels, weights), [tail, 100 - tail]).tolist()
    if len(present) < c:  # as ROCAUC: a class without items has no AUC, nor has their macro average
        out["auc"], out["resamples_used"] = None, 0
        return out
    support = np.stack([weights[:, labels == k].sum(1) for k in present], 1)  # B×K
    complete = (support > 0).all(1)  # every class drawn at least once
    macro = _macro_auc(probs, labels, weights[complete])
    out["resamples_used"] = int(complete.sum())
    out["auc"] = np.percentile(macro, [tail, 100 - tail]).tolist() if len(macro) else None
    return out


def _balanced_accuracy(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Balanced accuracy (mean recall of the arg-max over the classes present) under each row of item ``weights``
    (``B×n``): ``B`` values."""
    correct = probs.argmax(1) == labels
    present = np.unique(labels)
    support = np.stack([weights[:, labels == k].sum(1) for k in present], 1)  # B×K
    hits = np.stack([weights[:, (labels == k) & correct].sum(1) for k in present], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(support > 0, hits / support, np.nan), axis=1)


def _macro_auc(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest ROC AUC under each row of item ``weights`` (``B×n``): ``B`` values (NaN in a row that lacks
    a class)."""
    return np.stack([_weighted_auc(probs[:, k], labels == k, weights) for k in range(probs.shape[1])], 1).mean(1)


def paired_bootstrap(
    candidate: Sequence[np.ndarray], reference: Sequence[np.ndarray], labels: np.ndarray, resamples: int = 2000,
    level: float = 0.95, seed: int = 0, groups: Sequence | None = None,
) -> dict:
    """
    Paired percentile-bootstrap interval of the difference ``candidate − reference`` in macro one-vs-rest ROC AUC
    and balanced accuracy, two models' probabilities for the same items (e.g. DAS and uniform evaluated on one test
    list). Every resample draws the items with replacement **within each class** (the class counts stay, so the AUC
    is defined in every resample even for a class of 2 items) and scores both models on the same draw: the interval
    is that of the difference, not of each metric. Several pairs (``candidate[i]`` with ``reference[i]``: seeds of
    one experiment on the same items) are averaged in each resample: the interval of the mean difference over them.
    It reflects which items were drawn for the test list, and the seeds given; not other training seeds.

    Args:
        candidate, reference: as many ``n×C`` probability arrays, the same items in the same order.
        labels: ``n`` class indices in ``[0, C)``; every class must have an item.
        resamples, level, seed: the bootstrap's resamples, coverage and seed (the same inputs give the same interval).
        groups: ``n`` patients (a datalist's ``group``), or ``None``: with patients, whole patients are drawn, within
            their class (those with studies of several classes among themselves; a resample that then lacks a class
            is not used, ``resamples_used``) (a patient's studies are not independent: drawing them one by one made
            the interval too narrow: trial T58, 12 clips of 6 patients, [+0.094, +0.812] by clip, [0.000, 0.857] by
            patient); a blank one is a patient of its own.

    Returns:
        ``{"auc": {...}, "balanced_accuracy": {...}, "resamples", "level", "seed", "method", "class_counts"}``, each
        metric ``{"candidate": [per pair], "reference": [per pair], "difference": mean over pairs, "per_pair":
        [differences], "interval": [low, high], "pairs_higher": pairs whose difference is > 0}``.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if not len(candidate) or len(candidate) != len(reference):
        raise ValueError(f"give as many candidate as reference probability arrays (>= 1), got {len(candidate)} and "
                         f"{len(reference)}.")
    arrays = [np.asarray(p, dtype=np.float64) for p in (*candidate, *reference)]
    n, c = len(labels), arrays[0].shape[-1] if arrays[0].ndim == 2 else 0
    if any(a.shape != (n, c) for a in arrays) or c < 2:
        raise ValueError(f"every probability array must be n×C = {n}×C (C >= 2, the same for all), got shapes "
                         f"{[a.shape for a in arrays]}.")
    counts = np.bincount(labels, minlength=c)
    if labels.min() < 0 or labels.max() >= c or (counts == 0).any():
        raise ValueError(f"labels must cover every class 0..{c - 1} (the macro AUC needs items of each), got "
                         f"{counts.tolist()} items per class.")
    rng = np.random.default_rng(seed)
    group_of, num_groups = _group_index(groups, n)
    # within each class (patients of several classes among themselves): the counts stay in every resample
    weights = _draw_groups(rng, group_of, num_groups, int(resamples), _group_strata(labels, group_of, num_groups))
    tail = 100 * (1 - level) / 2
    ones = np.ones((1, n))
    out: dict = {"resamples": int(resamples), "level": level, "seed": seed, "class_counts": counts.tolist(),
                 "num_groups": num_groups,
                 "method": _method("paired percentile bootstrap", num_groups, n, " within each class")
                 + (" (patients with studies of several classes drawn among themselves)"
                    if num_groups < n and (_group_strata(labels, group_of, num_groups) == c).any() else "")}
    half = len(candidate)
    for name, score in (("auc", _macro_auc), ("balanced_accuracy", _balanced_accuracy)):
        point = [float(score(a, labels, ones)[0]) for a in arrays]
        per_pair = [point[i] - point[half + i] for i in range(half)]
        resampled = np.mean([score(arrays[i], labels, weights) - score(arrays[half + i], labels, weights)
                             for i in range(half)], axis=0)
        # a resample without some class (drawing the patients of several classes among themselves) has no macro AUC
        resampled = resampled[np.isfinite(resampled)]
        out[name] = {"candidate": point[:half], "reference": point[half:], "difference": float(np.mean(per_pair)),
                     "per_pair": per_pair, "resamples_used": int(len(resampled)),
                     "interval": np.percentile(resampled, [tail, 100 - tail]).tolist() if len(resampled) else None,
                     "pairs_higher": int(sum(d > 0 for d in per_pair))}
    return out


def per_class_metrics(probs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict[str, dict]:
    """
    Each class's ``support`` (items of the class), ``recall`` and ``precision`` (of the arg-max prediction) and
    one-vs-rest ``auc`` (of its probability; the macro AUC is their mean when all are defined): ``None`` where
    undefined (no item of the class; for precision, no item predicted as it; for the AUC, no item of another class
    either). An evaluated list without some class has no macro AUC; with 3 or more classes the others' AUCs still
    tell.

    Args:
        probs: ``n×C`` class probabilities. labels: ``n`` class indices. label_names: the ``C`` class names.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = (np.asarray(probs, dtype=np.float64).reshape(len(labels), -1) if len(labels)
             else np.zeros((0, len(label_names))))
    predicted = probs.argmax(1)
    out = {}
    for c, name in enumerate(label_names):
        positive = labels == c
        hits = int((positive & (predicted == c)).sum())
        auc = float(_weighted_auc(probs[:, c], positive, np.ones((1, len(labels))))[0]) if len(labels) else math.nan
        out[str(name)] = {"support": int(positive.sum()),
                          "recall": hits / int(positive.sum()) if positive.any() else None,
                          "precision": hits / int((predicted == c).sum()) if (predicted == c).any() else None,
                          "auc": None if math.isnan(auc) else auc}
    return out


class BalancedAccuracy(ConfusionMatrix):
    """
    Balanced accuracy (mean per-class recall) of logits/probabilities ``B×C`` against labels: class indices ``B`` or
    one-hot ``B×C`` (:func:`label_indices`),
    built on ignite's ``ConfusionMatrix`` (so it is all-reduced across ranks in distributed runs).

    Args:
        num_classes: number of classes ``C``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        device: where the running confusion matrix lives.
    """

    def __init__(
        self, num_classes: int, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(num_classes=num_classes, average=None, output_transform=output_transform, device=device)

    def update(self, output) -> None:  # type: ignore[override]
        y_pred, y = output[0], output[1]
        if isinstance(y_pred, (list, tuple)):  # decollated items (MONAI engines): C-long predictions
            y_pred = torch.stack([torch.as_tensor(p).reshape(-1) for p in y_pred])
        super().update((torch.as_tensor(y_pred).float(), label_indices(y, self.num_classes)))

    def compute(self) -> float:  # type: ignore[override]
        return balanced_accuracy_from_confusion(super().compute())


def present_classes_roc_auc(probs: torch.Tensor, onehot: torch.Tensor, average: str = "macro") -> float:
    """
    MONAI's ``compute_roc_auc`` of probabilities ``N×C`` against one-hot labels ``N×C``, whose ``macro`` average
    leaves out the classes with no positive or no negative item (their one-vs-rest AUC is undefined: MONAI's mean is
    then NaN); with every class present, or two classes, or another ``average``, MONAI's value. NaN when fewer than
    one class is left.
    """
    if average == "macro" and onehot.ndim == 2 and onehot.shape[1] > 2:
        positives = onehot.sum(dim=0)
        defined = (positives > 0) & (positives < onehot.shape[0])
        if bool(defined.any()) and not bool(defined.all()):
            return float(compute_roc_auc(probs[:, defined], onehot[:, defined], average="macro"))
    return float(compute_roc_auc(probs, onehot, average=average))


class _PresentClassesROCAUCMetric(ROCAUCMetric):
    """MONAI's ``ROCAUCMetric`` aggregated by :func:`present_classes_roc_auc`."""

    def aggregate(self, average=None):  # type: ignore[override]
        y_pred, y = self.get_buffer()
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            return super().aggregate(average)  # MONAI's error
        return present_classes_roc_auc(y_pred, y, average or self.average)  # MONAI's Average equals its text


class PresentClassesROCAUC(IgniteMetricHandler):
    """
    The one-vs-rest ROC AUC of MONAI's ``ROCAUC`` whose ``macro`` mean is over the classes the epoch's items hold
    (:func:`present_classes_roc_auc`): a class with no item (or only items) is left out of the mean, where
    ``ROCAUC(average="macro")`` is NaN in every epoch and a best model chosen by it is the first epoch's. With every
    class present (and for two classes, where one missing class leaves no AUC at all) the two are equal. The bundles'
    validation ``val_auc`` (the key metric); the evaluation's test AUC stays MONAI's, undefined when a class is
    missing.

    Args:
        average: as MONAI's ``ROCAUC`` (``"macro"``, ``"weighted"``, ``"micro"``); only ``"macro"`` leaves classes
            out.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``: probabilities ``B×C`` and one-hot labels
            ``B×C`` (e.g. ``monai.handlers.from_engine(["prob", "label_onehot"])``).
    """

    def __init__(self, average: str = "macro", output_transform: Callable = lambda x: x) -> None:
        if str(average) == "none":
            raise ValueError("PresentClassesROCAUC gives one number: average 'macro', 'weighted' or 'micro'.")
        super().__init__(metric_fn=_PresentClassesROCAUCMetric(average=average), output_transform=output_transform,
                         save_details=False)


class EpochLoss(Metric):
    """
    The loss ``loss_fn`` over all items of an epoch at once, as the validation loss early stopping and the best model
    go by (``val_loss``) and the evaluation's ``test_loss``: with a class-weighted ``CrossEntropyLoss`` (the bundles'
    ``class_weights``) the weighted mean over the epoch, ``Σ w_y·CE / Σ w_y``, as training weighs a batch. MONAI's
    ``IgniteMetricHandler(loss_fn=...)`` computes the loss of each decollated item alone, where a weighted mean over
    one item cancels its weight: it gave the unweighted loss whatever the weights. Without weights both are the
    mean over items. In distributed runs every rank's items are gathered first (``all_gather_object``: ranks may hold
    different counts, as the bundles' validation sampler splits without padding).

    Args:
        loss_fn: ``loss_fn(y_pred N×C, y N) -> scalar`` (in eval mode; the bundles' ``FrameRelevanceLoss`` is then
            its inner loss).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        device: where the loss is computed (that of the loss' class weights).
    """

    def __init__(self, loss_fn: Callable, output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu") -> None:
        self.loss_fn = loss_fn
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._items: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, output) -> None:
        y_pred, y = output[0], output[1]
        if isinstance(y_pred, (list, tuple)):  # decollated items (MONAI engines): C-long predictions
            y_pred = torch.stack([torch.as_tensor(p).reshape(-1) for p in y_pred])
        y_pred = torch.as_tensor(y_pred).detach().float()
        self._items.append((y_pred.reshape(-1, y_pred.shape[-1]).cpu(), label_indices(y, y_pred.shape[-1]).cpu()))

    def compute(self) -> float:
        items = gather_items(self._items)  # every rank takes part; counts may differ
        if not items:
            raise NotComputableError("EpochLoss must have at least one item before it can be computed.")
        y_pred = torch.cat([p for p, _ in items]).to(self._device)
        y = torch.cat([t for _, t in items]).to(self._device)
        with torch.no_grad():
            return float(self.loss_fn(y_pred, y))
