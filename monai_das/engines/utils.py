"""Small helpers for values that come from the bundle command line."""

from __future__ import annotations

import logging
from typing import Any

from monai_das.utils.config import optional  # the one rule, re-exported here for the engines and bundle configs
from monai_das.utils.logs import bounded_repr

__all__ = ["flag", "optional", "precise_bn_batches", "PRECISE_BN_AUTO_BATCHES", "sampler_warmup_epochs",
           "class_weights", "distributed_sampler"]

logger = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", "none", "null", ""}


def flag(value: Any) -> bool:
    """
    A boolean from a config/CLI value: ``True``/``False``, numbers, or the strings ``true/false``, ``yes/no``,
    ``on/off``, ``1/0`` in any case (``python -m monai.bundle run --resume true`` passes the string ``"true"``).
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}.")


#: an epoch with fewer batches than this gets precise BatchNorm statistics when ``precise_bn_batches="auto"``
PRECISE_BN_AUTO_BATCHES = 30


def precise_bn_batches(value: Any, loader: Any = None, threshold: int = PRECISE_BN_AUTO_BATCHES) -> int:
    """
    The bundle's ``precise_bn_batches`` as a batch count for :class:`monai_das.handlers.PreciseBNHandler`: ``0``
    off, ``-1`` the whole training set, ``N`` that many batches; ``"auto"`` is ``-1`` when an epoch of ``loader`` has
    fewer than ``threshold`` batches (BatchNorm's running averages, momentum 0.1, then lag the weights so much that
    eval-mode predictions can ignore the input) and ``0`` otherwise.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return -1 if loader is not None and len(loader) < int(threshold) else 0
    n = int(value)
    if n < -1:
        raise ValueError(f"precise_bn_batches must be 'auto', -1, 0 or a positive number of batches, got {value!r}.")
    return n


#: share of the training epochs spent on the sampler warm-up when ``sampler_warmup_epochs`` is ``"auto"``
WARMUP_AUTO_FRACTION = 0.2


def sampler_warmup_epochs(value: Any, max_epochs: int, val_interval: int = 1) -> int:
    """
    Epochs of encoder warm-up on random subsets (:class:`monai_das.handlers.SamplerWarmupHandler`): ``"auto"`` is
    ``floor(0.2·max_epochs)`` (15 → 3, 5 → 1, 100 → 20, fewer than 5 → 0), an integer ``>= 0`` is used as given.
    A model of the warm-up is never kept as the best one, so at least one validation (every ``val_interval``
    epochs, the bundle's ``val_interval``) must come after the warm-up: otherwise a clear error, not a run without a
    best model.
    """
    if isinstance(value, str) and value.lower() == "auto":
        epochs = int(WARMUP_AUTO_FRACTION * int(max_epochs))
        if epochs == 0 and int(max_epochs) > 0:
            import logging

            logging.getLogger(__name__).info(
                f"sampler_warmup_epochs 'auto': no encoder warm-up in a run of {int(max_epochs)} epoch(s) (it is "
                f"{WARMUP_AUTO_FRACTION:g} of max_epochs, from 5 epochs on); give --sampler_warmup_epochs 1 for one.")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
        raise ValueError(f"sampler_warmup_epochs must be 'auto' or an integer >= 0, got {value!r}.")
    else:
        epochs = int(value)
    if isinstance(val_interval, bool) or not isinstance(val_interval, int) or val_interval < 1:
        raise ValueError(f"val_interval must be an integer >= 1, got {val_interval!r}.")
    max_epochs = int(max_epochs)
    if max_epochs <= 0:
        return epochs
    if max_epochs <= epochs:
        raise ValueError(f"sampler_warmup_epochs={epochs} leaves none of the max_epochs={max_epochs} epochs for the "
                         "sampler to learn, and no epoch that may be kept as the best model; use fewer warm-up epochs.")
    last_validation = max_epochs // val_interval * val_interval
    if last_validation <= epochs:
        raise ValueError(f"with val_interval={val_interval} and max_epochs={max_epochs} the last validation is at epoch "
                         f"{last_validation or 'none'}, not after the {epochs} warm-up epochs (sampler_warmup_epochs="
                         f"{value!r}), so no model could be kept as the best; lower val_interval or the warm-up, or "
                         "raise max_epochs.")
    return epochs


