"""
Model files of an exported DAS model: where they are (:func:`find_bundle_files`), how each format is loaded into a
network and its :class:`~monai_das.deploy.spec.ModelSpec` (:func:`load_onnx`, :func:`load_torchscript`,
:func:`load_checkpoint`), and whether a checkpoint agrees with its model card.

Trust: a bundle config is code (MONAI's ``ConfigParser`` evaluates ``$`` strings), so only configs the user points at
(``config_file=``, or a bundle folder's ``configs/inference.json``) are parsed, here and only here. A model file and
everything embedded in it or lying next to it is data, read by :mod:`monai_das.deploy.spec` (see
``docs/SECURITY.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from monai_das.deploy.spec import (
    CARD_KEY,
    CARD_NAME,
    _NETWORK_KEYS,
    MissingMetadataError,
    ModelSpec,
    OverrideError,
    _choose_metadata,
    _data_labels,
    _data_network_args,
    _embedded_json,
    _is_literal,
    _read_json,
    _spec_from_configs,
)
from monai_das.utils.io import file_digest, read_checkpoint, torchscript_refusal
from monai_das.utils.logs import bounded_repr

__all__ = ["CONFIG_NAMES", "ONNX_NAMES", "TORCHSCRIPT_NAMES", "CHECKPOINT_NAMES", "find_bundle_files", "load_onnx",
           "load_torchscript", "load_checkpoint"]

logger = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
ONNX_NAMES = ("model.onnx",)
TORCHSCRIPT_NAMES = ("model.ts",)
#: suffixes of a model file loaded as TorchScript (any other non-ONNX file is a checkpoint: weights only)
TORCHSCRIPT_SUFFIXES = (".ts",)
CHECKPOINT_NAMES = ("model.pt", "model.pth")


def find_bundle_files(path: str | os.PathLike) -> dict[str, Path | None]:
    """
    Locate ``onnx``, ``torchscript``, ``checkpoint``, ``config``, ``metadata`` and ``card`` for ``path``: a bundle
    folder (``configs/``, ``models/``), a ``models/`` folder, or a model file (inside a bundle or not). A model file
    is ``onnx`` by its ``.onnx`` suffix, ``torchscript`` by its ``.ts`` suffix (``ckpt_export``'s), else
    ``checkpoint`` (weights only, never run). A TorchScript program under another name (``weights.pt``) is refused
    with a ``ValueError``: the name asked for weights, and a TorchScript file runs the program stored in it.

    ``config`` (``configs/inference.json``) is returned for a folder only: a config is code that MONAI evaluates, so it
    is used when the user points at its bundle, never because it happens to lie next to a model file. ``metadata``
    (``configs/metadata.json``, the bundle's template) and ``card`` (the model card ``metadata.json`` that training
    writes beside the model: ``<bundle>/models/metadata.json``, or next to a model file) are read as plain JSON and
    returned in both cases.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path '{path}' does not exist.")
    found: dict[str, Path | None] = {"onnx": None, "torchscript": None, "checkpoint": None, "config": None,
                                     "metadata": None, "card": None}
    if path.is_file():
        root = path.parent.parent if path.parent.name == "models" else path.parent
        if path.suffix.lower() == ".onnx":
            key = "onnx"
        elif path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            key = "torchscript"
        elif _is_torchscript(path):
            raise torchscript_refusal(path, TORCHSCRIPT_SUFFIXES)
        else:
            key = "checkpoint"
        found[key] = path
        models = path.parent
    else:
        root = path.parent if path.name == "models" else path
        models = root / "models"
        for name in ONNX_NAMES:
            if (models / name).is_file():
                found["onnx"] = models / name
                break
        for name in TORCHSCRIPT_NAMES:
            if (models / name).is_file():
                found["torchscript"] = models / name
                break
        for name in CHECKPOINT_NAMES:
            if (models / name).is_file():
                found["checkpoint"] = models / name
                break
        for name in CONFIG_NAMES:
            if (root / "configs" / name).is_file():
                found["config"] = root / "configs" / name
                break
    if (root / "configs" / "metadata.json").is_file():
        found["metadata"] = root / "configs" / "metadata.json"
    if (models / CARD_NAME).is_file() and models / CARD_NAME != found["metadata"]:
        found["card"] = models / CARD_NAME
    return found


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with ``code/`` and ``data.pkl`` (a plain ``torch.save`` has no ``code/``)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n or n.startswith("code/") for n in names) and any(n.endswith("data.pkl") for n in names)


