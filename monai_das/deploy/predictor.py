"""
Classify one study with an exported DAS model (TorchScript, or checkpoint + bundle config) and report which
slices/frames the sampler kept. Shared by the MONAI Deploy application and the MONAI Label sample app; needs neither
of their SDKs.

The jobs are split by module: :mod:`.spec` (:class:`ModelSpec`, the model card and metadata read as plain data),
:mod:`.model_files` (finding and loading model files; the only place a config the user points at is parsed) and this
module (:class:`DASPredictor`: input checks, kept indices, prediction). Trust: see ``docs/SECURITY.md``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from monai_das.deploy.model_files import (
    CHECKPOINT_NAMES,
    TORCHSCRIPT_NAMES,
    find_bundle_files,
    load_checkpoint,
    load_torchscript,
)
from monai_das.deploy.spec import MissingMetadataError, ModelSpec
from monai_das.networks.utils import to_frames

__all__ = ["ModelSpec", "Prediction", "DASPredictor", "MissingMetadataError", "find_bundle_files", "kept_indices"]

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """
    Result for one study.

    Attributes:
        probabilities: softmax (sigmoid for one logit) probabilities, one per class.
        label: predicted class id; ``label_name`` its name.
        kept_indices: frames the sampler kept, positions ``0..T-1`` along the network's frame axis (``None`` when
            the model does not expose its sampler).
        num_frames: ``T``; ``num_kept``: ``k``.
        compute_saved: ``1 - k/T``, the fraction of per-frame encoder passes skipped.
        macs: measured multiply-accumulates (``sampler``, ``downstream`` and ``full_sequence`` = the downstream
            network on all ``T`` frames), when the eager network is available; else ``None``.
    """

    probabilities: list[float]
    label: int
    label_name: str
    kept_indices: list[int] | None
    num_frames: int
    num_kept: int | None
    compute_saved: float | None
    macs: dict[str, int] | None = None

    @property
    def macs_saved(self) -> float | None:
        """``1 - (sampler + downstream) / full_sequence`` MACs (the sampler's own cost included)."""
        if not self.macs or not self.macs.get("full_sequence"):
            return None
        return 1.0 - (self.macs["sampler"] + self.macs["downstream"]) / self.macs["full_sequence"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "probabilities": self.probabilities,
            "predicted_label": self.label,
            "predicted_name": self.label_name,
            "kept_indices": self.kept_indices,
            "num_frames": self.num_frames,
            "num_kept": self.num_kept,
            "compute_saved": self.compute_saved,
            "macs": self.macs,
            "macs_saved": self.macs_saved,
        }


class DASPredictor:
    """
    Run a DAS classifier on one preprocessed study and report the kept slices/frames.

    Construct with :meth:`from_path` (bundle folder, TorchScript file or checkpoint) or directly from a module.

    Args:
        network: ``forward(x) -> logits B×num_classes``; for kept indices it should also expose ``sample(x)`` (as
            :class:`monai_das.networks.SubsampledClassifier` does, eager or scripted) or a ``sampler`` submodule
            taking ``B×T×C×H×W`` (traced exports keep it).
        spec: :class:`ModelSpec` of the network input.
        source: where the network came from (recorded in reports); ``model_format``: ``"torchscript"``,
            ``"checkpoint"`` or ``"module"``.
        device: torch device (default CPU).
        measure_macs: count MACs with torch's FLOP counter (eager networks with ``sampler``/``classify_frames``;
            counted once per input shape).
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        source: str = "",
        model_format: str = "module",
        device: str | torch.device = "cpu",
        measure_macs: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.spec = spec
        self.source = source
        self.model_format = model_format
        self.measure_macs = measure_macs
        self._macs_cache: dict[tuple[int, ...], dict[str, int] | None] = {}

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        config_file: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        prefer: str = "torchscript",
        measure_macs: bool = True,
        **spec_overrides: Any,
    ) -> DASPredictor:
        """
        Load a model.

        What is parsed depends on ``path`` (a config is code: MONAI's ``ConfigParser`` evaluates its ``$`` strings,
        so only a config the user points at is parsed; model files and their metadata are data):

        - a bundle folder (or its ``models/`` folder): ``models/model.ts``, falling back to ``models/model.pt``; the
          bundle's ``configs/inference.json`` is parsed with ``ConfigParser`` (trusted: the user chose the bundle).
        - a TorchScript file: loaded with ``torch.jit.load``; its embedded ``metadata.json``/``inference.json`` (as
          ``monai.bundle ckpt_export`` writes them) are read with ``json.loads`` and only literal values of
          ``network_def`` (``layout``, ``slice_axis``, ``in_channels``; a whole-string ``@id`` reference is looked up
          in the same JSON, never evaluated) and of the metadata are used. ``$``/``%`` expressions are ignored with a
          warning, falling back to the metadata or the :class:`ModelSpec` defaults. A ``configs/inference.json``
          next to the file (``<bundle>/models/model.ts``) is not parsed.
        - a checkpoint file: ``torch.load(weights_only=True)``; the network comes from ``config_file``, which is
          required even when the checkpoint lies in ``<bundle>/models/`` (pass the bundle folder instead to use its
          config).

        Metadata (plain JSON): a **model card** (a ``metadata.json`` with a ``das_model`` section, written by
        training: :class:`monai_das.handlers.ModelCardSaver`) describes the trained model and is used first: the one
        embedded in a TorchScript file (``ckpt_export --meta_file <bundle_root>/models/metadata.json``), else the
        one beside the model file (``<bundle>/models/metadata.json``). It gives the layout, grid, slice axis,
        channels, labels, ``k``, the sampler and the preprocessing ``recipe`` (:attr:`ModelSpec.recipe`). Without a
        card: the bundle's ``configs/metadata.json``, then the embedded ``metadata.json`` (``network_data_format``).
        A model whose grid is written nowhere is refused (``ValueError`` naming the ``spec_overrides`` to pass),
        never resampled to a guessed grid.

        Args:
            path: bundle folder, ``models/`` folder, TorchScript file or checkpoint file (see above).
            config_file: bundle config defining ``network_def`` (trusted: parsed with ``ConfigParser``); required for a
                checkpoint file, optional otherwise (overrides the bundle's own and a TorchScript file's embedded one).
            device: torch device.
            prefer: ``"torchscript"`` (default) or ``"checkpoint"`` when a bundle has both.
            measure_macs: count MACs (eager checkpoint networks only; once per input shape).
            spec_overrides: :class:`ModelSpec` fields that override what the bundle says (``layout``,
                ``spatial_size``, ``in_channels``, ``slice_axis``, ``labels``).

        Raises:
            FileNotFoundError: no model file. ValueError: a checkpoint file without ``config_file``; a model without
            any grid metadata (:class:`MissingMetadataError`). RuntimeError: loading failed (also a checkpoint whose
            card disagrees with the config's network).
        """
        if prefer not in ("torchscript", "checkpoint"):
            raise ValueError(f"prefer must be 'torchscript' or 'checkpoint', got {prefer!r}.")
        files = find_bundle_files(path)
        if config_file is not None:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"config file '{config_file}' does not exist.")
            files["config"] = Path(config_file)
        if files["torchscript"] is None and files["checkpoint"] is None:
            raise FileNotFoundError(
                f"no model found at '{path}': expected a TorchScript file, a checkpoint, or a bundle folder with "
                f"models/{TORCHSCRIPT_NAMES[0]} or models/{CHECKPOINT_NAMES[0]}."
            )
        if files["checkpoint"] is not None and files["torchscript"] is None and files["config"] is None:
            hint = (
                " (a model file's neighbouring configs/inference.json is not parsed: a config is code; pass the bundle"
                " folder to use it)" if Path(path).is_file() else ""
            )
            raise ValueError(
                f"checkpoint '{files['checkpoint']}' needs a bundle config with 'network_def': pass "
                f"config_file=<bundle>/configs/inference.json{hint}."
            )
        # a bundle folder's metadata.json joins its config's parser (the config may use @_meta_#...); the one next
        # to a model file is data and stays plain JSON
        trusted_meta = Path(path).is_dir()
        order = ["torchscript", "checkpoint"] if prefer == "torchscript" else ["checkpoint", "torchscript"]
        errors = []
        for kind in order:
            if files[kind] is None:
                continue
            try:
                load = load_torchscript if kind == "torchscript" else load_checkpoint
                net, spec = load(files, device, spec_overrides, trusted_meta)
                return cls(net, spec, source=str(files[kind]), model_format=kind, device=device,
                           measure_macs=measure_macs)
            except MissingMetadataError:
                raise  # the other format has no more metadata: say what to pass rather than fall back
            except (RuntimeError, ValueError, KeyError, OSError) as e:
                errors.append(f"{kind} '{files[kind]}': {e}")
                logger.warning("could not load %s model %s (%s); trying the next format", kind, files[kind], e)
        raise RuntimeError(f"could not load a model from '{path}': " + "; ".join(errors))

    # ------------------------------------------------------------------ inference
    def check_input(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` without batch dim (``C×D×H×W`` or ``T×C×H×W``) → batched float tensor on the device."""
        x = torch.as_tensor(image)
        if hasattr(x, "as_tensor"):
            x = x.as_tensor()
        if x.ndim != 4:
            raise ValueError(f"expected one study without batch dimension (4 dims), got shape {tuple(x.shape)}.")
        if self.spec.layout == "volume":
            channels, spatial = x.shape[0], tuple(x.shape[1:])
        else:
            channels, spatial = x.shape[1], (x.shape[0], *x.shape[2:])
        if self.spec.layout == "volume":
            axes, expected = "C×D×H×W", (self.spec.in_channels, *self.spec.spatial_size)
        else:
            size = self.spec.spatial_size
            axes, expected = "T×C×H×W", (size[0], self.spec.in_channels, size[1], size[2])
        shapes = f"the network takes a study of shape {_shape(expected)} ({axes}), this one is {_shape(x.shape)}"
        if channels != self.spec.in_channels:
            raise ValueError(f"the network expects {self.spec.in_channels} channel(s), the study has {channels}: "
                             f"{shapes}.")
        if spatial != tuple(self.spec.spatial_size):
            raise ValueError(f"the network expects spatial size {self.spec.spatial_size}, got {spatial}: {shapes}.")
        if not torch.isfinite(x).all():
            raise ValueError("the study contains NaN or infinite values after preprocessing.")
        return x[None].float().to(self.device)

    def kept_indices(self, x: torch.Tensor) -> torch.Tensor | None:
        """``B×k`` indices (ascending) the network's sampler keeps for batched input ``x``, or ``None``: see
        :func:`kept_indices`."""
        return kept_indices(self.network, x, to_frames(x, self.spec.layout, self.spec.slice_axis))

    def _macs(self, x: torch.Tensor) -> dict[str, int] | None:
        """:func:`monai_das.utils.cost.macs_breakdown` of an eager network, counted once per input shape."""
        net = self.network
        if not self.measure_macs or isinstance(net, torch.jit.ScriptModule):
            return None
        if not all(hasattr(net, a) for a in ("to_frames", "sampler", "classify_frames")):
            return None
        key = tuple(x.shape)
        if key not in self._macs_cache:
            from monai_das.utils.cost import macs_breakdown

            try:
                self._macs_cache[key] = macs_breakdown(net, x)
            except Exception as e:  # counting is informative only
                logger.warning("MAC counting failed: %s", e)
                self._macs_cache[key] = None
        return self._macs_cache[key]

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> Prediction:
        """Classify one preprocessed study (``C×D×H×W`` for ``volume``, ``T×C×H×W`` for ``video``)."""
        x = self.check_input(image)
        logits = self.network(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise RuntimeError(f"the network returned logits of shape {tuple(logits.shape)}, expected 1×num_classes.")
        logits = logits[0].float().cpu()
        probs = torch.sigmoid(logits) if logits.numel() == 1 else torch.softmax(logits, dim=0)
        label = int(probs[0] >= 0.5) if logits.numel() == 1 else int(torch.argmax(probs))
        probs_list = [1.0 - float(probs[0]), float(probs[0])] if logits.numel() == 1 else probs.tolist()
        idx = self.kept_indices(x)
        kept = idx[0].cpu().tolist() if idx is not None else None
        t = self.spec.num_frames
        k = len(kept) if kept is not None else None
        return Prediction(
            probabilities=[float(p) for p in probs_list],
            label=label,
            label_name=self.spec.label_name(label),
            kept_indices=kept,
            num_frames=t,
            num_kept=k,
            compute_saved=(1.0 - k / t) if k is not None else None,
            macs=self._macs(x),
        )

    def describe(self) -> dict[str, Any]:
        """Model facts for reports."""
        return {
            "source": self.source,
            "format": self.model_format,
            "layout": self.spec.layout,
            "spatial_size": list(self.spec.spatial_size),
            "in_channels": self.spec.in_channels,
            "slice_axis": self.spec.slice_axis,
            "labels": list(self.spec.labels),
            "method": self.spec.method,
            "num_kept": self.spec.num_kept,
            "recipe": self.spec.recipe,
        }


def _shape(shape: Any) -> str:
    return "×".join(str(int(s)) for s in shape)


def kept_indices(network: nn.Module, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | None:
    """
    ``B×k`` indices (ascending, positions ``0..T-1`` of ``frames``) of the frames ``network``'s sampler keeps for the
    batched input ``x`` (``frames``: ``x`` as the ``B×T×C×H×W`` sequence the sampler sees), or ``None`` when the
    network does not expose its sampler or calling it fails (the logits stay valid; a warning says why).

    Three ways, tried in this order, from the most to the least direct:

    1. ``network.sample(x)``: the classifier's own API (eager :class:`~monai_das.networks.SubsampledClassifier`, or a
       scripted export, which keeps methods). Its output (a ``SamplerOutput``, or a plain tuple ``(frames, matrix,
       indices)``) carries the indices.
    2. ``network.sampler(frames)``: a network with a ``sampler`` submodule but no ``sample`` method, e.g. a
       **traced** export (``ckpt_export --use_trace True``): tracing keeps submodules but not extra methods.
    3. If that sampler returns a bare ``B×k×C×H×W`` tensor (tracing drops the outputs the parent does not use, so a
       traced sampler returns only the kept frames), the indices are recovered by matching each kept frame to the
       input frames (:func:`_match_frames`; exact, since the sampler copies frames).
    """
    try:
        if hasattr(network, "sample"):
            out = network.sample(x)
        elif hasattr(network, "sampler"):
            out = network.sampler(frames)
        else:
            return None
    except Exception as e:  # the logits are still valid: report them without indices
        logger.warning("the network's sampler could not be called for the kept indices: %s", e)
        return None
    if isinstance(out, torch.Tensor):
        return _match_frames(out, frames) if out.ndim == 5 else None
    indices = out[2] if isinstance(out, (tuple, list)) and len(out) >= 3 else getattr(out, "indices", None)
    if not isinstance(indices, torch.Tensor):
        return None
    return torch.sort(indices.long(), dim=-1).values


def _match_frames(kept: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | None:
    """
    Indices ``B×k`` of the frames ``kept`` (``B×k×C×H×W``) in ``frames`` (``B×T×C×H×W``), ascending; ``None`` when
    the shapes do not fit.

    Each kept frame goes to its nearest input frame. When an input holds identical frames (several at the smallest
    distance, within ``1e-9``), the kept frames of that input take, in order, the earliest one not taken yet (the
    nearest one when all are taken), so that ``k`` copies of a repeated frame give ``k`` distinct indices.
    """
    if kept.shape[0] != frames.shape[0] or kept.shape[2:] != frames.shape[2:]:
        return None
    b, k, t = kept.shape[0], kept.shape[1], frames.shape[1]
    dist = torch.cdist(kept.reshape(b, k, -1).double(), frames.reshape(b, t, -1).double())  # B×k×T
    nearest = dist.argmin(dim=-1)  # B×k, the first of equal minima
    ties = dist <= dist.min(dim=-1, keepdim=True).values + 1e-9  # B×k×T
    picks = nearest.clone()
    for i in torch.nonzero((ties.sum(dim=-1) > 1).any(dim=-1)).flatten().tolist():  # inputs with identical frames
        used: set[int] = set()
        for j in range(k):
            free = [c for c in torch.nonzero(ties[i, j]).flatten().tolist() if c not in used]
            pick = free[0] if free else int(nearest[i, j])
            used.add(pick)
            picks[i, j] = pick
    return torch.sort(picks, dim=-1).values
