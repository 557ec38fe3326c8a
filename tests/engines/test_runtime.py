"""Inference engines (ONNX Runtime default, TorchScript, eager) agree, reuse the export, and keep any k."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_das.engines import ENGINES, inference_network, save_onnx
from monai_das.networks import OnnxClassifier, build_classifier

SHAPE = (1, 8, 16, 16)  # C×D×H×W: T = 8 slices


def _net(method="das", keep_ratio=0.5, seed=0):
    torch.manual_seed(seed)
    return build_classifier(method, 2, SHAPE[1], keep_ratio=keep_ratio).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.save({"model": _net().state_dict()}, root / "model.pt")
    return root / "model.pt"


def _run(network, x):
    logits = network(x)
    indices = network.last_indices if hasattr(network, "last_indices") else network.sample(x).indices
    return logits, indices


@pytest.mark.parametrize("keep_ratio", [0.5, 0.25, 1.0])
def test_engines_agree_at_any_k(ckpt, keep_ratio):
    """Same checkpoint, one trained k (4 of 8): every engine gives the same logits and kept indices at k = 4, 2, 8."""
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    out = {}
    for engine in ENGINES:
        net = inference_network(_net(keep_ratio=keep_ratio, seed=5), ckpt, engine, SHAPE,
                                onnx_path=ckpt.with_name("model.onnx"))
        if engine == "eager":  # the bundle's CheckpointLoader does this for eager
            net.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
        with torch.no_grad():
            out[engine] = _run(net, x)
    k = max(1, round(keep_ratio * SHAPE[1]))
    for engine in ("onnxruntime", "torchscript"):
        assert out[engine][1].shape == (3, k)
        assert torch.equal(out[engine][1], out["eager"][1]), engine
        assert torch.allclose(out[engine][0], out["eager"][0], atol=1e-4), engine


def test_onnx_export_is_reused_until_the_checkpoint_changes(tmp_path, caplog):
    ckpt = tmp_path / "model.pt"
    torch.save(_net().state_dict(), ckpt)
    onnx_path = tmp_path / "model.onnx"
    caplog.set_level("INFO", logger="monai_das.engines.runtime")
    inference_network(_net(), ckpt, "onnxruntime", SHAPE, onnx_path)
    assert "there is none" in caplog.text
    stamp = onnx_path.stat().st_mtime_ns
    caplog.clear()
    inference_network(_net(keep_ratio=0.25), ckpt, "onnxruntime", SHAPE, onnx_path)  # other k: same file (any k)
    assert onnx_path.stat().st_mtime_ns == stamp and "exporting" not in caplog.text
    torch.save(_net(seed=3).state_dict(), ckpt)  # retrained
    runner = inference_network(_net(), ckpt, "onnxruntime", SHAPE, onnx_path)
    assert onnx_path.stat().st_mtime_ns != stamp and "exported from another checkpoint" in caplog.text
    onnx_path.write_bytes(onnx_path.read_bytes()[:3000])  # damaged: a derived file, exported again
    caplog.clear()
    runner = inference_network(_net(), ckpt, "onnxruntime", SHAPE, onnx_path)
    assert "unreadable or not a monai_das export" in caplog.text
    expected = _net(seed=3)
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(runner(x), expected(x), atol=1e-4)

    # the study grid and slice axis are baked into the graph: other ones export again, never run the old file
    cube = (1, 8, 8, 8)
    torch.manual_seed(0)
    axial = build_classifier("das", 2, 8, keep_ratio=0.5, slice_axis=2).eval()
    state = torch.load(ckpt, weights_only=True)
    with pytest.raises(RuntimeError, match="classifier_settings: the weights were trained with"):
        axial.load_state_dict(state)  # weights of another slice axis: refused since they record it
    # a checkpoint of an earlier version (no settings entry) loads into another slice axis: the ONNX file follows
    state.pop("classifier_settings")
    torch.save(state, ckpt)
    axial.load_state_dict(state)
    inference_network(_net(), ckpt, "onnxruntime", SHAPE, onnx_path)  # exported again for this checkpoint
    caplog.clear()
    runner = inference_network(_net(), ckpt, "onnxruntime", cube, onnx_path)
    assert "another item_shape ([1, 8, 16, 16]; now [1, 8, 8, 8])" in caplog.text
    caplog.clear()
    runner = inference_network(build_classifier("das", 2, 8, keep_ratio=0.5, slice_axis=2), ckpt, "onnxruntime",
                               cube, onnx_path)
    assert "another slice_axis (0; now 2)" in caplog.text
    x = torch.rand(2, *cube, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(runner(x), axial(x), atol=1e-4)
        assert torch.equal(runner.last_indices, axial.sample(x).indices)
    # files whose metadata was rewritten, each exported again (a warning for a changed one), the last then reused
    import onnx

    from monai_das.engines.export import SOURCE_PROP
    from monai_das.networks.nets.onnx_classifier import DIGEST_PROP, check_onnx_digest

    def rewritten(edit) -> str:
        model = onnx.load(str(onnx_path))
        props = edit({p.key: p.value for p in model.metadata_props})
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        onnx.save(model, str(onnx_path))
        caplog.clear()
        for _ in range(2):
            inference_network(build_classifier("das", 2, 8, keep_ratio=0.5, slice_axis=2), ckpt, "onnxruntime",
                              cube, onnx_path)
        assert caplog.text.count("exporting") == 1 and check_onnx_digest(onnx_path) is True
        return caplog.text

    # an earlier version's record, without the graph rewrites: the same answers faster
    old = {"graph"}
    assert "exported from another version, without the graph rewrites for ONNX Runtime" in rewritten(lambda props: {
        **props, SOURCE_PROP: json.dumps({k: v for k, v in json.loads(props[SOURCE_PROP]).items() if k not in old})})
    # changed after its export (its digest does not match; trial T68e): not served
    card = json.dumps({"das_model": {"label_names": ["b", "a"]}})
    assert "the one there was changed after its export (its digest does not match)" in rewritten(
        lambda props: {**props, "metadata.json": card})
    # an earlier version's export without a digest (review R68f): so that it gets one
    assert "the one there records no digest of its graph and metadata" in rewritten(
        lambda props: {k: v for k, v in props.items() if k != DIGEST_PROP})
    # a configured network that does not fit the checkpoint is refused as by eager, also when the export is reused
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        inference_network(build_classifier("das", 3, 8, keep_ratio=0.5, slice_axis=2), ckpt, "onnxruntime", cube,
                          onnx_path)


def test_engine_errors(ckpt, tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        inference_network(_net(), ckpt, "tensorrt", SHAPE)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inference_network(_net(), tmp_path / "missing.pt", "onnxruntime", SHAPE)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "das.onnx"
    return save_onnx(_net(), path, SHAPE, metadata={"das_model": {"layout": "volume", "num_kept": 4}})


def test_onnx_classifier_any_k_and_bad_input(onnx_file):
    runner, net = OnnxClassifier(onnx_file), _net()
    assert runner.any_k and runner.num_samples == 4 and runner.num_frames == 8
    x = torch.rand(2, *SHAPE)
    for k in (1, 3, 8):
        logits, idx = runner.forward_with_indices(x, k)
        with torch.no_grad():
            e_logits, e_idx = net.forward_with_indices(x, k)
        assert torch.equal(idx, e_idx) and torch.allclose(logits, e_logits, atol=1e-4)
    for bad in (0, 9, 2.5):
        with pytest.raises(ValueError, match="num_samples|cannot keep k=9"):
            runner.forward_with_indices(x, bad)
    with pytest.raises(ValueError, match=r"das\.onnx.*\[batch, 1, 8, 16, 16\], got \[2, 1, 8, 16, 12\]"):
        runner(torch.rand(2, 1, 8, 16, 12))
    # as the eager network: no silent cast of raw integers, no NaN probabilities
    with pytest.raises(ValueError, match=r"das\.onnx' expects a floating point input.*uint8"):
        runner((x * 255).to(torch.uint8))
    bad = x.clone()
    bad[1, 0, 3, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"das\.onnx' contains NaN or Inf"):
        runner(bad)


def test_onnx_outputs_are_checked(onnx_file, monkeypatch):
    """A graph with an export's metadata returning kept indices [-1, 0, 7, 100] (T = 8) or [2, 2, 2, 2] had them
    reported as the study's kept frames (trial T64b): refused naming the file."""
    runner = OnnxClassifier(onnx_file)
    x = torch.rand(1, *SHAPE)
    real = runner.session.run
    pred, _ = real(["pred", "indices"], {"image": x.numpy(), "num_samples": np.array([4], np.int64)})
    for indices, match in (([[-1, 0, 7, 100]], r"indices -1\.\.100, outside the T=8 frames it takes \(0\.\.7\)"),
                           ([[2, 2, 2, 2]], r"indices \[2, 2, 2, 2\] with repeats"),
                           ([[0, 1, 2]], r"'indices' of shape \[1, 3\] for a batch of 1 keeping k=4"),
                           ([[0.0, 1.0, 2.0, 3.0]], r"'indices' of dtype float64")):
        monkeypatch.setattr(runner.session, "run", lambda names, feeds, i=indices: [pred, np.array(i)])
        with pytest.raises(RuntimeError, match=r"the ONNX model '.*das\.onnx' returned .*" + match):
            runner.forward_with_indices(x, 4)
    monkeypatch.setattr(runner.session, "run", lambda names, feeds: [pred[:, :, None], np.array([[0, 1, 2, 3]])])
    with pytest.raises(RuntimeError, match=r"returned 'pred' of shape \[1, 2, 1\] for a batch of 1"):
        runner.forward_with_indices(x, 4)


