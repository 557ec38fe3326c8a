"""Accuracy of DAS against full, random, uniform, DPS and ADPS, trained and tested through the bundle.

Every cell of the grid (dataset × method × keep ratio × seed [× fold]) is one run of the bundle's own configs,
in-process through ``monai.bundle.ConfigWorkflow``: ``bundles/das_volume_classification/configs/train.json``
(Adam lr 1e-3, batch 16, early stop on validation loss, best checkpoint by validation AUC), then ``train.json + evaluate.json`` on the
test split, whose ``eval/metrics.json`` gives the test AUC, balanced accuracy and accuracy. A finished cell writes
``<out>/_work/<profile>/<dataset>/<cell>/result.json`` and is skipped when the grid is run again; an interrupted cell
resumes from its last epoch checkpoint (the bundle's ``resume``) when ``started.json`` shows it was started with the same
code and overrides (else it starts over). Finished cells run with other settings or another version of the training
code (``code_hash``) are refused, so stale results never mix in: also cells of other methods, keep ratios or seeds
of the same variant (``--tag``) in the folder, which the reports would pair with this run's. A resumed cell's
``result.json`` holds the history of all its epochs and its whole training time (``<cell>/history.json``, written
at every epoch); its ``duration_s`` is the wall time of the invocation that finished it plus the training time of the
earlier ones (``resumed_train_s``; their set-up and evaluation time is not recorded). ``--dry-run`` lists every cell as
``todo``, ``done`` or ``REFUSED`` (finished with other settings or code: the real run would stop on it).

Datasets: every MedMNIST3D file in ``<data-root>/medmnist3d`` (``<name>.npz`` → 28³, ``<name>_64.npz`` → 64³, slices
along depth) and the POCUS lung-ultrasound clips in ``<data-root>/video/covid19_lus_pocus`` (convex probe, 3 classes,
patient-level 5-fold cross-validation: test fold f, validation fold f+1).

Outputs in ``--out`` (default ``benchmarks/results``), rewritten after every cell: ``<dataset>.csv`` (one row per
method × keep ratio: mean and std of the test metrics over seeds and folds, frames per input, frames seen in training,
epochs, seconds per epoch), ``<dataset>.md`` (the same with the command, date, machine, software, settings and the
published reference numbers), ``<dataset>.png`` (test AUC against the fraction of frames kept, one line per method),
``<dataset>_runs.csv`` (every cell) and ``accuracy_summary.md`` (test AUC of every method on every dataset at the main
keep ratio; with ``paired_differences.{csv,png}`` and ``headroom_differences.csv``). Standard deviations over a single
run are left empty in the CSVs. A validation-split run (``--eval-split val``) keeps its cells in
``<out>/_work/<profile>_val`` and writes its reports with a ``_val`` suffix (``<dataset>_val.{csv,md,png}``,
``<dataset>_val_runs.csv``, ``accuracy_summary_val.md``, ``paired_differences_val.*``), so that it never replaces the
test-split reports of the same ``--out``.

Profiles:

- ``--quick``: a whole method × dataset grid with one seed in about 35 min on 2 CPU cores: keep ratio 0.5, 3-12
  epochs at Adam lr 1e-3 (the paper's 1e-4 learns nothing in so few epochs), the MedMNIST 64³ train set subsampled
  to 640, POCUS fold 0, clips of 32 frames at 64×64, 12 epochs with ``precise_bn_batches=-1`` (see ``PROFILES``);
- ``--standard``: the converged comparison on CPU, run over several sessions (``--out benchmarks/results/standard``):
  seeds 0, 1, 2, keep ratios 0.5/0.25/0.1, up to 30 epochs with early stopping (patience 6), whole 28³ splits (64³
  training set subsampled to 640), 5 POCUS folds at 32×64×64 and a sparse-evidence POCUS setting (64 frames, keep
  10/25 %);
- ``--full`` (for a GPU): the paper's settings: seeds 0, 1, 2, keep ratios 0.25/0.5/0.75, up to 100 epochs with
  early stopping (patience 10), whole splits, all 5 POCUS folds, clips of 64 frames at 112×112 (precise BN);
- ``--smoke``: synthetic volumes, tiny sizes, one epoch: checks the pipeline in a minute or two (CI).

Usage::

    python benchmarks/compare_methods.py --quick
    python benchmarks/compare_methods.py --full --seeds 0 1 2 3 4
    python benchmarks/compare_methods.py --quick --datasets vesselmnist3d_28 --methods das uniform --dry-run
    python benchmarks/compare_methods.py --standard --out benchmarks/results/standard --report-only
    python benchmarks/compare_methods.py --smoke --out /tmp/cmp --methods uniform das full

Tuning on validation data only: ``--eval-split val`` scores the checkpoints on the validation split instead of the
test split, ``--override KEY=JSON`` changes any bundle config entry (e.g.
``--override 'network_def#sampler_kwargs={"tau0": 0.5}'`` or ``--override sampler_lr=1e-3``) and ``--tag NAME``
labels the variant (its cells and report rows are kept apart from the defaults).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# training grid: the default (spinning) OpenMP wait policy; PASSIVE halves the training throughput on an idle 2-core
# box (438 vs 231 ms per DAS batch-16 step at 28³, measured 2026-11-30). See benchmarks/README.md.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (  # noqa: E402
    CODE_PATHS,
    REPO,
    atomic_file,
    code_hash,
    environment,
    environment_markdown,
    markdown_table,
    metric_text,
    parse_override,
    positive_int,
    write_csv,
    write_json_atomic,
    write_text_atomic,
)

from monai_das.utils.io import hold_lock  # noqa: E402
from monai_das.utils.logs import first_cause, quiet_loggers  # noqa: E402

METHODS = ("full", "uniform", "random", "dps", "adps", "das")
BUNDLE = REPO / "bundles" / "das_volume_classification"
CONFIGS = BUNDLE / "configs"
#: clips (POCUS) train through the video bundle
VIDEO_CONFIGS = REPO / "bundles" / "das_video_classification" / "configs"
MAIN_KEEP_RATIO = 0.5
#: published numbers shown beside ours (never run here); keyed by dataset key
REFERENCES: dict[str, list[dict[str, Any]]] = {
    "vesselmnist3d": [
        {"source": "DAS paper [1]", "method": "das (keep 50%)", "auc": 0.752, "accuracy": 0.829, "size": None},
        {"source": "DAS paper [1]", "method": "adps (keep 50%)", "auc": 0.739, "accuracy": 0.807, "size": None},
        {"source": "MedMNIST v2 [2]", "method": "ResNet-18 (3D), full volume 28³", "auc": 0.874, "accuracy": 0.877,
         "size": 28},
    ],
}
#: ``size`` of a reference: the input size it was measured at (shown only in that size's report), ``None`` where the
#: source does not say (shown in every size's report, said so); the 64³ report showed the 28³ baseline (trial T64c)
CITATIONS = {
    "vesselmnist3d": [
        "[1] S. M. Shankaranarayana, S. K. Roy, P. Sudhakar, C. Aladahalli, *Deep Attention-guided Adaptive "
        "Subsampling*, arXiv:2510.12376 (2025), VesselMNIST3D results (AUC and accuracy as published).",
        "[2] J. Yang et al., *MedMNIST v2 — A large-scale lightweight benchmark for 2D and 3D biomedical image "
        "classification*, Scientific Data 10, 41 (2023), VesselMNIST3D benchmark table (ResNet-18 (3D), 28³).",
    ],
    "pocus": [
        "Data: J. Born et al., *Accelerating detection of lung pathologies with explainable ultrasound image "
        "analysis*, Applied Sciences 11(2):672 (2021) (POCUS dataset; their numbers are frame-based classifiers on a "
        "different split, so none are listed as a reference here).",
    ],
}

#: per-profile settings; ``datasets`` maps a dataset family to bundle overrides for that profile
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "description": "one seed, keep 50%, 3-12 epochs at Adam lr 1e-3 (1e-4 learns nothing in so few epochs, see "
                       "benchmarks/README.md), MedMNIST 64³ train set subsampled to 640, POCUS fold 0 at 32×64×64 "
                       "for 12 epochs (about 35 min on 2 CPU cores; far from converged: a smoke-level comparison)",
        "seeds": [0],
        "keep_ratios": [0.5],
        "max_epochs": 5,
        "patience": 2,
        "lr": 1e-3,
        "folds": [0],
        "datasets": {
            "medmnist28": {"max_epochs": 5},
            "medmnist64": {"num_train": 640, "num_val": 160, "max_epochs": 3},
            "pocus": {"num_frames": 32, "size": 64, "max_epochs": 12, "patience": 3, "precise_bn_batches": -1},
            "synthetic": {},
        },
    },
    "standard": {
        "description": "converged comparison on CPU: up to 30 epochs with early stopping on validation loss (patience "
                       "6; DAS/DPS warm up the encoder for the first 20 %), Adam lr 1e-3 (the bundle default), keep "
                       "50/25/10 %, seeds 0, 1, 2 by default (`--seeds`; each table gives its run counts) on "
                       "MedMNIST3D (whole 28³ splits; 64³ with the training split "
                       "subsampled to 640 volumes for CPU), 5 patient-level folds on POCUS (clips of 32 frames at "
                       "64×64) and a sparse-evidence POCUS setting (64 frames, keep 10/25 %)",
        "seeds": [0, 1, 2],
        "keep_ratios": [0.5, 0.25, 0.1],
        "max_epochs": 30,
        "patience": 6,
        "lr": 1e-3,
        "folds": [0, 1, 2, 3, 4],
        "datasets": {
            "medmnist28": {},
            "medmnist64": {"num_train": 640, "max_epochs": 20},
            "pocus": {"num_frames": 32, "size": 64, "precise_bn_batches": -1, "seeds": [0]},
            "pocus_sparse": {"num_frames": 64, "size": 64, "precise_bn_batches": -1, "seeds": [0],
                             "keep_ratios": [0.1, 0.25]},
            "synthetic": {},
        },
    },
    "full": {
        "description": "paper settings: 3 seeds, keep 25/50/75%, up to 100 epochs with early stopping on validation "
                       "loss (patience 10), whole splits, 5 POCUS folds at 64×112×112 (for a GPU)",
        "seeds": [0, 1, 2],
        "keep_ratios": [0.25, 0.5, 0.75],
        "max_epochs": 100,
        "patience": 10,
        "lr": 1e-4,
        "folds": [0, 1, 2, 3, 4],
        "datasets": {
            "medmnist28": {},
            "medmnist64": {},
            "pocus": {"num_frames": 64, "size": 112, "precise_bn_batches": -1},
            "synthetic": {},
        },
    },
    "smoke": {
        "description": "smoke test: synthetic volumes 16³, 1 epoch, a few samples (numbers mean nothing)",
        "seeds": [0],
        "keep_ratios": [0.5],
        "max_epochs": 1,
        "patience": 1,
        "lr": 1e-4,
        "folds": [0],
        "datasets": {"synthetic": {"size": 16, "num_train": 16, "num_val": 8, "num_test": 8}},
    },
}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the grid: ``key`` names its result files; ``overrides`` are bundle config entries."""

    key: str
    family: str
    title: str
    num_frames: int
    overrides: dict = field(default_factory=dict)
    cross_validated: bool = False
    default: bool = True  # run when --datasets is not given
    seeds: tuple[int, ...] | None = None  # this dataset's seeds (None: the profile's); POCUS uses folds instead
    keep_ratios: tuple[float, ...] | None = None  # this dataset's keep ratios (None: the profile's)


