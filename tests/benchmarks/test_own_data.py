"""``benchmarks/own_data.py``: a user's own small study written to disk, loadable by the package's readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_das.data.datalist import load_datalist


def test_written_studies_read_back_with_their_evidence(own_data_script, tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("nibabel")
    from monai_das.data.video_io import read_video

    clips = own_data_script.write_clips(tmp_path / "clips", 8, seed=0)
    volumes = own_data_script.write_volumes(tmp_path / "volumes", 12, seed=0)
    for path, n_test in ((clips, 4), (volumes, 2)):
        train, test = load_datalist(path), load_datalist(path, split="test")
        assert len(test) == n_test and len(train) + len(test) == (8 if path == clips else 12)
        assert {it["label_name"] for it in train} == {"disc", "square"}
        assert not {it["group"] for it in train} & {it["group"] for it in test}  # patients on one side only
    item = load_datalist(clips)[2]
    frames, _ = read_video(item["image"])
    ev = item["evidence"]
    assert len(ev) == 6 and ev == list(range(ev[0], ev[0] + 6)) and 48 <= len(frames) <= 70
    bright = frames.reshape(len(frames), -1).max(-1)
    assert bright[ev].min() > bright[np.setdiff1d(np.arange(len(frames)), ev)].max()  # the shape is in those frames
    import nibabel as nib

    item = load_datalist(volumes)[1]
    vol = nib.load(item["image"]).get_fdata()
    assert vol.shape == (36, 44, 40) and item["label_name"] == "disc"
    peak = vol.reshape(-1, 40).max(0)
    assert set(np.argsort(peak)[-3:]) == set(item["evidence"])


def test_a_finished_cell_is_not_run_again(own_data_script, tmp_path, monkeypatch):
    cell = tmp_path / "_work" / "clips" / "slr_seed3"
    cell.mkdir(parents=True)
    settings = {"datalist": str(tmp_path / "x.csv"), "overrides": "--sampler_lr 0.0001", "keep_ratio": 0.5,
                "generator": own_data_script.generator_fingerprint(), "code_hash": own_data_script.code_hash()}
    done = {"kind": "clips", "variant": "slr", "seed": 3, "best_val_auc": 0.9, "settings": settings}
    (cell / "result.json").write_text(json.dumps(done))
    monkeypatch.setattr(own_data_script, "run_child", lambda *a, **k: pytest.fail("a finished cell was re-run"))
    run = own_data_script.run_cell
    assert run("clips", tmp_path / "x.csv", "slr", ["--sampler_lr", "0.0001"], 3, tmp_path, 0.5) == done
    # another keep ratio or override under the same variant name: refused, not the old row reported under it
    with pytest.raises(SystemExit, match=r"other settings \(keep_ratio: 0.5 then, 0.25 now\)"):
        run("clips", tmp_path / "x.csv", "slr", ["--sampler_lr", "0.0001"], 3, tmp_path, 0.25)
    with pytest.raises(SystemExit, match=r"overrides: '--sampler_lr 0.0001' then, '--sampler_lr 0.001' now"):
        run("clips", tmp_path / "x.csv", "slr", ["--sampler_lr", "0.001"], 3, tmp_path, 0.5)
    # a cell trained on data of another generator (or before the generator was recorded): refused, not reused
    (cell / "result.json").write_text(json.dumps({**done, "settings": {**settings, "generator": "0ld0ld0ld0ld"}}))
    with pytest.raises(SystemExit, match=r"generator: '0ld0ld0ld0ld' then, '[0-9a-f]{12}' now"):
        run("clips", tmp_path / "x.csv", "slr", ["--sampler_lr", "0.0001"], 3, tmp_path, 0.5)
    # a cell trained by another version of the training code: refused, not reused (trial T71a)
    (cell / "result.json").write_text(json.dumps({**done, "settings": {**settings, "code_hash": "0ldc0de0ldc0"}}))
    with pytest.raises(SystemExit, match=r"code_hash: '0ldc0de0ldc0' then, '[0-9a-f]{12}' now"):
        run("clips", tmp_path / "x.csv", "slr", ["--sampler_lr", "0.0001"], 3, tmp_path, 0.5)
    del settings["generator"]
    (cell / "result.json").write_text(json.dumps({**done, "settings": settings}))
    with pytest.raises(SystemExit, match=r"generator: None then"):
        run("clips", tmp_path / "x.csv", "slr", ["--sampler_lr", "0.0001"], 3, tmp_path, 0.5)


def test_a_cell_reads_its_result_from_the_model_card(own_data_script, tmp_path, monkeypatch):
    """Not from the log's last line (whose format changed: an interval was added, and every cell then failed)."""
    import subprocess

    card = {"eval_metrics": {"val_auc": 0.8123456, "val_evidence_kept": 0.2},
            "das_model": {"validation": {"key_metric": "val_auc", "best_epoch": 3, "epochs": 4}}}

    def fake_run(cmd, **kwargs):
        root = Path(cmd[cmd.index("--bundle_root") + 1])
        (root / "models").mkdir(parents=True)
        (root / "models" / "metadata.json").write_text(json.dumps(card))
        return subprocess.CompletedProcess(cmd, 0, "training done: best val_auc 0.812 [95 % interval 0.5, 1.0] "
                                                    "at epoch 3 of 4", "")

    monkeypatch.setattr(own_data_script, "run_child", fake_run)
    row = own_data_script.run_cell("volumes", tmp_path / "v.csv", "default", [], 0, tmp_path, 0.5)
    assert (row["best_val_auc"], row["val_evidence_kept"], row["collapsed"]) == (0.8123, 0.2, True)
    assert (row["best_epoch"], row["epochs"]) == (3, 4)


