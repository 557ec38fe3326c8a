"""Model loading (TorchScript, checkpoint + config) and prediction for deployment (no MONAI Deploy SDK needed)."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from das_deploy_helpers import (
    GRID,
    LABELS,
    calibrate_batchnorm,
    inference_config,
    make_torchscript_standin,
    metadata,
    model_card,
    write_nifti,
)
from monai_das.deploy import (
    DASPredictor,
    ModelSpec,
    Prediction,
    Study,
    StudySource,
    find_bundle_files,
    study_report,
)
from monai_das.deploy.predictor import RAW_CKPT_EXPORT
from monai_das.transforms import uniform_indices

REPO = Path(__file__).resolve().parents[2]


def test_checkpoint_bundle_matches_eager(checkpoint_bundle):
    root, net = checkpoint_bundle
    pred = DASPredictor.from_path(root)
    assert pred.model_format == "checkpoint" and pred.spec.labels == LABELS
    assert pred.spec.spatial_size == GRID and pred.spec.layout == "volume" and pred.spec.slice_axis == 0
    torch.manual_seed(1)
    x = torch.rand(1, *GRID)
    x[:, 3] += 2.0  # make one slice stand out
    out = pred.predict(x)
    with torch.no_grad():
        probs = torch.softmax(net(x[None]), dim=1)[0]
        kept = net.sample(x[None]).indices[0]
    torch.testing.assert_close(torch.tensor(out.probabilities), probs, rtol=0, atol=1e-5)
    assert out.label == int(probs.argmax()) and out.label_name == LABELS[out.label]
    assert out.kept_indices == sorted(kept.tolist()) and out.num_kept == 8 and out.num_frames == 16
    assert out.compute_saved == pytest.approx(0.5)
    assert set(out.macs) == {"sampler", "downstream", "full_sequence"}
    assert out.macs["downstream"] < out.macs["full_sequence"]
    assert 0.0 < out.macs_saved < 0.5  # the sampler's own cost eats a little of the 1 - k/T saving
    other = pred.predict(torch.rand(1, *GRID))
    assert other.probabilities != out.probabilities  # the output depends on the input


def test_torchscript_with_embedded_configs(torchscript_model):
    path, net = torchscript_model
    # a bare .ts file: metadata + inference.json come from inside it
    pred = DASPredictor.from_path(path, engine="torchscript")
    assert pred.model_format == "torchscript" and pred.spec.labels == LABELS and pred.spec.spatial_size == GRID
    x = torch.rand(1, *GRID)
    x[:, [1, 5, 9, 12]] += 1.0
    out = pred.predict(x)
    assert out.kept_indices == [1, 5, 9, 12] and out.num_kept == 4 and out.compute_saved == pytest.approx(0.75)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(out.probabilities), torch.softmax(net(x[None]), 1)[0], rtol=0,
                                   atol=1e-6)
    assert out.macs is None  # not counted for TorchScript


def test_bundle_prefers_torchscript_and_falls_back(tmp_path, checkpoint_bundle, caplog):
    root = tmp_path / "bundle"
    shutil.copytree(checkpoint_bundle[0], root)
    make_torchscript_standin(root / "models" / "model.ts")
    files = find_bundle_files(root)
    assert files["torchscript"].name == "model.ts" and files["checkpoint"].name == "model.pt"
    assert DASPredictor.from_path(root).model_format == "torchscript"
    assert DASPredictor.from_path(root, prefer="checkpoint").model_format == "checkpoint"
    (root / "models" / "model.ts").write_bytes(b"PK\x03\x04 truncated")  # a broken export
    pred = DASPredictor.from_path(root)
    assert pred.model_format == "checkpoint"
    assert "torchscript '" in pred.describe()["engine_fallback"] and "model.ts" in caplog.text  # the reason, said


def test_a_torchscript_program_named_as_a_checkpoint_is_not_run(tmp_path):
    """A file named like weights is read as weights only: a TorchScript program under a .pt name is refused, not run."""
    path, _ = make_torchscript_standin(tmp_path / "model.ts")
    disguised = tmp_path / "weights.pt"
    shutil.copy(path, disguised)
    with pytest.raises(ValueError, match=r"weights\.pt' is a TorchScript program, not a checkpoint: .*\.ts name"):
        find_bundle_files(disguised)
    with pytest.raises(ValueError, match="is a TorchScript program, not a checkpoint"):
        DASPredictor.from_path(disguised)
    assert find_bundle_files(path)["torchscript"] == path  # the same program under its own name


def test_more_classes_in_the_card_than_the_model_gives_is_an_error():
    """A card of another model (3 class names for a 2-logit network) never gives a label: an error naming both."""
    from das_deploy_helpers import TinyDAS

    spec = ModelSpec(spatial_size=GRID, labels=["normal", "abnormal", "other"])
    pred = DASPredictor(TinyDAS(4).eval(), spec, source="m.ts")
    with pytest.raises(ValueError, match=r"the model 'm\.ts' gives 2 class probabilities, but its metadata names 3 "
                                         r"classes \['normal', 'abnormal', 'other'\]"):
        pred.predict(torch.rand(1, *GRID))
    assert len(DASPredictor(TinyDAS(4, 3).eval(), spec).predict(torch.rand(1, *GRID)).probabilities) == 3


def test_a_card_of_a_million_classes_gives_a_short_error():
    """A hostile card with 10^6 class names (for a 2-logit network), or one of them hidden among them, is refused by
    a short error: the first names and the count, not the whole list."""
    from das_deploy_helpers import TinyDAS
    from monai_das.deploy.spec import _card_fields

    names = [f"c{i}" for i in range(10**6)]
    pred = DASPredictor(TinyDAS(4).eval(), ModelSpec(spatial_size=GRID, labels=names), source="m.ts")
    with pytest.raises(ValueError, match=r"names 1000000 classes \['c0', 'c1', .*'c19', \.\.\. \(1000000 in all\)\]"
                                         r": the model card belongs to another model") as e:
        pred.predict(torch.rand(1, *GRID))
    assert len(str(e.value)) < 600
    with pytest.raises(ValueError, match=r"das_model#label_names = \['c0', .*\.\.\. \(1000001 in all\)\], which "
                                         r"training never writes") as e:
        _card_fields({"layout": "volume", "label_names": names + ["a\nFAKE LOG LINE"]}, "card")
    assert len(str(e.value)) < 1000


def test_non_finite_logits_are_an_error_naming_the_model():
    """A diverged checkpoint (a NaN weight) gave 'normal' with probabilities [nan, nan] in MONAI Label and an
    unnamed JSON error in the Deploy app (trial T64b): an error naming the model file."""
    from das_deploy_helpers import TinyDAS

    net = TinyDAS(4).eval()
    with torch.no_grad():
        next(p for p in net.parameters() if p.ndim > 1).fill_(float("nan"))
    pred = DASPredictor(net, ModelSpec(spatial_size=GRID, labels=["normal", "abnormal"]), source="m.pt")
    with pytest.raises(ValueError, match=r"the model 'm\.pt' gave non-finite logits \[nan, nan\] for this study, "
                                         r"whose input is finite .*diverged checkpoint"):
        pred.predict(torch.rand(1, *GRID))


def test_checkpoint_outside_bundle_needs_config(tmp_path, checkpoint_bundle):
    ckpt = tmp_path / "weights.pt"
    shutil.copy(checkpoint_bundle[0] / "models" / "model.pt", ckpt)
    with pytest.raises(ValueError, match=r"needs a bundle config.*\(CLI: --config\).*monai_das\.engines\.export onnx"):
        DASPredictor.from_path(ckpt)
    cfg = tmp_path / "inference.json"
    cfg.write_text(json.dumps({**inference_config(), "_meta_": metadata()}))
    pred = DASPredictor.from_path(ckpt, config_file=cfg, spatial_size=(12, 20, 20))
    assert pred.model_format == "checkpoint" and pred.spec.spatial_size == (12, 20, 20)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DASPredictor.from_path(tmp_path / "nothing")
    ckpt.write_bytes(ckpt.read_bytes()[:2000])  # a copy cut short
    with pytest.raises(RuntimeError, match=r"weights\.pt \(2000 bytes\) is not a readable PyTorch checkpoint"):
        DASPredictor.from_path(ckpt, config_file=cfg, spatial_size=(12, 20, 20))
    # without the grid too: the file is the first thing said, not "has no metadata" (trial T62a F7)
    with pytest.raises(RuntimeError, match=r"is not a readable PyTorch checkpoint"):
        DASPredictor.from_path(ckpt, config_file=cfg)
    torch.save({"epoch": 3, "note": "no weights"}, ckpt)
    with pytest.raises(RuntimeError, match=r"weights\.pt' holds no network weights .*it holds \['epoch', 'note'\]"):
        DASPredictor.from_path(ckpt, config_file=cfg)
    (tmp_path / "empty_bundle").mkdir()
    with pytest.raises(FileNotFoundError, match="no model found"):
        DASPredictor.from_path(tmp_path / "empty_bundle")


def test_check_input(torchscript_model):
    pred = DASPredictor.from_path(torchscript_model[0], engine="torchscript")
    with pytest.raises(ValueError, match="4 dims"):
        pred.predict(torch.rand(*GRID))
    with pytest.raises(ValueError, match="expects 1 channel") as err:
        pred.predict(torch.rand(3, *GRID))
    assert "1×16×16×16 (C×D×H×W)" in str(err.value) and "3×16×16×16" in str(err.value)  # both full shapes
    with pytest.raises(ValueError, match="spatial size"):
        pred.predict(torch.rand(1, 8, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        pred.predict(torch.full((1, *GRID), float("nan")))
    with pytest.raises(ValueError, match="layout"):
        ModelSpec(layout="image")


def test_traced_real_network(tmp_path):
    """The real classifier exported the way the bundle does (trace + save): kept indices via its sampler submodule."""
    from monai.data import save_net_with_metadata

    from monai_das.networks import build_classifier

    torch.manual_seed(0)
    net = build_classifier("das", 2, num_frames=16, keep_ratio=0.25).eval()
    x = torch.rand(1, 1, *GRID)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x, check_trace=False)
        save_net_with_metadata(traced, str(tmp_path / "model.ts"), meta_values=metadata())  # a failure is a failure
    pred = DASPredictor.from_path(tmp_path / "model.ts", engine="torchscript")
    out = pred.predict(x[0])
    with torch.no_grad():
        assert out.kept_indices == net.sample(x).indices[0].tolist()
        torch.testing.assert_close(torch.tensor(out.probabilities), torch.softmax(net(x), 1)[0], rtol=0, atol=1e-5)
    assert out.num_kept == 4 and out.compute_saved == pytest.approx(0.75)
    # a card beside it claiming another k (edited): the traced graph keeps 4, which is said, not reported as 2
    card = model_card(spatial=GRID, keep_ratio=0.25, num_kept=2, labels=["a", "b"])
    (tmp_path / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model\.ts' keeps 4 of 16 frames, its metadata says num_kept=2"):
        DASPredictor.from_path(tmp_path / "model.ts", engine="torchscript").predict(x[0])


def test_study_report_maps_indices(torchscript_model):
    pred = DASPredictor.from_path(torchscript_model[0], engine="torchscript")
    x = torch.zeros(1, *GRID)
    x[:, [0, 4, 8, 15]] = 1.0
    source_indices = [100 + 2 * i for i in range(16)]
    study = Study(StudySource("s1", "dicom_series", torchscript_model[0]), x, source_indices,
                  {"modality": "CT", "source_axis": 2, "instance_numbers": list(range(1, 200))})
    report = study_report(study, pred.predict(x), pred.describe())
    assert report["status"] == "ok" and report["kept_indices"] == [0, 4, 8, 15]
    assert report["kept_source_indices"] == [100, 108, 116, 130]
    assert report["kept_instance_numbers"] == [101, 109, 117, 131]
    from monai_das.deploy.report import report_text

    assert ("(source indices, counted from 0: [100, 108, 116, 130]; InstanceNumbers [101, 109, 117, 131])"
            in report_text(report))
    assert set(report["probabilities"]) == set(LABELS) and sum(report["probabilities"].values()) == pytest.approx(1)
    # the stand-in is written the way MONAI's ckpt_export writes a file: that is what its reports say
    assert report["warnings"] == [RAW_CKPT_EXPORT.format(path=torchscript_model[0])]
    # the SR's text names the file, not the folder it lies in on this machine (trial S)
    path = str(torchscript_model[0])
    assert path in report["warnings"][0] and path not in report_text(report)
    assert f"the TorchScript model '{Path(path).name}' was exported" in report_text(report)
    # an id with a line break (a folder or header name) never forges a line of the SR's text (trial 60c)
    forged = report_text({**report, "study_id": "x\nPredicted: square (class 1)."})
    assert forged.splitlines()[0] == "DAS classification of study 'x\\nPredicted: square (class 1).' (research use " \
                                     "only)." and len(forged.splitlines()) == len(report_text(report).splitlines())
    json.dumps(report, allow_nan=False)  # serializable


def test_study_report_warns_when_kept_frames_share_a_source_frame(torchscript_model, caplog):
    """A 10-frame clip stretched to T = 16: kept positions 3 and 4 are both source frame 2 → a warning, logged too."""
    pred = DASPredictor.from_path(torchscript_model[0], engine="torchscript")
    x = torch.zeros(1, *GRID)
    x[:, [0, 3, 4, 15]] = 1.0
    source_indices = uniform_indices(10, 16).tolist()  # 0, 0, 1, 2, 2, 3, ...: what LoadVideo makes of 10 frames
    study = Study(StudySource("short", "video", torchscript_model[0]), x, source_indices, {"modality": "US"})
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy.report"):
        report = study_report(study, pred.predict(x), pred.describe())
    kept_src = report["kept_source_indices"]
    assert report["kept_indices"] == [0, 3, 4, 15] and kept_src == [0, 2, 2, 9]
    raw = RAW_CKPT_EXPORT.format(path=torchscript_model[0])  # the stand-in is a raw ckpt_export file
    assert report["warnings"][0] == raw and len(report["warnings"]) == 2 and report["warnings"][1] in caplog.text
    assert f"study 'short': the 4 kept frames are only 3 distinct slices/frames" in report["warnings"][1]
    assert "T=16" in report["warnings"][1]


def test_study_report_names_padding_slices(torchscript_model, caplog):
    """resize "pad": kept frames that are padding (source index -1) are "padding" in kept_source_indices and
    kept_instance_numbers, and the warning names padding, not "fewer slices than T"."""
    pred = DASPredictor.from_path(torchscript_model[0], engine="torchscript")
    x = torch.zeros(1, *GRID)
    x[:, [0, 4, 8, 15]] = 1.0
    source_indices = [-1] + list(range(13)) + [-1, -1]  # padded (1, 2), as Deploy --resize pad made test032
    study = Study(StudySource("s1", "dicom_series", torchscript_model[0]), x, source_indices,
                  {"modality": "CT", "source_axis": 2, "instance_numbers": list(range(1, 14))})
    with caplog.at_level(logging.WARNING, logger="monai_das.deploy.report"):
        report = study_report(study, pred.predict(x), pred.describe())
    assert report["kept_indices"] == [0, 4, 8, 15]
    assert report["kept_source_indices"] == ["padding", 3, 7, "padding"]
    assert report["kept_instance_numbers"] == ["padding", 4, 8, "padding"]
    assert report["warnings"][0] == RAW_CKPT_EXPORT.format(path=torchscript_model[0])  # a raw ckpt_export file
    assert len(report["warnings"]) == 2 and "2 of them are padding" in report["warnings"][1]
    assert "T=" not in report["warnings"][1] and report["warnings"][1] in caplog.text
    json.dumps(report, allow_nan=False)


def test_real_bundle_export_matches_checkpoint(tmp_path):
    """The repository's bundle configs: random weights → ckpt_export (trace) → TorchScript and checkpoint agree."""
    from monai.bundle import ConfigParser, ckpt_export

    configs = Path(__file__).resolve().parents[2] / "bundles" / "das_volume_classification" / "configs"
    if not (configs / "inference.json").is_file():
        pytest.skip(f"bundle config {configs / 'inference.json'} not found")
    root = tmp_path / "das_volume_classification"
    shutil.copytree(configs, root / "configs")
    (root / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    torch.manual_seed(0)
    net = calibrate_batchnorm(parser.get_parsed_content("network_def"), torch.rand(2, 1, 28, 28, 28))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt_export(net_id="network_def", filepath=str(root / "models" / "model.ts"),
                    ckpt_file=str(root / "models" / "model.pt"), meta_file=str(root / "configs" / "metadata.json"),
                    config_file=str(root / "configs" / "inference.json"), bundle_root=str(root), use_trace=True,
                    input_shape=[1, 1, 28, 28, 28])
    ts = DASPredictor.from_path(root)
    ckpt = DASPredictor.from_path(root, prefer="checkpoint", measure_macs=False)
    assert ts.model_format == "torchscript" and ckpt.model_format == "checkpoint"
    assert ts.spec == ckpt.spec and ts.spec.spatial_size == (28, 28, 28) and ts.spec.layout == "volume"
    x = torch.rand(1, 28, 28, 28)
    a, b = ts.predict(x), ckpt.predict(x)
    with torch.no_grad():
        eager = net.sample(x[None]).indices[0].tolist()
    assert a.kept_indices == b.kept_indices == eager and a.num_kept == 14
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    assert b.macs is None


# ------------------------------------------------------------------------------------------------------ model cards
NON_CUBIC = (16, 16, 8)  # D×H×W; frames along D (T = 16), each 16×8


def test_card_of_non_cubic_model_is_used(tmp_path):
    """A 16×16×8 model exported with its card: the card beats the bundle's 28³ template, and a study of another grid
    is resampled to 16×16×8 by the recorded recipe."""
    from monai_das.transforms import recipe_transforms

    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata(spatial=(28, 28, 28))))  # the template
    card = model_card(spatial=NON_CUBIC, keep_ratio=0.25)
    path, net = make_torchscript_standin(root / "models" / "model.ts", k=4, meta=card)
    pred = DASPredictor.from_path(path, engine="torchscript")
    spec = pred.spec
    assert spec.spatial_size == NON_CUBIC and spec.layout == "volume" and spec.slice_axis == 0
    assert spec.labels == LABELS and spec.in_channels == 1 and spec.num_kept == 4 and spec.method == "das"
    assert spec.recipe["spatial_size"] == list(NON_CUBIC) and spec.recipe["percentiles"] == [0.5, 99.5]
    assert pred.describe()["recipe"] == spec.recipe and pred.describe()["num_kept"] == 4
    # the bundle folder (no configs/inference.json: its TorchScript runs when asked for): its card beats the template
    assert DASPredictor.from_path(root, engine="torchscript").spec == spec
    study = write_nifti(tmp_path / "study.nii.gz", np.random.default_rng(0).random((20, 24, 10)).astype(np.float32))
    image = recipe_transforms(spec.recipe, keys="image")({"image": str(study)})["image"]
    assert tuple(image.shape) == (1, *NON_CUBIC)  # not 28³
    out = pred.predict(image)
    assert out.num_frames == 16 and out.num_kept == 4 and len(out.kept_indices) == 4
    with torch.no_grad():
        expected = torch.softmax(net(torch.as_tensor(image)[None].float()), 1)[0]
    torch.testing.assert_close(torch.tensor(out.probabilities), expected, rtol=0, atol=1e-6)