#: per-epoch history and training seconds of a cell's run so far (``<cell>/history.json``), for a resumed cell's result
HISTORY_FILE = "history.json"
#: bundle entries that say where a cell is tracked, not what it trains: not compared when a finished or interrupted
#: cell is checked against this run's settings (adding --mlflow to a grid does not make its cells "other settings")
TRACKING_KEYS = ("mlflow", "tracking_uri", "experiment_name", "run_name")
#: where the data lies, not what it is (an absolute path: another checkout of the project, or the data moved,
#: refused every finished cell of a grid; review R71a)
LOCATION_KEYS = ("data_dir",)


def _trained_settings(overrides: dict[str, Any] | None) -> dict[str, Any] | None:
    """``overrides`` without :data:`TRACKING_KEYS` and :data:`LOCATION_KEYS`, JSON-normalised (``None`` stays
    ``None``)."""
    if overrides is None:
        return None
    skip = (*TRACKING_KEYS, *LOCATION_KEYS)
    return json.loads(json.dumps({k: v for k, v in overrides.items() if k not in skip}, default=str))


@dataclass(frozen=True)
class Cell:
    """One training + test run."""

    dataset: str
    method: str
    keep_ratio: float
    seed: int
    fold: int | None = None
    tag: str = ""

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"_fold{self.fold}"
        tag = f"_{self.tag}" if self.tag else ""
        return f"{self.method}_keep{self.keep_ratio:g}_seed{self.seed}{fold}{tag}"

    @property
    def label(self) -> str:
        return self.method + (f"[{self.tag}]" if self.tag else "")


#: per-dataset profile entries that shape the grid instead of being bundle overrides
GRID_KEYS = ("seeds", "keep_ratios")


def _spec(key: str, family: str, title: str, num_frames: int, entry: dict[str, Any], **kwargs) -> DatasetSpec:
    """A :class:`DatasetSpec` from a profile entry: grid keys (``seeds``, ``keep_ratios``) apart from overrides."""
    grid = {k: tuple(entry[k]) for k in GRID_KEYS if k in entry}
    overrides = {k: v for k, v in entry.items() if k not in GRID_KEYS}
    return DatasetSpec(key, family, title, num_frames, overrides, **kwargs, **grid)


def discover_datasets(data_root: str | os.PathLike, profile: str) -> list[DatasetSpec]:
    """Every MedMNIST3D file under ``<data_root>/medmnist3d`` and the POCUS clips, if present (smoke: synthetic)."""
    prof = PROFILES[profile]["datasets"]
    if profile == "smoke":
        size = prof["synthetic"]["size"]
        return [_spec(f"synthetic_{size}", "synthetic", f"Synthetic volumes {size}³", size,
                      {"dataset": "synthetic", **prof["synthetic"]})]
    from monai_das.data import MEDMNIST3D_NAMES, medmnist_filename

    root = Path(data_root)
    specs = []
    for name in MEDMNIST3D_NAMES:
        for size in (28, 64):
            path = root / "medmnist3d" / medmnist_filename(name, size)
            if path.is_file():
                specs.append(_spec(
                    f"{name}_{size}", f"medmnist{size}", f"{name} {size}³ (slices along depth, T={size})", size,
                    {"dataset": name, "size": size, "data_dir": str(path.parent), **prof.get(f"medmnist{size}", {})}))
    pocus = root / "video" / "covid19_lus_pocus"
    if (pocus / "MANIFEST.csv").is_file():
        base = {"dataset": "pocus", "data_dir": str(pocus), "probe": "convex"}
        ov = {**base, **prof["pocus"]}
        specs.append(_spec(
            "pocus", "pocus", f"POCUS lung ultrasound, convex probe, 3 classes, clips of {ov['num_frames']} frames "
            f"{ov['size']}×{ov['size']}, patient-level 5-fold CV", int(ov["num_frames"]), ov, cross_validated=True))
        if "pocus_sparse" in prof:  # the evidence sits in a few of many frames: the setting adaptivity is for
            ov = {**base, **prof["pocus_sparse"]}
            specs.append(_spec(
                "pocus_sparse", "pocus", f"POCUS sparse evidence: whole clips resampled to {ov['num_frames']} frames "
                f"{ov['size']}×{ov['size']}, few kept, convex probe, 3 classes, patient-level 5-fold CV",
                int(ov["num_frames"]), ov, cross_validated=True))
    # synthetic volumes whose class evidence sits in 4 of the 28 slices: only when asked for (--datasets synthetic_28)
    specs.append(_spec("synthetic_28", "synthetic", "Synthetic volumes 28³ (class shown in 4 of 28 slices)", 28,
                       {"dataset": "synthetic", "size": 28, **prof.get("synthetic", {})}, default=False))
    return specs


def build_cells(specs: Sequence[DatasetSpec], methods: Sequence[str], keep_ratios: Sequence[float],
                seeds: Sequence[int], folds: Sequence[int], tag: str = "", own_seeds: bool = True,
                own_ratios: bool = True) -> list[Cell]:
    """
    The grid, ordered so that a partial run has whole paired comparisons: keep ratio (0.5 first), seed, dataset,
    fold, method. ``full`` runs once per seed/fold (it keeps every frame), with the dataset's first keep ratio. A
    dataset's own ``seeds``/``keep_ratios`` (profile entry) replace the arguments unless ``own_seeds``/``own_ratios``
    is False (given on the command line).
    """
    def order(ratios):
        return sorted(set(ratios), key=lambda r: (r != MAIN_KEEP_RATIO, -r))

    def grid(spec):
        ratios = spec.keep_ratios if own_ratios and spec.keep_ratios else keep_ratios
        return order(ratios), list(spec.seeds if own_seeds and spec.seeds else seeds)

    all_ratios = order([r for s in specs for r in grid(s)[0]])
    all_seeds = list(dict.fromkeys(x for s in specs for x in grid(s)[1]))
    cells = []
    for r in all_ratios:
        for seed in all_seeds:
            for spec in specs:
                ratios, spec_seeds = grid(spec)
                if r not in ratios or seed not in spec_seeds:
                    continue
                for fold in (folds if spec.cross_validated else [None]):
                    for m in methods:
                        if m == "full":
                            if r == ratios[0]:  # one full run per seed/fold: it keeps every frame
                                cells.append(Cell(spec.key, m, 1.0, seed, fold, tag))
                        elif r < 1.0:
                            cells.append(Cell(spec.key, m, r, seed, fold, tag))
    return cells


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


