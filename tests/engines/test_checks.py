"""Start-up checks of bundle runs: override typos, writable folders, resume without checkpoint, 1-frame batches."""

from __future__ import annotations

import json
import logging
import re
import os
from pathlib import Path

import monai
import pytest
import torch

from monai_das.engines import (
    bundle_cli_overrides,
    bundle_meta_file,
    check_launch,
    check_overrides,
    check_resume,
    check_tracking_uri,
    check_writable,
    train_drop_last,
)
from monai_das.networks import build_classifier

REPO = Path(__file__).resolve().parents[2]
TRAIN = str(REPO / "bundles" / "das_volume_classification" / "configs" / "train.json")
EVALUATE = str(REPO / "bundles" / "das_volume_classification" / "configs" / "evaluate.json")
MAIN = str(Path(monai.__file__).parent / "bundle" / "__main__.py")  # sys.argv[0] of `python -m monai.bundle`


def _argv(*args, configs=(TRAIN,)):
    cfg = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    return [MAIN, "run", "--config_file", cfg, "--meta_file", "m.json", *args]


def test_parses_bundle_command_line():
    overrides, files = bundle_cli_overrides(_argv("--max_epochs", "3", "--lr=0.01", "--train#dataset#cache_rate", "0",
                                                  configs=(TRAIN, EVALUATE)))
    assert overrides == {"max_epochs": "3", "lr": "0.01", "train#dataset#cache_rate": "0"}
    assert files == [TRAIN, EVALUATE]
    assert bundle_cli_overrides(["pytest", "run", "--max_epoch", "1"]) == ({}, [])  # not a bundle command line


def test_check_launch():
    """torchrun with train.json alone (every rank trained the whole model, all but one refused the checkpoint folder
    with no hint), or an evaluation under torchrun or with multi_gpu_train.json (it failed on the process group, or
    ran twice and wrote the card twice): refused up front, naming the command to use."""
    multi = str(Path(TRAIN).with_name("multi_gpu_train.json"))
    torchrun = {"WORLD_SIZE": "2"}
    check_launch("train", _argv(), {})
    check_launch("train", _argv(), {"WORLD_SIZE": "1"})
    with pytest.raises(ValueError, match="torchrun with 2 processes, but the configs .train.json. have no multi_gpu"):
        check_launch("train", _argv(), torchrun)
    check_launch("evaluate", _argv(configs=(TRAIN, EVALUATE)), {})
    # listed first, evaluate.json's "+" entries are replaced by train.json's keys and train.json's run trains over the
    # model to evaluate (it failed in MONAI's parser before its keys became "+" entries; review R71h)
    with pytest.raises(ValueError, match=r"list evaluate\.json before train\.json: .* would train again"):
        check_launch("train", _argv(configs=(EVALUATE, TRAIN)), {})
    for argv, env in ((_argv(configs=(TRAIN, EVALUATE)), torchrun), (_argv(configs=(TRAIN, multi, EVALUATE)), {})):
        with pytest.raises(ValueError, match="evaluate.json runs in one process"):
            check_launch("evaluate", argv, env)
    # the last config's initialize runs: evaluate.json before multi_gpu_train.json retrained under torchrun and moved
    # the trained model aside (trial T64a); every config runs the check, the command line's list decides
    launched = {"WORLD_SIZE": "2", "RANK": "0"}
    with pytest.raises(ValueError, match="evaluate.json runs in one process .launched by torchrun with 2"):
        check_launch("multi_gpu", _argv(configs=(TRAIN, EVALUATE, multi)), launched)
    check_launch("multi_gpu", _argv(configs=(TRAIN, multi)), launched)
    with pytest.raises(ValueError, match=r"have multi_gpu_train\.json, which trains in processes a distributed "
                                         r"launcher starts \(RANK and WORLD_SIZE are not set\): run `torchrun"):
        check_launch("multi_gpu", _argv(configs=(TRAIN, multi)), {})
    with pytest.raises(ValueError, match="RANK and WORLD_SIZE are not set"):
        check_launch("multi_gpu", ["python", "my_script.py"], {})  # a Python session: the config's own kind
    inference = str(Path(TRAIN).with_name("inference.json"))
    for configs in ((EVALUATE,), (inference, EVALUATE), (EVALUATE, inference)):
        with pytest.raises(ValueError, match=r"evaluate\.json was given without train\.json \(configs: .*\): "
                                             r"evaluate\.json is read on top"):
            check_launch("inference", _argv(configs=configs), {})
    check_launch("inference", _argv(configs=(inference,)), launched)  # batch inference shards under torchrun
    check_launch("evaluate", _argv(configs=("my_train.json", EVALUATE)), {})  # one's own copy of train.json (review)
    with pytest.raises(ValueError, match=r"inference\.json with multi_gpu_train\.json, which trains"):
        check_launch("multi_gpu", _argv(configs=(inference, multi)), launched)


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
def test_evaluate_json_alone_is_refused_by_its_own_initialize(bundle, monkeypatch, caplog):
    """evaluate.json run without train.json ended in MONAI's `KeyError: 'query key: validate'` while its
    `validate#...` keys were merged, before any check could run; it now merges as `+validate` (the same keys with
    train.json) and its initialize refuses the launch naming both files."""
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / bundle / "configs"
    alone, both = ([str(configs / f"{n}.json") for n in names] for names in (["evaluate"], ["train", "evaluate"]))
    monkeypatch.setattr("sys.argv", _argv("--bundle_root", "runs/a", configs=alone))
    parser = ConfigParser()
    with pytest.warns(UserWarning, match="Can't merge entry"):
        parser.read_config(alone)
    with pytest.raises(RuntimeError) as raised, caplog.at_level(logging.WARNING):
        parser.get_parsed_content("initialize")
    assert re.search(r"evaluate\.json was given without train\.json \(configs: .*\): evaluate\.json is read on top",
                     str(raised.value.__cause__))
    # the launch is judged first: no "override --bundle_root has no effect" before the refusal (trial T71i)
    assert "has no effect" not in caplog.text
    merged = ConfigParser.load_config_files(both)
    assert merged["validate"]["split"] == "test" and "test_auc" in merged["validate"]["key_metric"]
    assert merged["validate"]["evaluator"] and merged["network_def"]["_target_"]  # train.json's, kept
    assert "num_samples" in merged["network_def"] and "$import monai_das.engines" in merged["imports"]
    check_overrides(_argv("--validate#split", "val", "--validate#handlers#0#map_location", "cpu", configs=both))