# ---------------------------------------------------------------------------------------------- loading
def load_onnx(
    files: Mapping[str, Path | None], device: str | torch.device, overrides: Mapping[str, Any]
) -> tuple[nn.Module, ModelSpec]:
    """
    The network of ``files["onnx"]`` (an :class:`~monai_das.networks.nets.OnnxClassifier`: ONNX Runtime, no Python
    is run) and its spec.

    Metadata: the model card embedded in the file (``metadata_props["metadata.json"]``, written by
    :func:`monai_das.engines.save_onnx`), else the card beside it (``files["card"]``); both plain JSON, read with the
    same code as a TorchScript file's card. No config is read: the graph and the card describe the model. The spec's
    input shape, layout and slice axis are checked against the graph's (its input and its ``monai_das.network``
    facts).

    Raises:
        MissingMetadataError: no card and no ``spatial_size`` in ``overrides`` (the message names the file).
        OverrideError: a ``spatial_size`` override that is not the graph's grid (the message names the option).
        ValueError: not a ``monai_das`` ONNX export (inputs/outputs, network facts), or a card grid, layout or slice
            axis (or an override of those but ``spatial_size``) that is not the graph's.
        ImportError: ``onnxruntime`` is not installed.
    """
    from monai_das.networks.nets.onnx_classifier import ONNX_CARD_PROP, OnnxClassifier

    onnx_path = files["onnx"]
    source = str(onnx_path)
    net = OnnxClassifier(onnx_path, providers=_onnx_providers(device))
    embedded = f"{ONNX_CARD_PROP} embedded in '{source}'"
    metadata, meta_source = _choose_metadata([
        (net.card, embedded),
        (_read_json(files["card"]) if files.get("card") else None, str(files.get("card"))),
    ])
    has_card = isinstance(metadata, Mapping) and isinstance(metadata.get(CARD_KEY), Mapping)
    given = {k: v for k, v in overrides.items() if v is not None}
    if not has_card and "spatial_size" not in given:
        raise MissingMetadataError(
            f"the ONNX file '{source}' has no model card (no metadata_props['{ONNX_CARD_PROP}'] with '{CARD_KEY}', and "
            f"no card beside it): its layout, grid, slice axis and labels are unknown. Export it with its card "
            f"(`python -m monai_das.engines.export onnx --bundle_root <bundle_root> --config_file "
            f"<bundle>/configs/inference.json`), or pass spec_overrides, e.g. DASPredictor.from_path(path, "
            f"layout='volume', spatial_size=(D, H, W), slice_axis=0, in_channels=1)."
        )
    if not has_card:  # the graph's own layout and frame axis, not ModelSpec's defaults; what was given still wins
        graph = {"layout": net.layout, **({"slice_axis": net.slice_axis} if net.layout == "volume" else {})}
        overrides = {**graph, **given}
    spec = _spec_from_configs(metadata if has_card else {}, {}, None, overrides, meta_source or embedded,
                              model=source)
    expected = ((spec.in_channels, *spec.spatial_size) if spec.layout == "volume" else
                (spec.spatial_size[0], spec.in_channels, *spec.spatial_size[1:]))
    if tuple(net.item_shape) != tuple(expected) and "spatial_size" in given:  # the user's option, not the card
        size = tuple(spec.spatial_size)
        axes = "C×D×H×W" if spec.layout == "volume" else "T×C×H×W"
        raise OverrideError(
            f"spatial_size={size} (CLI: --spatial-size {' '.join(map(str, size))}) is not the grid of the ONNX model "
            f"'{source}': its graph takes input [batch, {', '.join(map(str, net.item_shape))}] ({axes}), fixed when "
            f"it was exported, and this option gives [batch, {', '.join(map(str, expected))}]. Leave --spatial-size "
            f"out (the model's own grid is used), or run the checkpoint (--engine eager, with a warning in every "
            f"report: the network sees another grid than it learnt from)."
        )
    if tuple(net.item_shape) != tuple(expected):
        # a card of another grid belongs to another model (--spatial-size cannot mend that: another T is refused)
        fix = ("the metadata belongs to another model: re-export this model with its own card (`python -m "
               "monai_das.engines.export onnx --bundle_root <the training's bundle_root> --config_file "
               "<bundle>/configs/inference.json`)" if has_card else "pass the grid of the graph")
        raise ValueError(
            f"the ONNX model '{source}' takes input [batch, {', '.join(map(str, net.item_shape))}], its metadata "
            f"({meta_source or 'spec_overrides'}) describes [batch, {', '.join(map(str, expected))}] "
            f"({spec.layout}): {fix}."
        )
    # the graph's own facts (layout, frame axis: how its indices count frames) must be the spec's
    graph_axis = None if net.layout == "video" else net.slice_axis
    spec_axis = None if spec.layout == "video" else spec.slice_axis
    if (net.layout, graph_axis) != (spec.layout, spec_axis):
        raise ValueError(
            f"the ONNX model '{source}' was exported as layout={net.layout!r}, slice_axis={graph_axis}, its metadata "
            f"({meta_source or 'spec_overrides'}) says layout={spec.layout!r}, slice_axis={spec_axis}: pass the "
            f"graph's values, or re-export the model with its card."
        )
    # and its default k (the trained one): a card's num_kept (edited, or another export's) would be reported and
    # served as the trained k while the graph keeps another
    # (an any-k graph takes k as an input: its default is whichever k the export was made at, e.g. by a bundle
    # inference run with --num_kept 5, and the card's trained k is served; a fixed-k graph keeps its own k)
    if spec.num_kept is not None and net.any_k:
        net.num_samples = net.check_num_samples(spec.num_kept)
    elif spec.num_kept is not None and net.exported_k is not None and spec.num_kept != net.exported_k:
        raise ValueError(
            f"the ONNX model '{source}' keeps k={net.exported_k} frames (a fixed-k graph), its metadata "
            f"({meta_source or 'spec_overrides'}) says num_kept={spec.num_kept}: it was exported at another k (a "
            "bundle inference run at another k writes a fixed-k graph to models/model.k<k>.onnx: that file, or one "
            "exported by hand at another k), or the card was edited; export it again at the trained k "
            "(`python -m monai_das.engines.export onnx --bundle_root <bundle_root> --config_file "
            "<bundle>/configs/inference.json`)."
        )
    pred = next((o for o in net.session.get_outputs() if o.name == "pred"), None)
    logits = pred.shape[-1] if pred is not None and pred.shape else None
    if isinstance(logits, int) and (why := class_count_mismatch(f"the ONNX model '{source}'", logits, spec.labels)):
        raise ValueError(why)  # at loading, from the graph's output shape: not study by study
    return net, spec


