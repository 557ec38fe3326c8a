"""
Load an exported DAS model (TorchScript, or checkpoint + bundle config) and classify one study with it, reporting
which slices/frames the sampler kept. Shared by the MONAI Deploy application and the MONAI Label sample app; needs
neither of their SDKs.

Trust: a bundle config is code (MONAI's ``ConfigParser`` evaluates ``$`` strings), so only configs the user points at
(``config_file=``, or a bundle folder's ``configs/inference.json``) are parsed. A model file and everything embedded
in it or lying next to it is data: embedded ``metadata.json``/``inference.json`` are read with ``json.loads`` and only
literal values are used (see ``docs/SECURITY.md``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["ModelSpec", "Prediction", "DASPredictor", "MissingMetadataError", "find_bundle_files"]

logger = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
TORCHSCRIPT_NAMES = ("model.ts",)
CHECKPOINT_NAMES = ("model.pt", "model.pth")
#: the model card written by training beside the model (``monai_das.handlers.ModelCardSaver``), and its section
CARD_NAME = "metadata.json"
CARD_KEY = "das_model"


class MissingMetadataError(ValueError):
    """A model whose input grid is written nowhere (no model card, no metadata): no guess is made."""


@dataclass
class ModelSpec:
    """
    What the network expects.

    Attributes:
        layout: ``"volume"`` (input ``B×C×D×H×W``, frames along spatial axis ``slice_axis``) or ``"video"``
            (input ``B×T×C×H×W``).
        spatial_size: ``(D, H, W)`` for ``volume``, ``(T, H, W)`` for ``video``: the grid every study is resampled to.
        in_channels: ``C``.
        slice_axis: 0, 1 or 2 (``volume`` only).
        labels: class names, index = class id.
        recipe: the preprocessing recipe the model was trained with (plain data, the bundle's ``recipe`` as recorded
            in the model card; see :func:`monai_das.transforms.check_recipe`), or ``None``. Its grid keys
            (``spatial_size``, ``slice_axis``, ``num_frames``) are kept equal to this spec's.
        num_kept: ``k``, the frames the sampler keeps (from the model card), or ``None``.
        method: the sampler (``das``, ``uniform``, ...; from the model card), or ``None``.
    """

    layout: str = "volume"
    spatial_size: tuple[int, int, int] = (28, 28, 28)
    in_channels: int = 1
    slice_axis: int = 0
    labels: list[str] = field(default_factory=list)
    recipe: dict | None = None
    num_kept: int | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("volume", "video"):
            raise ValueError(f"layout must be 'volume' or 'video', got {self.layout!r}.")
        size = tuple(int(s) for s in self.spatial_size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"spatial_size must be three positive ints, got {self.spatial_size}.")
        self.spatial_size = size  # type: ignore[assignment]
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}.")
        if int(self.in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}.")
        if self.num_kept is not None:
            self.num_kept = int(self.num_kept)
            if not 1 <= self.num_kept <= self.num_frames:
                raise ValueError(f"num_kept must lie in [1, T={self.num_frames}], got {self.num_kept}.")
        if self.recipe is not None:
            if not isinstance(self.recipe, Mapping):
                raise ValueError(f"recipe must be a dict (plain data), got {type(self.recipe).__name__}.")
            recipe = json.loads(json.dumps(dict(self.recipe)))  # a plain copy
            if recipe.get("layout", self.layout) != self.layout:
                logger.warning("ignoring the recipe of layout %r for a %r network.", recipe.get("layout"), self.layout)
                recipe = None
            elif self.layout == "volume":
                recipe.update(layout="volume", spatial_size=list(size), slice_axis=self.slice_axis)
            else:
                recipe.update(layout="video", num_frames=size[0], spatial_size=list(size[1:]))
            self.recipe = recipe

    @property
    def num_frames(self) -> int:
        """``T``: the number of slices/frames the sampler chooses from."""
        return self.spatial_size[0] if self.layout == "video" else self.spatial_size[self.slice_axis]

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of one slice/frame."""
        if self.layout == "video":
            return self.spatial_size[1], self.spatial_size[2]
        rest = [s for i, s in enumerate(self.spatial_size) if i != self.slice_axis]
        return rest[0], rest[1]

    def label_name(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"


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


def find_bundle_files(path: str | os.PathLike) -> dict[str, Path | None]:
    """
    Locate ``torchscript``, ``checkpoint``, ``config``, ``metadata`` and ``card`` for ``path``: a bundle folder
    (``configs/``, ``models/``), a ``models/`` folder, or a model file (inside a bundle or not).

    ``config`` (``configs/inference.json``) is returned for a folder only: a config is code that MONAI evaluates, so it
    is used when the user points at its bundle, never because it happens to lie next to a model file. ``metadata``
    (``configs/metadata.json``, the bundle's template) and ``card`` (the model card ``metadata.json`` that training
    writes beside the model: ``<bundle>/models/metadata.json``, or next to a model file) are read as plain JSON and
    returned in both cases.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path '{path}' does not exist.")
    found: dict[str, Path | None] = {"torchscript": None, "checkpoint": None, "config": None, "metadata": None,
                                     "card": None}
    if path.is_file():
        root = path.parent.parent if path.parent.name == "models" else path.parent
        key = "torchscript" if _is_torchscript(path) else "checkpoint"
        found[key] = path
        models = path.parent
    else:
        root = path.parent if path.name == "models" else path
        models = root / "models"
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


def _spec_from_configs(
    metadata: Mapping, network_args: Mapping, labels: list[str] | None, overrides: Mapping, source: str = "",
    model: str = "", strict: bool = False,
) -> ModelSpec:
    """
    Read :class:`ModelSpec` fields from bundle ``metadata.json`` (the model card's ``das_model`` section first, then
    ``network_data_format``), the network args and the config's ``label_names`` (``labels``); ``overrides`` win.

    The card describes the trained model, so its facts win over ``network_args`` (a trusted config built with its
    default data facts); with ``strict`` (the network is built from that config: a checkpoint) a disagreement
    is a ``ValueError`` naming both values. Without any grid (no card, no integer ``spatial_shape`` and no
    ``spatial_size`` override) a :class:`MissingMetadataError` names ``model`` and the overrides to pass.

    Metadata is data wherever it comes from (a bundle folder, a model file's neighbour or embedded in it): only
    literal values are taken, anything else is ignored with a warning naming the key and ``source``.
    """

    def section(value: Any) -> Mapping:
        return value if isinstance(value, Mapping) else {}

    def first(group: Mapping, name: str) -> Mapping:
        return section(group.get(name) or (next(iter(group.values())) if group else {}))

    given = {k: v for k, v in overrides.items() if v is not None}
    kw: dict[str, Any] = dict(network_args)
    card = _card_fields(section(section(metadata).get(CARD_KEY)), source)
    conflicts = {k: (kw[k], card[k]) for k in _NETWORK_KEYS if k in kw and k in card and k not in given
                 and kw[k] != card[k]}
    if conflicts:
        text = ", ".join(f"{k}: config {a!r}, model card {b!r}" for k, (a, b) in conflicts.items())
        if strict:
            raise ValueError(
                f"the model card {source} and the bundle config disagree ({text}): the config builds another "
                f"network than the one trained. Use a config with the training's values (the data keys of the "
                f"training), or the exported TorchScript, or pass the ModelSpec fields."
            )
        logger.warning("the model card %s and the bundle config disagree (%s): the card describes the model file "
                       "and is used.", source, text)
    kw.update(card)
    fmt = section(section(metadata).get("network_data_format"))
    image, pred = first(section(fmt.get("inputs")), "image"), first(section(fmt.get("outputs")), "pred")
    layout = given.get("layout", kw.get("layout"))
    channels = image.get("num_channels")
    if channels is not None and not _is_int(channels):
        _ignored("network_data_format#inputs#image#num_channels", channels, source)
        channels = None
    shape = image.get("spatial_shape")
    if shape and "spatial_size" not in kw:
        if isinstance(shape, list) and all(_is_int(s) or (isinstance(s, str) and s.isdigit()) for s in shape):
            shape = [int(s) for s in shape]
            if len(shape) == 4:  # video bundles may list T, C, H, W
                kw["spatial_size"] = (shape[0], shape[2], shape[3])
                kw.setdefault("layout", "video")
                kw.setdefault("in_channels", shape[1])
            elif len(shape) == 3 and layout == "video" and channels is not None:
                # MONAI's convention for a B×T×C×H×W input: num_channels = T, spatial_shape = [C, H, W]
                kw["spatial_size"] = (channels, shape[1], shape[2])
                kw.setdefault("in_channels", shape[0])
            elif len(shape) == 3:
                kw["spatial_size"] = tuple(shape)
        elif not (isinstance(shape, list) and all(isinstance(s, str) and s.isalpha() for s in shape)):
            # symbolic shapes such as ["D", "H", "W"] are legal bundle metadata: no warning for those
            _ignored("network_data_format#inputs#image#spatial_shape", shape, source)
    if channels is not None and "in_channels" not in kw and layout != "video":
        kw["in_channels"] = int(channels)
    channel_def = pred.get("channel_def") or {}
    if "labels" in kw:
        pass
    elif channel_def:
        # JSON keys are strings, a YAML config's _meta_ may have int keys
        numbered = all(_is_int(k) or (isinstance(k, str) and k.isdigit()) for k in channel_def)
        names = [channel_def[k] for k in sorted(channel_def, key=int)] if numbered else None
        if names is not None and all(_is_literal(n) and not isinstance(n, list) for n in names):
            kw["labels"] = [str(n) for n in names]
        else:
            _ignored("network_data_format#outputs#pred#channel_def", channel_def, source)
    elif labels is not None:
        kw["labels"] = labels
    kw.update(given)
    if "spatial_size" not in kw:
        raise MissingMetadataError(
            f"the model file '{model or source}' has no metadata with its input grid (no model card with "
            f"'{CARD_KEY}' and no integer network_data_format#inputs#image#spatial_shape in {source or 'it'}): pass "
            f"spec_overrides, e.g. DASPredictor.from_path(path, layout='volume', spatial_size=(D, H, W), "
            f"slice_axis=0, in_channels=1) (clips: layout='video', spatial_size=(T, H, W)), or export the model "
            f"with its card: ckpt_export --meta_file <bundle_root>/models/metadata.json."
        )
    if "layout" in kw:
        kw["layout"] = str(kw["layout"])
    if "slice_axis" in kw:
        kw["slice_axis"] = int(kw["slice_axis"])
    if "in_channels" in kw:
        kw["in_channels"] = int(kw["in_channels"])
    if "labels" in kw:
        kw["labels"] = list(kw["labels"])
    return ModelSpec(**kw)


def _card_fields(card: Mapping, source: str) -> dict[str, Any]:
    """:class:`ModelSpec` fields of a model card's ``das_model`` section (plain data: literals only)."""
    if not card:
        return {}
    where = f"{CARD_KEY}#"

    def literal(key: str, kind: Any) -> Any:
        value = card.get(key)
        if value is None:
            return None
        ok = _is_literal(value) and (_is_int(value) if kind is int else isinstance(value, kind))
        if not ok:
            _ignored(where + key, value, source)
            return None
        return value

    out: dict[str, Any] = {}
    layout = literal("layout", str)
    if layout is not None and layout not in ("volume", "video"):
        _ignored(where + "layout", layout, source)
        layout = None
    if layout is not None:
        out["layout"] = layout
    for key, name in (("in_channels", "in_channels"), ("slice_axis", "slice_axis"), ("num_kept", "num_kept")):
        value = literal(key, int)
        if value is not None:
            out[name] = value
    if layout == "video":
        out.pop("slice_axis", None)
    method = literal("method", str)
    if method is not None:
        out["method"] = method
    names = literal("label_names", list)
    if names is not None:
        out["labels"] = [str(n) for n in names]
    size, frames = literal("spatial_size", list), literal("num_frames", int)
    if size is not None and all(_is_int(v) and v > 0 for v in size):
        if layout == "video" and len(size) == 2 and frames is not None:
            out["spatial_size"] = (frames, size[0], size[1])
        elif layout == "volume" and len(size) == 3:
            out["spatial_size"] = tuple(size)
        else:
            _ignored(where + "spatial_size", size, source)
    elif size is not None:
        _ignored(where + "spatial_size", size, source)
    recipe = card.get("recipe")
    if isinstance(recipe, Mapping):
        plain = {}
        for key, value in recipe.items():
            if value is None or _is_literal(value):
                plain[str(key)] = value
            else:
                _ignored(f"{where}recipe#{key}", value, source)
        out["recipe"] = plain
    elif recipe is not None:
        _ignored(where + "recipe", recipe, source)
    return out


def _choose_metadata(candidates: list[tuple[Any, str]]) -> tuple[dict | None, str]:
    """The first model card (a document with ``das_model``) among ``(document, where)`` candidates in order, else
    the first document; ``(None, "")`` when there is none."""
    docs = [(d, w) for d, w in candidates if isinstance(d, Mapping)]
    for doc, where in docs:
        if isinstance(doc.get(CARD_KEY), Mapping):
            return dict(doc), where
    return (dict(docs[0][0]), docs[0][1]) if docs else (None, "")


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
                if kind == "torchscript":
                    pred = cls._from_torchscript(files, device, spec_overrides, trusted_meta)
                else:
                    pred = cls._from_checkpoint(files, device, spec_overrides, trusted_meta)
                pred.measure_macs = measure_macs
                return pred
            except MissingMetadataError:
                raise  # the other format has no more metadata: say what to pass rather than fall back
            except (RuntimeError, ValueError, KeyError, OSError) as e:
                errors.append(f"{kind} '{files[kind]}': {e}")
                logger.warning("could not load %s model %s (%s); trying the next format", kind, files[kind], e)
        raise RuntimeError(f"could not load a model from '{path}': " + "; ".join(errors))

    @classmethod
    def _from_torchscript(cls, files: dict, device, overrides: Mapping, trusted_meta: bool) -> DASPredictor:
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
            skip = {k for k, v in overrides.items() if v is not None}
            where = f"inference.json embedded in '{source}'"
            args, labels = _data_network_args(config, where, skip), _data_labels(config, where)
        spec = _spec_from_configs(metadata or {}, args, labels, overrides, meta_source, model=source)
        return cls(net, spec, source=source, model_format="torchscript", device=device)

    @classmethod
    def _from_checkpoint(cls, files: dict, device, overrides: Mapping, trusted_meta: bool) -> DASPredictor:
        ckpt_path, cfg_path = files["checkpoint"], files["config"]
        if cfg_path is None:
            raise ValueError(
                f"checkpoint '{ckpt_path}' needs a bundle config with 'network_def': pass config_file or the bundle "
                f"folder."
            )
        parser = _config_parser(cfg_path, files["metadata"] if trusted_meta else None)
        if "network_def" not in parser.config:  # type: ignore[operator]
            raise ValueError(f"config '{cfg_path}' has no 'network_def'.")
        # metadata is data: the model card beside the checkpoint, the bundle's metadata.json (plain JSON), else the
        # config's own _meta_ section, unparsed
        card = _read_json(files["card"]) if files.get("card") else None
        if isinstance(card, Mapping) and isinstance(card.get(CARD_KEY), Mapping):
            _check_card_checkpoint(card, files["card"], ckpt_path)
        metadata, source = _choose_metadata([
            (card, str(files.get("card"))),
            (_read_json(files["metadata"]) if files["metadata"] else None, str(files["metadata"])),
            (parser.get("_meta_"), str(cfg_path)),
        ])
        # the spec first: a card that disagrees with the config is reported before the network is built
        spec = _spec_from_configs(metadata or {}, _trusted_network_args(parser), _trusted_labels(parser.get()),
                                  overrides, source, model=str(ckpt_path), strict=True)
        net = parser.get_parsed_content("network_def", instantiate=True)
        state = torch.load(str(ckpt_path), map_location=torch.device(device), weights_only=True)
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
        net.load_state_dict(state)
        sampler = getattr(net, "sampler", None)
        if spec.num_kept is not None and sampler is not None and hasattr(sampler, "num_kept"):
            k = int(sampler.num_kept(spec.num_frames))
            if k != spec.num_kept:
                raise ValueError(
                    f"the model card {source} says the sampler keeps k={spec.num_kept} of T={spec.num_frames} frames, "
                    f"the network of config '{cfg_path}' keeps {k}: the config builds another network than the one "
                    f"trained (use the training's keys, or the exported TorchScript)."
                )
        return cls(net, spec, source=str(ckpt_path), model_format="checkpoint", device=device)

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

    def _to_frames(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(2 + self.spec.slice_axis, 1) if self.spec.layout == "volume" else x

    def kept_indices(self, x: torch.Tensor) -> torch.Tensor | None:
        """
        ``B×k`` indices (ascending) the network's sampler keeps for batched input ``x``, or ``None`` if the network
        does not expose its sampler.

        Uses ``network.sample(x)`` (eager or scripted ``SubsampledClassifier``), else ``network.sampler(frames)``.
        A traced export's ``sampler`` returns only the kept frames (tracing drops outputs the parent does not use);
        the indices are then recovered by matching each kept frame to the input frames (exact, since the sampler
        copies frames; among identical input frames the earliest unused one is reported).
        """
        net = self.network
        frames = self._to_frames(x)
        try:
            if hasattr(net, "sample"):
                out = net.sample(x)
            elif hasattr(net, "sampler"):
                out = net.sampler(frames)
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

    def _macs(self, x: torch.Tensor) -> dict[str, int] | None:
        net = self.network
        if not self.measure_macs or isinstance(net, torch.jit.ScriptModule):
            return None
        if not all(hasattr(net, a) for a in ("to_frames", "sampler", "classify_frames")):
            return None
        key = tuple(x.shape)
        if key not in self._macs_cache:
            from monai_das.utils.cost import count_macs, model_cost

            try:
                cost = model_cost(net, x)
                full = count_macs(net.classify_frames, net.to_frames(x)) // x.shape[0]
                self._macs_cache[key] = {
                    "sampler": int(cost["macs_sampler"]),
                    "downstream": int(cost["macs_downstream"]),
                    "full_sequence": int(full),
                }
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


def _match_frames(kept: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | None:
    """Indices ``B×k`` of the frames ``kept`` (``B×k×C×H×W``) in ``frames`` (``B×T×C×H×W``), ascending."""
    if kept.shape[0] != frames.shape[0] or kept.shape[2:] != frames.shape[2:]:
        return None
    b, k, t = kept.shape[0], kept.shape[1], frames.shape[1]
    dist = torch.cdist(kept.reshape(b, k, -1).double(), frames.reshape(b, t, -1).double())  # B×k×T
    rows = []
    for i in range(b):
        used: set[int] = set()
        row = []
        for j in range(k):
            best = int(torch.argmin(dist[i, j]))
            ties = [c for c in torch.nonzero(dist[i, j] <= dist[i, j, best] + 1e-9).flatten().tolist() if c not in used]
            pick = ties[0] if ties else best
            used.add(pick)
            row.append(pick)
        rows.append(sorted(row))
    return torch.tensor(rows, dtype=torch.long)


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


# ----------------------------------------------------------------------- model files and metadata (data, not code)
_NETWORK_KEYS = ("layout", "slice_axis", "in_channels")
#: a whole-string MONAI reference ``@id``, ``@a#b`` (or the legacy ``@a::b``): looked up, never evaluated
_REFERENCE = re.compile(r"^@([\w.\-]+(?:(?:#|::)[\w.\-]+)*)$")
_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_code(text: str) -> bool:
    """A string MONAI's ``ConfigParser`` would evaluate (``$``), expand (``%`` macro) or resolve (``@`` reference)."""
    return text.startswith(("$", "%")) or "@" in text


def _is_literal(value: Any) -> bool:
    """str (not code)/int/float/bool, or a list of those."""
    if isinstance(value, str):
        return not _is_code(value)
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, list) and all(not isinstance(v, list) and _is_literal(v) for v in value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ignored(key: str, value: Any, source: str) -> None:
    logger.warning(
        "ignoring %s = %s in %s: a model file and its metadata are data, only literal values are used (expressions "
        "and references are never evaluated); falling back to the metadata or the defaults (pass the bundle folder, "
        "config_file= or the ModelSpec field to set it).", key, _short(value), source,
    )


def _lookup(config: Mapping, ref: str) -> Any:
    """Plain lookup of a ``#``-separated id in nested dicts/lists (what ``@id`` names), or ``_MISSING``."""
    node: Any = config
    for part in ref.replace("::", "#").split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _literal_value(config: Mapping, value: Any, key: str, source: str) -> Any:
    """``value`` if literal, following whole-string ``@id`` references through ``config`` (by lookup); else
    ``_MISSING`` with a warning."""
    for _ in range(8):  # a few hops: @a -> @b -> 1; cycles end here
        match = _REFERENCE.match(value) if isinstance(value, str) else None
        if match is None:
            break
        target = _lookup(config, match.group(1))
        if target is _MISSING:
            break
        value = target
    if _is_literal(value):
        return value
    _ignored(key, value, source)
    return _MISSING


def _data_network_args(config: Mapping | None, source: str, skip: set[str] = frozenset()) -> dict[str, Any]:
    """``layout``, ``slice_axis``, ``in_channels`` of an untrusted config's ``network_def``: literal values only."""
    network_def = (config or {}).get("network_def")
    if not isinstance(network_def, Mapping):
        return {}
    args: dict[str, Any] = {}
    for key in _NETWORK_KEYS:
        if key in network_def and key not in skip:
            value = _literal_value(config, network_def[key], f"network_def#{key}", source)  # type: ignore[arg-type]
            if value is _MISSING:
                continue
            if isinstance(value, str) if key == "layout" else _is_int(value):
                args[key] = value
            else:  # e.g. slice_axis 1.5 or "1": refused rather than silently truncated
                _ignored(f"network_def#{key}", value, source)
    return args


def _data_labels(config: Mapping | None, source: str) -> list[str] | None:
    if not config or "label_names" not in config:
        return None
    names = _literal_value(config, config["label_names"], "label_names", source)
    return [str(v) for v in names] if isinstance(names, list) else None


def _check_card_checkpoint(card: Mapping, card_path: Path, ckpt_path: Path) -> None:
    """Warn when the card beside a checkpoint records the hash of another file."""
    facts = card[CARD_KEY]
    recorded = facts.get("checkpoint_sha256")
    if not isinstance(recorded, str) or facts.get("checkpoint") not in (None, Path(ckpt_path).name):
        return
    import hashlib

    digest = hashlib.sha256()
    with open(ckpt_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != recorded:
        logger.warning("the model card '%s' was written for another version of '%s' (checkpoint_sha256 differs): "
                       "its facts and metrics may not describe this file.", card_path, ckpt_path)


def _read_json(path: Path) -> dict | None:
    """A metadata file: plain JSON (never a ``ConfigParser``: metadata is data)."""
    return _embedded_json(Path(path).read_bytes(), Path(path).name, str(path))


def _embedded_json(text: Any, name: str, source: str) -> dict | None:
    """``json.loads`` of a JSON object (an extra file of a TorchScript archive or a metadata file), else ``None``."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:
        logger.warning("ignoring %s of '%s': not valid JSON (%s).", name, source, e)
        return None
    if not isinstance(value, dict):
        logger.warning("ignoring %s of '%s': expected a JSON object, got %s.", name, source, type(value).__name__)
        return None
    return value