def test_bundle_meta_file_as_monai_finds_it(tmp_path):
    """--meta_file, else the metadata.json beside the first config file, else <bundle_root>/configs; the model card
    reads it as plain JSON wherever the run's working folder and bundle_root are."""
    beside = str(Path(TRAIN).parent / "metadata.json")
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    root = tmp_path / "root"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    run = [MAIN, "run", "--config_file", TRAIN]
    assert bundle_meta_file(tmp_path, argv=[*run, "--meta_file", str(mine)]) == str(mine)
    assert bundle_meta_file(tmp_path, argv=[*run, f"--meta_file={mine}"]) == str(mine)
    assert bundle_meta_file(root, argv=run) == beside  # MONAI's default, not bundle_root's
    assert bundle_meta_file(root, argv=["python", "train.py"]) == str(root / "configs" / "metadata.json")
    assert bundle_meta_file(tmp_path, argv=["python", "train.py"]) is None
    assert bundle_meta_file(argv=[MAIN, "run", "--config_file", str(tmp_path / "own.json")]) is None
    # an --args_file counts as MONAI reads it: its meta_file and config_file, the command line winning
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"meta_file": str(mine), "config_file": [TRAIN], "max_epochs": 1}))
    assert bundle_meta_file(root, argv=[MAIN, "run", "--args_file", str(args_file)]) == str(mine)
    args_file.write_text(json.dumps({"config_file": [TRAIN]}))
    assert bundle_meta_file(root, argv=[MAIN, "run", "--args_file", str(args_file)]) == beside
    assert bundle_meta_file(root, argv=[*run, "--meta_file", str(root / "configs" / "metadata.json"),
                                        "--args_file", str(args_file)]) == str(root / "configs" / "metadata.json")


def test_typo_refused_with_closest_key():
    with pytest.raises(ValueError, match=r"--max_epoch: .*did you mean --max_epochs\?"):
        check_overrides(_argv("--max_epoch", "1"))
    with pytest.raises(ValueError, match="did you mean --keep_ratio"):
        check_overrides(_argv("--keep_ration", "0.25"))
    with pytest.raises(ValueError, match="train#datasett"):
        check_overrides(_argv("--train#datasett#cache_rate", "0"))
    # a typo of the last part of a nested key was added unused: evaluated the test split (trial T71i)
    both = (TRAIN, EVALUATE)
    with pytest.raises(ValueError, match=r"--validate#spilt: 'validate' defines no 'spilt'.*--validate#split\?"):
        check_overrides(_argv("--validate#spilt", "val", configs=both))
    with pytest.raises(ValueError, match=r"did you mean --train#dataset#cache_rate\?"):
        check_overrides(_argv("--train#dataset#cache_rat", "0"))
    check_overrides(_argv("--validate#split", "val", "--train#dataset#copy_cache", "False", configs=both))


def test_a_number_key_takes_a_number():
    """``--max_epochs 2x`` failed inside another key's expression ('invalid literal for int()'), not naming it."""
    with pytest.raises(ValueError, match=r"override --max_epochs '2x' is not a number \(the bundle's default is \d+\)"):
        check_overrides(_argv("--max_epochs", "2x"))
    with pytest.raises(ValueError, match=r"override --lr 'abc' is not a number"):
        check_overrides(_argv("--lr", "abc"))
    assert check_overrides(_argv("--lr", "1e-3", "--max_epochs", "2", "--keep_ratio", "$0.5", "--slice_axis", "axial"))
    # inference.json's options default to the training's (an expression): their own defaults say what they take
    inference = TRAIN.replace("train.json", "inference.json")
    with pytest.raises(ValueError, match=r"override --size '2x' is not a number \(the bundle's default is 28\)"):
        check_overrides(_argv("--size", "2x", configs=(inference,)))
    assert check_overrides(_argv("--size", "64", "--slice_axis", "axial", configs=(inference,)))


