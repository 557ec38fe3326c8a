"""
Classify one study with an exported DAS model (ONNX run by ONNX Runtime, TorchScript, or checkpoint + bundle config)
and report which slices/frames the sampler kept, with a frame budget ``k`` chosen at inference. Shared by the MONAI
Deploy application and the MONAI Label sample app; needs neither of their SDKs.

The jobs are split by module: :mod:`.spec` (:class:`ModelSpec`, the model card and metadata read as plain data),
:mod:`.model_files` (finding and loading model files; the only place a config the user points at is parsed) and this
module (:class:`DASPredictor`: input checks, kept indices, prediction). Trust: see ``docs/SECURITY.md``.
"""

from __future__ import annotations

import logging
import os
import shlex
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from monai_das.deploy.model_files import (
    CHECKPOINT_NAMES,
    ONNX_NAMES,
    TORCHSCRIPT_NAMES,
    class_count_mismatch,
    find_bundle_files,
    load_checkpoint,
    load_onnx,
    load_torchscript,
)
from monai_das.deploy.spec import (
    CARD_KEY,
    MissingMetadataError,
    ModelSpec,
    OverrideError,
    _embedded_json,
    _read_json,
    collect_ignored,
)
from monai_das.networks.nets.sampler import check_count
from monai_das.networks.utils import check_device, check_finite, to_frames

