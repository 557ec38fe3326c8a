import pytest
import torch

from monai_das.networks import SAMPLERS, build_classifier, kept_frames, num_kept
from monai_das.networks.factory import check_one_budget


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
    # one frame per training batch: BatchNorm's error said nothing of the batch or k (trial W); eval is fine
    one = build_classifier("uniform", 2, num_frames=8, num_samples=1).train()
    with pytest.raises(ValueError, match=r"training step with B=1 input\(s\) of k=1 .* batch_size >= 2"):
        one(torch.rand(1, 1, 8, 16, 16))
    assert one.eval()(torch.rand(1, 1, 8, 16, 16)).shape == (1, 2)


def test_num_kept():
    assert num_kept(28, 0.5) == 14 and num_kept(64, 0.25) == 16 and num_kept(3, 0.01) == 1


def test_a_frame_budget_is_given_once():
    """One check of "num_kept or keep_ratio, not both" for the predictor, the Deploy app and MONAI Label, naming
    the values as the user gave them (an option as typed, a keyword argument)."""
    for k, r in ((None, None), (3, None), (None, 0.5)):
        assert check_one_budget(k, r) is None
    with pytest.raises(ValueError, match=r"^give num_kept or keep_ratio, not both \(got num_kept=3, keep_ratio=0\.5\)"):
        check_one_budget(3, 0.5)
    with pytest.raises(ValueError, match=r"^give --conf num_kept or --conf keep_ratio, not both \(got --conf num_kept "
                                         r"3, --conf keep_ratio 0\.5; why\)\.$"):
        check_one_budget(3, 0.5, ("--conf num_kept", "--conf keep_ratio"), note="; why")


@pytest.mark.parametrize("method", sorted(SAMPLERS))
@pytest.mark.parametrize("keep_ratio, num_samples", [(0.5, None), (0.25, None), (0.5, 3)])
def test_kept_frames_is_what_the_classifier_keeps(method, keep_ratio, num_samples):
    k = kept_frames(method, 8, keep_ratio, num_samples)
    assert k == (8 if method == "full" else num_samples or num_kept(8, keep_ratio))
    net = build_classifier(method, 2, num_frames=8, keep_ratio=keep_ratio, num_samples=num_samples)
    assert net.sampler.num_kept(8) == k


@pytest.mark.parametrize("method", ["full", "das"])
def test_kept_frames_refuses_bad_k(method):
    for bad in (0, 9, 2.5):
        with pytest.raises(ValueError):
            kept_frames(method, 8, 0.5, bad)
    # the bundles name their option (an inference with --num_kept 0 was told of a num_samples it had not given; T61b)
    with pytest.raises(ValueError, match=r"^--num_kept \(k\) must be an integer >= 1, got 0\.$"):
        kept_frames(method, 8, 0.5, 0, "--num_kept (k)")


@pytest.mark.parametrize("head", ["mean", "max", "attention", "gated"])
def test_temporal_heads(head):
    net = build_classifier("uniform", 2, num_frames=8, temporal_head=head)
    assert net(torch.rand(2, 1, 8, 16, 16)).shape == (2, 2)


def test_verify_net_in_out_style_call():
    # monai.bundle verify_net_in_out feeds a B×C×D×H×W tensor and checks the output shape
    net = build_classifier("das", 2, num_frames=28).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 28, 28, 28)).shape == (1, 2)


@pytest.mark.parametrize("method", ["das", "uniform", "full", "adps"])
def test_context_frames_give_each_kept_frame_its_neighbours(method):
    """2.5D: a kept frame reaches the encoder with its neighbours -c..c (clamped) as channels, sampler still trained."""
    torch.manual_seed(0)
    net = build_classifier(method, 2, num_frames=10, keep_ratio=0.4, context_frames=1)
    assert net.in_channels == 1 and net.encoder.in_channels == 3
    x = torch.rand(2, 1, 10, 16, 16)
    y = net(x)
    y.sum().backward()
    if net.sampler.learnable:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.sampler.parameters())
    net.eval()
    with torch.no_grad():
        seq = net.to_frames(x)
        out = net.sampler(seq)
        frames = net.add_context(seq, out)
        assert frames.shape == (2, out.indices.shape[1], 3, 16, 16)
        for b in range(2):
            for j, t in enumerate(out.indices[b].tolist()):
                for c, d in enumerate((-1, 0, 1)):
                    assert torch.equal(frames[b, j, c], seq[b, min(max(t + d, 0), 9), 0])
        logits, idx = net.forward_with_indices(x)
        assert torch.equal(idx, out.indices) and torch.allclose(logits, net.classify_frames(frames))
        if method != "full":  # any k with context frames too
            assert net(x, num_samples=3).shape == (2, 2)