class BundleCellRunner:
    """
    Runs a cell through the bundle configs, in-process: ``train.json`` (``workflow_type="train"``) then
    ``train.json + evaluate.json`` (``workflow_type="eval"``), with ``bundle_root`` set to the cell's folder.

    Args:
        overrides: ``{dataset key: bundle overrides}`` (from :class:`DatasetSpec`).
        common: bundle overrides for every cell (epochs, patience, MLflow off, ...), under the dataset's.
        forced: overrides from the command line, above the dataset's (``--max-epochs``, ``--override``, ...).
        eval_split: ``"test"`` (default) or ``"val"`` (tuning).
        keep_checkpoints: keep ``models/`` of finished cells (default: removed to save disk).
        log: progress printer.
        provenance: stored in every result (e.g. the command that ran the cell), listed in the reports.
        tracking_uri: the MLflow store of every cell when ``common`` turns ``mlflow`` on (default: the bundle's own,
            ``mlflow.db`` in each cell's folder).
    """

    def __init__(self, overrides: dict[str, dict], common: dict[str, Any], eval_split: str = "test",
                 keep_checkpoints: bool = False, log: Callable[[str], None] = print,
                 forced: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                 tracking_uri: str | None = None) -> None:
        self.overrides, self.common, self.eval_split = overrides, common, eval_split
        self.tracking_uri = tracking_uri
        self.forced = dict(forced or {})
        self.provenance = dict(provenance or {})
        self.code = code_hash()
        self.keep_checkpoints, self.log = keep_checkpoints, log
        self.resumed_s = 0.0  # training seconds of earlier invocations of the cell being run (load_history)

    def cell_overrides(self, cell: Cell) -> dict[str, Any]:
        """The bundle config entries this runner sets for ``cell`` (besides ``bundle_root``)."""
        over = {**self.common, **self.overrides[cell.dataset], **self.forced, "method": cell.method,
                "keep_ratio": cell.keep_ratio, "seed": cell.seed}
        if cell.fold is not None:
            over["fold"] = cell.fold
        return over

    def run_key(self, cell: Cell) -> str:
        """8 hex digits of what the cell's training depends on: the code (``code_hash``) and its trained settings
        (overrides without :data:`TRACKING_KEYS` and :data:`LOCATION_KEYS`); names its MLflow runs, so a cell
        started over under other code or settings never continues a killed run of the former (MONAI's
        ``MLFlowHandler`` continues the latest unfinished run of a name)."""
        record = {"code_hash": self.code, "overrides": _trained_settings(self.cell_overrides(cell))}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def check_started(self, cell: Cell, cell_dir: Path) -> None:
        """
        Record in ``<cell>/started.json`` what the cell's training starts with (code hash and overrides). An interrupted
        cell (a ``models/last.pt`` without ``result.json``) resumes only when its record matches this runner's:
        started by another version of the code, with other overrides or before records were kept, it starts over,
        since resuming would mix two versions in one result.
        """
        record = json.loads(json.dumps({"code_hash": self.code, "overrides": self.cell_overrides(cell)}, default=str))
        path, models = cell_dir / "started.json", cell_dir / "models"
        if (models / "last.pt").is_file():
            try:
                before = json.loads(path.read_text())
            except (OSError, ValueError):
                before = None
            if before is None or before.get("code_hash") != self.code or _trained_settings(
                    before.get("overrides")) != _trained_settings(record["overrides"]):
                why = ("no record of what it was started with" if before is None else
                       f"started with code {before.get('code_hash')}, now {self.code}"
                       if before.get("code_hash") != self.code else "started with other overrides")
                self.log(f"    {cell.name}: interrupted run not resumed ({why}); starting it over")
                shutil.rmtree(models)
        write_json_atomic(record, path)

    def load_history(self, cell: Cell, cell_dir: Path) -> tuple[list[dict[str, Any]], float]:
        """
        ``(history, train_s)`` kept by an interrupted run of ``cell`` that resumes (its ``models/last.pt`` is there
        after :meth:`check_started`), else ``([], 0.0)`` and an old record removed.
        """
        path = cell_dir / HISTORY_FILE
        if not (cell_dir / "models" / "last.pt").is_file():
            path.unlink(missing_ok=True)
            return [], 0.0
        try:
            saved = json.loads(path.read_text())
            history, spent = list(saved["history"]), float(saved["train_s"])
        except (OSError, ValueError, KeyError, TypeError):
            history, spent = [], 0.0
        self.resumed_s = spent
        done = f"after epoch {history[-1]['epoch']}" if history else "from its last checkpoint"
        self.log(f"    {cell.name}: resuming {done} (models/last.pt)")
        return history, spent

    def evaluate(self, cell: Cell, cell_dir: Path) -> Path:
        """
        Run the bundle's evaluate config on the cell's ``models/model.pt``; the folder it wrote its reports to, as
        the config resolves it (``eval/`` for the test split at the trained k; ``eval/<split>/`` for another split,
        ``.../k<k>/`` at another k: :func:`monai_das.handlers.evaluation_output_dir`, ``output_dir_at_k``).

        Raises:
            RuntimeError: the evaluation wrote no ``metrics.json`` there.
        """
        ev = self.workflow(cell, cell_dir, "eval")
        ev.initialize()
        eval_dir = Path(ev.parser.get_parsed_content("output_dir"))
        ev.run()
        ev.finalize()
        del ev
        gc.collect()
        if not (eval_dir / "metrics.json").is_file():
            raise RuntimeError(f"the evaluate config wrote no metrics file at '{eval_dir / 'metrics.json'}'.")
        return eval_dir

    def workflow(self, cell: Cell, cell_dir: Path, kind: str):
        from monai.bundle import ConfigWorkflow

        configs = VIDEO_CONFIGS if self.overrides[cell.dataset].get("dataset") == "pocus" else CONFIGS
        # where the model card's metadata comes from (a Python run has no --meta_file); not a setting of the cell
        over = {**self.cell_overrides(cell), "bundle_root": str(cell_dir),
                "card_meta_file": str(configs / "metadata.json")}
        if self.tracking_uri is not None and over.get("mlflow"):
            # one MLflow store for the whole grid (not an mlflow.db per cell folder), one experiment per dataset,
            # runs named after the cell (its tag included) and what it trains with (run_key: code and settings):
            # MONAI's MLFlowHandler continues the latest unfinished run of a name, so a cell started over under new
            # code or other settings does not append to a killed run of the old; what --override sets wins
            tracking = {"tracking_uri": self.tracking_uri, "experiment_name": f"compare_methods_{cell.dataset}",
                        "run_name": f"{cell.name}_{self.run_key(cell)}" + ("_eval" if kind == "eval" else "")}
            over.update({k: v for k, v in tracking.items() if k not in self.forced})
        files = [str(configs / "train.json")]
        if kind == "eval":
            files.append(str(configs / "evaluate.json"))
            over["validate#split"] = self.eval_split
            over["resume"] = False
        else:  # the grid's "resume": True, applied only where an interrupted cell left its last.pt (a fresh cell
            # would otherwise log the bundle's "no checkpoint" warning); cells keep "resume": True as their setting
            over["resume"] = (cell_dir / "models" / "last.pt").is_file()
        # monai.bundle's set-up warnings (e.g. "logging file is set to False") stay off the progress output
        with quiet_loggers({"monai.bundle.workflows": logging.ERROR}):
            return ConfigWorkflow(config_file=files, meta_file=str(configs / "metadata.json"), logging_file=False,
                                  workflow_type=kind, **over)

    def __call__(self, cell: Cell, cell_dir: Path) -> dict[str, Any]:
        from ignite.engine import Events

        from monai_das.handlers.diagnostics import not_best_reason

        t_start = time.perf_counter()
        self.resumed_s = 0.0  # training seconds of earlier invocations of this cell (load_history sets it)
        self.check_started(cell, cell_dir)
        # the per-epoch history and training time, kept on disk at every epoch: a resumed cell reports all its epochs
        # and its whole training time, not only what ran after the resume
        history, spent = self.load_history(cell, cell_dir)
        wf = self.workflow(cell, cell_dir, "train")
        wf.initialize()
        trainer = wf.parser.get_parsed_content("train#trainer")
        evaluator = wf.parser.get_parsed_content("validate#evaluator")
        marks = {"epoch_start": time.perf_counter()}

        def _start(engine) -> None:
            marks["epoch_start"] = time.perf_counter()

        def _end(engine) -> None:
            m = {k: _scalar(v) for k, v in evaluator.state.metrics.items()}
            m.update(epoch=engine.state.epoch, not_best=not_best_reason(evaluator.state),
                     train_loop_s=engine.state.times.get("EPOCH_COMPLETED"),
                     epoch_with_val_s=time.perf_counter() - marks["epoch_start"],
                     train_loss=_scalar(engine.state.metrics.get("train_loss", float("nan"))))
            history[:] = [h for h in history if h["epoch"] < m["epoch"]] + [m]  # an epoch redone after a kill: once
            write_json_atomic({"history": history, "train_s": spent + time.perf_counter() - t_start},
                              cell_dir / HISTORY_FILE)
            vals = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k.startswith("val_") and isinstance(v, float))
            self.log(f"    epoch {m['epoch']}/{engine.state.max_epochs}: train_loss {m['train_loss']:.4f}, {vals} "
                     f"({m['epoch_with_val_s']:.1f} s)")

        trainer.add_event_handler(Events.EPOCH_STARTED, _start)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _end)
        wf.run()
        wf.finalize()
        train_items = len(wf.parser.get_parsed_content("train#dataset"))
        info = wf.parser.get_parsed_content("info")
        num_frames = int(info["num_frames"])
        epochs = int(trainer.state.epoch)
        # the model the best-model saver kept (a NaN AUC scores -inf there); resumed cells included, since the saver's
        # state is part of the epoch checkpoint
        saver = wf.parser.get_parsed_content("validate#best_saver")
        best_val = saver.best_score if saver.best_score not in (None, -math.inf) else float("nan")  # -inf: NaN AUCs
        best_epoch = saver.best_epoch if saver.best_epoch is not None else -1
        train_s = spent + time.perf_counter() - t_start
        del wf, trainer, evaluator
        gc.collect()

        t_eval = time.perf_counter()
        eval_dir = self.evaluate(cell, cell_dir)
        report = json.loads((eval_dir / "metrics.json").read_text())
        # where the sampler looked on that split (named after it since volume bundle 0.6.31)
        positions_path = eval_dir / f"{report.get('split', 'test')}_kept_positions.json"
        positions = json.loads(positions_path.read_text())["kept_fraction"] if positions_path.is_file() else None
        if not self.keep_checkpoints:
            shutil.rmtree(cell_dir / "models", ignore_errors=True)
        from monai_das.networks import num_kept

        k = num_frames if cell.method == "full" else num_kept(num_frames, cell.keep_ratio)
        loops = [h["train_loop_s"] for h in history if h.get("train_loop_s")]
        walls = [h["epoch_with_val_s"] for h in history]
        return {
            **asdict(cell), "label": cell.label, "eval_split": report.get("split", self.eval_split),
            "auc": report["metrics"].get("auc"), "balanced_accuracy": report["metrics"].get("balanced_accuracy"),
            "accuracy": report["metrics"].get("accuracy"), "loss": report["metrics"].get("loss"),
            "eval_samples": report.get("num_samples"),
            "eval_adaptivity": report["metrics"].get("adaptivity"),
            "eval_selection_entropy": report["metrics"].get("selection_entropy"),
            "eval_kept_fraction": positions,
            "frames_total": num_frames, "frames_kept": k, "train_items": train_items, "epochs": epochs,
            "frames_seen_training": k * train_items * epochs,
            "best_val_auc": best_val, "best_epoch": best_epoch,
            "train_epoch_s": statistics.mean(loops) if loops else float("nan"),
            "epoch_with_val_s": statistics.mean(walls) if walls else float("nan"),
            "train_s": train_s, "eval_s": time.perf_counter() - t_eval, "resumed_train_s": self.resumed_s,
            "overrides": self.cell_overrides(cell), "code_hash": self.code, **self.provenance,
            "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "history": history,
        }