__all__ = ["ModelSpec", "Prediction", "DASPredictor", "MissingMetadataError", "OverrideError", "ENGINES",
           "find_bundle_files", "kept_indices", "resolve_engine", "export_checks", "exported_checkpoint"]

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
        warnings: what the report of this study must say about the prediction itself (e.g. kept indices of a traced
            export matched among identical frames); :func:`~monai_das.deploy.report.study_report` adds them.
    """

    probabilities: list[float]
    label: int
    label_name: str
    kept_indices: list[int] | None
    num_frames: int
    num_kept: int | None
    compute_saved: float | None
    macs: dict[str, int] | None = None
    warnings: list[str] = field(default_factory=list)

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


#: engines of :meth:`DASPredictor.from_path` and the model file each one runs
ENGINES = {"onnxruntime": "onnx", "torchscript": "torchscript", "eager": "checkpoint"}
#: the model files tried, in order, for each engine (the first is the engine's own)
ENGINE_ORDER = {
    "onnxruntime": ("onnx", "torchscript", "checkpoint"),
    "torchscript": ("torchscript", "checkpoint", "onnx"),
    "eager": ("checkpoint", "onnx", "torchscript"),
}
_FORMAT_ENGINE = {fmt: engine for engine, fmt in ENGINES.items()}
_FILE_NAMES = {"onnx": f"models/{ONNX_NAMES[0]}", "torchscript": f"models/{TORCHSCRIPT_NAMES[0]}",
               "checkpoint": f"models/{CHECKPOINT_NAMES[0]} + configs/inference.json"}
#: the former ``prefer`` values
_PREFER = {"torchscript": "torchscript", "checkpoint": "eager"}


class DASPredictor:
    """
    Run a DAS classifier on one preprocessed study and report the kept slices/frames.

    Construct with :meth:`from_path` (bundle folder, ONNX file, TorchScript file or checkpoint) or directly from a
    module.

    Args:
        network: ``forward(x) -> logits B×num_classes``. With ``forward_with_indices(x, num_samples)`` (an
            :class:`~monai_das.networks.nets.OnnxClassifier`, an eager
            :class:`~monai_das.networks.SubsampledClassifier`) the logits and the kept indices come from one pass and
            any ``k`` may be kept; otherwise (TorchScript) the kept indices come from ``sample(x)`` or a ``sampler``
            submodule taking ``B×T×C×H×W`` (see :func:`kept_indices`) and ``k`` is the trained one.
        spec: :class:`ModelSpec` of the network input.
        source: where the network came from (recorded in reports); ``model_format``: ``"onnx"``, ``"torchscript"``,
            ``"checkpoint"`` or ``"module"``.
        device: torch device (default CPU; an ONNX model runs on ONNX Runtime's CPU provider unless built otherwise).
        measure_macs: count MACs with torch's FLOP counter (eager networks with ``sampler``/``classify_frames``;
            counted once per input shape, at the network's own ``k``).
        num_kept: ``k``, the frames kept at inference (a frame budget; ``1 <= k <= T``). ``None``: ``keep_ratio``,
            else the trained ``k`` (``spec.num_kept``, from the model card), else the network's own.
        keep_ratio: ``k = max(1, round(keep_ratio·T))``, in ``(0, 1]``; not together with ``num_kept``.
        engine_requested: the engine asked of :meth:`from_path`; ``engine_fallback``: why another one runs (reports).
        model_warnings: what the model file says of itself that every report must repeat (:func:`export_checks`,
            e.g. a TorchScript file written by MONAI's ``ckpt_export`` alone).

    Attributes:
        warnings: what every report of this model repeats in its ``warnings`` (also logged once, here): the spec's
            (:attr:`ModelSpec.warnings`, e.g. a ``spatial_size`` override that is not the trained grid), the model
            file's (``model_warnings``) and, when another engine runs than the one asked for, why
            (``engine_fallback``). :meth:`describe` gives them as
            ``warnings``; :func:`~monai_das.deploy.report.study_report` moves them into the report's ``warnings``.

    Raises:
        ValueError: ``num_kept``/``keep_ratio`` outside ``1..T`` / ``(0, 1]`` or both given, or a ``k`` other than
        the trained one for a network that cannot choose it (TorchScript, an ONNX export without ``num_samples``).
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        source: str = "",
        model_format: str = "module",
        device: str | torch.device = "cpu",
        measure_macs: bool = True,
        num_kept: int | None = None,
        keep_ratio: float | None = None,
        engine_requested: str | None = None,
        engine_fallback: str | None = None,
        model_warnings: list[str] | None = None,
    ) -> None:
        self.device = check_device(device)  # each study failed on its own with torch's message (trial T63c)
        self.network = network.to(self.device).eval()
        self.spec = spec
        self.source = source
        self.model_format = model_format
        self.measure_macs = measure_macs
        self.engine = _engine_of(network, model_format)
        self.engine_requested = engine_requested or self.engine
        self.engine_fallback = engine_fallback
        self.warnings: list[str] = list(getattr(spec, "warnings", None) or []) + list(model_warnings or [])
        if engine_fallback:
            self.warnings.append(f"engine {self.engine_requested!r} was not used: {engine_fallback} (the report's "
                                 "model.engine and model.source say what ran).")
        for message in self.warnings:
            logger.warning(message)
        self._macs_cache: dict[tuple[int, ...], dict[str, int] | None] = {}
        budget = self.budget(num_kept, keep_ratio)
        #: ``k`` kept at inference when :meth:`predict` is not given one (``None``: the network decides)
        self.num_kept: int | None = budget if budget is not None else self._network_k()

    @property
    def any_k(self) -> bool:
        """Whether the network can keep any ``k`` at inference (ONNX with ``num_samples``, eager networks)."""
        net = self.network
        if not hasattr(net, "forward_with_indices"):
            return False
        if hasattr(net, "any_k"):  # OnnxClassifier
            return bool(net.any_k)
        return bool(getattr(getattr(net, "sampler", None), "any_k", True))

    def _network_k(self) -> int | None:
        """The ``k`` the model keeps by default: the card's (trained), else the network's own."""
        return int(self.spec.num_kept) if self.spec.num_kept is not None else self._network_own_k()

    def _network_own_k(self) -> int | None:
        """The ``k`` the network keeps without ``num_samples`` (an ONNX file's default, an eager sampler's ``k``;
        what :meth:`_macs` counts), or ``None`` when it does not say (TorchScript)."""
        net = self.network
        if hasattr(net, "check_num_samples"):  # OnnxClassifier
            return int(net.num_samples) if net.num_samples is not None else None
        sampler = getattr(net, "sampler", None)
        if isinstance(net, torch.jit.ScriptModule) or not hasattr(sampler, "num_kept"):
            return None
        try:
            return int(sampler.num_kept(self.spec.num_frames))
        except Exception:
            return None

    def budget(self, num_kept: Any = None, keep_ratio: Any = None) -> int | None:
        """
        ``k`` for a frame budget chosen at inference: ``num_kept``, or ``max(1, round(keep_ratio·T))``; ``None``
        when neither is given (then :attr:`num_kept` applies).

        Raises:
            ValueError: both given; ``num_kept`` not an integer in ``1..T``; ``keep_ratio`` not in ``(0, 1]``; a ``k``
            this model cannot keep (it is fixed at the trained one: TorchScript, or an ONNX export without
            ``num_samples``). The message names the model file and ``T``.
        """
        from monai_das.networks.factory import check_one_budget

        check_one_budget(num_kept, keep_ratio)
        if num_kept is None and keep_ratio is None:
            return None
        t = self.spec.num_frames
        where = f"the model '{self.source}'" if self.source else "the model"
        if keep_ratio is not None:
            from monai_das.networks import num_kept as num_kept_of

            try:
                k = num_kept_of(t, keep_ratio)
            except ValueError as e:
                raise ValueError(f"keep_ratio for {where} (T={t} frames): {e}") from e
        else:
            k = check_count(num_kept, f"num_kept (k, the frames kept at inference) for {where}")
        if k > t:
            raise ValueError(f"cannot keep k={k} frames: {where} takes T={t} frames (1 <= k <= T).")
        if not self.any_k:
            trained = self.spec.num_kept if self.spec.num_kept is not None else self._network_own_k()
            if trained is None or k != trained:
                shown = trained if trained is not None else "?"
                if self.engine == "onnxruntime":  # a fixed-k graph: its sampler is unrolled for the exported k
                    message = (
                        f"{where} is a fixed-k ONNX graph (no 'num_samples' input: a DAS with spread=True or an ADPS "
                        f"sampler, whose steps are unrolled for one k) and keeps only its exported k={shown} frames, "
                        f"not k={k}; exporting it again gives the same graph. Another k is answered by the checkpoint "
                        f"with engine='eager' (CLI --engine eager: the bundle folder with models/model.pt and "
                        f"configs/inference.json), or by the bundle's batch inference at that k, which writes "
                        f"models/model.k<k>.onnx (a file that keeps that k)."
                    )
                else:
                    kind = ("a TorchScript export, traced at its k" if self.engine == "torchscript" else
                            "a network whose sampler is tied to its k")
                    message = (
                        f"{where} ({kind}) keeps the trained k={shown} frames and cannot keep k={k}: a frame budget "
                        f"chosen at inference needs the checkpoint (engine='eager') or an ONNX export of a DAS "
                        f"(without spread), DPS, uniform or random sampler (engine='onnxruntime', "
                        f"`python -m monai_das.engines.export onnx`)."
                    )
                if self.engine_fallback:  # the engine asked for would have kept k: say why it does not run
                    message += (f" Engine {self.engine_requested!r} was asked for but not used: "
                                f"{self.engine_fallback.rstrip('.')}.")
                raise ValueError(message)
        elif hasattr(self.network, "check_num_samples"):  # OnnxClassifier: names the file, k vs T and the graph
            self.network.check_num_samples(k)
        return k

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        config_file: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        engine: str | None = None,
        measure_macs: bool = True,
        num_kept: int | None = None,
        keep_ratio: float | None = None,
        prefer: str | None = None,
        **spec_overrides: Any,
    ) -> DASPredictor:
        """
        Load a model.

        Engines (``engine``) and the model file each runs:

        - ``"onnxruntime"`` (default): ``models/model.onnx`` (or a ``.onnx`` file), an ONNX export written by
          :func:`monai_das.engines.export_onnx` run by ONNX Runtime; any ``k`` at inference when the export takes
          ``num_samples`` (DAS, DPS, uniform, random).
        - ``"torchscript"``: ``models/model.ts`` (``torch.jit.load``); keeps the trained ``k``.
        - ``"eager"``: ``models/model.pt`` + the bundle's config (the PyTorch network; MACs measured; any ``k``).

        A bundle folder without the chosen engine's file (or whose file cannot be loaded) falls back, with a warning
        (logged, and in every report: :attr:`warnings`), to the next of ``onnxruntime → torchscript → eager``
        (``torchscript → eager → onnxruntime``, ``eager → onnxruntime → torchscript``); :meth:`describe` gives
        ``engine``, ``engine_requested`` and ``engine_fallback``. A model file runs with its own engine (a warning when
        another was asked for). A ``spatial_size`` override with another ``T`` than the model card's, or another grid
        than an ONNX graph's, is an :class:`OverrideError` naming the option (no other file is tried); another frame
        size than the card's is a warning (:attr:`warnings`).

        What is parsed depends on ``path`` (a config is code: MONAI's ``ConfigParser`` evaluates its ``$`` strings,
        so only a config the user points at is parsed; model files and their metadata are data):

        - a bundle folder (or its ``models/`` folder): its model files, as above; the bundle's
          ``configs/inference.json`` is parsed with ``ConfigParser`` (trusted: the user chose the bundle) for a
          checkpoint or a TorchScript file.
        - an ONNX file: loaded with ONNX Runtime; its spec comes from the model card embedded in it
          (``metadata_props["metadata.json"]``, plain JSON), else the card beside it; no config is read. Without a
          card: :class:`MissingMetadataError` naming the file (unless ``spec_overrides`` give the grid).
        - a TorchScript file (only with ``engine="torchscript"``: it is a program, whose ops can read and write
          files; without it the file is refused, and so is ``models/model.ts`` of a folder without the bundle's
          ``configs/``): loaded with ``torch.jit.load``; its embedded ``metadata.json``/``inference.json`` (as
          ``monai.bundle ckpt_export`` writes them) are read with ``json.loads`` and only literal values of
          ``network_def`` (``layout``, ``slice_axis``, ``in_channels``; a whole-string ``@id`` reference is looked up
          in the same JSON, never evaluated) and of the metadata are used. ``$``/``%`` expressions are ignored with a
          warning, falling back to the metadata or the :class:`ModelSpec` defaults. A ``configs/inference.json``
          next to the file (``<bundle>/models/model.ts``) is not parsed.
        - a checkpoint file: ``torch.load(weights_only=True)``; the network comes from ``config_file``, which is
          required even when the checkpoint lies in ``<bundle>/models/`` (pass the bundle folder instead to use its
          config).

        Each export is checked against what it recorded of its source (:func:`export_checks`): an ONNX or TorchScript
        file whose ``monai_das.source`` names another checkpoint than its card's ``checkpoint_sha256`` cannot be
        loaded (a bundle folder falls back, as above), and a ``.ts`` without that record (MONAI's ``ckpt_export`` run
        on its own, whose network is not built from the card) gets a warning in every report.

        Metadata (plain JSON): a **model card** (a ``metadata.json`` with a ``das_model`` section, written by
        training: :class:`monai_das.handlers.ModelCardSaver`) describes the trained model and is used first: the one
        embedded in an ONNX or TorchScript file (``ckpt_export --meta_file <bundle_root>/models/metadata.json``),
        else the one beside the model file (``<bundle>/models/metadata.json``). It gives the layout, grid, slice
        axis, channels, labels, ``k``, the sampler and the preprocessing ``recipe`` (:attr:`ModelSpec.recipe`).
        Without a card: the bundle's ``configs/metadata.json``, then the embedded ``metadata.json``
        (``network_data_format``). A model whose grid is written nowhere is refused (``ValueError`` naming the
        ``spec_overrides`` to pass), never resampled to a guessed grid.

        Args:
            path: bundle folder, ``models/`` folder, ONNX file, TorchScript file or checkpoint file (see above).
            config_file: bundle config defining ``network_def`` (trusted: parsed with ``ConfigParser``); required for a
                checkpoint file, optional otherwise (overrides the bundle's own and a TorchScript file's embedded one).
            device: torch device.
            engine: ``"onnxruntime"`` (default), ``"torchscript"`` or ``"eager"`` (see above).
            measure_macs: count MACs (eager checkpoint networks only; once per input shape).
            num_kept: ``k``, the frames kept at inference (``1 <= k <= T``); default: the trained ``k`` of the card.
            keep_ratio: the same as a fraction of ``T`` (``k = max(1, round(keep_ratio·T))``); not with ``num_kept``.
            prefer: the former option, kept as an alias: ``"torchscript"`` = ``engine="torchscript"``,
                ``"checkpoint"`` = ``engine="eager"``.
            spec_overrides: :class:`ModelSpec` fields that override what the bundle says (``layout``,
                ``spatial_size``, ``in_channels``, ``slice_axis``, ``labels``).

        Raises:
            FileNotFoundError: no model file. ValueError: an unknown engine; a checkpoint file without
            ``config_file``; a model without any grid metadata (:class:`MissingMetadataError`); ``num_kept`` or
            ``keep_ratio`` out of range or not keepable by the model loaded. RuntimeError: loading failed (also a
            checkpoint whose card disagrees with the config's network; an ONNX file that is not a ``monai_das``
            export).
        """
        engine_name = resolve_engine(engine, prefer)
        check_device(device)  # before any model file is read
        explicit = engine is not None or prefer is not None
        files = find_bundle_files(path)
        if config_file is not None:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"config file '{config_file}' does not exist.")
            files["config"] = Path(config_file)
        if all(files[k] is None for k in ENGINE_ORDER[engine_name]):
            raise FileNotFoundError(
                f"no model found at '{path}': expected an ONNX file, a TorchScript file, a checkpoint, or a bundle "
                f"folder with models/{ONNX_NAMES[0]}, models/{TORCHSCRIPT_NAMES[0]} or models/{CHECKPOINT_NAMES[0]}."
            )
        if (files["checkpoint"] is not None and files["torchscript"] is None and files["onnx"] is None
                and files["config"] is None):
            hint = (
                " (a model file's neighbouring configs/inference.json is not parsed: a config is code; pass the bundle"
                " folder to use it)" if Path(path).is_file() else ""
            )
            raise ValueError(
                f"checkpoint '{files['checkpoint']}' needs a bundle config with 'network_def': pass "
                f"config_file=<bundle>/configs/inference.json (CLI: --config){hint}, or export it once, as the "
                f"default engine reads it: python -m monai_das.engines.export onnx --bundle_root <the training's "
                f"bundle_root> --config_file <bundle>/configs/inference.json (the bundle's batch inference also writes "
                f"models/model.onnx)."
            )
        # a bundle folder's metadata.json joins its config's parser (the config may use @_meta_#...); the one next
        # to a model file is data and stays plain JSON
        trusted_meta = Path(path).is_dir()
        wanted = ENGINES[engine_name]
        order = [k for k in ENGINE_ORDER[engine_name] if files[k] is not None]
        # a TorchScript file is a program (its ops can read and write files: torch.from_file(shared=True)); a model
        # file is data, so one runs only when the user asks for that engine, or from a bundle folder whose config
        # (code the user trusts by pointing at the bundle) comes with it: not as a fallback (trials T67b, R67e)
        trusted = engine_name == "torchscript" or (Path(path).is_dir() and files["config"] is not None)
        if "torchscript" in order and not trusted:
            if order[0] == "torchscript":
                raise ValueError(
                    f"'{files['torchscript']}' is a TorchScript file, a program: running it runs the code stored in "
                    "it with your rights (TorchScript can read and write files), which a model file handed in must "
                    "not do unasked. Run it only if you trust it as you would a script: engine='torchscript' (CLI: "
                    "--engine torchscript). The default engine runs the ONNX export of the same model (python -m "
                    "monai_das.engines.export onnx ...), whose graph ONNX Runtime runs as data.")
            order.remove("torchscript")
        fallback, missing = None, None
        if order[0] != wanted:
            if Path(path).is_file():  # the file's own engine; said only when another one was asked for
                if explicit:  # said (logged and in every report) by the predictor built below
                    kind = {"onnx": "an ONNX", "torchscript": "a TorchScript", "checkpoint": "a checkpoint"}[order[0]]
                    fallback = f"'{path}' is {kind} file: it runs with {_FORMAT_ENGINE[order[0]]}"
            else:
                missing = f"no {_FILE_NAMES[wanted]} in '{path}' for engine {engine_name!r}"
                if wanted == "onnx" and files["checkpoint"] is not None and files["config"] is not None:
                    root = Path(files["checkpoint"]).parent.parent  # <bundle_root>/models/model.pt
                    missing += (f" (export it once for the faster default: python -m monai_das.engines.export onnx "
                                f"--bundle_root {shlex.quote(str(root))} --config_file "
                                f"{shlex.quote(str(files['config']))})")
                fallback = f"{missing}: using {_FORMAT_ENGINE[order[0]]} ({files[order[0]]})"
        errors = []
        for kind in order:
            try:
                with collect_ignored() as dropped:  # metadata values not used: in every report, not only the log
                    if kind == "onnx":
                        net, spec = load_onnx(files, device, spec_overrides)
                    else:
                        load = load_torchscript if kind == "torchscript" else load_checkpoint
                        net, spec = load(files, device, spec_overrides, trusted_meta)
                notes = dropped + export_checks(kind, files, net)  # a card of another checkpoint: refused
            except (MissingMetadataError, OverrideError):
                raise  # the other formats have no more metadata / take the user's option no better: say what to pass
            except (RuntimeError, ValueError, KeyError, OSError, ImportError) as e:
                errors.append(f"{kind} '{files[kind]}': {e}")
                rest = order[order.index(kind) + 1:]
                if rest:  # the reason is said once: in the fallback warning, or in the error ending the loading
                    logger.info("could not load %s model %s; trying the next format (%s)", kind, files[kind], rest[0])
                continue
            if errors:  # every reason why the engine asked for does not run: logged and in every report
                reasons = ([missing] if missing else []) + [e.rstrip(".") for e in errors]
                fallback = "; ".join(reasons) + f": using {_FORMAT_ENGINE[kind]} ({files[kind]})"
            return cls(net, spec, source=str(files[kind]), model_format=kind, device=device,
                       measure_macs=measure_macs, num_kept=num_kept, keep_ratio=keep_ratio,
                       engine_requested=engine_name, engine_fallback=fallback, model_warnings=notes)
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
        model = f"the model '{self.source}'" if self.source else "the network"
        shapes = f"{model} takes a study of shape {_shape(expected)} ({axes}), this one is {_shape(x.shape)}"
        if channels != self.spec.in_channels:
            raise ValueError(f"the network expects {self.spec.in_channels} channel(s), the study has {channels}: "
                             f"{shapes}.")
        if spatial != tuple(self.spec.spatial_size):
            raise ValueError(f"the network expects spatial size {self.spec.spatial_size}, got {spatial}: {shapes}.")
        check_finite(x, "the study", " after preprocessing")
        return x[None].float().to(self.device)

    def kept_indices(self, x: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor | None:
        """``B×k`` indices (ascending) the network's sampler keeps for batched input ``x``, or ``None``: see
        :func:`kept_indices` (``notes``: its warnings for the report)."""
        return kept_indices(self.network, x, to_frames(x, self.spec.layout, self.spec.slice_axis), notes)

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
    def predict(self, image: torch.Tensor, num_samples: int | None = None) -> Prediction:
        """
        Classify one preprocessed study (``C×D×H×W`` for ``volume``, ``T×C×H×W`` for ``video``).

        Args:
            image: the study, on the model's grid (:attr:`spec`).
            num_samples: ``k``, the frames to keep for this study (``1 <= k <= T``); default :attr:`num_kept`.

        Raises:
            ValueError: a study of another shape than the model's (the message names the model file and both
            shapes), NaN values, a ``k`` this model cannot keep (see :meth:`budget`), or more or fewer class
            probabilities than the metadata's class names.
        """
        x = self.check_input(image)
        k = self.budget(num_samples) if num_samples is not None else self.num_kept
        net = self.network
        notes: list[str] = []
        if hasattr(net, "forward_with_indices"):  # ONNX and eager networks: logits and indices of one pass
            logits, idx = net.forward_with_indices(x, k)
            idx = torch.sort(idx.long(), dim=-1).values if isinstance(idx, torch.Tensor) else None
        else:  # TorchScript: the trained k (checked by budget); indices from its sampler (see kept_indices)
            logits = net(x)
            idx = self.kept_indices(x, notes)
            if idx is not None and k is not None and idx.shape[-1] != k:  # the graph's k is fixed; the card says k
                raise ValueError(
                    f"the TorchScript model '{self.source}' keeps {idx.shape[-1]} of {self.spec.num_frames} frames, "
                    f"its metadata says num_kept={k}: exported without the training's --keep_ratio (MONAI's "
                    "ckpt_export builds the config's default), or the card was edited or belongs to another export; "
                    "export it with `python -m monai_das.engines.export torchscript` (it builds what the card "
                    "describes), or use the card its training wrote.")
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise RuntimeError(f"the network returned logits of shape {tuple(logits.shape)}, expected 1×num_classes.")
        logits = logits[0].float().cpu()
        where = f"the model '{self.source}'" if self.source else "the model"
        if not bool(torch.isfinite(logits).all()):  # never a label argmax'd out of NaN (T64b: "normal", score nan)
            raise ValueError(f"{where} gave non-finite logits {logits.tolist()} for this study, whose input is finite "
                             "(checked): a damaged or diverged checkpoint? Use another model file.")
        probs = torch.sigmoid(logits) if logits.numel() == 1 else torch.softmax(logits, dim=0)
        label = int(probs[0] >= 0.5) if logits.numel() == 1 else int(torch.argmax(probs))
        probs_list = [1.0 - float(probs[0]), float(probs[0])] if logits.numel() == 1 else probs.tolist()
        if why := class_count_mismatch(where, logits.numel(), self.spec.labels):  # else a label of another model
            raise ValueError(why)
        kept = idx[0].cpu().tolist() if idx is not None else None
        t = self.spec.num_frames
        k = len(kept) if kept is not None else k
        return Prediction(
            probabilities=[float(p) for p in probs_list],
            label=label,
            label_name=self.spec.label_name(label),
            kept_indices=kept,
            num_frames=t,
            num_kept=k,
            compute_saved=(1.0 - k / t) if k is not None else None,
            macs=self._macs(x) if k is None or k == self._network_own_k() else None,
            warnings=[f"the model '{self.source}': {n}" if self.source else n for n in notes],
        )

    def running_device(self) -> str:
        """Where the model runs, ``"cpu"`` or ``"cuda"``: :attr:`device`'s type for a torch network; for an ONNX model
        the device of the first execution provider its session took, which need not be :attr:`device`."""
        session = getattr(self.network, "session", None)
        if session is None:
            return self.device.type
        return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def describe(self) -> dict[str, Any]:
        """
        Model facts for reports: ``source``, ``format``, ``engine`` (the one running), ``engine_requested``,
        ``engine_fallback`` (why another engine runs, or ``None``), ``device`` (where the model runs, ``"cpu"`` or
        ``"cuda"``: an ONNX model on the first execution provider its session took, whatever :attr:`device` says),
        the spec (``layout``, ``spatial_size``, ...), ``num_kept`` (``k`` kept at inference by default),
        ``trained_num_kept`` (``k`` of the model card) and ``warnings`` (:attr:`warnings`:
        :func:`~monai_das.deploy.report.study_report` moves them into the report's own ``warnings``, so every report
        of this model says them).
        """
        return {
            "source": self.source,
            "format": self.model_format,
            "engine": self.engine,
            "engine_requested": self.engine_requested,
            "engine_fallback": self.engine_fallback,
            "device": self.running_device(),
            "layout": self.spec.layout,
            "spatial_size": list(self.spec.spatial_size),
            "in_channels": self.spec.in_channels,
            "slice_axis": self.spec.slice_axis,
            "labels": list(self.spec.labels),
            "method": self.spec.method,
            "num_kept": self.num_kept,
            "trained_num_kept": self.spec.num_kept,
            "recipe": self.spec.recipe,
            "warnings": list(self.warnings),
        }


def resolve_engine(engine: str | None, prefer: str | None = None) -> str:
    """
    The engine (``"onnxruntime"``, ``"torchscript"`` or ``"eager"``) from ``engine`` and the former ``prefer``
    (``"torchscript"``, ``"checkpoint"`` = ``"eager"``); neither: ``"onnxruntime"``.

    Raises:
        ValueError: an unknown value, or ``engine`` and ``prefer`` that disagree.
    """
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}.")
    if prefer is not None and prefer not in _PREFER:
        raise ValueError(f"prefer must be 'torchscript' or 'checkpoint', got {prefer!r} (or use engine=).")
    if engine is not None and prefer is not None and _PREFER[prefer] != engine:
        raise ValueError(f"engine={engine!r} and prefer={prefer!r} disagree: give engine only.")
    return engine or (_PREFER[prefer] if prefer is not None else "onnxruntime")


