"""VolumeToFrames, UniformTemporalSubsample, RandTemporalSubsample: array vs dict forms, metadata, pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import DataLoader, Dataset, MetaTensor, ThreadDataLoader
from monai.transforms import Compose, EnsureTyped

from monai_das.transforms import (
    RandTemporalSubsample,
    RandTemporalSubsampled,
    UniformTemporalSubsample,
    UniformTemporalSubsampled,
    VolumeToFrames,
    FramePositions,
    VolumeToFramesd,
    subsample_frame_records,
    uniform_indices,
)


def _volume(c=2, d=5, h=6, w=7) -> torch.Tensor:
    return torch.arange(c * d * h * w, dtype=torch.float32).reshape(c, d, h, w)


@pytest.mark.parametrize("axis,shape", [(0, (5, 2, 6, 7)), (1, (6, 2, 5, 7)), (2, (7, 2, 5, 6))])
def test_volume_to_frames(axis, shape):
    vol = _volume()
    out = VolumeToFrames(axis)(vol)
    assert tuple(out.shape) == shape
    t = 3
    expected = [vol[:, t], vol[:, :, t], vol[:, :, :, t]][axis]
    assert torch.equal(out[t], expected)
    d = VolumeToFramesd(["image", "mask"], axis=axis)({"image": vol.numpy(), "mask": vol, "label": 1})
    assert torch.equal(torch.as_tensor(d["image"]), out) and torch.equal(d["mask"], out) and d["label"] == 1
    meta = VolumeToFrames(axis)(MetaTensor(vol, meta={"filename_or_obj": "v.nii"}))
    assert isinstance(meta, MetaTensor) and meta.meta["slice_axis"] == axis and meta.meta["filename_or_obj"] == "v.nii"


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_to_frames_matches_classifier(axis):
    from monai_das.networks import build_classifier

    model = build_classifier("uniform", num_classes=2, in_channels=2, num_frames=6, layout="volume", slice_axis=axis)
    vol = _volume(d=6, h=6, w=6)
    assert torch.equal(model.to_frames(vol[None])[0], VolumeToFrames(axis)(vol))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_to_frames_is_inverted_with_the_spatial_steps_before_it(axis):
    """Compose.inverse goes back through the frames to the volume, then through MONAI's resize and orientation."""
    from monai.transforms import Orientationd, Resized

    affine = torch.diag(torch.tensor([-1.0, 2.0, 1.0, 1.0]))  # an L-to-R flip undone by Orientation
    vol = MetaTensor(torch.rand(1, 10, 12, 8), affine=affine, meta={"filename_or_obj": "v.nii"})
    steps = Compose([Orientationd("image", "RAS", labels=None), Resized("image", (16, 14, 12), mode="area"),
                     VolumeToFramesd("image", axis=axis)])
    out = steps({"image": vol})
    frames = out["image"]
    assert [op["class"] for op in frames.applied_operations] == ["Orientation", "Resize", "VolumeToFrames"]
    assert frames.shape[0] == (16, 14, 12)[axis] and frames.meta["slice_axis"] == axis
    back = steps.inverse(out)["image"]
    assert back.shape == vol.shape and not back.applied_operations and "slice_axis" not in back.meta
    torch.testing.assert_close(back.affine.float(), affine)
    # the array form alone: a permutation, undone exactly
    to_frames = VolumeToFrames(axis)  # MONAI's inverse checks that the instance that ran is the one inverting
    one = to_frames(MetaTensor(_volume()))
    assert torch.equal(to_frames.inverse(one).as_tensor(), _volume())
    with pytest.raises(ValueError, match=r"T×C×H×W frames .*\(2, 5, 6\)"):
        to_frames.inverse(MetaTensor(torch.zeros(2, 5, 6)))
    # frames subsampled after it: said so (it was MONAI's "empty 'applied_operations'" from inside Invertd; T60a)
    kept = UniformTemporalSubsample(3)(to_frames(MetaTensor(_volume())))
    with pytest.raises(ValueError, match=r"subsampled after it .*3 frames kept.*invert the spatial steps before"):
        to_frames.inverse(kept)