def run_grid(cells: Sequence[Cell], run_cell: Callable[[Cell, Path], dict], work_dir: Path,
             log: Callable[[str], None] = print, on_result: Callable[[], None] | None = None,
             fail_fast: bool = False) -> dict[str, int]:
    """
    Run every cell not finished yet (no ``<work_dir>/<dataset>/<cell>/result.json``), printing a line per cell with
    the estimated time left (mean duration of finished cells of the same dataset, else of all). Returns counts.
    A cell's ``duration_s``: the wall time of the invocation that finished it plus the training seconds of earlier,
    interrupted invocations it resumed from (``resumed_train_s`` of its result; their set-up time is not known).
    """
    def cell_dir(c: Cell) -> Path:
        return work_dir / c.dataset / c.name

    done, pending = [], []
    for c in cells:
        (done if (cell_dir(c) / "result.json").is_file() else pending).append(c)
    durations: dict[str, list[float]] = {}
    for c in done:
        try:
            r = read_result(cell_dir(c) / "result.json")
            durations.setdefault(c.dataset, []).append(float(r["duration_s"]))
        except (OSError, ValueError, KeyError):
            pass
    log(f"{len(cells)} cells: {len(done)} finished earlier (skipped), {len(pending)} to run")
    failed = meanwhile = 0
    t0 = time.perf_counter()
    for i, c in enumerate(pending, 1):
        d = cell_dir(c)
        if (d / "result.json").is_file():  # finished meanwhile (another grid of an older version without the lock)
            log(f"[{i}/{len(pending)}] {c.dataset} {c.name}: finished meanwhile, not run again")
            meanwhile += 1
            continue
        d.mkdir(parents=True, exist_ok=True)
        log(f"[{i}/{len(pending)}] {c.dataset} {c.name} ...")
        start = time.perf_counter()
        try:
            result = run_cell(c, d)
        except Exception as e:  # one failed cell must not stop the grid (unless fail_fast)
            failed += 1
            write_text_atomic(traceback.format_exc(), d / "error.txt")
            cause = first_cause(e)  # MONAI's "Failed to instantiate ..." wraps what went wrong
            log(f"[{i}/{len(pending)}] {c.dataset} {c.name} FAILED: {type(cause).__name__}: {cause} "
                f"(see {d / 'error.txt'})")
            if fail_fast:
                raise
            continue
        result["duration_s"] = time.perf_counter() - start + float(result.get("resumed_train_s") or 0.0)
        write_json_atomic(result, d / "result.json")
        (d / "error.txt").unlink(missing_ok=True)
        durations.setdefault(c.dataset, []).append(result["duration_s"])
        every = [x for v in durations.values() for x in v]
        left = pending[i:]
        eta = sum(statistics.mean(durations.get(x.dataset) or every) for x in left)
        log(f"[{i}/{len(pending)}] {c.dataset} {c.name}: {c.method} {result.get('eval_split', 'test')} AUC "
            f"{metric_text(result['auc'])}, "
            f"bal. acc {metric_text(result['balanced_accuracy'])}, acc {metric_text(result['accuracy'])}, "
            f"{result['epochs']} epochs, "
            f"{result['duration_s']:.0f} s; elapsed {_hms(time.perf_counter() - t0)}, ETA {_hms(eta)}")
        if on_result is not None:
            on_result()
    return {"cells": len(cells), "skipped": len(done) + meanwhile, "ran": len(pending) - failed - meanwhile,
            "failed": failed}


#: the lock file of a grid's work folder (an OS lock, let go when the process ends, killed or not)
GRID_LOCK = ".compare_methods.lock"


def hold_grid(work_dir: Path) -> bool:
    """
    Lock ``work_dir`` for this grid (``filelock``'s OS lock on :data:`GRID_LOCK`, its holder named beside it):
    two grids into one work folder retrained each other's cells, one deleting the other's training in progress and
    overwriting a cell it had finished (trial T62c). A second grid is refused, naming the holder; the lock goes with
    the process; a grid run again in this process (``main`` called twice) holds it already. ``True`` when this call
    took the lock, ``False`` when this process held it (:func:`monai_das.utils.io.hold_lock`).
    """
    try:
        return hold_lock(work_dir, GRID_LOCK, GRID_LOCK + ".owner", what="grid", refusal=lambda o: (
            f"another compare_methods.py grid is running in '{work_dir}' ({o or 'another process'}): wait for it "
            "to finish, or give this one another --out (a work folder of its own); --report-only rewrites the "
            "reports from this folder's finished cells without training."))
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


#: what every cell result holds (reports, pairing, the settings check)
RESULT_KEYS = ("dataset", "method", "label", "keep_ratio", "seed", "fold", "auc")


def read_result(path: Path) -> dict[str, Any]:
    """A cell's ``result.json``; a file that is not one (cut short, emptied, edited) is a ``ValueError`` naming it
    and the way out (deleting its folder runs that cell again), never skipped nor used."""
    try:
        result = json.loads(path.read_text())
        missing = [k for k in RESULT_KEYS if k not in result] if isinstance(result, dict) else list(RESULT_KEYS)
    except (OSError, ValueError) as e:
        raise ValueError(f"cell result '{path}' cannot be read ({type(e).__name__}: {e}); delete its folder "
                         f"'{path.parent}' to run that cell again.") from None
    if missing:
        raise ValueError(f"cell result '{path}' is not a cell result (no {missing}); delete its folder "
                         f"'{path.parent}' to run that cell again.")
    return result


def load_results(work_dir: Path, datasets: Sequence[str]) -> list[dict[str, Any]]:
    """The ``result.json`` of every finished cell of ``datasets`` in ``work_dir`` (this run's and earlier ones)."""
    out = []
    for ds in datasets:
        for p in sorted((work_dir / ds).glob("*/result.json")):
            out.append(read_result(p))
    return out