#: what a ``.ts`` without the ``monai_das.source`` record gets in every report: written by MONAI's ``ckpt_export``
#: alone, or by ``python -m monai_das.engines.export torchscript`` before it wrote the record (volume bundle 0.6.11)
RAW_CKPT_EXPORT = (
    "the TorchScript model '{path}' was exported by MONAI's ckpt_export (or by this project's export before it recorded "
    "its checkpoint): network settings not checked against the card "
    "(ckpt_export alone builds network_def from the config and its command line, not from the model card: e.g. a "
    "mean-pooling head for a model trained with --temporal_head max); re-export with python -m "
    "monai_das.engines.export torchscript --bundle_root <the training's bundle_root> --config_file "
    "<bundle>/configs/inference.json."
)


def exported_checkpoint(kind: str, path: str | os.PathLike) -> str | None:
    """
    The SHA-256 of the checkpoint the export ``path`` (``kind`` ``"onnx"`` or ``"torchscript"``) recorded it was made
    from (``monai_das.source``'s ``checkpoint_sha256``), read as data without running the file (the ONNX graph's
    metadata, the TorchScript archive's extra file); ``None``: no such record or an unreadable file.
    """
    from monai_das.engines.export import SOURCE_PROP

    try:
        if kind == "onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            text = props.get(SOURCE_PROP)
        else:
            text = _torchscript_extra(Path(path), (SOURCE_PROP,)).get(SOURCE_PROP)
    except Exception as e:  # noqa: BLE001 (a damaged file is refused when it is loaded, naming it)
        logger.debug("no export record read from '%s': %s", path, e)
        return None
    source = _embedded_json(text, SOURCE_PROP, str(path))
    digest = source.get("checkpoint_sha256") if source is not None else None
    return digest if isinstance(digest, str) else None


