"""
What an exported DAS model expects (:class:`ModelSpec`), read from its model card, bundle metadata and embedded
configs as plain data.

Everything here is data handling: ``metadata.json`` and a TorchScript file's embedded ``inference.json`` are parsed
with ``json.loads`` and only literal values are used (a string that MONAI's ``ConfigParser`` would evaluate, expand or
resolve is ignored with a warning; a whole-string ``@id`` reference is looked up in the same document). Configs the
user points at are parsed elsewhere (:mod:`monai_das.deploy.model_files`). See ``docs/SECURITY.md``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_das.networks.utils import frame_axis
from monai_das.utils.config import CARD_KEY, MAX_CLASS_NAME_LENGTH, hidden_characters, parser_rewrites
from monai_das.utils.logs import bounded_repr

__all__ = ["ModelSpec", "MissingMetadataError", "OverrideError", "CARD_NAME", "CARD_KEY"]

logger = logging.getLogger(__name__)

#: the model card written by training beside the model (``monai_das.handlers.ModelCardSaver``), and its section
CARD_NAME = "metadata.json"


class MissingMetadataError(ValueError):
    """A model whose input grid is written nowhere (no model card, no metadata): no guess is made."""


class OverrideError(ValueError):
    """A ``spec_overrides`` value (a Deploy option such as ``--spatial-size``) the model cannot take: the message names
    the option and both values. Another model file of the bundle would not take it either, so none is tried."""


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
        warnings: what the user should know about this spec in every report (e.g. a ``spatial_size`` override that is
            not the grid the model's metadata describes); :class:`~monai_das.deploy.predictor.DASPredictor` logs them
            once and its reports repeat them. Not compared.
    """

    layout: str = "volume"
    spatial_size: tuple[int, int, int] = (28, 28, 28)
    in_channels: int = 1
    slice_axis: int = 0
    labels: list[str] = field(default_factory=list)
    recipe: dict | None = None
    num_kept: int | None = None
    method: str | None = None
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)

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
        return self.spatial_size[frame_axis(self.layout, self.slice_axis, channels=False)]

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of one slice/frame."""
        if self.layout == "video":
            return self.spatial_size[1], self.spatial_size[2]
        rest = [s for i, s in enumerate(self.spatial_size) if i != self.slice_axis]
        return rest[0], rest[1]

    def label_name(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"


# ------------------------------------------------------------------------ literal values (data, not code)
_NETWORK_KEYS = ("layout", "slice_axis", "in_channels")
#: a whole-string MONAI reference ``@id``, ``@a#b`` (or the legacy ``@a::b``): looked up, never evaluated
_REFERENCE = re.compile(r"^@([\w.\-]+(?:(?:#|::)[\w.\-]+)*)$")
_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_code(text: str) -> bool:
    """A string MONAI's ``ConfigParser`` would evaluate (``$``), expand (``%`` macro), resolve (``@`` reference) or
    rewrite (a relative id): :func:`~monai_das.utils.config.parser_rewrites` (a ``#`` aside: the card is read as
    plain JSON here, and a ``#`` in a class name is refused where cards are written)."""
    return parser_rewrites(text, separator=False) is not None


def _is_literal(value: Any) -> bool:
    """str (not code)/int/float/bool, or a list of those."""
    if isinstance(value, str):
        return not _is_code(value)
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, list) and all(not isinstance(v, list) and _is_literal(v) for v in value)