@pytest.mark.parametrize("facts, match", [
    (None, r"meta\.onnx' has no 'monai_das\.network' metadata"),
    ({"layout": "volume", "slice_axis": "x", "num_frames": 8}, r"meta\.onnx': unusable network metadata"),
    ({"layout": "stack", "slice_axis": 0, "num_frames": 8}, r"meta\.onnx': unusable network metadata"),
])
def test_onnx_export_with_damaged_network_metadata(onnx_file, tmp_path, facts, match):
    """An export whose ``monai_das.network`` facts (layout, slice axis, T) are missing or unusable is refused,
    naming the file, never read with a guessed axis."""
    import json

    import onnx

    from monai_das.networks.nets.onnx_classifier import DIGEST_PROP, NETWORK_PROP

    model = onnx.load(str(onnx_file))  # as a file without a digest writes them (an edited one is refused first)
    props = {p.key: p.value for p in model.metadata_props if p.key not in (NETWORK_PROP, DIGEST_PROP)}
    if facts is not None:
        props[NETWORK_PROP] = json.dumps(facts)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(tmp_path / "meta.onnx"))
    with pytest.raises(ValueError, match=match):
        OnnxClassifier(tmp_path / "meta.onnx")


def test_an_export_changed_after_it_was_written_is_refused(onnx_file, tmp_path, caplog):
    """Trial T68e: an ONNX file whose embedded card was edited (class names swapped, another recipe) or that carries
    another model's card was served without a word. save_onnx records a digest of the graph and every property;
    OnnxClassifier refuses a file that no longer matches it, and bundle inference exports such a file again."""
    import json
    import logging

    import onnx

    from monai_das.networks.nets.onnx_classifier import DIGEST_PROP, check_onnx_digest

    assert check_onnx_digest(onnx_file) is True
    OnnxClassifier(onnx_file)  # as written: served
    model = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in model.metadata_props}
    card = json.loads(props.get("metadata.json", "{}"))
    card["edited"] = True  # any change of the card, e.g. class names swapped
    props["metadata.json"] = json.dumps(card)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    assert check_onnx_digest(tmp_path / "edited.onnx") is False
    with pytest.raises(ValueError, match=r"edited\.onnx' was changed after its export: its graph or metadata .* do not "
                                         r"match the 'monai_das\.digest' recorded at export"):
        OnnxClassifier(tmp_path / "edited.onnx")
    from monai_das.engines import read_onnx_card

    with pytest.raises(ValueError, match=r"edited\.onnx' was changed after its export"):
        read_onnx_card(tmp_path / "edited.onnx")
    assert read_onnx_card(onnx_file) == {"das_model": {"layout": "volume", "num_kept": 4}}
    del props[DIGEST_PROP]  # a file without a digest (an older export): served, said at INFO
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(tmp_path / "older.onnx"))
    assert check_onnx_digest(tmp_path / "older.onnx") is None
    with caplog.at_level(logging.INFO, logger="monai_das.networks.nets.onnx_classifier"):
        OnnxClassifier(tmp_path / "older.onnx")
    assert "older.onnx' records no 'monai_das.digest'" in caplog.text