def export_checks(kind: str, files: Mapping[str, Path | None], network: nn.Module) -> list[str]:
    """
    What an export recorded about its source (``monai_das.source``: :data:`monai_das.engines.export.SOURCE_PROP`,
    the checkpoint's SHA-256), checked against the model card embedded in the file and the one beside it
    (``files["card"]``: a training run again after the export writes a new checkpoint and card beside the old
    export, which would answer as the old model); all read as plain JSON.

    - ONNX (``metadata_props``): a file without the record (e.g. :func:`monai_das.engines.save_onnx` called directly)
      is not checked.
    - TorchScript (the archive's extra file, written by ``python -m monai_das.engines.export torchscript``): a file
      without it was written by MONAI's ``ckpt_export`` alone, whose network is not built from the card: a warning
      for every report (:data:`RAW_CKPT_EXPORT`).

    Returns:
        the warnings every report of this model repeats.

    Raises:
        ValueError: the record names another checkpoint than the card's ``das_model#checkpoint_sha256``: the card
        describes another model (its slice axis, grid, classes, k), so its answers could be wrong without an error.
    """
    from monai_das.engines.export import SOURCE_PROP

    path = files.get(kind)
    if kind == "onnx":
        meta = network.session.get_modelmeta().custom_metadata_map if hasattr(network, "session") else {}
        source, card = _embedded_json(meta.get(SOURCE_PROP), SOURCE_PROP, str(path)), getattr(network, "card", None)
        record, embedded = f"metadata_props['{SOURCE_PROP}']", "the model card embedded in it"
        if source is None:
            return []
        if source.get("graph") is None:  # exported by a version before the graph rewrites (onnx_graph.for_runtime)
            logger.info(f"the ONNX model '{path}' was exported before the graph rewrites for ONNX Runtime: the same "
                        "answers, slower; `python -m monai_das.engines.export onnx --bundle_root <the training's "
                        "bundle_root> --config_file <bundle>/configs/inference.json` writes the faster graph")
    elif kind == "torchscript" and path is not None:
        extra = _torchscript_extra(Path(path), (SOURCE_PROP, "metadata.json"))
        source = _embedded_json(extra.get(SOURCE_PROP), SOURCE_PROP, str(path))
        card = _embedded_json(extra.get("metadata.json"), "metadata.json", str(path))
        record, embedded = f"extra file '{SOURCE_PROP}'", "the metadata.json embedded in it"
        if source is None:
            return [RAW_CKPT_EXPORT.format(path=path)]
    else:
        return []
    from monai_das.handlers.model_card import card_describes

    exported = source.get("checkpoint_sha256")
    what = "ONNX" if kind == "onnx" else "TorchScript"
    again = (f"python -m monai_das.engines.export {kind} --bundle_root <the training's bundle_root> --config_file "
             "<bundle>/configs/inference.json")
    cards = [(card, embedded, "")]
    if files.get("card") is not None:  # the card beside: training writes a new one with every new model.pt
        try:
            cards.append((_read_json(Path(files["card"])), f"the model card '{files['card']}' beside it",
                          " (a training run again after the export writes a new model.pt and card beside an old "
                          "export: the export is stale)"))
        except OSError:
            pass
    for found, where, why in cards:
        if card_describes(found, exported) is False:
            recorded = found[CARD_KEY]["checkpoint_sha256"]
            raise ValueError(
                f"the {what} model '{path}' was exported from the checkpoint with SHA-256 {exported} (its {record}), "
                f"but {where} was written for the checkpoint with SHA-256 {recorded}{why}: the file answers as "
                f"another model than the card describes (its slice axis, grid, classes, k or weights), so the answers "
                f"could be wrong without any error. Export it again from the checkpoint the card describes: {again} "
                f"(it refuses a card of another checkpoint)."
            )
    return []


