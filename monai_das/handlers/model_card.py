"""
Model card: the bundle's ``metadata.json`` rewritten with the facts of the run that trained (and evaluated) a model,
written next to the model (``<ckpt_dir>/metadata.json``) so that ``monai.bundle ckpt_export --meta_file`` embeds it
in the export and :meth:`monai_das.deploy.DASPredictor.from_path` reads it back (as plain JSON).

The card is the bundle metadata (read with ``json.loads``; its ``eval_metrics`` placeholders dropped) with

- ``network_data_format`` from the run's data facts: ``inputs#image``: ``num_channels`` and ``spatial_shape`` such
  that MONAI's tools (``verify_net_in_out``, ``ckpt_export``/``onnx_export`` without ``input_shape``) build the
  input ``(1, num_channels, *spatial_shape)``: ``C`` and ``[D, H, W]`` for volumes (input ``B×C×D×H×W``), ``T``
  and ``[C, H, W]`` for clips (input ``B×T×C×H×W``); ``outputs#pred``: one logit per class, ``channel_def`` the
  class names;
- ``eval_metrics``: only what was measured: the validation metrics of the best checkpoint (``val_auc``, ...) when
  training, the test metrics (``auc``, ``accuracy``, ...) when evaluating; a metric that was not measured is absent;
- ``das_model`` (:data:`CARD_KEY`): plain data: ``layout``, ``spatial_size``, ``image_shape``, ``slice_axis``,
  ``num_frames`` (``T``), ``num_kept`` (``k``), ``in_channels``, ``num_classes``, ``label_names``, ``method``,
  ``keep_ratio``, ``temporal_head``, ``encoder``, ``encoder_kwargs``, ``recipe`` (the preprocessing recipe),
  ``source``, ``datalist``, ``datalist_sha256``, ``checkpoint_sha256`` (of the model file it describes) and
  ``validation``/``evaluation`` (where the metrics come from).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_das.handlers.utils import attach_once, rank_world
from monai_das.networks.factory import architecture_kwargs, is_weight_argument
from monai_das.networks.utils import unwrap_network
from monai_das.utils.config import CARD_KEY, find_config_code
from monai_das.utils.io import file_digest, input_folder_name, write_json_atomic
from monai_das.utils.logs import MAX_NAMED, bounded_repr

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["CARD_KEY", "ModelCardSaver", "build_model_card", "card_input_shape", "card_mismatches", "check_model_card",
           "model_facts", "network_data_format", "output_dir_at_k", "evaluation_output_dir", "other_data",
           "trained_options"]

logger = logging.getLogger(__name__)

#: split-identity markers of a validation list that this version draws otherwise than an older one did from the same
#: datalist and options (recorded only where the lists differ), with what changed
NEWER_DRAWS = {"every_class_validated": "one patient of every class",
               "validation_classes_by_name": "the classes taken by name, not by index"}
#: facts that identify the network a card describes (compared before an evaluation keeps older metrics); k as
#: ``num_kept`` (another ``keep_ratio`` that keeps as many frames, or any ratio of ``full``, is the same model)
_IDENTITY = ("layout", "spatial_size", "slice_axis", "num_frames", "num_kept", "in_channels", "num_classes", "method",
             "temporal_head", "encoder", "context_frames")


#: facts a run on a trained checkpoint must share with its card (``keep_ratio``/``num_kept`` not: any k at inference)
_MATCH = ("layout", "spatial_size", "slice_axis", "num_frames", "in_channels", "label_names", "method", "temporal_head",
          "encoder", "encoder_kwargs", "context_frames", "sampler_kwargs")
#: what a model was trained on: an evaluation keeps the card's and records its own under ``evaluation#data``
_PROVENANCE = ("source", "datalist", "datalist_sha256", "splits")
#: preprocessing steps that may differ at inference (a still image accepted with ``min_frames`` 1)
#: modalities, geometry: facts of the training data (its datalist is compared), no step
_RECIPE_FREE = ("min_frames", "modalities", "geometry")


# ------------------------------------------------------------------------------------------------------ plain data
def plain(value: Any) -> Any:
    """``value`` as JSON data: tensors/numpy → numbers/lists, tuples → lists, paths → str, NaN/inf → ``None``,
    other objects (a module passed as ``encoder``) → their ``module.QualifiedName``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    kind = value if isinstance(value, type) else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _metric(value: Any) -> float | int | None:
    """A finite scalar metric, else ``None`` (not measured: left out of the card)."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _read_json(path: str | os.PathLike) -> dict | None:
    """A metadata file or an earlier card: plain JSON (never a config parser); ``None`` when unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:
        logger.warning(f"cannot read '{path}' as JSON: {e}")
        return None
    return value if isinstance(value, dict) else None


# ------------------------------------------------------------------------------------------------------- the card
def model_facts(
    info: Mapping,
    recipe: Mapping | None = None,
    method: str | None = None,
    keep_ratio: float | None = None,
    temporal_head: str | None = None,
    encoder: Any = None,
    encoder_kwargs: Mapping | None = None,
    num_kept: int | None = None,
    context_frames: int = 0,
    sampler_kwargs: Mapping | None = None,
) -> dict:
    """
    The card's ``das_model`` section from the run's data facts ``info`` (:attr:`monai_das.engines.BundleData.info`),
    the preprocessing ``recipe`` and the network keys. ``num_kept`` (``k``) defaults to what
    :func:`monai_das.networks.build_classifier` keeps (``T`` for ``full``).
    """
    from monai_das.networks import num_kept as default_num_kept

    missing = [k for k in ("layout", "num_frames", "in_channels", "num_classes", "spatial_size") if k not in info]
    if missing:
        raise ValueError(f"the data facts (info) lack {missing}; got keys {sorted(info)}.")
    t = int(info["num_frames"])
    if num_kept is None and method is not None:
        num_kept = t if str(method).lower() == "full" else default_num_kept(t, float(keep_ratio or 1.0))
    labels = info.get("label_names") or [str(i) for i in range(int(info["num_classes"]))]
    facts = {
        "layout": info["layout"],
        "spatial_size": info["spatial_size"],
        "image_shape": info.get("image_shape"),
        "slice_axis": info.get("slice_axis", 0) if info["layout"] == "volume" else None,
        "num_frames": t,
        "num_kept": num_kept,
        "in_channels": info["in_channels"],
        "num_classes": info["num_classes"],
        "label_names": [str(n) for n in labels],
        "method": method,
        "keep_ratio": keep_ratio,
        "temporal_head": temporal_head,
        "encoder": encoder,
        "encoder_kwargs": dict(encoder_kwargs or {}),
        "context_frames": int(context_frames),
        "sampler_kwargs": dict(sampler_kwargs or {}),
        "recipe": dict(recipe) if recipe is not None else None,
        "source": info.get("source"),
        "datalist": info.get("datalist"),
        "datalist_sha256": info.get("datalist_sha256"),
        "splits": info.get("splits"),
    }
    return plain(facts)


def network_data_format(template: Mapping | None, facts: Mapping) -> dict:
    """
    ``network_data_format`` of the card: the template's (type, format, dtype, ...) with the input's
    ``num_channels``/``spatial_shape``/``channel_def`` and the output's ``num_channels``/``spatial_shape``/
    ``channel_def`` from ``facts`` (see the module docstring for the video convention).
    """
    fmt = copy.deepcopy(dict(template or {}))
    inputs, outputs = dict(fmt.get("inputs") or {}), dict(fmt.get("outputs") or {})
    in_key = next(iter(inputs), "image")
    out_key = next(iter(outputs), "pred")
    image = dict(inputs.get(in_key) or {}) if isinstance(inputs.get(in_key), Mapping) else {}
    pred = dict(outputs.get(out_key) or {}) if isinstance(outputs.get(out_key), Mapping) else {}
    c, t = int(facts["in_channels"]), int(facts["num_frames"])
    size = [int(s) for s in facts["spatial_size"]]
    if facts["layout"] == "video":  # B×T×C×H×W = (1, num_channels, *spatial_shape) with num_channels = T
        num_channels, shape = t, [c, *size[-2:]]
        channel_def = {str(i): f"frame {i}" for i in range(t)}
    else:
        num_channels, shape = c, size
        old = image.get("channel_def")
        channel_def = dict(old) if isinstance(old, Mapping) and len(old) == c else (
            {"0": "image"} if c == 1 else {str(i): f"channel {i}" for i in range(c)})
    image.setdefault("type", "image")
    image.setdefault("format", "magnitude")
    image.setdefault("dtype", "float32")
    image.update(num_channels=num_channels, spatial_shape=shape, channel_def=channel_def)
    out_range = (facts.get("recipe") or {}).get("output_range")
    if isinstance(out_range, list) and len(out_range) == 2:
        image["value_range"] = out_range
    image.setdefault("value_range", [0, 1])
    image.setdefault("is_patch_data", False)
    labels = list(facts["label_names"])
    pred.setdefault("type", "logits")
    pred.setdefault("format", "classes")
    pred.setdefault("dtype", "float32")
    pred.setdefault("value_range", [])
    pred.setdefault("is_patch_data", False)
    pred.update(num_channels=len(labels), spatial_shape=[len(labels)],
                channel_def={str(i): name for i, name in enumerate(labels)})
    fmt["inputs"], fmt["outputs"] = {**inputs, in_key: image}, {**outputs, out_key: pred}
    return fmt


