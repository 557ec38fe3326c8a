import numpy as np
import pytest
import torch

from monai.transforms import Affine, Compose, RandAffined

from monai_das.handlers.resume import RandomStates
from monai_das.transforms import RandFrameAffine, RandFrameAffined, frame_affine


def _monai_affine(img, angle, scales, axis, mode="bilinear", padding_mode="zeros"):
    rotate, scale = [0.0] * 3, [1.0] * 3
    rotate[axis] = angle
    p, q = (a for a in (0, 1, 2) if a != axis)
    scale[p], scale[q] = scales
    return Affine(rotate_params=rotate, scale_params=scale, mode=mode, padding_mode=padding_mode, image_only=True)(img)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_frame_affine_equals_monai_affine(axis):
    img = torch.rand(2, 20, 24, 28, generator=torch.Generator().manual_seed(axis))
    for angle, scales in ((0.2, (1.07, 0.93)), (-0.26, (0.9, 1.1))):
        ref = torch.as_tensor(_monai_affine(img, angle, scales, axis))
        out = frame_affine(img, angle, scales, axis)
        assert out.shape == img.shape and out.dtype == torch.float32
        assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
        assert not torch.allclose(out, img, atol=1e-2)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
def test_frame_affine_pads_as_monai_affine(mode, padding_mode):
    # trial R70e: "reflection" reflected about the border pixels' centres (align_corners=True), MONAI's Affine about
    # the image's edges: up to 0.99 apart near the border of a non-square 7×9×11 volume
    img = torch.rand(2, 7, 9, 11, generator=torch.Generator().manual_seed(1))
    for axis in (0, 1, 2):
        ref = torch.as_tensor(_monai_affine(img, 0.4, (1.2, 0.9), axis, mode, padding_mode))
        out = frame_affine(img, 0.4, (1.2, 0.9), axis, mode, padding_mode)
        assert torch.allclose(out, ref, atol=1e-5), (axis, (out - ref).abs().max())


def test_frame_affine_on_a_clip_moves_nothing_across_frames():
    clip = torch.zeros(10, 3, 16, 16)  # T×C×H×W, frames read as channels
    clip[4, 1, 6:10, 6:10] = 1.0
    out = frame_affine(clip, 0.3, (1.05, 0.95), frame_axis=0)
    assert torch.allclose(out, torch.as_tensor(_monai_affine(clip, 0.3, (1.05, 0.95), 0)), atol=1e-5)
    mass = out.abs().sum(dim=(2, 3))
    assert mass[4, 1] > 10 and mass.sum() == pytest.approx(mass[4, 1].item())


def test_rand_frame_affine_draws_within_range_and_repeats_with_a_seed():
    t = RandFrameAffine(prob=1.0, rotate_range=0.26, scale_range=0.1, frame_axis=2).set_random_state(3)
    img = torch.rand(1, 12, 12, 8)
    first = t(img)
    angle, scales = t.angle, t.scales
    assert abs(angle) <= 0.26 and all(0.9 <= s <= 1.1 for s in scales)
    assert torch.equal(first, frame_affine(img, angle, scales, 2))
    t.set_random_state(3)
    assert torch.equal(t(img), first)
    assert not torch.equal(t(img), first)
    never = RandFrameAffine(prob=0.0, rotate_range=0.26, scale_range=0.1)
    assert torch.equal(never(img), img)
    identity = RandFrameAffine(prob=1.0)
    assert torch.allclose(identity(img), img, atol=1e-5)


def test_rand_frame_affine_has_the_law_of_rand_affine():
    """Over many draws, the probability of transforming and the parameter ranges match MONAI's RandAffine's."""
    t = RandFrameAffine(prob=0.5, rotate_range=0.2, scale_range=0.1, frame_axis=0).set_random_state(0)
    done, angles, scales = 0, [], []
    for _ in range(2000):
        t.randomize()
        if t._do_transform:
            done += 1
            angles.append(t.angle)
            scales.extend(t.scales)
    assert 0.45 < done / 2000 < 0.55
    assert -0.2 <= min(angles) < -0.19 and 0.19 < max(angles) <= 0.2
    assert 0.9 <= min(scales) < 0.905 and 1.095 < max(scales) <= 1.1