def class_weights(value: Any, counts: Any = None, num_classes: int | None = None, device: Any = None,
                  label_names: Any = None):
    """
    The weight of each class in the training loss (``torch.nn.CrossEntropyLoss(weight=...)``), from the bundle's
    ``class_weights``:

    - ``None``/``"none"`` (default): ``None``, every item counts alike;
    - ``"balanced"``: ``n / (C · n_c)`` from ``counts`` (training items per class, e.g.
      :meth:`monai_das.engines.BundleData.class_counts`): each class weighs as much as the others in total, as
      scikit-learn's ``class_weight="balanced"``; a class without training items is an error naming it;
    - a list of ``C`` positive numbers, used as given.

    ``counts`` may be a callable returning them (so they are only counted for ``"balanced"``). Returns a float32
    tensor of ``C`` weights on ``device``, or ``None``. ``label_names``: the classes' names, for the messages.
    """
    import torch

    value = optional(value)
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() != "balanced":
            raise ValueError(f"class_weights must be null, 'balanced' or a list of per-class weights, got {value!r}.")
        counts = counts() if callable(counts) else counts
        if counts is None:
            raise ValueError("class_weights='balanced' needs the training items per class (counts).")
        counts = [int(c) for c in counts]
        empty = [i for i, c in enumerate(counts) if c <= 0]
        if empty:
            names = list(label_names) if label_names is not None and len(label_names) == len(counts) else None
            named = ", ".join(f"{names[i]!r} (index {i})" for i in empty) if names else empty
            raise ValueError(f"class_weights='balanced': class(es) {named} have no training items (counts "
                             f"{bounded_repr(dict(zip(names, counts)) if names else counts)}).")
        weights = [sum(counts) / (len(counts) * c) for c in counts]
        # what 'balanced' resolved to (the card and MLflow record 'balanced'; trial T57 asked what it was)
        logger.info(f"class_weights 'balanced': {[round(w, 4) for w in weights]} for the training items per class "
                    f"{counts}.")
    else:
        try:
            weights = [float(w) for w in value]
        except (TypeError, ValueError):
            raise ValueError(f"class_weights must be null, 'balanced' or a list of numbers, got {value!r}.") from None
        if not weights or any(not w > 0 or w == float("inf") for w in weights):
            raise ValueError(f"class weights must be positive finite numbers, got {value!r}.")
    if num_classes is not None and len(weights) != int(num_classes):
        raise ValueError(f"class_weights has {len(weights)} value(s) but the data has {num_classes} classes.")
    return torch.tensor(weights, dtype=torch.float32, device=device)


def distributed_sampler(dataset: Any, split: str, **kwargs: Any) -> Any:
    """
    MONAI's ``DistributedSampler`` over ``dataset`` (``kwargs``: ``even_divisible``, ``shuffle``, ...). Without
    ``even_divisible`` (the bundles' validation sampler) MONAI refuses a split with fewer items than processes,
    saying only "the dataset length is less than the number of participating ranks" (trial T62a: ``--num_val 1``
    under ``torchrun --nproc_per_node 2``); this refusal names the split and the way out.
    """
    import torch.distributed as dist
    from monai.data import DistributedSampler

    world = kwargs.get("num_replicas") or (dist.get_world_size() if dist.is_available() and dist.is_initialized()
                                           else 1)
    if not kwargs.get("even_divisible", True) and len(dataset) < world:
        cap = {"training": " (--num_train)", "validation": " (--num_val, val_fraction)"}.get(split, "")
        raise ValueError(f"the {split} split holds {len(dataset)} item(s), fewer than the {world} processes of this "
                         f"run (torchrun --nproc_per_node): give it at least {world} items{cap} or start fewer "
                         "processes.")
    return DistributedSampler(dataset, **kwargs)
