"""Build samplers and classifiers by name (what the bundle configs call)."""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import re
import typing
from typing import Any

import torch.nn as nn

from monai_das.networks.nets import (
    ADPSSampler,
    BaseSampler,
    DASampler,
    DPSSampler,
    FullSequenceSampler,
    MobileNetV3Small,
    RandomSampler,
    SubsampledClassifier,
    UniformSampler,
)
from monai_das.networks.nets.sampler import check_count
from monai_das.networks.utils import check_num_kept
from monai_das.networks.nets.subsampled_classifier import check_context_frames

__all__ = ["SAMPLERS", "get_sampler", "get_encoder", "architecture_kwargs", "num_kept", "kept_frames", "build_classifier"]

SAMPLERS: dict[str, type[BaseSampler]] = {
    "das": DASampler,
    "dps": DPSSampler,
    "adps": ADPSSampler,
    "uniform": UniformSampler,
    "random": RandomSampler,
    "full": FullSequenceSampler,
}


def check_keep_ratio(keep_ratio: Any) -> float:
    """``keep_ratio`` as a float in (0, 1] (a ``ValueError`` naming the value otherwise, e.g. for ``"0.5"`` or NaN)."""
    ok = isinstance(keep_ratio, numbers.Real) and not isinstance(keep_ratio, bool)
    if not ok or not math.isfinite(keep_ratio) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be a number in (0, 1], got {keep_ratio!r}.")
    return float(keep_ratio)


def check_one_budget(num_kept: Any, keep_ratio: Any, names: tuple[str, str] = ("num_kept", "keep_ratio"),
                     note: str = "") -> None:
    """
    The one check that a frame budget is given once: ``num_kept`` (``k``) or ``keep_ratio``, not both (``None``: not
    given). ``names`` say how the user gave them (``("--num_kept", "--keep_ratio")`` for the Deploy app,
    ``("--conf num_kept", "--conf keep_ratio")`` for MONAI Label's defaults); ``note`` is added inside the message's
    brackets.

    Raises:
        ValueError: both given, e.g. "give --conf num_kept or --conf keep_ratio, not both (got --conf num_kept 3,
            --conf keep_ratio 0.5)."
    """
    if num_kept is None or keep_ratio is None:
        return
    a, b = names
    sep = " " if a.startswith("-") else "="  # an option as typed, or a keyword argument
    raise ValueError(f"give {a} or {b}, not both (got {a}{sep}{num_kept!r}, {b}{sep}{keep_ratio!r}{note}).")


def num_kept(num_frames: int, keep_ratio: float) -> int:
    """``k = max(1, round(keep_ratio·T))``; ``num_frames`` (``T``) must be an integer >= 1, ``keep_ratio`` lie in
    (0, 1]."""
    num_frames, keep_ratio = check_count(num_frames, "num_frames (T)"), check_keep_ratio(keep_ratio)
    return max(1, min(num_frames, round(keep_ratio * num_frames)))


def kept_frames(method: str, num_frames: int, keep_ratio: float, num_samples: int | None = None,
                name: str | None = None) -> int:
    """
    The number of frames ``k`` the classifier of sampler ``method`` keeps out of ``T = num_frames``: ``T`` for
    ``full``, else ``num_samples`` when given (``1 <= k <= T``, checked even for ``full``; an error names it
    ``name``, the bundles' ``num_kept``), else ``num_kept(T, keep_ratio)``. The one rule :func:`build_classifier`
    and the bundles' inference settings share.
    """
    num_frames, keep_ratio = check_count(num_frames, "num_frames (T)"), check_keep_ratio(keep_ratio)
    num_samples = None if num_samples is None else check_num_kept(num_samples, num_frames, name)
    if str(method).lower() == "full":
        return num_frames
    return num_samples or num_kept(num_frames, keep_ratio)