@pytest.mark.parametrize("axis", [0, 2])
def test_pending_lazy_operations_are_applied_outside_a_compose(axis):
    """A lazy spatial step called alone leaves its resampling pending; the frames were taken of the data as it was
    (the flip silently lost; trial T63b). Frame subsampling and the adaptive transform apply them too."""
    from monai.transforms import Flip, Resize

    from monai_das.networks import build_classifier
    from monai_das.transforms import AdaptiveSubsample

    vol = MetaTensor(_volume(c=1, d=6, h=6, w=6))
    for step in (Flip(spatial_axis=axis), Resize((6, 8, 4))):
        eager = VolumeToFrames(axis)(step(vol))
        step.lazy = True
        pending = step(vol)
        assert pending.pending_operations
        out = VolumeToFrames(axis)(pending)
        assert out.shape == eager.shape and not out.pending_operations  # (MONAI's lazy resize resamples otherwise)
        assert isinstance(step, Resize) or torch.equal(out.as_tensor(), eager.as_tensor())
        assert [op["class"] for op in out.applied_operations] == [type(step).__name__, "VolumeToFrames"]
    frames = MetaTensor(torch.rand(5, 1, 6, 6))
    lazy_flip = Flip(spatial_axis=0, lazy=True)
    for subsample in (UniformTemporalSubsample(3), RandTemporalSubsample(3)):
        subsample.set_random_state(0) if hasattr(subsample, "set_random_state") else None
        expected = subsample(Flip(spatial_axis=0)(frames))
        subsample.set_random_state(0) if hasattr(subsample, "set_random_state") else None
        assert torch.equal(subsample(lazy_flip(frames)).as_tensor(), expected.as_tensor())
    model = build_classifier("das", num_classes=2, in_channels=1, num_frames=6, keep_ratio=0.5, layout="volume",
                             slice_axis=axis)
    adaptive = AdaptiveSubsample(model, slice_axis=axis)
    flipped = Flip(spatial_axis=1)
    expected = adaptive(flipped(vol))
    flipped.lazy = True
    assert torch.equal(adaptive(flipped(vol)).as_tensor(), expected.as_tensor())


def test_volume_to_frames_errors():
    with pytest.raises(ValueError, match="axis"):
        VolumeToFrames(3)
    with pytest.raises(ValueError, match="4 dimensions"):
        VolumeToFrames(0)(torch.zeros(5, 6, 7))


@pytest.mark.parametrize("t,k", [(28, 14), (28, 7), (64, 32), (10, 3), (5, 5), (7, 1)])
def test_uniform_indices_match_uniform_sampler(t, k):
    from monai_das.networks import UniformSampler

    x = torch.zeros(1, t, 1, 2, 2)
    assert torch.equal(uniform_indices(t, k), UniformSampler(k)(x).indices[0])


def test_uniform_subsample_array_dict_and_meta():
    seq = torch.randn(10, 1, 4, 4)
    out = UniformTemporalSubsample(4)(seq)
    idx = uniform_indices(10, 4)
    assert idx.tolist() == [1, 3, 6, 8] and torch.equal(out, seq[idx])
    d = UniformTemporalSubsampled("image", 4)({"image": MetaTensor(seq)})
    assert torch.equal(d["image"].as_tensor(), out)
    assert d["image_kept_indices"].tolist() == idx.tolist() == d["image"].meta["kept_indices"].tolist()
    np_out = UniformTemporalSubsample(4)(seq.numpy())
    assert torch.equal(torch.as_tensor(np_out), out)
    # k > T repeats frames evenly
    assert uniform_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="T×C×H×W"):
        UniformTemporalSubsample(2)(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="zero frames"):
        UniformTemporalSubsample(2)(torch.zeros(0, 1, 4, 4))
    # a C×D×H×W volume (C = 1, as LoadImage(ensure_channel_first=True) gives it) was read as one frame and returned
    # as 4 copies of itself (trial T63b): refused, naming VolumeToFrames; one frame kept once is fine
    with pytest.raises(ValueError, match=r"one frame \(shape \(1, 10, 12, 14\)\) would be repeated 4 times: is it "
                                         r"a C×D×H×W volume.*VolumeToFrames\(slice_axis\)"):
        UniformTemporalSubsampled("image", 4)({"image": MetaTensor(torch.rand(1, 10, 12, 14))})
    assert UniformTemporalSubsample(1)(torch.ones(1, 1, 4, 4)).shape == (1, 1, 4, 4)


