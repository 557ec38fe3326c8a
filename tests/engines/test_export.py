"""ONNX export with a dynamic batch axis and the model card embedded in metadata_props; card → config overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_das.engines.export import (
    CARD_PROP,
    ExportedClassifier,
    card_overrides,
    check_card_for_parser,
    export_onnx,
    export_torchscript,
    read_model_card,
    read_onnx_card,
    save_onnx,
)
from monai_das.handlers import build_model_card
from monai_das.networks import build_classifier

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ITEM = [1, 8, 16, 12]  # C×D×H×W, non-cubic
FACTS = {"layout": "volume", "spatial_size": ITEM[1:], "image_shape": ITEM, "slice_axis": 0, "num_frames": 8,
         "num_kept": 4, "in_channels": 1, "num_classes": 2, "label_names": ["no", "yes"], "method": "das",
         "keep_ratio": 0.5, "temporal_head": "mean", "encoder": None, "encoder_kwargs": {},
         "recipe": {"layout": "volume", "spatial_size": ITEM[1:], "slice_axis": 0}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=8, keep_ratio=0.5).eval()
    card = build_model_card({"version": "0.1.0", "eval_metrics": {"auc": 0.0}}, FACTS, {"val_auc": 0.8})
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    save_onnx(net, path, ITEM, metadata=card)  # checks batch 1 and 3 with onnxruntime itself
    return path, net, card


def test_onnx_has_dynamic_batch_and_matches_eager(exported):
    import onnx

    path, net, _ = exported
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == "image" and model.graph.output[0].name == "pred"
    assert [i.name for i in model.graph.input] == ["image", "num_samples"]  # any k at inference
    assert [o.name for o in model.graph.output] == ["pred", "indices"]
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == ITEM
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.rand(batch, *ITEM, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = net(x).numpy()
        k = net.sampler.num_samples
        got, kept = sess.run(None, {"image": x.numpy(), "num_samples": np.array([k], dtype=np.int64)})
        assert got.shape == (batch, 2) and kept.shape == (batch, k)
        assert np.abs(got - expected).max() <= 1e-4 * (1 + np.abs(expected).max())  # float32 rounding
        with torch.no_grad():
            assert np.array_equal(kept, net.sample(x).indices.numpy())  # second output: the kept frames


def test_onnx_is_rewritten_for_onnx_runtime(exported):
    """The encoder's poolings to 1 pixel are ``GlobalAveragePool`` and its 1×1 layers on 1×1 maps ``Gemm``
    (monai_das.engines.onnx_graph; the file matches eager PyTorch: the fixture's check and the test above)."""
    import onnx

    ops = [n.op_type for n in onnx.load(str(exported[0])).graph.node]
    assert ops.count("GlobalAveragePool") >= 10  # 9 squeeze-excitation blocks + the last pooling
    assert ops.count("Gemm") >= 18  # their 2 layers each, on N×C


def test_onnx_carries_the_card_as_plain_json(exported):
    import onnx

    path, _, card = exported
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(props[CARD_PROP]) == card
    read = read_onnx_card(path)
    assert read == card and read["eval_metrics"] == {"val_auc": 0.8}  # the template's placeholder is gone
    assert read["das_model"]["image_shape"] == ITEM
    assert read["network_data_format"]["inputs"]["image"]["spatial_shape"] == ITEM[1:]


def test_card_overrides_take_plain_values_only(tmp_path):
    card = build_model_card(None, FACTS)
    over = card_overrides(card)
    assert over["info"] == {"layout": "volume", "num_frames": 8, "in_channels": 1, "num_classes": 2,
                            "slice_axis": 0, "spatial_size": ITEM[1:], "image_shape": ITEM}
    assert over["method"] == "das" and over["keep_ratio"] == 0.5 and over["encoder"] is None
    assert over["context_frames"] == 0  # a card without the key (written before 2.5D inputs) means single frames
    assert card_overrides(build_model_card(None, {**FACTS, "context_frames": 2}))["context_frames"] == 2
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="context_frames"):
            card_overrides(build_model_card(None, {**FACTS, "context_frames": bad}))
    hostile = build_model_card(None, {**FACTS, "method": "$__import__('os').system('true')"})
    with pytest.raises(ValueError, match="not a plain value"):
        card_overrides(hostile)
    hostile = build_model_card(None, {**FACTS, "encoder_kwargs": {"x": "@network_def"}})
    with pytest.raises(ValueError, match="not a plain value"):
        card_overrides(hostile)
    # keys are data too: MONAI would instantiate a `_target_` dict it reaches through @encoder_kwargs
    for kwargs in ({"_target_": "os.system", "command": "true"}, {"act": {"_target_": "os.getcwd"}},
                   {"_requires_": "$print(1)"}, {"x#y": 1}, {"@k": 1}):
        with pytest.raises(ValueError, match="is not a plain name"):
            card_overrides(build_model_card(None, {**FACTS, "encoder_kwargs": kwargs}))
        with pytest.raises(ValueError, match="is not a plain name"):
            card_overrides(build_model_card(None, {**FACTS, "sampler_kwargs": kwargs}))
    # the bundle's configs/metadata.json is a template, not a card
    template = tmp_path / "metadata.json"
    template.write_text(json.dumps({"version": "0.1.0", "network_data_format": {}}))
    with pytest.raises(ValueError, match="not a model card"):
        read_model_card(template)