def test_card_beside_model_file(tmp_path):
    """A model file without embedded metadata uses the card written beside it (``models/metadata.json``)."""
    path = tmp_path / "models" / "model.ts"
    path.parent.mkdir(parents=True)
    torch.jit.save(torch.jit.script(TinyStandin()), str(path))
    (path.parent / "metadata.json").write_text(json.dumps(model_card(spatial=NON_CUBIC, slice_axis=2)))
    spec = DASPredictor.from_path(path, engine="torchscript").spec
    assert spec.spatial_size == NON_CUBIC and spec.slice_axis == 2 and spec.num_frames == 8
    assert spec.recipe["slice_axis"] == 2 and spec.labels == LABELS


def test_video_card(tmp_path, caplog):
    """A clip model's card: layout, T×H×W grid and channels come from the card (the bare file's embedded config
    only has expressions for them, which are then not even looked at: no 'ignoring network_def#layout' warning)."""
    card = model_card(spatial=(24, 20), layout="video", in_channels=3, num_frames=12)
    image = card["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 12 and image["spatial_shape"] == [3, 24, 20]  # (1, T, C, H, W) for MONAI tools
    config = inference_config()
    config["network_def"]["layout"] = "$@info['layout']"
    path, _ = make_torchscript_standin(tmp_path / "model.ts", meta=card, config=config)
    with caplog.at_level("WARNING"):
        spec = DASPredictor.from_path(path, engine="torchscript").spec
    assert spec.layout == "video" and spec.spatial_size == (12, 24, 20) and spec.in_channels == 3
    assert "network_def#layout" not in caplog.text
    assert spec.recipe["num_frames"] == 12 and spec.recipe["spatial_size"] == [24, 20]
    card.pop("das_model")  # the network_data_format alone, read with the layout given
    path, _ = make_torchscript_standin(tmp_path / "plain.ts", meta=card, config=config)
    spec = DASPredictor.from_path(path, layout="video", engine="torchscript").spec
    assert spec.spatial_size == (12, 24, 20) and spec.in_channels == 3


def test_grid_override_of_a_video_model(tmp_path):
    """A clip model (T=12 frames of 24×20): --spatial-size with another T is refused naming the option and the trained
    T; another frame size is a warning the predictor logs and every report repeats (both were silent)."""
    from monai_das.deploy.spec import OverrideError

    card = model_card(spatial=(24, 20), layout="video", in_channels=1, num_frames=12)
    path, _ = make_torchscript_standin(tmp_path / "model.ts", meta=card)
    with pytest.raises(OverrideError, match=r"spatial_size=\(8, 24, 20\) \(CLI: --spatial-size 8 24 20\) gives the "
                                            r"model .* T=8 frames, but it was trained on T=12 .*keep T=12: "
                                            r"--spatial-size 12 24 20"):
        DASPredictor.from_path(path, spatial_size=(8, 24, 20), engine="torchscript")
    pred = DASPredictor.from_path(path, spatial_size=(12, 32, 32), engine="torchscript")
    raw = RAW_CKPT_EXPORT.format(path=path)  # the stand-in is written as MONAI's ckpt_export writes a file
    warning, raw_said = pred.warnings
    assert raw_said == raw
    assert "spatial_size=(12, 32, 32) (CLI: --spatial-size 12 32 32) is not the grid" in warning
    assert "trained on, (12, 24, 20)" in warning and "frames on another grid" in warning
    assert pred.spec.recipe["spatial_size"] == [32, 32]  # the recipe applied: the given frame size
    study = Study(StudySource("clip.mp4", "video", "clip.mp4"), torch.rand(12, 1, 32, 32), list(range(12)), {})
    prediction = Prediction([0.3, 0.7], 1, LABELS[1], [0, 3, 6, 9], 12, 4, 2 / 3)  # the stand-in takes volumes
    report = study_report(study, prediction, pred.describe())
    assert report["warnings"] == [warning, raw] and "warnings" not in report["model"]
    # the trained grid: no more
    assert DASPredictor.from_path(path, spatial_size=(12, 24, 20), engine="torchscript").warnings == [raw]


def test_model_without_metadata_is_refused(tmp_path):
    """No card, no metadata: no silent 28³ default but an error saying which spec_overrides to pass."""
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(TinyStandin()), str(path))
    with pytest.raises(ValueError, match="no metadata") as err:
        DASPredictor.from_path(path, engine="torchscript")
    assert "spatial_size=" in str(err.value) and str(path) in str(err.value)
    pred = DASPredictor.from_path(path, spatial_size=NON_CUBIC, engine="torchscript")  # what the message asks for
    assert pred.spec.spatial_size == NON_CUBIC


