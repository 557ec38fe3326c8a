"""
The app's settings (``--conf KEY VALUE`` of ``monailabel start_server``) and the tasks built from them, apart from
``main.py`` so that they can be used (and tested) without a ``MONAILabelApp``.

Keys:

- ``bundle``: the DAS bundle folder (default: ``bundles/das_volume_classification`` of this repository); its
  ``configs/`` are read, never written.
- ``model_dir``: the app's model folder (default ``<app_dir>/model/<bundle folder name>``): where the train task
  publishes a completed run (``models/model.pt``, ``eval/``, ``configs/`` for inference; ``monailabel/``: run files and
  ``training/``, the run's ``--bundle_root``); the infer task loads from it once it holds a model, else from
  ``bundle``.
- ``labels``: comma-separated class names, two or more (index = position), none two differing only in case, spaces or
  punctuation (refused at start-up, as a datalist's labels are); default: the classes found in the datastore.
- ``spatial_size``: the network grid ``D,H,W`` (or ``[D, H, W]``), a video bundle's frame ``H,W``; default: the
  bundle metadata's input shape (a video bundle's frame ``[H, W]``), unless ``train_overrides`` give ``size`` or
  ``spatial_size``.
- ``slice_axis``: the axis whose slices the sampler chooses among (``0``-``2`` of ``D,H,W``, or ``sagittal``,
  ``coronal``, ``axial``, resolved against the bundle's ``axcodes``, RAS by default); default the bundle's (0). A
  training setting (passed as a train override; the infer task reads the trained one from the model card).
- ``max_epochs``: default epochs of a training request.
- ``train_overrides``: a JSON object of more bundle overrides for every training run (``{"batch_size": 4}``).
- ``engine``: ``onnxruntime`` (default: ``models/model.onnx``), ``torchscript`` or ``eager`` (``models/model.pt`` +
  config); a model folder without that engine's file falls back with a logged warning. ``prefer``
  (``torchscript``|``checkpoint``) is the former name.
- ``num_kept`` / ``keep_ratio``: the frames kept at inference (``k``, or ``k = round(keep_ratio·T)``) when a request
  gives none; default: the trained ``k`` of the model card. A request's ``num_kept``/``keep_ratio`` win (``0``: the
  trained ``k``; see ``DASClassification``).
- ``train``: ``false`` to register no train task. ``modalities``, ``preload``: see the infer task.

A key that is none of these nor one MONAI Label itself reads (:data:`MONAI_LABEL_CONF_KEYS`) is refused when it looks
like a misspelling of one of them (``spatial_sise``: did you mean ``spatial_size``? It would otherwise be ignored, and
studies resized to the bundle's grid without a word), and named in a warning otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the app's ``--conf`` keys (see the module docstring)
CONF_KEYS = ("bundle", "model_dir", "labels", "spatial_size", "slice_axis", "max_epochs", "train_overrides", "train",
             "engine", "prefer", "num_kept", "keep_ratio", "modalities", "preload")
#: ``--conf`` keys that MONAI Label itself reads (``MONAILabelApp``, model-zoo downloads)
MONAI_LABEL_CONF_KEYS = ("server_mode", "auth_token", "zoo_source", "zoo_repo")

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BUNDLE = REPO_ROOT / "bundles" / "das_volume_classification"


def _flag(conf: Mapping[str, Any], key: str, default: bool) -> bool:
    """``--conf key`` as a boolean (``default`` when not given); a value that is neither true nor false is refused
    naming the key (``preload ture`` was read as false, without a word)."""
    from monai_das.engines import flag

    value = conf.get(key)
    if value is None:
        return default
    try:
        return flag(value)
    except ValueError:
        raise ValueError(f"--conf {key} must be true or false (1/0, yes/no, on/off), got {value!r}.") from None


def _spatial_size(value: str | None) -> list[int] | None:
    if value is None or not str(value).strip():
        return None
    parts = [p for p in re.split(r"[\s,\[\]]+", str(value)) if p]
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"spatial_size must be three positive integers 'D,H,W' (a volume bundle) or two 'H,W' (a "
                         f"video bundle's frame), got {value!r}.")
    return [int(p) for p in parts]  # checked against the bundle's layout by the train task


def _number(conf: Mapping[str, str], key: str, kind: type) -> Any:
    """``conf[key]`` as an ``int`` or ``float`` (``None`` when absent or blank); an error naming the key otherwise."""
    value = conf.get(key)
    if value is None or not str(value).strip():
        return None
    try:
        return kind(str(value).strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"--conf {key} must be {what}, got {value!r}.") from None


def _checked_numbers(conf: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``max_epochs``, ``num_kept``, ``keep_ratio`` of ``conf`` checked, and the slice axis of ``overrides``: a bad
    value is an error naming ``--conf <key>`` when the app starts (``keep_ratio 1.5`` failed every infer request,
    ``slice_axis sideways`` a train request 13 s into its run; trial T65a)."""
    from monai_das.engines.datasets import slice_axis_index
    from monai_das.networks.factory import check_keep_ratio

    out = {key: _number(conf, key, kind) for key, kind in (("max_epochs", int), ("num_kept", int),
                                                          ("keep_ratio", float))}
    for key in ("max_epochs", "num_kept"):
        if out[key] is not None and out[key] < 1:
            raise ValueError(f"--conf {key} must be a positive integer, got {conf.get(key)!r}.")
    axis_key = "slice_axis" if str(conf.get("slice_axis") or "").strip() else "train_overrides' slice_axis"
    for key, check, value in (("keep_ratio", check_keep_ratio, out["keep_ratio"]),
                              (axis_key, slice_axis_index, overrides.get("slice_axis"))):
        if value is not None:
            try:
                check(value)
            except ValueError as e:
                raise ValueError(f"--conf {key}: {e}") from None
    return out