def test_an_export_describes_itself_to_model_viewers(onnx_file):
    """Trial T68e: the export's description (what Netron and ONNX Runtime's modelmeta show) was empty and its
    version int64's largest value."""
    runner = OnnxClassifier(onnx_file)
    meta = runner.session.get_modelmeta()
    assert meta.description == "monai_das classifier: DASampler keeping 4 of 8 slices (any k: input num_samples)"
    assert meta.version == 1


def test_the_digest_is_checked_on_the_bytes_onnx_runtime_runs(onnx_file, tmp_path, monkeypatch):
    """R68f: OnnxClassifier checked the digest on a second read of the file, not on what ONNX Runtime loaded, so an
    edited file swapped for the export between the two reads ran unchecked. One read now serves both."""
    import shutil

    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in model.metadata_props}
    props["metadata.json"] = json.dumps({"das_model": {"layout": "volume", "num_kept": 4}, "edited": True})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    swapped = tmp_path / "swapped.onnx"
    onnx.save(model, str(swapped))
    session = ort.InferenceSession

    def load_then_swap(source, *args, **kwargs):  # the edited file is loaded, then the export put in its place
        made = session(source, *args, **kwargs)
        shutil.copyfile(onnx_file, swapped)
        return made

    monkeypatch.setattr(ort, "InferenceSession", load_then_swap)
    with pytest.raises(ValueError, match=r"swapped\.onnx' was changed after its export"):
        OnnxClassifier(swapped)