def _is_number_tree(value: Any, depth: int = 3) -> bool:
    """Numbers in lists and str-keyed dicts, ``depth`` levels at most: data, whatever a parser makes of strings."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if depth and isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_number_tree(v, depth - 1) for k, v in value.items())
    return bool(depth) and isinstance(value, list) and all(_is_number_tree(v, depth - 1) for v in value)


#: the messages of :func:`_ignored` while :func:`collect_ignored` collects them (this thread/task only)
_IGNORED: ContextVar[list | None] = ContextVar("monai_das_ignored_metadata", default=None)


@contextmanager
def collect_ignored() -> Iterator[list[str]]:
    """The messages of the metadata values ignored while the block runs (they are logged too), e.g. for a model's
    reports: a class name dropped from a card otherwise vanished from the report without a word (trial 60b)."""
    collected: list[str] = []
    token = _IGNORED.set(collected)
    try:
        yield collected
    finally:
        _IGNORED.reset(token)


def _ignored(key: str, value: Any, source: str) -> None:
    key = key if key.isprintable() else ascii(key)  # a hostile card's key never forges a line of a report
    message = (
        f"ignoring {key} = {bounded_repr(value)} in {source}: a model file and its metadata are data, only literal "
        "values are used (expressions and references are never evaluated); falling back to the metadata or the "
        "defaults (pass the bundle folder, config_file= or the ModelSpec field to set it)."
    )
    logger.warning(message)
    collected = _IGNORED.get()
    if collected is not None and message not in collected:
        collected.append(message)


def _damaged(key: str, value: Any, source: str) -> None:
    """Refuse the model card value ``key`` = ``value`` of ``source``: training never writes such a value."""
    key = key if key.isprintable() else ascii(key)
    raise ValueError(
        f"the model card in {source} has {key} = {bounded_repr(value)}, which training never writes (an expression, a "
        "reference or a value of another kind): a model card is data, so it was altered or damaged; it is not used "
        "(never evaluated). Use the card training wrote: export the model again from its checkpoint (python -m "
        "monai_das.engines.export onnx --bundle_root <the training's bundle_root> --config_file "
        "<bundle>/configs/inference.json)."
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
    if isinstance(value, str) and value.lstrip().startswith("$@trained_options["):
        # the bundle configs' "from the model card" (monai_das.handlers.trained_options): the card itself, read as
        # data, is what the application uses; not an expression it had to pass over (a warning on every export)
        logger.debug("%s of %s is taken from the model card (%s)", key, source, bounded_repr(value))
        return _MISSING
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
    if not config or config.get("label_names") is None:  # null: the config leaves them to its data (not ignored)
        return None
    names = _literal_value(config, config["label_names"], "label_names", source)
    return [str(v) for v in names] if isinstance(names, list) else None


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


# ---------------------------------------------------------------------------------------------- the model spec
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
    # the grid the model's metadata describes (the card's: the training's), before an override replaces it
    described = {"spatial_size": kw.get("spatial_size"), "layout": kw.get("layout"),
                 "slice_axis": kw.get("slice_axis", 0), "from_card": "spatial_size" in card}
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
    spec = ModelSpec(**kw)
    if "spatial_size" in given and described["spatial_size"] is not None:
        _check_grid_override(spec, described, source, model)
    return spec


def _check_grid_override(spec: ModelSpec, described: Mapping[str, Any], source: str, model: str) -> None:
    """
    A ``spatial_size`` override (``--spatial-size``) against the grid the model's metadata describes (``described``):
    another ``T`` than the model card's is an :class:`OverrideError` (the sampler chooses among the frames it was
    trained on; the bundle's inference refuses the same run); another frame size (or any other grid than a metadata
    without a card describes: perhaps a template's) is a warning in :attr:`ModelSpec.warnings`, said in every report.
    """
    trained = tuple(int(s) for s in described["spatial_size"])
    if trained == tuple(spec.spatial_size):
        return
    layout = described["layout"] or spec.layout
    axis = frame_axis(layout, described["slice_axis"], channels=False)
    trained_t = trained[axis] if len(trained) == 3 else None
    given = tuple(spec.spatial_size)
    option = f"spatial_size={given} (CLI: --spatial-size {' '.join(map(str, given))})"
    where = f"its model card {source}" if described["from_card"] else f"its metadata {source} (no model card)"
    frames = "frames" if spec.layout == "video" else f"slices along slice_axis {spec.slice_axis}"
    name = f"the model '{model}'" if model else "the model"
    if described["from_card"] and trained_t is not None and trained_t != spec.num_frames:
        keep = list(given)
        keep[axis] = trained_t
        raise OverrideError(
            f"{option} gives {name} T={spec.num_frames} {frames}, but it was trained on T={trained_t} (grid "
            f"{trained}, {where}): its sampler chooses k of the T frames it learnt from, so another T is refused, as "
            f"the bundle's inference refuses it. Leave --spatial-size out (the trained grid is used), or keep "
            f"T={trained_t}: --spatial-size {' '.join(map(str, keep))}."
        )
    learnt = "was trained on" if described["from_card"] else "is described with"
    spec.warnings.append(
        f"{option} is not the grid {name} {learnt}, {trained} ({where}): every study is resampled to the given grid, "
        f"so the network sees {frames} on another grid than it learnt from, and its answers may be wrong without any "
        f"other sign (leave --spatial-size out to use the model's grid)."
    )


def _card_fields(card: Mapping, source: str) -> dict[str, Any]:
    """
    :class:`ModelSpec` fields of a model card's ``das_model`` section (plain data: literals only). Training writes
    every value of it, so one it would not have written (an expression, a reference, a value of the wrong kind) is
    refused (:func:`_damaged`), as the bundles refuse it (``trained_options``): the model run with default
    preprocessing or class names instead was a degraded answer (trial T67b).
    """
    if not card:
        return {}
    where = f"{CARD_KEY}#"

    def literal(key: str, kind: Any) -> Any:
        value = card.get(key)
        if value is None:
            return None
        ok = _is_literal(value) and (_is_int(value) if kind is int else isinstance(value, kind))
        if not ok:
            _damaged(where + key, value, source)
            return None
        return value

    out: dict[str, Any] = {}
    layout = literal("layout", str)
    if layout is not None and layout not in ("volume", "video"):
        _damaged(where + "layout", layout, source)
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
    # training refuses such names (T69b, T71g: a 10 MB name made each study's report 20 MB)
    if names is not None and any(hidden_characters(str(n)) or len(str(n)) > MAX_CLASS_NAME_LENGTH for n in names):
        _damaged(where + "label_names", names, source)
    if names is not None:
        out["labels"] = [str(n) for n in names]
    size, frames = literal("spatial_size", list), literal("num_frames", int)
    if size is not None and all(_is_int(v) and v > 0 for v in size):
        if layout == "video" and len(size) == 2 and frames is not None:
            out["spatial_size"] = (frames, size[0], size[1])
        elif layout == "volume" and len(size) == 3:
            out["spatial_size"] = tuple(size)
        else:
            _damaged(where + "spatial_size", size, source)
    elif size is not None:
        _damaged(where + "spatial_size", size, source)
    recipe = card.get("recipe")
    if isinstance(recipe, Mapping):
        plain = {}
        for key, value in recipe.items():
            # a value of nested numbers (geometry: mm ranges) is data too; check_recipe checks each key's form
            if value is None or _is_literal(value) or _is_number_tree(value):
                plain[str(key)] = value
            else:
                _damaged(f"{where}recipe#{key}", value, source)
        out["recipe"] = plain
    elif recipe is not None:
        _damaged(where + "recipe", recipe, source)
    return out


def _choose_metadata(candidates: list[tuple[Any, str]]) -> tuple[dict | None, str]:
    """The first model card (a document with ``das_model``) among ``(document, where)`` candidates in order, else
    the first document; ``(None, "")`` when there is none."""
    docs = [(d, w) for d, w in candidates if isinstance(d, Mapping)]
    for doc, where in docs:
        if isinstance(doc.get(CARD_KEY), Mapping):
            return dict(doc), where
    return (dict(docs[0][0]), docs[0][1]) if docs else (None, "")
