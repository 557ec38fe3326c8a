import copy

import pytest
import torch

from monai_das.networks import SAMPLERS, build_classifier, DASampler, DPSSampler, SamplerOutput, get_sampler

T, K = 12, 5


def make(name: str, k: int = K, t: int = T):
    torch.manual_seed(0)
    return get_sampler(name, k, num_frames=t, in_channels=1)


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, T, 1, 16, 16, generator=g)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_output_contract(name, mode, x):
    s = make(name)
    s.train(mode == "train")
    out = s(x)
    assert isinstance(out, SamplerOutput)
    k = T if name == "full" else K
    assert out.frames.shape == (3, k, 1, 16, 16)
    assert out.matrix.shape == (3, k, T)
    assert out.indices.shape == (3, k) and out.indices.dtype == torch.long
    # rows one-hot, exactly
    m = out.matrix.detach()
    assert torch.all((m == 0) | (m == 1))
    assert torch.all(m.sum(-1) == 1)
    # no frame twice, indices ascending and matching the rows of P
    assert torch.all(m.sum(1) <= 1)
    assert torch.all(out.indices[:, 1:] > out.indices[:, :-1])
    assert torch.equal(m.argmax(-1), out.indices)
    # frames == P·x exactly, and equal to the input frames
    assert torch.equal(out.frames, torch.einsum("bkt,btchw->bkchw", out.matrix, x))
    assert torch.equal(out.frames, x[torch.arange(3)[:, None], out.indices])


@pytest.mark.parametrize("name", ["das", "dps", "adps"])
def test_learned_samplers_get_gradients_through_ste(name, x):
    s = make(name).train()
    out = s(x)
    # a loss that prefers some frames over others
    w = torch.linspace(-1, 1, 16 * 16).reshape(1, 1, 1, 16, 16)
    (out.frames * w).sum().backward()
    missing = [n for n, p in s.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, p in s.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad}"


