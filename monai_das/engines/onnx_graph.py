"""
Exact rewrites of an exported ONNX graph into operators ONNX Runtime's CPU kernels run faster (:func:`for_runtime`,
applied by :func:`monai_das.engines.save_onnx` to every file it writes). Each one computes the same values (float
rounding aside); benchmarks/README.md, "What made inference and training faster", has the measurements.
"""

from __future__ import annotations

from typing import Any

__all__ = ["for_runtime", "REWRITES"]

#: which rewrites :func:`for_runtime` makes, recorded in an export's source record
#: (:func:`monai_das.engines.export.onnx_source`): a file written before them is exported again by the bundle's
#: inference (the same answers, faster); change it when a rewrite is added or changed
REWRITES = "global_pools,pointwise_gemms,broadcast_scales/1"

#: element-wise operators with one input that a reshape can be moved across (the same values in any shape)
_UNARY = frozenset({"Relu", "HardSigmoid", "HardSwish", "Sigmoid", "LeakyRelu", "Tanh"})
#: name suffix of the reshapes :func:`_pointwise_gemms` adds (only those are moved, merged or dropped afterwards)
_OWN = "__das_reshape"


def for_runtime(model: Any) -> dict[str, int]:
    """
    Rewrite ``model`` (an ``onnx.ModelProto``, in place) for ONNX Runtime's CPU execution provider:

    - :func:`_global_pools`: ``ReduceMean`` over every axis after the first two (``keepdims``) → ``GlobalAveragePool``;
    - :func:`_pointwise_gemms`: a 1×1 ``Conv`` on 1×1 maps → ``Gemm`` between two reshapes, whose reshapes are then
      moved past element-wise activations and merged or dropped (:func:`_tidy_reshapes`);
    - :func:`_broadcast_scales`: ``x · s`` with ``s`` one value per channel (squeeze-excitation) on small maps →
      ``s`` spread over the map by a ``MatMul`` with ones, then a ``Mul`` of equal shapes.

    Returns how many nodes each rewrite replaced.
    """
    counts = {"global_pools": _global_pools(model), "pointwise_gemms": _pointwise_gemms(model)}
    _tidy_reshapes(model)
    counts["broadcast_scales"] = _broadcast_scales(model)
    return counts


