"""A new user's own small study, end to end through the bundles: does the sampler keep the evidence it is given?

The synthetic and public sets of the other benchmarks are large enough for hundreds of optimizer steps per run. A
team's first own study often is not: a few dozen studies, two optimizer steps per epoch. This script writes such a
study the way a user has it — files on disk and a CSV datalist with patient groups, a test split and the known
evidence frames — and trains the bundle on it with ``python -m monai.bundle run`` for every variant and seed:

- ``clips``: ``--items`` (default 40) grey clips of 48-70 frames at 80×96 (OpenCV, ``.mp4``; the first two
  ``.avi``), noise, and a bright disc of radius 10 (class ``disc``) or a square of the same area (``square``) in 6
  consecutive frames; the video bundle at ``num_frames 32``, ``size 64``;
- ``volumes``: ``--items`` (default 60) NIfTI volumes 36×44×40 (nibabel, spacing 0.8×0.8×2.5 mm), noise, and the
  shape (radius 4-8, drawn per volume whatever the class) in 3 consecutive axial slices; the volume bundle with
  ``slice_axis axial``.

Square and disc have the same area (to a few pixels) and volumes draw the size per item, so that no intensity
statistic of the whole study (the percentile scaling of the volume bundle, a bright-voxel count) tells the classes
apart; only the shape in the evidence slices does. (Before 2026-12-02 07:00 UTC the square was larger than the disc
and every volume's shape had radius 6: the 99.5th percentile alone separated the classes.)

Every 4 (clips) or 2 (volumes) items share a patient (``group``); the last items form the test list, validation is
the bundle's split of the training groups. A cell is (kind, variant, seed); it runs in
``<out>/_work/<kind>/<variant>_seed<s>`` and is skipped when its ``result.json`` exists (resume by cell; one run
with other data, overrides, keep ratio or training code is refused, naming them). The
table reports, per cell, the best validation AUC and the validation evidence kept at that epoch (the model card's
``eval_metrics``), the best epoch, and whether the sampler **collapsed**: evidence kept at the best epoch below
half of what a random choice of the same number of frames keeps (``keep_ratio / 2``).

Usage::

    python benchmarks/own_data.py --kinds clips volumes --seeds 0 1 2 3 4 \\
        --variant default= --variant slr1e-4="--sampler_lr 0.0001" --out benchmarks/results/own_data

Writes ``<out>/own_data.csv`` (every cell this command names: its kinds × seeds × variants, run now or reused from
``<out>/_work``; cells of other invocations stay there but are not reported), ``<out>/own_data.md`` (those cells and
per-variant means, command, machine) and prints the table. Data files are written under
``<out>/_data/<kind>_<items>_seed<data-seed>`` (generated from ``--data-seed``, never read from elsewhere) with
``generator.json``, the fingerprint of the generator that wrote them (:func:`generator_fingerprint`: a hash of the
generating functions' source), also recorded in every cell's settings. A data folder written by another version of
the generator (or before fingerprints were recorded) is refused, naming it: remove it (and the cells trained on it,
``<out>/_work``) or use another ``--out``; a cell trained on other generated data is refused like any other setting.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import code_hash, environment, environment_markdown, markdown_table, write_csv  # noqa: E402

from monai_das.utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from monai_das.utils.process import run_child  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {"clips": REPO / "bundles/das_video_classification", "volumes": REPO / "bundles/das_volume_classification"}
BUNDLE_ARGS = {"clips": ["--num_frames", "32", "--size", "64"], "volumes": ["--slice_axis", "axial"]}


def _shape(frame: np.ndarray, disc: bool, cy: int, cx: int, r: int) -> None:
    """Add a disc of radius ``r`` or a square of the same area (side ``round(r·√π)``) centred at ``(cy, cx)``."""
    yy, xx = np.mgrid[: frame.shape[0], : frame.shape[1]]
    side = round(r * np.pi ** 0.5)
    dy, dx = yy - cy + side // 2, xx - cx + side // 2
    square = (0 <= dy) & (dy < side) & (0 <= dx) & (dx < side)
    frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if disc else square] += 160.0


def write_clips(root: Path, items: int, seed: int) -> Path:
    """``items`` clips and ``clips.csv`` under ``root``; returns the datalist."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "v").mkdir(parents=True, exist_ok=True)
    rows, n_test = [], 4 * max(1, items // 20)
    for i in range(items):
        disc, n, ext = bool(i % 2), int(rng.integers(48, 71)), "avi" if i < 2 else "mp4"
        writer = cv2.VideoWriter(str(root / "v" / f"clip{i:03d}.{ext}"),
                                 cv2.VideoWriter_fourcc(*("MJPG" if ext == "avi" else "mp4v")), 20, (96, 80))
        t0 = int(rng.integers(0, n - 6))
        for t in range(n):
            f = rng.normal(60, 15, (80, 96))
            if t0 <= t < t0 + 6:
                _shape(f, disc, int(rng.integers(20, 60)), int(rng.integers(20, 76)), 10)
            writer.write(cv2.cvtColor(f.clip(0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        writer.release()
        rows.append({"image": f"v/clip{i:03d}.{ext}", "label": "disc" if disc else "square", "group": f"pt{i // 4}",
                     "evidence": ";".join(str(t) for t in range(t0, t0 + 6)),
                     "split": "test" if i >= items - n_test else ""})
    return _write_datalist(root / "clips.csv", rows)


def write_volumes(root: Path, items: int, seed: int) -> Path:
    """``items`` NIfTI volumes and ``volumes.csv`` under ``root``; returns the datalist."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, n_test = [], 2 * max(1, items // 12)
    for i in range(items):
        disc = bool(i % 2)
        v = rng.normal(100, 20, (36, 44, 40))
        z0 = int(rng.integers(0, 38))
        cy, cx, radius = int(rng.integers(10, 26)), int(rng.integers(10, 34)), int(rng.integers(4, 9))
        for z in range(z0, z0 + 3):
            plane = v[:, :, z]
            _shape(plane, disc, cy, cx, radius)
        nib.save(nib.Nifti1Image(v.astype(np.float32), np.diag([0.8, 0.8, 2.5, 1.0])),
                 str(root / "img" / f"case{i:03d}.nii.gz"))
        rows.append({"image": f"img/case{i:03d}.nii.gz", "label": "disc" if disc else "square", "group": f"p{i // 2}",
                     "evidence": f"{z0};{z0 + 1};{z0 + 2}", "split": "test" if i >= items - n_test else ""})
    return _write_datalist(root / "volumes.csv", rows)


def _write_datalist(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


#: what ``<out>/_data/<kind>_<items>_seed<s>/`` records about the generator that wrote it
GENERATOR_FILE = "generator.json"


def generator_fingerprint() -> str:
    """12 hex digits of SHA-256 over the source of the functions that generate the studies: changes whenever the
    generated data may (a reused folder or cell from before a change would otherwise be reported silently)."""
    h = hashlib.sha256()
    for fn in (_shape, write_clips, write_volumes, _write_datalist):
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:12]


def prepare_data(out: Path, kind: str, items: int, data_seed: int) -> Path:
    """
    The datalist of ``<out>/_data/<kind>_<items>_seed<data_seed>``: generated there when absent (with
    :data:`GENERATOR_FILE`), reused when its recorded generator is this one, else refused (``SystemExit`` naming the
    folder): data of another generator version must not be reported as this one's.
    """
    data = out / "_data" / f"{kind}_{items}_seed{data_seed}"
    datalist, record = data / f"{kind}.csv", data / GENERATOR_FILE
    expected = {"generator": generator_fingerprint(), "kind": kind, "items": items, "data_seed": data_seed}
    if datalist.is_file():
        try:
            recorded = json.loads(record.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != expected:
            what = ("records no generator (written before fingerprints were kept)" if recorded is None else
                    f"was written by generator {recorded.get('generator')!r}, this one is {expected['generator']!r}"
                    if recorded.get("generator") != expected["generator"]
                    else f"records {recorded}, expected {expected}")
            raise SystemExit(f"data folder '{data}' {what}: its files may differ from what this version of "
                             "own_data.py generates. Remove that folder (and the cells trained on it under "
                             f"'{out / '_work'}') to generate it again, or use another --out.")
        return datalist
    (write_clips if kind == "clips" else write_volumes)(data, items, data_seed)
    write_json_atomic(expected, record)  # last: a folder without it was not finished
    return datalist


def run_cell(kind: str, datalist: Path, variant: str, overrides: list[str], seed: int, out: Path,
             keep_ratio: float) -> dict[str, Any]:
    """
    Train one cell through the bundle CLI (resume by cell: an existing ``result.json`` is returned when it was run
    with the same data, generator (:func:`generator_fingerprint`), overrides and training code
    (``bench_utils.code_hash``), else refused naming what differs: a changed option, generator or code must not
    report an old result under it).
    """
    cell = out / "_work" / kind / f"{variant}_seed{seed}"
    done = cell / "result.json"
    # the training code too (bench_utils.code_hash, as compare_methods): a cell of older code was reused (trial T71a)
    settings = {"datalist": str(datalist), "overrides": " ".join(overrides), "keep_ratio": keep_ratio,
                "generator": generator_fingerprint(), "code_hash": code_hash()}
    if done.is_file():
        old = json.loads(done.read_text())
        recorded = old.get("settings") or {}  # none: written before settings were recorded, nothing to compare with
        diff = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
        if diff:
            raise SystemExit(f"cell {kind}/{variant}/seed {seed} in '{cell}' was run with other settings "
                             f"({', '.join(f'{k}: {a!r} then, {b!r} now' for k, (a, b) in diff.items())}); "
                             "give another --out or --variant name, or delete the cell to run it again.")
        return old
    configs = BUNDLES[kind] / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--datalist", str(datalist), *BUNDLE_ARGS[kind], "--bundle_root", str(cell), "--seed", str(seed),
           "--progress_bar", "false", "--mlflow", "false", *overrides]
    start = time.perf_counter()
    proc = run_child(cmd, capture_output=True, text=True, cwd=REPO)
    log = proc.stdout + proc.stderr
    cell.mkdir(parents=True, exist_ok=True)
    write_text_atomic(log, cell / "train.log")
    card = cell / "models" / "metadata.json"
    if proc.returncode or not card.is_file():
        raise SystemExit(f"cell {kind}/{variant}/seed {seed} failed (exit {proc.returncode}); log: {cell / 'train.log'}")
    # the model card, not the log's last line: what the run measured and kept (best epoch of the key metric)
    card = json.loads(card.read_text())
    metrics, validation = card["eval_metrics"], card["das_model"]["validation"]
    evidence = float(metrics["val_evidence_kept"])
    result = {"kind": kind, "variant": variant, "overrides": " ".join(overrides), "seed": seed,
              "best_val_auc": round(float(metrics["val_auc"]), 4), "val_evidence_kept": round(evidence, 4),
              "collapsed": evidence < keep_ratio / 2, "best_epoch": int(validation["best_epoch"]),
              "epochs": int(validation["epochs"]), "seconds": round(time.perf_counter() - start, 1),
              "settings": settings}
    write_json_atomic(result, done)
    return result


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", nargs="+", choices=sorted(BUNDLES), default=["clips", "volumes"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variant", action="append", default=None, metavar="NAME=OVERRIDES",
                   help="a named list of bundle overrides, e.g. slr1e-4=\"--sampler_lr 0.0001\" (repeatable; "
                        "default: one variant 'default=' without overrides)")
    p.add_argument("--items", type=int, default=None, help="studies per kind (default: clips 40, volumes 60)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated files")
    p.add_argument("--keep-ratio", type=float, default=0.5,
                   help="the bundles' keep_ratio (default 0.5; the collapse threshold is half of it)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/own_data")
    args = p.parse_args(argv)
    args.out = args.out.expanduser().resolve()  # the bundle runs with cwd=REPO: relative paths would point there
    variants = {}
    for text in args.variant or ["default="]:
        name, sep, overrides = text.partition("=")
        if not sep or not name:
            raise SystemExit(f"--variant {text!r}: expected NAME=OVERRIDES, e.g. 'slr=--sampler_lr 0.0001'.")
        variants[name] = shlex.split(overrides) + ["--keep_ratio", str(args.keep_ratio)]
    env = environment(argv)
    rows = []
    for kind in args.kinds:
        items = args.items or {"clips": 40, "volumes": 60}[kind]
        datalist = prepare_data(args.out, kind, items, args.data_seed)
        for seed in args.seeds:
            for name, overrides in variants.items():
                row = run_cell(kind, datalist, name, overrides, seed, args.out, args.keep_ratio)
                print(f"{kind} {name} seed {seed}: best val AUC {row['best_val_auc']:.3f}, evidence kept "
                      f"{row['val_evidence_kept']:.3f}{' (collapsed)' if row['collapsed'] else ''}", flush=True)
                rows.append(row)
    summary = []
    for kind in args.kinds:
        for name in variants:
            cells = [r for r in rows if r["kind"] == kind and r["variant"] == name]
            summary.append({"kind": kind, "variant": name, "cells": len(cells),
                            "auc": f"{statistics.mean(r['best_val_auc'] for r in cells):.3f}",
                            "evidence": f"{statistics.mean(r['val_evidence_kept'] for r in cells):.3f}",
                            "collapsed": f"{sum(r['collapsed'] for r in cells)}/{len(cells)}"})
    write_csv([{**r, "settings": json.dumps(r.get("settings"), sort_keys=True)} for r in rows],
              args.out / "own_data.csv")
    cols = [("kind", "kind"), ("variant", "variant"), ("seed", "seed"), ("best_val_auc", "best val AUC"),
            ("val_evidence_kept", "val evidence kept"), ("collapsed", "collapsed"), ("best_epoch", "best epoch"),
            ("epochs", "epochs"), ("overrides", "overrides")]
    text = "\n".join([
        "# A new user's own small study (benchmarks/own_data.py)", "", environment_markdown(env), "",
        "Validation split only (the bundle's split of the training groups); collapsed: evidence kept at the best "
        f"epoch < keep_ratio / 2 = {args.keep_ratio / 2:g}. Data generator (fingerprint of the generating code, "
        f"recorded in `_data/*/{GENERATOR_FILE}` and every cell): `{generator_fingerprint()}`.", "",
        "## Per variant", "",
        markdown_table(summary, [("kind", "kind"), ("variant", "variant"), ("cells", "cells"),
                                 ("auc", "mean best val AUC"), ("evidence", "mean val evidence kept"),
                                 ("collapsed", "collapsed")]), "", "## Cells", "", markdown_table(rows, cols), ""])
    write_text_atomic(text, args.out / "own_data.md")
    print(text)
    return text


if __name__ == "__main__":
    main()
