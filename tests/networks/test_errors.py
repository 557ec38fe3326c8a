"""Wrong arguments and inputs give a ValueError that names the value, not an error from deep inside torch (issue 11)."""

import re

import pytest
import torch

from monai_das.networks import SAMPLERS, DASampler, build_classifier, get_sampler, num_kept
from monai_das.networks.nets import ADPSSampler, DPSSampler, MobileNetV3Small

LEARNED = ["das", "dps", "adps"]
COUNTED = ["das", "dps", "adps", "uniform", "random"]  # "full" ignores num_samples


@pytest.mark.parametrize("name", COUNTED)
@pytest.mark.parametrize("k", [2.7, 0, -3, True, "4", float("nan"), None])
def test_num_samples_must_be_a_positive_integer(name, k):
    with pytest.raises(ValueError, match=re.escape(f"num_samples (k) must be an integer >= 1, got {k!r}.")):
        get_sampler(name, k, num_frames=8)


@pytest.mark.parametrize("name", COUNTED)
def test_integral_float_num_samples_is_accepted(name):
    """``4.0`` (a config's arithmetic) is a count; it used to fail inside ``nn.Linear`` for ``das`` only."""
    s = get_sampler(name, 4.0, num_frames=8).eval()
    assert s.num_samples == 4 and s(torch.rand(1, 8, 1, 8, 8)).indices.shape == (1, 4)


@pytest.mark.parametrize("cls", [DPSSampler, ADPSSampler])
@pytest.mark.parametrize("t", [7.5, 0])
def test_num_frames_must_be_a_positive_integer(cls, t):
    with pytest.raises(ValueError, match=rf"num_frames \(T\) must be an integer >= 1, got {t!r}"):
        cls(2, num_frames=t)


@pytest.mark.parametrize("kwargs", [{"in_channels": 1.5}, {"in_channels": 0}, {"embed_dim": 32.5},
                                    {"num_heads": 0}, {"hidden_dim": 2.5}])
def test_das_sizes_must_be_positive_integers(kwargs):
    (key, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"{key} must be an integer >= 1, got {value!r}"):
        DASampler(3, **kwargs)


def test_sampler_name_must_be_a_string():
    with pytest.raises(ValueError, match="sampler name must be a string"):
        get_sampler(None, 3)
    with pytest.raises(ValueError, match="unknown sampler 5"):
        build_classifier(5, 2, num_frames=8)


@pytest.mark.parametrize("ratio", [0.0, 1.5, -0.25, float("nan"), "0.5", True, None])
@pytest.mark.parametrize("method", ["das", "full"])
def test_keep_ratio_in_unit_interval(ratio, method):
    with pytest.raises(ValueError, match=r"keep_ratio must be a number in \(0, 1\], got "):
        build_classifier(method, 2, num_frames=8, keep_ratio=ratio)
    with pytest.raises(ValueError, match="keep_ratio"):
        num_kept(8, ratio)


@pytest.mark.parametrize("kwargs, key", [({"num_classes": 2.5}, "num_classes"), ({"num_frames": 8.5}, "num_frames"),
                                         ({"in_channels": 0}, "in_channels"), ({"num_frames": 0}, "num_frames")])
def test_build_classifier_counts(kwargs, key):
    args = {"num_classes": 2, "num_frames": 8, **kwargs}
    with pytest.raises(ValueError, match=rf"{key}.* must be an integer >= 1"):
        build_classifier("uniform", **args)


@pytest.mark.parametrize("method", ["das", "full"])
def test_build_classifier_num_samples_is_k(method):
    """``num_samples`` is ``k`` itself (the bundle's ``--num_kept``): it wins over ``keep_ratio``, ``1 <= k <= T``."""
    net = build_classifier(method, 2, num_frames=8, keep_ratio=0.5, num_samples=3)
    assert net.sampler.num_kept(8) == (8 if method == "full" else 3)
    with pytest.raises(ValueError, match=r"cannot keep k=9 frames of an input with T=8 frames \(k must be <= T\)"):
        build_classifier(method, 2, num_frames=8, num_samples=9)
    with pytest.raises(ValueError, match=r"num_samples \(k\) must be an integer >= 1, got 2.5"):
        build_classifier(method, 2, num_frames=8, num_samples=2.5)


@pytest.mark.parametrize("cls", [DASampler, ADPSSampler])
def test_sampler_checks_channels(cls):
    kwargs = {"num_frames": 8} if cls is ADPSSampler else {}
    s = cls(3, in_channels=2, **kwargs)
    x = torch.rand(2, 8, 3, 16, 16)
    with pytest.raises(ValueError, match=r"in_channels=2 .*shape \(2, 8, 3, 16, 16\) has C=3 channel"):
        s(x)
    assert s(torch.rand(2, 8, 2, 16, 16)).frames.shape == (2, 3, 2, 16, 16)