def test_rand_subsample_array_and_dict_agree():
    seq = MetaTensor(torch.randn(20, 1, 3, 3))
    arr = RandTemporalSubsample(6).set_random_state(5)
    dic = RandTemporalSubsampled(["image", "label_seq"], 6).set_random_state(5)
    for _ in range(3):
        a = arr(seq)
        d = dic({"image": seq, "label_seq": seq.clone() * 2})
        idx = a.meta["kept_indices"]
        assert len(idx) == 6 and len(set(idx.tolist())) == 6 and bool((idx[1:] > idx[:-1]).all())
        assert torch.equal(d["image"].as_tensor(), a.as_tensor())
        assert torch.equal(d["image_kept_indices"], idx) and torch.equal(d["label_seq_kept_indices"], idx)
        assert torch.equal(d["label_seq"].as_tensor(), 2 * a.as_tensor())
        assert torch.equal(a.as_tensor(), seq.as_tensor()[idx])
    draws = {tuple(RandTemporalSubsample(6)(seq).meta["kept_indices"].tolist()) for _ in range(10)}
    assert len(draws) > 1
    # randomize=False on a shorter sequence than the draw's: an IndexError from inside torch before (trial T63b)
    arr(torch.rand(40, 1, 2, 2))
    with pytest.raises(ValueError, match=r"reuses frames .* drawn for a longer sequence, but this one has 8 frames"):
        arr(torch.rand(8, 1, 2, 2), randomize=False)


