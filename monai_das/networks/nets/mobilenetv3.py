"""MobileNetV3-Small (Howard et al., ICCV 2019) in MONAI style, 2D or 3D, any number of input channels."""

from __future__ import annotations

import os

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm, Pool

from monai_das.networks.utils import SavedSettings

__all__ = ["MobileNetV3Small", "MOBILENET_V3_SMALL_URL"]

#: ImageNet weights of torchvision's ``mobilenet_v3_small`` (IMAGENET1K_V1); parameter names here match them.
MOBILENET_V3_SMALL_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"

# expand, out, kernel, squeeze-excite, hard-swish, stride  (torchvision's table for the small model)
_SMALL_CFG = (
    (16, 16, 3, True, False, 2),
    (72, 24, 3, False, False, 2),
    (88, 24, 3, False, False, 1),
    (96, 40, 5, True, True, 2),
    (240, 40, 5, True, True, 1),
    (240, 40, 5, True, True, 1),
    (120, 48, 5, True, True, 1),
    (144, 48, 5, True, True, 1),
    (288, 96, 5, True, True, 2),
    (576, 96, 5, True, True, 1),
    (576, 96, 5, True, True, 1),
)


def _divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _crop_to_input(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """
    ``conv(x)`` for a "same"-padded convolution (odd kernel ``k``, padding ``k // 2``, no dilation) with the kernel
    cropped to the taps that can reach ``x``: on an input smaller than the kernel (a 5×5 depthwise kernel on the
    1×1 and 2×2 maps of a 28×28 frame) the outer taps only ever meet the zero padding. Same output, same
    gradients; without the crop the CPU kernels spend most of a training step multiplying padding.
    """
    reach = [min(int(p), int(s) - 1) for p, s in zip(conv.padding, x.shape[2:])]
    if reach == [int(p) for p in conv.padding]:
        return conv._conv_forward(x, conv.weight, conv.bias)
    index = (slice(None), slice(None)) + tuple(
        slice(int(k) // 2 - r, int(k) // 2 + r + 1) for k, r in zip(conv.kernel_size, reach))
    conv_fn = nn.functional.conv2d if x.ndim == 4 else nn.functional.conv3d
    return conv_fn(x, conv.weight[index], conv.bias, conv.stride, reach, conv.dilation, conv.groups)


#: depthwise convolutions on maps of at most this many pixels run as one small matrix product per channel
SMALL_MAP_PIXELS = 16


def _tap_index(h: int, w: int, kernel: tuple, stride: tuple, padding: tuple) -> torch.Tensor:
    """``index[o, i]``: the kernel tap linking output pixel ``o`` to input pixel ``i`` of an ``h×w`` map, or
    ``kh·kw`` (a zero slot) when none does."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    index = torch.full((oh * ow, h * w), kh * kw, dtype=torch.long)
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sh + ky - ph, ox * sw + kx - pw
                    if 0 <= iy < h and 0 <= ix < w:
                        index[oy * ow + ox, iy * w + ix] = ky * kw + kx
    return index


class SameConv2d(nn.Conv2d):
    """
    ``nn.Conv2d`` with "same" padding whose kernel is cropped to inputs smaller than it (:func:`_crop_to_input`).
    When gradients are computed (training), a depthwise convolution on a map of at most :data:`SMALL_MAP_PIXELS`
    pixels (the 4×4, 2×2 and 1×1 maps of a 28×28 frame) runs as one ``(out pixels × in pixels)`` matrix per channel
    gathered from its kernel: the same sums (float rounding aside) without oneDNN's depthwise backward, which
    dominated the training step on such maps (a DAS step at batch 16 on 28³: 231 → 198 ms). Without gradients
    (inference, export) the convolution kernels are faster (ONNX Runtime: 2.5 vs 7 ms at batch 1), so they run.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        depthwise = self.groups == c == self.out_channels and self.weight.shape[1] == 1
        training = torch.is_grad_enabled() and self.weight.requires_grad
        if not (training and depthwise and h * w <= SMALL_MAP_PIXELS and self.dilation == (1, 1)):
            return _crop_to_input(self, x)
        index = _tap_index(h, w, self.kernel_size, self.stride, self.padding).to(x.device)
        taps = torch.cat([self.weight.reshape(c, -1), self.weight.new_zeros(c, 1)], 1)  # C×(kh·kw + 1)
        matrix = taps[:, index]  # C×O×I
        out = torch.einsum("nci,coi->nco", x.reshape(n, c, h * w), matrix)
        oh = (h + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        out = out.reshape(n, c, oh, -1)
        return out if self.bias is None else out + self.bias[:, None, None]


class SameConv3d(nn.Conv3d):
    """``nn.Conv3d`` with "same" padding whose kernel is cropped to inputs smaller than it (:func:`_crop_to_input`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _crop_to_input(self, x)


class ConvNormAct(nn.Sequential):
    """Convolution → batch norm → optional activation (indices 0, 1, 2 as in torchvision)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.Hardswish, norm_momentum: float = 0.1) -> None:
        conv = SameConv2d if spatial_dims == 2 else SameConv3d
        if spatial_dims not in (2, 3) or kernel % 2 == 0:
            conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = [
            conv(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            Norm[Norm.BATCH, spatial_dims](cout, eps=0.001, momentum=norm_momentum),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention with hard-sigmoid gating."""

    def __init__(self, spatial_dims: int, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc1 = Conv[Conv.CONV, spatial_dims](channels, squeeze, 1)
        self.fc2 = Conv[Conv.CONV, spatial_dims](squeeze, channels, 1)
        self.activation = nn.ReLU(inplace=True)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise → squeeze-excite → project (1×1), with a residual when shapes allow."""

    def __init__(self, spatial_dims: int, cin: int, expand: int, cout: int, kernel: int, se: bool, hs: bool,
                 stride: int, norm_momentum: float = 0.1) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        m = norm_momentum
        layers: list[nn.Module] = []
        if expand != cin:
            layers.append(ConvNormAct(spatial_dims, cin, expand, 1, act=act, norm_momentum=m))
        layers.append(ConvNormAct(spatial_dims, expand, expand, kernel, stride, groups=expand, act=act, norm_momentum=m))
        if se:
            layers.append(SqueezeExcitation(spatial_dims, expand, _divisible(expand // 4)))
        layers.append(ConvNormAct(spatial_dims, expand, cout, 1, act=None, norm_momentum=m))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3Small(SavedSettings, nn.Module):
    """
    MobileNetV3-Small. With ``num_classes=0`` it is a feature encoder returning the pooled ``out_features`` (576)
    channels, the frame encoder of :class:`SubsampledClassifier`; otherwise it ends with torchvision's classifier
    (``576 → 1024 → num_classes``).

    Args:
        spatial_dims: 2 for frames (default), 3 for volumes.
        in_channels: input channels.
        num_classes: 0 for features, else the number of outputs.
        dropout: dropout before the last layer of the classifier.
        stem_stride: stride of the first convolution (2 as in the paper; 1 keeps more resolution on 28×28 frames).
        norm_momentum: batch-norm momentum. torchvision trains ImageNet with 0.01; here the default is torch's 0.1,
            because with 0.01 the running statistics stay near their initial values over the few hundred steps of a
            MedMNIST run and the network in ``eval()`` outputs a near-constant prediction.
        pretrained: load torchvision's ImageNet weights (2D only): from ``weights_path`` if given, else downloaded
            from :data:`MOBILENET_V3_SMALL_URL` into the torch hub cache. The first convolution is adapted to
            ``in_channels`` by averaging over RGB.
        weights_path: local file with those weights.

    Shapes: ``N×C×H×W`` (or ``N×C×D×H×W``) → ``N×576`` features or ``N×num_classes`` logits.

    State dict: ``stem_stride`` (no weight's shape records it) is saved with the weights (``settings``); weights
    saved with another are refused.
    """

    settings_hint = "build it with the training run's stem_stride (the bundle's encoder_kwargs, in the model card)"

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 0, dropout: float = 0.2,
                 stem_stride: int = 2, pretrained: bool = False, weights_path: str | None = None,
                 norm_momentum: float = 0.1) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        self.spatial_dims, self.in_channels, self.stem_stride = spatial_dims, in_channels, int(stem_stride)
        layers: list[nn.Module] = [ConvNormAct(spatial_dims, in_channels, 16, 3, stem_stride, norm_momentum=norm_momentum)]
        cin = 16
        for expand, cout, kernel, se, hs, stride in _SMALL_CFG:
            layers.append(InvertedResidual(spatial_dims, cin, expand, cout, kernel, se, hs, stride, norm_momentum))
            cin = cout
        layers.append(ConvNormAct(spatial_dims, cin, 6 * cin, 1, norm_momentum=norm_momentum))
        self.features = nn.Sequential(*layers)
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.out_features = 6 * cin
        self.classifier: nn.Module = nn.Identity()
        if num_classes > 0:
            self.classifier = nn.Sequential(
                nn.Linear(self.out_features, 1024), nn.Hardswish(inplace=True), nn.Dropout(dropout, inplace=True),
                nn.Linear(1024, num_classes),
            )
            self.out_features = num_classes
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        if pretrained:
            self.load_pretrained(weights_path)

    def _settings_tensor(self) -> torch.Tensor:
        """``[stem_stride]`` as int64."""
        return torch.tensor([self.stem_stride], dtype=torch.int64)

    @staticmethod
    def _settings_of(v: list[int]) -> dict:
        return {"stem_stride": v[0]} if len(v) == 1 else {"unreadable": v}

    def load_pretrained(self, weights_path: str | None = None) -> None:
        """Load torchvision's ImageNet weights into ``features`` (and the first classifier layer if present)."""
        if self.spatial_dims != 2:
            raise ValueError("pretrained weights exist only for spatial_dims=2.")
        if weights_path is not None:
            from monai_das.utils.io import read_checkpoint

            if not os.path.isfile(weights_path):
                raise FileNotFoundError(f"pretrained weights file not found: {weights_path}")
            state = read_checkpoint(weights_path)
        else:
            try:
                state = torch.hub.load_state_dict_from_url(MOBILENET_V3_SMALL_URL, map_location="cpu",
                                                           weights_only=True)
            except Exception as e:  # no network, proxy refusal, ...
                target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(MOBILENET_V3_SMALL_URL))
                raise RuntimeError(
                    f"could not download MobileNetV3-Small weights from {MOBILENET_V3_SMALL_URL} ({e}). Offline, "
                    f"put the file at {target} or pass weights_path=."
                ) from e
        stem = state["features.0.0.weight"]
        state["features.0.0.weight"] = stem.mean(1, keepdim=True).repeat(1, self.in_channels, 1, 1)
        own = self.state_dict()
        # the weights, not the settings entry of a monai_das encoder's file (its stem stride is no weight; review)
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and k != self.settings_key}
        missing = [k for k in own if k.startswith("features.") and k not in keep]
        if missing:
            raise ValueError(f"pretrained weights do not match the network: missing {missing[:3]}...")
        self.load_state_dict(keep, strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