def test_a_flag_key_takes_a_boolean():
    """``--find_unused_parameters flase`` was refused inside MONAI's "Failed to evaluate ConfigExpression", which
    names the expression, not the option (note 65)."""
    with pytest.raises(ValueError, match=r"override --progress_bar 'flase' is not a boolean: give true or false"):
        check_overrides(_argv("--progress_bar", "flase"))
    multi = TRAIN.replace("train.json", "multi_gpu_train.json")
    with pytest.raises(ValueError, match=r"override --find_unused_parameters 'ture' is not a boolean"):
        check_overrides(_argv("--find_unused_parameters", "ture", configs=(TRAIN, multi)))
    assert check_overrides(_argv("--resume", "True", "--mlflow", "no", "--keep_latest_best", "1", "--progress_bar",
                                 "$False", configs=(TRAIN, multi)))


def test_former_key_refused_with_what_replaced_it():
    """inference.json's ``num_samples`` capped the split; ``--num_samples 8`` meant as ``k`` would go unused."""
    refused = r"--num_samples: .*no longer define 'num_samples'; use --num_kept .*--num_items"
    with pytest.raises(ValueError, match=refused):
        check_overrides(_argv("--num_samples", "8"))


def test_known_and_unrelated_keys(caplog):
    assert check_overrides(_argv("--max_epochs", "1", "--train#dataset#cache_rate", "0", "--validate#split", "val"))
    # keys only the second config defines are known too
    check_overrides(_argv("--eval_ckpt", "x.pt", configs=(TRAIN, EVALUATE)))
    with caplog.at_level(logging.WARNING):
        check_overrides(_argv("--my_own_thing", "1"))
    assert "--my_own_thing is not a key of the bundle configs" in caplog.text and "Did you mean" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # too far for difflib, but a defined key lies inside it: named
        check_overrides(_argv("--early_stop_patience", "100"))
    assert "--early_stop_patience is not a key" in caplog.text and "Did you mean --patience?" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a short key inside long ones is no hint
        check_overrides(_argv("--ep", "3"))
    assert "--ep is not a key" in caplog.text and "Did you mean" not in caplog.text