def check_finished_cells(cells: Sequence[Cell], work_dir: Path, expected: Callable[[Cell], dict],
                         code: str | None = None) -> None:
    """
    Raise ``ValueError`` when a finished cell was run with other bundle settings than this run would use (e.g. other
    epochs), or — when ``code`` is given — with another version of the training code (:func:`code_hash`), since it
    would be skipped and mixed into the results; use another ``--out`` or ``--tag`` then.
    """
    for c in cells:
        p = work_dir / c.dataset / c.name / "result.json"
        if not p.is_file():
            continue
        result = read_result(p)
        if code is not None and result.get("code_hash", code) != code:
            raise ValueError(
                f"cell '{p.parent}' was run with another version of the training code (code hash "
                f"{result['code_hash']}, now {code}: {', '.join(CODE_PATHS)} changed); delete its folder to rerun it, "
                "use another --out, or pass --allow-code-change to keep it.")
        before, now = _trained_settings(result.get("overrides")), _trained_settings(expected(c))
        if before is not None and before != now:
            diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            changes = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise ValueError(f"cell '{p.parent}' was run with other settings ({changes}); use another --out or --tag, "
                             "or delete that folder.")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, method label, keep ratio): mean and std over seeds and folds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["label"], float(r["keep_ratio"])), []).append(r)
    rows = []
    for (ds, label, ratio), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], _method_order(kv[0][1]),
                                                                           kv[0][2])):
        row: dict[str, Any] = {"dataset": ds, "method": label, "keep_ratio": ratio,
                               "runs": len(rs), "seeds": len({r["seed"] for r in rs}),
                               "folds": len({r["fold"] for r in rs}), "eval_split": rs[0].get("eval_split", "test")}
        for key in ("auc", "balanced_accuracy", "accuracy", "best_val_auc"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r.get(key) for r in rs])
            # runs whose value is defined (a test split without a class has no AUC): what the mean and std are of
            row[f"{key}_n"] = sum(r.get(key) is not None and not math.isnan(float(r[key])) for r in rs)
        row["frames_kept"] = rs[0]["frames_kept"]
        row["frames_total"] = rs[0]["frames_total"]
        row["frames_seen_training"] = round(_mean_std([r["frames_seen_training"] for r in rs])[0])
        row["epochs_mean"] = _mean_std([r["epochs"] for r in rs])[0]
        row["train_epoch_s"] = _mean_std([r["train_epoch_s"] for r in rs])[0]
        row["epoch_with_val_s"] = _mean_std([r["epoch_with_val_s"] for r in rs])[0]
        rows.append(row)
    return rows


#: baselines DAS is compared with, run by run (same seed and fold)
PAIRED_AGAINST = ("uniform", "dps", "full", "random", "adps")


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of ``diffs`` (NaNs when fewer than 2 values)."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return float("nan"), float("nan")
    mean, sem = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sem
    return mean - half, mean + half


def unit_means(diffs: Sequence[tuple[Any, Any, float]]) -> list[float]:
    """
    One paired difference per independent unit, from ``(fold, cell, difference)`` triples: the differences of the
    cells that share a fold (its test patients) averaged into one, a cell without a fold (``None`` or ``""``) its own
    unit. Sorted by unit, so the order is reproducible.
    """
    units: dict[tuple, list[float]] = {}
    for fold, cell, diff in diffs:
        units.setdefault(("fold", str(fold)) if fold not in (None, "") else ("cell", str(cell)), []).append(diff)
    return [statistics.mean(v) for _, v in sorted(units.items())]


def count_label(units: int, runs: int, unit: str = "folds") -> str:
    """``"5"``, or ``"5 folds (15 runs)"`` where the runs of a fold (``unit``: or of a seed, ``"seeds"``) were
    averaged into one unit."""
    return str(units) if runs == units else f"{units} {unit} ({runs} runs)"


def paired_differences(results: Sequence[dict[str, Any]], reference: str = "das",
                       against: Sequence[str] = PAIRED_AGAINST, metric: str = "auc") -> list[dict[str, Any]]:
    """
    ``reference − baseline`` of ``metric`` per dataset and keep ratio, paired by seed and fold (the same data split
    and initial seed), with the mean, a 95 % Student-t interval over the independent units and the number of units
    won. A unit is a seed where there are no folds (each seed its own pair), and a fold where there are: the seeds
    run on one fold share its test patients, so their differences are averaged into one value per fold and the
    interval is over folds (``runs`` counts the seed × fold pairs behind them). ``full`` is paired with every keep
    ratio (it keeps every frame). Only untagged runs with a finite ``metric`` are paired. ``code_mixed``: the
    pairs whose two cells ran different training code (``code_hash``), so a difference may be the code's too.
    """
    runs: dict[tuple, dict[tuple, tuple[float, Any]]] = {}  # (dataset, method, keep) → (seed, fold) → (value, code)
    for r in results:
        value = r.get(metric)
        if r.get("label", r["method"]) != r["method"] or value is None or not math.isfinite(float(value)):
            continue
        key = (r["dataset"], r["method"], float(r["keep_ratio"]))
        runs.setdefault(key, {})[(r["seed"], r.get("fold"))] = (float(value), r.get("code_hash"))
    rows = []
    for (ds, method, ratio), ref in sorted(runs.items()):
        if method != reference:
            continue
        for other in against:
            base = runs.get((ds, other, 1.0 if other == "full" else ratio))
            pairs = sorted(set(ref) & set(base or {}), key=str)
            if not pairs:
                continue
            codes = [(ref[p][1], base[p][1]) for p in pairs]
            mixed = sum(None not in c and c[0] != c[1] for c in codes)
            diffs = unit_means([(fold, seed, ref[(seed, fold)][0] - base[(seed, fold)][0]) for seed, fold in pairs])
            low, high = t_interval(diffs)
            verdict = ("one pair: no interval" if len(diffs) < 2 else "above zero" if low > 0
                       else "below zero" if high < 0 else "includes zero")
            rows.append({"dataset": ds, "keep_ratio": ratio, "comparison": f"{reference} − {other}", "baseline": other,
                         "pairs": len(diffs), "runs": len(pairs), "mean_diff": statistics.mean(diffs),
                         "ci95_low": low, "ci95_high": high,
                         "wins": sum(d > 0 for d in diffs), "verdict": verdict, "code_mixed": mixed,
                         "diffs": " ".join(f"{d:+.3f}" for d in diffs)})
    return rows


def headroom_differences(results: Sequence[dict[str, Any]], metric: str = "auc") -> list[dict[str, Any]]:
    """
    ``full − uniform`` of ``metric`` at each keep ratio uniform was run with, paired by seed and fold as in
    :func:`paired_differences`: what every frame adds over ``k`` evenly spaced ones, the room a learned sampler has
    above uniform (a sampler at keep ``r`` can beat uniform by more only where the subset it picks beats the whole
    sequence).
    """
    ratios = {(r["dataset"], float(r["keep_ratio"])) for r in results if r["method"] == "uniform"}
    at_ratios = [dict(r, keep_ratio=ratio) for r in results if r["method"] == "full"
                 for ds, ratio in sorted(ratios) if ds == r["dataset"]]
    return paired_differences(at_ratios + [r for r in results if r["method"] == "uniform"], reference="full",
                              against=("uniform",), metric=metric)


def paired_table(rows: Sequence[dict[str, Any]], with_dataset: bool = False, reference: str = "DAS") -> str:
    """Markdown table of :func:`paired_differences` rows (``reference``: the first method, for the headers)."""
    keeps = "uniform keeps" if reference == "full" else f"{reference} keeps"
    cols = ([("dataset", "dataset")] if with_dataset else []) + [
        ("keep", keeps), ("comparison", "difference"), ("pairs", "pairs"), ("mean", "mean"),
        ("ci", "95 % interval"), ("wins", f"{reference} better"), ("verdict", "interval"),
        ("code", "pairs across code versions"), ("diffs", "per seed / fold (fold: mean over its seeds)")]
    return markdown_table([{
        **r, "keep": f"{100 * r['keep_ratio']:.0f}%", "mean": f"{r['mean_diff']:+.3f}",
        "ci": "n/a" if math.isnan(r["ci95_low"]) else f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]",
        "wins": f"{r['wins']}/{r['pairs']}",
        "pairs": count_label(r["pairs"], r.get("runs", r["pairs"])),
        "code": f"{r.get('code_mixed', 0)}/{r.get('runs', r['pairs'])}",
    } for r in rows], cols)


def code_versions(results: Sequence[dict[str, Any]]) -> str:
    """The training code hashes of ``results`` with the cells of each, per method: ``\`abc\` (das 3, full 3)``."""
    cells: dict[str, dict[str, int]] = {}
    for r in results:
        per = cells.setdefault(str(r.get("code_hash")), {})
        per[r["method"]] = per.get(r["method"], 0) + 1
    return "; ".join(f"`{h}` (" + ", ".join(f"{m} {n}" for m, n in sorted(per.items(), key=lambda kv: _method_order(
        kv[0]))) + ")" for h, per in sorted(cells.items()))


