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


def test_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        MobileNetV3Small(pretrained=True, weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="channels"):
        MobileNetV3Small(in_channels=0)