def test_rand_subsample_segment_mode_and_errors():
    t = RandTemporalSubsample(4, mode="segment").set_random_state(0)
    for _ in range(10):
        t(torch.zeros(12, 1, 2, 2))
        idx = t._indices.tolist()
        assert [i // 3 for i in idx] == [0, 1, 2, 3]  # one frame from each segment of 3
    with pytest.raises(ValueError, match="k must be <= T"):
        RandTemporalSubsample(8)(torch.zeros(5, 1, 2, 2))
    with pytest.raises(ValueError, match="mode"):
        RandTemporalSubsample(2, mode="dense")
    with pytest.raises(ValueError, match="same number of frames"):
        RandTemporalSubsampled(["a", "b"], 2)({"a": torch.zeros(5, 1, 2, 2), "b": torch.zeros(6, 1, 2, 2)})


def test_source_indices_compose():
    seq = MetaTensor(torch.arange(30.0).reshape(30, 1, 1, 1))
    step1 = UniformTemporalSubsample(10)(seq)
    step2 = RandTemporalSubsample(4).set_random_state(1)(step1)
    src = step2.meta["source_indices"]
    assert torch.equal(src, step1.meta["kept_indices"][step2.meta["kept_indices"]])
    assert step2.flatten().tolist() == src.float().tolist()  # values = original frame positions


@pytest.mark.parametrize("loader", [DataLoader, ThreadDataLoader])
def test_in_compose_dataset_and_loaders(loader):
    data = [{"image": np.random.rand(1, 12, 8, 8).astype(np.float32), "label": i % 2} for i in range(4)]
    xf = Compose([
        EnsureTyped("image"),
        VolumeToFramesd("image", axis=0),
        UniformTemporalSubsampled("image", 8),
        RandTemporalSubsampled("image", 4),
    ])
    xf.set_random_state(0)
    batch = next(iter(loader(Dataset(data, xf), batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 4, 1, 8, 8)
    assert batch["image_kept_indices"].shape == (4, 4)
    assert batch["image"].meta["source_indices"].shape == (4, 4)
    assert int(batch["image"].meta["source_indices"].max()) < 12


@pytest.mark.parametrize("bad", [2.7, True, 0, "4"])
def test_subsample_counts_are_whole_numbers(bad):
    """2.7 frames were truncated to 2 and True to 1 (the network refuses k=2.5): refused, naming the value."""
    for cls in (UniformTemporalSubsample, RandTemporalSubsample):
        with pytest.raises(ValueError, match=r"num_samples must be an integer >= 1, got"):
            cls(bad)


def test_affine_source_indices_ties_do_not_depend_on_storage_direction():
    """24 slices resized to 20: frames half-way between two source slices took round()'s even index in the file's
    own order, so a file and its z-flipped copy (same anatomy) named other slices; now one rule of the network's axis."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Resize

    from monai_das.transforms import affine_source_indices

    data = torch.rand(1, 4, 4, 24)
    up = torch.eye(4, dtype=torch.float64)
    down = up.clone()
    down[2, 2], down[2, 3] = -1.0, 23.0  # the same world positions, slices stored top to bottom
    answers = []
    for array, affine in ((data, up), (data.flip(-1), down)):
        img = Resize((4, 4, 20), mode="area")(Orientation("RAS")(MetaTensor(array, affine=affine)))
        src, axis = affine_source_indices(affine, img.affine, img.shape[1:], (4, 4, 24), 2)
        assert axis == 2
        answers.append(src if affine is up else [23 - i for i in src])  # in the first file's numbering
    assert answers[0] == answers[1]


def test_per_frame_records_follow_the_subsampling():
    """SourceIndicesd's file slice numbers and MapEvidenced's evidence positions number the T frames; after a
    subsampling the network numbers the k kept ones (trial 60a: the predictions' source frames were 22;19;16;13 for
    the file slices 20;14;8;2, and evidence_kept was counted against positions of the 24 frames). The dictionary
    subsamplings keep them in step; evidence still in the file's numbering (not mapped yet, or a datalist's empty
    list) is left alone (review); a record of another length is refused, naming it."""
    frames = torch.rand(8, 1, 4, 4)
    source = torch.arange(8).flip(0)  # a file stored the other way round: slice 7 first
    evidence = FramePositions([2, 3, -1, -1, -1, -1, -1, -1])
    d = UniformTemporalSubsampled("image", 4)({"image": frames, "source_indices": source, "evidence": evidence})
    idx = d["image_kept_indices"].tolist()
    assert idx == uniform_indices(8, 4).tolist()
    assert d["source_indices"].tolist() == source[idx].tolist()
    shown = [j for j, i in enumerate(idx) if i in (2, 3)]
    assert d["evidence"] == shown + [-1] * (4 - len(shown)) and isinstance(d["evidence"], FramePositions)
    r = RandTemporalSubsampled(["image", "seg"], 3).set_random_state(1)
    d = r({"image": frames, "seg": frames, "source_indices": source, "evidence": evidence})
    idx = d["image_kept_indices"].tolist()
    assert d["source_indices"].tolist() == source[idx].tolist() and len(d["evidence"]) == 3
    assert [idx[j] for j in d["evidence"] if j >= 0] == [i for i in idx if i in (2, 3)]
    # k > T repeats frames: a repeated evidence frame counts once
    d = UniformTemporalSubsampled("image", 5)({"image": frames[:3], "evidence": FramePositions([0, -1, -1])})
    assert d["image_kept_indices"].tolist() == uniform_indices(3, 5).tolist()
    assert sum(e >= 0 for e in d["evidence"]) == 1 and len(d["evidence"]) == 5
    for raw in ([5], [], [1, 2, 3, 4, 5, 6, 7, 0]):  # the file's numbering: mapped later (a clip through its meta)
        assert UniformTemporalSubsampled("image", 4)({"image": frames, "evidence": raw})["evidence"] == raw
    plain = UniformTemporalSubsampled("image", 4, record_keys=(), evidence_keys=())(
        {"image": frames, "source_indices": source, "evidence": evidence})
    assert plain["source_indices"] is source and plain["evidence"] is evidence  # opted out: left alone
    with pytest.raises(ValueError, match=r"UniformTemporalSubsampled: 'evidence' lists 3 positions for a sequence "
                                         r"of 8"):
        UniformTemporalSubsampled("image", 4)({"image": frames, "evidence": FramePositions([0, 1, 2])})
    with pytest.raises(ValueError, match=r"'source_indices' holds 9 values for a sequence of 8 frames"):
        subsample_frame_records({"source_indices": torch.arange(9)}, [0, 1], 8, "x")