def chance_note(rows: Sequence[dict[str, Any]]) -> str:
    """How many of ``rows``' 95 % intervals would exclude zero by chance alone if no method differed from another."""
    n = sum(not math.isnan(r["ci95_low"]) for r in rows)
    found = sum(r["verdict"] in ("above zero", "below zero") for r in rows)
    return (f"{n} intervals at 95 % each (not corrected for multiple comparisons): even with no true difference, "
            f"about {0.05 * n:.1f} of them would exclude zero by chance; {found} do here. *Pairs across code "
            "versions*: pairs whose two cells ran different training code (`code_hash`), where a difference may be "
            "the code's as well as the method's.")


def plot_paired(rows: Sequence[dict[str, Any]], title: str, path: Path) -> str:
    """Forest plot of paired differences: mean and 95 % interval per dataset, keep ratio and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    fig, ax = plt.subplots(figsize=(7.6, 1.2 + 0.32 * len(rows)), dpi=120)
    colors = {b: f"C{i}" for i, b in enumerate(PAIRED_AGAINST)}
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        lo, hi = r["ci95_low"], r["ci95_high"]
        if not math.isnan(lo):
            ax.plot([lo, hi], [y, y], color=colors[r["baseline"]], lw=2)
        ax.plot(r["mean_diff"], y, "o", color=colors[r["baseline"]])
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['dataset']} keep {100 * r['keep_ratio']:.0f}%: {r['comparison']} "
                        f"[n={count_label(r['pairs'], r.get('runs', r['pairs']))}]" for r in reversed(rows)], fontsize=7)
    ax.set_xlabel("paired difference of AUC (mean, 95 % t-interval)")
    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return str(path)


def _method_order(label: str) -> int:
    base = label.split("[")[0]
    return METHODS.index(base) if base in METHODS else len(METHODS)


def _pm(mean: float, std: float, runs: int, pct: bool = False, of: int | None = None) -> str:
    """``mean ± std`` over ``runs`` defined values (no ± for one); ``of``: the runs in all, said when more (a run
    whose value is undefined, e.g. a test AUC without a class, is in neither the mean nor the std)."""
    if math.isnan(mean):
        return "n/a"
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")
    return (f(mean) + (f" ± {f(std)}" if runs > 1 else "")
            + (f" ({runs} of {of} runs; {of - runs} undefined)" if of is not None and of > runs else ""))


def _pm_row(r: dict[str, Any], key: str, pct: bool = False) -> str:
    """:func:`_pm` of an :func:`aggregate` row's ``key``: over the runs where it is defined."""
    return _pm(r[f"{key}_mean"], r[f"{key}_std"], r.get(f"{key}_n", r["runs"]), pct, r["runs"])


def plot_tradeoff(rows: Sequence[dict[str, Any]], title: str, path: Path) -> str:
    """Test AUC (mean ± std) against the percentage of frames kept, one line per method; ``full`` at 100%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    labels = sorted({r["method"] for r in rows}, key=_method_order)
    for label in labels:
        rs = sorted((r for r in rows if r["method"] == label), key=lambda r: r["keep_ratio"])
        x = [100 * r["keep_ratio"] for r in rs]
        y = [r["auc_mean"] for r in rs]
        e = [r["auc_std"] for r in rs]
        if label.split("[")[0] == "full":
            ax.axhline(y[0], color="k", ls="--", lw=1, alpha=0.6)
            ax.errorbar(x, y, yerr=e, fmt="s", color="k", capsize=3, label=label)
        else:
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.set_xlabel("frames kept (% of T)")
    ax.set_ylabel(f"{rows[0].get('eval_split', 'test')} AUC (mean ± std)")
    ax.set_xlim(0, 105)
    ax.set_title("\n".join(textwrap.fill(line, 80) for line in title.splitlines()), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return str(path)


def kept_position_curves(results: Sequence[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """
    Mean over runs of the fraction of test inputs that kept each frame position (``eval_kept_fraction["all"]``), per
    method and keep ratio, for the cells that recorded it; and the number of runs behind each curve.
    """
    groups: dict[str, list[list[float]]] = {}
    for r in sorted(results, key=lambda r: (_method_order(r["label"]), -r["keep_ratio"])):
        curve = (r.get("eval_kept_fraction") or {}).get("all")
        if curve and r["method"] != "full":
            groups.setdefault(f"{r['label']} keep {100 * r['keep_ratio']:.0f}%", []).append(curve)
    curves = {name: [statistics.mean(v) for v in zip(*cs)] for name, cs in groups.items()
              if len({len(c) for c in cs}) == 1}
    return curves, {name: len(groups[name]) for name in curves}


def cell_provenance(results: Sequence[dict[str, Any]]) -> str:
    """Markdown list of the commands that ran ``results`` (cells accumulate over invocations), with cell counts."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r.get("command") or "(not recorded)", []).append(r)
    lines = ["Cells in this report, by the command that ran them (a grid accumulates over invocations; the command "
             "above only rewrote the report):"]
    for cmd, rs in groups.items():
        dates = sorted(r["finished_utc"] for r in rs if r.get("finished_utc"))
        when = f", finished {dates[0]} – {dates[-1]}" if dates else ""
        lines.append(f"- `{cmd}`: {len(rs)} cell(s){when}")
    present = [(name, sorted({r[name] for r in results if r.get(name) is not None}))
               for name in ("method", "keep_ratio", "seed", "fold")]
    lines.append("\nWhat those cells cover: " + "; ".join(f"{name.replace('_', ' ')}s {values}"
                                                          for name, values in present if values) + ".")
    return "\n".join(lines)


def report_suffix(eval_split: str) -> str:
    """What the report files of a run scored on ``eval_split`` carry after the dataset key (``accuracy_summary``):
    nothing for the test split, ``_val`` for the validation split, so that a tuning run never replaces the test-split
    reports in the same ``--out`` (its cells are apart already, in ``_work/<profile>_val``)."""
    return "" if eval_split == "test" else f"_{eval_split}"