def test_card_encoder_arguments_never_load_weights(caplog):
    """A card is data: rebuilding its network never downloads or reads weights (the checkpoint holds them)."""
    from monai_das.networks.factory import architecture_kwargs

    card = build_model_card(None, {**FACTS, "encoder_kwargs": {"pretrained": True, "weights_path": "/etc/passwd",
                                                                "dropout": 0.1, "stem_stride": 1}})
    with caplog.at_level("INFO", logger="monai_das.engines.export"):
        over = card_overrides(card)
    assert over["encoder_kwargs"] == {"dropout": 0.1, "stem_stride": 1, "pretrained": False}
    assert "['pretrained', 'weights_path'] load weights" in caplog.text
    hostile = {"pretrained_url": "http://127.0.0.1:9/evil.pth", "pretrained_state_dict_key": "x", "out_classes": 2}
    assert architecture_kwargs("HoVerNet", hostile) == {"out_classes": 2}
    # Transchex fetches from Hugging Face or reads a file by these (trial T67b); SwinUNETR's drop rate stays
    fetch = {"path_or_repo_id": "evil/repo", "filename": "/etc/passwd", "num_classes": 2}
    assert architecture_kwargs("Transchex", fetch) == {"num_classes": 2}
    assert architecture_kwargs("SwinUNETR", {"dropout_path_rate": 0.1}) == {"dropout_path_rate": 0.1}
    # EfficientNetBN downloads ImageNet weights unless told not to; resnet18 takes `pretrained` too
    assert architecture_kwargs("EfficientNetBN", {"model_name": "efficientnet-b0"}) == \
        {"model_name": "efficientnet-b0", "pretrained": False}
    assert architecture_kwargs("monai.networks.nets.resnet18", {"num_classes": 8}) == \
        {"num_classes": 8, "pretrained": False}
    assert architecture_kwargs("DenseNet121", {"out_channels": 8, "progress": False}) == \
        {"out_channels": 8, "progress": False, "pretrained": False}
    with pytest.raises(ValueError, match="TorchVisionFCModel was trained with pretrained weights"):
        architecture_kwargs("TorchVisionFCModel", {"model_name": "inception_v3", "weights": "DEFAULT"})
    assert architecture_kwargs("TorchVisionFCModel", {"model_name": "resnet18", "pretrained": False}) == \
        {"model_name": "resnet18", "pretrained": False}
    net = build_classifier("das", 2, 8, encoder="EfficientNetBN",  # built offline: no download attempted
                           encoder_kwargs=architecture_kwargs("EfficientNetBN", {"model_name": "efficientnet-b0"}))
    assert net.eval()(torch.rand(1, 1, 8, 32, 32)).shape == (1, 2)


