"""TorchScript tracing and ONNX export (onnxscript / dynamo exporter) give the eager outputs."""

import warnings

import numpy as np
import pytest
import torch

from monai_das.networks import build_classifier

METHODS = ["das", "dps", "adps", "uniform", "full"]


@pytest.mark.parametrize("method", METHODS)
def test_trace_equals_eager(method, tmp_path):
    torch.manual_seed(0)
    net = build_classifier(method, 3, num_frames=8).eval()
    x, x2 = torch.rand(2, 1, 8, 16, 16), torch.rand(2, 1, 8, 16, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(net, x, check_trace=False)
        torch.jit.save(ts, tmp_path / "m.ts")
        loaded = torch.jit.load(tmp_path / "m.ts")
        for inp in (x, x2):  # a second input: the sampler's choice must not be baked into the trace
            torch.testing.assert_close(loaded(inp), net(inp), rtol=0, atol=1e-6)


def test_scripting_is_refused_with_the_way_to_export():
    """torch.jit.script failed with TorchScript's "Unknown type annotation: 'bool'" from deep inside (trial T63b)."""
    from monai_das.engines.export import ExportedClassifier

    net = build_classifier("das", 2, num_frames=8).eval()
    for module, name in ((net, "SubsampledClassifier"), (net.sampler, "DASampler"),
                         (ExportedClassifier(net), "SubsampledClassifier")):
        with pytest.raises(TypeError, match=rf"{name} cannot be compiled by torch.jit.script.*torch.jit.trace\("):
            torch.jit.script(module)
    with torch.no_grad(), warnings.catch_warnings():  # tracing is unaffected
        warnings.simplefilter("ignore")
        torch.jit.trace(ExportedClassifier(net), torch.rand(1, 1, 8, 16, 16))


@pytest.mark.parametrize("method, head", [("das", "mean"), ("uniform", "mean"), ("uniform", "gated")])
def test_onnx_equals_eager(method, head):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = build_classifier(method, 2, num_frames=8, temporal_head=head).eval()
    x, x2 = torch.rand(1, 1, 8, 16, 16), torch.rand(1, 1, 8, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (x,), dynamo=True, verbose=False)
    sess = ort.InferenceSession(program.model_proto.SerializeToString())
    name = sess.get_inputs()[0].name
    with torch.no_grad():
        for inp in (x, x2):
            np.testing.assert_allclose(sess.run(None, {name: inp.numpy()})[0], net(inp).numpy(), atol=1e-5)


def test_spread_das_traces_and_equals_eager(tmp_path):
    """A spread DAS (neighbour suppression, radius > 0) traces: its picks' mask is no aten::scatter with a bool scalar
    (an internal assert of torch.jit.trace), and the traced file keeps the eager frames and logits on new inputs."""
    from monai_das.engines.export import ExportedClassifier
    from monai_das.networks.blocks.gumbel import spread_radius

    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=16, keep_ratio=0.25, sampler_kwargs={"spread": True}).eval()
    assert net.sampler.num_samples == 4 and spread_radius(16, 4) == 1  # suppression is on
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(ExportedClassifier(net), x), tmp_path / "spread.ts")
        loaded = torch.jit.load(tmp_path / "spread.ts")
        for seed in (1, 2, 3):
            inp = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(seed))
            logits, idx = loaded(inp)
            expected, expected_idx = net.forward_with_indices(inp)
            assert torch.equal(idx, expected_idx)
            assert (idx.sort(-1).values.diff(dim=-1) > 1).all()  # picks farther apart than the radius
            torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