def image_classes(facts: Mapping) -> str:
    """The card's ``image_classes``: this model's input, from ``facts``."""
    c, t, size = int(facts["in_channels"]), int(facts["num_frames"]), [int(s) for s in facts["spatial_size"]]
    if facts.get("layout") == "video":
        colour = "grayscale" if c == 1 else "RGB"
        return (f"a clip of T={t} frames (network input B×T×C×H×W), {c} channel(s) ({colour}), "
                f"frames resized to {size[-2]}×{size[-1]}, intensities scaled to [0, 1]; network_data_format gives T "
                "as num_channels and [C, H, W] as spatial_shape, so that MONAI's tools build the (1, T, C, H, W) test "
                "input")
    return (f"{c} channel(s), intensities scaled to [0, 1], resized to the grid {size} (D, H, W as oriented by the "
            f"recipe's axcodes); T={t} slices taken along slice_axis {facts.get('slice_axis')}")


def build_model_card(metadata: Mapping | None, facts: Mapping, eval_metrics: Mapping | None = None) -> dict:
    """
    The card: ``metadata`` (the bundle's ``metadata.json``; its ``eval_metrics`` are dropped) with
    ``network_data_format`` rewritten from ``facts``, the measured ``eval_metrics`` (only finite numbers; the key is
    absent when nothing was measured) and ``facts`` under :data:`CARD_KEY`.
    """
    card = copy.deepcopy(dict(metadata or {}))
    card.pop("eval_metrics", None)
    card["network_data_format"] = network_data_format(card.get("network_data_format"), facts)
    names = facts.get("label_names")
    if names:  # this model's classes, not the template's examples (an 11-class model's card named 'vessel, aneurysm')
        card["label_classes"] = (f"integer class index, {len(names)} classes: "
                                 + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
    if facts.get("spatial_size") and facts.get("in_channels") and facts.get("num_frames"):
        card["image_classes"] = image_classes(facts)  # this model's input (the template said "default 28x28x28")
    if facts.get("datalist"):  # this model's data, not the template's list of sources (trial T56: "Synthetic ...")
        digest = facts.get("datalist_sha256")
        card["data_source"] = (f"the user's own studies: datalist '{Path(str(facts['datalist'])).name}'"
                               + (f" (SHA-256 {str(digest)[:16]}...)" if digest else "")
                               + f"; path and digest in {CARD_KEY}#datalist, #datalist_sha256")
    elif facts.get("source") and card.get("data_source"):
        card["data_source"] = f"{card['data_source']}. This model: dataset '{facts['source']}'"
    measured = {str(k): _metric(v) for k, v in (eval_metrics or {}).items()}
    measured = {k: v for k, v in measured.items() if v is not None}
    if measured:
        card["eval_metrics"] = measured
    card[CARD_KEY] = plain(dict(facts))
    return card


def _validation_metrics(card: Mapping) -> dict:
    """The training's validation metrics (``val_*``) among a card's ``eval_metrics``; an evaluation's are left out."""
    return {k: v for k, v in (card.get("eval_metrics") or {}).items() if str(k).startswith("val")}


def card_input_shape(card: Mapping, batch: int = 1) -> list[int]:
    """``[batch, *item shape]`` of the network input the card describes (``B×C×D×H×W`` or ``B×T×C×H×W``)."""
    facts = card.get(CARD_KEY) if isinstance(card, Mapping) else None
    if isinstance(facts, Mapping) and isinstance(facts.get("image_shape"), list):
        return [int(batch), *(int(s) for s in facts["image_shape"])]
    image = (card.get("network_data_format") or {}).get("inputs", {}).get("image", {})
    shape = image.get("spatial_shape")
    if not isinstance(image.get("num_channels"), int) or not isinstance(shape, list) or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ValueError("the model card has no input shape: no das_model#image_shape and no integer "
                         "network_data_format#inputs#image num_channels/spatial_shape.")
    return [int(batch), int(image["num_channels"]), *shape]


# ---------------------------------------------------------------------------------------------------- the handler
def card_mismatches(trained: Mapping, facts: Mapping) -> list[tuple[str, Any, Any]]:
    """
    ``(key, trained value, this run's value)`` for every network key, data fact and preprocessing step (``recipe.<step>``)
    where a run's ``facts`` (:func:`model_facts`) differ from a trained model's card section ``trained``; keys a card
    does not record are not compared, nor those that may change at inference (``keep_ratio``, ``num_kept``,
    ``recipe.min_frames``).
    """
    def value(section: Mapping, key: str) -> Any:
        v = plain(section.get(key))
        if key == "encoder_kwargs" and isinstance(v, dict):  # where weights came from: before the checkpoint's load
            v = {k: x for k, x in v.items() if not is_weight_argument(k)}
        return v

    out = []
    for key in _MATCH:
        if key in trained and value(trained, key) != value(facts, key):
            out.append((key, value(trained, key), value(facts, key)))
    before, now = trained.get("recipe"), facts.get("recipe")
    if isinstance(before, Mapping) and isinstance(now, Mapping):
        shown = {k for k, _, _ in out}
        fixed_range = before.get("intensity_range") is not None and now.get("intensity_range") is not None
        # a volume model trained on a ready-made dataset (no datalist), run on one too: its intensity steps are the
        # dataset's own (BundleData.intensity_recipe), not options a run could give, and cards before volume bundle
        # 0.6.5 recorded the unused option values there; a run on a datalist's files is still compared (the options'
        # default percentiles would stretch them where the card says otherwise)
        dataset_intensity = (trained.get("layout") == "volume" and not trained.get("datalist")
                             and not facts.get("datalist"))
        for step in sorted(before):  # the steps the card records (a step added by a later version is not compared)
            if (step in _RECIPE_FREE or step in shown or (step == "percentiles" and fixed_range)
                    or (dataset_intensity and step in ("intensity_range", "percentiles"))
                    or plain(before.get(step)) == plain(now.get(step))):
                continue  # percentiles are not used where a fixed intensity_range scales
            out.append((f"recipe.{step}", plain(before.get(step)), plain(now.get(step))))
    return out


def _option(key: str, value: Any, trained: Mapping) -> str:
    """The bundle option (with the trained value) that gives ``key``, for the error message."""
    step = key.removeprefix("recipe.")
    if key in ("label_names", "num_classes"):
        names = trained.get("label_names")
        if trained.get("datalist"):
            short = isinstance(names, list) and len(names) <= MAX_NAMED and all(len(str(n)) <= 80 for n in names)
            given = json.dumps(names) if short else "<the card's das_model#label_names>"  # a hostile card's: bounded
            return (f"the classes {bounded_repr(names)} in this order: --datalist {trained['datalist']} (the "
                    f"training's) --label_names '{given}', or a JSON datalist (with its 'training' list: the bundle "
                    "reads the grid and channels from those files) whose top-level 'labels' names them ({\"0\": name, "
                    "...}; a class may have no items); without the "
                    "training files, the Deploy app (python -m monai_das.deploy) classifies from the model alone")
        run, splits = trained.get("run_params"), trained.get("splits")
        dataset = ((run.get("dataset") if isinstance(run, Mapping) else None)
                   or (splits.get("dataset") if isinstance(splits, Mapping) else None))
        return (f"--dataset {dataset} (the training's: classes {bounded_repr(names)})"
                if dataset and dataset != "datalist" else f"the training's --dataset (classes {bounded_repr(names)})")
    cube = isinstance(value, list) and len(set(value)) == 1
    if step == "spatial_size":
        # video frames and the volume presets (MedMNIST3D, synthetic: no datalist) take their grid from --size
        if cube and (trained.get("layout") == "video" or not trained.get("datalist")):
            return f"--size {value[0]}"
        return f"--spatial_size \"{value}\""
    if key == "in_channels" and trained.get("layout") == "volume":
        return f"images with {value} channel(s), as the training's"
    if step == "num_frames" and trained.get("layout") == "volume":
        return "--spatial_size and --slice_axis of the training (T is the grid along the slice axis)"
    if step == "grayscale":
        return f"--in_channels {1 if value else 3}"
    if step == "layout":
        return f"the {value} bundle"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return f"--{step} {text if isinstance(value, (int, float, str)) and ' ' not in text else repr(text)}"


#: how a user gets the card that describes a checkpoint, said wherever a card of another checkpoint is refused
WRITE_CARD_AGAIN = ("resume the training of this checkpoint (--resume True: its next save writes model.pt and its card "
                    "again), or move the card away and re-run the bundle's evaluation on the checkpoint with the "
                    "training's options (evaluate.json writes models/metadata.json beside it)")


def card_describes(card: Any, checkpoint_sha256: str | None) -> bool | None:
    """
    The one rule by which a model card describes a model file: its ``das_model#checkpoint_sha256`` is the SHA-256 of
    that checkpoint (``checkpoint_sha256``: the file's :func:`~monai_das.utils.io.file_digest`, or the digest an
    export records of the checkpoint it was made from). ``True`` when they are equal; ``False`` when the card records
    another file's; ``None`` when the card (or ``checkpoint_sha256``) records none (a card written before cards
    recorded their checkpoint, a file that is not a card): nothing can be said, and each caller decides.
    """
    facts = card.get(CARD_KEY) if isinstance(card, Mapping) else None
    recorded = facts.get("checkpoint_sha256") if isinstance(facts, Mapping) else None
    if not isinstance(recorded, str) or not isinstance(checkpoint_sha256, str):
        return None
    return recorded == checkpoint_sha256


def _card_path(checkpoint: str | os.PathLike, card_path: str | os.PathLike | None = None) -> Path:
    """``card_path``, default the ``metadata.json`` beside ``checkpoint``: where a checkpoint's model card is."""
    return Path(card_path) if card_path is not None else Path(checkpoint).with_name("metadata.json")


def _card_describing(checkpoint: Path, card_path: Path | None = None) -> tuple[dict, dict] | None:
    """``(card, its das_model section)`` of the card at ``card_path`` (:func:`_card_path`) when it describes the file
    ``checkpoint`` (:func:`card_describes`); ``None`` when either file is missing or the card describes another file
    or none."""
    checkpoint, card_path = Path(checkpoint), _card_path(checkpoint, card_path)
    card = _read_json(card_path) if card_path.is_file() else None
    if not card or not checkpoint.is_file() or not card_describes(card, file_digest(checkpoint)):
        return None
    return card, dict(card[CARD_KEY])


def _card_of_same_run(checkpoint: Path, card_path: Path | None = None) -> tuple[dict, dict] | None:
    """
    ``(card, its das_model section)`` of a card that describes an earlier best model of the training that wrote
    ``checkpoint``: a training stopped between replacing ``model.pt`` and rewriting its card (each atomic, the pair
    not) leaves a card one best model behind, whose options are the run's. Told by the ``last.pt`` beside the
    checkpoint: its run settings (:class:`~monai_das.handlers.RunSettings`) must agree with the card's facts on
    every key both record (at least the method, classes and input) and its preprocessing with the card's recipe,
    and its trainer must be short of ``max_epochs`` (a finished training rewrote its card). ``None`` otherwise (a
    model file copied in from another run or bundle: trial T59b ran it on the defaults' slice axis, warned as a
    copied file).
    """
    checkpoint, card_path = Path(checkpoint), _card_path(checkpoint, card_path)
    last = checkpoint.parent / "last.pt"
    card = _read_json(card_path) if card_path.is_file() else None
    facts = (card or {}).get(CARD_KEY)
    if not isinstance(facts, Mapping) or facts.get("checkpoint") != checkpoint.name or not last.is_file():
        return None
    from monai_das.utils.io import read_checkpoint

    try:
        state = read_checkpoint(last) or {}
    except (OSError, ValueError, RuntimeError):
        return None
    settings, trainer = state.get("settings"), state.get("trainer")
    if not isinstance(settings, Mapping) or not isinstance(trainer, Mapping):
        return None
    try:  # a finished training rewrote its card at the end: a card behind is of an unfinished one
        if int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1) >= int(trainer["max_epochs"]):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    shared = [k for k in settings if k in facts]
    if not {"method", "label_names", "num_frames"} <= set(shared):
        return None
    if any(plain(settings[k]) != plain(facts[k]) for k in shared):
        return None
    # and the preprocessing the options would take from the card (intensity window, orientation, spacing)
    steps, recipe = settings.get("preprocessing"), facts.get("recipe")
    if not isinstance(steps, Mapping) or not isinstance(recipe, Mapping):
        return None
    if any(plain(steps[k]) != plain(recipe[k]) for k in steps if k in recipe):
        return None
    return card, dict(facts)


