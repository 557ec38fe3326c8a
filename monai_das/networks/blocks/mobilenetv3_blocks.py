"""The blocks of MobileNetV3 (Howard et al., ICCV 2019), 2D or 3D: "same"-padded convolutions whose kernels are
cropped to maps smaller than them, convolution-norm-activation, squeeze-excitation and the inverted residual."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm, Pool

__all__ = ["SameConv2d", "SameConv3d", "ConvNormAct", "SqueezeExcitation", "InvertedResidual", "SMALL_MAP_PIXELS",
           "make_divisible"]


def make_divisible(v: float, divisor: int = 8) -> int:
    """``v`` rounded to a multiple of ``divisor``, never more than 10 % below it (torchvision's rule for widths)."""
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
        layers.append(ConvNormAct(spatial_dims, expand, expand, kernel, stride, groups=expand, act=act,
                                  norm_momentum=m))
        if se:
            layers.append(SqueezeExcitation(spatial_dims, expand, make_divisible(expand // 4)))
        layers.append(ConvNormAct(spatial_dims, expand, cout, 1, act=None, norm_momentum=m))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out
