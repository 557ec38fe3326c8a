"""
Several seeds of the same experiment, summarised as mean ± std.

Run train + evaluate through the bundle CLI once per seed (each seed in its own ``<output_root>/seed<s>`` bundle
root, so checkpoints, metrics and the MLflow store are kept apart), then aggregate their ``eval/metrics.json``::

    python -m monai_das.engines.multiseed run --seeds 0 1 2 --output_root runs/das_vessel -- \
        --method das --dataset vesselmnist3d --data_dir /path/to/medmnist --max_epochs 20

    python -m monai_das.engines.multiseed aggregate runs/das_vessel/seed*/eval/metrics.json

``aggregate`` writes ``summary.json`` (next to the first input's run folder unless ``--output`` is given) and
prints one ``name: mean ± std`` line per metric (sample standard deviation, ``ddof=1``; ``None`` for one seed,
printed as ``(n=1: no spread)``). ``run`` resumes by seed after an interruption (see :func:`run_seeds`). Whether
one method beats another on the test list is a paired question that a mean ± std does not answer:
:mod:`monai_das.engines.compare` (seed folders of each method's runs, paired in order).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monai_das.utils.io import write_json_atomic
from monai_das.utils.process import run_child

__all__ = ["aggregate_metrics", "format_summary", "run_seeds", "main"]

BUNDLE_DIR = Path(__file__).resolve().parents[2] / "bundles" / "das_volume_classification"
#: report entries that must agree between the runs :func:`aggregate_metrics` summarises (the seed may differ)
SAME_EXPERIMENT = ("method", "dataset", "datalist_sha256", "spatial_size", "keep_ratio", "split", "label_names")
#: written in a seed's folder once its training and evaluation have finished, with the overrides they ran with
DONE_FILE = "multiseed_done.json"


def aggregate_metrics(paths: Sequence[str | os.PathLike]) -> dict:
    """
    ``{"num_runs", "runs": [{"path", "seed", "metrics"}], "mean": {...}, "std": {...}}`` over the ``metrics`` of
    several ``metrics.json`` reports (metrics missing or ``null`` in a run are left out of that metric's statistics).

    Raises:
        ValueError: a report given twice, two reports of one seed, or reports of different experiments (another
            value of one of :data:`SAME_EXPERIMENT`, e.g. a DAS run beside a uniform one): a mean over them would
            mean nothing.
    """
    if not paths:
        raise ValueError("no metrics files to aggregate.")
    runs, reports, seen = [], [], {}
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"metrics file '{path}' not found.")
        if path.resolve() in seen:
            raise ValueError(f"metrics file '{path}' is given twice (also as '{seen[path.resolve()]}').")
        seen[path.resolve()] = path
        report = json.loads(path.read_text())
        if "metrics" not in report:
            raise ValueError(f"'{path}' has no 'metrics' entry (not an evaluation report).")
        reports.append(report)
        runs.append({"path": str(path), "seed": report.get("seed"), "metrics": report["metrics"]})
    for key in SAME_EXPERIMENT:
        values = [json.dumps(r.get(key), sort_keys=True) for r in reports]
        first = next((i for i, v in enumerate(values) if v != values[0]), None)  # the first run that differs
        if first is not None:
            raise ValueError(f"the reports are of different experiments: {key} {reports[0].get(key)!r} in "
                             f"'{runs[0]['path']}' but {reports[first].get(key)!r} in '{runs[first]['path']}'.")
    seeds = [r["seed"] for r in runs if r["seed"] is not None]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(f"seed(s) {twice} occur in more than one report: {[r['path'] for r in runs if r['seed'] in twice]}.")
    names = sorted({k for r in runs for k in r["metrics"]})
    mean, std, count = {}, {}, {}
    for name in names:
        values = [float(r["metrics"][name]) for r in runs if isinstance(r["metrics"].get(name), (int, float))]
        values = [v for v in values if not math.isnan(v)]
        if not values:
            continue
        m = sum(values) / len(values)
        s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        mean[name], std[name], count[name] = m, s, len(values)
    return {"num_runs": len(runs), "runs": runs, "mean": mean, "std": std, "count": count}


def format_summary(summary: dict) -> str:
    """One ``name: mean ± std (n=...)`` line per metric."""
    return "\n".join(
        f"{k}: {summary['mean'][k]:.4f} ± {summary['std'][k]:.4f} (n={summary['count'][k]})"
        if summary["std"][k] is not None else f"{k}: {summary['mean'][k]:.4f} (n=1: no spread)"
        for k in summary["mean"]
    )


def _bundle_cmd(configs: Sequence[str], bundle_dir: Path, overrides: Sequence[str]) -> list[str]:
    cfg = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    return [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", cfg,
        "--meta_file", str(bundle_dir / "configs" / "metadata.json"),
        "--logging_file", str(bundle_dir / "configs" / "logging.conf"),
        *overrides,
    ]


def run_seeds(
    seeds: Sequence[int],
    output_root: str | os.PathLike,
    overrides: Sequence[str] = (),
    bundle_dir: str | os.PathLike = BUNDLE_DIR,
    train: bool = True,
) -> dict:
    """
    Train (unless ``train=False``) and evaluate once per seed with the bundle CLI, then :func:`aggregate_metrics`.

    Resumes by seed: a seed whose training and evaluation finished with the same overrides (:data:`DONE_FILE`) is
    not run again (with other overrides it is refused, naming both); an unfinished one trains with ``--resume True``
    (continues from its ``models/last.pt``, the same MLflow run; unless the overrides give ``--resume``). With
    ``train=False`` every seed's ``models/model.pt`` must exist before anything is evaluated.
    """
    bundle_dir = Path(bundle_dir)
    train_cfg = str(bundle_dir / "configs" / "train.json")
    eval_cfg = str(bundle_dir / "configs" / "evaluate.json")
    roots = {seed: Path(output_root) / f"seed{seed}" for seed in seeds}
    if not train:
        missing = [str(r / "models" / "model.pt") for r in roots.values() if not (r / "models" / "model.pt").is_file()]
        if missing:
            raise FileNotFoundError(f"no_train: no checkpoint to evaluate at {missing} (train those seeds first).")
    record = {"overrides": list(overrides), "train": bool(train), "bundle_dir": str(bundle_dir.resolve())}
    paths = []
    for seed, root in roots.items():
        done, paths_seed = root / DONE_FILE, root / "eval" / "metrics.json"
        if done.is_file() and paths_seed.is_file():
            old = json.loads(done.read_text())
            if old != record:
                raise ValueError(f"seed {seed} in '{root}' finished with other settings ({old}; now {record}): give "
                                 "another --output_root, or delete that seed's folder to run it again.")
            print(f"seed {seed}: finished before ({done}), not run again", flush=True)
            paths.append(paths_seed)
            continue
        common = ["--bundle_root", str(root), "--seed", str(seed), *overrides]
        if train:
            resume = [] if "--resume" in overrides else ["--resume", "True"]
            run_child(_bundle_cmd([train_cfg], bundle_dir, [*common, *resume]), check=True)
        # its reports where this seed's summary reads them, at any --num_kept (evaluate.json's own default puts an
        # evaluation at another k than the trained one in eval/k<k>/)
        run_child(_bundle_cmd([train_cfg, eval_cfg], bundle_dir, [*common, "--output_dir", str(root / "eval")]),
                  check=True)
        write_json_atomic(record, done)
        paths.append(paths_seed)
    summary = aggregate_metrics(paths)
    _write(summary, Path(output_root) / "summary.json")
    return summary


def _write(summary: dict, path: Path) -> None:
    write_json_atomic(summary, path)
    print(format_summary(summary))
    print(f"summary written to {path}")


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(prog="python -m monai_das.engines.multiseed", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train + evaluate per seed, then aggregate (bundle overrides after --)")
    p_run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p_run.add_argument("--output_root", required=True, help="one bundle root per seed is made under it")
    p_run.add_argument("--bundle_dir", default=str(BUNDLE_DIR))
    p_run.add_argument("--no_train", action="store_true", help="only evaluate existing checkpoints")
    p_agg = sub.add_parser("aggregate", help="summarise existing metrics.json files")
    p_agg.add_argument("paths", nargs="+")
    p_agg.add_argument("--output", default=None, help="summary JSON (default: <parent of the first run>/summary.json)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_seeds(args.seeds, args.output_root, overrides, args.bundle_dir, train=not args.no_train)
    summary = aggregate_metrics(args.paths)
    out = Path(args.output) if args.output else Path(args.paths[0]).resolve().parents[2] / "summary.json"
    _write(summary, out)
    return summary


if __name__ == "__main__":
    main()