def check_card_outputs(card: Mapping, card_path: Path) -> None:
    """Refuse a card whose output description (``network_data_format#outputs#pred``: ``num_channels``,
    ``channel_def``) disagrees with its class names (``das_model#label_names``): written by training they agree, so
    the card was edited, and an export would embed the wrong one (naming both)."""
    names = (card.get(CARD_KEY) or {}).get("label_names")
    pred = (((card.get("network_data_format") or {}).get("outputs") or {}).get("pred") or {})
    if not isinstance(names, list) or not isinstance(pred, Mapping):
        return
    claims = {"num_channels": pred.get("num_channels"),
              "channel_def": len(pred["channel_def"]) if isinstance(pred.get("channel_def"), Mapping) else None}
    wrong = {k: v for k, v in claims.items() if v is not None and v != len(names)}
    if wrong:
        raise ValueError(f"the model card '{card_path}' describes {len(names)} classes {bounded_repr(names)} "
                         f"(das_model#label_names) but network_data_format#outputs#pred says {bounded_repr(wrong)}: "
                         "the card was edited; restore the one training wrote (or edit both alike).")


def check_model_card(checkpoint: str | os.PathLike, facts: Mapping, card_path: str | os.PathLike | None = None) -> None:
    """
    Refuse a run on ``checkpoint`` whose data facts, network keys or preprocessing (``facts``, as
    :func:`model_facts` builds them from this run's options) differ from those the checkpoint was trained with, as
    its model card records them (``card_path``, default ``metadata.json`` beside the checkpoint). A bundle run takes
    them from its options and data, so inference without the training's ``--num_frames``/``--size`` (or its
    datalist) would otherwise run the network on other frames or classes and write wrong predictions without a word.
    Nothing is checked when there is no card; when the card describes another file (its ``checkpoint_sha256``: a
    model file copied in from elsewhere, another bundle's) a warning says that nothing could be checked.

    Raises:
        ValueError: naming the checkpoint, the card, each differing key with both values, and the options to pass.
    """
    checkpoint, card_path = Path(checkpoint), _card_path(checkpoint, card_path)
    found = _card_describing(checkpoint, card_path)
    if found is None and checkpoint.is_file():
        found = _card_of_same_run(checkpoint, card_path)
        if found is not None:
            logger.warning(f"the model card '{card_path}' describes an earlier best model of the training that wrote "
                           f"'{checkpoint}' (a training stopped between saving the model and its card?): its "
                           "options are this training's (last.pt's settings agree) and are used and checked; its "
                           "metrics are the earlier model's. Run the training again with --resume True to rewrite "
                           "the card.")
    if found is not None:
        check_card_outputs(found[0], card_path)
    if found is None and card_path.is_file() and checkpoint.is_file():
        logger.warning(f"the model card '{card_path}' was written for another file than '{checkpoint}' (its "
                       "checkpoint_sha256 differs): the checkpoint's frames, grid, classes and preprocessing cannot be "
                       "checked against this run's options. Use the card written with this checkpoint (a model file "
                       "copied in from another run or bundle may be another kind of model).")
    diffs = card_mismatches(found[1], facts) if found is not None else []
    if not diffs:
        return
    trained = found[1]
    listed = "; ".join(f"{k}: trained {v!r}, this run {n!r}" for k, v, n in diffs)
    # a volume's T follows from its grid and slice axis: their options cover it
    t_from_grid = trained.get("layout") == "volume" and any(k in ("spatial_size", "slice_axis") for k, _, _ in diffs)
    options = list(dict.fromkeys(_option(k, v, trained) for k, v, _ in diffs
                                 if not (t_from_grid and k == "num_frames")))
    raise ValueError(
        f"'{checkpoint}' was trained with other settings than this run gives (its model card '{card_path}'): "
        f"{listed}. Its predictions would be computed on other frames, preprocessing or classes than it learnt. "
        f"Give the training's options: {'; '.join(options)} (or leave them out: evaluation and batch inference "
        "take the training's from the model card)."
    )