def test_card_disagreeing_with_checkpoint_config(tmp_path, checkpoint_bundle):
    """A checkpoint is built by the config: a card of another network is reported, not silently used."""
    root = tmp_path / "bundle"
    shutil.copytree(checkpoint_bundle[0], root)
    (root / "models" / "metadata.json").write_text(json.dumps(model_card(slice_axis=1)))
    with pytest.raises(RuntimeError, match="disagree") as err:
        DASPredictor.from_path(root)
    assert "slice_axis" in str(err.value)
    (root / "models" / "metadata.json").write_text(json.dumps(model_card()))
    pred = DASPredictor.from_path(root, measure_macs=False)
    assert pred.spec.num_kept == 8 and pred.spec.recipe is not None and pred.spec.spatial_size == GRID


def test_checkpoint_is_built_as_its_card_describes(tmp_path):
    """A bundle trained with --keep_ratio 0.25 served by the eager engine with the bundle's own inference.json was
    refused ('the config builds another network than the one trained'), and the Deploy CLI cannot pass the keys."""
    from monai_das.networks import build_classifier
    from monai_das.utils.io import file_digest

    root = tmp_path / "trained"
    (root / "models").mkdir(parents=True)
    torch.manual_seed(0)
    net = build_classifier("das", num_classes=len(LABELS), num_frames=GRID[0], keep_ratio=0.25)
    calibrate_batchnorm(net, torch.rand(4, 1, *GRID))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    card = model_card(keep_ratio=0.25)
    card["das_model"].update(checkpoint="model.pt", checkpoint_sha256=file_digest(root / "models" / "model.pt"))
    (root / "models" / "metadata.json").write_text(json.dumps(card))
    config = REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json"
    pred = DASPredictor.from_path(root, engine="eager", config_file=config, measure_macs=False)
    assert pred.spec.num_kept == 4 and pred.num_kept == 4
    x = torch.rand(1, *GRID)
    out = pred.predict(x)
    with torch.no_grad():
        net.eval()
        logits, kept = net.forward_with_indices(x[None])
    assert out.kept_indices == kept[0].tolist()
    torch.testing.assert_close(torch.tensor(out.probabilities), torch.softmax(logits, 1)[0], rtol=0, atol=1e-5)


