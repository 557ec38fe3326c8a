"""Small network utilities shared by the handlers, engines and deployment code."""

from __future__ import annotations

import contextvars
import logging
import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["check_count", "check_num_kept", "check_finite", "check_device", "network_device", "unwrap_network",
           "preserved_modes", "uniform_indices", "to_frames", "frame_axis", "SavedSettings"]


def check_count(value: Any, name: str) -> int:
    """
    ``value`` as an ``int >= 1`` (a number of frames, channels, classes...). Integers and integral floats (``4.0``,
    as a config may give) pass; ``2.7``, ``0``, ``True`` or ``"4"`` raise a ``ValueError`` naming ``name`` and the
    value, instead of a ``TypeError`` from deep inside ``nn.Linear`` or a silently truncated count.
    """
    integer_tensor = isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dtype != torch.bool
    if integer_tensor and value.numel() == 1:  # a one-element integer tensor, e.g. k taken from another tensor
        value = int(value.item())
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and not isinstance(value, numbers.Integral):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def check_num_kept(num_samples: Any, num_frames: int, name: str | None = None) -> int:
    """``k`` (``num_samples``) as an ``int`` in ``1..T``: :func:`check_count`, then ``k <= T`` (``ValueError``
    naming both; ``name``: the option the error names, e.g. a bundle's ``--num_kept (k)``; else ``num_samples``)."""
    k = check_count(num_samples, name or "num_samples (k)")
    if k > num_frames:
        said = f"{name} {k}: " if name else ""  # the option a bundle user typed
        raise ValueError(f"{said}cannot keep k={k} frames of an input with T={num_frames} frames (k must be <= T).")
    return k


def check_finite(x: torch.Tensor | np.ndarray, what: str, detail: str = "", inf: str = "infinite",
                 max_abs: float | None = None, beyond: str = "", shape: tuple[int, ...] | None = None) -> None:
    """
    ``ValueError(f"{what} contains NaN or {inf} values{detail}.")`` when the tensor or array ``x`` holds a NaN or an
    infinite value (``inf``: the word, ``"Inf"`` where a caller's message has always said it). One reduction first
    (a NaN or infinite element makes the sum NaN or infinite); the element-wise pass only when the sum is not finite
    (such an element, or finite values whose sum overflows): a finite input costs one ``sum``.

    With ``max_abs``, finite values beyond ``±max_abs`` are refused too, ``ValueError(f"{what} of shape {shape} has
    values up to |x| = {max |x|}{beyond}.")`` (``beyond``: why they cannot be computed): the one reduction is then
    ``aminmax`` (a NaN makes both NaN, an infinite value one of them), still one pass over ``x``. ``x`` not empty.
    ``shape``: the shape to name instead of ``x``'s (the input as its caller gave it, ``x`` a reshaped view of it).
    """
    if max_abs is not None:
        if isinstance(x, torch.Tensor):
            lo, hi = torch.aminmax(x.detach())
            largest = float(torch.maximum(-lo, hi))
        else:
            largest = float(np.maximum(-np.min(x), np.max(x)))  # NaN in, NaN out (not Python's max)
        if not math.isfinite(largest):
            raise ValueError(f"{what} contains NaN or {inf} values{detail}.")
        if largest > max_abs:
            named = tuple(x.shape) if shape is None else tuple(shape)
            raise ValueError(f"{what} of shape {named} has values up to |x| = {largest:.3g}{beyond}.")
        return
    if isinstance(x, torch.Tensor):
        finite = bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
    else:
        finite = bool(np.isfinite(x.sum())) or bool(np.isfinite(x).all())
    if not finite:
        raise ValueError(f"{what} contains NaN or {inf} values{detail}.")


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``torch.device(device)``, refused up front (naming ``name``) when it is a CUDA device and this torch has none:
    otherwise every input failed on its own with torch's "Torch not compiled with CUDA enabled"."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(device)!r}: CUDA is not available on this machine (torch {torch.__version__}); "
                         "give cpu.")
    return dev


