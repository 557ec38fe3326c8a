"""
Exports that describe themselves: TorchScript and ONNX files of a trained DAS bundle with its model card
(``<bundle_root>/models/metadata.json``, written by :class:`monai_das.handlers.ModelCardSaver`) embedded.

- TorchScript: MONAI's ``ckpt_export`` embeds its ``--meta_file`` as the archive's ``metadata.json``; with the card
  as ``--meta_file`` it also reads the trace input shape from it (``(1, num_channels, *spatial_shape)``), so
  ``--input_shape`` may be left out::

      python -m monai.bundle ckpt_export network_def --filepath <root>/models/model.ts \\
          --ckpt_file <root>/models/model.pt --meta_file <root>/models/metadata.json \\
          --config_file <bundle>/configs/inference.json --bundle_root <root> --use_trace True

  (the data keys of the training, ``--datalist``/``--dataset``/``--spatial_size``/..., must be given again, since
  ``network_def`` is built from the data facts). :func:`export_torchscript` (``python -m monai_das.engines.export
  torchscript``) does the same with the network keys and data facts taken from the card.
- ONNX: MONAI's ``onnx_export`` neither embeds the metadata nor makes the batch axis dynamic;
  :func:`export_onnx` (``python -m monai_das.engines.export onnx``) uses the dynamo exporter with a dynamic batch
  axis, stores the card as plain JSON in ``model.metadata_props["metadata.json"]`` and checks the file with
  onnxruntime at batch 1 and 3 against the eager network.

The card is data: it is read with ``json.loads``, and only plain values (numbers, names without ``$``/``%``/``@``)
of it are passed to the bundle config as overrides.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CARD_PROP",
    "read_model_card",
    "card_overrides",
    "build_network",
    "save_onnx",
    "read_onnx_card",
    "export_onnx",
    "export_torchscript",
]

logger = logging.getLogger(__name__)

#: ``metadata_props`` key of the card in an ONNX file (the name MONAI gives the TorchScript extra file)
CARD_PROP = "metadata.json"
CARD_KEY = "das_model"


def read_model_card(path: str | os.PathLike) -> dict:
    """A model card (``metadata.json``) as plain JSON; ``ValueError`` when it is not one (no ``das_model``)."""
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
    return card


def _plain_name(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and not value.startswith(("$", "%")) and "@" not in value:
        return value
    raise ValueError(f"model card value {key}={value!r} is not a plain value; it is not passed to the config.")


def _plain_tree(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_tree(v, f"{key}#{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_tree(v, f"{key}#{i}") for i, v in enumerate(value)]
    return _plain_name(value, key)


def card_overrides(card: Mapping) -> dict:
    """
    Config overrides that make the bundle's ``network_def`` build the network the card describes: ``info`` (the data
    facts the network uses: ``layout``, ``num_frames``, ``in_channels``, ``num_classes``, ``slice_axis``,
    ``spatial_size``, ``image_shape``) and ``method``, ``keep_ratio``, ``temporal_head``, ``encoder`` (a name of
    ``monai.networks.nets``; an encoder module recorded by class path is left to the config), ``encoder_kwargs``.
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
    encoder = facts.get("encoder")
    if encoder is None or (isinstance(encoder, str) and "." not in encoder):
        overrides["encoder"] = _plain_name(encoder, f"{CARD_KEY}#encoder")
        overrides["encoder_kwargs"] = _plain_tree(facts.get("encoder_kwargs") or {}, f"{CARD_KEY}#encoder_kwargs")
    else:
        logger.warning(f"the card's encoder {encoder!r} is a module recorded by class path: the config's own "
                       f"'encoder'/'encoder_kwargs' build it.")
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
    net = parser.get_parsed_content(net_id)
    state = torch.load(str(ckpt_file), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    net.load_state_dict(state)
    return net.eval()


def _image_shape(card: Mapping) -> list[int]:
    facts = card.get(CARD_KEY) or {}
    shape = facts.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(f"model card has no usable {CARD_KEY}#image_shape (C×D×H×W or T×C×H×W), got {shape!r}.")
    return [int(s) for s in shape]


def save_onnx(
    network: torch.nn.Module,
    filepath: str | os.PathLike,
    item_shape: Sequence[int],
    metadata: Mapping | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    opset_version: int | None = None,
) -> str:
    """
    Export ``network`` (eval mode) to ONNX with the dynamo exporter: input ``image`` ``[batch, *item_shape]`` with a
    dynamic batch axis, output ``pred``; ``metadata`` stored as JSON in ``metadata_props["metadata.json"]``. With
    ``check``, onnxruntime runs the file at batch 1 and 3 and must match the eager network: max |difference| of the
    logits <= ``atol`` + ``rtol``·max |eager logit| (float32 rounding grows with the logits' scale;
    ``RuntimeError`` otherwise). Returns the path.
    """
    import onnx

    network = network.eval()
    item_shape = [int(s) for s in item_shape]
    example = torch.rand(2, *item_shape)  # batch 2: a batch of 1 would be specialised by torch.export
    kwargs: dict[str, Any] = {}
    if opset_version is not None:
        kwargs["opset_version"] = int(opset_version)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            network, (example,), dynamo=True, verbose=False, input_names=["image"], output_names=["pred"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), **kwargs,
        )
    model = program.model_proto
    if metadata is not None:
        props = {p.key: p.value for p in model.metadata_props}
        props[CARD_PROP] = json.dumps(metadata)
        onnx.helper.set_model_props(model, props)
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    if check:
        _check_onnx(network, path, item_shape, atol, rtol)
    logger.info(f"exported ONNX (dynamic batch) to {path}")
    return str(path)


def _check_onnx(network: torch.nn.Module, path: Path, item_shape: list[int], atol: float, rtol: float) -> None:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        x = torch.rand(batch, *item_shape, generator=gen)
        with torch.no_grad():
            expected = network(x).numpy()
        got = sess.run(None, {name: x.numpy()})[0]
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("nan")
        if not diff <= atol + rtol * float(np.abs(expected).max()):
            raise RuntimeError(
                f"ONNX file '{path}' differs from the eager network at batch {batch}: output {got.shape} vs "
                f"{expected.shape}, max |difference| {diff:.3g} (atol {atol}, rtol {rtol} of the largest logit)."
            )


def read_onnx_card(path: str | os.PathLike) -> dict | None:
    """The card embedded in an ONNX file (``metadata_props``), read as plain JSON; weights are not loaded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
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
    net = build_network(config_file, ckpt, card, bundle_root=root, net_id=net_id, **overrides)
    out = Path(filepath) if filepath is not None else root / "models" / "model.onnx"
    return save_onnx(net, out, _image_shape(card), metadata=card, check=check)


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
    ``metadata.json``), the trace input ``[1, *image_shape]`` and the network keys/data facts from the card.
    """
    from monai.bundle import ckpt_export

    root, ckpt, card_path = _bundle_paths(bundle_root, ckpt_file, meta_file)
    card = read_model_card(card_path)
    out = Path(filepath) if filepath is not None else root / "models" / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: the sampler's control flow does not depend on values
        ckpt_export(net_id=net_id, filepath=str(out), ckpt_file=str(ckpt), meta_file=str(card_path),
                    config_file=str(config_file), bundle_root=str(root), use_trace=True,
                    input_shape=[1, *_image_shape(card)], **{**card_overrides(card), **overrides})
    return str(out)


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
    sys.exit(main())