def test_a_card_monai_would_expand_is_refused(tmp_path):
    """ckpt_export reads the card with MONAI's ConfigParser: a '%file#key' value would copy another file into the
    export, '$'/'@' values and '_target_' keys are code or references: refused before the export, naming the key."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"token": "SECRET-123"}))
    card = build_model_card(None, FACTS)
    check_card_for_parser(card, "card.json")  # a card written by the training is plain data
    for where, value in ((("description",), f"%{secret}#token"), (("das_model", "label_names", 0), "$print(1)"),
                         (("authors",), "@network_def")):
        bad = json.loads(json.dumps(card))
        node = bad
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value
        with pytest.raises(ValueError, match=rf"model card 'card.json': value {'#'.join(map(str, where))}=.* starts "
                                             rf"with '\{value[0]}' \("):
            check_card_for_parser(bad, "card.json")
    with pytest.raises(ValueError, match=r"value das_model#label_names#1='rate 5%#high' holds '%#' or '@#' \(a "
                                         r"relative id"):
        bad = json.loads(json.dumps(card))
        bad["das_model"]["label_names"][1] = "rate 5%#high"
        check_card_for_parser(bad, "card.json")
    # a '#' is rewritten to '::' by the parser ('grade #2' → 'grade ::2' in the embedded metadata): refused in a class
    # name, kept in other text (a description, a path)
    with pytest.raises(ValueError, match=r"value das_model#label_names#1='grade #2' holds '#' \(MONAI's config parser "
                                         r"rewrites it to '::'"):
        bad = json.loads(json.dumps(card))
        bad["das_model"]["label_names"][1] = "grade #2"
        check_card_for_parser(bad, "card.json")
    check_card_for_parser({**card, "description": "see issue #12"}, "card.json")
    with pytest.raises(ValueError, match=r"key #extra#'_target_' is a MONAI config directive"):
        check_card_for_parser({**card, "extra": {"_target_": "os.getcwd"}}, "card.json")
    # export_torchscript refuses before MONAI's parser reads the card (the checkpoint is not even opened)
    models = tmp_path / "b" / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"not read")
    (models / "metadata.json").write_text(json.dumps({**card, "description": f"%{secret}#token"}))
    with pytest.raises(ValueError, match="value description=.* starts with '%'"):
        export_torchscript(tmp_path / "b", "unused_inference.json")
    assert not (models / "model.ts").exists()


def test_export_keeps_the_exporters_chatter_out_of_the_log(tmp_path, caplog):
    """A bundle logs at INFO: the exporter's per-node/per-initializer INFO lines stay out, and levels come back."""
    import logging

    caplog.set_level(logging.INFO)
    before = {n: logging.getLogger(n).level for n in ("onnxscript", "onnx_ir", "torch.onnx")}
    torch.manual_seed(0)
    training = build_classifier("das", 2, 8, keep_ratio=0.5).train()
    training.encoder.eval()  # a part the caller froze stays frozen
    modes = {name: m.training for name, m in training.named_modules()}
    save_onnx(training, tmp_path / "m.onnx", ITEM)
    assert {name: m.training for name, m in training.named_modules()} == modes  # put back as given (trial W)
    noisy = [r.name for r in caplog.records if r.name.split(".")[0] in ("onnxscript", "onnx_ir")
             or r.name.startswith("torch.onnx")]
    assert not noisy, noisy[:5]
    assert {n: logging.getLogger(n).level for n in before} == before
    assert any(r.name == "monai_das.engines.export" for r in caplog.records)  # our own line is still there


def test_export_check_allows_rounding_at_the_logits_scale_not_a_wrong_graph(exported, monkeypatch):
    """The check passes ONNX Runtime's float32 rounding, which grows with the logits (a 1-epoch model gave logits
    near 220, two classes 0.01 apart, and probabilities 5e-3 apart at batch 3), and refuses a graph that is wrong."""
    from monai_das.engines import export
    from monai_das.networks.nets.onnx_classifier import OnnxClassifier

    path, net, _ = exported
    real = OnnxClassifier.forward_with_indices

    def scaled(scale, shift):
        def run(self, x, k=None):
            logits, idx = real(self, x, k)
            big = torch.stack([logits[:, 0] * 0 + 154.53, logits[:, 0] * 0 + 154.52], -1)
            return big * scale + shift, idx
        return run

    def eager_big(x, k=None):
        logits, idx = type(net).forward_with_indices(net, x, k)
        return torch.stack([logits[:, 0] * 0 + 154.53, logits[:, 0] * 0 + 154.52], -1), idx

    monkeypatch.setattr(net, "forward_with_indices", eager_big)
    monkeypatch.setattr(OnnxClassifier, "forward_with_indices", scaled(1.0, torch.tensor([0.04, 0.0])))
    export._check_onnx(net, path, ITEM, 1e-3)  # probabilities 1e-2 apart, logits 2.6e-4 of their scale: rounding
    monkeypatch.setattr(OnnxClassifier, "forward_with_indices", scaled(1.0, torch.tensor([0.5, 0.0])))
    with pytest.raises(RuntimeError, match=r"logit difference\| 0\.5 for logits up to 155"):
        export._check_onnx(net, path, ITEM, 1e-3)