def class_count_mismatch(where: str, num_logits: int, labels: list[str]) -> str | None:
    """
    Why a model of ``num_logits`` outputs (one: a sigmoid, two classes) cannot be the model ``labels`` name, or
    ``None`` when it can (or no labels are known).
    """
    classes = 2 if num_logits == 1 else num_logits
    if not labels or classes == len(labels):
        return None
    return (f"{where} gives {classes} class probabilities, but its metadata names {len(labels)} classes "
            f"{bounded_repr(labels)}: the model card belongs to another model.")


def _onnx_providers(device: str | torch.device) -> list[str]:
    """ONNX Runtime execution providers for a torch device: CUDA first when asked for and available, then CPU."""
    if torch.device(device).type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning("ONNX Runtime has no CUDAExecutionProvider here: the ONNX model runs on the CPU.")
    return ["CPUExecutionProvider"]


def load_torchscript(
    files: Mapping[str, Path | None], device: str | torch.device, overrides: Mapping[str, Any], trusted_meta: bool
) -> tuple[nn.Module, ModelSpec]:
    """
    The network of ``files["torchscript"]`` (``torch.jit.load``: no Python is run) and its spec.

    Metadata: the model card embedded in the file, else ``files["card"]``, else ``files["metadata"]``, else the
    embedded ``metadata.json`` without a card (all plain JSON). Network args: ``files["config"]`` when the user pointed
    at one (trusted, ``ConfigParser``; with ``trusted_meta`` the bundle's ``metadata.json`` joins its parser), else the
    embedded ``inference.json``, literal values only.
    """
    ts_path = files["torchscript"]
    # the names monai.data.save_net_with_metadata / ckpt_export give the extra files; loaded by hand (not with
    # load_net_with_metadata) so that how they are read, json.loads and nothing else, is decided here
    extra = {"metadata.json": "", "inference.json": ""}
    net = torch.jit.load(str(ts_path), map_location=torch.device(device), _extra_files=extra)
    source = str(ts_path)
    # a model card describes the model: the embedded one (the export's own), then the one beside the file;
    # without a card, the bundle's configs/metadata.json, then the embedded metadata
    embedded = (_embedded_json(extra.get("metadata.json"), "metadata.json", source),
                f"metadata.json embedded in '{source}'")
    metadata, meta_source = _choose_metadata([
        embedded,
        (_read_json(files["card"]) if files.get("card") else None, str(files.get("card"))),
        (_read_json(files["metadata"]) if files["metadata"] else None, str(files["metadata"])),
        embedded,
    ])
    if files["config"] is not None:  # a config the user pointed at
        parser = _config_parser(files["config"], files["metadata"] if trusted_meta else None)
        args, labels = _trusted_network_args(parser), _trusted_labels(parser.get())
    else:
        config = _embedded_json(extra.get("inference.json"), "inference.json", source)
        # what the overrides or the model card give is not looked for there (its "$@info['layout']" expressions
        # would only be warned about and ignored)
        card = (metadata or {}).get(CARD_KEY)
        skip = {k for k, v in overrides.items() if v is not None} | (
            {k for k in _NETWORK_KEYS if isinstance(card, dict) and card.get(k) is not None and _is_literal(card[k])})
        where = f"inference.json embedded in '{source}'"
        args, labels = _data_network_args(config, where, skip), _data_labels(config, where)
    spec = _spec_from_configs(metadata or {}, args, labels, overrides, meta_source, model=source)
    return net, spec