def other_data(trained_splits: Any, splits: Any) -> bool:
    """Whether an evaluation's split identity (``splits``, :meth:`monai_das.engines.BundleData.split_identity`) reads
    other data than the training's (``trained_splits``, its card's): another dataset, another datalist file (or the
    training's, edited since), or another synthetic variant — an external test set. Another seed or
    ``val_fraction`` of the same datalist is the same data (its test list is the same)."""
    before, now = plain(trained_splits), plain(splits)
    if not isinstance(before, Mapping) or not isinstance(now, Mapping) or before == now:
        return False
    return (before.get("dataset") != now.get("dataset") or before.get("datalist_sha256") != now.get("datalist_sha256")
            or before.get("dataset") == "synthetic")


def evaluation_output_dir(output_dir: str | os.PathLike, checkpoint: str | os.PathLike, info: Mapping,
                          card_path: str | os.PathLike | None = None) -> str:
    """
    Where an evaluation of ``checkpoint`` on the data of ``info`` (:attr:`monai_das.engines.BundleData.info`: its
    ``splits`` and ``datalist``) writes its reports: ``output_dir``, or ``<output_dir>/<name>`` when the card
    describing the checkpoint (``card_path``, default ``metadata.json`` beside it) was trained on other data
    (:func:`other_data`; ``<name>``: the evaluated datalist's file name and 8 hex digits of its path,
    :func:`monai_das.utils.io.input_folder_name`, so that two sites' ``datalist.json`` get a folder each; else the
    dataset's name and a tag of its split identity, ``splits``), so that an external test set's metrics, predictions
    and figures lie beside, never over, the training's own test reports (which the card keeps) or another external
    set's.
    """
    found = _card_describing(checkpoint, card_path) or _card_of_same_run(Path(checkpoint), card_path)
    if found is None or not other_data(found[1].get("splits"), info.get("splits")):
        return str(output_dir)
    datalist = info.get("datalist")
    if datalist:
        return str(Path(output_dir) / input_folder_name(datalist))
    splits = info.get("splits") or {}
    tag = hashlib.sha256(json.dumps(splits, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:8]
    return str(Path(output_dir) / f"{splits.get('dataset') or 'other_data'}-{tag}")


def output_dir_at_k(output_dir: str | os.PathLike, checkpoint: str | os.PathLike, num_kept: int | None,
                    card_path: str | os.PathLike | None = None) -> str:
    """
    Where a run on ``checkpoint`` at ``num_kept`` frames writes its reports: ``output_dir``, or ``<output_dir>/k<k>``
    when the model card describing the checkpoint (``card_path``, default ``metadata.json`` beside it; its
    ``checkpoint_sha256``) records another trained ``k``. Any k at inference: an evaluation or a batch inference at
    another k writes beside, never over, the reports at the trained k (``metrics.json``, ``predictions.csv``). No
    card describing the checkpoint, or ``num_kept`` ``None``: ``output_dir``.
    """
    found = _card_describing(checkpoint, card_path) or _card_of_same_run(Path(checkpoint), card_path)
    trained = found[1].get("num_kept") if found is not None else None
    if num_kept is None or trained is None or int(num_kept) == int(trained):
        return str(output_dir)
    return str(Path(output_dir) / f"k{int(num_kept)}")


def output_dir_capped(output_dir: str | os.PathLike, cap: int | None) -> str:
    """
    Where an evaluation of a capped split (``cap``: :meth:`monai_das.engines.BundleData.capped`, e.g. ``--num_test
    15``) writes its reports: ``<output_dir>/n<cap>``, beside, never over, the whole split's (trial T59a: a 15-study
    smoke evaluation replaced the 610-study reports); ``output_dir`` when the split is whole.
    """
    return str(output_dir) if cap is None else str(Path(output_dir) / f"n{int(cap)}")


#: the options of evaluation and batch inference that default to the training's (:func:`trained_options`): from the
#: card's facts (``das_model``), its ``recipe`` or its ``run_params`` (the training's own option values)
_FROM_FACTS = ("method", "keep_ratio", "temporal_head", "encoder", "context_frames", "sampler_kwargs", "in_channels")
_FROM_RECIPE = ("axcodes", "pixdim", "intensity_range", "percentiles", "temporal_mode")
_FROM_RUN = ("dataset", "synthetic_options", "size", "data_seed", "fold", "num_folds", "probe")
_UNSET = object()


def model_root(checkpoint: str | os.PathLike) -> Path:
    """The folder a model came in: the bundle root of ``<root>/models/<file>``, else the file's own folder (as
    given, links not followed: a link inside a received bundle may point anywhere)."""
    folder = Path(os.path.abspath(checkpoint)).parent
    return folder.parent if folder.name == "models" else folder


def _inside(path: str, folder: Path | None) -> bool:
    """Whether ``path`` lies in ``folder``, as written or with links and ``..`` followed (either way round)."""
    if folder is None:
        return False
    try:
        mine = {Path(os.path.abspath(path)), Path(path).resolve()}
        roots = {Path(os.path.abspath(folder)), Path(folder).resolve()}
    except (OSError, RuntimeError):
        return True  # unresolvable: not followed
    return any(p.is_relative_to(r) for p in mine for r in roots)


def _trained_value(key: str, facts: Mapping, shipped: Path | None = None) -> Any:
    """
    The training's value of the bundle option ``key`` as the card section ``facts`` records it, else ``_UNSET``.
    ``shipped``: the folder a model came in (its bundle root); a path option (``datalist``, ``dataset_dir``,
    ``data_dir``) naming a file or folder in it is not taken: a received model could bring a list of its own that
    names files anywhere on this machine, and have them read and their names and predictions written (trial 60b).
    """
    run, recipe = facts.get("run_params") or {}, facts.get("recipe") or {}
    files = facts.get("source") == "datalist"  # grid, classes and intensity steps are options only for files
    if key == "keep_ratio":
        ratio = facts.get("keep_ratio")
        valid = not isinstance(ratio, bool) and isinstance(ratio, (int, float)) and 0 < ratio <= 1
        return float(ratio) if valid else _UNSET
    if key == "encoder_kwargs":  # the architecture: weights come from the checkpoint, never from a file or URL
        kwargs, encoder = facts.get("encoder_kwargs"), facts.get("encoder")
        if not isinstance(kwargs, Mapping) or not (encoder is None or isinstance(encoder, str)):
            return _UNSET
        out = architecture_kwargs(encoder, dict(kwargs))  # pretrained=False where the network would download
        if encoder is None and "pretrained" not in kwargs:  # MobileNetV3Small's own default: the options as given
            out.pop("pretrained", None)
        return out
    if key == "slice_axis":
        return facts.get("slice_axis", _UNSET) if facts.get("layout") == "volume" else _UNSET
    if key == "num_frames":
        return facts.get("num_frames", _UNSET) if facts.get("layout") == "video" else _UNSET
    grid = facts.get("spatial_size")
    # a clip's frames are --size square unless spatial_size was given: the option a run would give, so that another
    # --size on the command line is not overruled by the card's grid
    square = facts.get("layout") == "video" and isinstance(grid, list) and len(grid) == 2 and grid[0] == grid[1]
    if key == "size" and run.get("size") is None and files and square:
        return grid[0]
    if key == "spatial_size":
        return grid if files and grid is not None and not square else _UNSET
    if key == "label_names":
        return facts.get(key, _UNSET) if files else _UNSET
    if key in ("datalist", "dataset_dir"):  # where the training's lists are, when they still are (and not shipped)
        path, datalist = (run.get(key) if key == "dataset_dir" else facts.get("datalist")), facts.get("datalist")
        ok = isinstance(path, str) and (Path(path).is_dir() if key == "dataset_dir" else Path(path).is_file())
        own = isinstance(datalist, str) and not _inside(datalist, shipped)  # a folder only with its own list
        return path if files and ok and own and not _inside(path, shipped) else _UNSET
    if key == "data_dir":
        path = run.get("data_dir")
        return path if isinstance(path, str) and Path(path).is_dir() and not _inside(path, shipped) else _UNSET
    if key == "min_frames":  # the training's shortest study (a still image trained with 1 is a study at inference)
        value = recipe.get(key)
        return value if not isinstance(value, bool) and isinstance(value, int) and value >= 1 else _UNSET
    if key == "val_fraction":  # the share of a datalist's training list drawn for validation (when it had none)
        value = (facts.get("splits") or {}).get(key)
        valid = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < 1
        return float(value) if valid else _UNSET
    if key in ("num_train", "num_val"):  # synthetic data: the count is the set (trial T68a: --split val read 64)
        value = run.get(key)
        valid = run.get("dataset") == "synthetic" and not isinstance(value, bool) and isinstance(value, int)
        return value if valid and value >= 1 else _UNSET
    if key in _FROM_FACTS:
        return facts.get(key, _UNSET)
    if key in _FROM_RECIPE:
        return recipe.get(key, _UNSET) if files or key == "temporal_mode" else _UNSET
    if key in _FROM_RUN:
        return run[key] if run.get(key) is not None or (key == "synthetic_options" and key in run) else _UNSET
    return _UNSET


def trained_options(checkpoint: str | os.PathLike, defaults: Mapping, card_path: str | os.PathLike | None = None,
                    datalist: bool = True) -> dict:
    """
    The options of a run on the trained ``checkpoint`` (evaluation, batch inference): ``defaults`` with each option
    the model card describing the checkpoint records (``card_path``, default ``metadata.json`` beside it;
    :func:`card_describes`) replaced by the training's value, so that a model trained with ``--slice_axis 2``, a
    datalist, a frame budget or a sampler setting is run as it was trained without those options typed again (the
    Deploy app takes them from the card too). Options given on the command line replace these, and are checked
    against the card as always (:func:`check_model_card`). Without a card describing the checkpoint: ``defaults``.

    What the card gives: the network keys (``method``, ``keep_ratio``, ``temporal_head``, ``encoder``, its
    ``encoder_kwargs`` as the exports rebuild them (:func:`~monai_das.networks.factory.architecture_kwargs`: no weight
    arguments), ``context_frames``, ``sampler_kwargs``), the dataset and its options (``dataset``,
    ``synthetic_options``, ``size``, ``data_seed``, POCUS's ``fold``, ``num_folds``, ``probe``; ``data_dir`` when that
    folder is here), ``slice_axis`` (volumes), ``num_frames``, ``in_channels`` and ``temporal_mode`` (clips), the
    recipe's ``min_frames``, a datalist's ``val_fraction`` (when the validation list was drawn from its training list: a
    ``val`` split is then the training's), a synthetic training's ``num_train`` and ``num_val`` (on synthetic data the
    count is the set); for a model trained on a datalist also its classes (``label_names``, in the training's order),
    grid (``spatial_size``) and intensity steps (``axcodes``, ``pixdim``, ``intensity_range``, ``percentiles``), and the
    datalist (and ``dataset_dir``) when the file is here, not in the model's own folder (:func:`model_root`: a received
    model's list could name any file on this machine; nor a ``dataset_dir`` or ``data_dir`` there), and ``datalist`` is
    true (the bundles take ``label_names`` and ``dataset_dir`` only for that datalist: another one given, an external
    test list, has its own classes and folder, checked against the card). A datalist that is not here (or ``datalist``
    false: batch inference on ``--input``, which needs the training's classes and grid, not its lists) leaves
    ``datalist`` at its default, and the card stands in for it (:class:`monai_das.engines.BundleData`, ``dataset
    "datalist"`` without a datalist). The card is plain data: no value taken from it is evaluated, and weight arguments
    (a file, a URL) are not taken.

    Said at INFO: the options taken that differ from ``defaults`` and were not given on the command line; at
    WARNING, a training datalist that is not here (unless ``--datalist`` was given).
    """
    from monai_das.engines.checks import bundle_cli_overrides

    card_path = _card_path(checkpoint, card_path)
    found = _card_describing(checkpoint, card_path) or _card_of_same_run(Path(checkpoint), card_path)
    options = dict(defaults)
    if found is None:
        return options
    facts = found[1]
    typed = {k.split("#")[0] for k in bundle_cli_overrides()[0]}  # said as taken only where not given
    if "datalist" in typed:  # another datalist's classes and folder are its own (the configs' rule)
        typed |= {"label_names", "dataset_dir"}
    taken = {}
    shipped = model_root(checkpoint)
    for key in defaults:
        if key in ("datalist", "dataset_dir") and not datalist:
            continue
        value = _trained_value(key, facts, shipped)
        code = find_config_code(value) if value is not _UNSET and key not in typed else None
        if code is not None:  # e.g. sampler_kwargs {"tau0": "$..."}: never evaluated, but a TypeError far from here
            what = "a key" if code[1] else "a string"
            raise ValueError(f"model card '{card_path}': the training's {key} = {json.dumps(value)[:120]} holds "
                             f"{what} that {code[2]}: a model card is data, so it was altered or damaged; give "
                             f"--{key} on the command line, or use the card training wrote.")
        if value is not _UNSET:
            options[key] = plain(value)
            if plain(value) != plain(defaults[key]) and key not in typed:
                taken[key] = options[key]
    if taken:
        listed = ", ".join(f"{k} {json.dumps(v)}" for k, v in taken.items())
        logger.info(f"the training's options, from the model card '{card_path}': {listed} (give an option on the "
                    "command line to choose another value).")
    gone = facts.get("datalist")
    if (datalist and "datalist" in defaults and "datalist" not in typed and facts.get("source") == "datalist"
            and options["datalist"] is None):
        if isinstance(gone, str) and Path(gone).is_file():  # here, but in the folder the model came in
            logger.warning(f"the training's datalist '{gone}' (model card '{card_path}') lies in the model's own "
                           f"folder '{shipped}': a list a model brings along is not followed (it could name any file "
                           "on this machine); give --datalist (and --dataset_dir) yourself if you trust it, or "
                           "another test list, or --input to predict studies (the card gives their classes and grid).")
        else:
            logger.warning(f"the training's datalist '{gone}' (model card '{card_path}') is not here: give --datalist "
                           "(a copy of it, or another test list) to evaluate or predict a list, or --input to predict "
                           "studies (the card gives their classes and grid).")
    return options


class ModelCardSaver:
    """
    Writes the model card (see the module docstring) to ``<output_dir>/<filename>`` (atomically, rank 0 only).

    Two uses:

    - **training** (``evaluator`` given; attach to the trainer): the card is written when training starts (facts, no
      metrics), after every validation that replaced ``checkpoint`` (the best model file, written by the best-model
      saver before this handler runs) with that validation's metrics (``val_auc``, ...), and when training completes.
      A resumed run whose best model predates the resume keeps the metrics of the card on disk when that card
      describes the same file (``checkpoint_sha256``): validation and test metrics (an evaluation's, with its
      ``evaluation`` record) alike, with ``validation#epochs`` updated; otherwise no metric is written rather than a
      guess.
    - **evaluation** (no ``evaluator``; attach to the evaluating engine): when it completes, its scalar
      ``state.metrics`` (``metric_prefix`` stripped: ``test_auc`` → ``auc``) are added to the card of ``checkpoint``.
      Metrics of an earlier card at the same place are kept only when it describes the same checkpoint file.

    Args:
        output_dir: folder of the card (the checkpoint folder).
        meta_file: the bundle's ``metadata.json`` (read as plain JSON; the bundles give
            :func:`monai_das.engines.bundle_meta_file`: ``--meta_file``, else the one beside the config file);
            ``None`` or a missing file: only the rewritten sections are written, with a warning.
        facts: the card's ``das_model`` section, :func:`model_facts` of the run's data facts, recipe and network
            keys (the bundles: ``@model_facts``); also what an evaluation is checked against
            (:func:`check_model_card`).
        network: the network (optional): ``k`` is read from its sampler when given.
        evaluator: the validation engine whose metrics describe the best checkpoint (training use).
        checkpoint: the model file the card describes (default ``<output_dir>/model.pt``).
        metric_prefix: prefix stripped from metric names (evaluation: ``"test_"``).
        split: name of the evaluated split, recorded with the test metrics.
        num_items_cap: the evaluated split's cap when it left items out (:meth:`monai_das.engines.BundleData.capped`):
            the card's test metrics are left as they are (they describe the whole split).
        filename: card file name.
        run_params: how the model was trained (the bundles: ``@run_params``, the settings MLflow logs), written as
            ``das_model#run_params`` by the training and kept by evaluations.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        facts: Mapping,
        meta_file: str | os.PathLike | None = None,
        network: torch.nn.Module | None = None,
        evaluator: Any = None,
        checkpoint: str | os.PathLike | None = None,
        metric_prefix: str = "",
        split: str | None = None,
        num_items_cap: int | None = None,
        filename: str = "metadata.json",
        run_params: Mapping | None = None,
    ) -> None:
        needed = ("layout", "num_frames", "label_names")
        missing = [k for k in needed if not isinstance(facts, Mapping) or k not in facts]
        if missing:
            raise ValueError(f"ModelCardSaver needs the run's model facts (monai_das.handlers.model_facts; the "
                             f"bundles: facts=@model_facts), got {type(facts).__name__} without {missing}.")
        self.output_dir = Path(output_dir)
        self.filepath = self.output_dir / filename
        self.meta_file = meta_file
        self._warned_no_meta = False
        self.checkpoint = Path(checkpoint) if checkpoint is not None else self.output_dir / "model.pt"
        self.evaluator = evaluator
        self.metric_prefix = metric_prefix
        self.split = split
        self.num_items_cap = None if num_items_cap is None else int(num_items_cap)
        self._other_data: str | None = None  # what an evaluation of other data than the training's evaluated
        self.facts = copy.deepcopy(dict(facts))
        if run_params is not None:  # how it was trained (learning rates, class weights, warm-up, ...): the card's
            self.facts["run_params"] = plain(dict(run_params))  # run_params, kept by evaluations
        if network is not None:
            sampler = getattr(unwrap_network(network, require_sampler=False), "sampler", None)
            if sampler is not None and hasattr(sampler, "num_kept"):
                self.facts["num_kept"] = int(sampler.num_kept(int(self.facts["num_frames"])))
        self.logger = logger
        self._metrics: dict = {}  # the metrics of the current best checkpoint (training use)
        self._best_epoch: int | None = None
        self._ckpt_stat: tuple | None = None
        self._trainer: Any = None
        self.card: dict = {}

    # ---------------------------------------------------------------------------------------------- attach
    def attach(self, engine: Any) -> None:
        if self.evaluator is not None:  # training: engine is the trainer
            self._trainer = engine
            attach_once(engine, Events.STARTED, self._started)
            attach_once(self.evaluator, Events.EPOCH_COMPLETED, self._validated)
            attach_once(engine, Events.COMPLETED, self)
        else:  # evaluation: engine is the evaluator
            attach_once(engine, Events.STARTED, self._check_trained_with)
            attach_once(engine, Events.COMPLETED, self._evaluated)

    # ------------------------------------------------------------------------------------------- training
    def _stat(self) -> tuple | None:
        try:
            st = self.checkpoint.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _started(self, engine: Any) -> None:
        # a best model of an earlier run (resumed, or stale): only described once a validation here replaces it,
        # or at the end when the card on disk already describes that very file
        self._ckpt_stat = self._stat()

    def _validated(self, evaluator: Any) -> None:
        stat = self._stat()
        if stat is None or stat == self._ckpt_stat:
            return  # the best model file was not replaced by this validation
        self._ckpt_stat = stat
        self._metrics = {k: v for k, v in ((k, _metric(v)) for k, v in evaluator.state.metrics.items())
                         if v is not None}
        self._best_epoch = int(evaluator.state.epoch)
        self.write(self._metrics, validation=self._validation_facts(evaluator))

    def __call__(self, engine: Any) -> None:
        """Training completed: the final card."""
        if self._best_epoch is not None:
            self.write(self._metrics, validation=self._validation_facts(self.evaluator))
            return
        carried = self._carried(engine)
        if carried is not None:  # a resumed run whose best model predates the resume
            self.write(*carried)
            return
        self.logger.warning(f"no validation of this run wrote '{self.checkpoint}': the model card describes the "
                            f"run's network without metrics or checkpoint hash.")
        self.write({}, describe_checkpoint=False)

    def _validation_facts(self, evaluator: Any) -> dict:
        state = evaluator.state
        return plain({
            "key_metric": getattr(state, "key_metric_name", None),
            "best_epoch": self._best_epoch,
            "epochs": getattr(self._trainer.state, "epoch", None) if self._trainer is not None else None,
        })

    def _old_card(self) -> tuple[dict, dict] | None:
        """``(card, facts)`` of the card on disk when it describes the current checkpoint file and this network."""
        found = _card_describing(self.checkpoint, self.filepath)
        return found if found is not None and self._same_network(found[1]) else None

    def _carried(self, engine: Any) -> tuple[dict, dict | None, dict | None] | None:
        """``(eval_metrics, validation, evaluation)`` of the card on disk when it describes the best model file this
        run leaves (a resumed run whose best model predates the resume, or one with nothing left to train): every
        metric measured on that very file stays, the test metrics of an evaluation too, and ``validation#epochs``
        says how many epochs have now been trained."""
        found = self._old_card()
        if found is None:
            return None
        old, facts = found
        metrics = dict(old.get("eval_metrics") or {})
        validation = dict(facts["validation"]) if isinstance(facts.get("validation"), Mapping) else None
        if validation is not None and getattr(engine.state, "epoch", None) is not None:
            validation["epochs"] = int(engine.state.epoch)
        evaluation = dict(facts["evaluation"]) if isinstance(facts.get("evaluation"), Mapping) else None
        return metrics, validation, evaluation

    # ----------------------------------------------------------------------------------------- evaluation
    def _check_trained_with(self, engine: Any) -> None:
        """
        Before evaluating: the classes of the data must be the ones the checkpoint was trained with (its card on
        disk, when that card describes this very checkpoint). Another spelling or another set of names (``Normal``
        against ``normal``, sorted to another index) would score every item against shifted labels and rewrite the
        card with the new names. So must the frames, grid, preprocessing and network keys
        (:func:`check_model_card`): an evaluation without the training's ``--num_frames`` would score another input.
        """
        self._other_data = None
        found = self._old_card()
        trained = found[1].get("label_names") if found is not None else None
        now = self.facts.get("label_names")
        if trained and now and [str(n) for n in trained] != [str(n) for n in now]:
            data = self.facts.get("datalist") or self.facts.get("source") or "the data"
            # the first class that differs, named: both lists shown bounded may end before it (review r72f)
            n = min(len(now), len(trained))
            i = next((i for i in range(n) if str(now[i]) != str(trained[i])), n)
            first = (f"class {i}: {bounded_repr(now[i])} against {bounded_repr(trained[i])}" if i < n
                     else f"{len(now)} classes against {len(trained)}")
            raise ValueError(
                f"'{data}' gives the classes {bounded_repr(list(now))} (index = position), but '{self.checkpoint}' "
                f"was trained with {bounded_repr(list(trained))} (its model card '{self.filepath}'; first {first}): "
                "the labels would be scored against other indices. Name the classes as in training: a JSON "
                "datalist's top-level 'labels' ({\"0\": name, ...}, a class may have no items); a CSV's classes are "
                "its own labels, spelled as in training."
            )
        check_model_card(self.checkpoint, self.facts, self.filepath)
        if found is not None:
            self._check_splits(found[1], engine)

    def _check_splits(self, trained: Mapping, engine: Any = None) -> None:
        """
        Before evaluating: the split evaluated must not hold items the checkpoint was trained or validated on. POCUS
        with another ``fold``/``num_folds``/``probe``/``data_seed`` (the test fold of fold 2 is a training fold of
        fold 0), or a datalist's ``validation`` split drawn from its training list with another ``data_seed``/
        ``val_fraction``, or from the training's datalist file edited since (an item added redraws the groups), is
        refused.
        Other data (another datalist, dataset or synthetic variant: an external test set) is evaluated with a
        warning, and the card is left as it is: its test metrics stay those of the training's own test split (an
        external list of 3 studies replaced them, trial X); the evaluation's are in its own report.
        """
        before, now = plain(trained.get("splits")), plain(self.facts.get("splits"))
        if not isinstance(before, Mapping) or not isinstance(now, Mapping) or before == now:
            return
        keys: tuple[str, ...] = ()
        if before.get("dataset") == now.get("dataset"):
            if "fold" in before:  # POCUS: patient folds
                keys = ("fold", "num_folds", "probe", "seed")
            elif "datalist_sha256" in before and self.split != "test" and ("seed" in before or "seed" in now):
                # a validation list drawn from the training list: another seed or fraction, or the training's
                # datalist file edited since (an item added redraws the groups), holds items it was trained on; another
                # datalist file is other data (warned below: a digest cannot tell an edit from an external list)
                # NEWER_DRAWS: this version's validation list is another than an older one drew
                if trained.get("datalist") and trained.get("datalist") == self.facts.get("datalist"):
                    keys = ("datalist_sha256", "seed", "val_fraction", *NEWER_DRAWS)
                elif before.get("datalist_sha256") == now.get("datalist_sha256"):
                    keys = ("seed", "val_fraction", *NEWER_DRAWS)
        leaks = [k for k in keys if before.get(k) != now.get(k)]
        options = {"fold": "--fold", "num_folds": "--num_folds", "probe": "--probe", "seed": "--data_seed",
                   "val_fraction": "--val_fraction", "datalist_sha256": "--datalist"}
        if "datalist_sha256" in leaks:  # named by its file, not its digest
            before = {**before, "datalist_sha256": trained.get("datalist")}
            now = {**now, "datalist_sha256": self.facts.get("datalist")}
        if leaks:
            give = [f"{options[k]} {before.get(k)}" for k in leaks if k in options]
            raise ValueError(
                f"'{self.checkpoint}' was trained on other splits of '{before.get('dataset')}' than this evaluation "
                f"reads (its model card '{self.filepath}'): "
                + "; ".join(f"{k}: trained {before.get(k)!r}, this run {now.get(k)!r}" for k in leaks)
                + f". This run's {self.split} split would hold items the checkpoint was trained or validated on"
                + (", and its metrics would replace the card's test metrics." if self.split in (None, "test")
                   else ".")
                + (f" Give the training's options: {'; '.join(give)}." if give else "")
                + "".join(f" This version draws another validation list from the same options ({NEWER_DRAWS[k]}, "
                          f"{k}) than the checkpoint's version did: evaluate the test split, or train anew."
                          for k in leaks if k in NEWER_DRAWS)
            )
        # left: a datalist's test split beside another seed/val_fraction (its test list is the same), or other data
        if other_data(before, now):
            trained_on = trained.get("datalist") or before.get("dataset")
            data = self.facts.get("datalist") or now.get("dataset")
            self._other_data = str(data)
            compared = self._check_no_training_studies(trained, engine)
            self.logger.warning(
                f"evaluating '{self.checkpoint}' on other data than it was trained with ('{data}' "
                f"{dict(now)}; trained on '{trained_on}' {dict(before)}): "
                + ("none of its studies is a training or validation study of the training's datalist (compared "
                   "study by study, by path and, for files, by content). " if compared == 0 else
                   f"{compared} of its studies hold the bytes of training or validation studies (warned above). "
                   if compared else
                   f"make sure no item of this {self.split} split was a training or validation item of the checkpoint "
                   "(the training's datalist is not here as it was trained with, so the lists were not compared "
                   "study by study). ")
                + f"The model card '{self.filepath}' is left as it is (its test metrics are those of the training's "
                "own test split): this evaluation's metrics are in its own report (its output_dir)."
            )

    def _check_no_training_studies(self, trained: Mapping, engine: Any) -> int | None:
        """
        An evaluation on another datalist (an edited copy of the training's, another site's list): when the
        training's datalist is here as it was trained with (its recorded digest), no evaluated image may be one of
        its training or validation images (refused, naming them: trial T58, a patient moved from the training to the
        test split of a copy was scored as a test patient), a file of the same bytes as one of them under another
        name (a renamed copy) and a patient named in both are warned about (another site may reuse an id such as
        ``P001``). How many copies were found; ``None`` when the lists were not compared.

        Raises:
            ValueError: naming the evaluated studies that the checkpoint was trained or validated on.
        """
        from monai_das.data.datalist import load_datalist

        path = trained.get("datalist")
        sha = trained.get("datalist_sha256") or (plain(trained.get("splits")) or {}).get("datalist_sha256")
        loader = getattr(engine, "data_loader", None) or getattr(getattr(engine, "state", None), "dataloader", None)
        items = getattr(getattr(loader, "dataset", None), "data", None)
        if not (path and sha and isinstance(items, Sequence) and items and Path(path).is_file()
                and file_digest(path) == sha):
            return None
        run = trained.get("run_params") if isinstance(trained.get("run_params"), Mapping) else {}
        seen: dict[str, str] = {}  # a training or validation image → its datalist line
        patients: dict[str, str] = {}  # a patient named by the training's datalist → its line
        quiet = logging.getLogger("monai_das.data.datalist")
        level = quiet.level
        # its "N 'training' items" lines would read as if those were evaluated, its warnings (images moved since the
        # training) as if about the evaluated list
        quiet.setLevel(logging.ERROR)
        try:
            lists = []
            for split in ("training", "validation"):
                try:
                    lists.append(load_datalist(path, run.get("dataset_dir"), split=split,
                                               label_names=trained.get("label_names"), missing_ok=True))
                except (ValueError, FileNotFoundError, OSError):  # no such list (a drawn validation list), unreadable
                    continue
        finally:
            quiet.setLevel(level)
        if not lists:  # nothing to compare with: said as such
            return None
        for listed in lists:
            for it in listed:
                seen.setdefault(os.path.realpath(str(it["image"])), str(it.get("source_line", path)))
                if it.get("group") and str(it["group"]) != str(it["image"]):
                    patients.setdefault(str(it["group"]), str(it.get("source_line", path)))
        studies = [it for it in items if isinstance(it, Mapping) and isinstance(it.get("image"), str)]
        both = [(it, seen[os.path.realpath(it["image"])]) for it in studies if os.path.realpath(it["image"]) in seen]
        if both:
            named = "; ".join(f"'{it['image']}' ({it.get('source_line', '')}; trained at {where})"
                              for it, where in both[:3])
            raise ValueError(
                f"{len(both)} of the {len(studies)} studies this evaluation reads were training or validation studies "
                f"of '{self.checkpoint}' (its training datalist '{path}', unchanged since): {named}"
                f"{' ...' if len(both) > 3 else ''}. Their metrics would be optimistic. Evaluate a list without them "
                "(an edited copy of the training's datalist that moved them to its test list?)."
            )
        copies = _copies_of_listed_files(lists, studies)
        shared = sorted({str(it["group"]) for it in studies if str(it.get("group")) in patients
                         and str(it["group"]) != it["image"]})
        if shared:
            self.logger.warning(
                f"{len(shared)} patient(s) of this evaluation are named in the training's datalist '{path}' too, "
                f"e.g. {shared[:3]} (first at {patients[shared[0]]}): if they are the same patients, their studies "
                "share what the checkpoint learned from the others and the metrics are optimistic; another site's "
                "ids may merely coincide."
            )
        return copies

    def _evaluated(self, engine: Any) -> None:
        measured = {}
        for name, value in engine.state.metrics.items():
            value = _metric(value)
            if value is None:
                continue
            strip = bool(self.metric_prefix) and name.startswith(self.metric_prefix)
            measured[name[len(self.metric_prefix):] if strip else name] = value
        kept: dict = {}
        validation = None
        trained = _card_describing(self.checkpoint, self.filepath)
        k, trained_k = self.facts.get("num_kept"), trained[1].get("num_kept") if trained is not None else None
        if (k is not None and trained_k is not None and int(k) != int(trained_k)
                and self._same_network(trained[1], ignore=("num_kept",))):
            # any k at inference: the card describes the model at the k it was trained and validated at (the default
            # k of inference, the Deploy app and exports); metrics at another k would be filed under the wrong k.
            # Compared as k itself: another keep_ratio that keeps as many frames (or any ratio for `full`) is the
            # trained k, and its metrics go into the card
            self.logger.info(
                f"evaluated at k={k}; the model card '{self.filepath}' describes the model at its trained "
                f"k={trained_k} and is left as it is: these metrics are in the evaluation's own report (its "
                f"output_dir; by default the bundle's eval/k{k}/)."
            )
            return
        if self._other_data is not None:
            self.logger.info(f"evaluated '{self._other_data}', other data than the training's; the model card "
                             f"'{self.filepath}' is left as it is: these metrics are in the evaluation's own report.")
            return
        if self.num_items_cap is not None:
            self.logger.warning(
                f"this evaluation read {self.num_items_cap} studies, a cap of the '{self.split}' split (--num_test?): "
                f"the model card '{self.filepath}' keeps its test metrics and is left as it is; these metrics are in "
                "this evaluation's own report (its output_dir, n<cap>/ beside the whole split's)."
            )
            return
        if self.split not in (None, "test"):
            # the card's eval_metrics are the test metrics (the README's table, the Deploy app's and MONAI Label's
            # description of the model): an evaluation of the validation (or training) split must not pass for them
            self.logger.info(
                f"evaluated the '{self.split}' split; the model card '{self.filepath}' keeps its test metrics and is "
                "left as it is: these metrics are in the evaluation's own report (its output_dir)."
            )
            return
        # the card on disk, read once: the one read above when it describes this file, else as it is
        old = trained[0] if trained is not None else (_read_json(self.filepath) or {}) if self.filepath.is_file() else {}
        if trained is None and (old.get(CARD_KEY) or {}).get("checkpoint_sha256"):
            # written for another file: a card for this one would vouch for what nobody checked
            self.logger.warning(
                f"the model card '{self.filepath}' was written for another file than '{self.checkpoint}' and is "
                "left as it is (a card is written by the training of its checkpoint): these metrics are in the "
                "evaluation's own report."
            )
            return
        # the card read above (what _old_card reads), not read and hashed again
        found = trained if trained is not None and self._same_network(trained[1]) else None
        provenance = None
        if found is not None:
            # the training's validation metrics stay; an earlier evaluation's are replaced as a whole (a metric this
            # one could not measure, e.g. an AUC without every class, must not stay beside this one's others)
            kept = _validation_metrics(found[0])
            validation = found[1].get("validation")
            # and so does what it was trained on: an evaluation on another datalist rewrote the card's datalist
            provenance = {k: found[1].get(k) for k in _PROVENANCE}
            for key in ("run_params", "recipe"):  # how it was trained: the training's (an evaluation's recipe may
                if found[1].get(key) is not None:  # differ in its free steps: min_frames, the test data's geometry)
                    provenance[key] = found[1][key]
        elif old.get("eval_metrics"):
            self.logger.warning(f"model card '{self.filepath}' described another checkpoint or network: its "
                                f"metrics {sorted(old['eval_metrics'])} are dropped.")
        evaluation: dict = {"split": self.split, "metrics": sorted(measured),
                            "data": {k: self.facts.get(k) for k in _PROVENANCE}}
        measured_min = (self.facts.get("recipe") or {}).get("min_frames")
        if found is not None and measured_min != (found[1].get("recipe") or {}).get("min_frames"):
            evaluation["min_frames"] = measured_min  # the card's recipe stays the training's: the metrics' own
        loader = getattr(engine, "data_loader", None)
        try:
            evaluation["num_samples"] = len(loader.dataset)  # type: ignore[union-attr]
        except (AttributeError, TypeError):
            pass
        before = (found[1].get("evaluation") or {}) if found is not None else {}
        n, n_before = evaluation.get("num_samples"), before.get("num_samples")
        if (before.get("split") == self.split and isinstance(n_before, int) and isinstance(n, int)
                and n < n_before):
            # a capped evaluation (--num_test 15, a smoke test) replaced the test metrics of the whole split (trial
            # T59a: 610 studies' metrics by 15's, without a word)
            self.logger.warning(
                f"this evaluation read {evaluation['num_samples']} studies of the '{self.split}' split, fewer than "
                f"the {before['num_samples']} of the evaluation the model card '{self.filepath}' records (a "
                "--num_test cap?): the card keeps that evaluation's metrics; these are in this evaluation's own "
                "report (its output_dir). Evaluate without the cap to replace them."
            )
            return
        self.write({**kept, **measured}, validation=validation, evaluation=evaluation, provenance=provenance)

    # ---------------------------------------------------------------------------------------------- write
    def _same_network(self, facts: Mapping, ignore: tuple[str, ...] = ()) -> bool:
        return all(plain(facts.get(k)) == self.facts.get(k) for k in _IDENTITY if k not in ignore)

    def write(self, eval_metrics: Mapping, validation: Mapping | None = None, evaluation: Mapping | None = None,
              describe_checkpoint: bool = True, provenance: Mapping | None = None) -> dict | None:
        """Build and write the card (rank 0); returns it. Errors writing it are logged, not raised. ``provenance``:
        the training's data facts (:data:`_PROVENANCE`) in place of this run's (an evaluation's)."""
        if rank_world()[0] != 0:
            return None
        metadata = None
        if self.meta_file is not None and Path(self.meta_file).is_file():
            metadata = _read_json(self.meta_file)
        elif not self._warned_no_meta:  # once per run, not at every epoch
            self._warned_no_meta = True
            what = (f"bundle metadata '{self.meta_file}' not found" if self.meta_file is not None
                    else "no bundle metadata.json was found (no --meta_file, none beside the config file)")
            self.logger.warning(
                f"{what}: the model card has only the network_data_format, eval_metrics and {CARD_KEY} sections "
                "(name, version, authors, ... come from the bundle's configs/metadata.json: give --meta_file "
                "<bundle>/configs/metadata.json)."
            )
        facts = {**self.facts, **(provenance or {})}
        if describe_checkpoint and self.checkpoint.is_file():
            facts["checkpoint"] = self.checkpoint.name
            facts["checkpoint_sha256"] = file_digest(self.checkpoint)
        if validation:
            facts["validation"] = dict(validation)
        if evaluation:
            facts["evaluation"] = dict(evaluation)
        self.card = build_model_card(metadata, facts, eval_metrics)
        try:
            write_json_atomic(self.card, self.filepath)
        except OSError as e:
            self.logger.warning(f"cannot write the model card '{self.filepath}': {e}")
            return self.card
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in sorted(self.card.get("eval_metrics", {}).items()))
        self.logger.info(f"model card written to {self.filepath}" + (f" ({shown})" if shown else " (no metrics yet)"))
        return self.card