def test_rand_frame_affined_same_affine_for_every_key_and_nearest_labels():
    img = torch.rand(1, 6, 16, 16)
    seg = (torch.rand(1, 6, 16, 16) > 0.5).float() * 3
    t = RandFrameAffined(
        keys=("image", "seg"), prob=1.0, rotate_range=0.3, scale_range=0.1, frame_axis=0, mode=("bilinear", "nearest")
    ).set_random_state(0)
    d = t({"image": img, "seg": seg, "label": 1})
    angle, scales = t.frame_affine.angle, t.frame_affine.scales
    assert abs(angle) > 0 and d["label"] == 1
    assert torch.equal(d["image"], frame_affine(img, angle, scales, 0))
    assert torch.equal(d["seg"], frame_affine(seg, angle, scales, 0, mode="nearest"))
    assert set(torch.unique(d["seg"]).tolist()) <= {0.0, 3.0}
    off = RandFrameAffined(keys="image", prob=0.0, rotate_range=0.3)
    assert torch.equal(off({"image": img})["image"], img)


def test_frame_affine_reproduces_rand_affined():
    """The bundles' former augmentation (RandAffined rotating about the slice axis, scaling in-plane) and this one
    give equal outputs for equal parameters: decode the matrix RandAffined used and feed it to frame_affine."""
    img = torch.rand(1, 14, 16, 18)
    for seed in range(3):
        ref = RandAffined(
            keys="image", prob=1.0, rotate_range=[0.0, 0.26, 0.0], scale_range=[0.1, 0.0, 0.1], padding_mode="zeros"
        )
        ref.set_random_state(seed)
        out = torch.as_tensor(ref({"image": img})["image"])
        used = np.asarray(ref.rand_affine.rand_affine_grid.get_transformation_matrix())[np.ix_((0, 2), (0, 2))]
        scales = np.linalg.norm(used, axis=0)
        angle = float(np.arctan2(used[0, 1] / scales[1], used[0, 0] / scales[0]))
        assert abs(angle) > 1e-3
        assert torch.allclose(frame_affine(img, angle, tuple(scales), frame_axis=1), out, atol=1e-5)


def test_resume_state_holds_both_generators():
    t = RandFrameAffined(keys="image", prob=0.5, rotate_range=0.3, scale_range=0.1)
    states = RandomStates(Compose([t]))
    assert [type(s).__name__ for s in states.transforms] == ["Compose", "RandFrameAffined", "RandFrameAffine"]
    img = torch.rand(1, 6, 12, 12)
    t.set_random_state(1)
    for _ in range(3):
        t({"image": img})
    saved = states.state_dict()
    expected = [t({"image": img})["image"] for _ in range(4)]
    t.set_random_state(99)
    states.load_state_dict(saved)
    assert all(torch.equal(t({"image": img})["image"], e) for e in expected)


def test_bad_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"\(6, 12, 12\)"):
        RandFrameAffine(prob=1.0)(torch.rand(6, 12, 12))
    with pytest.raises(ValueError, match="frame_axis"):
        RandFrameAffine(frame_axis=3)
    with pytest.raises(ValueError, match="scale_range"):
        RandFrameAffine(scale_range=1.5)
    with pytest.raises(ValueError, match="padding_mode"):
        frame_affine(torch.rand(1, 4, 8, 8), 0.1, (1.0, 1.0), padding_mode="constant")
    assert np.isfinite(frame_affine(torch.rand(1, 1, 1, 5), 0.1, (1.0, 1.0), 0).numpy()).all()


def test_pending_lazy_operations_are_applied_first():
    """A lazy Flip called alone before RandFrameAffine: its flip was silently dropped (convert_to_tensor of the data
    as it was; review R67d), as VolumeToFrames' was before (trial T63b)."""
    from monai.data import MetaTensor
    from monai.transforms import Flip

    frames = MetaTensor(torch.rand(4, 1, 8, 8))
    pending = Flip(spatial_axis=1, lazy=True)(frames)
    assert pending.pending_operations
    never = RandFrameAffine(prob=0.0)  # no affine drawn: what comes out is what went in, flipped
    torch.testing.assert_close(never(pending), Flip(spatial_axis=1)(frames).as_tensor())