def check_conf_keys(conf: Mapping[str, Any]) -> list[str]:
    """
    The keys of ``conf`` that neither the app nor MONAI Label reads (each also logged as a warning).

    Raises:
        ValueError: a key that looks like a misspelling of one of the app's keys (:func:`lib.keys.misspelling_of`),
            named with the key it most likely means.
    """
    from .keys import misspelling_of

    unknown = [k for k in conf if k not in CONF_KEYS and k not in MONAI_LABEL_CONF_KEYS]
    typos = {k: m for k in unknown for m in [misspelling_of(k, CONF_KEYS)] if m}
    if typos:
        hints = "; ".join(f"{k!r}: did you mean {m!r}?" for k, m in typos.items())
        raise ValueError(f"--conf: unknown key(s) {hints} (it would be ignored). The app's keys: {', '.join(CONF_KEYS)}.")
    for key in unknown:
        logger.warning(f"--conf {key}: not a key of this app (its keys: {', '.join(CONF_KEYS)}) nor of MONAI Label "
                       f"({', '.join(MONAI_LABEL_CONF_KEYS)}); ignored.")
    return unknown


def app_settings(conf: Mapping[str, str], app_dir: str | os.PathLike) -> dict[str, Any]:
    """The app's settings from ``conf`` (see the module docstring), with defaults; unknown keys: see
    :func:`check_conf_keys`."""
    check_conf_keys(conf)
    bundle = Path(conf.get("bundle") or DEFAULT_BUNDLE).expanduser().resolve()
    model_dir = conf.get("model_dir") or Path(app_dir) / "model" / bundle.name
    labels = conf.get("labels")
    overrides = conf.get("train_overrides")
    try:
        overrides = json.loads(overrides) if overrides else {}
    except ValueError as e:
        raise ValueError(f"--conf train_overrides must be a JSON object, got {conf.get('train_overrides')!r}: {e}"
                         ) from None
    if not isinstance(overrides, dict):
        raise ValueError(f"train_overrides must be a JSON object, got {conf.get('train_overrides')!r}.")
    axis = conf.get("slice_axis")
    if axis is not None and str(axis).strip():
        if "slice_axis" in overrides:
            raise ValueError("give the slice axis once: --conf slice_axis or train_overrides' slice_axis, not both.")
        axis = str(axis).strip()
        overrides = {**overrides, "slice_axis": int(axis) if axis.isdigit() else axis}
    settings = _checked_numbers(conf, overrides)  # at start-up: they failed every request, or a run 13 s in (T65a)
    if labels:  # at start-up too: 'normal,,abnormal' failed every train request (review R71b)
        from monai_das.data.datalist import check_class_names

        labels = check_class_names(labels.split(","), "--conf labels", strip=True, spelling=True)
        if len(labels) < 2:  # 'normal;abnormal' is one class: every train request failed (trial t72h)
            raise ValueError(f"--conf labels names one class ({labels[0]!r}): a classifier learns at least two; "
                             "give them comma-separated, e.g. --conf labels normal,abnormal.")
    modalities = conf.get("modalities")
    return {
        "bundle": str(bundle),
        "model_dir": str(Path(model_dir).expanduser().resolve()),
        "labels": labels or None,
        "spatial_size": _spatial_size(conf.get("spatial_size")),
        "train_overrides": overrides,
        "train": _flag(conf, "train", True),
        "engine": conf.get("engine") or None,
        "prefer": conf.get("prefer") or None,
        **settings,
        "loader_options": {"allowed_modalities": [m.strip() for m in modalities.split(",")]} if modalities else {},
        "preload": _flag(conf, "preload", False),
    }


def make_infer_task(settings: Mapping[str, Any]):
    """The ``das_classification`` infer task (it may start without a model: see ``DASClassification``)."""
    from lib.infers import DASClassification

    return DASClassification(
        settings["bundle"], engine=settings["engine"], prefer=settings["prefer"],
        loader_options=settings["loader_options"], preload=settings["preload"], model_dir=settings["model_dir"],
        num_kept=settings["num_kept"], keep_ratio=settings["keep_ratio"],
    )


def make_train_task(settings: Mapping[str, Any]):
    """The ``das_classification`` train task, or ``None`` (training off, or a bundle without a train config)."""
    from lib.trainers import DASTrain

    if not settings["train"]:
        return None
    task = DASTrain(
        settings["bundle"], settings["model_dir"], labels=settings["labels"], spatial_size=settings["spatial_size"],
        max_epochs=settings["max_epochs"], overrides=settings["train_overrides"],
    )
    if not task.is_valid():
        logger.warning("DAS bundle %s has no configs/train.json: no train task", settings["bundle"])
        return None
    return task