def test_args_file_keys_checked(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": TRAIN, "max_epoch": 2}))
    with pytest.raises(ValueError, match="did you mean --max_epochs"):
        check_overrides([MAIN, "run", "--args_file", str(args)])


def test_check_writable(tmp_path, monkeypatch):
    check_writable(tmp_path / "a" / "models")
    assert (tmp_path / "a" / "models").is_dir() and not list((tmp_path / "a" / "models").iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=f"cannot write to '{blocker / 'models'}'"):
        check_writable(blocker / "models")
    # create=False (the Deploy app's output): nothing is made, the probe goes where the folder would be made
    check_writable(tmp_path / "b" / "c", create=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(PermissionError, match=r"cannot write to '.*file/out' \(not a folder\).*writable --output"):
        check_writable(blocker / "out", create=False, option="--output")

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", read_only)  # a read-only bundle_root (root ignores chmod in CI)
    with pytest.raises(PermissionError, match="Permission denied.*writable --bundle_root"):
        check_writable(tmp_path / "ro")


def test_check_resume(tmp_path, caplog):
    last = tmp_path / "models" / "last.pt"
    assert check_resume(False, last) is False
    with caplog.at_level(logging.WARNING):
        assert check_resume("true", last) is False
    assert "no checkpoint" in caplog.text and str(last) in caplog.text
    last.parent.mkdir()
    torch.save({}, last)
    assert check_resume("true", last) is True
    # a new run over an earlier one replaced its last.pt and model.pt without a word (trial T55): said now
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert check_resume(False, last) is False
    assert f"'{last}' holds an earlier run of this bundle_root: this run starts from scratch" in caplog.text
    assert "--resume True" in caplog.text


def test_a_resume_needs_the_best_model_its_checkpoint_kept(tmp_path, caplog):
    """A finished last.pt resumed without its model.pt (deleted, or truncated) ended with no model and a model card
    stripped of its metrics (trial T59b): refused before anything is written; a last.pt that kept no best model yet
    needs none; without a last.pt an earlier model.pt to be replaced is warned about."""
    last, best = tmp_path / "last.pt", tmp_path / "model.pt"
    torch.save({"best_checkpoint": {"_saved": [], "best_epoch": -1}}, last)
    assert check_resume(True, last, best) is True  # no best model kept yet
    torch.save({"best_checkpoint": {"_saved": [(0.9, "model_key_metric=0.9.pt")], "best_epoch": 5}}, last)
    with pytest.raises(FileNotFoundError, match=rf"'{best}', the best model of the run that '{last}' continues "
                                                r"\(epoch 5\), is missing: a resumed run would end without a model"):
        check_resume(True, last, best)
    torch.save({"w": torch.zeros(1000)}, best)
    assert check_resume(True, last, best) is True
    best.write_bytes(best.read_bytes()[:500])  # truncated
    with pytest.raises(ValueError, match=r"continues \(epoch 5\), cannot be read \(.*Put the file back"):
        check_resume(True, last, best)
    last.unlink()
    with caplog.at_level(logging.WARNING):
        assert check_resume(True, last, best) is False
    assert f"the model '{best}' already there is replaced when this run saves its best model" in caplog.text


def test_one_item_last_batch_dropped():
    net = build_classifier("das", num_classes=2, num_frames=28, keep_ratio=0.02)  # k = 1
    assert net.sampler.num_samples == 1
    # why: a 1-item batch with one kept frame reaches a 1x1 feature map, where training BatchNorm fails
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        net.train()(torch.rand(1, 1, 28, 28, 28))
    assert train_drop_last(17, 16, net) is True
    assert train_drop_last(32, 16, net) is False
    assert train_drop_last(1, 16, net) is False  # a single batch: nothing else to train on
    loader = torch.utils.data.DataLoader(range(17), batch_size=16, drop_last=train_drop_last(17, 16, net))
    assert [len(b) for b in loader] == [16]


def test_single_frame_batches_refused_up_front():
    net = build_classifier("das", num_classes=2, num_frames=28, keep_ratio=0.02)
    with pytest.raises(ValueError, match=r"batch_size 1 and k=1"):
        train_drop_last(10, 1, net)
    assert train_drop_last(10, 1, build_classifier("uniform", num_classes=2, num_frames=28)) is False
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        train_drop_last(10, 0)


def test_keys_of_sibling_configs_are_known():
    inference = str(REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json")
    # --num_figures is a training key: the same argument list may be given to inference
    check_overrides(_argv("--num_figures", "2", "--input", "x", configs=(inference,)))
    with pytest.raises(ValueError, match="did you mean --num_figures"):
        check_overrides(_argv("--num_figure", "2", configs=(inference,)))


def test_overrides_without_effect_are_named(caplog):
    """--input given to train+evaluate (only inference.json defines it; so was --num_kept until evaluate.json took it)
    and --num_frames None (MONAI's bundle run drops None overrides) were silently ignored; --num_frames null failed
    inside another key's expression."""
    with caplog.at_level(logging.WARNING):
        check_overrides(_argv("--input", "scans/", configs=(TRAIN, EVALUATE)))
    assert "--input has no effect in this run: only inference.json defines 'input'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_overrides(_argv("--max_epochs", "None"))
    assert "--max_epochs None has no effect" in caplog.text and "'$None'" in caplog.text
    with pytest.raises(ValueError, match=r"--max_epochs 'null' is not a number .*not as None"):
        check_overrides(_argv("--max_epochs", "null"))


def test_num_kept_and_keep_ratio_together_are_refused_in_inference():
    """inference.json took --num_kept 4 --keep_ratio 0.25 and kept 4 frames without a word (trial T55); the Deploy
    app refuses the pair. Either alone, or num_kept null, is fine; train+evaluate keep their own meanings."""
    inference = str(REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json")
    with pytest.raises(ValueError, match=r"^--num_kept 4 and --keep_ratio 0.25 both give the number of frames kept"):
        check_overrides(_argv("--num_kept", "4", "--keep_ratio", "0.25", configs=(inference,)))
    check_overrides(_argv("--num_kept", "4", configs=(inference,)))
    check_overrides(_argv("--num_kept", "null", "--keep_ratio", "0.25", configs=(inference,)))
    # '$None', how the docs say to set a key to None, was taken as a value (trial T56)
    check_overrides(_argv("--num_kept", "40", "--keep_ratio", "$None", configs=(inference,)))
    check_overrides(_argv("--num_kept", "4", "--keep_ratio", "0.25", configs=(TRAIN, EVALUATE)))


def test_json_literals_inside_a_dict_override_are_refused():
    """fire reads JSON's false inside a dict as the string 'false', which is true: --sampler_kwargs '{"spread": false}'
    trained with spread on, {"pretrained": false} downloaded weights (trial N). Python's literals pass."""
    with pytest.raises(ValueError, match=r"""--sampler_kwargs \{"spread": false\}: .* \(at 'spread'\), and the string """
                                         r"""'false' counts as true\. Write Python's True/False/None: """
                                         r"""--sampler_kwargs '\{"spread": False\}'\."""):
        check_overrides(_argv("--sampler_kwargs", '{"spread": false}'))
    with pytest.raises(ValueError, match=r"at 'model_name#1', 'pretrained'"):
        check_overrides(_argv("--encoder_kwargs", '{"model_name": ["a", null], "pretrained": false}'))
    # the spelling suggested is pasted as it is: single quotes around, words inside strings untouched
    with pytest.raises(ValueError, match=r"""Write Python's True/False/None: --encoder_kwargs """
                                         r"""'\{"model_name": "null model", "pretrained": False\}'\.$"""):
        check_overrides(_argv("--encoder_kwargs", '{"model_name": "null model", "pretrained": false}'))
    for fine in ("{'spread': False}", '{"spread": 1, "name": "false"}', '{"feature_size": 14}', "[1, 2]", "false"):
        check_overrides(_argv("--sampler_kwargs", fine))


def test_an_args_file_null_is_not_warned(tmp_path, caplog):
    """MONAI keeps an --args_file's null (only command-line None overrides are dropped): no warning, no number check."""
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": TRAIN, "synthetic_options": None, "max_epochs": None}))
    with caplog.at_level(logging.WARNING):
        check_overrides([MAIN, "run", "--args_file", str(args)])
    assert "has no effect" not in caplog.text
    args.write_text(json.dumps({"config_file": TRAIN, "max_epoch": None}))  # its keys are still checked
    with pytest.raises(ValueError, match="did you mean --max_epochs"):
        check_overrides([MAIN, "run", "--args_file", str(args)])
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a key of this run's own configs: nothing said
        check_overrides(_argv("--max_epochs", "2", "--eval_ckpt", "x.pt", configs=(TRAIN, EVALUATE)))
    assert not caplog.text


def test_resume_recipe_records_the_world_size():
    """A single-process last.pt resumed under torchrun (or the reverse) changes every batch: the recipe a resume must
    match records the number of training processes (1 without a process group)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(TRAIN)
    assert parser.get_parsed_content("resume_recipe#world_size") == 1
    # and the loader's workers: they draw the random augmentations in their own streams, so a resume with another
    # --num_workers was accepted without a word and ended on another model (225 of 260 tensors; trial T61b)
    assert parser.get_parsed_content("resume_recipe#num_workers") == 0
    parser["train"]["dataloader"]["num_workers"] = 2  # the docs' way too: --train#dataloader#num_workers 2 (review)
    assert parser.get_parsed_content("resume_recipe#num_workers", lazy=False) == 2
    from monai_das.handlers import RunSettings

    with pytest.raises(ValueError, match=r"num_workers: checkpoint 0, this run 2.*To resume, give the checkpoint's: "
                                         r"--num_workers 0"):
        RunSettings({"method": "das"}, recipe={"num_workers": 2}).load_state_dict({"method": "das", "num_workers": 0})
    # a clip's T is --num_frames; a volume's is its grid along slice_axis: --spatial_size, never --num_frames (review)
    for layout, hint in (("video", "--num_frames 28"), ("volume", "--spatial_size [28,28,28]")):
        now = {"layout": layout, "num_frames": 16, "spatial_size": [16, 28, 28][-2 - (layout == "volume"):]}
        saved = {"layout": layout, "num_frames": 28, "spatial_size": [28, 28, 28][-2 - (layout == "volume"):]}
        with pytest.raises(ValueError, match=rf"To resume, give the checkpoint's: {re.escape(hint)}\."):
            RunSettings(now).load_state_dict(saved)


def test_tracking_uri_typo_and_unreachable_server_fail_at_start_up(tmp_path, monkeypatch):
    """A misspelt scheme is refused with a suggestion; an http server that does not answer fails at once (MLflow would
    retry for minutes), without repeating the URI's password; local stores and MLflow's own schemes pass; --mlflow
    False checks nothing."""
    import http.server
    import socket
    import threading

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the local servers below, not a proxy of the machine
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for ok in (f"sqlite:///{tmp_path}/mlflow.db", "postgresql+psycopg2://u@h/db", "databricks-uc://profile"):
        check_tracking_uri(ok)
    with pytest.raises(ValueError, match=r"--tracking_uri 'sqlte:///x.db': unknown scheme 'sqlte:' \(did you mean 'sqlite:'"):
        check_tracking_uri("sqlte:///x.db")
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ConnectionError, match=r"no MLflow server answers.*--mlflow False") as e:
            check_tracking_uri(f"http://user:secret@127.0.0.1:{port}", timeout=1.0)
        assert "secret" not in str(e.value) and f"***@127.0.0.1:{port}" in str(e.value)
    check_tracking_uri("sqlte:///x.db", enabled="False")
    import requests

    def untrusted(*args, **kwargs):  # a server with a self-signed certificate (MLFLOW_TRACKING_INSECURE_TLS's case)
        raise requests.exceptions.SSLError("certificate verify failed")

    with monkeypatch.context() as m:
        m.setattr(requests, "head", untrusted)
        check_tracking_uri("https://mlflow.example:5000")
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501: a server
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        check_tracking_uri(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5.0)
    finally:
        server.server_close()


def test_tracking_uris_mlflow_would_refuse_or_lose_and_the_environment_variable(tmp_path, monkeypatch, caplog):
    """Trial T62a: a folder, file: or bare 'databricks' URI passed the check and failed in MONAI's handler after the
    model was built; '' logged to the current folder, sqlite:// to memory (the run lost), both with rc 0; an
    unwritable or non-SQLite file failed without naming the option; MLFLOW_TRACKING_URI, which MONAI's handler logs
    to instead, was neither checked nor named (an unreachable server retried for minutes)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for folder in (str(tmp_path / "mlruns"), f"file:{tmp_path}/mlruns", f"file://{tmp_path}/mlruns"):
        with pytest.raises(ValueError, match=r"--tracking_uri '.*' is a folder \(MLflow's file store"):
            check_tracking_uri(folder)
    with pytest.raises(ValueError, match=r"a database file\? sqlite:///.*runs\.db\)"):
        check_tracking_uri(str(tmp_path / "runs.db"))  # sqlite:/// forgotten
    for short, written in (("databricks", "databricks://<host or profile>"), ("sqlite:x.db", "sqlite:///<file.db>")):
        with pytest.raises(ValueError, match=rf"takes '\w+://\.\.\.' URIs only \(e\.g\. {re.escape(written)}\)"):
            check_tracking_uri(short)
    (tmp_path / "adir").mkdir()
    with pytest.raises(ValueError, match=r"'.*adir' is not a file"):
        check_tracking_uri(f"sqlite:///{tmp_path}/adir")  # nor /dev/null: never renamed or linked over (review)
    with pytest.raises(ValueError, match="--tracking_uri is empty"):
        check_tracking_uri("")
    for memory in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match="is an in-memory database: the run would be lost"):
            check_tracking_uri(memory)
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(ValueError, match=r"--tracking_uri 'sqlite:///.*notes\.db': '.*notes\.db' is not an SQLite"):
        check_tracking_uri(f"sqlite:///{tmp_path}/notes.db")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"the MLflow database '.*file/mlflow\.db' cannot be made or read"):
        check_tracking_uri(f"sqlite:///{tmp_path}/file/mlflow.db")  # its folder would be a file
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
        check_tracking_uri("sqlite:///rel/mlflow.db")
    assert f"the database is '{tmp_path / 'rel' / 'mlflow.db'}'" in caplog.text
    assert (tmp_path / "rel" / "mlflow.db").is_file()
    # MONAI's handler logs to MLFLOW_TRACKING_URI when set: that is checked, named, and where the run goes is said
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlte:///central.db")
    with pytest.raises(ValueError, match=r"^MLFLOW_TRACKING_URI 'sqlte:///central\.db': unknown scheme"):
        check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    central = tmp_path / "central.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{central}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
        check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert f"MLFLOW_TRACKING_URI is set: MLflow logs this run to 'sqlite:///{central}'" in caplog.text
    assert central.is_file() and not (tmp_path / "mlflow.db").exists()
    import sqlite3

    with sqlite3.connect(central) as con:  # looks unfinished: a shared store the environment names is not moved
        con.execute("UPDATE alembic_version SET version_num = 'bd07f7e963c5'")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
        check_tracking_uri(f"sqlite:///{central}")  # the same store: no word on where the run goes
    assert "looks unfinished" in caplog.text and "logs this run to" not in caplog.text
    assert not list(tmp_path.glob("central.db.unfinished-*"))


def test_an_uncaught_error_ends_with_the_error_that_caused_it(monkeypatch, capsys):
    """A refusal inside a config expression ended MONAI's long traceback with 'Failed to evaluate ConfigExpression'
    (trial V): the run's last line now names the error that caused it; installed once."""
    import sys

    from monai_das.engines.checks import _stopped_line, install_error_summary
    from monai_das.utils.logs import first_cause, root_cause

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: printed.append(a[1]))
    install_error_summary()
    install_error_summary()  # once: not two summary lines
    try:
        try:
            try:
                raise OSError("the reader's own error")
            except OSError as reader:
                raise ValueError("datalist 'dl.csv':3: label 'x' is not one of ['a', 'b']") from reader
        except ValueError as e:
            raise RuntimeError('Failed to evaluate ConfigExpression: "$@source.info"') from e
    except RuntimeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
        assert isinstance(root_cause(e), OSError) and isinstance(first_cause(e), ValueError)  # ours, not the reader's
    assert len(printed) == 1  # the traceback as before ...
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("monai_das: the run stopped: ValueError: datalist 'dl.csv':3: label 'x' is "
                                            "not one of ['a', 'b']")  # ... then one line naming the cause
    assert err.count("the run stopped") == 1
    sys.excepthook(ValueError, ValueError("alone"), None)  # an error with no cause: nothing to add
    assert "alone" not in capsys.readouterr().err
    # Ctrl-C ended with a bare KeyboardInterrupt (trial T59b): the line SIGTERM gets
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err.strip().splitlines() == [  # one line, no traceback (trial h72b)
        _stopped_line("Ctrl-C (SIGINT)")]
    assert not any(isinstance(e, KeyboardInterrupt) for e in printed)  # the previous hook printed no traceback
    # a torchrun peer killed: gloo's error alone said nothing of what to do (trial T62a)
    lost = RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:19690: Connection reset by peer. "
                        "This is typically caused by a remote worker hanging or bugs in the application. GLHF!")
    try:
        raise RuntimeError('Failed to evaluate ConfigExpression: "$@train#trainer.run()"') from lost
    except RuntimeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("monai_das: the run was stopped by the loss of another process of this torchrun launch")
    assert "--resume True" in last
    sys.excepthook(RuntimeError, RuntimeError("NCCL watchdog: collective operation timeout"), None)  # not a lost peer
    assert "loss of another process" not in capsys.readouterr().err


