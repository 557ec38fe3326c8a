"""
The MONAI Deploy App SDK application, run in-process on real NIfTI/DICOM test files and a synthetic DICOM series.

Needs the deployment environment (``bash scripts/setup_deploy_env.sh`` → ``.venv-deploy``); skipped elsewhere.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from das_deploy_helpers import LABELS, WritesAFile, nibabel_anatomical, pydicom_file, write_dicom_series, write_sr

pytest.importorskip("monai.deploy.core", reason="MONAI Deploy App SDK not installed (run scripts/setup_deploy_env.sh)")

from monai_das.deploy import DASPredictor, StudyLoader, discover_studies  # noqa: E402
from monai_das.deploy.__main__ import main as cli_main  # noqa: E402
from monai_das.deploy.app import DASClassifierApp  # noqa: E402
from monai_das.deploy.report import study_output_path  # noqa: E402


#: the multi-frame ultrasound study: a path outside Latin-1, as the SR text gives it
CINE = "üs 中/cine.dcm"


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory):
    """Good studies: real NIfTI, real CT slice, real multi-frame US, synthetic series; and bad ones."""
    root = tmp_path_factory.mktemp("studies")
    shutil.copy(nibabel_anatomical(), root / "anatomical.nii")
    (root / "ct").mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), root / "ct" / "CT_small.dcm")
    (root / CINE).parent.mkdir()
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), root / CINE)
    import pydicom

    for path in write_dicom_series(root / "series", num_slices=6):  # a name outside Latin-1, stored in UTF-8
        ds = pydicom.dcmread(str(path))
        ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", "Müller^Jürgen=中文"
        ds.AccessionNumber, ds.BodyPartExamined = "A12\nPredicted: xyz", "Chest"  # a line break, too long; lower case
        ds.save_as(str(path))
    # bad studies
    (root / "empty").mkdir()
    (root / "unreadable.nii.gz").write_bytes(b"garbage, not gzip")
    write_sr(root / "report" / "sr.dcm")
    (root / "fmri.nii").write_bytes(b"")  # empty file
    return root


def _ts(model) -> list[str]:
    """``-m`` a TorchScript file: a program, which runs only with ``--engine torchscript`` (trial T67b)."""
    return ["-m", str(model), "--engine", "torchscript"]


def test_app_folder_of_studies(study_folder, checkpoint_bundle, tmp_path):
    bundle, _ = checkpoint_bundle
    out = tmp_path / "out"
    # min_frames=1: the single CT slice (ct/CT_small.dcm) is classified as a one-slice volume only when asked for
    app = DASClassifierApp(input_path=study_folder, output_path=out, model_path=bundle, write_sr=True,
                           loader_options={"min_frames": 1})
    app.run()
    reports = {r["study_id"]: r for r in app.reports}
    ok = {"anatomical.nii", "ct", CINE, "series"}  # the study layer's ids: paths relative to the input
    bad = {"empty", "unreadable.nii.gz", "report", "fmri.nii"}
    assert set(reports) == ok | bad
    assert {k for k, r in reports.items() if r["status"] == "ok"} == ok, {k: r.get("error") for k, r in reports.items()}
    assert "empty" in reports["empty"]["error"] and reports["empty"]["stage"] == "load"
    assert "SR holds no image" in reports["report"]["error"]
    assert "unreadable.nii.gz" in reports["unreadable.nii.gz"]["error"]
    assert "is an empty file (0 bytes)" in reports["fmri.nii"]["error"]  # as training says it (trial T58)

    predictor = DASPredictor.from_path(bundle)
    loader = StudyLoader(predictor.spec, min_frames=1)
    sources = {s.study_id: s for s in discover_studies(study_folder)}
    for sid in ok:
        r = reports[sid]
        saved = json.loads(study_output_path(out, sid, ".json").read_text())  # us/cine.dcm → us/cine.dcm.json
        assert saved["study_id"] == sid and saved["status"] == "ok"
        assert set(saved["probabilities"]) == set(LABELS)
        assert sum(saved["probabilities"].values()) == pytest.approx(1.0)
        assert saved["num_frames"] == 16 and saved["num_kept"] == 8 and len(saved["kept_indices"]) == 8
        assert saved["compute_saved"] == pytest.approx(1 - 8 / 16)
        assert saved["kept_indices"] == sorted(set(saved["kept_indices"]))
        assert len(saved["kept_source_indices"]) == 8 and saved["model"]["format"] == "checkpoint"
        # the same study through the predictor directly gives the same answer
        expected = predictor.predict(loader.load(sources[sid]).image)
        assert r["kept_indices"] == expected.kept_indices
        assert list(r["probabilities"].values()) == pytest.approx(expected.probabilities, abs=1e-5)
    assert reports[CINE]["modality"] == "US" and reports["ct"]["modality"] == "CT"
    assert reports["series"]["modality"] == "MR"
    assert max(reports[CINE]["kept_source_indices"]) <= 29  # frames of the 30-frame clip

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_studies"] == 8 and summary["num_ok"] == 4 and summary["num_errors"] == 4

    # DICOM SR for the three DICOM studies, with the source study's tags
    import pydicom

    assert set(app.sr_files) == {"ct", CINE, "series"} and not app.sr_errors
    assert all(f.startswith(str(out / "dicom_sr" / CINE)) for f in app.sr_files[CINE])
    # the report text as written, in UTF-8: the study id outside Latin-1 too (it was rendered with '?' and then read
    # as UTF-8: 'M\ufffdller')
    assert f"study {CINE}" in pydicom.dcmread(app.sr_files[CINE][0]).ContentSequence[0].TextValue
    # the cine's kept frames referenced as IMAGE items (1-based frame numbers of the one multi-frame instance), so a
    # viewer opens what the classifier looked at
    cine_sr = pydicom.dcmread(app.sr_files[CINE][0])
    images = [item for item in cine_sr.ContentSequence if item.ValueType == "IMAGE"]
    frames = list(dict.fromkeys(i + 1 for i in reports[CINE]["kept_source_indices"]))
    assert [int(item.ReferencedSOPSequence[0].ReferencedFrameNumber) for item in images] == frames
    assert [r["frame"] for r in reports[CINE]["kept_images"]] == frames
    assert images[0].ConceptNameCodeSequence[0].CodingSchemeDesignator == "99MONAIDAS"
    ds = pydicom.dcmread(app.sr_files["ct"][0])
    src = pydicom.dcmread(study_folder / "ct" / "CT_small.dcm", stop_before_pixels=True)
    assert ds.Modality == "SR" and ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert reports["ct"]["predicted_name"] in ds.ContentSequence[0].TextValue
    # the series' SR: the patient's name exactly (UTF-8), the source series and all its instances referenced, the
    # report's warnings in the text
    ds = pydicom.dcmread(app.sr_files["series"][0])
    sources = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in sorted((study_folder / "series").glob("*.dcm"))]
    assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Müller^Jürgen=中文"
    # tags invalid for their VR were copied verbatim (trial T60c): now valid (SH: 16 characters, no control ones)
    assert ds.AccessionNumber == "A12 Predicted: x" and ds.BodyPartExamined == "CHEST"
    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    assert study.StudyInstanceUID == sources[0].StudyInstanceUID and series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence} == {d.SOPInstanceUID for d in sources}
    text = ds.ContentSequence[0].TextValue
    assert "InstanceNumbers" not in text  # this network's frames run across the slices (slice_axis 0): none to give
    assert reports["series"]["kept_images"] is None and all(i.ValueType != "IMAGE" for i in ds.ContentSequence)
    from monai_das.deploy.report import _file_names

    assert reports["series"]["warnings"] and all(f"Warning: {_file_names(w)}" in text
                                                 for w in reports["series"]["warnings"])
    assert str(study_folder) not in text  # an SR for PACS names files, not this machine's folders (trial S)


def test_app_enhanced_ct_gets_its_sr(checkpoint_bundle, tmp_path):
    """An Enhanced CT (one multi-frame file) is classified as a volume and gets its DICOM SR like a series (it was
    reported as kind 'video' and got no SR, without a word; trial S)."""
    import pydicom

    from das_deploy_helpers import write_multiframe_ct

    bundle, _ = checkpoint_bundle
    path = write_multiframe_ct(tmp_path / "in" / "enhanced.dcm")
    app = DASClassifierApp(input_path=tmp_path / "in", output_path=tmp_path / "out", model_path=bundle,
                           write_sr=True)
    app.run()
    (report,) = app.reports
    assert report["status"] == "ok" and report["kind"] == "volume" and report["modality"] == "CT"
    assert set(app.sr_files) == {"enhanced.dcm"} and not app.sr_errors
    sr, src = pydicom.dcmread(app.sr_files["enhanced.dcm"][0]), pydicom.dcmread(path, stop_before_pixels=True)
    (study,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence] == [src.SOPInstanceUID]


def test_app_rerun_into_the_same_folder_replaces_its_outputs(study_folder, checkpoint_bundle, tmp_path, monkeypatch):
    """A second run into one output folder leaves one SR per study (not one per run), and a report that cannot be
    written (e.g. NaN probabilities) replaces the earlier run's 'ok' file with its error, as summary.json says."""
    import monai_das.deploy.operators as operators

    bundle, _ = checkpoint_bundle
    out = tmp_path / "out"
    make = lambda: DASClassifierApp(input_path=study_folder, output_path=out, model_path=bundle, write_sr=True,  # noqa
                                    loader_options={"min_frames": 1})
    make().run()
    assert json.loads(study_output_path(out, "ct", ".json").read_text())["status"] == "ok"
    real = operators.write_json

    def failing(report, path):
        if report.get("study_id") == "ct" and report.get("status") == "ok":
            raise ValueError("Out of range float values are not JSON compliant")
        return real(report, path)

    monkeypatch.setattr(operators, "write_json", failing)
    app = make()
    app.run()
    saved = json.loads(study_output_path(out, "ct", ".json").read_text())
    assert saved["status"] == "error" and saved["stage"] == "report" and "JSON compliant" in saved["error"]
    assert "predicted_name" not in next(r for r in app.reports if r["study_id"] == "ct")  # as in summary.json
    assert not list(study_output_path(out / "dicom_sr", "ct").glob("*.dcm"))  # run 1's SR would contradict it
    for sid in (CINE, "series"):
        assert len(list(study_output_path(out / "dicom_sr", sid).glob("*.dcm"))) == 1, sid
        assert len(app.sr_files[sid]) == 1