@pytest.mark.parametrize("name", ["das", "dps", "adps"])
def test_learned_samplers_stay_finite_after_optimizer_steps(name, x):
    from monai_das.networks import build_classifier

    torch.manual_seed(0)
    net = build_classifier(name, 2, num_frames=T, keep_ratio=K / T)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    vol = x.permute(0, 2, 1, 3, 4)  # B×C×D×H×W
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(vol), torch.tensor([0, 1, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("name", ["das", "dps", "adps", "uniform", "full"])
def test_eval_is_deterministic(name, x):
    s = make(name).eval()
    with torch.no_grad():
        a, b = s(x), s(x)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.frames, b.frames)


def test_das_training_is_stochastic(x):
    s = make("das").train()
    picks = {tuple(s(x).indices[0].tolist()) for _ in range(8)}
    assert len(picks) > 1


def test_das_adapts_to_input_dps_does_not():
    torch.manual_seed(0)
    t, k = 16, 4
    xs = torch.rand(4, t, 1, 16, 16) * 0.05
    # each input has its structure (edges, contrast) in a different set of frames
    for i in range(4):
        for f in range(4 * i, 4 * i + 4):
            xs[i, f, :, 4:12, 4:12] = 1.0
    das = DASampler(k, features=("variance", "sobel", "laplacian"), positional=False).eval()
    dps = DPSSampler(k, t).eval()
    with torch.no_grad():
        d_idx = das(xs).indices
        p_idx = dps(xs).indices
    assert len({tuple(r.tolist()) for r in d_idx}) > 1, "DAS must choose per input"
    assert len({tuple(r.tolist()) for r in p_idx}) == 1, "DPS must choose the same frames for every input"


def test_das_shapes_of_internals(x):
    s = make("das")
    logits, tau = s.logits_and_temperature(x)
    assert logits.shape == (3, T)
    assert tau.shape == (3, 1)
    assert torch.all(tau > 0.5 * s.tau0 - 1e-6) and torch.all(tau < 1.5 * s.tau0 + 1e-6)


def test_uniform_indices():
    out = make("uniform", k=4, t=8)(torch.rand(1, 8, 1, 4, 4))
    assert out.indices.tolist() == [[1, 3, 5, 7]]


def test_random_reproducible_with_seed(x):
    s = make("random")
    torch.manual_seed(3)
    a = s(x).indices
    torch.manual_seed(3)
    assert torch.equal(a, s(x).indices)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bad_inputs(name, x):
    s = make(name)
    with pytest.raises(ValueError, match="5 dimensions"):
        s(x[0])
    bad = x.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        s(bad)
    bad[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        s(bad)
    with pytest.raises(ValueError, match="floating point"):
        s((x * 10).long())


def test_das_refuses_intensities_its_statistics_overflow():
    """
    Finite intensities of 1e19 overflowed the DAS frame statistics (float32 squares: Sobel ``gx² + gy²``, variances)
    to Inf, then NaN sampler logits and the first k frames kept without a word: refused, naming the input's shape and
    max ``|x|``. Up to :meth:`FrameFeatures.max_input` even the worst case (the inter-frame variance ``4M²`` in half
    of the frames, ``0`` in the others) gives finite features, its standardised deviations not collapsed to 0.
    """
    torch.manual_seed(0)
    net = build_classifier("das", 2, 28, keep_ratio=0.5, slice_axis=2).eval()
    for x in (torch.full((1, 1, 28, 27, 26), 1e19), torch.rand(1, 1, 28, 27, 26) * -1e19):
        # the volume's shape as given (the sampler's frame sequence is 1×26×1×28×27)
        for run in (net, net.sample):
            with pytest.raises(ValueError, match=r"input of shape \(1, 1, 28, 27, 26\) has values up to \|x\| = "
                               r"1e\+19: beyond 1.1e\+09 the DAS frame statistics .* overflow float32"):
                run(x)
    s = make("das", t=28)
    limit = s.frame_features.max_input(28)
    worst = torch.ones(1, 28, 1, 16, 16)
    worst[:, 1:14:2] = -1  # frames +M, -M, +M, ... then +M: inter-frame variance 4M² then 0
    s(worst * limit)
    m = s.frame_features.out_features // 2 - 1  # log1p(|v|) and standardised v of m statistics, then the position
    for factor, deviation in ((1, 1.0), (2, 0.0)):  # at 2× its squared deviations overflow: all 0 without a word
        features = s.frame_features(worst * limit * factor)
        assert torch.isfinite(features).all()
        # the standardised inter-frame variance at scale 1 (intensity, variance, inter-frame variance, ...)
        assert features[0, :, m + 2].abs().max() == pytest.approx(deviation, abs=0.1)
    with pytest.raises(ValueError, match=r"input of shape \(1, 28, 1, 16, 16\) has values up to"):
        s(worst * limit * 1.01)  # a sampler called on its own names its input


def test_das_frame_statistics_of_a_half_precision_sampler_are_float32():
    """A ``.half()`` DAS network on a z-scored volume (``|x|`` up to 8) was refused (review r72f): the float16
    statistics' worst case overflows from ``|x|`` of 4.1. They are computed in float32 at least, so the limit is
    float32's, and the features equal the float32 sampler's within float16's rounding (back in float16)."""
    torch.manual_seed(0)
    s = make("das", t=28).eval()
    x = torch.randn(2, 28, 1, 16, 16) * 3
    x[:, :, :, 0, 0] = 8.0
    half = copy.deepcopy(s).half()
    features = half.frame_features(x.half())
    assert features.dtype == torch.float16 and torch.isfinite(features).all()
    torch.testing.assert_close(features.float(), s.frame_features(x), atol=2e-2, rtol=2e-2)
    assert s.input_limit(28, torch.float16)[0] == s.input_limit(28, torch.float32)[0] > 1e9
    half(x.half())  # not refused


@pytest.mark.parametrize("name", ["das", "uniform", "random"])
def test_k_larger_than_t(name):
    s = get_sampler(name, 10)
    with pytest.raises(ValueError, match="k=10"):
        s(torch.rand(1, 6, 1, 8, 8))


@pytest.mark.parametrize("name", ["das", "dps", "adps", "uniform", "random"])
def test_k_below_one(name):
    with pytest.raises(ValueError, match="num_samples"):
        get_sampler(name, 0, num_frames=8)


@pytest.mark.parametrize("name", ["dps", "adps"])
def test_static_samplers_check_t(name, x):
    with pytest.raises(ValueError, match="T=12"):
        make(name, t=T)(torch.rand(1, 10, 1, 8, 8))


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("nope", 3)
    with pytest.raises(ValueError, match="num_frames"):
        get_sampler("dps", 3)


def test_frame_features_edges_match_convolution():
    import torch.nn.functional as F

    from monai_das.networks.blocks import FrameFeatures

    x = torch.rand(2, 3, 2, 9, 11)
    ff = FrameFeatures(scales=(1,), features=("sobel", "laplacian"), positional=False)
    sob = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    r = F.conv2d(x.reshape(-1, 1, 9, 11), torch.stack([sob, sob.t(), lap])[:, None], padding=1).reshape(2, 3, 2, 3, 9, 11)
    sobel, laplacian = (v.squeeze(-1) for v in ff._stats(x))  # B×T×1 each
    torch.testing.assert_close(sobel, torch.sqrt(r[:, :, :, 0] ** 2 + r[:, :, :, 1] ** 2 + 1e-12).mean((2, 3, 4)))
    torch.testing.assert_close(laplacian, r[:, :, :, 2].abs().mean((2, 3, 4)))
    # large frames are averaged down to feature_size before the statistics
    big = FrameFeatures(feature_size=16)(torch.rand(1, 4, 1, 64, 48))
    assert big.shape == (1, 4, FrameFeatures().out_features) and torch.isfinite(big).all()
    # bit for bit the written-out definitions (products, not pow(), so the ONNX graph has no slow generic Pow)
    assert torch.equal(sobel, torch.sqrt(r[:, :, :, 0].square() + r[:, :, :, 1].square() + 1e-12).mean((2, 3, 4)))
    var_ff = FrameFeatures(scales=(1,), features=("variance",), positional=False)
    flat = x.reshape(2, 3, -1)
    d2 = (flat[:, 1:] - flat[:, :-1]).pow(2).mean(-1)
    inter = 0.5 * (torch.cat([d2[:, :1], d2], 1) + torch.cat([d2, d2[:, -1:]], 1))
    variance, inter_ff = (v.squeeze(-1) for v in var_ff._stats(x))
    # the neighbour average is a product with a constant 0/0.5 matrix: exact, scaling by 0.5 does not round
    assert torch.equal(inter_ff, inter)
    torch.testing.assert_close(variance, flat.var(-1, unbiased=False))
    # a single frame has no neighbour: inter-frame variance 0
    assert var_ff._stats(x[:, :1])[1].abs().max() == 0


def test_frame_features_onnx_graph_has_no_pow():
    import onnx

    from monai_das.networks.blocks import FrameFeatures

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = FrameFeatures()

        def forward(self, x):
            return self.f(x)

    import io

    buf = io.BytesIO()
    torch.onnx.export(Wrap(), (torch.rand(1, 6, 1, 64, 64),), buf, dynamo=True, optimize=True)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    # 64 → 32 (feature_size) and the scale-2 pooling are strided depthwise Conv: ONNX Runtime's AveragePool (opset
    # >= 19) is a generic kernel several times slower
    assert "Pow" not in ops and "Conv" in ops and "AveragePool" not in ops
    # 40 → 32 (overlapping bins): adaptive pooling as two matrix products in the graph, not a gather of every window;
    # ONNX Runtime gives the eager values
    import onnxruntime as ort

    x = torch.rand(2, 5, 3, 40, 40)
    buf = io.BytesIO()
    torch.onnx.export(Wrap(), (x,), buf, dynamo=True, optimize=True, input_names=["x"])
    graph = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in graph.graph.node}
    assert "GatherND" not in ops and "MatMul" in ops
    (got,) = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), Wrap()(x), atol=1e-4, rtol=1e-4)


