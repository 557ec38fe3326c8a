"""AdaptiveSubsample(d): a trained sampler as a preprocessing step; output equals the sampler's own selection."""

from __future__ import annotations

import pytest
import torch

from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, EnsureTyped

from monai_das.data import SyntheticVolumeDataset
from monai_das.networks import build_classifier, get_sampler
from monai_das.transforms import (
    AdaptiveSubsample,
    AdaptiveSubsampled,
    UniformTemporalSubsample,
    VolumeToFrames,
)


@pytest.fixture(scope="module")
def das():
    torch.manual_seed(0)
    return get_sampler("das", num_samples=4, in_channels=1)


def test_output_equals_sampler_selection(das):
    seq = torch.rand(16, 1, 12, 12)
    das.train()
    out = AdaptiveSubsample(das)(MetaTensor(seq, meta={"filename_or_obj": "x"}))
    assert das.training  # mode restored
    das.eval()
    with torch.no_grad():
        ref = das(seq[None])
    assert tuple(out.shape) == (4, 1, 12, 12) and not out.requires_grad
    assert torch.equal(out.as_tensor(), ref.frames[0])
    assert torch.equal(out.meta["kept_indices"], ref.indices[0])
    assert torch.equal(out.as_tensor(), seq[ref.indices[0]])  # the frames are original frames
    assert out.meta["filename_or_obj"] == "x"


def test_dict_form_agrees_and_volume_input(das):
    vol = torch.rand(1, 16, 12, 12)  # C×D×H×W
    arr = AdaptiveSubsample(das, slice_axis=1)
    d = AdaptiveSubsampled(["image"], das, slice_axis=1)({"image": MetaTensor(vol), "label": 1})
    a = arr(vol)
    assert tuple(a.shape) == (4, 1, 16, 12)
    assert torch.equal(d["image"].as_tensor(), a)
    assert torch.equal(d["image_kept_indices"], arr.last_indices)
    assert torch.equal(d["image"].meta["kept_indices"], arr.last_indices)
    frames = VolumeToFrames(1)(vol)
    with torch.no_grad():
        assert torch.equal(a, das.eval()(frames[None]).frames[0])


def test_classifier_sampler_and_unwrapping():
    model = build_classifier("das", num_classes=2, in_channels=1, num_frames=12, keep_ratio=0.25)
    seq = torch.rand(12, 1, 10, 10)
    by_sampler = AdaptiveSubsample(model.sampler)(seq)
    by_model = AdaptiveSubsample(model)(seq)  # an object with .sampler is unwrapped
    model.eval()
    with torch.no_grad():
        ref = model.sample(seq.movedim(0, 1)[None])  # volume layout: B×C×D×H×W
    assert by_sampler.shape == (3, 1, 10, 10)
    assert torch.equal(by_sampler, by_model) and torch.equal(by_sampler, ref.frames[0])
    # a volume classifier built for another slice axis: refused (its sampler ran silently on the other axis; T63b)
    along_h = build_classifier("das", num_classes=2, num_frames=10, num_samples=3, slice_axis=1)
    with pytest.raises(ValueError, match=r"slice_axis=0, but the classifier was built for slice_axis=1"):
        AdaptiveSubsample(along_h, slice_axis=0)
    vol = torch.rand(1, 12, 10, 14)
    with pytest.raises(ValueError, match=r"give slice_axis \(1, the classifier's\)"):
        AdaptiveSubsample(along_h)(vol)
    along_h.eval()
    with torch.no_grad():
        assert torch.equal(AdaptiveSubsample(along_h, slice_axis=1)(vol), along_h.sample(vol[None]).frames[0])


def test_a_wrapped_classifier_and_float64_frames():
    """A DistributedDataParallel/DataParallel-wrapped classifier ran whole as the sampler (a channel error naming
    neither), and float64 frames came back rounded through the sampler's float32 P·x (trial T67f)."""
    model = build_classifier("das", num_classes=2, in_channels=1, num_frames=12, keep_ratio=0.25)
    seq = torch.rand(12, 1, 10, 10, dtype=torch.float64)
    kept, indices = AdaptiveSubsample(torch.nn.DataParallel(model)).subsample(seq)
    assert torch.equal(indices, AdaptiveSubsample(model).subsample(seq.float())[1])
    assert kept.dtype == torch.float64 and torch.equal(kept, seq[indices])  # the input's own frames, exactly


def test_uniform_sampler_matches_uniform_transform():
    seq = torch.rand(20, 1, 4, 4)
    assert torch.equal(AdaptiveSubsample(get_sampler("uniform", 5))(seq), UniformTemporalSubsample(5)(seq))