def test_app_sr_write_failure_leaves_no_sr(study_folder, checkpoint_bundle, tmp_path, monkeypatch):
    """An SR write that fails half-way (a full disk) leaves neither its partial file nor the earlier run's SR of that
    study (which would contradict this run's report); the failure is in ``sr_errors``; the other studies' SRs are
    replaced, one each."""
    from monai_das.deploy.operators import DASTextSRWriterOperator

    bundle, _ = checkpoint_bundle
    out = tmp_path / "out"
    make = lambda: DASClassifierApp(input_path=study_folder, output_path=out, model_path=bundle, write_sr=True,  # noqa
                                    loader_options={"min_frames": 1})
    first = make()
    first.run()
    real = DASTextSRWriterOperator.write

    def failing(self, text, series, output_dir, kept_images=None):
        if text.startswith("DAS classification of study ct "):
            (output_dir / "partial.dcm").write_bytes(b"DICM")
            raise OSError(28, "No space left on device")
        return real(self, text, series, output_dir, kept_images)

    monkeypatch.setattr(DASTextSRWriterOperator, "write", failing)
    killed = study_output_path(out / "dicom_sr", "series") / ".sr-killed"  # what a run killed mid-write leaves
    killed.mkdir()
    (killed / "half.dcm").write_bytes(b"DICM")
    app = make()
    app.run()
    assert set(app.sr_errors) == {"ct"} and "No space left" in app.sr_errors["ct"]
    assert not list(study_output_path(out / "dicom_sr", "ct").rglob("*.dcm")) and not killed.exists()
    for sid in (CINE, "series"):
        files = list(study_output_path(out / "dicom_sr", sid).glob("*.dcm"))
        assert [str(f) for f in files] == app.sr_files[sid] and app.sr_files[sid] != first.sr_files[sid], sid