def test_checkpoint_whose_card_describes_another_version_is_refused(tmp_path):
    """A training killed between saving model.pt and writing its card leaves the previous model's card beside the new
    file: the eager engine said "the card says k=... the config keeps ..., use the training's keys" (which the Deploy
    CLI cannot pass); now the stale card itself is named, with both hashes and the way out."""
    from monai_das.networks import build_classifier
    from monai_das.utils.io import file_digest

    root = tmp_path / "trained"
    (root / "models").mkdir(parents=True)
    torch.manual_seed(0)
    net = build_classifier("das", num_classes=len(LABELS), num_frames=GRID[0], keep_ratio=0.25)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    card = model_card(keep_ratio=0.25)
    card["das_model"].update(checkpoint="model.pt", checkpoint_sha256=file_digest(root / "models" / "model.pt"))
    (root / "models" / "metadata.json").write_text(json.dumps(card))
    torch.manual_seed(1)  # the next best model replaced model.pt; the kill came before its card
    torch.save(build_classifier("das", num_classes=len(LABELS), num_frames=GRID[0], keep_ratio=0.25).state_dict(),
               root / "models" / "model.pt")
    config = REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json"
    with pytest.raises(RuntimeError, match=r"written for another version of .*model\.pt.*--resume True"):
        DASPredictor.from_path(root, engine="eager", config_file=config, measure_macs=False)


