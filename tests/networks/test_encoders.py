"""Custom frame encoders: any 2D network N×C×H×W → N×E (MONAI's DenseNet121, resnet18, a plain nn.Sequential)."""

import sys
import warnings

import pytest
import torch
import torch.nn as nn
from monai.networks.nets import DenseNet121, resnet18

from monai_das.networks import (
    FrameEncoder,
    MobileNetV3Small,
    SubsampledClassifier,
    build_classifier,
    get_encoder,
    get_sampler,
)


def pooled_cnn(in_channels=1, width=8, kernel=3):
    return nn.Sequential(nn.Conv2d(in_channels, width, kernel), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class CountingEncoder(nn.Module):
    """A pooled CNN that counts its forward calls and records whether it ran in training mode with gradients."""

    def __init__(self, out_features=None):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if out_features is not None:
            self.out_features = out_features
        self.calls = []

    def forward(self, x):
        self.calls.append((tuple(x.shape), self.training, torch.is_grad_enabled()))
        return self.net(x)


def check_forward_backward(net, x, num_classes):
    y = net(x)
    assert y.shape == (x.shape[0], num_classes)
    y.sum().backward()
    grads = [p.grad for p in net.encoder.parameters()]
    assert all(g is not None for g in grads), "backward must reach every parameter of the encoder"
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name, kwargs, features", [("DenseNet121", {"out_channels": 16}, 16),
                                                    ("resnet18", {"num_classes": 8}, 8)])
def test_monai_encoder_by_name(name, kwargs, features):
    torch.manual_seed(0)
    net = build_classifier("das", 3, num_frames=8, keep_ratio=0.5, encoder=name, encoder_kwargs=kwargs)
    assert net.encoder_features == features and net.in_channels == 1
    check_forward_backward(net, torch.rand(2, 1, 8, 32, 32), 3)
    assert net.sample(torch.rand(2, 1, 8, 32, 32)).frames.shape == (2, 4, 1, 32, 32)


@pytest.mark.parametrize("make, features", [
    (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=12), 12),
    (lambda: resnet18(spatial_dims=2, n_input_channels=1, num_classes=10), 10),
    (lambda: pooled_cnn(width=5), 5),
])
def test_module_encoder_through_subsampled_classifier(make, features):
    torch.manual_seed(0)
    net = SubsampledClassifier(get_sampler("das", 3, in_channels=1), make(), num_classes=2)
    assert net.encoder_features == features and net.in_channels is None  # none of them declares its channels
    check_forward_backward(net, torch.rand(2, 1, 6, 32, 32), 2)
    with pytest.raises(ValueError, match="DASampler was built for in_channels=1"):  # the sampler checks C
        net(torch.rand(1, 2, 6, 32, 32))


def test_sequential_through_build_classifier_checks_channels():
    net = build_classifier("uniform", 2, num_frames=8, layout="video", encoder=pooled_cnn(width=7))
    assert net.encoder_features == 7 and net.in_channels == 1
    check_forward_backward(net, torch.rand(2, 8, 1, 16, 16), 2)
    with pytest.raises(ValueError, match=r"input of shape \(1, 8, 2, 16, 16\) has 2 channel"):
        net(torch.rand(1, 8, 2, 16, 16))


def test_out_features_is_read_without_running_the_encoder():
    enc = CountingEncoder(out_features=6)
    assert build_classifier("uniform", 2, num_frames=4, encoder=enc).encoder_features == 6
    assert enc.calls == []
    assert build_classifier("uniform", 2, num_frames=4).encoder_features == MobileNetV3Small().out_features == 576


def test_probe_runs_once_in_eval_without_grad_and_restores_modes():
    enc = CountingEncoder()
    enc.net[1].eval()  # a frozen batch norm inside a training encoder must stay frozen
    stats = enc.net[1].running_mean.clone()
    net = SubsampledClassifier(get_sampler("uniform", 2), enc, 2, in_channels=1)
    assert net.encoder_features == 6
    assert enc.calls == [((2, 1, 64, 64), False, False)]
    assert enc.training and not enc.net[1].training and enc.net[0].training
    assert torch.equal(enc.net[1].running_mean, stats)
    # encoder_features= skips the probe
    enc2 = CountingEncoder()
    assert SubsampledClassifier(get_sampler("uniform", 2), enc2, 2, encoder_features=6).encoder_features == 6
    assert enc2.calls == []


def test_encoder_features_must_agree_with_out_features():
    with pytest.raises(ValueError, match=r"encoder_features=5 but the frame encoder CountingEncoder has "
                                         r"out_features=6"):
        SubsampledClassifier(get_sampler("uniform", 2), CountingEncoder(6), 2, encoder_features=5)


def test_feature_map_output_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"Conv2d must map N×C×H×W → N×E.*\(2, 1, 64, 64\).*shape \(2, 8, 62, 62\)"
                                         r".*global pooling.*FrameEncoder"):
        build_classifier("uniform", 2, num_frames=4, encoder=nn.Conv2d(1, 8, 3))
    net = build_classifier("uniform", 2, num_frames=4, encoder=FrameEncoder(nn.Conv2d(1, 8, 3)))
    assert net.encoder_features == 8
    check_forward_backward(net, torch.rand(1, 1, 4, 16, 16), 2)


