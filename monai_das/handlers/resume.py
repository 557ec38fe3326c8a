"""Handlers whose state goes into the "last" checkpoint so that a killed training resumes with nothing lost."""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import EarlyStopHandler

from monai_das.handlers.model_card import NEWER_DRAWS
from monai_das.handlers.utils import rank_world

__all__ = ["ResumableEarlyStopHandler", "EngineStateAttributes", "RandomStates", "RunSettings", "val_loss_score"]

logger = logging.getLogger(__name__)


def val_loss_score(metric_name: str = "val_loss") -> Callable:
    """Score function for early stopping on a loss metric: ``-engine.state.metrics[metric_name]`` (higher is better)."""

    def _score(engine: Any) -> float:
        if metric_name not in engine.state.metrics:
            raise KeyError(
                f"early stopping needs the metric {metric_name!r} in engine.state.metrics; "
                f"available: {sorted(engine.state.metrics)}."
            )
        return -float(engine.state.metrics[metric_name])

    return _score


class ResumableEarlyStopHandler(EarlyStopHandler):
    """
    :class:`monai.handlers.EarlyStopHandler` with ``state_dict()``/``load_state_dict()`` (ignite ``EarlyStopping``'s
    ``counter`` and ``best_score``), so the patience count survives a restart when the handler is part of the
    checkpoint's ``save_dict``. A state loaded before ``set_trainer()`` is kept and applied when the trainer is set.

    A run that had stopped early stays stopped: when the loaded state's ``counter`` has reached ``patience`` (the
    run whose checkpoint it is stopped there), the trainer ends at ``Events.STARTED`` without training another epoch,
    as a run resumed after its last epoch does; otherwise resuming a run killed after it stopped (during its
    evaluation, say) would train on past the point where the uninterrupted run ended.

    Arguments are those of :class:`monai.handlers.EarlyStopHandler`, plus ``start_epoch``: validations at trainer
    epochs ``<= start_epoch`` neither count towards the patience nor set the best score (e.g. the sampler warm-up of
    :class:`~monai_das.handlers.SamplerWarmupHandler`, whose validation loss says little about the trained sampler).
    """

    def __init__(self, *args: Any, start_epoch: int = 0, **kwargs: Any) -> None:
        self._pending_state: dict | None = None
        self.start_epoch = int(start_epoch)
        self._trainer: Any = None
        super().__init__(*args, **kwargs)

    def __call__(self, engine: Any) -> None:
        if self.start_epoch > 0 and self._trainer is not None and self._trainer.state.epoch <= self.start_epoch:
            return
        super().__call__(engine)

    def set_trainer(self, trainer: Any) -> None:
        from ignite.engine import Events

        self._trainer = trainer
        if self._handler is not None and self._pending_state is None:  # MONAI makes a new one: keep the count
            self._pending_state = dict(self._handler.state_dict())
        super().set_trainer(trainer)
        if self._pending_state is not None:
            self._handler.load_state_dict(self._pending_state)  # type: ignore[union-attr]
            self._pending_state = None
        # after the trainer's own STARTED handlers (the checkpoint loader among them): the loaded state is known then
        if not trainer.has_event_handler(self._stop_if_stopped, Events.STARTED):
            trainer.add_event_handler(Events.STARTED, self._stop_if_stopped)

    def _stop_if_stopped(self, trainer: Any) -> None:
        if self.patience > 0 and self.counter >= self.patience:
            logger.info(f"the run had stopped early at epoch {trainer.state.epoch} (validation score not improved in "
                        f"{self.counter} validations, patience {self.patience}): nothing more to train.")
            trainer.terminate()

    def state_dict(self) -> dict:
        if self._handler is None:
            return dict(self._pending_state or {"counter": 0, "best_score": None})
        # plain numbers: a score_function returning MONAI's ROCAUC value (np.float64) made last.pt unloadable with
        # weights_only=True, so the run could not resume (trial W)
        return {k: _plain(v) for k, v in self._handler.state_dict().items()}

    def load_state_dict(self, state_dict: Mapping) -> None:
        if "counter" not in state_dict or "best_score" not in state_dict:
            raise ValueError(f"early-stopping state needs 'counter' and 'best_score', got {sorted(state_dict)}.")
        state = dict(state_dict)
        if self._handler is None:
            self._pending_state = state
        else:
            self._handler.load_state_dict(state)

    @property
    def counter(self) -> int:
        """Epochs since the last improvement."""
        return int(self.state_dict()["counter"])