def load_checkpoint(
    files: Mapping[str, Path | None], device: str | torch.device, overrides: Mapping[str, Any], trusted_meta: bool
) -> tuple[nn.Module, ModelSpec]:
    """
    The network built from ``network_def`` of ``files["config"]`` (a config the user pointed at: trusted), its state
    from ``files["checkpoint"]`` (``torch.load(weights_only=True)``), and its spec.

    Metadata (plain JSON): the model card beside the checkpoint, else the bundle's ``metadata.json``, else the config's
    own ``_meta_`` section, unparsed. A card that disagrees with the config's network is a ``ValueError`` naming both
    values, checked before the network is built, and again on the built sampler's ``k``.
    """
    ckpt_path, cfg_path = files["checkpoint"], files["config"]
    if cfg_path is None:
        raise ValueError(
            f"checkpoint '{ckpt_path}' needs a bundle config with 'network_def': pass config_file (CLI: --config "
            f"<bundle>/configs/inference.json), or a bundle folder that has configs/inference.json."
        )
    # the file itself first: one that is no checkpoint (text, a pickled module) is said so, not "has no metadata"
    state = read_checkpoint(ckpt_path, map_location=torch.device(device))
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a training's last.pt
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(map(str, state)) if isinstance(state, Mapping) else []
        shown = (str(keys[:5])[:-1] + (", ...]" if len(keys) > 5 else "]")) if isinstance(state, Mapping) \
            else type(state).__name__
        raise ValueError(f"checkpoint '{ckpt_path}' holds no network weights (a state dict of tensors, as the "
                         f"bundle's models/model.pt): it holds {shown}.")
    parser = _config_parser(cfg_path, files["metadata"] if trusted_meta else None)
    if "network_def" not in parser.config:  # type: ignore[operator]
        raise ValueError(f"config '{cfg_path}' has no 'network_def'.")
    # metadata is data: the model card beside the checkpoint, the bundle's metadata.json (plain JSON), else the
    # config's own _meta_ section, unparsed
    card = _read_json(files["card"]) if files.get("card") else None
    if isinstance(card, Mapping) and isinstance(card.get(CARD_KEY), Mapping):
        if _card_describes(card, files["card"], ckpt_path):
            # the card training wrote for this very file: the config builds the network it describes (data facts,
            # method, k, head, encoder, sampler arguments), as the export does; a model trained with --keep_ratio
            # 0.25 or on a datalist was refused here ("use the training's keys"), which the Deploy CLI cannot pass
            from monai_das.engines.export import card_overrides

            try:
                from_card = card_overrides(card)
            except ValueError as e:  # a card value the config cannot take: the config as it is, checked below
                logger.warning("the model card %s describes '%s' but cannot set the config's keys (%s): the config "
                               "builds the network as it is.", files["card"], ckpt_path, e)
                from_card = {}
            changed = sorted(k for k, v in from_card.items() if k != "info" and parser.get(k) != v)
            if changed:
                logger.info("building '%s' as its model card describes it: %s from the card, not the config '%s'.",
                            ckpt_path, ", ".join(changed), cfg_path)
            for key, value in from_card.items():
                parser[key] = value
    metadata, source = _choose_metadata([
        (card, str(files.get("card"))),
        (_read_json(files["metadata"]) if files["metadata"] else None, str(files["metadata"])),
        (parser.get("_meta_"), str(cfg_path)),
    ])
    # the spec first: a card that disagrees with the config is reported before the network is built
    spec = _spec_from_configs(metadata or {}, _trusted_network_args(parser), _trusted_labels(parser.get()),
                              overrides, source, model=str(ckpt_path), strict=True)
    net = parser.get_parsed_content("network_def", instantiate=True)
    net.load_state_dict(state)
    _check_card_network(spec, net, source, cfg_path)
    return net, spec


