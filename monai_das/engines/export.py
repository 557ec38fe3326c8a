"""
Exports that describe themselves: TorchScript and ONNX files of a trained DAS bundle with its model card
(``<bundle_root>/models/metadata.json``, written by :class:`monai_das.handlers.ModelCardSaver`) embedded.

- TorchScript: :func:`export_torchscript` (``python -m monai_das.engines.export torchscript``) runs MONAI's
  ``ckpt_export`` (trace) with the network keys and data facts taken from the card, the card as ``--meta_file``
  (embedded as the archive's ``metadata.json``) and the trace input ``(1, *image_shape)``, after refusing a card that
  MONAI's parser would not read as plain data (:func:`check_card_for_parser`). It records the checkpoint's SHA-256 and
  that the network was built from the card in the extra file ``monai_das.source`` (:data:`SOURCE_PROP`), which the
  Deploy app checks. MONAI's ``ckpt_export`` must not be run on its own: it builds ``network_def`` from the config and
  its command line, not from the card (a run trained with ``--temporal_head max`` exports a mean-pooling graph under a
  card saying ``max``), and its parser expands ``%/other/file.json#key`` values of a received card into the file.
- ONNX: MONAI's ``onnx_export`` neither embeds the metadata nor makes the batch axis dynamic;
  :func:`export_onnx` (``python -m monai_das.engines.export onnx``) uses the dynamo exporter with a dynamic batch
  axis, stores the card as plain JSON in ``model.metadata_props["metadata.json"]`` and checks the file with
  onnxruntime at batch 1 and 3 against the eager network.

The card is data: it is read with ``json.loads``, and only plain values (numbers, names without ``$``/``%``/``@``)
of it are passed to the bundle config as overrides. Both exports refuse a card written for another checkpoint (its
``das_model#checkpoint_sha256`` is not the checkpoint's: :func:`check_card_checkpoint`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_das.engines.onnx_graph import REWRITES, for_runtime
from monai_das.networks.nets.onnx_classifier import (
    DIGEST_PROP, NETWORK_PROP, ONNX_CARD_PROP, digest_state, onnx_digest
)
from monai_das.networks.utils import frame_axis, preserved_modes
from monai_das.utils.config import CARD_KEY, find_config_code, parser_rewrites
from monai_das.utils.io import atomic_file, read_checkpoint
from monai_das.utils.logs import bounded_repr, quiet_loggers

__all__ = [
    "CARD_PROP",
    "read_model_card",
    "card_overrides",
    "check_card_for_parser",
    "build_network",
    "save_onnx",
    "ExportedClassifier",
    "read_onnx_card",
    "check_card_checkpoint",
    "export_onnx",
    "export_torchscript",
]

logger = logging.getLogger(__name__)

#: ``metadata_props`` key of the card in an ONNX file (the name MONAI gives the TorchScript extra file)
CARD_PROP = ONNX_CARD_PROP


def read_model_card(path: str | os.PathLike) -> dict:
    """A model card (``metadata.json``) as plain JSON; ``ValueError`` when it is not one (no ``das_model``), or when its
    outputs disagree with its classes (:func:`monai_das.handlers.model_card.check_card_outputs`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model card '{path}' does not exist (training writes <bundle_root>/models/metadata.json)."
        )
    try:
        card = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"model card '{path}' is not valid JSON: {e}") from e
    if not isinstance(card, dict) or not isinstance(card.get(CARD_KEY), dict):
        raise ValueError(f"'{path}' is not a model card: no '{CARD_KEY}' section (the bundle's configs/metadata.json "
                         f"is a template; pass <bundle_root>/models/metadata.json written by the training).")
    from monai_das.handlers.model_card import check_card_outputs

    check_card_outputs(card, path)  # an export embeds it: its outputs must be its classes
    return card