def test_errors(das):
    with pytest.raises(ValueError, match="T×C×H×W"):
        AdaptiveSubsample(das)(torch.rand(16, 12, 12))
    with pytest.raises(ValueError, match="floating point"):
        AdaptiveSubsample(das)(torch.zeros(16, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="k must be <= T"):
        AdaptiveSubsample(das)(torch.rand(3, 1, 4, 4))
    # a C×D×H×W volume without slice_axis is read as one frame of D channels: the error says what to give (trial W)
    with pytest.raises(ValueError, match=r"T=1 frames.*\(1, 16, 12, 12\) is read as T×C×H×W .* give slice_axis"):
        AdaptiveSubsample(das)(torch.rand(1, 16, 12, 12))
    with pytest.raises(ValueError, match="nn.Module"):
        AdaptiveSubsample(lambda x: x)


def test_in_front_of_a_downstream_network(das):
    from monai.networks.nets import DenseNet121

    ds = SyntheticVolumeDataset(4, size=16, transform=Compose([
        EnsureTyped("image"), AdaptiveSubsampled("image", das, slice_axis=0),
    ]))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    assert batch["image"].shape == (2, 4, 1, 16, 16) and batch["image_kept_indices"].shape == (2, 4)
    # e.g. the kept frames as channels of a 2D MONAI network
    net = DenseNet121(spatial_dims=2, in_channels=4, out_channels=2, init_features=8, growth_rate=4,
                      block_config=(2, 2))
    assert net(batch["image"][:, :, 0]).shape == (2, 2)
    # plain Dataset of dicts too
    item = Dataset([{"image": torch.rand(8, 1, 6, 6)}], AdaptiveSubsampled("image", das))[0]
    assert item["image"].shape == (4, 1, 6, 6)


def test_every_key_keeps_the_frames_chosen_on_the_first(das):
    vol, seg = torch.rand(1, 16, 12, 12), (torch.rand(1, 16, 12, 12) > 0.5).float()
    t = AdaptiveSubsampled(["image", "seg"], das, slice_axis=0)
    d = t({"image": MetaTensor(vol), "seg": MetaTensor(seg)})
    idx = d["image_kept_indices"]
    assert torch.equal(idx, AdaptiveSubsample(das, slice_axis=0).subsample(vol)[1])
    assert torch.equal(d["seg_kept_indices"], idx) and torch.equal(d["seg"].meta["kept_indices"], idx)
    assert torch.equal(d["seg"].as_tensor(), VolumeToFrames(0)(seg)[idx])  # the image's slices, not its own pick
    with pytest.raises(ValueError, match=r"same number of frames.*'seg': 15"):
        t({"image": vol, "seg": seg[:, :15]})
    # the file's slice numbers (SourceIndicesd) follow the chosen slices
    d = t({"image": MetaTensor(vol), "seg": MetaTensor(seg), "source_indices": torch.arange(100, 116)})
    assert d["source_indices"].tolist() == (d["image_kept_indices"] + 100).tolist()


def test_thread_pools_get_the_one_at_a_time_selection():
    # CacheDataset fills its cache in a thread pool: the pick (and the indices stored with it) must not depend on
    # another thread's call, nor on the sampler being put back into training mode by another thread meanwhile
    from monai.data import CacheDataset

    torch.manual_seed(1)
    sampler = get_sampler("das", num_samples=3, in_channels=1).train()
    items = [{"image": torch.rand(1, 12, 8, 8)} for _ in range(24)]
    t = AdaptiveSubsampled("image", sampler, slice_axis=0)
    serial = [t(dict(i)) for i in items]
    cached = CacheDataset(items, t, cache_rate=1.0, num_workers=4, progress=False)
    for s, c in zip(serial, cached):
        assert torch.equal(c["image_kept_indices"], s["image_kept_indices"])
        assert torch.equal(c["image"], s["image"])
    assert sampler.training


def test_a_fork_while_another_thread_samples_does_not_deadlock_the_child(das):
    """DataLoader workers fork: a sampler lock held by another thread at that moment would stay held in the child."""
    import multiprocessing as mp
    import sys
    import threading

    from monai_das.transforms.adaptive import _sampler_lock

    if sys.platform != "linux":
        pytest.skip("fork is the Linux default")
    seq = torch.rand(16, 1, 8, 8)
    held, release = threading.Event(), threading.Event()

    def worker():  # as a DataLoader worker: one intra-op thread (OpenMP's pool does not survive a fork)
        torch.set_num_threads(1)
        AdaptiveSubsample(das)(seq)

    def hold():
        with _sampler_lock(das):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        ctx = mp.get_context("fork")
        child = ctx.Process(target=worker)
        child.start()
        child.join(60)
        alive = child.is_alive()
        if alive:
            child.kill()
    finally:
        release.set()
        t.join()
    assert not alive and child.exitcode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cuda_device_without_cuda_is_refused_when_built(das):
    """It was a bare 'Torch not compiled with CUDA enabled' at the first call."""
    with pytest.raises(ValueError, match="device 'cuda': CUDA is not available on this machine"):
        AdaptiveSubsample(das, device="cuda")