class TinyStandin(torch.nn.Module):
    """Any scripted module: a model file with no metadata embedded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]


def test_module_layout_reexports():
    """The loading code lives in spec/model_files; the old import path and the package keep working."""
    from monai_das.deploy import MissingMetadataError as from_package
    from monai_das.deploy import model_files, spec
    from monai_das.deploy.predictor import MissingMetadataError, ModelSpec as ReSpec, find_bundle_files as re_find

    assert MissingMetadataError is spec.MissingMetadataError is from_package and issubclass(from_package, ValueError)
    assert ReSpec is spec.ModelSpec is ModelSpec and re_find is model_files.find_bundle_files is find_bundle_files


def test_card_class_names_are_read_by_the_parser_rule():
    """A card is plain JSON: a class name with an '@' inside ('user@site', which MONAI's parser keeps as text) is
    the model's class; one MONAI would evaluate or expand ('$...', '%...', '@ref') is refused (it was ignored with a
    warning and the model run with class_0/1: trial T67b), by the rule the exports use
    (monai_das.utils.config.parser_rewrites); so is a value of another kind than training writes."""
    from monai_das.deploy.spec import _card_fields

    assert _card_fields({"layout": "volume", "label_names": ["user@site", "b"]}, "card")["labels"] == ["user@site", "b"]
    # and a name that prints as another one or another log line, which training refuses (security review T69b)
    # and one longer than training takes (a 10 MB name made each study's report 20 MB: T71g)
    for code in ("$print(1)", "%/etc/secret.json#k", "@network_def", "k%#z", "a\nFAKE LOG LINE", "benign\u202egnam",
                 "y" * 257):
        with pytest.raises(ValueError, match=r"the model card in card has das_model#label_names = .*training never "
                                             r"writes .*altered or damaged"):
            _card_fields({"layout": "volume", "label_names": [code, "b"]}, "card")
    for bad in ({"layout": "movie"}, {"layout": "volume", "slice_axis": "0"}, {"layout": "volume", "recipe": "$x"},
                {"layout": "volume", "spatial_size": [8, 8]}):
        with pytest.raises(ValueError, match="training never writes"):
            _card_fields(bad, "card")


def test_readme_deploy_example_on_a_training_folder_is_runnable():
    """The README's `-m runs/my_run --num_kept 4` failed right after training (trial): a training's bundle_root has
    models/model.pt and its card but no configs/ and no export. Each Deploy command of the README on a training folder
    gives --config or follows the export of that folder (what the refusal asks for)."""
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("### MONAI Deploy application"):text.index("#### Options")]
    block = section[section.index("```bash"):section.index("```", section.index("```bash") + 7)]
    exported: set[str] = set()
    checked = 0
    for line in block.splitlines():
        found = re.search(r"monai_das\.engines\.export onnx --bundle_root (\S+)", line)
        if found:
            exported.add(found.group(1))
        model = re.search(r"monai_das\.deploy .*(?:-m|--model) (\S+)", line)
        if model and not model.group(1).startswith("bundles/"):  # a training's bundle_root
            checked += 1
            assert "--config " in line or model.group(1) in exported, line
    assert checked >= 1


def test_the_loading_names_the_readme_lists_import_from_both_places():
    """README ("The loading code is split by job"): these names stay importable from monai_das.deploy.predictor and
    monai_das.deploy (trial T62b: load_torchscript and load_checkpoint were not in monai_das.deploy)."""
    import monai_das.deploy as deploy
    import monai_das.deploy.predictor as predictor

    for name in ("find_bundle_files", "load_torchscript", "load_checkpoint", "ModelSpec", "MissingMetadataError",
                 "DASPredictor", "Prediction"):
        assert getattr(deploy, name) is getattr(predictor, name), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_a_cuda_device_without_cuda_is_refused_before_any_study(tmp_path, checkpoint_bundle):
    """--device cuda on a CPU-only torch: every study failed on its own with torch's message, exit 3 (trial T63c)."""
    with pytest.raises(ValueError, match=r"device 'cuda': CUDA is not available on this machine .*give cpu"):
        DASPredictor.from_path(checkpoint_bundle[0], device="cuda")