def _shapes(model: Any, elem_type: int | None = None) -> dict[str, list[int | None]]:
    """
    Static shapes (``None`` for a symbolic axis) of the graph's tensors, by ONNX shape inference (only tensors of
    ``elem_type``, an ``onnx.TensorProto`` data type, when given).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    out = {}
    for value in [*inferred.value_info, *inferred.input]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and elem_type in (None, tensor.elem_type):
            out[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return out


def _constants(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    return values


def _drop_initializers(graph: Any, names: set[str]) -> None:
    """Remove those of ``names`` that no node reads any more."""
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name in names - used]:
        graph.initializer.remove(initializer)


def _replace(graph: Any, node: Any, new: list) -> None:
    """Put ``new`` nodes where ``node`` was (the graph stays topologically sorted)."""
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, item in enumerate(new):
        graph.node.insert(position + offset, item)


def _global_pools(model: Any) -> int:
    """
    Replace every ``ReduceMean`` over all axes after the first two (``keepdims``) by ``GlobalAveragePool``, the same
    means: the dynamo exporter writes adaptive average pooling to 1 pixel (the squeeze-excitation blocks and the last
    pooling of the encoder) as ``ReduceMean``, which ONNX Runtime's NCHWc layout transformer does not take, so each
    one reordered the convolutions' blocked output back to NCHW and the next convolution's input to blocks again.
    ``GlobalAveragePool`` reads the blocked layout. On maps of one pixel the mean is the value itself: ``Identity``.
    Returns how many nodes were replaced.
    """
    import numpy as np
    from onnx import helper

    graph = model.graph
    shapes = _shapes(model)
    rank = {name: len(shape) for name, shape in shapes.items()}
    constants = _constants(graph)
    replaced, axes_inputs = 0, set()
    for node in [n for n in graph.node if n.op_type == "ReduceMean"]:
        r = rank.get(node.input[0], 0)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = constants.get(node.input[1]) if len(node.input) > 1 else attrs.get("axes")
        if r < 3 or axes is None or attrs.get("keepdims", 1) != 1:
            continue
        if sorted(int(a) % r for a in np.atleast_1d(axes)) != list(range(2, r)):
            continue
        one_pixel = all(d == 1 for d in shapes[node.input[0]][2:])  # the mean of one value: ONNX Runtime drops it
        _replace(graph, node, [helper.make_node("Identity" if one_pixel else "GlobalAveragePool", [node.input[0]],
                                                list(node.output), name=node.name)])
        replaced += 1
        axes_inputs.update(node.input[1:])
    _drop_initializers(graph, axes_inputs)
    return replaced


def _pointwise_gemms(model: Any) -> int:
    """
    Replace every 1×1 ``Conv`` (one group, stride 1, no padding, weights in the file) whose input maps are 1×1 by
    ``Reshape`` to ``N×C_in`` → ``Gemm`` → ``Reshape`` to ``N×C_out×1×1``: the same products. ONNX Runtime runs a
    convolution one image at a time, so on 1×1 maps (the squeeze-excitation layers, and on 28×28 frames MobileNetV3's
    last 1×1 layers) each image is a matrix-vector product that reads all the weights again; one ``Gemm`` reads them
    once for the batch. Returns how many nodes were replaced.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = _shapes(model)
    weights = {i.name: i for i in graph.initializer}
    replaced, old_weights = 0, set()
    for node in list(graph.node):
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(weights[node.input[1]])
        shape = shapes.get(node.input[0])
        if (w.ndim < 3 or any(s != 1 for s in w.shape[2:]) or attrs.get("group", 1) != 1
                or any(v != 1 for v in attrs.get("strides", [1])) or any(v != 0 for v in attrs.get("pads", [0]))
                or any(v != 1 for v in attrs.get("dilations", [1]))
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or shape is None or len(shape) != w.ndim or any(s != 1 for s in shape[2:])):
            continue
        cout, cin = w.shape[:2]
        name = f"{node.name or node.output[0]}__das_gemm"
        matrix = numpy_helper.from_array(np.ascontiguousarray(w.reshape(cout, cin)), f"{name}_weight")
        flat = numpy_helper.from_array(np.array([-1, cin], np.int64), f"{name}_flat")
        maps = numpy_helper.from_array(np.array([-1, cout] + [1] * (w.ndim - 2), np.int64), f"{name}_maps")
        graph.initializer.extend([matrix, flat, maps])
        _replace(graph, node, [
            helper.make_node("Reshape", [node.input[0], flat.name], [f"{name}_in"], name=f"{name}_in{_OWN}"),
            helper.make_node("Gemm", [f"{name}_in", matrix.name, *node.input[2:3]], [f"{name}_out"], transB=1,
                             name=name),
            helper.make_node("Reshape", [f"{name}_out", maps.name], list(node.output), name=f"{name}_out{_OWN}"),
        ])
        replaced += 1
        old_weights.add(node.input[1])
    _drop_initializers(graph, old_weights)
    return replaced