def network_device(net: torch.nn.Module, default: str | torch.device = "cpu") -> torch.device:
    """The device of ``net``: that of its first parameter, else of its first buffer (a parameter-free sampler's fixed
    filters), else ``default``."""
    for tensors in (net.parameters(), net.buffers()):
        first = next(iter(tensors), None)
        if first is not None:
            return first.device
    return torch.device(default)


def unwrap_network(network: torch.nn.Module, require_sampler: bool = True) -> torch.nn.Module:
    """
    The classifier inside ``DistributedDataParallel``/``DataParallel`` wrappers (followed through ``.module`` until a
    module with a ``sampler`` attribute, or with ``last_indices``: a runtime network such as
    :class:`monai_das.engines.IndicesRecorder` around a traced module, whose own ``.module`` records nothing). With
    ``require_sampler`` a network without a sampler raises a ``ValueError``; otherwise that module is returned.
    """
    net = network
    while hasattr(net, "module") and not hasattr(net, "sampler") and not hasattr(net, "last_indices"):
        net = net.module
    if require_sampler and not hasattr(net, "sampler"):
        raise ValueError(f"{type(network).__name__} has no 'sampler' attribute: expected a SubsampledClassifier.")
    return net


@contextmanager
def preserved_modes(*modules: torch.nn.Module) -> Iterator[None]:
    """
    On leaving (also by an exception), every submodule of ``modules`` is back in its own train/eval mode. MONAI's
    ``eval_mode``/``train_mode`` and ``module.train(was_training)`` restore the mode of the whole module, which puts a
    submodule the caller had in ``eval()`` (a frozen batch norm in a training encoder) into training: use
    ``with preserved_modes(net), eval_mode(net):``.
    """
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def uniform_indices(num_frames: int, num_samples: int, device: torch.device | str | None = None) -> torch.Tensor:
    """
    ``k = num_samples`` evenly spread indices of a ``T = num_frames`` sequence: ``floor((j + 0.5)·T/k)`` for
    ``j = 0..k-1`` (the centre of each of ``k`` equal segments), clamped to ``0..T-1`` (for ``k > T`` frames repeat).
    The one rule behind the uniform sampler and uniform temporal resampling.
    """
    # integer arithmetic, floor((2j + 1)·T / 2k): exact, and k may be a symbolic size while exporting
    t, k = num_frames, num_samples
    idx = torch.div((2 * torch.arange(k, device=device) + 1) * t, 2 * k, rounding_mode="floor")
    return idx.clamp(0, t - 1)


def frame_axis(layout: str, slice_axis: int = 0, channels: bool = True) -> int:
    """
    The dimension of the frames ``T`` in one unbatched item of ``layout``: ``1 + slice_axis`` in a channel-first
    volume ``C×D×H×W``, ``0`` in a clip ``T×C×H×W``; with ``channels=False``, in a grid ``spatial_size`` without
    channels (``D×H×W``: ``slice_axis``; ``T×H×W``: ``0``). ``T`` of an item of shape ``s`` is
    ``s[frame_axis(layout, slice_axis)]``. Any layout but ``"video"`` counts as ``"volume"`` (callers check it).
    """
    if layout == "video":
        return 0
    return int(slice_axis) + (1 if channels else 0)


def to_frames(x: torch.Tensor, layout: str, slice_axis: int = 0) -> torch.Tensor:
    """
    Batched network input → frame sequence ``B×T×C×H×W`` (a view, no copy): for ``layout="volume"`` the input is
    ``B×C×D×H×W`` and the frames are its slices along spatial axis ``slice_axis`` (0=D, 1=H, 2=W), moved to dim 1;
    for ``"video"`` the input is already ``B×T×C×H×W``. TorchScript-compatible (used by
    :meth:`~monai_das.networks.SubsampledClassifier.to_frames`, which also checks channels and casts).
    """
    if layout == "volume":
        return x.movedim(2 + slice_axis, 1)
    if layout != "video":
        raise ValueError("layout must be 'volume' or 'video', got '" + layout + "'.")
    return x