def test_random_baseline_exports_and_a_wrong_item_shape_is_named(tmp_path):
    """The random sampler draws again in every run: the export check compares the graph's logits with the eager
    network's on the frames the graph drew. A wrong item_shape gets the network's own message."""
    from monai_das.networks import OnnxClassifier

    torch.manual_seed(0)
    net = build_classifier("random", 2, num_frames=12, keep_ratio=0.25).eval()
    path = save_onnx(net, tmp_path / "random.onnx", [1, 12, 16, 16])
    idx = OnnxClassifier(path).forward_with_indices(torch.rand(2, 1, 12, 16, 16), 5)[1]
    assert idx.shape == (2, 5) and all(len(set(r.tolist())) == 5 for r in idx)
    das = build_classifier("das", 2, num_frames=12, keep_ratio=0.25).eval()
    with pytest.raises(ValueError, match=r"x\.onnx' with item_shape \[3, 12, 16, 16\]: .*3 channel"):
        save_onnx(das, tmp_path / "x.onnx", [3, 12, 16, 16])
    assert not (tmp_path / "x.onnx").exists()


INFERENCE = str(Path(__file__).resolve().parents[2] / "bundles" / "das_volume_classification" / "configs" /
                "inference.json")


def _trained_root(root, facts=FACTS, num_classes=2, card_hash="own"):
    """A bundle root as training leaves it: models/model.pt and its card (``card_hash``: ``"own"`` the checkpoint's
    SHA-256, ``None`` none recorded (an older run), else that text)."""
    from monai_das.utils.io import file_digest

    models = root / "models"
    models.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_classifier("das", num_classes, num_frames=8, keep_ratio=0.5).state_dict(), models / "model.pt")
    digest = file_digest(models / "model.pt") if card_hash == "own" else card_hash
    extra = {} if card_hash is None else {"checkpoint": "model.pt", "checkpoint_sha256": digest}
    (models / "metadata.json").write_text(json.dumps(build_model_card(None, {**facts, **extra})))
    return root, models


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_refuses_the_card_of_another_checkpoint(tmp_path, fmt):
    """runA's model.pt beside runD's card (slice axis 0 vs 2) exported with exit 0 and the Deploy app sliced the wrong
    axis: both exports now refuse a card whose checkpoint_sha256 is not the checkpoint's, naming both files, both
    hashes and where the right card comes from; nothing is written."""
    from monai_das.engines.export import main
    from monai_das.utils.io import file_digest

    root, models = _trained_root(tmp_path / "mix", card_hash="f" * 64)
    own = file_digest(models / "model.pt")
    with pytest.raises(ValueError) as err:
        main([fmt, "--bundle_root", str(root), "--config_file", INFERENCE])
    text = str(err.value)
    assert f"model card '{models / 'metadata.json'}' was written for another file than the checkpoint " \
           f"'{models / 'model.pt'}'" in text
    assert f"checkpoint_sha256 {'f' * 64}, the checkpoint's is {own}" in text
    assert "the card the training of this checkpoint wrote" in text and "re-run the bundle's evaluation" in text
    assert not any(p.suffix in (".onnx", ".ts") for p in models.iterdir())


def test_export_names_both_files_when_the_weights_do_not_fit_the_card(tmp_path, caplog):
    """A card of an older run (no checkpoint_sha256: exported with a warning) describing another architecture than the
    weights (3 classes vs 2): not PyTorch's bare 'Error(s) in loading state_dict' but both files and the cause."""
    import logging

    root, models = _trained_root(tmp_path / "old", num_classes=3, card_hash=None)
    for export in (export_onnx, export_torchscript):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monai_das.engines.export"), \
                pytest.raises(ValueError) as err:
            export(root, INFERENCE)
        assert f"model card '{models / 'metadata.json'}' records no checkpoint_sha256" in caplog.text
        text = str(err.value)
        assert f"the checkpoint '{models / 'model.pt'}' does not fit the network its model card " \
               f"'{models / 'metadata.json'}' describes: its card records no checkpoint_sha256" in text
        assert "size mismatch" in text or "state_dict" in text


def test_torchscript_export_records_its_checkpoint_and_card(tmp_path):
    """The wrapper's .ts says it was built from the card, with the checkpoint's SHA-256 (extra file
    monai_das.source); MONAI's metadata.json (the card) and inference.json stay beside it, and the file runs."""
    import zipfile

    from monai_das.utils.io import file_digest

    root, models = _trained_root(tmp_path / "run")
    path = export_torchscript(root, INFERENCE)
    extra = {"metadata.json": "", "inference.json": "", "monai_das.source": ""}
    net = torch.jit.load(path, _extra_files=extra)
    source = json.loads(extra["monai_das.source"])
    assert source["checkpoint_sha256"] == file_digest(models / "model.pt")
    assert source["network"] == "built from the model card" and source["item_shape"] == ITEM
    assert json.loads(extra["metadata.json"])["das_model"]["checkpoint_sha256"] == source["checkpoint_sha256"]
    assert json.loads(extra["inference.json"])  # MONAI's extra files are kept
    with zipfile.ZipFile(path) as archive:
        assert sum(n.endswith("/extra/monai_das.source") for n in archive.namelist()) == 1
        # the archive's root folder is torch's name for a stream, not the temporary file it was written as
        assert {n.split("/", 1)[0] for n in archive.namelist()} == {"archive"}
    with torch.no_grad():
        assert net(torch.rand(1, *ITEM)).shape == (1, 2)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="a file size limit (ulimit -f) needs POSIX")