def test_a_refusal_prints_its_message_not_the_traceback(monkeypatch, capsys, tmp_path):
    """Trial T69a: every start-up refusal (a missing image, a bad datalist line) came after 64 lines and two
    tracebacks of MONAI's frames, the message that mattered last. A refusal raised by this package prints where it
    was raised and its message; MONAI_DAS_TRACEBACK=1 keeps the traceback, and other errors keep theirs."""
    import sys

    from monai_das.data import load_datalist
    from monai_das.engines.checks import install_error_summary

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: printed.append(a[1]))
    monkeypatch.delenv("MONAI_DAS_TRACEBACK", raising=False)
    install_error_summary()

    def fail():
        try:
            load_datalist(tmp_path / "gone.csv")
        except FileNotFoundError as e:
            raise RuntimeError("Failed to instantiate component 'monai_das.engines.BundleData'") from e

    try:
        fail()
    except RuntimeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
        monkeypatch.setenv("MONAI_DAS_TRACEBACK", "1")
        sys.excepthook(type(e), e, e.__traceback__)
    assert len(printed) == 1  # the traceback only with MONAI_DAS_TRACEBACK
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert re.fullmatch(r"monai_das: refused at monai_das[/\\]data[/\\]datalist\.py:\d+ \(the whole traceback: "
                        r"MONAI_DAS_TRACEBACK=1\)", lines[0]), lines[0]
    stop = f"monai_das: the run stopped: FileNotFoundError: datalist file '{tmp_path / 'gone.csv'}' does not exist."
    assert lines[1:] == [stop, stop]
    monkeypatch.setenv("MONAI_DAS_TRACEBACK", "0")  # off: short again
    try:
        fail()
    except RuntimeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    assert len(printed) == 1 and "refused at" in capsys.readouterr().err
    monkeypatch.delenv("MONAI_DAS_TRACEBACK")
    import torch.nn as nn

    from monai_das.engines.checks import refusal_site
    from monai_das.networks.blocks.frame_encoder import probe_encoder_features

    class Buggy(nn.Module):
        def forward(self, x):
            return {}["features"]  # a custom encoder's bug

    try:  # a refusal raised from another error (R69): that error's traceback is kept
        probe_encoder_features(Buggy(), in_channels=1)
    except ValueError as e:
        assert "could not find the feature size" in str(e) and refusal_site(e) is None
    try:
        load_datalist(tmp_path / "gone.csv")
    except FileNotFoundError as e:
        assert refusal_site(e) is not None  # the same kind of error, raised by this package alone: short
    (tmp_path / "afile").write_text("")
    try:  # an output folder that cannot be written: 60 lines of traceback before its clear line (trial T70a)
        check_writable(tmp_path / "afile" / "out", create=False)
    except PermissionError as e:
        assert refusal_site(e) is not None
    try:  # an error of another kind raised in this package (a bug's): its traceback
        from monai_das.utils.config import hidden_characters

        hidden_characters(None)
    except TypeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    assert len(printed) == 2 and "refused at" not in capsys.readouterr().err