def test_app_sr_folder_linked_outside_is_not_written_or_emptied(study_folder, checkpoint_bundle, tmp_path):
    """A study's SR folder replaced by a symbolic link to another place: the application neither writes an SR there
    nor removes the '*.dcm' files it finds there (it replaced 'earlier SRs' through the link); the study's SR failure
    is reported, the others' SRs are written."""
    bundle, _ = checkpoint_bundle
    out = tmp_path / "out"
    make = lambda: DASClassifierApp(input_path=study_folder, output_path=out, model_path=bundle, write_sr=True,  # noqa
                                    loader_options={"min_frames": 1})
    make().run()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.dcm").write_bytes(b"DICM someone else's file")
    linked = study_output_path(out / "dicom_sr", "series")
    shutil.rmtree(linked)
    linked.symlink_to(elsewhere, target_is_directory=True)
    app = make()
    app.run()
    assert (elsewhere / "victim.dcm").read_bytes() == b"DICM someone else's file"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.dcm"]
    assert "leads outside" in app.sr_errors["series"] and "series" not in app.sr_files
    assert len(app.sr_files[CINE]) == 1
    # the same for a study's JSON report: a report folder linked elsewhere is not written through
    (elsewhere / "cine.dcm.json").write_text("someone else's")
    report_dir = study_output_path(out, CINE, ".json").parent
    shutil.rmtree(report_dir)
    report_dir.symlink_to(elsewhere, target_is_directory=True)
    app = make()
    app.run()
    assert (elsewhere / "cine.dcm.json").read_text() == "someone else's"
    report = next(r for r in app.reports if r["study_id"] == CINE)
    assert report["status"] == "error" and "leads outside" in report["error"] and "report_file" not in report