def test_context_frames_bad_values():
    with pytest.raises(ValueError, match="context_frames"):
        build_classifier("das", 2, num_frames=8, context_frames=-1)
    with pytest.raises(ValueError, match="context_frames"):
        build_classifier("das", 2, num_frames=8, context_frames=1.0)
    from monai_das.networks import MobileNetV3Small, SubsampledClassifier, get_sampler

    enc = MobileNetV3Small(spatial_dims=2, in_channels=2, num_classes=0)
    with pytest.raises(ValueError, match="not a multiple of 3"):
        SubsampledClassifier(get_sampler("uniform", 4), enc, 2, context_frames=1)
    with pytest.raises(ValueError, match="build the encoder for 3"):
        SubsampledClassifier(get_sampler("uniform", 4), MobileNetV3Small(spatial_dims=2, in_channels=6, num_classes=0),
                             2, context_frames=1, in_channels=1)


def _one_step(x: torch.Tensor, mode: str, context: int = 0):
    """A DAS classifier (same initial weights and Gumbel draw for every mode) after one backward of the CE loss."""
    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=8, keep_ratio=0.5, context_frames=context, sampler_gradient=mode)
    torch.manual_seed(1)
    logits = net.train()(x)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1])).backward()
    return net, logits


def _assert_same_encoder_step(a_net, a_logits, b_net, b_logits):
    torch.testing.assert_close(b_logits, a_logits)
    for (name, a), b in zip(a_net.encoder.named_parameters(), b_net.encoder.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


@pytest.mark.parametrize("context", [0, 1])
def test_sampler_gradient_in_feature_space(context):
    """``sampler_gradient="features"``: same logits and encoder gradient as ``"pixels"``, BN statistics untouched by
    the extra pass over all frames, a sampler gradient that differs (taken through the frame embeddings), eval alike."""
    x = torch.rand(3, 1, 8, 16, 16)
    (pix, lp), (feat, lf) = _one_step(x, "pixels", context), _one_step(x, "features", context)
    _assert_same_encoder_step(pix, lp, feat, lf)
    for a, b in zip(pix.encoder.buffers(), feat.encoder.buffers()):  # running statistics: kept frames only
        torch.testing.assert_close(b, a)
    g_pix, g_feat = pix.sampler.base_score.grad, feat.sampler.base_score.grad
    assert torch.isfinite(g_feat).all() and g_feat.abs().sum() > 0 and not torch.allclose(g_feat, g_pix)
    assert feat.encoder.training  # restored after the no-gradient pass in eval mode
    torch.testing.assert_close(feat.eval()(x), pix.eval()(x))


def test_sampler_gradient_in_feature_space_keeps_frozen_layers_frozen():
    """The extra pass in eval mode put the whole encoder back with ``train(True)``: a batch norm the user had frozen
    (``eval()`` inside a training encoder) learned from the next batches (review R67d)."""
    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=8, keep_ratio=0.5, sampler_gradient="features").train()
    frozen = [m for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    frozen.eval()
    net(torch.rand(2, 1, 8, 16, 16))
    assert net.encoder.training and not frozen.training


def test_sampler_gradient_none():
    """``sampler_gradient="none"``: same logits and encoder gradient, no straight-through gradient to the sampler."""
    x = torch.rand(3, 1, 8, 16, 16)
    (pix, lp), (none, ln) = _one_step(x, "pixels"), _one_step(x, "none")
    _assert_same_encoder_step(pix, lp, none, ln)
    assert pix.sampler.base_score.grad.abs().sum() > 0
    assert all(p.grad is None for p in none.sampler.parameters())


def test_sampler_gradient_none_without_the_relevance_loss_is_warned(caplog):
    """A plain loss gives the sampler no gradient with sampler_gradient 'none': it never learned, silently (T63b)."""
    import logging

    from monai_das.losses import FrameRelevanceLoss

    x = torch.rand(2, 1, 8, 16, 16)
    with caplog.at_level(logging.WARNING, logger="monai_das.networks"):
        net = build_classifier("das", 2, num_frames=8, sampler_gradient="none").train()
        net(x), net(x)
        net.eval()(x)
    assert caplog.text.count("sampler gets no gradient and never learns") == 1  # once, in training
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.networks"):
        taught = build_classifier("das", 2, num_frames=8, sampler_gradient="none").train()
        FrameRelevanceLoss(torch.nn.CrossEntropyLoss(), taught, 1.0)(taught(x), torch.tensor([0, 1]))
        build_classifier("uniform", 2, num_frames=8, sampler_gradient="none").train()(x)  # nothing to learn
    assert "never learns" not in caplog.text


def test_sampler_gradient_bad_value():
    with pytest.raises(ValueError, match="sampler_gradient must be one of"):
        build_classifier("das", 2, num_frames=8, sampler_gradient="pixel")


def test_a_sampler_built_for_other_channels_than_the_encoder_is_refused():
    """A DAS sampler for 1 channel with a 3-channel encoder failed only at the first forward pass."""
    from monai_das.networks.nets import DASampler, MobileNetV3Small, SubsampledClassifier

    with pytest.raises(ValueError, match=r"DASampler was built for in_channels=1 .* frames of 3 channel"):
        SubsampledClassifier(DASampler(4, in_channels=1), MobileNetV3Small(in_channels=3, num_classes=0), 2)
    net = SubsampledClassifier(DASampler(4, in_channels=3), MobileNetV3Small(in_channels=3, num_classes=0), 2)
    assert net.in_channels == 3


def test_weights_saved_with_other_settings_than_their_shapes_show_are_refused(caplog):
    """A state dict of another temporal head (mean/max), slice axis or MobileNetV3 stem stride loaded silently and
    answered differently (trial T63b: logits 0.15 became 734 with stem_stride 1): those settings are saved with the
    weights and a mismatch is refused naming both; weights saved before they were load as before; strict=False
    (fine-tuning another head) warns instead (review)."""
    import logging
    import re

    net = build_classifier("das", 2, num_frames=8, temporal_head="mean")
    state = net.state_dict()
    assert state["classifier_settings"].tolist() == [0, 0] and state["temporal_head.settings"].tolist() == [0]
    assert state["encoder.settings"].tolist() == [2]
    build_classifier("das", 2, num_frames=8, temporal_head="mean", num_samples=3).load_state_dict(state)  # any k
    for kwargs, said in (
        ({"temporal_head": "max"}, r"temporal_head\.settings: the weights were trained with TemporalHead settings "
                                   r"\{'mode': 'mean'\} but this network has \{'mode': 'max'\}"),
        ({"slice_axis": 2}, r"classifier_settings: .*\{'layout': 'volume', 'slice_axis': 0\} but this network has "
                            r"\{'layout': 'volume', 'slice_axis': 2\}; build it with the training run's layout"),
        ({"encoder_kwargs": {"stem_stride": 1}}, r"encoder\.settings: .*\{'stem_stride': 2\} but this network has "
                                                 r"\{'stem_stride': 1\}"),
    ):
        other = build_classifier("das", 2, num_frames=8, temporal_head=kwargs.pop("temporal_head", "mean"), **kwargs)
        with pytest.raises(RuntimeError, match=said):
            other.load_state_dict(state)
        with caplog.at_level(logging.WARNING, logger="monai_das.networks"):  # strict=False (fine-tuning): warned
            other.load_state_dict(state, strict=False)
        assert re.search(said.split("; build")[0], caplog.text) and "loaded as strict=False asks" in caplog.text
        caplog.clear()
        older = {k: v for k, v in state.items() if not re.search(r"(^|\.|_)settings$", k)}
        other.load_state_dict(older)  # saved before the settings were: as before
    video = build_classifier("das", 2, num_frames=8, layout="video")
    assert video.state_dict()["classifier_settings"].tolist() == [1, -1]
    with pytest.raises(RuntimeError, match=r"\{'layout': 'video'\} but this network has \{'layout': 'volume'"):
        net.load_state_dict(video.state_dict())