def test_an_unreadable_datalist_clip_is_a_refusal(tmp_path):
    """A datalist whose first unusable image could not be read (a cut mp4) printed MONAI's traceback before the list
    of unusable images, where a missing or empty one printed its lines alone (trial T71c): a refusal now, still a
    ``RuntimeError``."""
    from monai_das.data.datalist import check_study_shapes
    from monai_das.engines.checks import refusal_site

    (tmp_path / "cut.mp4").write_bytes(b"not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    items = [{"image": str(tmp_path / name), "source_line": f"clips.csv:{line}"}
             for line, name in ((2, "cut.mp4"), (3, "empty.mp4"))]
    with pytest.raises(RuntimeError, match=r"2 of the 2 images .*\n  clips\.csv:2: .*cut\.mp4' cannot be read") as e:
        check_study_shapes(items, "video")
    assert (refusal_site(e.value) or "").startswith("monai_das/data/datalist.py:")  # its lines, no traceback



def test_a_cut_training_clip_is_a_refusal(tmp_path):
    """A training clip cut short stopped the caching with five tracebacks (140 lines) before the line naming it
    (trial T71c): an ``ItemLoadError`` whose bottom error is this package's refusal is one; a reader's own error
    under it keeps the traceback."""
    import cv2
    import numpy as np
    from monai.transforms import Lambdad

    from monai_das.data import ItemLoadError, NamedCacheDataset
    from monai_das.engines.checks import refusal_site
    from monai_das.transforms import LoadVideod

    whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for t in range(40):
        writer.write(np.full((32, 32, 3), 6 * t, np.uint8))
    writer.release()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    items = [{"image": str(cut), "source_line": "clips.csv:2"}]
    with pytest.raises(ItemLoadError, match=r"clips\.csv:2 .*looks truncated or corrupt") as e:
        NamedCacheDataset(items, LoadVideod("image", num_frames=8), cache_rate=1.0, progress=False)
    assert (refusal_site(e.value) or "").startswith("monai_das/data/cache.py:")

    def bug(x):
        return {}["missing"]  # an error of a transform's own (a bug): its traceback is kept

    with pytest.raises(ItemLoadError) as e:
        NamedCacheDataset([{"x": 1}], Lambdad("x", bug), cache_rate=1.0, progress=False)
    assert refusal_site(e.value) is None