def _tidy_reshapes(model: Any) -> None:
    """
    Around the reshapes :func:`_pointwise_gemms` added (those only): move one that feeds an element-wise activation
    (its only reader) past it, merge one that reads another one (its only reader), and drop one whose input already
    has its shape. Between two ``Gemm`` of a squeeze-excitation block (``N×C`` → ``N×C×1×1`` → activation → ``N×C``)
    no reshape is left, and ONNX Runtime fuses the activation into the first ``Gemm``.
    """
    graph = model.graph

    def readers(name: str) -> int:
        return sum(name in n.input for n in graph.node) + any(o.name == name for o in graph.output)

    def own(node: Any) -> bool:
        return node is not None and node.op_type == "Reshape" and node.name.endswith(_OWN)

    changed = True
    while changed:
        changed = False
        producer = {o: n for n in graph.node for o in n.output}
        for act in list(graph.node):
            reshape = producer.get(act.input[0]) if act.op_type in _UNARY and len(act.input) == 1 else None
            if not own(reshape) or readers(reshape.output[0]) != 1:
                continue
            # x → Reshape → mid → act → y   becomes   x → act → mid → Reshape → y
            mid, y = act.input[0], act.output[0]
            act.input[0], act.output[0] = reshape.input[0], mid
            reshape.input[0], reshape.output[0] = mid, y
            graph.node.remove(reshape)
            graph.node.insert(list(graph.node).index(act) + 1, reshape)
            changed = True
        producer = {o: n for n in graph.node for o in n.output}
        for second in list(graph.node):
            first = producer.get(second.input[0]) if own(second) else None
            if own(first) and readers(first.output[0]) == 1:  # Reshape(Reshape(x, a), b) = Reshape(x, b)
                second.input[0] = first.input[0]
                graph.node.remove(first)
                changed = True
    del graph.value_info[:]  # names were moved between tensors of other shapes: infer them again
    shapes, constants = _shapes(model), _constants(graph)
    outputs = {o.name for o in graph.output}
    for reshape in [n for n in graph.node if own(n) and n.output[0] not in outputs]:
        target, have = [int(v) for v in constants[reshape.input[1]]], shapes.get(reshape.input[0])
        if have is None or len(have) != len(target) or None in have[1:] or have[1:] != target[1:]:
            continue
        for node in graph.node:  # its input already has the target shape ([N, C] → [-1, C])
            node.input[:] = [reshape.input[0] if name == reshape.output[0] else name for name in node.input]
        graph.node.remove(reshape)
    _drop_initializers(graph, {i.name for i in graph.initializer if "__das_gemm" in i.name})


#: largest map (pixels) on which :func:`_broadcast_scales` spreads a per-channel scale (measured: 2×2 and 4×4 maps
#: gain, 7×7 maps do not)
_SMALL_MAP = 16


def _broadcast_scales(model: Any) -> int:
    """
    Replace ``Mul(x, s)`` with ``x`` ``N×C×H×W`` (``H·W`` of 2 to :data:`_SMALL_MAP` pixels) and ``s`` ``N×C×1×1``
    (a squeeze-excitation gate) by ``s`` reshaped to ``(N·C)×1``, ``MatMul`` with a ``1×(H·W)`` row of ones,
    reshaped to ``x``'s shape, then ``Mul`` of equal shapes: the same products (``s · 1`` is ``s``). ONNX Runtime
    broadcasts a per-channel value one row of ``H·W`` pixels at a time, at a cost per row: on 2×2 maps 3× slower
    than the spread and the plain product (one thread: 40 vs 13 µs for 14 frames of 240 channels, 527 vs 181 µs for
    224). Returns how many nodes were replaced.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = _shapes(model, onnx.TensorProto.FLOAT)  # the ones are float32
    replaced = 0
    for node in list(graph.node):
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        a, b = (shapes.get(name) for name in node.input)
        if a is None or b is None or len(a) != len(b) or len(a) < 3:
            continue
        s = 1 if all(d == 1 for d in b[2:]) else 0  # which input is the per-channel scale
        xs, ss = (a, b) if s == 1 else (b, a)
        pixels = int(np.prod(xs[2:])) if None not in xs[1:] else 0
        if not (1 < pixels <= _SMALL_MAP and ss[1] == xs[1] and all(d == 1 for d in ss[2:])):
            continue
        name = f"{node.name or node.output[0]}__das_spread"
        column = numpy_helper.from_array(np.array([-1, 1], np.int64), f"{name}_column")
        ones = numpy_helper.from_array(np.ones((1, pixels), np.float32), f"{name}_ones")
        like = numpy_helper.from_array(np.array([-1, *xs[1:]], np.int64), f"{name}_like")
        graph.initializer.extend([column, ones, like])
        inputs = list(node.input)
        inputs[s] = f"{name}_full"
        _replace(graph, node, [
            helper.make_node("Reshape", [node.input[s], column.name], [f"{name}_col"], name=f"{name}_col"),
            helper.make_node("MatMul", [f"{name}_col", ones.name], [f"{name}_rows"], name=f"{name}_rows"),
            helper.make_node("Reshape", [f"{name}_rows", like.name], [f"{name}_full"], name=f"{name}_full"),
            helper.make_node("Mul", inputs, list(node.output), name=node.name),
        ])
        replaced += 1
    return replaced