# ---------------------------------------------------------------------------------------------- configs (trusted)
def _config_parser(cfg_path: Path, meta_path: Path | None = None):
    """A ``ConfigParser`` of a config the user pointed at (trusted code), ``bundle_root`` = its bundle folder."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(cfg_path))
    if meta_path is not None:
        parser.read_meta(str(meta_path))
    parser["bundle_root"] = str(Path(cfg_path).parent.parent)
    return parser


def _trusted_network_args(parser) -> dict[str, Any]:
    """``layout``, ``slice_axis``, ``in_channels`` of a trusted config's ``network_def``, expressions evaluated."""
    network_def = parser.get("network_def")
    if not isinstance(network_def, Mapping):
        return {}
    args: dict[str, Any] = {}
    for key in _NETWORK_KEYS:
        if key in network_def:
            try:
                args[key] = parser.get_parsed_content(f"network_def#{key}")  # instantiates what it uses (data facts)
            except Exception as e:  # an unresolvable expression: fall back to metadata / defaults
                logger.warning("cannot resolve network_def#%s in the bundle config: %s", key, e)
    return args


def _trusted_labels(config: Mapping | None) -> list[str] | None:
    names = (config or {}).get("label_names")
    return [str(v) for v in names] if isinstance(names, list) else None


# ---------------------------------------------------------------------------------------------- card vs checkpoint
def _check_card_network(spec: ModelSpec, net: nn.Module, source: str, cfg_path: Path) -> None:
    """Refuse a network whose sampler keeps another ``k`` than the model card (``spec.num_kept``) says."""
    sampler = getattr(net, "sampler", None)
    if spec.num_kept is not None and sampler is not None and hasattr(sampler, "num_kept"):
        k = int(sampler.num_kept(spec.num_frames))
        if k != spec.num_kept:
            raise ValueError(
                f"the model card {source} says the sampler keeps k={spec.num_kept} of T={spec.num_frames} frames, "
                f"the network of config '{cfg_path}' keeps {k}: the config builds another network than the one "
                f"trained (use the training's keys, or the exported TorchScript)."
            )


def _card_describes(card: Mapping, card_path: Path, ckpt_path: Path) -> bool:
    """
    Whether the card beside a checkpoint records this file's hash (the checkpoint read once). A card that names this
    file (or no file) but records the hash of another version of it is refused: it describes another model (its
    classes, grid, ``k``), and the network would be built and labelled by it.

    Raises:
        ValueError: naming both files and both hashes, and how a stale card comes about and is mended.
    """
    from monai_das.handlers.model_card import WRITE_CARD_AGAIN, card_describes

    digest = file_digest(ckpt_path)
    describes = card_describes(card, digest)
    if describes is not False:
        return bool(describes)
    if card[CARD_KEY].get("checkpoint") in (None, Path(ckpt_path).name):
        raise ValueError(
            f"the model card '{card_path}' was written for another version of '{ckpt_path}' (it records "
            f"checkpoint_sha256 {card[CARD_KEY]['checkpoint_sha256']}, the file's is {digest}): its classes, grid and "
            "k may not be this file's. A training killed between saving model.pt and writing its card leaves this, "
            f"as does a model.pt replaced by another one (put its own card beside it). To write its card: "
            f"{WRITE_CARD_AGAIN}."
        )
    return False