def write_reports(spec: DatasetSpec, results: Sequence[dict], out: Path, header: dict[str, Any],
                  suffix: str = "") -> dict[str, str]:
    """
    ``<key>.csv``, ``<key>.md``, ``<key>.png`` and ``<key>_runs.csv`` for one dataset (``<key><suffix>.*`` with
    ``suffix``, see :func:`report_suffix`). Standard deviations over one run are left empty in the CSV.
    """
    rows = aggregate([r for r in results if r["dataset"] == spec.key])
    if not rows:
        return {}
    key = spec.key + suffix
    split = rows[0]["eval_split"]
    # a standard deviation over one run is not 0: left empty (the tables show none)
    csv_rows = [{k: ("" if k.endswith("_std") and r.get(k[:-4] + "_n", r["runs"]) < 2  # one defined value: no std
                     else round(v, 5) if isinstance(v, float) else v)
                 for k, v in r.items()} for r in rows]
    paths = {"csv": write_csv(csv_rows, out / f"{key}.csv")}
    runs = [{k: v for k, v in r.items() if k not in ("history", "eval_kept_fraction")} for r in results
            if r["dataset"] == spec.key]
    paths["runs"] = write_csv(runs, out / f"{key}_runs.csv")
    paths["png"] = plot_tradeoff(rows, f"{spec.title}\n{header['mode']} mode, {split} split", out / f"{key}.png")

    def table(rs):
        return markdown_table([{
            "method": r["method"], "keep": f"{100 * r['keep_ratio']:.0f}%",
            "frames": f"{r['frames_kept']} of {r['frames_total']}",
            "auc": _pm_row(r, "auc"),
            "bacc": _pm_row(r, "balanced_accuracy", pct=True),
            "acc": _pm_row(r, "accuracy", pct=True),
            "val": _pm_row(r, "best_val_auc"),
            "seen": f"{r['frames_seen_training']:,}", "epochs": f"{r['epochs_mean']:.1f}",
            "epoch_s": f"{r['train_epoch_s']:.1f}", "runs": r["runs"],
        } for r in rs], [
            ("method", "method"), ("keep", "kept"), ("frames", "frames / input"), ("auc", f"{split} AUC"),
            ("bacc", "balanced accuracy"), ("acc", "accuracy"), ("val", "best val AUC"),
            ("seen", "frames seen in training"), ("epochs", "epochs"), ("epoch_s", "train s / epoch"),
            ("runs", "runs"),
        ])

    main = [r for r in rows if r["keep_ratio"] in (MAIN_KEEP_RATIO, 1.0)]
    family = spec.key.rsplit("_", 1)[0] if spec.key[-1].isdigit() else spec.key
    lines = [
        f"# {spec.title}: DAS against the baselines", "",
        f"Mode: **{header['mode']}** — {header['description']}.", "",
        environment_markdown(header["environment"]), "",
        cell_provenance([r for r in results if r["dataset"] == spec.key]), "",
        f"Settings of the command above (the last to write this report; each cell's own are in its "
        f"`result.json`): {header['settings']}", "",
        "Training code (each cell's hash, of " + ", ".join(f"`{c}`" for c in CODE_PATHS)
        + " as this version of the script computes it; earlier versions hashed fewer of them): " + code_versions(
            [r for r in results if r["dataset"] == spec.key]),
        "",
        f"## {split.capitalize()} results at keep ratio {MAIN_KEEP_RATIO:.0%} (and full)", "",
        f"Mean ± standard deviation over {rows[0]['seeds']} seed(s)"
        + (f" × {rows[0]['folds']} fold(s)" if spec.cross_validated else "") + ". *Frames / input*: what the "
        "downstream 2D network sees per volume/clip; *frames seen in training*: kept frames × training items × "
        "epochs run; *train s / epoch*: training loop only (validation excluded).", "",
        table(main),
    ]
    size = int(spec.key.rsplit("_", 1)[1]) if spec.key[-1].isdigit() else None
    references = [r for r in REFERENCES.get(family, []) if r.get("size") in (None, size)]
    if references:
        lines += ["", "Published reference numbers (not run here; different training budgets and code):", "",
                  markdown_table([{**r, "auc": f"{r['auc']:.3f}", "accuracy": f"{100 * r['accuracy']:.1f}%",
                                   "size": f"{r['size']}³" if r.get("size") else "not stated"}
                                  for r in references],
                                 [("source", "source"), ("method", "method"), ("size", "input size"),
                                  ("auc", "AUC"), ("accuracy", "accuracy")])]
    if CITATIONS.get(family):
        lines += [""] + [f"{c}  " for c in CITATIONS[family]]
    paired = paired_differences([r for r in results if r["dataset"] == spec.key])
    if paired:
        lines += ["", f"## Paired differences of {split} AUC (DAS − baseline, same seed and fold)", "",
                  "Each pair is one seed (and fold) run with both methods on the same split; with folds, the "
                  "differences of the seeds run on a fold are averaged into one per fold (they share its test "
                  "patients). The interval is a two-sided 95 % Student-t interval over the seeds, or over the folds "
                  "(wide with 3 pairs: t = 4.30). *above zero*: DAS better beyond the run-to-run noise measured here.",
                  "", paired_table(paired), "", chance_note(paired)]
    curves, runs_per_curve = kept_position_curves([r for r in results if r["dataset"] == spec.key])
    if curves:
        from monai_das.visualize import plot_kept_positions

        name = f"{key}_kept_positions.png"
        paths["positions"] = plot_kept_positions(curves, out / name, items=runs_per_curve,
                                                 title=f"{spec.title}: fraction of {split} inputs that kept each "
                                                       "position (mean over runs)")
        lines += ["", f"## Where the samplers look ({split} split)", "",
                  "For every frame position, the fraction of the evaluated inputs whose kept set contains it, averaged "
                  "over runs (legend: runs). A flat line at the keep ratio is what a sampler without preference does; "
                  "uniform keeps fixed positions (0 or 1); a learned sampler that favours some positions for every "
                  "input shows peaks. Only cells run since the evaluation recorded it.", "", f"![kept positions]({name})"]
    lines += ["", "## Trade-off: AUC against frames kept", "", f"![AUC against frames kept]({key}.png)", "",
              table(rows), "", f"Every run: `{key}_runs.csv`; per-epoch histories: `result.json` of each cell under "
              f"`{header['work_dir']}`."]
    paths["md"] = write_text_atomic("\n".join(lines) + "\n", out / f"{key}.md")
    return paths


def _paired_section(results: Sequence[dict], out: Path, header: dict, split: str, suffix: str = "") -> list[str]:
    """Summary lines with the paired differences of every dataset and their forest plot
    (``paired_differences<suffix>.png``)."""
    rows = paired_differences(results)
    if not rows:
        return []
    write_csv(rows, out / f"paired_differences{suffix}.csv")
    plot_paired(rows, f"DAS minus each baseline, paired by seed/fold, {header['mode']} mode, {split} split",
                out / f"paired_differences{suffix}.png")
    lines = [f"## Paired differences of {split} AUC: DAS − baseline (same seed and fold)", "",
             "Mean over pairs, two-sided 95 % Student-t interval, pairs where DAS was better; `full` keeps every "
             f"frame. Also in `paired_differences{suffix}.csv`.", "",
             f"![paired differences](paired_differences{suffix}.png)", "",
             paired_table(rows, with_dataset=True), "", chance_note(rows), ""]
    headroom = headroom_differences(results)
    if headroom:
        write_csv(headroom, out / f"headroom_differences{suffix}.csv")
        lines += [f"## Headroom: full − uniform ({split} AUC, same seed and fold)", "",
                  "What keeping every frame adds over `k` evenly spaced frames, paired like the rows above. A "
                  "sampler can beat uniform by more only where its subset beats the whole sequence, so where this "
                  "interval includes zero, *DAS > uniform with the interval above zero* asks more of the sampler "
                  f"than all the frames give. Also in `headroom_differences{suffix}.csv`.", "",
                  paired_table(headroom, with_dataset=True, reference="full"), ""]
    return lines


