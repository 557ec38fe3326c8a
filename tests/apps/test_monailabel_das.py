"""
The MONAI Label sample app's infer task (apps/monailabel_das), called on volumes without a server.

Needs the real ``monailabel`` 0.8.5 package, installed without its dependencies by scripts/setup_deploy_env.sh
(``.venv-deploy``); skipped elsewhere. The infer task builds on ``BasicInferTask``, whose import chain does not reach
``torchvision``, so no stand-in module is used. The app class in ``main.py`` (``MONAILabelApp``) is not imported:
its datastore modules need ``pydicom-seg``, which requires pydicom < 3 and numpy < 2.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from das_deploy_helpers import (
    LABELS,
    make_checkpoint_bundle,
    make_onnx_bundle,
    make_torchscript_standin,
    nibabel_anatomical,
    pydicom_file,
    write_dicom_series,
)

pytest.importorskip("monailabel", reason="monailabel not installed (run scripts/setup_deploy_env.sh)")

APP_DIR = Path(__file__).resolve().parents[2] / "apps" / "monailabel_das"


@pytest.fixture(scope="module")
def task_cls():
    sys.path.insert(0, str(APP_DIR))
    try:
        from lib.infers import DASClassification
    finally:
        sys.path.remove(str(APP_DIR))
    return DASClassification


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root, net = make_checkpoint_bundle(tmp_path_factory.mktemp("ml_bundle"))
    return root, net


def test_task_on_nifti_volume(task_cls, bundle):
    from monailabel.interfaces.tasks.infer_v2 import InferType

    from monai_das.deploy import DASPredictor, StudyLoader, discover_studies

    root, _ = bundle
    task = task_cls(str(root))
    assert task.is_valid() and task.type == InferType.CLASSIFICATION
    info = task.info()
    assert info["labels"] == {name: i for i, name in enumerate(LABELS)} and info["dimension"] == 3

    label_file, result = task({"image": str(nibabel_anatomical()), "device": "cpu"})
    assert label_file is None
    scores = {p["label"]: p["score"] for p in result["prediction"]}
    assert set(scores) == set(LABELS) and sum(scores.values()) == pytest.approx(1.0)
    das = result["das"]
    assert das["predicted_name"] == max(scores, key=scores.get)
    assert das["num_frames"] == 16 and das["num_kept"] == 8 and das["compute_saved"] == pytest.approx(0.5)
    assert len(das["kept_source_indices"]) == 8 and result["label_names"] == info["labels"]
    # this bundle has no model card: the intensity scaling is the default's, which a warning says; and it has no
    # models/model.onnx for the default engine: the result says which engine ran and why (it said [] before)
    assert len(das["warnings"]) == 2 and "records no preprocessing recipe" in das["warnings"][0]
    assert das["engine"] == "eager" and das["engine_requested"] == "onnxruntime" and das["device"] == "cpu"
    assert "engine 'onnxruntime' was not used: no models/model.onnx" in das["warnings"][1]
    assert "serving " + str(root / "models" / "model.pt") + " with eager, not onnxruntime" in info["description"]

    predictor = DASPredictor.from_path(root)
    expected = predictor.predict(StudyLoader(predictor.spec).load(discover_studies(nibabel_anatomical())[0]).image)
    assert das["kept_indices"] == expected.kept_indices
    assert [scores[n] for n in LABELS] == pytest.approx(expected.probabilities, abs=1e-5)


def test_task_on_dicom_and_torchscript(task_cls, tmp_path):
    model, net = make_torchscript_standin(tmp_path / "bundle" / "models" / "model.ts")
    # a single CT slice below; a folder without configs/ runs its TorchScript only when asked for (trial T67b)
    task = task_cls(str(tmp_path / "bundle"), loader_options={"min_frames": 1}, engine="torchscript")
    assert task.predictor.model_format == "torchscript" and task.get_path() == str(model)
    write_dicom_series(tmp_path / "series", num_slices=6)
    _, result = task({"image": str(tmp_path / "series")})
    assert result["das"]["num_kept"] == 4 and result["das"]["kept_instance_numbers"] is None  # frames along RAS x
    assert "kept_images" in result["das"]  # the Deploy report's references of the kept DICOM images (null here)
    (tmp_path / "ct").mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "ct")
    _, result = task({"image": str(tmp_path / "ct" / "CT_small.dcm")})
    assert result["das"]["compute_saved"] == pytest.approx(0.75)


def test_task_bad_input(task_cls, bundle, tmp_path):
    task = task_cls(str(bundle[0]), loader_options={"allowed_modalities": ["CT"]})
    write_dicom_series(tmp_path / "mr", num_slices=3)
    with pytest.raises(ValueError, match="modality MR is not one of the accepted"):
        task({"image": str(tmp_path / "mr")})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="exactly one study"):
        task({"image": str(tmp_path / "empty")})
    with pytest.raises(FileNotFoundError):
        task_cls(str(tmp_path / "no_bundle"))
    # a model in model_dir that cannot be loaded (a truncated model.pt of a crashed training): requests name it and
    # why, not "no DAS model yet ... run the training task first"
    broken = tmp_path / "trained"
    shutil.copytree(bundle[0], broken)
    for f in (broken / "models").iterdir():
        if f.suffix in (".onnx", ".ts"):
            f.unlink()
    whole = (broken / "models" / "model.pt").read_bytes()
    (broken / "models" / "model.pt").write_bytes(whole[: len(whole) // 2])
    task = task_cls(str(tmp_path / "no_bundle_either"), model_dir=str(broken), engine="eager")
    with pytest.raises(Exception, match=r"no DAS model is loaded: the model in .*trained' could not be loaded: .*"
                                        r"model\.pt .*not a readable PyTorch checkpoint"):
        task({"image": str(nibabel_anatomical()), "device": "cpu"})


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    """The real DAS classifier (8×16×16, k = 4 of T = 8) exported to ONNX beside its checkpoint (~15-20 s)."""
    pytest.importorskip("onnxruntime")
    return make_onnx_bundle(tmp_path_factory.mktemp("ml_onnx"))


def test_task_onnx_default_and_frame_budget(task_cls, onnx_bundle, tmp_path):
    """models/model.onnx is served by default; a request's num_kept/keep_ratio choose k; the app's conf sets the
    engine and the default k; a checkpoint other than the one the export records (or, without that record, newer than
    the export) is served instead of it."""
    import os

    import torch

    from monai_das.deploy import DASPredictor, StudyLoader, discover_studies

    root, net = onnx_bundle
    image = str(nibabel_anatomical())
    task = task_cls(str(root))
    assert task.predictor.engine == "onnxruntime" and task.get_path() == str(root / "models" / "model.onnx")
    assert task.info()["config"]["engine"] == "onnxruntime" and task.info()["config"]["num_kept"] == 0
    _, result = task({"image": image, "device": "cpu"})
    das = result["das"]
    assert das["engine"] == "onnxruntime" and das["num_frames"] == 8 and das["num_kept"] == 4 and das["device"] == "cpu"
    predictor = DASPredictor.from_path(root)
    expected = predictor.predict(StudyLoader(predictor.spec).load(discover_studies(image)[0]).image)
    assert das["kept_indices"] == expected.kept_indices
    assert [das["probabilities"][n] for n in LABELS] == pytest.approx(expected.probabilities, abs=1e-5)
    for request, k in (({"num_kept": 2}, 2), ({"keep_ratio": 0.75}, 6), ({"num_kept": "8"}, 8)):
        _, result = task({"image": image, **request})
        assert result["das"]["num_kept"] == k and len(result["das"]["kept_indices"]) == k
    with pytest.raises(ValueError, match="cannot keep k=9 frames"):
        task({"image": image, "num_kept": 9})
    for bad in ("many", 2.5):  # 2.5 was refused as "not a number"
        with pytest.raises(ValueError, match=rf"num_kept must be a whole number \(k, frames kept\), got {bad!r}"):
            task({"image": image, "num_kept": bad})

    sys.path.insert(0, str(APP_DIR))
    try:
        from lib.app_tasks import app_settings, make_infer_task
    finally:
        sys.path.remove(str(APP_DIR))
    both = app_settings({"bundle": str(root), "num_kept": "3", "keep_ratio": "0.5"}, tmp_path / "both")
    with pytest.raises(ValueError, match=r"^give --conf num_kept or --conf keep_ratio, not both \(got --conf "
                                         r"num_kept 3, --conf keep_ratio 0\.5\)\.$"):  # the app's defaults
        make_infer_task(both)
    settings = app_settings({"bundle": str(root), "engine": "eager", "num_kept": "3"}, tmp_path / "app")
    task = make_infer_task(settings)
    assert task.predictor.engine == "eager" and task.info()["config"]["num_kept"] == 3
    _, result = task({"image": image})
    assert result["das"]["engine"] == "eager" and result["das"]["num_kept"] == 3
    for request, k in (({"keep_ratio": 0.75}, 6), ({"num_kept": 2}, 2)):  # a request's budget replaces the app's
        _, result = task({"image": image, **request})
        assert result["das"]["num_kept"] == k
    with pytest.raises(ValueError, match="not both"):
        task({"image": image, "num_kept": 2, "keep_ratio": 0.75})

    newer = tmp_path / "bundle"
    shutil.copytree(root, newer)
    onnx_time = os.stat(newer / "models" / "model.onnx").st_mtime_ns
    later = (onnx_time + 10**9, onnx_time + 10**9)
    os.utime(newer / "models" / "model.pt", ns=later)  # trained after an export that records no checkpoint
    assert task_cls(str(newer)).predictor.engine == "eager"
    # an export recording this checkpoint (as `python -m monai_das.engines.export onnx` writes): a newer time alone
    # (cp -r, a touch) is the same model, and its export is served (trial T72h: it ran eager, 'an export of an older
    # training')
    import json

    from monai_das.engines.export import SOURCE_PROP, save_onnx
    from monai_das.utils.io import file_digest

    source = {"checkpoint_sha256": file_digest(newer / "models" / "model.pt")}
    card = json.loads((newer / "models" / "metadata.json").read_text())
    save_onnx(net, newer / "models" / "model.onnx", [1, 8, 16, 16], metadata=card, check=False,
              extra_props={SOURCE_PROP: json.dumps(source)})
    onnx_time = os.stat(newer / "models" / "model.onnx").st_mtime_ns
    later = (onnx_time + 10**9, onnx_time + 10**9)
    os.utime(newer / "models" / "model.pt", ns=later)
    assert task_cls(str(newer)).predictor.engine == "onnxruntime"
    ckpt = torch.load(newer / "models" / "model.pt", weights_only=True)  # trained again after the export
    weights = ckpt.get("model", ckpt)
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 0.01
    torch.save(ckpt, newer / "models" / "model.pt")
    os.utime(newer / "models" / "model.pt", ns=later)
    assert task_cls(str(newer)).predictor.engine == "eager"
    # the checkpoint the export records is what counts, not the times: another checkpoint older than the export (a
    # copy keeping its time, cp -p) is served eagerly, and das.warnings says why (it served the stale export)
    earlier = (onnx_time - 10**9, onnx_time - 10**9)
    os.utime(newer / "models" / "model.pt", ns=earlier)
    stale = task_cls(str(newer))
    assert stale.predictor.engine == "eager" and "export is of another checkpoint" in stale.info()["description"]
    _, result = stale({"image": image})
    assert result["das"]["engine"] == "eager" and any(
        "records another checkpoint's SHA-256" in w for w in result["das"]["warnings"])


def test_request_engine_budget_and_misspelt_keys(task_cls, onnx_bundle):
    """A request's engine is honoured or refused, the engine that ran is reported (a fallback in das.warnings); a
    misspelt request key is named; a client echoing /info's config with one budget value changed gets that value;
    an explicit 0 is the trained k (trial F: B9, B1 'num_kep', B8, B7)."""
    root, _ = onnx_bundle  # T = 8, trained k = 4; model.onnx beside model.pt (and its config)
    image = str(nibabel_anatomical())
    task = task_cls(str(root))
    _, result = task({"image": image, "engine": "eager"})  # was run by ONNX Runtime whatever the request said
    assert result["das"]["engine"] == "eager" and result["das"]["engine_requested"] == "eager"
    assert not any("engine" in w for w in result["das"]["warnings"])
    _, result = task({"image": image, "engine": "torchscript"})  # no models/model.ts here: a fallback, said
    assert result["das"]["engine"] != "torchscript" and result["das"]["engine_requested"] == "torchscript"
    assert any("engine 'torchscript' was not used" in w for w in result["das"]["warnings"])
    _, result = task({"image": image})
    assert result["das"]["engine"] == "onnxruntime" and not any("engine" in w for w in result["das"]["warnings"])
    with pytest.raises(ValueError, match=r"engine must be one of onnxruntime, torchscript, eager, got 'onnx': did you "
                                         r"mean 'onnxruntime'\?"):
        task({"image": image, "engine": "onnx"})

    # misspelt keys of this task are named (and ignored); MONAI Label's own request keys are not
    _, result = task({"image": image, "num_kep": 3, "keepRatio": 0.5, "device": "cpu", "result_extension": ".json",
                      "label_info": [], "client_id": "x", "num_samples": 2})
    notes = [w for w in result["das"]["warnings"] if w.startswith("request key")]
    assert result["das"]["num_kept"] == 4 and len(notes) == 2
    assert "'num_kep' is not a key of this task and was ignored: did you mean 'num_kept'?" in notes[0]
    assert "'keepRatio'" in notes[1] and "did you mean 'keep_ratio'?" in notes[1]

    # --conf keep_ratio 0.25: /info's config sent back with one value changed (was "not both"); 0 = the trained k
    task = task_cls(str(root), keep_ratio=0.25)
    config = {k: task.info()["config"][k] for k in ("engine", "num_kept", "keep_ratio")}  # and MONAI Label's device
    assert config == {"engine": "onnxruntime", "num_kept": 0, "keep_ratio": 0.25}
    for request, k in (({}, 2), ({**config}, 2), ({**config, "num_kept": 3}, 3), ({**config, "keep_ratio": 0.75}, 6),
                       ({**config, "keep_ratio": 0}, 4), ({"num_kept": 0}, 4), ({"keep_ratio": 0}, 4),
                       ({"num_kept": 0, "keep_ratio": 0}, 4), ({"num_kept": 3, "keep_ratio": 0}, 3)):
        _, result = task({"image": image, **request})
        assert result["das"]["num_kept"] == k, request
    with pytest.raises(ValueError, match=r"give num_kept or keep_ratio, not both \(got num_kept=3, keep_ratio=0.75; "
                                         r"the task's config.*has num_kept=0, keep_ratio=0.25\)"):
        task({"image": image, **config, "num_kept": 3, "keep_ratio": 0.75})
    task = task_cls(str(root), num_kept=3)  # --conf num_kept 3: the same rules
    for request, k in (({}, 3), ({"num_kept": 0}, 4), ({"keep_ratio": 0}, 4), ({"keep_ratio": 0.25}, 2),
                       ({"num_kept": 3, "keep_ratio": 0.75}, 6)):
        _, result = task({"image": image, **request})
        assert result["das"]["num_kept"] == k, request


def test_a_request_for_another_engine_names_the_classes_of_the_model_that_ran(task_cls, onnx_bundle, tmp_path):
    """After a retraining, a request for another engine than the task's got MONAI Label's prediction list and
    label_names with the former model's class names (its top score named 'normal' where the model said 'aneurysm';
    trial T65a): the names are those of the model that ran, and /info follows the new model too."""
    import json
    import os

    root = tmp_path / "served"
    shutil.copytree(onnx_bundle[0], root)
    image = str(nibabel_anatomical())
    task = task_cls(str(root))
    assert task.info()["labels"] == {"normal": 0, "abnormal": 1}
    card = root / "models" / "metadata.json"  # a retraining with other class names, written after the export
    card.write_text(card.read_text().replace("abnormal", "storm").replace("normal", "calm"))
    later = os.stat(root / "models" / "model.onnx").st_mtime_ns + 10**9
    os.utime(root / "models" / "model.pt", ns=(later, later))
    _, result = task({"image": image, "engine": "eager"})
    assert [p["label"] for p in result["prediction"]] == ["calm", "storm"]
    assert result["label_names"] == {"calm": 0, "storm": 1} and task.info()["labels"] == {"calm": 0, "storm": 1}
    assert [p["score"] for p in result["prediction"]] == pytest.approx(
        [result["das"]["probabilities"][n] for n in ("calm", "storm")])
    assert json.loads(json.dumps(result["prediction"]))  # plain values, as MONAI Label sends them


def test_model_folder_with_a_training_lock_is_flagged(task_cls, bundle, tmp_path):
    """Trial F B10: a model.pt written by a training run killed in the served folder itself (its lock files left
    there) was served with warnings []: each result now says the model may be partly trained."""
    from monai_das.handlers.checkpoint import LOCK_NAME, OWNER_NAME

    root, _ = bundle
    served = tmp_path / "served"
    shutil.copytree(root, served)
    task = task_cls(str(served), engine="eager")
    _, result = task({"image": str(nibabel_anatomical())})
    assert not any("lock file" in w for w in result["das"]["warnings"])
    (served / "models" / LOCK_NAME).touch()
    (served / "models" / OWNER_NAME).write_text("pid 4242 on trialhost, since 2026-12-05")
    _, result = task({"image": str(nibabel_anatomical())})
    assert any(f"'{served / 'models'}' holds the lock file of a training run (pid 4242 on trialhost, since "
               "2026-12-05)" in w and "may be a partly trained model" in w for w in result["das"]["warnings"])


def test_app_main_is_valid_python():
    """main.py cannot be imported here (see module docstring); at least it must compile."""
    import py_compile

    py_compile.compile(str(APP_DIR / "main.py"), doraise=True)


def test_eager_request_that_fell_back_says_why_in_the_k_refusal(task_cls, tmp_path):
    """{"engine": "eager"} on a folder without configs/ runs the fixed-k ONNX file (a spread DAS): the client got only
    the ONNX refusal advising engine='eager'; it now says the graph keeps only its k and why eager did not run."""
    import torch

    from das_deploy_helpers import model_card
    from monai_das.engines.export import save_onnx
    from monai_das.networks import build_classifier

    models = tmp_path / "folder" / "models"
    models.mkdir(parents=True)
    torch.manual_seed(0)
    net = build_classifier("das", len(LABELS), 16, keep_ratio=0.25, sampler_kwargs={"spread": True}).eval()
    save_onnx(net, models / "model.onnx", [1, 16, 16, 16], metadata=model_card(keep_ratio=0.25), check=False)
    torch.save(net.state_dict(), models / "model.pt")
    task = task_cls(str(tmp_path / "folder"))
    with pytest.raises(ValueError) as err:
        task({"image": str(nibabel_anatomical()), "engine": "eager", "num_kept": 2})
    text = str(err.value)
    assert "fixed-k ONNX graph" in text and "keeps only its exported k=4 frames, not k=2" in text
    assert "Engine 'eager' was asked for but not used: checkpoint" in text and "model.pt" in text


def test_preload_before_any_model_starts_the_task(task_cls, bundle, tmp_path):
    """Review R71b: --conf preload true on a model folder the train task has yet to fill raised 'no DAS model yet'
    from BasicInferTask's preload, so the app never started and no model could be trained; the task now starts
    without a model and serves the first one written."""
    bare = tmp_path / "bundle"
    shutil.copytree(APP_DIR.parents[1] / "bundles" / "das_volume_classification" / "configs", bare / "configs")
    model_dir = tmp_path / "model"
    task = task_cls(str(bare), model_dir=str(model_dir), engine="eager", preload=True)
    assert not task.is_valid() and task.description.endswith("[no model yet]")
    shutil.copytree(bundle[0], model_dir)  # what the train task publishes
    assert task.is_valid()
    _, result = task({"image": str(nibabel_anatomical())})
    assert result["das"]["engine"] == "eager"
