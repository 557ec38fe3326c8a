"""MobileNetV3-Small (Howard et al., ICCV 2019) in MONAI style, 2D or 3D, any number of input channels."""

from __future__ import annotations

import os

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from monai_das.networks.blocks.mobilenetv3_blocks import ConvNormAct, InvertedResidual
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