def _plain_name(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    why = parser_rewrites(value) if isinstance(value, str) else "neither text nor a number"
    if why is None:
        return value
    raise ValueError(f"model card value {key}={bounded_repr(value)} is not a plain value ({why}); it is not passed "
                     "to the config.")


def _plain_key(k: Any, key: str) -> str:
    """A key of a card's dict passed to the config: a plain name. MONAI gives keys meaning (``_target_`` builds any
    importable callable, ``_requires_``/``_disabled_``/``_mode_`` run or skip, ``#``/``@``/``$``/``%`` address or
    evaluate), and the card is data, so such keys are refused, never instantiated."""
    k = str(k)
    if k.startswith("_") or any(c in k for c in "#@$%"):
        raise ValueError(f"model card key {key}#{k!r} is not a plain name (MONAI would read it as a directive: "
                         "'_target_', '_requires_', references); the card is data, it is not passed to the config.")
    return k


def _plain_tree(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return {_plain_key(k, key): _plain_tree(v, f"{key}#{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_tree(v, f"{key}#{i}") for i, v in enumerate(value)]
    return _plain_name(value, key)


def _names_a_class(key: str) -> bool:
    """A card entry that is a class name (``das_model#label_names#i``, ``...#channel_def#i``): a ``#`` the parser
    rewrites there (to ``::``) renames the class in the exported file's metadata, so it is refused; elsewhere (a
    description, a datalist path) it is rewritten too but accepted: that text is not read back to classify."""
    return "#label_names#" in key or "#channel_def#" in key


def check_card_for_parser(card: Any, source: str | os.PathLike, key: str = "") -> None:
    """
    Refuse a model card that MONAI's ``ConfigParser`` would not read as plain data: ``ckpt_export`` reads its
    ``meta_file`` with the parser, which replaces a string starting with ``%`` by the content of another file
    (``"%/path/file.json#key"``: any readable JSON/YAML would be copied into the exported ``model.ts``) and treats
    strings starting with ``$``/``@`` and keys such as ``_target_`` as code or references. A card is data written by
    the training; such a value there (e.g. a class name from a datalist) is an error naming its key, never expanded.
    A class name holding ``#`` is refused too: the parser rewrites it to ``::`` in the metadata it embeds
    (:func:`~monai_das.utils.config.parser_rewrites`).
    """
    found = find_config_code(card, key, separator=_names_a_class)
    if found is None:
        return
    path, is_key, why, text = found
    if is_key:
        raise ValueError(f"model card '{source}': key {path}#{text!r} {why}; the card is data and is not exported "
                         "with it.")
    raise ValueError(
        f"model card '{source}': value {path.lstrip('#') or '(root)'}={text[:60]!r} {why}; ckpt_export reads the "
        "card with that parser, and the card is data: edit or remove that value (a class name: rename the class)."
    )


def card_overrides(card: Mapping) -> dict:
    """
    Config overrides that make the bundle's ``network_def`` build the network the card describes: ``info`` (the data
    facts the network uses: ``layout``, ``num_frames``, ``in_channels``, ``num_classes``, ``slice_axis``,
    ``spatial_size``, ``image_shape``) and ``method``, ``keep_ratio``, ``temporal_head``, ``context_frames``,
    ``encoder`` (a name of
    ``monai.networks.nets``; an encoder module recorded by class path is left to the config), ``encoder_kwargs``
    (without the arguments that load weights, :func:`monai_das.networks.factory.architecture_kwargs`),
    ``sampler_kwargs``.
    """
    facts = card.get(CARD_KEY) if isinstance(card, Mapping) else None
    if not isinstance(facts, Mapping):
        raise ValueError(f"not a model card: no '{CARD_KEY}' section.")
    info = {}
    for k in ("layout", "num_frames", "in_channels", "num_classes", "slice_axis", "spatial_size", "image_shape"):
        if facts.get(k) is not None:
            info[k] = _plain_tree(facts[k], f"{CARD_KEY}#{k}")
    if info.get("layout") not in ("volume", "video"):
        raise ValueError(f"model card layout must be 'volume' or 'video', got {info.get('layout')!r}.")
    if info["layout"] == "video":
        info.setdefault("slice_axis", 0)
    overrides: dict[str, Any] = {"info": info}
    for k in ("method", "keep_ratio", "temporal_head"):
        if facts.get(k) is not None:
            overrides[k] = _plain_name(facts[k], f"{CARD_KEY}#{k}")
    from monai_das.networks.nets.subsampled_classifier import check_context_frames

    try:  # cards written before 2.5D inputs existed have none: single frames
        overrides["context_frames"] = check_context_frames(facts.get("context_frames") or 0)
    except ValueError as e:
        raise ValueError(f"model card value {CARD_KEY}#context_frames: {e}") from None
    encoder = facts.get("encoder")
    if encoder is None or (isinstance(encoder, str) and "." not in encoder):
        from monai_das.networks.factory import architecture_kwargs

        overrides["encoder"] = _plain_name(encoder, f"{CARD_KEY}#encoder")
        # the architecture only: an argument that downloads or reads weights is not taken from the card (data), and
        # the checkpoint's weights replace the encoder's start anyway
        kwargs = _plain_tree(facts.get("encoder_kwargs") or {}, f"{CARD_KEY}#encoder_kwargs")
        overrides["encoder_kwargs"] = architecture_kwargs(encoder, kwargs)
        dropped = sorted(k for k in kwargs if overrides["encoder_kwargs"].get(k, not kwargs[k]) != kwargs[k])
        if dropped:
            logger.info(f"the card's encoder arguments {dropped} load weights: not used to rebuild the network (the "
                        "checkpoint holds its weights).")
    else:
        logger.warning(f"the card's encoder {encoder!r} is a module recorded by class path: the config's own "
                       f"'encoder'/'encoder_kwargs' build it.")
    # cards written before the sampler's arguments were recorded: the defaults (the weights say otherwise, if so)
    overrides["sampler_kwargs"] = _plain_tree(facts.get("sampler_kwargs") or {}, f"{CARD_KEY}#sampler_kwargs")
    return overrides


def build_network(
    config_file: str | os.PathLike | Sequence[str],
    ckpt_file: str | os.PathLike,
    card: Mapping | None = None,
    bundle_root: str | os.PathLike | None = None,
    net_id: str = "network_def",
    **overrides: Any,
) -> torch.nn.Module:
    """
    ``net_id`` of the bundle config (trusted: parsed with MONAI's ``ConfigParser``), built with the card's
    :func:`card_overrides` and ``overrides``, with the weights of ``ckpt_file`` (``weights_only``), in eval mode.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_file if isinstance(config_file, (list, tuple)) else str(config_file))
    if bundle_root is not None:
        parser["bundle_root"] = str(bundle_root)
    for k, v in {**(card_overrides(card) if card is not None else {}), **overrides}.items():
        parser[k] = v
    return load_weights(parser.get_parsed_content(net_id), ckpt_file).eval()


def load_weights(network: torch.nn.Module, ckpt_file: str | os.PathLike) -> torch.nn.Module:
    """``network`` with the weights of ``ckpt_file`` (:func:`monai_das.utils.io.read_checkpoint`:
    ``torch.load(weights_only=True)`` of a whole file; a state dict or a bundle checkpoint ``{"model": state_dict,
    ...}``)."""
    state = read_checkpoint(ckpt_file)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    network.load_state_dict(state)
    return network


#: the exporter's own chatter, kept out of a run's log while it runs (errors still show): ``onnxscript``'s optimizer
#: logs every node it does not fold at INFO and ``onnx_ir`` every initializer it merges (over a hundred lines in a
#: bundle run, whose logging is at INFO), ``torch.onnx`` warns about torchvision operators it skips
_EXPORTER_LOGS = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.ERROR}


def _image_shape(card: Mapping) -> list[int]:
    facts = card.get(CARD_KEY) or {}
    shape = facts.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(f"model card has no usable {CARD_KEY}#image_shape (C×D×H×W or T×C×H×W), got {shape!r}.")
    return [int(s) for s in shape]


class ExportedClassifier(torch.nn.Module):
    """
    What an ONNX export of a :class:`~monai_das.networks.SubsampledClassifier` computes: ``image`` (the network's
    input) → ``pred`` (logits ``B×num_classes``) and ``indices`` (kept frames ``B×k``, ascending), one pass. With
    ``any_k`` the export also takes ``num_samples``: a 1-D tensor whose *length* is ``k`` (a size is what
    ``torch.export`` can keep symbolic); :func:`save_onnx` turns it into an ``int64 [1]`` input holding ``k``.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, num_samples: torch.Tensor | None = None):
        k = None if num_samples is None else num_samples.shape[0]
        return self.network.forward_with_indices(image, k)


def _k_as_value(model: Any) -> None:
    """Replace the graph input ``num_samples`` (a tensor of length ``k``) by an ``int64 [1]`` input holding ``k``."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    old = next(i for i in graph.input if i.name == "num_samples")
    for node in graph.node:
        node.input[:] = ["num_samples_shape" if n == "num_samples" else n for n in node.input]
    graph.input.remove(old)
    graph.input.append(helper.make_tensor_value_info("num_samples", TensorProto.INT64, [1]))
    value = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    graph.node.insert(0, helper.make_node("ConstantOfShape", ["num_samples"], ["num_samples_shape"], value=value))
    onnx.checker.check_model(model)


def save_onnx(
    network: torch.nn.Module,
    filepath: str | os.PathLike,
    item_shape: Sequence[int],
    metadata: Mapping | None = None,
    check: bool = True,
    atol: float = 1e-3,
    opset_version: int | None = None,
    extra_props: Mapping[str, str] | None = None,
) -> str:
    """
    Export a :class:`~monai_das.networks.SubsampledClassifier` (eval mode) to ONNX with the dynamo exporter.

    Inputs: ``image`` ``[batch, *item_shape]`` float32 (dynamic batch axis) and, when the sampler can keep any
    ``k`` (``sampler.export_any_k``: DAS, DPS, uniform, random), ``num_samples`` ``int64 [1]``: the number of
    frames to keep, ``1 <= k <= T`` (the trained ``k`` is ``das_model#num_kept`` of the card). Outputs: ``pred``
    (logits ``[batch, num_classes]``) and ``indices`` (kept frames ``[batch, k]``, ascending, positions ``0..T-1``
    along the network's frame axis). The network's ``layout``, ``slice_axis``, ``T`` and default ``k`` are stored
    in ``metadata_props["monai_das.network"]``; ``metadata`` (the model card) is stored as JSON in
    ``metadata_props["metadata.json"]`` (``extra_props``: more string properties). The graph is rewritten into
    operators ONNX Runtime's CPU kernels run faster, each exact (:func:`monai_das.engines.onnx_graph.for_runtime`:
    global poolings, 1×1 layers on 1×1 maps as ``Gemm``, per-channel gates spread over small maps). With ``check``,
    ONNX Runtime runs the file at batch 1 and 3 (and at two ``k``) against the eager network: kept indices equal, and class
    probabilities (softmax of the logits) within ``atol`` or logits within ``atol`` times their largest magnitude
    (``RuntimeError`` otherwise). Not absolute logits: float32 rounding grows with the logits' scale, and a barely
    trained model with near-zero BatchNorm variances had logits in the thousands whose float32 and float64 values
    differ by 3.5 in eager PyTorch alone (a smoke model's probabilities differed by 1.9·10⁻⁴: hence 10⁻³; the engine
    tests check 10⁻⁴ on ordinary models). Not probabilities alone either: on the check's uniform-noise inputs a
    1-epoch video model gave logits near 220 with two classes 0.01 apart, where ONNX Runtime's float32 rounding at
    batch 3 (3·10⁻⁴ of the scale) moved a probability by 5·10⁻³.
    Returns the path. Every module is put back in the mode it was given in (an export in the middle of training
    left the network in eval mode: frozen BatchNorm statistics for the steps after).
    """
    with preserved_modes(network):
        network.eval()
        return _save_onnx(network, filepath, item_shape, metadata, check, atol, opset_version, extra_props)


def _save_onnx(network: torch.nn.Module, filepath: str | os.PathLike, item_shape: Sequence[int],
               metadata: Mapping | None, check: bool, atol: float, opset_version: int | None,
               extra_props: Mapping[str, str] | None) -> str:
    """:func:`save_onnx` of a network in eval mode."""
    import onnx

    item_shape = [int(s) for s in item_shape]
    sampler = getattr(network, "sampler", None)
    any_k = bool(getattr(sampler, "export_any_k", False))
    example = torch.rand(2, *item_shape)  # batch 2: a batch of 1 would be specialised by torch.export
    with torch.no_grad():  # the network's own message for a wrong item_shape, not torch.export's wall of text
        try:
            network(example[:1])
        except ValueError as e:
            raise ValueError(f"cannot export to '{filepath}' with item_shape {item_shape}: {e}") from e
    batch = torch.export.Dim("batch", min=1, max=4096)
    args: tuple = (example,)
    dynamic: tuple = ({0: batch},)
    names = ["image"]
    if any_k:
        t = num_frames_of(network, item_shape)
        k = sampler.num_samples
        # an example k other than 1 and T: torch.export specialises sizes 0/1 and sizes equal to another one
        args += (torch.zeros(k if 1 < k < t else max(2, t // 2), dtype=torch.int64),)
        dynamic += ({0: torch.export.Dim("k", min=1, max=t)},)
        names.append("num_samples")
    kwargs: dict[str, Any] = {}
    if opset_version is not None:
        kwargs["opset_version"] = int(opset_version)
    with torch.no_grad(), warnings.catch_warnings(), quiet_loggers(_EXPORTER_LOGS):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            ExportedClassifier(network), args, dynamo=True, verbose=False, input_names=names,
            output_names=["pred", "indices"], dynamic_shapes=dynamic, **kwargs,
        )
    model = program.model_proto
    if any_k:
        _k_as_value(model)
    try:  # exact rewrites into operators ONNX Runtime runs faster, on a copy: a failure leaves the export as it was
        rewritten = type(model)()
        rewritten.CopyFrom(model)
        for_runtime(rewritten)
        model = rewritten
    except Exception as e:  # e.g. an encoder whose graph ONNX shape inference cannot read: slower, not wrong
        logger.warning(f"ONNX export '{filepath}': the graph rewrites for ONNX Runtime were skipped "
                       f"({type(e).__name__}: {e}); the file runs as exported, the same answers at the former speed")
    props = {p.key: p.value for p in model.metadata_props}
    t = num_frames_of(network, item_shape)
    facts = {
        "layout": getattr(network, "layout", "volume"), "slice_axis": int(getattr(network, "slice_axis", 0)),
        "num_frames": t, "num_kept": int(sampler.num_kept(t)) if sampler is not None else t,
        "method": type(sampler).__name__ if sampler is not None else None,
    }
    props[NETWORK_PROP] = json.dumps(facts)
    props.update(extra_props or {})
    if metadata is not None:
        props[CARD_PROP] = json.dumps(metadata)
    props.pop(DIGEST_PROP, None)
    # what a model viewer (Netron) or ONNX Runtime's modelmeta shows: the exporter left the description empty and
    # the version at int64's largest value (trial T68e)
    card = metadata if isinstance(metadata, Mapping) else {}
    title = card.get("name") if isinstance(card.get("name"), str) else "monai_das classifier"
    frames = "frames" if facts["layout"] == "video" else "slices"
    model.doc_string = (f"{title}: {facts['method'] or 'full'} keeping {facts['num_kept']} of {facts['num_frames']} "
                        f"{frames}{' (any k: input num_samples)' if any_k else ''}")
    model.model_version = 1
    onnx.helper.set_model_props(model, props)
    props[DIGEST_PROP] = onnx_digest(model)  # last: the graph and every property above (OnnxClassifier checks it)
    onnx.helper.set_model_props(model, props)
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "the ONNX export") as tmp:
        onnx.save(model, str(tmp))
    if check:
        _check_onnx(network, path, item_shape, atol)
    logger.info(f"exported ONNX (dynamic batch{', any k' if any_k else ''}) to {path}")
    return str(path)


#: ``metadata_props`` key naming the checkpoint (SHA-256) and ``k`` an ONNX file was exported from
SOURCE_PROP = "monai_das.source"


def onnx_source(network: torch.nn.Module, ckpt_file: str | os.PathLike, item_shape: Sequence[int]) -> dict:
    """
    What an ONNX export of ``network`` from ``ckpt_file`` was made from, stored as :data:`SOURCE_PROP` so that
    inference (:func:`monai_das.engines.inference_network`) reuses the file while the checkpoint and the way it reads
    a study are the same: ``{"checkpoint_sha256", "num_kept", "item_shape", "layout", "slice_axis", "graph"}``
    (``num_kept``: ``None`` for a graph with ``k`` as an input; ``graph``: the graph rewrites of this version,
    :data:`monai_das.engines.onnx_graph.REWRITES`, so a file written before them is exported again). The grid and the
    slice axis are baked into the graph: another ``--spatial_size`` or ``--slice_axis`` with the same checkpoint must
    not run the old file (on a cubic grid another slice axis would give answers of the wrong axis without any error).
    """
    from monai_das.utils.io import file_digest

    sampler = network.sampler
    k = int(sampler.num_kept(num_frames_of(network, item_shape)))
    return {"checkpoint_sha256": file_digest(ckpt_file), "num_kept": None if sampler.export_any_k else k,
            "item_shape": [int(s) for s in item_shape], "layout": getattr(network, "layout", "volume"),
            "slice_axis": int(getattr(network, "slice_axis", 0)), "graph": REWRITES}


def num_frames_of(network: torch.nn.Module, item_shape: Sequence[int]) -> int:
    """``T`` of one input of shape ``item_shape`` (``C×D×H×W`` volume or ``T×C×H×W`` video)."""
    return int(item_shape[frame_axis(getattr(network, "layout", "volume"), getattr(network, "slice_axis", 0))])


def _check_onnx(network: torch.nn.Module, path: Path, item_shape: list[int], atol: float) -> None:
    from monai_das.networks.nets.onnx_classifier import OnnxClassifier

    t = num_frames_of(network, item_shape)
    runner = OnnxClassifier(path, num_samples=network.sampler.num_kept(t))
    gen = torch.Generator().manual_seed(0)
    ks: list[int | None] = [None] + ([max(1, t // 4)] if runner.any_k else [])
    for batch, k in [(1, None), (3, None)] + [(2, k) for k in ks[1:]]:
        x = torch.rand(batch, *item_shape, generator=gen)
        got, idx = runner.forward_with_indices(x, k)
        with torch.no_grad():
            if getattr(network.sampler, "random_in_eval", False):  # another draw: check on the graph's own frames
                kept = k if k is not None else runner.num_samples
                valid = (tuple(idx.shape) == (batch, kept) and bool(((idx >= 0) & (idx < t)).all())
                         and bool((idx.diff(dim=1) > 0).all()))  # k ascending (so distinct) frames of 0..T-1
                expected_idx = idx if valid else None  # else reported below as indices that differ
                expected = network.classify_kept(network.to_frames(x), idx) if valid else network(x, k)
            else:
                expected, expected_idx = network.forward_with_indices(x, k)
        same_shape = got.shape == expected.shape
        diff = float((got.softmax(-1) - expected.softmax(-1)).abs().max()) if same_shape else float("nan")
        logit_diff = float((got - expected).abs().max()) if same_shape else float("nan")
        scale = max(1.0, float(expected.abs().max()))
        same_idx = expected_idx is not None and idx.shape == expected_idx.shape and bool(torch.equal(idx, expected_idx))
        if not (diff <= atol or logit_diff <= atol * scale) or not same_idx:
            raise RuntimeError(
                f"ONNX file '{path}' differs from the eager network at batch {batch}, k={k or 'default'}: logits "
                f"{tuple(got.shape)} vs {tuple(expected.shape)}, max |probability difference| {diff:.3g} and max "
                f"|logit difference| {logit_diff:.3g} for logits up to {scale:.3g} (allowed: probabilities within "
                f"{atol} or logits within {atol} × that scale); kept indices {'equal' if same_idx else 'differ'}."
            )


def read_onnx_card(path: str | os.PathLike) -> dict | None:
    """The card embedded in an ONNX file (``metadata_props``), read as plain JSON; weights are not loaded. A file that
    records a digest its graph and metadata no longer match (:func:`~monai_das.networks.nets.onnx_classifier.
    digest_state`: changed after its export) is refused, as :class:`~monai_das.networks.OnnxClassifier` refuses it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if digest_state(model) is False:
        raise ValueError(f"'{path}' was changed after its export: its graph or metadata do not match the "
                         f"'{DIGEST_PROP}' recorded at export, so its card may not describe this graph. Export it "
                         "again from its checkpoint.")
    if CARD_PROP not in props:
        return None
    value = json.loads(props[CARD_PROP])
    return value if isinstance(value, dict) else None


def _bundle_paths(bundle_root: str | os.PathLike, ckpt_file, meta_file) -> tuple[Path, Path, Path]:
    root = Path(bundle_root)
    ckpt = Path(ckpt_file) if ckpt_file is not None else root / "models" / "model.pt"
    card = Path(meta_file) if meta_file is not None else root / "models" / "metadata.json"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint '{ckpt}' does not exist.")
    return root, ckpt, card


def check_card_checkpoint(card: Mapping, card_path: str | os.PathLike, ckpt: str | os.PathLike) -> None:
    """
    Refuse to export ``ckpt`` with a model card written for another checkpoint: the rule of
    :func:`monai_das.handlers.model_card.check_model_card` (the card describes the file whose SHA-256 it records as
    ``das_model#checkpoint_sha256``), which a batch inference only warns about, since it takes its facts from its own
    options. An export embeds the card as the description of the file it writes (layout, slice axis, grid, classes,
    ``k``), and the Deploy app and MONAI Label serve the file by it: a card of another run (e.g. another slice axis)
    would give answers of the wrong axis without any error. A card that records no checksum (written before cards
    recorded one) cannot be checked: exported with a warning.

    Raises:
        ValueError: naming both files, both hashes and how to get the card that describes ``ckpt``.
    """
    from monai_das.handlers.model_card import WRITE_CARD_AGAIN, card_describes
    from monai_das.utils.io import file_digest

    digest = file_digest(ckpt)
    describes = card_describes(card, digest)
    if describes is None:
        logger.warning(f"the model card '{card_path}' records no checkpoint_sha256 (written before cards recorded "
                       f"their checkpoint): it cannot be checked that it describes '{ckpt}'; it is embedded as it is. "
                       "Use the card the training of this checkpoint wrote.")
        return
    if describes:
        return
    raise ValueError(
        f"the model card '{card_path}' was written for another file than the checkpoint '{ckpt}': it records "
        f"checkpoint_sha256 {card[CARD_KEY]['checkpoint_sha256']}, the checkpoint's is {digest}. An export embeds "
        "the card as the model's description (layout, slice axis, grid, classes, k), so the exported file would be "
        "served as another model. Export with the card the training of this checkpoint wrote (its "
        f"models/metadata.json, --meta_file), or write one: {WRITE_CARD_AGAIN}."
    )


def _misfit(error: Exception, ckpt: Path, card_path: Path, card: Mapping, config_file: Any) -> ValueError | None:
    """A clear error for a checkpoint that does not fit the network the card describes (``load_state_dict``'s
    ``Error(s) in loading state_dict``, which names neither file); ``None`` for another error."""
    text = str(error)
    if "state_dict" not in text and "size mismatch" not in text:
        return None
    recorded = (card.get(CARD_KEY) or {}).get("checkpoint_sha256")
    why = ("its card records no checkpoint_sha256, so it may be another run's card (use the card the training of this "
           "checkpoint wrote)" if recorded is None else
           f"its card records this checkpoint's SHA-256, so the config '{config_file}' builds another network than "
           "the training's (export with the training's bundle config)")
    first = text.strip().splitlines()
    return ValueError(f"the checkpoint '{ckpt}' does not fit the network its model card '{card_path}' describes: "
                      f"{why}. PyTorch says: {' '.join(line.strip() for line in first[:3])[:400]}")


def export_onnx(
    bundle_root: str | os.PathLike,
    config_file: str | os.PathLike,
    filepath: str | os.PathLike | None = None,
    ckpt_file: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    check: bool = True,
    net_id: str = "network_def",
    **overrides: Any,
) -> str:
    """
    ONNX file of a trained bundle (default ``<bundle_root>/models/model.onnx``) from ``models/model.pt`` and the
    card ``models/metadata.json`` (network keys and data facts from the card; see :func:`save_onnx`).
    """
    root, ckpt, card_path = _bundle_paths(bundle_root, ckpt_file, meta_file)
    card = read_model_card(card_path)
    check_card_checkpoint(card, card_path, ckpt)
    try:
        net = build_network(config_file, ckpt, card, bundle_root=root, net_id=net_id, **overrides)
    except RuntimeError as e:
        misfit = _misfit(e, ckpt, card_path, card, config_file)
        if misfit is None:
            raise
        raise misfit from e
    out = Path(filepath) if filepath is not None else root / "models" / "model.onnx"
    shape = _image_shape(card)
    source = {SOURCE_PROP: json.dumps(onnx_source(net, ckpt, shape))}  # inference then reuses this file
    return save_onnx(net, out, shape, metadata=card, check=check, extra_props=source)


def export_torchscript(
    bundle_root: str | os.PathLike,
    config_file: str | os.PathLike,
    filepath: str | os.PathLike | None = None,
    ckpt_file: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    net_id: str = "network_def",
    **overrides: Any,
) -> str:
    """
    ``monai.bundle.ckpt_export`` (trace) of a trained bundle with the card as ``meta_file`` (embedded as
    ``metadata.json``), the trace input ``[1, *image_shape]`` and the network keys/data facts from the card. A card
    that MONAI's parser would not read as plain data is refused first (:func:`check_card_for_parser`), and so is a
    card written for another checkpoint (:func:`check_card_checkpoint`). The file gets an extra file
    ``monai_das.source`` (:data:`SOURCE_PROP`, JSON: :func:`torchscript_source`): the checkpoint's SHA-256 and that
    the network was built from the card, which the Deploy app checks against the embedded card (a ``.ts`` without it
    was written by MONAI's ``ckpt_export`` alone, whose network is built from the config and its command line).
    """
    from monai.bundle import ckpt_export

    root, ckpt, card_path = _bundle_paths(bundle_root, ckpt_file, meta_file)
    card = read_model_card(card_path)
    check_card_for_parser(card, card_path)  # ckpt_export reads the card with MONAI's ConfigParser
    check_card_checkpoint(card, card_path, ckpt)
    read_checkpoint(ckpt)  # the project's reader first: a pickled object named as one, before MONAI's loader
    out = Path(filepath) if filepath is not None else root / "models" / "model.ts"
    shape = _image_shape(card)
    # exported into memory: torch's C++ writer aborts the whole process on a full disk ("terminate called after
    # throwing an instance of 'c10::Error'"), where a Python write raises an OSError naming the file
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _without_monai_export_line():
        warnings.simplefilter("ignore")  # tracer warnings: the sampler's control flow does not depend on values
        try:
            ckpt_export(net_id=net_id, filepath=buffer, ckpt_file=str(ckpt), meta_file=str(card_path),
                        config_file=str(config_file), bundle_root=str(root), use_trace=True,
                        input_shape=[1, *shape], **{**card_overrides(card), **overrides})
        except RuntimeError as e:
            misfit = _misfit(e, ckpt, card_path, card, config_file)
            if misfit is None:
                raise
            raise misfit from e
    data = _with_extra_file(buffer.getvalue(), SOURCE_PROP, json.dumps(torchscript_source(ckpt, card, shape)))
    # written beside and swapped in whole: a killed export never leaves a truncated model.ts that would be picked up
    with atomic_file(out, "the TorchScript export") as tmp:
        Path(tmp).write_bytes(data)
    logger.info(f"exported TorchScript to {out}")
    return str(out)


@contextlib.contextmanager
def _without_monai_export_line():
    """Leave out ``ckpt_export``'s ``> filepath: <_io.BytesIO ...>`` and ``exported to file: <_io.BytesIO ...>``
    (it exports into memory here; the file written is logged afterwards)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("exported to file:", "> filepath:"))

    monai_logger = logging.getLogger("monai.bundle.scripts")
    monai_logger.addFilter(keep)
    try:
        yield
    finally:
        monai_logger.removeFilter(keep)


def torchscript_source(ckpt_file: str | os.PathLike, card: Mapping, item_shape: Sequence[int]) -> dict:
    """What :func:`export_torchscript` records in the extra file :data:`SOURCE_PROP` of a ``.ts``:
    ``{"checkpoint_sha256", "network": "built from the model card", "exporter", "item_shape", "num_kept"}``
    (``num_kept``: the card's trained ``k``, which the traced graph keeps)."""
    from monai_das.utils.io import file_digest

    return {"checkpoint_sha256": file_digest(ckpt_file), "network": "built from the model card",
            "exporter": "python -m monai_das.engines.export torchscript",
            "item_shape": [int(s) for s in item_shape], "num_kept": (card.get(CARD_KEY) or {}).get("num_kept")}


def _with_extra_file(archive: bytes, name: str, content: str) -> bytes:
    """The TorchScript ``archive`` with the extra file ``name`` added, keeping the ones there (MONAI's
    ``metadata.json``, ``inference.json``): loaded and saved again, as ``torch.jit`` writes extra files."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        names = [n.split("/extra/", 1)[1] for n in opened.namelist() if "/extra/" in n]
    extra: dict[str, Any] = {n: "" for n in names}
    module = torch.jit.load(io.BytesIO(archive), map_location="cpu", _extra_files=extra)
    extra[name] = content
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=extra)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_das.engines.export",
        description="Export a trained DAS bundle with its model card embedded (ONNX: dynamic batch, card in "
                    "metadata_props; TorchScript: monai.bundle ckpt_export with the card as meta_file).",
    )
    parser.add_argument("format", choices=("onnx", "torchscript"))
    parser.add_argument("--bundle_root", required=True, help="folder with models/model.pt and models/metadata.json")
    parser.add_argument("--config_file", required=True, help="the bundle's configs/inference.json (trusted code)")
    parser.add_argument("--filepath", default=None, help="output (default <bundle_root>/models/model.onnx|.ts)")
    parser.add_argument("--ckpt_file", default=None, help="default <bundle_root>/models/model.pt")
    parser.add_argument("--meta_file", default=None, help="the model card (default <bundle_root>/models/metadata.json)")
    parser.add_argument("--net_id", default="network_def")
    parser.add_argument("--no_check", action="store_true", help="ONNX: skip the onnxruntime check")
    args = parser.parse_args(argv)
    if args.format == "onnx":
        out = export_onnx(args.bundle_root, args.config_file, args.filepath, args.ckpt_file, args.meta_file,
                          check=not args.no_check, net_id=args.net_id)
    else:
        out = export_torchscript(args.bundle_root, args.config_file, args.filepath, args.ckpt_file, args.meta_file,
                                 net_id=args.net_id)
    print(out)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    # run the package's module, not this __main__ copy of it (monai_das.engines imported it already): one set of
    # classes and loggers, whichever way the export is started
    from monai_das.engines.export import main as _main

    sys.exit(_main())
