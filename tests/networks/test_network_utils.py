"""``to_frames``: the one rule from a batched network input to its frame sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_das.networks import build_classifier
from monai_das.networks.utils import check_finite, frame_axis, network_device, to_frames
from monai_das.transforms import volume_to_frames


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume(axis):
    x = torch.rand(2, 3, 5, 6, 7)
    seq = to_frames(x, "volume", axis)
    assert seq.shape == (2, [5, 6, 7][axis], 3, *[s for i, s in enumerate((5, 6, 7)) if i != axis])
    for t in range(seq.shape[1]):
        assert torch.equal(seq[:, t], x.select(2 + axis, t))
    assert torch.equal(seq[1], volume_to_frames(x[1], axis))  # the unbatched transform agrees
    assert seq.data_ptr() == x.data_ptr()  # a view


def test_video_and_errors():
    x = torch.rand(2, 5, 3, 8, 8)
    assert to_frames(x, "video", 2) is x
    with pytest.raises(ValueError, match="layout"):
        to_frames(x, "movie", 0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_frame_axis(axis):
    """T's dimension in one item (``C×D×H×W``, ``T×C×H×W``) and in a grid without channels, as ``to_frames``."""
    x = torch.rand(1, 3, 5, 6, 7)
    assert to_frames(x, "volume", axis).shape[1] == x.shape[1:][frame_axis("volume", axis)] == [5, 6, 7][axis]
    assert (5, 6, 7)[frame_axis("volume", axis, channels=False)] == [5, 6, 7][axis]
    assert frame_axis("video", axis) == frame_axis("video", axis, channels=False) == 0


@pytest.mark.parametrize("array", [torch.tensor, np.array])
def test_check_finite(array):
    """NaN/Inf refused with one message shape; finite values whose sum overflows pass (the element-wise fallback)."""
    check_finite(array([3e38, 3e38], dtype=torch.float32 if array is torch.tensor else np.float32), "big")
    check_finite(array([1, 2]), "ints")
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=r"^'x' contains NaN or infinite values \(shape\)\.$"):
            check_finite(array([0.0, bad]), "'x'", " (shape)")
    with pytest.raises(ValueError, match=r"^input contains NaN or Inf values\.$"):
        check_finite(array([float("nan")]), "input", inf="Inf")


@pytest.mark.parametrize("array", [torch.tensor, np.array])
def test_check_finite_max_abs(array):
    """With ``max_abs`` finite values beyond it are refused, naming the shape and the largest ``|x|``; NaN and Inf
    anywhere are still named as such (a NaN after a finite value too: not Python's ``max``)."""
    check_finite(array([-5.0, 2.0]), "'x'", max_abs=5.0)
    for values in ([-5.0, 2.0], [2.0, 5.0]):
        with pytest.raises(ValueError, match=r"^'x' of shape \(2,\) has values up to \|x\| = 5: why\.$"):
            check_finite(array(values), "'x'", max_abs=4.0, beyond=": why")
    with pytest.raises(ValueError, match=r"^'x' of shape \(1, 2\) has values up to"):  # as its caller gave it
        check_finite(array([-5.0, 2.0]), "'x'", max_abs=4.0, shape=(1, 2))
    for values in ([float("nan"), 0.0], [0.0, float("nan")], [1e30, -float("inf")]):
        with pytest.raises(ValueError, match=r"^input contains NaN or Inf values\.$"):
            check_finite(array(values), "input", inf="Inf", max_abs=4.0)


def test_network_device():
    """The first parameter's device, else the first buffer's (a parameter-free module), else ``default``."""
    meta = torch.nn.Linear(2, 2, device="meta")
    assert network_device(meta) == torch.device("meta")
    buffered = torch.nn.Module()
    buffered.register_buffer("kernel", torch.zeros(3, device="meta"), persistent=False)
    assert network_device(buffered) == torch.device("meta")  # no parameter: its buffer's device
    buffered.weight = torch.nn.Parameter(torch.zeros(1))
    assert network_device(buffered) == torch.device("cpu")  # a parameter first
    assert network_device(torch.nn.Identity()) == torch.device("cpu")
    assert network_device(torch.nn.ReLU(), default="meta") == torch.device("meta")
    assert network_device(torch.nn.Sequential(torch.nn.ReLU(), meta)) == torch.device("meta")  # the first one inside


@pytest.mark.parametrize("axis", [0, 2])
def test_classifier_uses_it(axis):
    net = build_classifier("uniform", 2, num_frames=[6, 8, 10][axis], slice_axis=axis).eval()
    x = torch.rand(1, 1, 6, 8, 10)
    assert torch.equal(net.to_frames(x), to_frames(x, "volume", axis))
    scripted = torch.jit.script(to_frames)
    assert torch.equal(scripted(x, "volume", axis), to_frames(x, "volume", axis))


def test_preserved_modes():
    """Every submodule back in its own mode, also after an exception; MONAI's eval_mode alone trains them all."""
    from monai.networks.utils import eval_mode

    from monai_das.networks.utils import preserved_modes

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2)).train()
    net[1].eval()
    with eval_mode(net):
        pass
    assert net[1].training  # what preserved_modes is for
    net[1].eval()
    with pytest.raises(RuntimeError, match="boom"), preserved_modes(net), eval_mode(net):
        assert not net.training
        raise RuntimeError("boom")
    assert net.training and net[0].training and not net[1].training