def _plain(value: Any) -> Any:
    """Numbers as Python scalars so the checkpoint loads with ``torch.load(..., weights_only=True)``."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class EngineStateAttributes:
    """
    Makes chosen ``engine.state`` attributes checkpointable (``state_dict``/``load_state_dict``), e.g. an evaluator's
    ``best_metric`` and ``best_metric_epoch``, which ignite's own ``Engine.state_dict`` leaves out.

    Args:
        engine: the ignite engine (e.g. the validation ``SupervisedEvaluator``).
        attributes: names of ``engine.state`` attributes to save and restore.
    """

    def __init__(self, engine: Any, attributes: Sequence[str] = ("best_metric", "best_metric_epoch")) -> None:
        self.engine = engine
        self.attributes = tuple(attributes)

    def state_dict(self) -> dict:
        return {a: _plain(getattr(self.engine.state, a, None)) for a in self.attributes}

    def load_state_dict(self, state_dict: Mapping) -> None:
        for a in self.attributes:
            if a in state_dict:
                setattr(self.engine.state, a, state_dict[a])


def _numpy_state(rs: np.random.RandomState) -> dict:
    """A ``numpy`` ``RandomState`` as tensors and numbers (loadable with ``torch.load(..., weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = rs.get_state()
    if name != "MT19937":
        raise ValueError(f"cannot save a numpy random state of kind {name!r} (expected 'MT19937').")
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(rs: np.random.RandomState, state: Mapping) -> None:
    keys = np.asarray(torch.as_tensor(state["keys"]).numpy(), dtype=np.uint32)
    rs.set_state(("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"])))


def _randomizables(transform: Any) -> list:
    """
    Every :class:`monai.transforms.Randomizable` in ``transform`` (a transform, a ``Compose`` or a list), in order,
    with the random transforms a random transform holds as attributes: a dictionary transform draws from its array
    twin (``RandAffined.rand_affine``, itself holding a ``RandAffineGrid``; ``RandGaussianNoised.rand_gaussian_noise``),
    each with a generator of its own.
    """
    from monai.transforms import Randomizable

    found: list = []
    stack = [transform]
    while stack:
        t = stack.pop(0)
        if t is None or any(t is f for f in found):
            continue
        if isinstance(t, (list, tuple)):
            stack[:0] = list(t)
            continue
        inner = []
        if isinstance(t, Randomizable):
            found.append(t)
            inner = [v for k, v in getattr(t, "__dict__", {}).items() if k != "transforms" and isinstance(v, Randomizable)]
        children = getattr(t, "transforms", None)
        stack[:0] = (list(children) if isinstance(children, (list, tuple)) else []) + inner
    return found