def _torchscript_extra(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The extra files ``names`` of the TorchScript archive ``path`` (``<archive>/extra/<name>`` members, read as
    bytes from the zip: nothing is loaded or run); those absent, or all of them for a file that is not a zip, are
    left out."""
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                head, _, name = member.rpartition("/extra/")
                if head and "/" not in head and name in names and name not in found:
                    found[name] = archive.read(member)
    except (OSError, zipfile.BadZipFile):
        return {}
    return found


def _engine_of(network: nn.Module, model_format: str) -> str:
    """The engine running ``network``: ``onnxruntime``, ``torchscript`` or ``eager``."""
    if model_format in _FORMAT_ENGINE:
        return _FORMAT_ENGINE[model_format]
    if isinstance(network, torch.jit.ScriptModule):
        return "torchscript"
    if hasattr(network, "session") and hasattr(network, "check_num_samples"):  # OnnxClassifier
        return "onnxruntime"
    return "eager"


def _shape(shape: Any) -> str:
    return "×".join(str(int(s)) for s in shape)


def kept_indices(network: nn.Module, x: torch.Tensor, frames: torch.Tensor,
                 notes: list[str] | None = None) -> torch.Tensor | None:
    """
    ``B×k`` indices (ascending, positions ``0..T-1`` of ``frames``) of the frames ``network``'s sampler keeps for the
    batched input ``x`` (``frames``: ``x`` as the ``B×T×C×H×W`` sequence the sampler sees), or ``None`` when the
    network does not expose its sampler or calling it fails (the logits stay valid; a warning says why).

    Three ways, tried in this order, from the most to the least direct:

    1. ``network.sample(x)``: the classifier's own API (eager :class:`~monai_das.networks.SubsampledClassifier`, or a
       scripted export, which keeps methods). Its output (a ``SamplerOutput``, or a plain tuple) carries the indices.
    2. ``network.sampler(frames)``: a network with a ``sampler`` submodule but no ``sample`` method, e.g. a
       **traced** export (``ckpt_export --use_trace True``): tracing keeps submodules but not extra methods, and
       drops the outputs the parent does not use, so what a traced sampler returns depends on the network: only the
       kept frames (``B×k×C×H×W``), or, with ``context_frames > 0`` (the parent also uses the matrix and the
       indices), a tuple in the tracer's order, e.g. ``(matrix, indices, frames)``.
    3. The indices are then found by what each output is, never by its position (:func:`_indices_of`): the one
       integer ``B×k`` tensor; else the one-hot ``B×k×T`` matrix (its argmax); else the kept frames, matched to the
       input frames (:func:`_match_frames`; exact, since the sampler copies frames, except among identical input
       frames: a kept frame identical to others is reported as the earliest of them not reported yet, which need
       not be the one the model took; ``notes``, when given, gets a warning naming them for the report).
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
    indices = _indices_of(out, frames, notes)
    return torch.sort(indices.long(), dim=-1).values if indices is not None else None


