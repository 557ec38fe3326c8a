"""
The bundles' training augmentation (``train#random_transforms``): every frame of an item gets the same in-plane
transform, so frames stay frames and their order is untouched (a volume constant along its slice axis stays constant
along it, for each slice axis); the frame planes are really transformed; ``augment_prob 0`` switches it off; validation
preprocessing is deterministic. Off by default in the volume bundle (its rule failed, benchmarks/README.md,
"Training augmentation"), so the tests switch it on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Randomizable

REPO = Path(__file__).resolve().parents[2]


def _parser(bundle: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _random_part(parser: ConfigParser):
    from monai.transforms import Compose

    return Compose(parser.get_parsed_content("train#random_transforms"))


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_volume_augmentation_moves_every_slice_alike(slice_axis):
    parser = _parser("das_volume_classification", slice_axis=slice_axis, augment_prob=0.5, num_train=4, num_val=4)
    assert parser.get_parsed_content("info")["slice_axis"] == slice_axis
    transform = _random_part(parser)
    transform.set_random_state(0)
    # a bar in the slice plane, the same on every slice: constant along the slice axis
    plane = torch.zeros(20, 20)
    plane[6:12, 3:17] = 1.0
    volume = plane[None].expand(16, 20, 20).movedim(0, slice_axis)[None].clone()  # 1×D×H×W
    outs = [transform({"image": volume})["image"] for _ in range(12)]
    for out in outs:
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == volume.shape
        slices = out[0].movedim(slice_axis, 0)
        assert torch.allclose(slices, slices[:1].expand_as(slices), atol=1e-5)  # every slice alike
    moved = [o for o in outs if not torch.allclose(o, volume, atol=1e-3)]
    assert 0 < len(moved) < len(outs)  # applied to some items, not all (probability 0.5 each)


def test_video_augmentation_moves_every_frame_and_channel_alike():
    parser = _parser("das_video_classification", augment_prob=0.5, num_train=4, num_val=4)
    transform = _random_part(parser)
    transform.set_random_state(0)
    frame = torch.zeros(3, 24, 24)
    frame[1, 8:14, 4:20] = 1.0  # one colour channel set: the others must stay empty
    clip = frame[None].expand(10, 3, 24, 24).clone()  # T×C×H×W
    outs = [transform({"image": clip})["image"] for _ in range(12)]
    for out in outs:
        assert out.shape == clip.shape and out.dtype == torch.float32
        assert torch.allclose(out, out[:1].expand_as(out), atol=1e-5)  # every frame alike
        assert out[:, 0].abs().max() <= 0.06 and out[:, 2].abs().max() <= 0.06  # at most the intensity shift
    assert any(not torch.allclose(o, clip, atol=1e-3) for o in outs)


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
def test_augment_prob_zero_switches_it_off_and_validation_is_deterministic(bundle):
    parser = _parser(bundle, augment_prob=0.0, num_train=4, num_val=4)
    transform = _random_part(parser)
    item = torch.rand(1, 8, 12, 12) if "volume" in bundle else torch.rand(8, 1, 12, 12)
    assert all(torch.equal(transform({"image": item.clone()})["image"], item) for _ in range(5))
    validation = parser.get_parsed_content("validate#preprocessing")
    assert not [t for t in validation.transforms if isinstance(t, Randomizable)]
