"""
The inference engines of the bundles' batch inference: ONNX Runtime (default), TorchScript and eager PyTorch, all
answering as a module whose ``forward`` returns logits and whose ``last_indices`` holds the kept frames of that
same pass (read by :class:`monai_das.handlers.SampledIndicesHandler`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from monai_das.engines.export import (
    CARD_KEY,
    SOURCE_PROP,
    ExportedClassifier,
    load_weights,
    num_frames_of,
    onnx_source,
    read_model_card,
    save_onnx,
)
from monai_das.handlers.model_card import card_describes
from monai_das.networks.nets.onnx_classifier import OnnxClassifier

__all__ = ["ENGINES", "IndicesRecorder", "inference_network"]

logger = logging.getLogger(__name__)

#: engines of :func:`inference_network`, the default first
ENGINES = ("onnxruntime", "torchscript", "eager")


class IndicesRecorder(nn.Module):
    """
    Wraps a module returning ``(logits, indices)`` (a traced :class:`~monai_das.engines.ExportedClassifier`): its
    ``forward`` returns the logits and leaves the indices of the same pass in :attr:`last_indices`.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.last_indices: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, self.last_indices = self.module(x)
        return logits


def _onnx_record(path: Path) -> tuple[dict | None, bool | None]:
    """From one parse of an ONNX file: its ``SOURCE_PROP`` (plain JSON; ``None`` when absent or unreadable: export
    again) and :func:`monai_das.networks.nets.onnx_classifier.digest_state` (``False``: changed after its export;
    ``None``: it records no digest, an earlier version's export, given one by exporting it again once)."""
    import onnx

    from monai_das.networks.nets.onnx_classifier import digest_state

    try:
        model = onnx.load(str(path), load_external_data=False)
        value = json.loads({p.key: p.value for p in model.metadata_props}[SOURCE_PROP])
    except Exception:  # not ours, damaged, older: export again
        return None, None
    return (value, digest_state(model)) if isinstance(value, dict) else (None, None)


def _onnx_source(path: Path) -> dict | None:
    """The ``SOURCE_PROP`` of an ONNX file (plain JSON), ``None`` when absent or unreadable."""
    return _onnx_record(path)[0]


def _first_difference(found: dict, wanted: dict) -> str:
    """What differs between two :func:`onnx_source` records, in words: ``checkpoint``, or the setting and both
    values."""
    if found.get("checkpoint_sha256") != wanted["checkpoint_sha256"]:
        return "checkpoint"
    if found.get("graph") is None:  # the record of a version before the graph rewrites: the same answers, slower
        return "version, without the graph rewrites for ONNX Runtime (the same answers, slower)"
    for key, value in wanted.items():
        if found.get(key) != value:
            return f"{key} ({found.get(key)!r}; now {value!r})"
    return "record"