def test_ctrl_c_of_a_bundle_command_ends_it_with_one_line(monkeypatch):
    """
    Trial h72b: Ctrl-C during validation of a bundle training unwound through the evaluator and the trainer, and
    printed three tracebacks (MONAI's StatsHandler of each engine, then the interpreter's). A ``monai.bundle run``
    command line now ends on SIGINT as on SIGTERM: one line, the signal's own end (``last.pt`` stays whole); a
    Python session (a notebook) keeps its KeyboardInterrupt.
    """
    import os
    import signal
    import sys

    from monai_das.engines import checks

    written, raised = [], []
    monkeypatch.setattr(os, "write", lambda fd, data: written.append((fd, data.decode())))
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        monkeypatch.setattr(sys, "argv", ["python", "-c"])  # a Python session: Ctrl-C stays a KeyboardInterrupt
        checks._say_when_terminated()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        monkeypatch.setattr(sys, "argv", ["/x/monai/bundle/__main__.py", "run", "--config_file", "train.json"])
        checks._say_when_terminated()
        handler = signal.getsignal(signal.SIGINT)
        assert handler is not signal.default_int_handler
        handler(signal.SIGINT, None)
        assert raised == [signal.SIGINT] and signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the signal's end
        assert written == [(2, f"\n{checks._stopped_line(f'Ctrl-C (SIGINT, pid {os.getpid()})')}\n")]
        assert "--resume True" in written[0][1]
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_sigterm_ends_a_run_with_a_line_saying_how_to_go_on(tmp_path):
    """SIGTERM (a preemption, kill) ended a training with exit status 143 and no line at all (trial T55): one line
    now, and the same end as the signal's."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import os, signal, time\n"
            "from monai_das.engines.checks import install_error_summary\n"
            "install_error_summary()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(30)\n"
            "print('not reached')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == -signal.SIGTERM and "not reached" not in out.stdout
    assert "monai_das: the run was stopped by SIGTERM" in out.stderr and "--resume True" in out.stderr


def test_a_resume_without_mlflow_says_the_interrupted_run_stays_running(tmp_path, caplog, monkeypatch):
    """Trial T68a: `--mlflow false` on a resume left the run the killed training logged to RUNNING without a word."""
    from mlflow.tracking import MlflowClient

    from monai.utils import path_to_sqlite_uri
    from monai_das.engines import warn_open_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = path_to_sqlite_uri(tmp_path / "mlflow.db")
    last = tmp_path / "last.pt"
    last.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
        warn_open_run(uri, "exp", "das_run", False, True, last)  # no database: nothing made, nothing said
    assert not (tmp_path / "mlflow.db").exists() and not caplog.text
    check_tracking_uri(uri)
    client = MlflowClient(uri)
    killed = client.create_run(client.create_experiment("exp"), run_name="das_run").info.run_id
    done = client.create_run(client.get_experiment_by_name("exp").experiment_id, run_name="das_run").info.run_id
    client.set_terminated(done)
    caplog.clear()
    for args in ((uri, "exp", "das_run", True, True, last), (uri, "exp", "das_run", False, False, last),
                 (uri, "exp", "das_run", False, True, tmp_path / "none.pt"), (uri, "exp", "other", False, True, last)):
        with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
            warn_open_run(*args)  # logging, not resuming, nothing to resume, another run: nothing to say
    assert not caplog.text
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
        warn_open_run(uri, "exp", "das_run", "false", "true", str(last))
    assert f"MLflow run 'das_run' ({killed}) in {uri} is still RUNNING" in caplog.text and done not in caplog.text
    assert "Resume with --mlflow true to go on logging into it" in caplog.text


def test_an_mlflow_database_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    """On a full disk the start-up check ended in "OperationalError: (sqlite3.OperationalError) disk I/O error" and 40
    lines of CREATE TABLE, naming no file (trial T70a): a refusal naming the database, the cause and what to do."""
    import sqlite3

    from mlflow.tracking import MlflowClient
    from sqlalchemy.exc import OperationalError

    def full(self, *args, **kwargs):
        raise OperationalError("CREATE TABLE experiments (\n...)", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(MlflowClient, "search_experiments", full)
    db = tmp_path / "mlflow.db"
    refusal = (r"^--tracking_uri 'sqlite:///.*': the MLflow database '.*mlflow\.db' could not be made "
               r"\(OperationalError: disk I/O error\): a full disk.*--mlflow False\.$")
    with pytest.raises(ValueError, match=refusal):
        check_tracking_uri(f"sqlite:///{db}")
    assert list(tmp_path.iterdir()) == []  # neither the database nor its temporary file


def test_an_mlflow_database_is_made_whole_or_remade(tmp_path, caplog):
    """A run killed while MLflow created the tables of a new mlflow.db left a database on which every later run into
    that bundle_root failed ("table trace_info already exists", trial T59b): the tables are made in a temporary file
    linked to the name when done; an unfinished database without runs is moved aside and made anew; one with runs is
    MLflow's."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from monai.utils import path_to_sqlite_uri

    db = tmp_path / "new bundle_root#1" / "mlflow.db"  # a folder the run makes later, percent-encoded in the URI
    check_tracking_uri(path_to_sqlite_uri(db))
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]  # no temporary file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert db.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain new file, not mkstemp's owner-only
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(db))
    assert client.search_experiments()  # MLflow's Default experiment: its tables are all there
    unfinished = tmp_path / "other.db"
    check_tracking_uri(f"sqlite:///{unfinished}")
    with sqlite3.connect(unfinished) as con:  # as a kill between two of MLflow's migrations leaves it
        con.execute("UPDATE alembic_version SET version_num = 'bd07f7e963c5'")
    with caplog.at_level(logging.WARNING, logger="monai_das.engines.checks"):
        check_tracking_uri(f"sqlite:///{unfinished}")
    assert "was unfinished (schema version bd07f7e963c5" in caplog.text and "made anew" in caplog.text
    assert len(list(tmp_path.glob("other.db.unfinished-*"))) == 1
    again = MlflowClient(tracking_uri=f"sqlite:///{unfinished}")
    again.create_run(again.create_experiment("x"))
    with sqlite3.connect(unfinished) as con:  # a database holding runs is left to MLflow, whatever its schema
        con.execute("UPDATE alembic_version SET version_num = 'bd07f7e963c5'")
    caplog.clear()
    check_tracking_uri(f"sqlite:///{unfinished}")
    assert "unfinished" not in caplog.text and len(list(tmp_path.glob("other.db.unfinished-*"))) == 1
    # the temporary file of a run killed while making the database: removed once untouched for 5 minutes
    stale, fresh = tmp_path / ".other.db.k1ll3d00.tmp", tmp_path / ".other.db.inflight.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (stale.stat().st_atime - 600, stale.stat().st_mtime - 600))
    check_tracking_uri(f"sqlite:///{unfinished}")
    assert not stale.exists() and fresh.exists()