def test_a_torchscript_export_on_a_full_disk_names_the_file(tmp_path):
    """MONAI's ckpt_export wrote the .ts through torch's C++ writer, which aborted the whole process on a full disk
    (`terminate called after throwing an instance of 'c10::Error'`; note 69): exported into memory, the file is
    written from Python, whose error names it; nothing is left behind."""
    import resource

    root, models = _trained_root(tmp_path / "run")
    before = sorted(p.name for p in models.iterdir())
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(OSError, match=r"could not write the TorchScript export '.*model\.ts': File too large"):
            export_torchscript(root, INFERENCE)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert sorted(p.name for p in models.iterdir()) == before


def test_torch_export_of_the_exported_classifier():
    """torch.export.export(ExportedClassifier(net), ...) stopped on the sampler's NaN check (a data-dependent branch;
    trial W): skipped while exporting, as for TorchScript and ONNX; the exported program equals eager."""
    torch.manual_seed(0)
    net = build_classifier("das", 2, 16, keep_ratio=0.5).eval()
    x = torch.rand(2, 1, 16, 16, 16)
    logits, indices = torch.export.export(ExportedClassifier(net), (x,)).module()(x)
    ref_logits, ref_indices = ExportedClassifier(net)(x)
    torch.testing.assert_close(logits, ref_logits)
    assert torch.equal(indices, ref_indices) and indices.shape == (2, 8)
    with pytest.raises(ValueError, match="NaN"):  # eager still refuses a NaN volume
        net(torch.full((1, 1, 16, 16, 16), float("nan")))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_checkpoint_holding_pickled_objects_is_refused_by_the_projects_reader(tmp_path, fmt):
    """The TorchScript export handed the checkpoint to MONAI's loader directly: safe (weights_only) but a raw
    UnpicklingError with torch's advice to load it with weights_only=False (trial 60b). Both exports name the file
    and what it holds, through read_checkpoint; nothing runs, nothing is written."""
    import os

    from monai_das.engines.export import export_onnx
    from monai_das.utils.io import file_digest

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    root, models = _trained_root(tmp_path / "evil")
    torch.save({"model": torch.load(models / "model.pt", weights_only=True), "x": Payload()}, models / "model.pt")
    card = json.loads((models / "metadata.json").read_text())
    card["das_model"]["checkpoint_sha256"] = file_digest(models / "model.pt")  # the card vouches for the file
    (models / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model\.pt holds Python objects other than tensors.*it names the Python "
                                         r"object posix\.system") as err:
        (export_onnx if fmt == "onnx" else export_torchscript)(root, INFERENCE)
    assert "weights_only set to False" not in str(err.value) and "will likely succeed" not in str(err.value)
    assert not (tmp_path / "PWNED").exists() and not list(models.glob("model.[ot]*"))


def test_an_onnx_file_with_external_data_is_refused_before_onnx_runtime_reads_it(exported, tmp_path, monkeypatch):
    """ONNX Runtime is handed the file's bytes, so a tensor whose data lies in "another file" is read from the working
    directory: a received model.onnx naming secret.bin had ./secret.bin of wherever the Deploy app ran become its
    weights, the digest rewritten to match (security review T71g). No export writes external data: refused."""
    import onnx

    from monai_das.networks.nets.onnx_classifier import DIGEST_PROP, OnnxClassifier, onnx_digest

    model = onnx.load(str(exported[0]))
    tensor = next(t for t in model.graph.initializer if t.raw_data and len(t.raw_data) <= 256)
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", str(size))):
        tensor.external_data.add(key=key, value=value)
    props = [(p.key, p.value) for p in model.metadata_props if p.key != DIGEST_PROP]
    del model.metadata_props[:]
    for key, value in props:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=DIGEST_PROP, value=onnx_digest(model))  # anyone can write a new digest
    received = tmp_path / "received"
    received.mkdir()
    onnx.save(model, str(received / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"S" * size)  # the user's file, not beside the model
    with pytest.raises(ValueError, match=r"received[/\\]model\.onnx' keeps the data of 1 tensor\(s\) .* in other "
                                         r"files \(ONNX external data\)"):
        OnnxClassifier(received / "model.onnx")
    OnnxClassifier(exported[0])  # an export: one file
