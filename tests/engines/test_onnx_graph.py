"""Exact ONNX graph rewrites for ONNX Runtime: global poolings, 1×1 convolutions on 1×1 maps as Gemm."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from monai_das.engines.onnx_graph import _global_pools, _pointwise_gemms, _tidy_reshapes, for_runtime  # noqa: E402


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, outputs, inits, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_global_pools_replace_spatial_means_only():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(4)]
    axes = {"hw": [2, 3], "neg": [-1, -2], "w": [3], "c": [1]}
    inits = [helper.make_tensor(name, TensorProto.INT64, [len(v)], v) for name, v in axes.items()]
    nodes = [helper.make_node("ReduceMean", ["x", "hw"], ["y0"]),
             helper.make_node("ReduceMean", ["x", "neg"], ["y1"], keepdims=1),
             helper.make_node("ReduceMean", ["x", "hw"], ["y2"], keepdims=0),
             helper.make_node("ReduceMean", ["x", "w"], ["y3"])]
    model = _model(nodes, [x], outs, inits)
    data = {"x": np.random.default_rng(0).random((2, 3, 4, 5), dtype=np.float32)}
    before = _run(model, data)
    assert _global_pools(model) == 2
    assert [n.op_type for n in model.graph.node] == ["GlobalAveragePool"] * 2 + ["ReduceMean"] * 2
    # "neg" was read by a replaced node only; "hw" is still read, and "c", read by none, is not the rewrite's
    assert sorted(i.name for i in model.graph.initializer) == ["c", "hw", "w"]
    for a, b in zip(before, _run(model, data)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _se_block(h: int, w: int, kernel: int = 1, stride: int = 1, group: int = 1):
    """x (N×8×h×w) → GlobalAveragePool → Conv 8→4 → Relu → Conv 4→8 → HardSigmoid → x · s, and a 1×1 Conv 8→6 of x
    (with the given kernel, stride and group) as a second output."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((6, 8 // group, kernel, kernel)).astype(np.float32), "w3")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "w1", "b1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("HardSigmoid", ["c2"], ["s"]),
             helper.make_node("Mul", ["x", "s"], ["y"]),
             helper.make_node("Conv", ["x", "w3"], ["z"], strides=[stride, stride], group=group,
                              pads=[kernel // 2] * 4)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, h, w])
    zh, zw = (h + 2 * (kernel // 2) - kernel) // stride + 1, (w + 2 * (kernel // 2) - kernel) // stride + 1
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, h, w]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 6, zh, zw])]
    return _model(nodes, [x], outs, inits)


@pytest.mark.parametrize("h,w", [(1, 1), (3, 2)])
def test_pointwise_convolutions_on_one_pixel_become_gemm(h, w):
    model = _se_block(h, w)
    data = {"x": np.random.default_rng(0).standard_normal((5, 8, h, w)).astype(np.float32)}
    before = _run(model, data)
    counts = for_runtime(model)
    ops = [n.op_type for n in model.graph.node]
    # the squeeze-excitation layers always read 1×1 maps; the Conv of x only when x is 1×1
    assert counts["pointwise_gemms"] == (3 if h == w == 1 else 2) and ops.count("Gemm") == counts["pointwise_gemms"]
    # between the two Gemm no reshape is left: N×C in, activation, N×C×1×1 out
    assert ops[:6] == ["GlobalAveragePool", "Reshape", "Gemm", "Relu", "Gemm", "HardSigmoid"], ops
    # x · s on a map of more than one pixel: s spread over the map first (Reshape, MatMul with ones, Reshape)
    assert counts["broadcast_scales"] == ops.count("MatMul") == (0 if h == w == 1 else 1)
    assert ops.count("Reshape") == 4
    assert not {"w1", "w2"} & {i.name for i in model.graph.initializer}  # the 4-d weights are gone
    onnx.checker.check_model(model)
    for a, b in zip(before, _run(model, data)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for batch in (1, 3):  # the batch axis stays dynamic
        assert _run(model, {"x": data["x"][:batch]})[0].shape == (batch, 8, h, w)


@pytest.mark.parametrize("kernel,stride,group", [(3, 1, 1), (1, 2, 1), (1, 1, 2)])
def test_other_convolutions_are_left_alone(kernel, stride, group):
    model = _se_block(1, 1, kernel, stride, group)
    assert _pointwise_gemms(model) == 2  # the squeeze-excitation layers only
    _tidy_reshapes(model)
    assert [n.op_type for n in model.graph.node].count("Conv") == 1


@pytest.mark.parametrize("h,w,dtype,rewritten", [(2, 2, TensorProto.FLOAT, True), (4, 4, TensorProto.FLOAT, True),
                                                  (7, 7, TensorProto.FLOAT, False), (2, 2, TensorProto.DOUBLE, False)])
def test_per_channel_scales_on_small_maps_are_spread_first(h, w, dtype, rewritten):
    from monai_das.engines.onnx_graph import _broadcast_scales

    x = helper.make_tensor_value_info("x", dtype, ["N", 5, h, w])
    s = helper.make_tensor_value_info("s", dtype, ["N", 5, 1, 1])
    outs = [helper.make_tensor_value_info(n, dtype, ["N", 5, h, w]) for n in ("y", "z")]
    nodes = [helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("Mul", ["s", "x"], ["z"])]
    model = _model(nodes, [x, s], outs, [])
    np_type = np.float32 if dtype == TensorProto.FLOAT else np.float64
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((3, 5, h, w)).astype(np_type), "s": rng.random((3, 5, 1, 1)).astype(np_type)}
    before = _run(model, data)
    assert _broadcast_scales(model) == (2 if rewritten else 0)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("MatMul") == (2 if rewritten else 0)
    for a, b in zip(before, _run(model, data)):
        np.testing.assert_array_equal(a, b)  # s · 1 is s: the same products


def test_an_export_whose_rewrites_fail_is_written_as_exported(tmp_path, monkeypatch, caplog):
    """A graph the rewrites cannot read (here: shape inference fails) is exported unchanged, with a warning."""
    import torch

    from monai_das.engines import save_onnx
    from monai_das.networks import build_classifier

    def refuse(model, *args, **kwargs):
        raise ValueError("cannot infer")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="monai_das.engines.export"):
        path = save_onnx(build_classifier("uniform", 2, 6), tmp_path / "m.onnx", [1, 6, 12, 12])  # checked vs eager
    assert "the graph rewrites for ONNX Runtime were skipped (ValueError: cannot infer)" in caplog.text
    graph = onnx.load(path).graph  # as the exporter wrote it
    assert not any("__das" in n.name for n in graph.node) and "GlobalAveragePool" not in {n.op_type for n in graph.node}