def inference_network(
    network: nn.Module,
    ckpt_path: str | os.PathLike,
    engine: str = "onnxruntime",
    item_shape: Sequence[int] | None = None,
    onnx_path: str | os.PathLike | None = None,
    card_path: str | os.PathLike | None = None,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """
    The network the bundle's batch inference runs, for ``engine``:

    - ``"onnxruntime"`` (default): the checkpoint's ONNX export (:func:`~monai_das.engines.save_onnx`: logits and
      kept indices from one graph, checked against the eager network when written) run by
      :class:`~monai_das.networks.OnnxClassifier`. ``onnx_path`` is reused when it was exported from this very
      checkpoint (SHA-256 recorded in the file) for this ``item_shape``, layout and slice axis and can keep this
      ``k`` (:func:`~monai_das.engines.export.onnx_source`); otherwise it is (re)written, atomically, with the model
      card ``card_path`` embedded when there is one. A graph that keeps a fixed ``k`` (ADPS, DAS ``spread``) asked
      for another ``k`` than the card's trained one is kept in its own file, ``model.k<k>.onnx`` beside
      ``onnx_path``, so the export at the trained ``k`` (what the Deploy app serves) is never replaced. The
      checkpoint is loaded into ``network`` either way, so a network that does not fit it is refused as with
      ``eager``.
    - ``"torchscript"``: the network traced in memory (:class:`IndicesRecorder` of a traced
      :class:`~monai_das.engines.ExportedClassifier`).
    - ``"eager"``: ``network`` itself; the bundle's ``CheckpointLoader`` handler loads the weights.

    ``network`` is the bundle's ``network_def``, built with the ``k`` to keep (``keep_ratio`` of the inference
    config; any ``k`` for DAS, DPS, uniform, random and ADPS, whose parameters do not depend on it).

    Args:
        network: the eager classifier (weights not loaded yet).
        ckpt_path: its checkpoint (``torch.load(weights_only=True)``; a ``{"model": ...}`` dict or a state dict).
        engine: one of :data:`ENGINES`.
        item_shape: one input without batch (``C×D×H×W`` or ``T×C×H×W``); needed by ``onnxruntime``/``torchscript``.
        onnx_path: where the ONNX file is kept (default: ``model.onnx`` beside the checkpoint).
        card_path: the model card to embed (default: ``metadata.json`` beside the checkpoint, when present).
        num_threads: ONNX Runtime intra-op threads (``None``: its default).
        device: ``cuda`` devices use ONNX Runtime's CUDA provider when it is installed.

    Raises:
        ValueError: unknown ``engine``, or ``item_shape`` missing. FileNotFoundError: no checkpoint.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    logger.info(f"inference engine: {engine} (--engine; {', '.join(ENGINES)}), checkpoint '{ckpt_path}'")
    if engine == "eager":
        return network
    if item_shape is None:
        raise ValueError(f"engine {engine!r} needs item_shape (one input without batch).")
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint '{ckpt}' does not exist (train first, or pass --ckpt_path).")
    network = network.to("cpu").eval()
    item_shape = [int(s) for s in item_shape]
    if engine == "torchscript":
        load_weights(network, ckpt)
        example = torch.rand(1, *item_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: the control flow does not depend on values
            traced = torch.jit.trace(ExportedClassifier(network), (example,))
        return IndicesRecorder(traced).to(device)
    onnx_file = Path(onnx_path) if onnx_path is not None else ckpt.with_name("model.onnx")
    k = int(network.sampler.num_kept(num_frames_of(network, item_shape)))
    load_weights(network, ckpt)  # also when the export is reused: a network that does not fit the checkpoint fails here
    wanted = onnx_source(network, ckpt, item_shape)
    card_file = Path(card_path) if card_path is not None else ckpt.with_name("metadata.json")
    card = read_model_card(card_file) if card_file.is_file() else None
    trained_k = card[CARD_KEY].get("num_kept") if card_describes(card, wanted["checkpoint_sha256"]) else None
    if wanted["num_kept"] is not None and trained_k is not None and int(trained_k) != k:
        # a fixed-k graph at another k than the trained one: its own file, beside the export at the trained k (the
        # one the Deploy app and MONAI Label serve, whose card says that k), never over it
        onnx_file = onnx_file.with_name(f"{onnx_file.stem}.k{k}{onnx_file.suffix}")
    found, digest = _onnx_record(onnx_file) if onnx_file.is_file() else (None, None)
    edited, undigested = found == wanted and digest is False, found == wanted and digest is None
    if found != wanted or edited or undigested:
        why = ("there is none" if not onnx_file.is_file() else
               "the one there is unreadable or not a monai_das export" if found is None else
               "the one there was changed after its export (its digest does not match)" if edited else
               "the one there records no digest of its graph and metadata (an earlier version's export)"
               if undigested else f"the one there was exported from another {_first_difference(found, wanted)}")
        (logger.warning if edited else logger.info)(
            f"exporting '{ckpt}' to ONNX '{onnx_file}' (once per checkpoint and settings; {why}) ...")
        save_onnx(network, onnx_file, item_shape, metadata=card, extra_props={SOURCE_PROP: json.dumps(wanted)})
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    return OnnxClassifier(onnx_file, num_samples=k, num_threads=num_threads, providers=providers)
