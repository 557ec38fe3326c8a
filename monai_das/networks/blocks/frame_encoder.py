"""The frame-encoder contract (``N×C×H×W → N×E``): discover ``C`` and ``E`` of any 2D network, or wrap a backbone."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.utils import eval_mode

from monai_das.networks.utils import check_count, network_device, preserved_modes

__all__ = ["FrameEncoder", "SmallFrameEncoder", "PROBE_SIZE", "encoder_in_channels", "encoder_out_features",
           "probe_encoder_features"]

#: height and width of the zero frames that :func:`probe_encoder_features` feeds an encoder without ``out_features``.
#: 64 is enough for the common MONAI backbones (DenseNet, ResNet, EfficientNet downsample by 32) and cheap to run.
PROBE_SIZE = 64


def _count(value: object) -> int | None:
    """``value`` as :func:`check_count` reads it, else ``None`` (attributes named like a count may hold something else)."""
    try:
        return check_count(value, "count")
    except ValueError:
        return None


def encoder_in_channels(encoder: nn.Module) -> int | None:
    """
    Input channels ``C`` that ``encoder`` declares through an ``in_channels`` (MONAI's ``EfficientNetBN``,
    :class:`MobileNetV3Small`) or ``n_input_channels`` attribute, ``None`` when it declares neither (MONAI's
    ``DenseNet`` and ``ResNet`` keep the value only in their first convolution).
    """
    for name in ("in_channels", "n_input_channels"):
        c = _count(getattr(encoder, name, None))
        if c is not None:
            return c
    return None


def encoder_out_features(encoder: nn.Module) -> int | None:
    """``E`` from the encoder's ``out_features`` attribute, ``None`` when it has none (or not an ``int >= 1``)."""
    return _count(getattr(encoder, "out_features", None))


def _first_conv_channels(encoder: nn.Module) -> int | None:
    # modules are registered in the order most CNNs apply them, so the first convolution reads the input
    for m in encoder.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None


def probe_encoder_features(encoder: nn.Module, in_channels: int | None = None, probe_size: int = PROBE_SIZE,
                           owner: str = "SubsampledClassifier") -> int:
    """
    ``E`` of a 2D frame encoder found by running it once on zeros of shape ``2×C×probe_size×probe_size``.

    The encoder runs in ``eval()`` under ``torch.no_grad()`` (``monai.networks.utils.eval_mode``) on the device and
    dtype of its parameters; afterwards every submodule is back in its own train/eval mode (a frozen batch norm in a
    training encoder stays frozen), and no gradient or batch-norm statistic has changed.

    Args:
        encoder: the 2D network; it must map ``N×C×H×W → N×E``.
        in_channels: ``C``; ``None`` takes :func:`encoder_in_channels`, else the input channels of the encoder's first
            convolution, else 1.
        probe_size: height and width of the probe frames (:data:`PROBE_SIZE`).
        owner: the module named in the errors.

    Raises:
        ValueError: the forward pass fails (e.g. the encoder needs larger frames or other channels): the message
            names the encoder and the probe shape and suggests ``encoder_features=``; or the output is not a
            ``N×E`` tensor (e.g. a ``N×E×h×w`` feature map of a backbone without global pooling): the message names
            the output shape and what is needed.
    """
    c = in_channels or encoder_in_channels(encoder) or _first_conv_channels(encoder) or 1
    name = type(encoder).__name__
    param = next(iter(encoder.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else None
    device = network_device(encoder)
    # batch 2, not 1: an output N×E must keep N apart from E, and 1 would hide a squeeze of the batch dimension
    x = torch.zeros(2, c, probe_size, probe_size, device=device, dtype=dtype)
    try:
        # eval() + no_grad(): no dropout, no batch-norm update, no graph; submodules the caller had in eval() (frozen)
        # stay there afterwards
        with preserved_modes(encoder), eval_mode(encoder):
            out = encoder(x)
    except Exception as e:
        raise ValueError(
            f"{owner}: could not find the feature size E of the frame encoder {name}: running it on a zero probe "
            f"input of shape {tuple(x.shape)} (N×C×H×W) failed with {type(e).__name__}: {e}. Pass "
            f"encoder_features=E (the size of its N×E output), or check that C={c} is its number of input channels "
            f"(in_channels=)."
        ) from e
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ValueError(
            f"{owner}: the frame encoder {name} must map N×C×H×W → N×E (one embedding per frame), but on a zero "
            f"probe input of shape {tuple(x.shape)} it returned {got}. End it with a global pooling and a flatten "
            f"(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), e.g. wrap it as monai_das.networks.FrameEncoder(encoder), "
            f"or use the network's classification/feature output (e.g. MONAI resnet18(feed_forward=False))."
        )
    return int(out.shape[1])


class FrameEncoder(nn.Module):
    """
    A 2D backbone returning feature maps, made a frame encoder: ``backbone`` → global average pooling → flatten.

    Args:
        backbone: 2D network ``N×C×H×W → N×E×h×w`` (e.g. the ``features`` of a MONAI ``DenseNet121``).
        out_features: ``E``; ``None`` leaves it to :class:`SubsampledClassifier` to probe.
        in_channels: ``C``; ``None`` takes the backbone's ``in_channels``/``n_input_channels`` attribute if any.

    Shapes: ``N×C×H×W → N×E``.
    """

    def __init__(self, backbone: nn.Module, out_features: int | None = None, in_channels: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        if out_features is not None:
            self.out_features = check_count(out_features, "FrameEncoder: out_features")
        in_channels = check_count(in_channels, "FrameEncoder: in_channels") if in_channels is not None else None
        in_channels = in_channels or encoder_in_channels(backbone)
        if in_channels is not None:
            self.in_channels = int(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.backbone(x)))


class SmallFrameEncoder(nn.Sequential):
    """
    A light 2D CNN embedding one frame (ADPS's default frame encoder): two stride-2 3×3 convolutions with ReLU, then
    global average pooling.

    Args:
        in_channels: frame channels ``C``.
        out_features: embedding width ``E``.

    Shapes: ``N×C×H×W`` → ``N×E``.
    """

    def __init__(self, in_channels: int = 1, out_features: int = 32) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, out_features, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.in_channels = in_channels
        self.out_features = out_features