def test_onnx_file_that_is_not_an_export(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 16, 16])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match=r"other\.onnx' is not a monai_das ONNX export.*'pred' and 'indices'"):
        OnnxClassifier(path)
    with pytest.raises(FileNotFoundError):
        OnnxClassifier(tmp_path / "none.onnx")
    # half a file (a copy cut short): said, with what to do, not only ONNX Runtime's "INVALID_PROTOBUF"
    path = save_onnx(_net(), tmp_path / "whole.onnx", SHAPE, check=False)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cannot load '.*cut\.onnx' \(not a whole ONNX file: truncated or damaged "
                                         r"in a copy\? export it again"):
        OnnxClassifier(cut)


def test_static_k_export_refuses_other_k(tmp_path):
    """ADPS's k picks are unrolled steps: its export keeps the traced k and says so."""
    path = save_onnx(_net("adps"), tmp_path / "adps.onnx", SHAPE)
    runner = OnnxClassifier(path)
    assert not runner.any_k and runner.num_samples == 4
    with pytest.raises(ValueError, match="exported for k=4"):
        runner.forward_with_indices(torch.rand(1, *SHAPE), 2)
    assert np.isfinite(runner(torch.rand(1, *SHAPE)).numpy()).all()


def test_fixed_k_export_at_another_k_keeps_the_trained_export(tmp_path, caplog):
    """Inference at another k with a fixed-k graph (ADPS) exports it to its own file: the export at the card's trained
    k, the one the Deploy app serves, is not replaced."""
    from monai_das.engines import read_model_card
    from monai_das.handlers import CARD_KEY
    from monai_das.utils.io import file_digest, write_json_atomic

    ckpt = tmp_path / "model.pt"
    torch.save({"model": _net("adps").state_dict()}, ckpt)
    write_json_atomic({CARD_KEY: {"checkpoint_sha256": file_digest(ckpt), "num_kept": 4}}, tmp_path / "metadata.json")
    onnx_path = tmp_path / "model.onnx"
    caplog.set_level("INFO", logger="monai_das.engines.runtime")
    inference_network(_net("adps"), ckpt, "onnxruntime", SHAPE, onnx_path)
    stamp = onnx_path.stat().st_mtime_ns
    runner = inference_network(_net("adps", keep_ratio=0.25), ckpt, "onnxruntime", SHAPE, onnx_path)
    assert onnx_path.stat().st_mtime_ns == stamp and OnnxClassifier(onnx_path).num_samples == 4
    assert runner.num_samples == 2 and OnnxClassifier(tmp_path / "model.k2.onnx").num_samples == 2
    assert read_model_card(tmp_path / "metadata.json")[CARD_KEY]["num_kept"] == 4
    caplog.clear()  # both reused from now on
    inference_network(_net("adps"), ckpt, "onnxruntime", SHAPE, onnx_path)
    inference_network(_net("adps", keep_ratio=0.25), ckpt, "onnxruntime", SHAPE, onnx_path)
    assert "exporting" not in caplog.text


def test_context_frames_export_any_k(tmp_path):
    """A 2.5D network (neighbours as channels) exports with its dynamic k and agrees with eager."""
    from monai_das.networks import OnnxClassifier

    torch.manual_seed(0)
    net = build_classifier("das", 2, SHAPE[1], keep_ratio=0.5, context_frames=1).eval()
    path = save_onnx(net, tmp_path / "ctx.onnx", SHAPE)
    x = torch.rand(2, *SHAPE)
    for k in (3, 6):
        with torch.no_grad():
            logits, idx = net.forward_with_indices(x, k)
        pred, ort_idx = OnnxClassifier(path, num_samples=k).forward_with_indices(x)
        assert torch.equal(torch.as_tensor(ort_idx), idx)
        assert torch.allclose(torch.as_tensor(pred).softmax(-1), logits.softmax(-1), atol=1e-4)