def write_summary(specs: Sequence[DatasetSpec], results: Sequence[dict], out: Path, header: dict,
                  suffix: str = "") -> str:
    """``accuracy_summary.md`` (``accuracy_summary<suffix>.md``, see :func:`report_suffix`): AUC and balanced accuracy
    of every method on every dataset at the main keep ratio."""
    rows = [r for r in aggregate(results) if r["keep_ratio"] in (MAIN_KEEP_RATIO, 1.0)]
    labels = sorted({r["method"] for r in rows}, key=_method_order)
    keys = [s.key for s in specs if any(r["dataset"] == s.key for r in rows)]

    def table(metric: str, pct: bool) -> str:
        lines = []
        for label in labels:
            line = {"method": label}
            for k in keys:
                r = next((r for r in rows if r["dataset"] == k and r["method"] == label), None)
                line[k] = "" if r is None else (_pm_row(r, metric, pct)
                                                + f" ({r['frames_kept']}/{r['frames_total']}, n={r['runs']})")
            lines.append(line)
        return markdown_table(lines, [("method", "method")] + [(k, k) for k in keys])

    split = rows[0]["eval_split"] if rows else "test"
    text = "\n".join([
        f"# {split.capitalize()} AUC and balanced accuracy of every method (keep ratio {MAIN_KEEP_RATIO:.0%}; full "
        "keeps all frames)", "",
        f"Mode: **{header['mode']}** — {header['description']}.", "",
        environment_markdown(header["environment"]), "",
        cell_provenance(results), "",
        "Cells: mean ± std over seeds (and folds) (frames the downstream network sees / frames per input, n = runs).",
        "", f"## {split.capitalize()} AUC", "", table("auc", False), "",
        f"## {split.capitalize()} balanced accuracy", "", table("balanced_accuracy", True), "",
        *_paired_section(results, out, header, split, suffix),
        "Per dataset, with accuracy, epochs, time per epoch, references and the trade-off plot: "
        + ", ".join(f"[{k}{suffix}.md]({k}{suffix}.md)" for k in keys) + ".",
    ]) + "\n"
    return write_text_atomic(text, out / f"accuracy_summary{suffix}.md")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", dest="profile", const="quick",
                      help="about 35 min on 2 CPU cores: one seed, keep 50%%, few epochs")
    mode.add_argument("--standard", action="store_const", dest="profile", const="standard",
                      help="converged comparison on CPU, run over several sessions: 3 seeds, 5 POCUS folds, keep "
                           "50/25/10%%, early stopping, sparse-evidence POCUS")
    mode.add_argument("--full", action="store_const", dest="profile", const="full",
                      help="paper settings, 3 seeds, keep 25/50/75%% (for a GPU)")
    mode.add_argument("--smoke", action="store_const", dest="profile", const="smoke",
                      help="synthetic data, tiny, 1 epoch (CI)")
    p.add_argument("--data-root", default=os.environ.get("MONAI_DAS_DATA", str(REPO.parent / "shared" / "data")),
                   help="folder with medmnist3d/ and video/covid19_lus_pocus/ (default $MONAI_DAS_DATA or "
                        "<repo>/../shared/data)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="dataset keys to run (default: every MedMNIST3D file and POCUS found; synthetic_28 on request)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="override the profile's seeds")
    p.add_argument("--keep-ratios", nargs="+", type=float, default=None, help="override the profile's keep ratios")
    p.add_argument("--folds", nargs="+", type=int, default=None, help="POCUS folds (override the profile's)")
    p.add_argument("--max-epochs", type=positive_int, default=None, help="override the profile's epoch limit")
    p.add_argument("--patience", type=positive_int, default=None, help="early-stopping patience (epochs)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    p.add_argument("--eval-split", default="test", choices=("test", "val"),
                   help="split the checkpoints are scored on (val: tuning)")
    p.add_argument("--override", action="append", type=parse_override, default=[], metavar="KEY=JSON",
                   help="bundle config override for every cell (repeatable)")
    p.add_argument("--tag", default="", help="name of this variant (with --override)")
    p.add_argument("--mlflow", action="store_true", help="keep the bundle's MLflow tracking on (off by default): every cell in one store, "
                   "<out>/mlflow.db, an experiment per dataset (compare_methods_<dataset>), runs named after the cells")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each cell's models/ folder")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell")
    p.add_argument("--allow-code-change", action="store_true",
                   help="keep finished cells run with another version of the training code")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the reports from the finished cells in the work folder and exit (runs nothing)")
    args = p.parse_args(argv)

    prof = PROFILES[args.profile]
    seeds = args.seeds if args.seeds is not None else prof["seeds"]
    keep_ratios = args.keep_ratios if args.keep_ratios is not None else prof["keep_ratios"]
    folds = args.folds if args.folds is not None else prof["folds"]
    bad = [r for r in keep_ratios if not 0.0 < r <= 1.0]
    if bad:
        raise ValueError(f"keep ratios must be in (0, 1], got {bad}.")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results"
    work_dir = out / "_work" / (args.profile + ("" if args.eval_split == "test" else f"_{args.eval_split}"))
    suffix = report_suffix(args.eval_split)  # validation-split reports never replace the test-split ones
    specs = all_specs = discover_datasets(args.data_root, args.profile)
    if args.datasets:
        unknown = set(args.datasets) - {s.key for s in specs}
        if unknown:
            from monai_das.data import MEDMNIST3D_NAMES, medmnist_filename

            def where(key: str) -> str:  # the file looked for, or the key to give (trial T64c)
                name, _, size = key.rpartition("_")
                if name in MEDMNIST3D_NAMES and size in ("28", "64"):
                    return f"{key}: no {Path(args.data_root) / 'medmnist3d' / medmnist_filename(name, int(size))}"
                if key in MEDMNIST3D_NAMES:
                    return f"{key}: give {key}_28 or {key}_64 (a MedMNIST3D set and its size)"
                if key in ("pocus", "pocus_sparse"):
                    return f"{key}: no {Path(args.data_root) / 'video' / 'covid19_lus_pocus' / 'MANIFEST.csv'}"
                return f"{key}: not a dataset of this benchmark"

            raise SystemExit(f"dataset(s) not found ({'; '.join(where(k) for k in sorted(unknown))}); available: "
                             f"{[s.key for s in specs]} (data root '{args.data_root}').")
        specs = [s for s in specs if s.key in args.datasets]
    else:
        specs = [s for s in specs if s.default]
    if not specs:
        raise FileNotFoundError(f"no dataset found under '{args.data_root}' (expected medmnist3d/*.npz or "
                                "video/covid19_lus_pocus/MANIFEST.csv).")
    cells = build_cells(specs, args.methods, keep_ratios, seeds, folds, args.tag, own_seeds=args.seeds is None,
                        own_ratios=args.keep_ratios is None)
    common = {
        "max_epochs": prof["max_epochs"], "patience": prof["patience"], "batch_size": 16, "lr": prof["lr"],
        "mlflow": bool(args.mlflow), "progress_bar": False, "num_figures": 0, "resume": True, "num_workers": 0,
    }
    owned = sorted({"method", "keep_ratio", "num_kept", "seed", "fold", "bundle_root", "output_dir"}
                   & {k.split("#")[0] for k, _ in args.override})
    if owned:  # a cell is its method, keep ratio, seed and fold, and its folder: reports would be filed wrongly
        raise SystemExit(f"--override {', '.join(owned)}: set by each cell (--methods, --keep-ratios, --seeds, "
                         "--folds, --out); choose them with those options.")
    forced = {**({"max_epochs": args.max_epochs} if args.max_epochs else {}),
              **({"patience": args.patience} if args.patience else {}), **dict(args.override)}
    settings = (f"keep ratios {keep_ratios}, seeds {seeds}" + (f", POCUS folds {folds}" if any(
        s.cross_validated for s in specs) else "") + f", batch 16, Adam lr {common['lr']:g}, max epochs {common['max_epochs']} (unless set per dataset below), "
        f"early stop on validation loss (patience {common['patience']}), checkpoint with the best validation AUC, "
        f"scored on the {args.eval_split} split; bundle overrides per dataset: "
        + "; ".join(f"{s.key}: {json.dumps({k: v for k, v in s.overrides.items() if k != 'data_dir'})}"
                    + (f" (seeds {list(s.seeds)})" if s.seeds and args.seeds is None else "")
                    + (f" (keep ratios {list(s.keep_ratios)})" if s.keep_ratios and args.keep_ratios is None else "")
                    for s in specs)
        + (f"; from the command line, for every cell: {json.dumps(forced)}" if forced else "")
        + (f"; variant tag `{args.tag}`" if args.tag else ""))
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{_hms(time.perf_counter() - start)}] {msg}", flush=True)

    log(f"compare_methods: {args.profile.upper()} mode ({prof['description']})")
    log(f"datasets: {[s.key for s in specs]}; methods: {args.methods}; {len(cells)} cells; work dir {work_dir}")
    fields = ("dataset", "method", "keep_ratio", "seed", "fold", "tag")

    def earlier_cells() -> list[Cell]:
        """Every finished cell of this variant (tag) that the reports will pair with this run's, also of other
        methods, keep ratios or seeds run before: a 6-epoch DAS beside a 2-epoch full was reported as "das - full"
        without a word."""
        return [Cell(**{k: r[k] for k in fields if k in r}) for r in load_results(work_dir, [s.key for s in specs])
                if r.get("tag", "") == (args.tag or "")]

    if args.dry_run:
        # what the real run would refuse (check_finished_cells), said here, not shown as "done"
        dry = BundleCellRunner({s.key: s.overrides for s in specs}, common, args.eval_split, forced=forced,
                               log=lambda m: None)
        code = None if args.allow_code_change else dry.code

        def refusal(c: Cell) -> str:
            try:
                check_finished_cells([c], work_dir, dry.cell_overrides, code)
            except ValueError as e:
                return str(e)
            return ""

        names = {(c.dataset, c.name) for c in cells}
        refused = 0
        for c in cells:
            done = (work_dir / c.dataset / c.name / "result.json").is_file()
            why = refusal(c) if done else ""
            refused += bool(why)
            print(f"  {'REFUSED' if why else 'done' if done else 'todo'}  {c.dataset}/{c.name}"
                  + (f": finished, but the run would stop on it: {why}" if why else ""))
        for c in earlier_cells():  # cells of this tag outside the grid are checked by the real run too
            why = "" if (c.dataset, c.name) in names else refusal(c)
            if why:
                refused += 1
                print(f"  REFUSED  {c.dataset}/{c.name} (finished earlier, not in this grid; the reports would pair "
                      f"it with this run's): {why}")
        if refused:
            print(f"  {refused} finished cell(s) the run would refuse: it would stop before training anything.")
        return {"cells": [asdict(c) for c in cells], "refused": refused}

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    env = environment(argv if argv is None else [sys.argv[0], *argv])
    header = {"mode": args.profile, "description": prof["description"], "environment": env, "settings": settings,
              "work_dir": str(work_dir.relative_to(out)) if work_dir.is_relative_to(out) else str(work_dir)}

    def refresh() -> None:
        header["environment"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        # the summary covers every dataset with finished cells in this work folder, not only this invocation's
        results = load_results(work_dir, [s.key for s in all_specs])
        for spec in specs:
            write_reports(spec, results, out, header, suffix)
        if results:
            write_summary(all_specs, results, out, header, suffix)

    if args.report_only:
        refresh()
        log(f"reports rewritten from {len(load_results(work_dir, [s.key for s in all_specs]))} finished cell(s) in {out}")
        return {"results": load_results(work_dir, [s.key for s in specs])}
    hold_grid(work_dir)  # one grid per work folder: a second would retrain and overwrite the first's cells
    from monai.utils import path_to_sqlite_uri

    runner = BundleCellRunner({s.key: s.overrides for s in specs}, common, args.eval_split, args.keep_checkpoints,
                              log, forced, provenance={"command": env["command"], "git_commit": env["git_commit"]},
                              tracking_uri=path_to_sqlite_uri(out / "mlflow.db"))
    checked = {(c.dataset, c.name): c for c in [*earlier_cells(), *cells]}
    check_finished_cells(list(checked.values()), work_dir, runner.cell_overrides,
                         None if args.allow_code_change else runner.code)
    counts = run_grid(cells, runner, work_dir, log, on_result=refresh, fail_fast=args.fail_fast)
    refresh()
    log(f"done: {counts}; results in {out}")
    if counts["failed"]:
        raise SystemExit(f"{counts['failed']} cell(s) failed; see error.txt in their folders under {work_dir}.")
    return {"counts": counts, "results": load_results(work_dir, [s.key for s in specs])}


if __name__ == "__main__":
    main()
