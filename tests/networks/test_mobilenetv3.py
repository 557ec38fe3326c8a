import pytest
import torch

from monai_das.networks import MobileNetV3Small


@pytest.mark.parametrize("in_channels", [1, 3])
def test_features_and_logits(in_channels):
    enc = MobileNetV3Small(in_channels=in_channels)
    assert enc(torch.rand(2, in_channels, 28, 28)).shape == (2, 576) == (2, enc.out_features)
    clf = MobileNetV3Small(in_channels=in_channels, num_classes=5)
    assert clf(torch.rand(2, in_channels, 64, 64)).shape == (2, 5)


def test_3d():
    assert MobileNetV3Small(spatial_dims=3, num_classes=2)(torch.rand(2, 1, 32, 32, 32)).shape == (2, 2)


def test_parameter_count_matches_reference():
    # torchvision's mobilenet_v3_small(num_classes=1000) has 2,542,856 parameters; with 3 input channels ours
    # must have exactly the same number (same architecture, same parameter names).
    n = sum(p.numel() for p in MobileNetV3Small(in_channels=3, num_classes=1000).parameters())
    assert n == 2_542_856


def test_pretrained_from_local_file(tmp_path):
    ref = MobileNetV3Small(in_channels=3, num_classes=1000)
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    net = MobileNetV3Small(in_channels=1, pretrained=True, weights_path=str(path))
    expected = ref.features[0][0].weight.mean(1, keepdim=True)
    assert torch.allclose(net.features[0][0].weight, expected)
    assert torch.equal(net.features[5].block[1][0].weight, ref.features[5].block[1][0].weight)
    # weights of a monai_das encoder of another stem stride: its weights, not its settings entry (review)
    finer = MobileNetV3Small(in_channels=1, stem_stride=1, pretrained=True, weights_path=str(path))
    assert torch.equal(finer.features[0][0].weight, net.features[0][0].weight)


def test_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        MobileNetV3Small(pretrained=True, weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="channels"):
        MobileNetV3Small(in_channels=0)


def test_kernel_cropped_to_small_inputs_gives_the_same_output_and_gradients():
    """A 5×5 depthwise kernel on 1×1 and 2×2 maps: only the taps that can reach the map are computed."""
    import torch.nn as nn

    from monai_das.networks.blocks import SameConv2d

    torch.manual_seed(0)
    for size, stride in ((1, 1), (2, 1), (2, 2), (3, 2), (7, 1)):
        conv = SameConv2d(6, 6, 5, stride, 2, groups=6, bias=False)
        ref = nn.Conv2d(6, 6, 5, stride, 2, groups=6, bias=False)
        ref.load_state_dict(conv.state_dict())
        x = torch.rand(3, 6, size, size, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        out, expected = conv(x), ref(x_ref)
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-6)
        out.square().sum().backward()
        expected.square().sum().backward()
        assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
        assert torch.allclose(conv.weight.grad, ref.weight.grad, atol=1e-5)