def test_adps_with_shared_encoder_checks_its_channels():
    s = ADPSSampler(2, num_frames=6, encoder=MobileNetV3Small(in_channels=3))
    with pytest.raises(ValueError, match="in_channels=3"):
        s(torch.rand(1, 6, 1, 32, 32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", LEARNED)
def test_learned_sampler_casts_floating_input(name, dtype):
    torch.manual_seed(0)
    s = get_sampler(name, 3, num_frames=8).eval()
    x = torch.rand(2, 8, 1, 16, 16).to(dtype)
    with torch.no_grad():
        out, ref = s(x), s(x.float())
    assert out.frames.dtype == torch.float32 and torch.equal(out.indices, ref.indices)
    torch.testing.assert_close(out.frames, ref.frames, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["uniform", "random", "full"])
def test_parameter_free_samplers_keep_input_dtype(name):
    """A guard (this already held): a sampler without parameters has no dtype to cast to."""
    x = torch.rand(1, 8, 1, 8, 8, dtype=torch.float16)
    assert get_sampler(name, 3)(x).frames.dtype == torch.float16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["das", "uniform", "adps"])
def test_classifier_casts_half_input(method, dtype):
    torch.manual_seed(0)
    net = build_classifier(method, 3, num_frames=8, keep_ratio=0.5).eval()
    x = torch.rand(2, 1, 8, 16, 16).to(dtype)
    with torch.no_grad():
        y, ref = net(x), net(x.float())
        frames = net.sample(x).frames
    assert y.dtype == torch.float32 and frames.dtype == torch.float32
    torch.testing.assert_close(y, ref)


def test_half_network_casts_float_input():
    net = build_classifier("uniform", 2, num_frames=8).eval().to(torch.bfloat16)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 8, 16, 16)).dtype == torch.bfloat16


@pytest.mark.parametrize("method", ["das", "uniform"])
def test_integer_input_keeps_its_error(method):
    """A guard (this already held): the cast applies to floating input only."""
    net = build_classifier(method, 2, num_frames=8)
    with pytest.raises(ValueError, match="expected a floating point input, got dtype torch.int64"):
        net(torch.randint(0, 255, (1, 1, 8, 16, 16)))


def test_channel_last_input_is_named_with_its_shape():
    net = build_classifier("uniform", num_classes=2, num_frames=8)
    with pytest.raises(ValueError, match=r"input of shape \(1, 16, 8, 16, 1\) has 16 channel\(s\) .*channel-last"):
        net(torch.rand(1, 16, 8, 16, 1))  # B×D×H×W×C instead of B×C×D×H×W


@pytest.mark.parametrize("method", ["das", "full"])
def test_one_class_is_refused(method):
    """A softmax over one logit is 1 for every input: such a network was built and trained without a word."""
    with pytest.raises(ValueError, match=r"num_classes must be >= 2, got 1: .*a binary task is 2 classes"):
        build_classifier(method, 1, num_frames=8)


def test_an_empty_input_is_named_as_given():
    """An empty batch B×C×D×H×W was named by the sampler's frame sequence, (0, 8, 1, 16, 16) for (0, 1, 8, 16, 16)
    (trial T67f)."""
    net = build_classifier("das", 2, num_frames=8, keep_ratio=0.5)
    with pytest.raises(ValueError, match=re.escape("empty dimension: shape (0, 1, 8, 16, 16) (B×C×D×H×W")):
        net(torch.rand(0, 1, 8, 16, 16))


@pytest.mark.parametrize("name", ["dps", "adps", "das"])
def test_the_base_sampler_checks_fixed_t_and_c(name):
    """One contract (BaseSampler.check_input): a sampler tied to T or C names itself and both values."""
    sampler = get_sampler(name, 2, num_frames=8, in_channels=1)
    if name != "das":  # DAS runs on any T
        with pytest.raises(ValueError, match=rf"{type(sampler).__name__} was built for T=8 frames, got T=6\."):
            sampler(torch.rand(1, 6, 1, 8, 8))
    if name == "dps":  # static logits: any C
        assert sampler(torch.rand(1, 8, 3, 8, 8)).indices.shape == (1, 2)
        return
    with pytest.raises(ValueError, match=rf"{type(sampler).__name__} was built for in_channels=1 but the input "
                                         r"B×T×C×H×W of shape \(1, 8, 3, 8, 8\) has C=3 channel\(s\)\."):
        sampler(torch.rand(1, 8, 3, 8, 8))