def test_app_reports_the_recipe_it_applied(checkpoint_bundle, tmp_path):
    """A recipe option of the app (--intensity-range) is what the report's model.recipe says was applied (it gave the
    model's own recipe while applying another)."""
    bundle, _ = checkpoint_bundle
    app = DASClassifierApp(input_path=nibabel_anatomical(), output_path=tmp_path / "out", model_path=bundle,
                           loader_options={"min_frames": 1, "intensity_range": [0, 1]})
    app.run()
    (report,) = app.reports
    assert report["status"] == "ok" and list(report["model"]["recipe"]["intensity_range"]) == [0.0, 1.0]
    assert json.loads(Path(report["report_file"]).read_text())["model"]["recipe"]["intensity_range"] == [0.0, 1.0]


def test_app_single_files_torchscript(torchscript_model, tmp_path):
    model, net = torchscript_model
    for name, path in [("anatomical", nibabel_anatomical()), ("CT_small", pydicom_file("CT_small.dcm"))]:
        out = tmp_path / name
        app = DASClassifierApp(input_path=path, output_path=out, model_path=model, engine="torchscript",
                               loader_options={"min_frames": 1})
        app.run()
        (report,) = app.reports
        assert report["status"] == "ok" and report["model"]["format"] == "torchscript"
        # no engine asked for: the file runs with its own, not as a "fallback" from ONNX Runtime
        assert report["model"]["engine_fallback"] is None and report["model"]["engine"] == "torchscript"
        assert report["num_kept"] == 4 and report["compute_saved"] == pytest.approx(0.75)
        assert json.loads((out / f"{report['study_id']}.json").read_text())["kept_indices"] == report["kept_indices"]
        spec = DASPredictor.from_path(model, engine="torchscript").spec
        study = StudyLoader(spec, min_frames=1).load(discover_studies(path)[0])
        with torch.no_grad():
            expected = net.sample(study.image[None])[2][0].tolist()
        assert report["kept_indices"] == expected


def test_a_torchscript_model_runs_only_when_asked_for(tmp_path, caplog):
    """-m evil.ts with the default engine ran its program, which wrote a file of its choice (trial T67b)."""
    import numpy as np

    evil = tmp_path / "evil.ts"
    torch.jit.save(torch.jit.script(WritesAFile(str(tmp_path / "pwned"))), str(evil))
    study = tmp_path / "study.npy"
    np.save(study, np.zeros((8, 8, 8), dtype=np.float32))
    with caplog.at_level("ERROR"):
        assert cli_main(["-i", str(study), "-o", str(tmp_path / "out"), "-m", str(evil)]) == 1
    assert "evil.ts' is a TorchScript file, a program" in caplog.text and "--engine torchscript" in caplog.text
    assert not (tmp_path / "pwned").exists()


def test_an_interrupted_run_is_a_failure(torchscript_model, tmp_path, monkeypatch, caplog):
    """Ctrl-C or SIGTERM: Holoscan stops the graph and returns normally, and the command line printed num_studies 13
    with exit status 0 for a run of 38 studies (trial T67c). A graph that ends before every report is an error."""
    from monai.deploy.core import Application

    model, _ = torchscript_model
    write_dicom_series(tmp_path / "in" / "s1", num_slices=5)
    monkeypatch.setattr(Application, "run", lambda self, *a, **k: self.compose())  # stopped before any study ran
    with caplog.at_level("ERROR"):
        assert cli_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *_ts(model), "--modalities",
                         "MR"]) == 1
    assert "the run stopped after 0 of 1 studies (interrupted: Ctrl-C or SIGTERM?)" in caplog.text
    assert not (tmp_path / "out" / "summary.json").exists()


