"""evaluate.json and inference.json take the training's options from the model card (``trained_options``): which
ones, and where an option given on the command line keeps the card's away."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

import monai_das.handlers
from monai_das.utils.io import file_digest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NAMES = ["das_volume_classification", "das_video_classification"]
RUNS = [("inference.json",), ("train.json", "evaluate.json")]


def _parser(bundle: str, configs: tuple, root: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / c) for c in configs])
    parser["bundle_root"] = str(root)
    for k, v in overrides.items():
        parser[k] = v
    return parser


@pytest.mark.parametrize("bundle", NAMES)
@pytest.mark.parametrize("configs", RUNS)
def test_option_defaults_are_the_training_defaults(bundle, configs):
    """The defaults without a card are train.json's (written again in each config: kept equal here)."""
    train = json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())
    defaults = json.loads((BUNDLES / bundle / "configs" / configs[-1]).read_text())["option_defaults"]
    assert {k: v for k, v in defaults.items() if k != "keep_ratio"} == \
        {k: train[k] for k in defaults if k != "keep_ratio"}
    assert defaults["keep_ratio"] == train["keep_ratio"] == 0.5


@pytest.mark.parametrize("bundle", NAMES)
@pytest.mark.parametrize("configs", RUNS)
def test_the_card_gives_classes_and_folder_for_its_own_datalist_only(tmp_path, bundle, configs):
    """Another --datalist (an external test list) keeps its own classes and folder: the card's names would have read
    its integer labels as indices into them and scored a list coded the other way round without a word (review)."""
    root, data = tmp_path / "bundle", tmp_path / "site1"
    (root / "models").mkdir(parents=True)
    data.mkdir()
    ckpt = root / "models" / "model.pt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    datalist = data / "datalist.json"
    datalist.write_text("{}")
    layout = "volume" if "volume" in bundle else "video"
    card = {"das_model": {"layout": layout, "source": "datalist", "datalist": str(datalist), "slice_axis": 2,
                          "label_names": ["normal", "lesion"], "method": "uniform",
                          "checkpoint_sha256": file_digest(ckpt),
                          "run_params": {"dataset": "datalist", "dataset_dir": str(data)}}}
    (root / "models" / "metadata.json").write_text(json.dumps(card))
    own = _parser(bundle, configs, root)
    assert own.get_parsed_content("datalist") == str(datalist) and own.get_parsed_content("method") == "uniform"
    assert own.get_parsed_content("label_names") == ["normal", "lesion"]
    assert own.get_parsed_content("dataset_dir") == str(data)
    other = _parser(bundle, configs, root, datalist=str(tmp_path / "site2.csv"))
    assert other.get_parsed_content("label_names") is None and other.get_parsed_content("dataset_dir") is None
    assert other.get_parsed_content("method") == "uniform"  # the network keys stay the training's
    if configs == ("inference.json",):  # batch inference on --input: no datalist read, the card's classes
        studies = _parser(bundle, configs, root, input=str(tmp_path))
        assert studies.get_parsed_content("datalist") is None
        assert studies.get_parsed_content("label_names") == ["normal", "lesion"]


@pytest.mark.parametrize("bundle", NAMES)
@pytest.mark.parametrize("configs", RUNS)
def test_synthetic_splits_are_the_trainings_sets(tmp_path, bundle, configs):
    """Trial T68a: `inference.json --split val` on a synthetic training read 64 items (the default set), not the
    training's `--num_val`: on synthetic data the count is the set, so the training's counts are taken (a cap of
    another dataset's split is not: the whole split is read)."""
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    ckpt = root / "models" / "model.pt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    layout = "volume" if "volume" in bundle else "video"
    counts = {"num_train": 40, "num_val": 24}
    for dataset, wanted in (("synthetic", counts), ("vesselmnist3d", {"num_train": None, "num_val": None})):
        card = {"das_model": {"layout": layout, "source": dataset, "checkpoint_sha256": file_digest(ckpt),
                              "run_params": {"dataset": dataset, **counts}}}
        (root / "models" / "metadata.json").write_text(json.dumps(card))
        parser = _parser(bundle, configs, root)
        assert {k: parser.get_parsed_content(k) for k in counts} == wanted, dataset
        if configs == ("inference.json",):  # the count of the split it reads only: the test split's predictions keep
            # their fingerprint (the data facts hold every count; trial T69c: all redone after the upgrade)
            assert parser.get_parsed_content("source#num_samples") == {"test": None, "val": None, "train": None}
            val = _parser(bundle, configs, root, split="val")
            assert val.get_parsed_content("source#num_samples") == {
                "test": None, "val": wanted["num_val"], "train": None}
            capped = _parser(bundle, configs, root, num_items=5)
            assert capped.get_parsed_content("source#num_samples") == {"test": 5, "val": 5, "train": 5}