class _Indices(torch.nn.Module):
    """A sampler's kept indices as the one output (what an exported graph of the selection returns)."""

    def __init__(self, sampler):
        super().__init__()
        self.s = sampler

    def forward(self, x):
        return self.s(x).indices


def test_das_eval_graph_is_lean_and_matches_eager():
    """
    In eval the selection is the top-k of the logits: the temperature MLP is not in the ONNX graph (no Sigmoid), the
    attention is written out (no shape computation for kᵀ) and no slow generic Einsum/Pow remains; ONNX Runtime picks
    the frames eager PyTorch picks.
    """
    import io

    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    das = DASampler(7).eval()

    x = torch.rand(3, 14, 1, 20, 20)
    buf = io.BytesIO()
    torch.onnx.export(_Indices(das).eval(), (x,), buf, dynamo=True, optimize=True, input_names=["x"])
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert not {"Sigmoid", "Einsum", "Pow", "Shape"} & set(ops), sorted(set(ops))
    (got,) = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(got), das(x).indices)
    # training still draws with the adaptive temperature
    das.train()
    logits, tau = das.logits_and_temperature(x)
    assert tau.shape == (3, 1) and logits.shape == (3, 14)


def test_equal_scores_keep_the_same_frames_in_eager_torchscript_and_onnx():
    """
    Frames of equal scores (identical frames without the position feature: constant or zero-padded slices) are kept
    in frame order, as ONNX Runtime's TopK keeps them: torch.topk ordered them arbitrarily, and on a constant volume
    eager PyTorch and TorchScript kept frames 4..7 of 8 where the ONNX export kept 0..3 (trial T70f).
    """
    import io
    import warnings

    import onnxruntime as ort

    from monai_das.networks.blocks.gumbel import gumbel_top_k

    assert gumbel_top_k(torch.zeros(2, 64), 3, noisy=False)[1].tolist() == [[0, 1, 2]] * 2
    torch.manual_seed(0)
    das = DASampler(4, positional=False).eval()
    x = torch.cat([torch.zeros(2, 5, 1, 16, 16), torch.full((2, 3, 1, 16, 16), 0.5)], 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = das(x).indices
        traced = torch.jit.trace(_Indices(das), (x,))(x)
        buf = io.BytesIO()
        torch.onnx.export(_Indices(das), (x,), buf, dynamo=True, input_names=["x"])
    (got,) = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    assert torch.equal(traced, eager) and torch.equal(torch.from_numpy(got), eager), (eager, traced, got)


@pytest.mark.parametrize("name", ["uniform", "random"])
def test_index_samplers_export_no_one_hot_matrix(name):
    """
    A sampler that gives indices returns them as they are: its eval graph, whose output is the kept indices, builds
    no one-hot matrix to read them back by an arg-max (a ScatterElements and an ArgMax per call before).
    """
    import io

    import onnx

    sampler = get_sampler(name, 5, num_frames=12).eval()
    x = torch.rand(2, 12, 1, 8, 8)
    out = sampler(x)
    assert torch.equal(out.matrix.argmax(-1), out.indices) and torch.equal(out.frames, torch.stack(
        [x[b, out.indices[b]] for b in range(2)]))

    buf = io.BytesIO()
    torch.onnx.export(_Indices(sampler).eval(), (x,), buf, dynamo=True, optimize=True, input_names=["x"])
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert not {"ScatterElements", "ScatterND", "ArgMax"} & ops, sorted(ops)


def test_frame_features_area_pool_matches_average_pooling():
    import torch.nn.functional as F

    from monai_das.networks.blocks.frame_features import _area_pool

    x = torch.rand(2, 5, 3, 64, 48)
    flat = x.reshape(10, 3, 64, 48)
    torch.testing.assert_close(_area_pool(x, 32, 24), F.avg_pool2d(flat, 2).reshape(2, 5, 3, 32, 24))
    torch.testing.assert_close(_area_pool(x, 16, 16), F.adaptive_avg_pool2d(flat, (16, 16)).reshape(2, 5, 3, 16, 16))
    # not a divisor: adaptive average pooling (overlapping bins)
    torch.testing.assert_close(_area_pool(x, 20, 20), F.adaptive_avg_pool2d(flat, (20, 20)).reshape(2, 5, 3, 20, 20))
    # the scale-2 statistics of odd frames pool 2×2 blocks and drop the last row and column, as avg_pool2d does
    from monai_das.networks.blocks import FrameFeatures

    odd = torch.rand(2, 5, 1, 27, 25)
    ff = FrameFeatures(scales=(2,), positional=False)
    pooled = F.avg_pool2d(odd.reshape(10, 1, 27, 25), 2).reshape(2, 5, 1, 13, 12)
    assert torch.equal(ff(odd), FrameFeatures(scales=(1,), positional=False)(pooled))


def test_select_frames_gathers_whole_frames_exactly_and_exports_one_gather():
    import io

    import onnx
    import onnxruntime as ort

    from monai_das.networks import select_frames
    from monai_das.networks.blocks.gumbel import indices_to_matrix

    x = torch.rand(3, 7, 2, 5, 4, requires_grad=True)
    idx = torch.tensor([[6, 0, 3], [1, 2, 5], [4, 4, 0]])
    matrix = indices_to_matrix(idx, 7, x.dtype).requires_grad_()
    expected = torch.einsum("bkt,btchw->bkchw", matrix, x)
    got = select_frames(matrix, x, idx)
    assert torch.equal(got, torch.stack([x[b, idx[b]] for b in range(3)]))  # bit for bit
    weights = torch.rand_like(got)
    grads = torch.autograd.grad((got * weights).sum(), (matrix, x))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (matrix, x))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)

    class Pick(torch.nn.Module):
        def forward(self, frames, indices):
            return select_frames(indices_to_matrix(indices, frames.shape[1], frames.dtype), frames, indices)

    buf = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=64)
    with torch.no_grad():
        torch.onnx.export(Pick(), (x.detach(), idx), buf, dynamo=True, input_names=["x", "idx"],
                          dynamic_shapes=({0: batch}, {0: batch}))
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    # one Gather of whole frames: torch.gather along the frame axis exported as an element-wise index (Expand +
    # GatherElements) that cost ONNX Runtime more than DAS's whole sampler on batches of clips
    assert "GatherElements" not in ops and ops.count("Gather") == 1
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x2, idx2 = torch.rand(5, 7, 2, 5, 4), torch.randint(0, 7, (5, 3))
    (out,) = sess.run(None, {"x": x2.numpy(), "idx": idx2.numpy()})
    assert torch.equal(torch.from_numpy(out), torch.stack([x2[b, idx2[b]] for b in range(5)]))


