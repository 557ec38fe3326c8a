import pytest
import torch

from monai_das.networks import SAMPLERS, build_classifier, num_kept


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_volume_forward_backward(method):
    torch.manual_seed(0)
    net = build_classifier(method, num_classes=3, num_frames=8, keep_ratio=0.5)
    x = torch.rand(2, 1, 8, 16, 16)
    y = net(x)
    assert y.shape == (2, 3)
    y.sum().backward()
    out = net.sample(x)
    assert out.frames.shape[1] == (8 if method == "full" else 4)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_axis(axis):
    net = build_classifier("uniform", 2, num_frames=[6, 8, 10][axis], slice_axis=axis).eval()
    x = torch.rand(1, 1, 6, 8, 10)
    seq = net.to_frames(x)
    assert seq.shape[1] == [6, 8, 10][axis]
    out = net.sample(x)
    # the kept frames are the slices of the volume along the axis
    for j, t in enumerate(out.indices[0].tolist()):
        assert torch.equal(out.frames[0, j], x[0].select(1 + axis, t))
    assert net(x).shape == (1, 2)


def test_video_layout():
    net = build_classifier("das", 3, num_frames=10, in_channels=3, layout="video")
    assert net(torch.rand(2, 10, 3, 16, 16)).shape == (2, 3)


def test_bad_input():
    net = build_classifier("das", 2, num_frames=8)
    with pytest.raises(ValueError, match="5D input"):
        net(torch.rand(1, 8, 16, 16))
    with pytest.raises(ValueError, match="channel"):
        net(torch.rand(1, 2, 8, 16, 16))
    with pytest.raises(ValueError, match="k=4"):
        net(torch.rand(1, 1, 3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        net(torch.full((1, 1, 8, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="layout"):
        build_classifier("das", 2, num_frames=8, layout="movie")
    with pytest.raises(ValueError, match="keep_ratio"):
        build_classifier("das", 2, num_frames=8, keep_ratio=0.0)


def test_num_kept():
    assert num_kept(28, 0.5) == 14 and num_kept(64, 0.25) == 16 and num_kept(3, 0.01) == 1


@pytest.mark.parametrize("head", ["mean", "max", "attention"])
def test_temporal_heads(head):
    net = build_classifier("uniform", 2, num_frames=8, temporal_head=head)
    assert net(torch.rand(2, 1, 8, 16, 16)).shape == (2, 2)


def test_verify_net_in_out_style_call():
    # monai.bundle verify_net_in_out feeds a B×C×D×H×W tensor and checks the output shape
    net = build_classifier("das", 2, num_frames=28).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 28, 28, 28)).shape == (1, 2)