@pytest.mark.parametrize("arg", ["out_features", "in_channels"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_frame_encoder_refuses_bad_counts(arg, bad):
    with pytest.raises(ValueError, match=rf"FrameEncoder: {arg} must be an integer >= 1, got {bad!r}"):
        FrameEncoder(nn.Conv2d(1, 8, 3), **{arg: bad})


def test_frame_encoder_reads_counts_like_every_network():
    enc = FrameEncoder(nn.Conv2d(2, 8, 3), out_features=8.0, in_channels=2.0)  # integral floats, as a config may give
    assert (enc.out_features, enc.in_channels) == (8, 2)
    assert type(enc.out_features) is int and type(enc.in_channels) is int


def test_failing_probe_suggests_encoder_features():
    big = pooled_cnn(width=4, kernel=65)  # needs frames of at least 65×65
    with pytest.raises(ValueError, match=r"Sequential.*probe input of shape \(2, 1, 64, 64\).*encoder_features="):
        build_classifier("uniform", 2, num_frames=4, encoder=big)
    net = build_classifier("uniform", 2, num_frames=4, keep_ratio=0.5, encoder=big, encoder_features=4)
    check_forward_backward(net, torch.rand(1, 1, 4, 66, 66), 2)


def test_channel_mismatch_with_declared_encoder():
    with pytest.raises(ValueError, match=r"in_channels=1 but the frame encoder MobileNetV3Small declares 3"):
        build_classifier("uniform", 2, num_frames=4, encoder=MobileNetV3Small(in_channels=3))
    with pytest.raises(ValueError, match=r"n_input_channels=3 in its arguments but the classifier's in_channels=1"):
        build_classifier("uniform", 2, num_frames=4, encoder="resnet18", encoder_kwargs={"n_input_channels": 3})


@pytest.mark.parametrize("name, match", [
    ("DenseNet12", r"not a network of monai.networks.nets. Did you mean 'DenseNet121'"),
    ("get_efficientnet_image_size", "not a network of monai.networks.nets"),  # a helper there, not a network
    ("os.system", "dotted paths to other modules are refused"),
    ("torch.nn.Conv2d", "dotted paths to other modules are refused"),
    ("no_such_package_xyz.Net", "dotted paths to other modules are refused"),
])
def test_bad_encoder_names(name, match):
    with pytest.raises(ValueError, match=match):
        build_classifier("uniform", 2, num_frames=4, encoder=name)
    assert "no_such_package_xyz" not in sys.modules


def test_bad_encoder_arguments():
    with pytest.raises(ValueError, match=r"DenseNet121.*missing 1 required positional argument: 'out_channels'\. "
                                         r"Give out_channels in encoder_kwargs \(bundle: --encoder_kwargs "
                                         r"'\{\"out_channels\": 64\}'"):  # how to give it (recheck R53)
        get_encoder("DenseNet121")
    with pytest.raises(ValueError, match="2D"):
        get_encoder("DenseNet121", out_channels=4, spatial_dims=3)
    with pytest.raises(ValueError, match="encoder_kwargs=.*cannot apply to an encoder module"):
        build_classifier("uniform", 2, num_frames=4, encoder=pooled_cnn(), encoder_kwargs={"stem_stride": 1})
    with pytest.raises(ValueError, match="encoder must be None"):
        build_classifier("uniform", 2, num_frames=4, encoder=42)
    assert isinstance(get_encoder("monai.networks.nets.DenseNet121", out_channels=4), DenseNet121)


def test_an_encoder_that_downloads_weights_offline_says_how_not_to(monkeypatch):
    """EfficientNetBN downloads weights unless told pretrained=False: offline that was a bare URLError (trial N)."""
    import urllib.error

    import monai.networks.nets.efficientnet as efficientnet

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(efficientnet.model_zoo, "load_url", offline)
    with pytest.raises(ValueError, match=r"EfficientNetBN downloads pretrained weights with pretrained=True \(its default\): offline, give "
                                         r"encoder_kwargs \{'pretrained': False\} \(bundle: "
                                         r"--encoder_kwargs \"\{'pretrained': False\}\""):
        get_encoder("EfficientNetBN", model_name="efficientnet-b0")
    get_encoder("EfficientNetBN", model_name="efficientnet-b0", pretrained=False)  # no download, builds


def test_default_encoder_keeps_its_parameter_names():
    """Checkpoints of the MobileNetV3-Small classifier still load."""
    keys = {k for k in build_classifier("das", 2, num_frames=8).state_dict() if k.startswith("encoder.")}
    assert keys == {f"encoder.{k}" for k in MobileNetV3Small(num_classes=0).state_dict()}


def test_adps_shares_a_probed_encoder():
    enc = pooled_cnn(width=6)
    net = build_classifier("adps", 2, num_frames=6, encoder=enc, sampler_kwargs={"encoder": enc})
    assert net.sampler.encoder is net.encoder and net.sampler.cell.input_size == 6
    check_forward_backward(net, torch.rand(2, 1, 6, 16, 16), 2)


def test_densenet_classifier_traces(tmp_path):
    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=16, encoder="DenseNet121", encoder_kwargs={"out_channels": 8}).eval()
    x, x2 = torch.rand(1, 1, 16, 32, 32), torch.rand(1, 1, 16, 32, 32)
    assert net.sample(x).frames.shape == (1, 8, 1, 32, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(net, x, check_trace=False)
        for inp in (x, x2):  # a second input: the sampler's choice must not be baked into the trace
            torch.testing.assert_close(ts(inp), net(inp), rtol=0, atol=1e-5)


def test_frames_too_small_for_the_encoder_are_named():
    """DenseNet121 on 24×24 frames built, then failed on the first pass with torch's 'Output size is too small',
    naming neither the encoder nor the frame size (trial W); in eval and in training."""
    net = build_classifier("uniform", 2, 4, keep_ratio=0.5, encoder="DenseNet121", encoder_kwargs={"out_channels": 8})
    for mode in (net.eval, net.train):
        mode()
        with pytest.raises(ValueError, match=r"frames of \[24, 24\] pixels are too small for the encoder DenseNet121 "
                                             r"\(.*Output size is too small\): give larger frames"):
            net(torch.rand(2, 1, 4, 24, 24))