def _copies_of_listed_files(lists: Sequence[Sequence[Mapping]], studies: Sequence[Mapping]) -> int:
    """
    Warn about the ``studies`` (datalist items) whose file holds the bytes of a file of ``lists`` (the training's
    training and validation items) under another path: a renamed copy of a training study passes a comparison of
    paths. Only files of a size that a listed file has are read (:func:`~monai_das.data.datalist.content_key`), so
    an evaluation of other data reads nothing more; DICOM series folders are compared by path only. How many.
    """
    from monai_das.data.datalist import check_no_copies, content_key

    by_size: dict[int, list[tuple[str, str]]] = {}
    for listed in lists:
        for it in listed:
            p = str(it["image"])
            if os.path.isfile(p):
                by_size.setdefault(os.path.getsize(p), []).append((p, str(it.get("source_line", p))))
    known: dict[str, str] = {}
    known_paths: dict[str, str] = {}
    new: dict[str, str] = {}
    new_paths: dict[str, str] = {}
    hashed: set[str] = set()
    for it in studies:
        p = it["image"]
        same = by_size.get(os.path.getsize(p)) if os.path.isfile(p) else None
        if not same:
            continue
        key = content_key(p)
        new.setdefault(key, str(it.get("source_line", p)))
        new_paths.setdefault(key, p)
        for q, where in same:
            if q not in hashed:
                hashed.add(q)
                k = content_key(q)
                known.setdefault(k, where)
                known_paths.setdefault(k, q)
    return check_no_copies(known, new, known_paths, new_paths)