def test_gumbel_top_k_eval_is_top_k_and_rows_have_straight_through_gradients():
    from monai_das.networks.blocks.gumbel import gumbel_top_k

    scores = torch.randn(3, 10, requires_grad=True)
    p, idx = gumbel_top_k(scores, 4, 0.5, noisy=False)
    assert torch.equal(idx, scores.detach().topk(4).indices)
    assert torch.equal(p.detach(), torch.nn.functional.one_hot(idx, 10).float())  # exactly one-hot in value
    (p * torch.arange(10.0)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_gumbel_top_k_matches_sequential_sampling_distribution():
    """One Gumbel draw + top-k has the law of drawing k frames one after the other without replacement."""
    from monai_das.networks.blocks.gumbel import gumbel_top_k

    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    n = 20000
    _, idx = gumbel_top_k(logits.expand(n, 4), 2, noisy=True)
    p = torch.softmax(logits, 0)
    # P(first = 0, second = 1) = p0 · p1 / (1 - p0)
    expected = float(p[0] * p[1] / (1 - p[0]))
    got = float(((idx[:, 0] == 0) & (idx[:, 1] == 1)).float().mean())
    assert abs(got - expected) < 0.015, (got, expected)


@pytest.mark.parametrize("name", ["das", "dps", "uniform", "random", "adps"])
def test_any_k_at_inference(name):
    """Parameters not tied to k: one sampler keeps any 1 <= k <= T, and refuses the rest clearly."""
    s = make(name).eval()
    x = torch.rand(2, T, 1, 16, 16)
    with torch.no_grad():
        for k in (1, K // 2, T):
            out = s(x, num_samples=k)
            assert out.indices.shape == (2, k) and out.frames.shape == (2, k, 1, 16, 16)
            assert all(len(set(r.tolist())) == k for r in out.indices)
        for bad in (0, T + 1, 1.5, torch.tensor(2.0)):
            with pytest.raises(ValueError, match="num_samples|k must be <= T"):
                s(x, num_samples=bad)
        # a whole-number float (as a config gives it) or a one-element integer tensor is that k
        ref = s(x, num_samples=2).indices
        for same in (2.0, torch.tensor(2), torch.tensor([2])):
            got = s(x, num_samples=same).indices
            assert got.shape == ref.shape and (name == "random" or torch.equal(got, ref))  # random: another draw


def test_das_top_k_nests_across_budgets():
    """Deterministic DAS keeps the top-k of one score per frame: the frames kept at k are kept at every k' > k."""
    s = make("das").eval()
    x = torch.rand(2, T, 1, 16, 16)
    with torch.no_grad():
        small, large = s(x, num_samples=2).indices, s(x, num_samples=T - 1).indices
    for a, b in zip(small, large):
        assert set(a.tolist()) <= set(b.tolist())


def test_full_sequence_keeps_every_frame_only():
    s = make("full")
    x = torch.rand(2, T, 1, 8, 8)
    assert s(x).frames is not None and torch.equal(s(x).frames, x)
    with pytest.raises(ValueError, match=r"cannot keep k=2 \(it keeps every frame; the 'uniform' sampler"):
        s(x, num_samples=2)
    assert torch.equal(s(x, num_samples=float(T)).indices, s(x).indices)


def test_das_weights_carry_their_frame_feature_settings(tmp_path):
    """The frame statistics have no parameters: the weights say how they were computed, and a mismatch is refused."""
    from monai_das.networks import build_classifier

    net = build_classifier("das", 2, 12, keep_ratio=0.5)
    state = net.state_dict()
    assert state["sampler.frame_features.settings"].tolist() == [32, 1, 15, 1, 2]
    torch.save({"model": state}, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)["model"]
    build_classifier("das", 2, 12, keep_ratio=0.25).load_state_dict(loaded)  # same settings, any k
    other = build_classifier("das", 2, 12, keep_ratio=0.5, sampler_kwargs={"feature_size": 14})
    with pytest.raises(RuntimeError, match=r"trained with DAS frame features .*'feature_size': 32.* but this "
                                           r"network has .*'feature_size': 14"):
        other.load_state_dict(loaded)
    # weights saved before the settings were: load as before
    other.load_state_dict({k: v for k, v in loaded.items() if not k.endswith(".settings")})


def test_sampler_kwargs_are_checked_by_name():
    from monai_das.networks import build_classifier

    with pytest.raises(ValueError, match=r"sampler 'uniform' takes no argument 'feature_size'.*arguments: none"):
        build_classifier("uniform", 2, 12, keep_ratio=0.5, sampler_kwargs={"feature_size": 14})
    with pytest.raises(ValueError, match=r"'feature_sise': did you mean 'feature_size'"):
        build_classifier("das", 2, 12, keep_ratio=0.5, sampler_kwargs={"feature_sise": 14})


def test_spread_radius_leaves_room_for_every_pick():
    from monai_das.networks.blocks.gumbel import spread_radius

    assert [spread_radius(32, k) for k in (3, 8, 11, 16, 32)] == [4, 1, 0, 0, 0]
    assert spread_radius(64, 6) == 4 and spread_radius(28, 7) == 1 and spread_radius(5, 9) == 0
    for t in range(1, 70):
        for k in range(1, t + 1):
            assert k * (2 * spread_radius(t, k) + 1) <= t


def test_gumbel_top_k_with_radius_suppresses_neighbours_then_falls_back():
    from monai_das.networks.blocks.gumbel import gumbel_top_k

    ramp = torch.arange(12.0)[None]  # the greedy picks of a ramp: 11, then the best 2 frames away, ...
    assert gumbel_top_k(ramp, 3, noisy=False, radius=2)[1].tolist() == [[11, 8, 5]]
    # more picks than non-overlapping windows: the rest are the best frames not yet taken, never a repeat
    assert gumbel_top_k(ramp, 6, noisy=False, radius=2)[1].tolist() == [[11, 8, 5, 2, 10, 9]]
    assert torch.equal(gumbel_top_k(ramp, 3, noisy=False, radius=0)[1], ramp.topk(3).indices)
    # training: noisy picks keep the spacing, rows one-hot in value, relaxation over the frames a row could take
    torch.manual_seed(0)
    scores = torch.randn(64, 20, requires_grad=True)
    p, idx = gumbel_top_k(scores, 4, 0.7, noisy=True, radius=2)
    assert torch.equal(p.detach(), torch.nn.functional.one_hot(idx, 20).float())
    gaps = (idx[:, :, None] - idx[:, None, :]).abs() + 100 * torch.eye(4, dtype=torch.long)
    assert int(gaps.min()) > 2
    (p * torch.randn(20)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    # the relaxation of row 1 is the softmax over the frames it could take: none within the radius of row 0's pick
    w = torch.randn(12)
    for radius, suppressed_get_gradient in ((2, False), (0, True)):
        flat = torch.zeros(1, 12, requires_grad=True)
        p, idx = gumbel_top_k(flat, 2, noisy=False, radius=radius)
        (p[0, 1] * w).sum().backward()
        near = [t for t in (idx[0, 0] - 1, idx[0, 0] + 1) if 0 <= t < 12 and t != idx[0, 1]]
        assert bool((flat.grad[0, near] != 0).all()) == suppressed_get_gradient, radius


def test_das_spread_keeps_distant_frames_in_train_warmup_and_eval():
    torch.manual_seed(0)
    s = DASampler(3, spread=True)
    assert not s.export_any_k and DASampler(3).export_any_k
    x = torch.rand(4, 32, 1, 16, 16)

    def min_gap(indices):
        return int((indices[:, 1:] - indices[:, :-1]).min())

    for mode, warm in (("eval", False), ("train", False), ("train", True)):
        s.train(mode == "train")
        s.warming_up = warm
        assert min_gap(s(x).indices) > 4, (mode, warm)
    s.eval()
    with torch.no_grad():
        assert min_gap(s(x, num_samples=8).indices) > 1  # radius follows k: (32 // 8 - 1) // 2 = 1
        plain = DASampler(3).eval()
        plain.load_state_dict({k: v for k, v in s.state_dict().items() if k != "spread"})  # same weights, no suppression
        assert torch.equal(s(x, num_samples=16).indices, plain(x, num_samples=16).indices)  # radius 0 at 16 of 32
        assert not torch.equal(s(x).indices, plain(x).indices)


def test_das_weights_carry_their_spread_setting():
    from monai_das.networks import build_classifier

    plain = build_classifier("das", 2, 12, keep_ratio=0.25)
    spread = build_classifier("das", 2, 12, keep_ratio=0.25, sampler_kwargs={"spread": True})
    assert "sampler.spread" not in plain.state_dict()  # the default's checkpoints keep their entries
    assert spread.state_dict()["sampler.spread"].tolist() == [1]
    build_classifier("das", 2, 12, keep_ratio=0.5, sampler_kwargs={"spread": True}).load_state_dict(spread.state_dict())
    with pytest.raises(RuntimeError, match=r"trained with spread=True but this DAS sampler was built with spread=False"):
        plain.load_state_dict(spread.state_dict())
    with pytest.raises(RuntimeError, match=r"trained with spread=False but this DAS sampler was built with spread=True"):
        spread.load_state_dict(plain.state_dict())


def test_das_spread_mismatch_with_strict_false_is_a_warning(caplog):
    """``strict=False`` (fine-tuning: take what fits) warns of the other saved settings (frame features, head,
    encoder), but refused a spread mismatch (review R67d)."""
    import logging

    from monai_das.networks import build_classifier

    plain = build_classifier("das", 2, 12, keep_ratio=0.25)
    spread = build_classifier("das", 2, 12, keep_ratio=0.25, sampler_kwargs={"spread": True})
    with caplog.at_level(logging.WARNING):
        plain.load_state_dict(spread.state_dict(), strict=False)
    assert "trained with spread=True but this DAS sampler was built with spread=False: loaded as strict=False" \
        in caplog.text
    torch.testing.assert_close(plain.sampler.base_score, spread.sampler.base_score)