def test_variant_needs_a_name(own_data_script, tmp_path):
    with pytest.raises(SystemExit, match="expected NAME=OVERRIDES"):
        own_data_script.main(["--variant", "--sampler_lr 0.0001", "--out", str(tmp_path)])


@pytest.mark.parametrize("radius", range(4, 11))
def test_square_and_disc_have_the_same_area(own_data_script, radius):
    """No whole-study intensity statistic (percentile scaling, bright-pixel count) may tell the classes apart."""
    disc, square = np.zeros((40, 40)), np.zeros((40, 40))
    own_data_script._shape(disc, True, 20, 20, radius)
    own_data_script._shape(square, False, 20, 20, radius)
    a, b = int((disc > 0).sum()), int((square > 0).sum())
    assert abs(a - b) <= 0.08 * a and 0 < a < 40 * 40
    assert ((square > 0).any(0).sum(), (square > 0).any(1).sum()) == (round(radius * np.pi ** 0.5),) * 2  # a square


def test_generated_data_records_its_generator(own_data_script, tmp_path, monkeypatch):
    """A data folder of another generator version was reused silently (its cells too)."""
    calls = []

    def fake_write(root, items, seed):
        calls.append((items, seed))
        root.mkdir(parents=True, exist_ok=True)
        (root / "clips.csv").write_text("image,label\n")

    monkeypatch.setattr(own_data_script, "write_clips", fake_write)
    monkeypatch.setattr(own_data_script, "generator_fingerprint", lambda: "aaaaaaaaaaaa")
    datalist = own_data_script.prepare_data(tmp_path, "clips", 8, 3)
    folder = tmp_path / "_data" / "clips_8_seed3"
    assert datalist == folder / "clips.csv" and calls == [(8, 3)]
    record = json.loads((folder / own_data_script.GENERATOR_FILE).read_text())
    assert record == {"generator": "aaaaaaaaaaaa", "kind": "clips", "items": 8, "data_seed": 3}
    assert own_data_script.prepare_data(tmp_path, "clips", 8, 3) == datalist and len(calls) == 1  # reused
    monkeypatch.setattr(own_data_script, "generator_fingerprint", lambda: "bbbbbbbbbbbb")  # the generator changed
    with pytest.raises(SystemExit, match=r"data folder '.*clips_8_seed3' was written by generator 'aaaaaaaaaaaa', this "
                                         r"one is 'bbbbbbbbbbbb'.*Remove that folder .* or use another --out"):
        own_data_script.prepare_data(tmp_path, "clips", 8, 3)
    (folder / own_data_script.GENERATOR_FILE).unlink()  # data written before generators were recorded
    with pytest.raises(SystemExit, match="records no generator"):
        own_data_script.prepare_data(tmp_path, "clips", 8, 3)
    assert len(calls) == 1  # never regenerated over the old files


def test_generator_fingerprint_follows_the_generating_code(own_data_script):
    fp = own_data_script.generator_fingerprint()
    assert len(fp) == 12 and fp == own_data_script.generator_fingerprint()