def get_sampler(name: str, num_samples: int, num_frames: int | None = None, in_channels: int = 1,
                **kwargs: Any) -> BaseSampler:
    """
    A sampler by name: ``das``, ``dps``, ``adps``, ``uniform``, ``random`` or ``full``.

    ``num_frames`` (``T``) is required by ``dps`` and ``adps``; ``in_channels`` is used by ``das`` and ``adps``;
    other keyword arguments go to the sampler's constructor. ``num_samples`` (``k``, ignored by ``full``) must be an
    integer >= 1: ``2.7`` raises a ``ValueError`` naming it rather than failing inside torch.
    """
    if not isinstance(name, str):
        raise ValueError(f"sampler name must be a string, one of {sorted(SAMPLERS)}; got {name!r}.")
    key = name.lower()
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    if key in ("dps", "adps"):
        if num_frames is None:
            raise ValueError(f"sampler {key!r} needs num_frames (T).")
        kwargs["num_frames"] = num_frames
    if key in ("das", "adps"):
        kwargs["in_channels"] = in_channels
    known = _parameter_names(SAMPLERS[key], SAMPLERS[key]) - {"self", "num_samples"}
    unknown = sorted(set(kwargs) - known)
    if unknown:  # e.g. sampler_kwargs of DAS given to another method, or a typo: say which, and what it takes
        close = {u: difflib.get_close_matches(u, sorted(known), n=1, cutoff=0.6) for u in unknown}
        hints = "".join(f" ({u!r}: did you mean {c[0]!r}?)" for u, c in close.items() if c)
        raise ValueError(f"sampler {key!r} takes no argument {', '.join(map(repr, unknown))} (sampler_kwargs){hints}; "
                         f"its arguments: {sorted(known - {'in_channels', 'num_frames'}) or 'none'}.")
    return SAMPLERS[key](num_samples, **kwargs)


_MONAI_NETS = "monai.networks.nets"


def _network_class(target: Any) -> type[nn.Module] | None:
    """The ``nn.Module`` class that ``target`` (a class, or a factory function such as ``resnet18``) builds."""
    if isinstance(target, type):
        return target if issubclass(target, nn.Module) else None
    if inspect.isfunction(target):
        try:  # MONAI's factories are annotated (``-> ResNet``); an unannotated helper is not a network
            ret = typing.get_type_hints(target).get("return")
        except Exception:
            return None
        return ret if isinstance(ret, type) and issubclass(ret, nn.Module) else None
    return None