#: the ``strict`` of the ``load_state_dict`` call in progress on a :class:`SavedSettings` module (torch gives each
#: module's ``_load_from_state_dict`` ``strict=True`` whatever the call's)
_STRICT_LOAD: contextvars.ContextVar[bool] = contextvars.ContextVar("monai_das_strict_load", default=True)


def _codes(code: Any) -> list[int]:
    """The values of a settings entry (an int64 tensor of any shape) as a flat list of ints."""
    return [int(c) for c in torch.as_tensor(code).reshape(-1).tolist()]


def settings_mismatch(message: str, hint: str, error_msgs: list[str]) -> None:
    """A saved setting that differs from the module's: an error of the ``load_state_dict`` in progress (``message``;
    ``hint``: how to build the module that fits), or with ``strict=False`` (fine-tuning: take what fits) a warning.
    Torch passes ``strict=True`` to every module's ``_load_from_state_dict``: the call's own is
    :class:`SavedSettings`'s (``_STRICT_LOAD``)."""
    if _STRICT_LOAD.get():
        error_msgs.append(f"{message}; {hint}.")
    else:  # said, not refused (review)
        logging.getLogger(__name__).warning(f"{message}: loaded as strict=False asks.")


class SavedSettings:
    """
    Mixin for a ``torch.nn.Module`` whose outputs depend on settings no parameter's shape records (a pooling mode, a
    stride, an axis): they are saved with the weights, as an int64 tensor at ``<prefix><settings_key>``, and a state
    dict saved with other settings is refused by ``load_state_dict`` (its weights would load and the network would
    answer differently from the one trained); with ``strict=False`` (fine-tuning: take what fits) it is a warning. A
    state dict without the entry (saved before it existed) loads as before. Subclasses give
    :meth:`_settings_tensor`, :meth:`_settings_of` (its decoding, for the message) and :attr:`settings_hint` (how to
    build the network that fits).
    """

    settings_key = "settings"
    #: what the settings are, for the message (default: ``<class name> settings``)
    settings_what: str | None = None
    settings_hint = "build the network with the settings of the training run"

    def settings(self) -> dict:
        """The settings saved with the weights."""
        return self._settings_of(_codes(self._settings_tensor()))

    def _settings_tensor(self) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _settings_of(v: list[int]) -> dict:
        """The settings of :meth:`_settings_tensor`'s values ``v`` (``{"unreadable": v}`` when they are none)."""
        raise NotImplementedError

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        destination[prefix + self.settings_key] = self._settings_tensor()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[no-untyped-def]
        # what the submodules' checks see (under a module of another kind on top, e.g. a DDP wrapper: strict)
        token = _STRICT_LOAD.set(bool(strict))
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]
        finally:
            _STRICT_LOAD.reset(token)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[no-untyped-def]
        saved = state_dict.pop(prefix + self.settings_key, None)
        if saved is not None and _codes(saved) != _codes(self._settings_tensor()):
            message = (f"{prefix}{self.settings_key}: the weights were trained with "
                       f"{self.settings_what or type(self).__name__ + ' settings'} "
                       f"{self._settings_of(_codes(saved))} but this network has {self.settings()}")
            settings_mismatch(message, self.settings_hint, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,  # type: ignore[misc]
                                      missing_keys, unexpected_keys, error_msgs)


def refuse_scripting(module: torch.nn.Module) -> None:
    """
    The ``__prepare_scriptable__`` of the samplers and the classifier (``torch.jit.script`` calls it first): they
    are traced or exported, never scripted (Python control flow on shapes and ``k``), and scripting failed with
    TorchScript's own "Unknown type annotation: 'bool'" from deep inside the module (trial T63b). MONAI's
    ``ckpt_export`` without ``use_trace`` (the model zoo's CI) ends here too.
    """
    raise TypeError(
        f"{type(module).__name__} cannot be compiled by torch.jit.script; it is traced or exported instead: "
        "torch.jit.trace(monai_das.engines.export.ExportedClassifier(net), example) for TorchScript (logits and "
        "kept indices), monai_das.engines.save_onnx for ONNX, torch.export.export(ExportedClassifier(net), "
        "(example,)), or a bundle's export (ckpt_export with use_trace True). See the README's Python API.")