class RandomStates:
    """
    Every random-number generator a training run draws from, as a checkpointable object
    (``state_dict()``/``load_state_dict()``): Python's ``random``, numpy's global generator, torch's CPU generator
    and every CUDA device's (in a distributed run, the rank's own device's: every rank sets its device's stream to
    the saving rank's, as all ranks are seeded alike and draw in step), the ``R`` generator of each
    :class:`monai.transforms.Randomizable` in ``transforms`` (random augmentation run in the main process) and any
    extra ``torch.Generator`` (e.g. a data loader's).

    Put it in the "last" checkpoint's ``save_dict`` (the bundle's ``train#resume_dict``): a run killed after epoch
    ``n`` and resumed then draws the same dropout masks, Gumbel noise, shuffling order and augmentation as the run
    that was never interrupted, so the two end with the same weights bit for bit (same machine, same threads).
    ``set_determinism`` at start-up seeds everything; ``CheckpointLoader`` (``Events.STARTED``) then overwrites
    the seeded state with the saved one. The checkpoint is written at ``Events.EPOCH_COMPLETED`` after validation, so
    nothing between the save and the next epoch may draw random numbers (nothing in the bundle does).

    The state is stored as tensors and plain numbers, so the checkpoint still loads with ``weights_only=True``.

    Args:
        transforms: training transforms (a ``Compose``, a list or ``None``); their random generators are included.
        generators: extra ``torch.Generator`` objects to include.
    """

    def __init__(self, transforms: Any = None, generators: Sequence[torch.Generator] | None = None) -> None:
        self.transforms = _randomizables(transforms)
        self.generators = list(generators or [])

    def state_dict(self) -> dict:
        ranks = torch.cuda.is_available() and rank_world()[1] > 1  # one rank of several, each on its own device
        version, internal, gauss_next = random.getstate()
        state = {
            "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next},
            "numpy": _numpy_state(np.random.mtrand._rand),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and not ranks else [],
            "transforms": [_numpy_state(t.R) for t in self.transforms],
            "generators": [g.get_state() for g in self.generators],
        }
        if ranks:
            # each rank draws on its own device, all seeded alike and in step: the saving rank's own stream is every
            # rank's. (Its list of every device's would hand rank 1 the cuda:1 stream rank 0 never drew from, still
            # at the seed: R70b; and it makes a context on every device.)
            state["cuda_rank_device"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        for key in ("python", "numpy", "torch"):
            if key not in state_dict:
                raise ValueError(f"random-state checkpoint entry needs {key!r}; got {sorted(state_dict)}.")
        for name, saved, have in (("transforms", state_dict.get("transforms", []), self.transforms),
                                  ("generators", state_dict.get("generators", []), self.generators)):
            if len(saved) != len(have):
                raise ValueError(
                    f"the checkpoint holds {len(saved)} random {name} states, this run has {len(have)}: the training "
                    f"transforms or data loaders differ from the run that wrote it; resume with the same config."
                )
        py = state_dict["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
        _set_numpy_state(np.random.mtrand._rand, state_dict["numpy"])
        torch.set_rng_state(torch.as_tensor(state_dict["torch"], dtype=torch.uint8))
        cuda = list(state_dict.get("cuda", []))
        own = state_dict.get("cuda_rank_device")
        if own is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(torch.as_tensor(own, dtype=torch.uint8))  # this rank's device
        elif cuda and torch.cuda.is_available():
            if len(cuda) != torch.cuda.device_count():
                logger.warning(f"the checkpoint has CUDA random states for {len(cuda)} devices, this machine has "
                               f"{torch.cuda.device_count()}: CUDA random streams are not restored.")
            else:
                torch.cuda.set_rng_state_all(cuda)
        for t, s in zip(self.transforms, state_dict.get("transforms", [])):
            _set_numpy_state(t.R, s)
        for g, s in zip(self.generators, state_dict.get("generators", [])):
            g.set_state(torch.as_tensor(s, dtype=torch.uint8))


class RunSettings:
    """
    The settings that define what a checkpoint is (method, keep ratio, ``T``, classes, ...), stored in it and checked
    when it is loaded: resuming ``last.pt`` of a ``uniform`` run as ``random``, or a DAS run as DPS, raises an error
    naming both values instead of silently training something else (or failing with a raw key error). A setting the
    checkpoint does not record is an error too, unless this run leaves it at ``None`` (settings added to the bundle
    later default to ``None``, what older checkpoints were trained with).

    ``recipe`` settings (learning rates, batch size, loss terms, ...) are stored and checked alike: a resumed run
    equals an uninterrupted one only under the same recipe, and a changed one would otherwise be ignored (the
    optimizer's state brings back the checkpoint's learning rate) or silently mixed into the rest of the run. A
    checkpoint written before they were recorded is resumed with a warning naming what cannot be checked.

    Args:
        settings: name → value (numbers, strings, booleans, ``None``, lists of them, or dicts such as
            ``synthetic_options``).
        checkpoint: path of the checkpoint, only for the error message.
        recipe: name → value of the training recipe, checked like ``settings`` (names must not repeat them).
        advisory: name → value of what changes a resumed run's float rounding but not what it trains (the torch
            thread count): stored, and a difference warned about (the run goes on, not bit for bit equal to an
            uninterrupted one), not refused (a run may go on on another machine).
    """

    def __init__(self, settings: Mapping[str, Any], checkpoint: str | os.PathLike | None = None,
                 recipe: Mapping[str, Any] | None = None, advisory: Mapping[str, Any] | None = None) -> None:
        self.settings = {str(k): _plain_setting(v) for k, v in settings.items()}
        self.recipe = {str(k): _plain_setting(v) for k, v in (recipe or {}).items()}
        self.advisory = {str(k): _plain_setting(v) for k, v in (advisory or {}).items()}
        names = [*self.settings, *self.recipe, *self.advisory]
        both = sorted({k for k in names if names.count(k) > 1})
        if both:
            raise ValueError(f"RunSettings: {', '.join(both)} given twice (settings, recipe, advisory).")
        self.checkpoint = checkpoint

    def state_dict(self) -> dict:
        return {**self.settings, **self.recipe, **self.advisory}

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.check(state_dict)

    def check(self, state_dict: Mapping, warn: bool = True) -> None:
        """Refuse (``ValueError``) a checkpoint's settings ``state_dict`` other than this run's; with ``warn``, also say
        what cannot be checked or changes rounding (:meth:`load_state_dict` is this check)."""
        where = f"checkpoint '{self.checkpoint}'" if self.checkpoint else "the checkpoint"
        other = [d for k, v in self.advisory.items() if k in state_dict for d in _differences(k, state_dict[k], v)]
        if other and warn:
            logger.warning(
                f"{where} was written with other settings that change float rounding ({'; '.join(other)}): the "
                "resumed run goes on, but will not equal an uninterrupted run bit for bit"
                + "".join(f"; give --{k} {_option_value(state_dict[k])} for that" for k in self.advisory
                          if k in state_dict and _differences(k, state_dict[k], self.advisory[k]))
                + "."
            )
        now = {**self.settings, **self.recipe}
        by_key = {k: _differences(k, state_dict[k], v) for k, v in now.items() if k in state_dict}
        diffs = [d for found in by_key.values() for d in found]
        # a setting added after the checkpoint was written is accepted at its default None (the behaviour then)
        missing = sorted(k for k, v in self.settings.items() if k not in state_dict and v is not None)
        if diffs or missing:
            detail = "; ".join(diffs + ([f"not recorded: {', '.join(missing)}"] if missing else []))
            # temperature_epochs counts max_epochs only when a schedule is on in both (else --temperature_schedule)
            # sampler_lr follows lr (lr / 10 by default): not hinted when both are the default share of their lr
            derived = all(isinstance(d.get(k), (int, float)) for d in (state_dict, now) for k in ("lr", "sampler_lr")) \
                and all(math.isclose(d["sampler_lr"], d["lr"] / 10) for d in (state_dict, now)) and by_key.get("lr")
            # a volume's num_frames is its grid along slice_axis (spatial_size), not an option of its own
            hints = [_OPTION_HINTS[k].format(_option_value(state_dict[k])) for k, found in by_key.items()
                     if found and k in _OPTION_HINTS and not (k == "sampler_lr" and derived)
                     and (k != "temperature_epochs" or None not in (state_dict[k], now[k]))
                     and (k != "num_frames" or now.get("layout") == "video")]
            give = f" To resume, give the checkpoint's: {'; '.join(hints)}." if hints else ""
            if any(d.startswith("data.datalist:") for d in diffs):
                give += (" The datalist's bytes changed since the checkpoint was written (its SHA-256 above): a "
                         "resumed run must train on the items it started with; put the former file back (rows "
                         "added, removed, relabelled or reordered all count), or start a new run on the edited one.")
            for key, what in NEWER_DRAWS.items():
                if any(d.startswith(f"data.{key}") for d in diffs):
                    give += (f" This version draws the validation list from the same options otherwise ({what}, "
                             f"{key}) than the checkpoint's did: no option draws the older list; train anew, or give "
                             "the datalist a validation list.")
            raise ValueError(
                f"{where} was written with other settings than this run ({detail}).{give} Resume with the same "
                f"settings, or start a new run (another bundle_root, or resume=false after moving the checkpoint away)."
            )
        unrecorded = sorted(k for k in self.recipe if k not in state_dict)
        if unrecorded and warn:
            logger.warning(
                f"{where} does not record the training recipe ({', '.join(unrecorded)}): it was written before "
                f"they were stored, so they cannot be checked; the resumed run equals an uninterrupted one only if "
                f"they are the values it was trained with."
            )


#: the bundle option that sets an entry, where its name is not the option's (``warmup_epochs`` is
#: ``sampler_warmup_epochs`` resolved, "auto" counting ``max_epochs``: extending ``--max_epochs`` on resume changed it;
#: trial X) or its value is no option value; ``{}``: the checkpoint's value
_OPTION_HINTS = {
    "warmup_epochs": "--sampler_warmup_epochs {} (its warm-up; 'auto' counts max_epochs)",
    "temperature_epochs": "--max_epochs {} (the temperature schedule spans the training's max_epochs)",
    **{k: f"--{k} {{}}" for k in ("seed", "method", "keep_ratio", "temporal_head", "context_frames", "data_seed",
                                  "num_train", "num_val", "batch_size", "lr", "sampler_lr", "sampler_gradient",
                                  "relevance_weight", "class_weights", "temperature_schedule", "precise_bn_batches",
                                  "augment_prob", "augment_rotate", "augment_scale", "val_interval", "encoder", "size",
                                  "dataset", "num_workers", "num_frames", "spatial_size", "keep_latest_best")},
}

def _option_value(value: Any) -> str:
    """A value as the bundle's command line takes it (a list without spaces; ``'$None'`` for ``None``: MONAI's
    ``bundle run`` drops a ``None`` override)."""
    value = _plain_setting(value)
    if value is None:
        return "'$None'"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


#: entries not compared: facts of the training data recorded in a setting (the data themselves are compared through
#: the ``data`` recipe entry: the datalist's SHA-256), so a last.pt written before they were recorded resumes
_NOT_COMPARED = ("preprocessing.modalities", "preprocessing.geometry")


def _differences(name: str, saved: Any, now: Any) -> list[str]:
    """``"name: checkpoint …, this run …"`` for a value that differs; dictionaries name the entries that do."""
    if name in _NOT_COMPARED:
        return []
    saved, now = _plain_setting(saved), _plain_setting(now)
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        return [d for k in sorted(set(saved) | set(now), key=str)
                for d in _differences(f"{name}.{k}", saved.get(k), now.get(k))]
    return [] if saved == now else [f"{name}: checkpoint {saved!r}, this run {now!r}"]


def _plain_setting(value: Any) -> Any:
    value = _plain(value)
    return [_plain_setting(v) for v in value] if isinstance(value, (list, tuple)) else value