def _parameter_names(target: Any, cls: type[nn.Module]) -> set[str]:
    """Keyword arguments ``target`` accepts, following ``**kwargs`` into the built class and its bases."""
    names: set[str] = set()
    chain = [target] + [c for c in cls.__mro__ if c is not target and issubclass(c, nn.Module) and c is not nn.Module]
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            break
        names.update(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


#: encoder arguments that load weights (a download, a URL, a local file): dropped by :func:`architecture_kwargs`
#: (``repo``/``filename``/a name ending in ``path``: Transchex's ``path_or_repo_id`` and ``filename`` fetch from
#: Hugging Face or read a file; trial T67b; ``dropout_path_rate`` is not one)
_WEIGHT_ARGUMENT = re.compile(r"pretrain|url|weights|download|checkpoint|ckpt|model_dir|repo|filename|cache_dir|"
                              r"(?:^|_)path(?:$|_or)", re.IGNORECASE)


def is_weight_argument(name: str) -> bool:
    """Whether the encoder argument ``name`` loads weights (a download, a URL, a local file) rather than shaping the
    architecture (:func:`architecture_kwargs` drops it)."""
    return bool(_WEIGHT_ARGUMENT.search(str(name)))


def architecture_kwargs(name: str | None, kwargs: dict | None) -> dict:
    """
    The arguments of the frame encoder ``name`` (``None``: :class:`MobileNetV3Small`; else a network of
    ``monai.networks.nets``, see :func:`get_encoder`) that build its architecture without loading any weights: the
    arguments that download or read weights (names holding ``pretrain``, ``url``, ``weights``, ``download``,
    ``checkpoint``, ``ckpt``, ``model_dir``, ``repo``, ``filename``, ``cache_dir``, or ending in ``path``:
    ``pretrained``, ``weights_path``, ``pretrained_url``, ``path_or_repo_id``, ...) are dropped,
    and ``pretrained=False`` is set where the network takes it (``EfficientNetBN`` loads ImageNet weights by
    default). For a trained network rebuilt from its model card (the checkpoint's weights replace whatever the
    encoder starts with): the card is data, and never makes a rebuild download or read a file.
    """
    kwargs = dict(kwargs or {})
    out = {k: v for k, v in kwargs.items() if not is_weight_argument(k)}
    key = None if name is None else str(name).rsplit(".", 1)[-1]
    if key == "TorchVisionFCModel" and any(v for k, v in kwargs.items() if k not in out):
        # torchvision builds another network with weights than without (inception_v3's input transform, googlenet's
        # auxiliary heads): a rebuild without them would not be the trained network
        raise ValueError("encoder TorchVisionFCModel was trained with pretrained weights, and torchvision builds some "
                         "networks differently with them: it cannot be rebuilt from a model card without loading "
                         "weights; give the encoder in the bundle config (trusted code) instead.")
    if name is None:
        target: Any = MobileNetV3Small
    else:
        import monai.networks.nets as monai_nets

        key = name[len(_MONAI_NETS) + 1:] if name.startswith(_MONAI_NETS + ".") else name
        target = getattr(monai_nets, key, None) if key.isidentifier() and not key.startswith("_") else None
    cls = _network_class(target)
    if cls is not None and "pretrained" in _parameter_names(target, cls):
        out["pretrained"] = False
    return out


def get_encoder(name: str, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """
    A 2D frame encoder built from a network of ``monai.networks.nets`` named ``name``, e.g. ``"DenseNet121"``,
    ``"resnet18"`` or ``"EfficientNetBN"`` (``"monai.networks.nets.DenseNet121"`` is accepted too).

    ``kwargs`` are the network's arguments (e.g. ``out_channels=64`` for ``DenseNet121``, ``num_classes=32`` for
    ``resnet18``); ``spatial_dims=2`` and the input-channel argument (``in_channels`` or ``n_input_channels``,
    whichever the network takes) are filled in when not given. The name is looked up in ``monai.networks.nets``
    only: a dotted path to another module, or anything that is not a network there, raises a ``ValueError`` (nothing
    is imported or evaluated from the string).
    """
    import monai.networks.nets as monai_nets  # the only namespace a name resolves in

    if not isinstance(name, str):
        raise ValueError(f"encoder name must be a string naming a network of {_MONAI_NETS}, got {name!r}.")
    key = name[len(_MONAI_NETS) + 1:] if name.startswith(_MONAI_NETS + ".") else name
    if not key.isidentifier() or key.startswith("_"):
        raise ValueError(
            f"encoder {name!r} is not a network name: only names from {_MONAI_NETS} are accepted (e.g. "
            f"'DenseNet121', 'resnet18', 'EfficientNetBN'); dotted paths to other modules are refused, nothing is "
            f"imported. Pass an nn.Module as encoder= to use any other network."
        )
    target = getattr(monai_nets, key, None)
    cls = _network_class(target)
    if cls is None:
        known = [n for n in dir(monai_nets) if not n.startswith("_") and _network_class(getattr(monai_nets, n))]
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"encoder {name!r} is not a network of {_MONAI_NETS}.{hint}")
    in_channels = check_count(in_channels, "in_channels")
    params, kwargs = _parameter_names(target, cls), dict(kwargs)
    if "spatial_dims" in params and kwargs.setdefault("spatial_dims", 2) != 2:
        raise ValueError(
            f"encoder {key}: the frame encoder is 2D (it sees one H×W frame at a time), got "
            f"spatial_dims={kwargs['spatial_dims']!r}."
        )
    for arg in ("in_channels", "n_input_channels"):
        if arg in params:
            given = kwargs.setdefault(arg, in_channels)
            if given != in_channels:
                raise ValueError(
                    f"encoder {key}: {arg}={given!r} in its arguments but the classifier's in_channels={in_channels}; "
                    f"set in_channels={given!r} instead (the sampler needs it too)."
                )
            break
    try:
        encoder = target(**kwargs)
    except Exception as e:  # a missing argument, a failed weight download...: say which network and arguments
        hint = ""
        if "pretrained" in params and isinstance(e, OSError):  # urllib's URLError/HTTPError are OSErrors
            default = getattr(inspect.signature(target).parameters.get("pretrained"), "default", None)
            if kwargs.get("pretrained", default) is True:
                why = "as given" if "pretrained" in kwargs else "its default"
                hint = (f" {key} downloads pretrained weights with pretrained=True ({why}): offline, give "
                        "encoder_kwargs {'pretrained': False} (bundle: --encoder_kwargs \"{'pretrained': False}\"), or "
                        "weights of your own.")
        missing = re.findall(r"'(\w+)'", str(e)) if isinstance(e, TypeError) and "missing" in str(e) else []
        if missing:  # DenseNet121 by name alone: its out_channels, the embedding width, has no default
            example = '{"out_channels": 64}' if missing == ["out_channels"] else \
                "{" + ", ".join(f'"{m}": ...' for m in missing) + "}"
            hint = f" Give {', '.join(missing)} in encoder_kwargs (bundle: --encoder_kwargs '{example}')."
        raise ValueError(f"could not build the frame encoder {_MONAI_NETS}.{key}(**{kwargs!r}): {type(e).__name__}: "
                         f"{str(e).rstrip('.')}.{hint}") from e
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{_MONAI_NETS}.{key} returned a {type(encoder).__name__}, not an nn.Module.")
    return encoder


def build_classifier(
    method: str,
    num_classes: int,
    num_frames: int,
    in_channels: int = 1,
    keep_ratio: float = 0.5,
    layout: str = "volume",
    slice_axis: int = 0,
    temporal_head: str = "mean",
    dropout: float = 0.2,
    encoder_kwargs: dict | None = None,
    sampler_kwargs: dict | None = None,
    encoder: nn.Module | str | None = None,
    encoder_features: int | None = None,
    context_frames: int = 0,
    sampler_gradient: str = "pixels",
    num_samples: int | None = None,
) -> SubsampledClassifier:
    """
    A :class:`SubsampledClassifier`: the sampler ``method`` keeping ``num_kept(num_frames, keep_ratio)`` frames (all
    of them for ``full``), a 2D frame encoder ``N×C×H×W → N×E``, a temporal head and a linear layer.

    Args:
        encoder: the frame encoder.

            - ``None`` (default): :class:`MobileNetV3Small` (``num_classes=0``: ``E = 576``), built with
              ``encoder_kwargs`` (``stem_stride``, ``pretrained``, ``weights_path``, ``dropout``, ...); parameter
              names are unchanged, so existing checkpoints load.
            - a string: a network of ``monai.networks.nets`` by name (``"DenseNet121"``, ``"resnet18"``,
              ``"EfficientNetBN"``...), built by :func:`get_encoder` with ``encoder_kwargs`` as its arguments
              (``spatial_dims=2`` and ``in_channels``/``n_input_channels`` filled in). Only that namespace is
              searched; dotted paths to other modules are refused.
            - an ``nn.Module``: used as is (``encoder_kwargs`` must then be empty); it must take ``in_channels``
              channels.
        encoder_features: ``E``; ``None`` reads the encoder's ``out_features`` or probes it once on 64×64 zero
            frames (see :class:`SubsampledClassifier`). Give it for encoders that need larger frames.
        encoder_kwargs: arguments of the encoder built from ``None`` or a string (see above).
        context_frames: ``c`` neighbours on either side of each kept frame given to the encoder as channels (2.5D;
            the encoder built from ``None`` or a string takes ``in_channels·(2c+1)`` channels, the sampler
            ``in_channels``); see :class:`SubsampledClassifier`.
        sampler_gradient: ``"pixels"`` (default), ``"features"`` or ``"none"``: how a learned sampler's
            straight-through gradient is formed in training, or none at all (the sampler then learns only from a
            loss on its scores such as :class:`~monai_das.losses.FrameRelevanceLoss`); see
            :class:`SubsampledClassifier`.
        num_samples: ``k`` itself, ``1 <= k <= T``, instead of the one ``keep_ratio`` gives (``None``: from
            ``keep_ratio``). Ignored by ``full`` once checked. The samplers' parameters do not depend on ``k``, so a
            checkpoint trained at one ``k`` loads into a network built with another (any ``k`` at inference).

    ``num_classes``, ``num_frames`` and ``in_channels`` must be integers >= 1 and ``keep_ratio`` lie in (0, 1] (checked
    for ``full`` too, which ignores it, so a config error shows whatever the method); each raises a ``ValueError``
    naming the argument and its value. The other arguments are those of :class:`SubsampledClassifier` and
    :func:`get_sampler`.
    """
    if not isinstance(method, str) or method.lower() not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}.")
    num_classes, num_frames = check_count(num_classes, "num_classes"), check_count(num_frames, "num_frames (T)")
    in_channels, keep_ratio = check_count(in_channels, "in_channels"), check_keep_ratio(keep_ratio)
    encoder_channels = in_channels * (2 * check_context_frames(context_frames) + 1)  # 2.5D: neighbours as channels
    if encoder is None:
        encoder = MobileNetV3Small(spatial_dims=2, in_channels=encoder_channels, num_classes=0,
                                   **(encoder_kwargs or {}))
    elif isinstance(encoder, str):
        encoder = get_encoder(encoder, encoder_channels, **(encoder_kwargs or {}))
    elif isinstance(encoder, nn.Module):
        if encoder_kwargs:
            raise ValueError(
                f"encoder_kwargs={encoder_kwargs!r} cannot apply to an encoder module passed in "
                f"({type(encoder).__name__}); build the module with them, or pass the encoder by name."
            )
    else:
        raise ValueError(
            f"encoder must be None (MobileNetV3-Small), the name of a network of {_MONAI_NETS} or an nn.Module, "
            f"got {type(encoder).__name__}."
        )
    k = kept_frames(method, num_frames, keep_ratio, num_samples)
    sampler = get_sampler(method, k, num_frames=num_frames, in_channels=in_channels, **(sampler_kwargs or {}))
    return SubsampledClassifier(sampler, encoder, num_classes, layout, slice_axis, temporal_head, dropout,
                                encoder_features=encoder_features, in_channels=in_channels,
                                context_frames=context_frames, sampler_gradient=sampler_gradient)