@pytest.mark.parametrize("bundle", NAMES)
@pytest.mark.parametrize("configs", RUNS)
def test_an_unwritable_output_dir_is_named_as_the_option_to_change(tmp_path, bundle, configs):
    """An --output_dir that is a file was refused with "choose a writable --bundle_root", which --output_dir overrides
    (trial T70a): inference and evaluation name --output_dir first."""
    (tmp_path / "afile").write_text("")
    parser = _parser(bundle, configs, tmp_path / "bundle", output_dir=str(tmp_path / "afile" / "out"))
    checks = [i for i, e in enumerate(parser["initialize"]) if "check_writable(@output_dir" in str(e)]
    assert checks
    for i in checks:
        with pytest.raises(RuntimeError) as refused:  # MONAI's "Failed to evaluate ConfigExpression" over it
            parser.get_parsed_content(f"initialize#{i}")
        assert "not a folder): the run writes its outputs there; choose a writable --output_dir (or --bundle_root" \
            in str(refused.value.__cause__)


def _eval_files(parser: ConfigParser) -> dict[str, list[str]]:
    """The names of the files evaluate.json's handlers write into ``output_dir``, per handler, and as its MLflow
    handler lists them (its artifacts)."""
    files: dict[str, list[str]] = {}
    for i, handler in enumerate(parser["validate#handlers"]):
        target, arg = str(handler.get("_target_", "")).rsplit(".", 1)[-1], f"validate#handlers#{i}#"
        if handler.get("output_dir") == "@output_dir":
            param = inspect.signature(getattr(monai_das.handlers, target)).parameters.get("file_prefix")
            default = None if param is None else param.default
            stem = parser.get_parsed_content(arg + "file_prefix") if "file_prefix" in handler else default
            stem = parser.get_parsed_content(arg + "prefix") if stem is None else stem  # the diagnostics' default
            if target == "SelectionDiagnosticsHandler":
                files[target] = [f"{stem}kept_positions.json", f"{stem}kept_positions.png"]
            else:
                assert target == "ClassificationReportSaver", f"a writer this test does not know: {target}"
                predictions = parser.get_parsed_content(arg + "predictions")
                files[target] = [f"{stem}{n}" for n in ("metrics.json", "confusion_matrix.json",
                                                        "confusion_matrix.png", predictions)]
        if "artifacts" in handler:
            out = parser.get_parsed_content("output_dir")
            paths = parser.get_parsed_content(arg + "artifacts")
            assert all(Path(p).parent == Path(out) for p in paths)
            files["artifacts"] = [Path(p).name for p in paths]
    return files


@pytest.mark.parametrize("bundle", NAMES)
def test_every_evaluation_file_carries_its_split_s_name(tmp_path, bundle):
    """`--validate#split val` wrote `test_kept_positions.json`/`.png` into `eval/val/` (the file prefix was fixed to
    `test_`): every file name that names a split names the evaluated one, and the test split's names are unchanged."""
    names = {}
    for split in ("test", "val"):
        parser = _parser(bundle, ("train.json", "evaluate.json"), tmp_path / "bundle", output_dir=str(tmp_path / "out"))
        parser["validate#split"] = split
        files = _eval_files(parser)
        assert set(files) == {"SelectionDiagnosticsHandler", "ClassificationReportSaver", "artifacts"}
        written = files["ClassificationReportSaver"] + files["SelectionDiagnosticsHandler"]
        assert sorted(written) == sorted(files["artifacts"])  # MLflow logs every file written, and those only
        names[split] = sorted(written)
    assert names["test"] == sorted(["metrics.json", "confusion_matrix.json", "confusion_matrix.png",
                                    "test_predictions.csv", "test_kept_positions.json", "test_kept_positions.png"])
    assert names["val"] == sorted(n.replace("test_", "val_") for n in names["test"])