def _indices_of(out: Any, frames: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor | None:
    """
    The ``B×k`` kept indices in a sampler's output ``out`` (for ``frames``, ``B×T×C×H×W``), told apart by what each
    tensor is, not by its place: a ``SamplerOutput``'s ``indices``; else, of the tensors returned, the one integer
    ``B×k`` tensor (``k <= T``), else the one ``B×k×T`` selection matrix (rows one-hot: its argmax), else the one
    ``B×k×C×H×W`` tensor of kept frames (:func:`_match_frames`). ``None`` (with a warning) when no output or more
    than one fits: a wrong guess would report other frames than the ones classified.
    """
    named = getattr(out, "indices", None)
    if isinstance(named, torch.Tensor):
        return named
    tensors = [out] if isinstance(out, torch.Tensor) else [
        o for o in (out if isinstance(out, (tuple, list)) else ()) if isinstance(o, torch.Tensor)]
    b, t = frames.shape[0], frames.shape[1]
    kinds = {
        "indices": [o for o in tensors if o.ndim == 2 and o.shape[0] == b and 1 <= o.shape[1] <= t
                    and not o.is_floating_point() and o.dtype != torch.bool],
        "matrix": [o for o in tensors if o.ndim == 3 and o.shape[0] == b and o.shape[2] == t and o.is_floating_point()
                   and 1 <= o.shape[1] <= t],
        "frames": [o for o in tensors if o.ndim == 5 and o.shape[0] == b and o.shape[2:] == frames.shape[2:]
                   and 1 <= o.shape[1] <= t],
    }
    for kind, found in kinds.items():
        if len(found) > 1:
            logger.warning("the network's sampler returns %d tensors that could be its %s (shapes %s): the kept "
                           "indices are not reported.", len(found), kind, [tuple(o.shape) for o in found])
            return None
        if found:
            if kind == "indices":
                return found[0]
            return found[0].argmax(-1) if kind == "matrix" else _match_frames(found[0], frames, notes)
    if tensors:
        logger.warning("the network's sampler returns tensors of shapes %s, none of them its kept indices, selection "
                       "matrix or kept frames for frames %s: the kept indices are not reported.",
                       [tuple(o.shape) for o in tensors], tuple(frames.shape))
    return None


def _match_frames(kept: torch.Tensor, frames: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor | None:
    """
    Indices ``B×k`` of the frames ``kept`` (``B×k×C×H×W``) in ``frames`` (``B×T×C×H×W``), ascending; ``None`` when
    the shapes do not fit.

    Each kept frame goes to its nearest input frame. When an input holds identical frames (several at the smallest
    distance, within ``1e-9``), the kept frames of that input take, in order, the earliest one not taken yet (the
    nearest one when all are taken), so that ``k`` copies of a repeated frame give ``k`` distinct indices; which of
    the identical frames the model took cannot be told from their pixels (a frozen clip: the model kept frames
    28-38, the match says 8-18), so ``notes`` (when given) gets a warning naming the kept positions concerned.
    """
    if kept.shape[0] != frames.shape[0] or kept.shape[2:] != frames.shape[2:]:
        return None
    b, k, t = kept.shape[0], kept.shape[1], frames.shape[1]
    # differences, not cdist's default |a|² + |b|² - 2ab, whose rounding differs by row: a kept frame measured
    # 2.7e-6 from itself and 0.0 from its identical copy, so the tie was missed and both kept frames of a replayed
    # segment went to the copy (trial T61b)
    dist = torch.cdist(kept.reshape(b, k, -1).double(), frames.reshape(b, t, -1).double(),
                       compute_mode="donot_use_mm_for_euclid_dist")  # B×k×T
    nearest = dist.argmin(dim=-1)  # B×k, the first of equal minima
    ties = dist <= dist.min(dim=-1, keepdim=True).values + 1e-9  # B×k×T
    picks = nearest.clone()
    for i in torch.nonzero((ties.sum(dim=-1) > 1).any(dim=-1)).flatten().tolist():  # inputs with identical frames
        if notes is not None:
            tied = [j for j in range(k) if int(ties[i, j].sum()) > 1]
            notes.append(
                f"{len(tied)} of the {k} kept frames are identical to other frames of the study (a frozen or repeated "
                f"frame): a traced TorchScript export returns the kept frames, not their indices, so each is reported "
                f"as the earliest of its identical frames; the model may have kept later ones. The ONNX Runtime or "
                f"eager engine reports the model's own indices.")
        used: set[int] = set()
        for j in range(k):
            free = [c for c in torch.nonzero(ties[i, j]).flatten().tolist() if c not in used]
            pick = free[0] if free else int(nearest[i, j])
            used.add(pick)
            picks[i, j] = pick
    return torch.sort(picks, dim=-1).values