def test_one_run_at_a_time_per_output_folder(torchscript_model, tmp_path, caplog):
    """Two runs into one output folder left reports of two models side by side and a summary.json of one of them
    that contradicted the others' reports (trial T67c): the second is refused naming the first; a run lets go at its
    end, leaving only its own files."""
    from filelock import FileLock

    model, _ = torchscript_model
    write_dicom_series(tmp_path / "in" / "s1", num_slices=5)
    out = tmp_path / "out"
    out.mkdir()
    other = FileLock(str(out / ".monai_das_deploy.lock"))
    other.acquire(timeout=0)
    (out / ".monai_das_deploy.owner").write_text("pid 4242 on host7, since 2026-12-07 09:00:00\n")
    with caplog.at_level("ERROR"):
        assert cli_main(["-i", str(tmp_path / "in"), "-o", str(out), *_ts(model), "--modalities", "MR"]) == 1
    assert (f"another run of the Deploy app is writing into '{out}' (pid 4242 on host7, since 2026-12-07 09:00:00): "
            "wait for it to finish, or give this run another --output") in caplog.text
    assert not (out / "s1.json").exists()
    other.release()
    # another app of this process holding the folder is refused too (review R68d: the process's one lock registry
    # let a second instance write beside the first)
    from monai_das.utils.io import hold_lock, release_lock

    assert hold_lock(out, ".monai_das_deploy.lock", ".monai_das_deploy.owner", str)
    try:
        with caplog.at_level("ERROR"):
            assert cli_main(["-i", str(tmp_path / "in"), "-o", str(out), *_ts(model), "--modalities", "MR"]) == 1
        assert f"another run of the Deploy app in this process is writing into '{out}'" in caplog.text
    finally:
        release_lock(out, ".monai_das_deploy.lock", ".monai_das_deploy.owner")
    assert cli_main(["-i", str(tmp_path / "in"), "-o", str(out), *_ts(model), "--modalities", "MR"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s1.json", "summary.json"]


def test_cli_exit_status(study_folder, torchscript_model, tmp_path, caplog):
    model, _ = torchscript_model
    good = tmp_path / "good"
    write_dicom_series(good / "s1", num_slices=5)
    assert cli_main(["-i", str(good), "-o", str(tmp_path / "o1"), *_ts(model), "--modalities", "MR"]) == 0
    assert json.loads((tmp_path / "o1" / "s1.json").read_text())["status"] == "ok"
    # the CT is refused by --modalities MR: an error report, the other studies still classified, exit status 3
    assert cli_main(["-i", str(study_folder), "-o", str(tmp_path / "o2"), *_ts(model), "--modalities", "MR",
                     "US"]) == 3
    ct = json.loads((tmp_path / "o2" / "ct.json").read_text())
    assert ct["status"] == "error" and "modality CT is not one of the accepted modalities" in ct["error"]
    assert json.loads((tmp_path / "o2" / "series.json").read_text())["status"] == "ok"
    assert cli_main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o3"), *_ts(model)]) == 1
    assert cli_main(["-i", str(good), "-o", str(tmp_path / "o4"), "-m", str(tmp_path / "no_model")]) == 1
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()  # nothing made for a run that fails
    with pytest.raises(SystemExit):  # -i twice: a usage error, not the second input alone
        cli_main(["-i", str(good), "-i", str(study_folder), "-o", str(tmp_path / "o5"), *_ts(model)])
    # a smaller run into o2: the earlier reports are named, summary.json is this run's (removed first: a kill half-way
    # leaves none of another run)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert cli_main(["-i", str(good), "-o", str(tmp_path / "o2"), *_ts(model), "--modalities", "MR"]) == 0
    assert "report(s) of studies that are not in this run" in caplog.text and "ct.json" in caplog.text
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["num_studies"] == 1
    # an output that cannot be written: one line naming it, before the model is loaded or any study read
    (tmp_path / "a_file").write_text("not a folder")
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert cli_main(["-i", str(good), "-o", str(tmp_path / "a_file" / "out"), "-m", str(tmp_path / "no_model")]) == 1
    assert f"cannot write to '{tmp_path / 'a_file' / 'out'}'" in caplog.text and "output folder (--output)" in caplog.text
    assert "no_model" not in caplog.text  # the model was never looked for


def test_study_list_labels_are_the_models_classes(torchscript_model, tmp_path):
    """A CSV study list labelled with class names stopped the run ('not an integer class index'), and a label outside
    the model's classes went through without a word (bundle inference accepted the first and refused the second)."""
    model, _ = torchscript_model
    write_dicom_series(tmp_path / "s1", num_slices=5)
    (tmp_path / "names.csv").write_text(f"image,label\ns1,{LABELS[1]}\n")
    assert cli_main(["-i", str(tmp_path / "names.csv"), "-o", str(tmp_path / "o1"), *_ts(model)]) == 0
    report = json.loads((tmp_path / "o1" / "s1.json").read_text())
    assert report["status"] == "ok"
    # the list's class is in the reports (it was checked, then dropped: the reports could not be scored; trial T57)
    assert (report["label"], report["label_name"]) == (1, LABELS[1])
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["studies"][0]["label_name"] == LABELS[1]
    (tmp_path / "idx.csv").write_text(f"image,label\ns1,{len(LABELS)}\n")
    assert cli_main(["-i", str(tmp_path / "idx.csv"), "-o", str(tmp_path / "o2"), *_ts(model)]) == 1


def test_a_study_lists_images_lie_inside_its_folder_or_dataset_dir(torchscript_model, tmp_path, caplog):
    """Security review T69b: '-i list.csv' classified a '../' row and an absolute row outside the list's folder "ok"
    and opened /etc/passwd. The list is refused now (exit status 1), naming each such line and the folder, and no
    report is written; '--dataset_dir' with a folder that holds them reads them, as the bundles' dataset_dir does."""
    model, _ = torchscript_model
    lists, outside = tmp_path / "lists", tmp_path / "outside"
    for path in (lists / "in.nii", outside / "secret.nii", outside / "secret2.nii"):
        path.parent.mkdir(exist_ok=True)
        shutil.copy(nibabel_anatomical(), path)
    rows = f"image\nin.nii\n../outside/secret.nii\n{outside / 'secret2.nii'}\n"
    (lists / "list.csv").write_text(rows + "/etc/passwd\n")
    with caplog.at_level("ERROR"):
        assert cli_main(["-i", str(lists / "list.csv"), "-o", str(tmp_path / "o1"), *_ts(model)]) == 1
    assert (f"study list '{lists / 'list.csv'}': 3 images lie outside the dataset folder '{lists}': line 3 "
            f"'../outside/secret.nii', line 4 '{outside / 'secret2.nii'}', line 5 '/etc/passwd'; images must lie "
            "inside dataset_dir") in caplog.text
    assert not (tmp_path / "o1").exists()
    (lists / "list.csv").write_text(rows)
    assert cli_main(["-i", str(lists / "list.csv"), "-o", str(tmp_path / "o2"), *_ts(model),
                     "--dataset_dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert sorted((s["study_id"], s["status"]) for s in summary["studies"]) == sorted(
        [("in.nii", "ok"), ("../outside/secret.nii", "ok"), (str(outside / "secret2.nii"), "ok")])
    # an ordinary list inside its folder, without the option: as before; the option is in --help
    (lists / "own.csv").write_text("image\nin.nii\n")
    assert cli_main(["-i", str(lists / "own.csv"), "-o", str(tmp_path / "o3"), *_ts(model)]) == 0
    assert json.loads((tmp_path / "o3" / "in.nii.json").read_text())["status"] == "ok"
    with caplog.at_level("WARNING"):  # a folder or a study file lists no paths: the option is said to do nothing
        assert cli_main(["-i", str(lists / "in.nii"), "-o", str(tmp_path / "o4"), *_ts(model),
                         "--dataset_dir", str(tmp_path)]) == 0
    assert f"dataset_dir '{tmp_path}' is read for a CSV study list or a datalist only" in caplog.text
    from monai_das.deploy.__main__ import build_parser

    assert "--dataset_dir DIR, --dataset-dir DIR" in build_parser().format_help()


def test_app_runs_onnx_by_default_with_frame_budget(onnx_bundle, tmp_path):
    """A bundle with models/model.onnx: ONNX Runtime by default (the eager network's answer), the k of the card,
    another k from --num_kept/--keep_ratio (or for a given predictor), --engine eager, and k > T refused."""
    bundle, net = onnx_bundle
    path = nibabel_anatomical()
    app = DASClassifierApp(input_path=path, output_path=tmp_path / "a", model_path=bundle)
    app.run()
    (report,) = app.reports
    assert report["status"] == "ok", report.get("error")
    assert report["model"]["engine"] == "onnxruntime" and report["model"]["format"] == "onnx"
    assert report["num_frames"] == 8 and report["num_kept"] == 4 and report["model"]["trained_num_kept"] == 4
    predictor = DASPredictor.from_path(bundle)
    image = StudyLoader(predictor.spec).load(discover_studies(path)[0]).image
    with torch.no_grad():
        logits, idx = net.forward_with_indices(torch.as_tensor(image)[None].float(), 4)
    assert report["kept_indices"] == sorted(idx[0].tolist())
    assert list(report["probabilities"].values()) == pytest.approx(torch.softmax(logits, 1)[0].tolist(), abs=1e-4)

    def cli_report(name: str, *flags: str) -> dict:
        assert cli_main(["-i", str(path), "-o", str(tmp_path / name), "-m", str(bundle), *flags]) == 0
        return json.loads(study_output_path(tmp_path / name, report["study_id"], ".json").read_text())

    r = cli_report("k2", "--num_kept", "2")
    assert r["num_kept"] == 2 and r["model"]["num_kept"] == 2 and len(r["kept_indices"]) == 2
    assert r["model"]["engine"] == "onnxruntime" and r["compute_saved"] == pytest.approx(0.75)
    r = cli_report("eager", "--keep_ratio", "0.75", "--engine", "eager")
    assert r["model"]["engine"] == "eager" and r["num_kept"] == 6
    assert cli_main(["-i", str(path), "-o", str(tmp_path / "bad"), "-m", str(bundle), "--num_kept", "9"]) == 1
    # a predictor given to the app: the budget goes to the inference operator
    app = DASClassifierApp(input_path=path, output_path=tmp_path / "given", predictor=predictor, num_kept=3)
    app.run()
    assert app.reports[0]["num_kept"] == 3 and app.reports[0]["model"]["num_kept"] == 3


def test_app_refuses_both_budgets_naming_its_options(tmp_path):
    """num_kept and keep_ratio given together are refused in the names of the app's CLI options, which pass them
    (the CLI's own exclusive group refuses them first: both reach the app from Python only)."""
    with pytest.raises(ValueError, match=r"^give --num_kept or --keep_ratio, not both \(got --num_kept 2, "
                                         r"--keep_ratio 0\.5\)\.$"):
        DASClassifierApp(input_path=tmp_path, output_path=tmp_path / "out", model_path=tmp_path, num_kept=2,
                         keep_ratio=0.5)


def test_a_refused_app_ends_without_a_destructor_error(tmp_path, monkeypatch):
    """An app refused in its constructor (both budgets, an unknown engine: checks made before the SDK's
    ``Application.__init__``) is collected without holoscan's ``Application.__del__`` failing on the executor that
    constructor would have set: a Python caller saw "Exception ignored in: <function Application.__del__ ...>
    AttributeError: 'DASClassifierApp' object has no attribute '_async_executor'" after the refusal (trial t72h)."""
    import gc
    import sys

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for kwargs in ({"num_kept": 2, "keep_ratio": 0.5}, {"engine": "tensorrt"}):
        try:
            DASClassifierApp(input_path=tmp_path, output_path=tmp_path / "out", model_path=tmp_path, **kwargs)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{kwargs} was not refused")
        gc.collect()
    assert [str(u.exc_value) for u in unraisable] == []


def test_model_warnings_are_in_the_log_and_every_report(onnx_bundle, tmp_path, caplog):
    """What the trial found silent: --engine eager on a training folder (no configs/) ran ONNX with the reason only
    in model.engine_fallback; --spatial-size changed the grid without a word, and with ONNX the refusal blamed the
    metadata. Now the fallback and a frame-size override are warned about in the log and in every report (an error
    report too), another T is refused naming the option, exit status 1."""
    bundle, _ = onnx_bundle
    run = tmp_path / "run"  # a training's bundle_root after an export: models/ only
    shutil.copytree(bundle / "models", run / "models")
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(nibabel_anatomical(), studies / "anatomical.nii")
    (studies / "unreadable.nii.gz").write_bytes(b"garbage, not gzip")

    def reports(out: Path) -> dict:
        return {p.name: json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "summary.json"}

    with caplog.at_level("WARNING"):
        assert cli_main(["-i", str(studies), "-o", str(tmp_path / "fb"), "-m", str(run), "--engine", "eager"]) == 3
    got = reports(tmp_path / "fb")
    ok, bad = got["anatomical.nii.json"], got["unreadable.nii.gz.json"]
    assert ok["status"] == "ok" and ok["model"]["engine"] == "onnxruntime" and bad["status"] == "error"
    (fallback,) = [w for w in ok["warnings"] if w.startswith("engine 'eager' was not used: ")]
    assert "needs a bundle config" in fallback and "--config" in fallback and "using onnxruntime" in fallback
    assert fallback in bad["warnings"] and fallback in caplog.text

    caplog.clear()
    with caplog.at_level("WARNING"):
        assert cli_main(["-i", str(studies), "-o", str(tmp_path / "ss"), "-m", str(bundle), "--engine", "eager",
                         "--spatial-size", "8", "16", "20"]) == 3
    got = reports(tmp_path / "ss")
    ok, bad = got["anatomical.nii.json"], got["unreadable.nii.gz.json"]
    assert ok["status"] == "ok" and ok["model"]["spatial_size"] == [8, 16, 20]
    (grid,) = [w for w in ok["warnings"] if "--spatial-size 8 16 20" in w]
    assert "is not the grid the model" in grid and grid in bad["warnings"] and grid in caplog.text
    caplog.clear()
    with caplog.at_level("ERROR"):  # another T: refused, naming the option (ONNX blamed "its metadata")
        assert cli_main(["-i", str(studies), "-o", str(tmp_path / "t6"), "-m", str(bundle),
                         "--spatial-size", "6", "16", "16"]) == 1
    assert "OverrideError" in caplog.text and "(CLI: --spatial-size 6 16 16) gives the model" in caplog.text
    assert "trained on T=8" in caplog.text and not (tmp_path / "t6" / "anatomical.nii.json").exists()


def test_a_report_of_another_study_under_the_same_id_is_replaced_with_a_warning(torchscript_model, tmp_path, caplog):
    """Two series folders named SE0002 (patients N000 and N002) run one after the other into one output folder: the
    second report silently replaced the first."""
    model, _ = torchscript_model
    out = tmp_path / "out"
    for patient in ("N000", "N002"):
        write_dicom_series(tmp_path / patient / "SE0002", num_slices=5)
    assert cli_main(["-i", str(tmp_path / "N000" / "SE0002"), "-o", str(out), *_ts(model)]) == 0
    first = json.loads((out / "SE0002.json").read_text())
    assert first["status"] == "ok" and not any("replaces" in w for w in first["warnings"])
    assert cli_main(["-i", str(tmp_path / "N000" / "SE0002"), "-o", str(out), *_ts(model)]) == 0  # same study
    assert not any("replaces" in w for w in json.loads((out / "SE0002.json").read_text())["warnings"])
    with caplog.at_level("WARNING"):
        assert cli_main(["-i", str(tmp_path / "N002" / "SE0002"), "-o", str(out), *_ts(model)]) == 0
    second = json.loads((out / "SE0002.json").read_text())
    (note,) = [w for w in second["warnings"] if "replaces" in w]
    assert "N000" in note and "give each run its own output folder" in note and note in caplog.text


@pytest.mark.parametrize("axcodes, why", [("RAX", "none of S/I"), ("RRS", "none of A/P"), ("ras", "give 'RAS'"),
                                          ("RA", "2 letters")])
def test_cli_invalid_axcodes_is_a_usage_error(tmp_path, capsys, axcodes, why):
    """--axcodes RAX gave one error report per study (MONAI's "Not all axis codes ..."), never naming the option: a
    usage error (exit status 2) before anything is read, as a swapped --intensity-range."""
    with pytest.raises(SystemExit) as exc:
        cli_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model"),
                  "--axcodes", axcodes])
    assert exc.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert f"--axcodes '{axcodes}' is not an orientation" in err and why in err and "one of S/I" in err


def test_sr_text_values_are_valid_for_their_vr(caplog):
    """Patient and study attributes for the SR: valid ones as they are, others cleaned (control characters to spaces),
    cut to the VR's length (a PN per component group), a CS upper-cased, left out when still invalid; the log names
    the attribute, never its value."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import PersonName

    from monai_das.deploy.operators import sr_text_value

    name = PersonName("Doe^John")
    assert sr_text_value("PatientName", name) is name and sr_text_value("StudyID", "S1") == "S1"
    assert sr_text_value("PatientID", "P" * 300) == "P" * 64 and sr_text_value("StudyID", "x" * 20) == "x" * 16
    assert sr_text_value("PatientName", "Doe^Jo\x1bhn=" + "中" * 70) == "Doe^Jo hn=" + "中" * 64
    # 3 groups at most; a long family name shortened, the given name kept (review)
    assert sr_text_value("PatientName", "A=B=C=D") == "A=B=C"
    assert sr_text_value("PatientName", "X" * 70 + "^Y") == "X" * 62 + "^Y"
    assert sr_text_value("StudyDescription", MultiValue(str, ["a", "b\r\n"])) == "a\\b  "
    with caplog.at_level(logging.WARNING):
        assert sr_text_value("BodyPartExamined", "chest-wall!") is None
        assert sr_text_value("BodyPartExamined", "Chest") == "CHEST"
    assert "BodyPartExamined is not a valid CS" in caplog.text and "chest" not in caplog.text.lower()


def test_sr_attributes_that_cannot_be_made_valid(monkeypatch):
    """What the SR writer copies: valid values as they are, an invalid optional attribute removed (also the SDK's
    copy of it), an invalid type-2 one written empty (the SR must carry it), one the source lacks left alone."""
    from pydicom.dataset import Dataset

    from monai_das.deploy import operators

    source, ds = Dataset(), Dataset()
    source.PatientID, source.PatientName, source.BodyPartExamined = "P1", "Doe^Jo", "chest-wall!"
    ds.PatientID, ds.PatientName, ds.BodyPartExamined, ds.StudyID = "?", "?", "?", "S9"
    operators.copy_text_attributes(ds, source, ("PatientID", "PatientName", "BodyPartExamined", "StudyID"),
                                   required=("PatientName",))
    assert ds.PatientID == "P1" and str(ds.PatientName) == "Doe^Jo" and "BodyPartExamined" not in ds
    assert ds.StudyID == "S9"  # not in the source: the SDK's value stays
    monkeypatch.setattr(operators, "sr_text_value", lambda keyword, value: None)  # no value made valid
    operators.copy_text_attributes(ds, source, ("PatientID", "PatientName"), required=("PatientName",))
    assert "PatientID" not in ds and "PatientName" in ds and str(ds.PatientName) == ""


def test_an_sr_folder_whose_name_is_too_long_is_logged_not_raised(tmp_path, caplog):
    """A study id longer than a file name may be (a 300-character SeriesNumber) made remove_srs raise ENAMETOOLONG
    in the report writer's error branch, and the whole run stopped, the other studies unread (trial 60c)."""
    from monai_das.deploy.operators import remove_srs

    with caplog.at_level(logging.ERROR, logger="monai_das.deploy"):
        remove_srs(tmp_path / ("a_multi#series_" + "9" * 300), tmp_path)
    assert "cannot be looked at" in caplog.text and "File name too long" in caplog.text
