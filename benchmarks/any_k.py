"""Any k at inference from one trained DAS model: test AUC against frames kept, beside models trained at each k.

A DAS model's sampler does not depend on ``k``, so one checkpoint trained at ``--train-keep-ratio`` (default 0.5)
can keep any ``k <= T`` frames at inference. For each dataset this script

1. makes sure the cells it needs exist, by running ``compare_methods.py`` itself (same profiles ``--quick`` /
   ``--full`` / ``--smoke``, same work folder ``<out>/_work/<profile>/<dataset>/<cell>``, same resume by cell): DAS
   and the references (default: uniform at every keep ratio, full at k = T) trained at every keep ratio of
   ``--keep-ratios`` (default 0.1 0.25 0.5 0.75), keeping the checkpoint of the DAS cell at ``--train-keep-ratio``
   (a finished cell of that kind without its ``models/`` folder is trained again);
2. evaluates that one DAS checkpoint on the test split at every keep ratio of the list and at k = T: the bundle's
   ``train.json + evaluate.json`` with ``keep_ratio`` overridden (``k = max(1, round(r·T))``), in-process through
   ``compare_methods.BundleCellRunner.workflow`` as compare_methods evaluates its cells, each evaluation cached as
   ``<cell>/any_k/keep<r>/result.json`` (reused while the checkpoint's SHA-256 and the training code hash match);
3. exports the checkpoint once to ONNX (``monai_das.engines.save_onnx``, ``num_samples`` input) and measures the
   ONNX Runtime batch-1 latency at every k (``OnnxClassifier.forward_with_indices(x, k)``, interleaved rounds after
   warm-up, median), cached as ``<cell>/any_k/latency.json``;
4. writes ``<out>/any_k_<dataset>.csv`` (one row per keep ratio: k, AUC and balanced accuracy of the one model, of
   DAS / uniform / full trained at that k, latency), ``any_k_<dataset>.md`` (the table, command, date, machine,
   settings) and ``any_k_<dataset>.png`` (AUC against the fraction of frames kept, latency on a second axis), and
   prints the table. ``--out`` defaults to ``benchmarks/results/any_k``, which also receives compare_methods' own
   reports of these cells (in ``benchmarks/results`` they would replace those of the main grid).

Usage::

    python benchmarks/any_k.py --quick                                   # VesselMNIST3D 28 and POCUS
    python benchmarks/any_k.py --quick --datasets pocus --folds 0 1 2 3 4
    python benchmarks/any_k.py --smoke --out /tmp/anyk                    # synthetic, seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# OpenMP threads keep the default wait policy here (unlike cost.py's PASSIVE): this script trains, and PASSIVE halves
# the training throughput on a 2-core box (438 vs 231 ms per DAS batch-16 step at 28³, measured 2026-11-30).
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_methods as cm  # noqa: E402
from bench_utils import (  # noqa: E402
    REPO,
    atomic_file,
    environment,
    environment_markdown,
    markdown_table,
    metric_text,
    parse_override,
    positive_int,
    summarize_times,
    time_interleaved,
    write_csv,
    write_json_atomic,
    write_text_atomic,
)

from monai_das.utils.io import file_digest  # noqa: E402

KEEP_RATIOS = (0.1, 0.25, 0.5, 0.75)
TRAIN_KEEP_RATIO = 0.5
DEFAULT_DATASETS = ("vesselmnist3d_28", "pocus")
REFERENCES = ("uniform", "full")
#: latency rounds (repeats, warm-up) per profile unless given on the command line
LATENCY = {"smoke": (3, 1), "quick": (30, 3), "standard": (30, 3), "full": (50, 5)}
METRICS = ("auc", "balanced_accuracy")


def ratio_list(keep_ratios: Sequence[float]) -> list[float]:
    """The keep ratios of the curve, ascending, with 1.0 (k = T) appended."""
    return sorted({float(r) for r in keep_ratios} | {1.0})


def eval_dir(cell_dir: Path, ratio: float) -> Path:
    return cell_dir / "any_k" / f"keep{ratio:g}"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def cached(path: Path, expect: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON at ``path`` when it exists and agrees with every ``expect`` entry (a value of ``None`` is not
    compared), else ``None``."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if any(v is not None and data.get(k) != v for k, v in expect.items()):
        return None
    return data


def evaluate_at(train_result: dict[str, Any], cell_dir: Path, ratio: float, code: str | None,
                log: Callable[[str], None], provenance: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """
    Test metrics of the checkpoint ``<cell_dir>/models/model.pt`` (trained as ``train_result`` says) run at
    ``keep_ratio=ratio``: compare_methods' evaluation (``train.json + evaluate.json``) with ``keep_ratio``
    overridden, in ``<cell_dir>/any_k/keep<ratio>/`` (its own ``eval/k<k>/metrics.json``, ``eval/metrics.json`` at the
    trained k; the checkpoint is linked there
    for the run beside a copy of its card, which the evaluation checks and, at the trained k only, adds its metrics
    to; the training card in ``models/`` is left as it is). Returns ``(result, ran)``;
    a cached result of the same checkpoint and code is returned without running.
    """
    ckpt = cell_dir / "models" / "model.pt"
    sha = file_digest(ckpt)
    d = eval_dir(cell_dir, ratio)
    (d / "error.txt").unlink(missing_ok=True)  # an earlier failure's, not this run's
    hit = cached(d / "result.json", {"checkpoint_sha256": sha, "code_hash": code, "keep_ratio": ratio})
    if hit is not None:
        return hit, False
    from monai_das.networks import num_kept

    over = dict(train_result["overrides"])
    ds = train_result["dataset"]
    runner = cm.BundleCellRunner({ds: over}, {}, eval_split=train_result.get("eval_split", "test"), log=log)
    cell = cm.Cell(ds, "das", ratio, train_result["seed"], train_result.get("fold"), train_result.get("tag", ""))
    shutil.rmtree(d / "eval", ignore_errors=True)
    _link_or_copy(ckpt, d / "models" / "model.pt")
    if (cell_dir / "models" / "metadata.json").is_file():
        shutil.copy2(cell_dir / "models" / "metadata.json", d / "models" / "metadata.json")
    t = int(train_result["frames_total"])
    t0 = time.perf_counter()
    try:  # the evaluation writes to eval/ at the trained k, eval/k<k>/ at another (any k from one model)
        report = json.loads((runner.evaluate(cell, d) / "metrics.json").read_text())
    finally:
        (d / "models" / "model.pt").unlink(missing_ok=True)
    result = {
        "dataset": ds, "seed": train_result["seed"], "fold": train_result.get("fold"),
        "tag": train_result.get("tag", ""), "train_keep_ratio": float(train_result["keep_ratio"]),
        "train_k": int(train_result["frames_kept"]), "keep_ratio": ratio, "k": num_kept(t, ratio), "frames_total": t,
        "eval_split": report.get("split", "test"), "eval_samples": report.get("num_samples"),
        **{m: report["metrics"].get(m) for m in ("auc", "balanced_accuracy", "accuracy", "loss")},
        "eval_s": time.perf_counter() - t0, "checkpoint": str(ckpt), "checkpoint_sha256": sha,
        "code_hash": runner.code, "overrides": {**runner.cell_overrides(cell)}, **provenance,
        "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    write_json_atomic(result, d / "result.json")
    return result, True


def measure_latency(cell_dir: Path, configs: Path, ks: Sequence[int], threads: int, repeats: int, warmup: int,
                    log: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """
    ONNX Runtime batch-1 latency (ms) of the checkpoint in ``<cell_dir>/models`` at every ``k``: exported once with
    :func:`monai_das.engines.save_onnx` (``num_samples`` input, model card embedded) to ``<cell_dir>/any_k/
    model.onnx``, run by :class:`monai_das.networks.OnnxClassifier` (``threads`` intra-op threads) in ``repeats``
    interleaved rounds over the ``k`` after ``warmup`` rounds (``bench_utils.time_interleaved``: a load change on a
    shared machine hits every ``k`` alike). Cached in ``<cell_dir>/any_k/latency.json``; returns ``(latency, ran)``.
    """
    from monai_das.engines import read_model_card, save_onnx
    from monai_das.engines.export import build_network
    from monai_das.networks import OnnxClassifier

    ckpt = cell_dir / "models" / "model.pt"
    sha = file_digest(ckpt)
    path = cell_dir / "any_k" / "latency.json"
    ks = sorted({int(k) for k in ks})
    hit = cached(path, {"checkpoint_sha256": sha, "threads": threads, "repeats": repeats, "warmup": warmup})
    if hit is not None and all(str(k) in hit["ms"] for k in ks):
        return hit, False
    card = read_model_card(cell_dir / "models" / "metadata.json")
    shape = [int(s) for s in card["das_model"]["image_shape"]]
    onnx_path = cell_dir / "any_k" / "model.onnx"
    t0 = time.perf_counter()
    if cached(cell_dir / "any_k" / "model.onnx.json", {"checkpoint_sha256": sha}) is None or not onnx_path.is_file():
        log(f"    exporting {ckpt} to ONNX ...")
        net = build_network(configs / "inference.json", ckpt, card, bundle_root=cell_dir)
        save_onnx(net, onnx_path, shape, metadata=card, check=True)
        write_json_atomic({"checkpoint_sha256": sha, "item_shape": shape}, cell_dir / "any_k" / "model.onnx.json")
        del net
    export_s = time.perf_counter() - t0
    runner = OnnxClassifier(onnx_path, num_threads=threads)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    for k in ks:  # the graph keeps exactly k frames
        if runner.forward_with_indices(x, k)[1].shape != (1, k):
            raise RuntimeError(f"'{onnx_path}' did not keep k={k} frames.")
    times = time_interleaved({str(k): (lambda k=k: runner.forward_with_indices(x, k)) for k in ks}, repeats, warmup)
    ms = {}
    for k in ks:
        s = summarize_times(times[str(k)])
        ms[str(k)] = {"median": 1e3 * s["median"], "iqr": 1e3 * s["iqr"], "min": 1e3 * s["min"], "n": s["n"]}
    import onnxruntime

    result = {"checkpoint_sha256": sha, "onnx": str(onnx_path), "ort_version": onnxruntime.__version__,
              "item_shape": shape, "batch": 1, "threads": threads,
              "repeats": repeats, "warmup": warmup, "export_s": export_s, "ms": ms,
              "load_average": [round(v, 2) for v in os.getloadavg()],
              "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    write_json_atomic(result, path)
    return result, True


def _mean_std(values: Sequence[Any]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def curve_rows(evals: Sequence[dict], trained: Sequence[dict], latency: dict[str, Any] | None,
               ratios: Sequence[float], references: Sequence[str], tag: str = "") -> list[dict[str, Any]]:
    """
    One row per keep ratio: mean/std over seeds × folds of the one model's test metrics at that ratio
    (``one_model_*``), of compare_methods' rows for DAS and each reference trained at that ratio
    (``<method>_trained_*``; ``full`` only at 1.0), and the ONNX Runtime latency of the one model at that k.
    """
    agg = {(r["method"], float(r["keep_ratio"])): r for r in cm.aggregate(trained)}
    suffix = f"[{tag}]" if tag else ""
    rows = []
    for ratio in ratios:
        es = [e for e in evals if float(e["keep_ratio"]) == ratio]
        if not es:
            continue
        row: dict[str, Any] = {"keep_ratio": ratio, "k": es[0]["k"], "frames_total": es[0]["frames_total"],
                               "frames_kept_pct": 100.0 * es[0]["k"] / es[0]["frames_total"]}
        for m in METRICS:
            row[f"one_model_{m}"], row[f"one_model_{m}_std"], row["one_model_runs"] = _mean_std([e[m] for e in es])
            if row["one_model_runs"] < 2:  # a standard deviation over one run is not 0: left empty
                row[f"one_model_{m}_std"] = ""
        for method in ("das", *references):
            ref = agg.get((method + suffix, 1.0 if method == "full" else ratio))
            if method == "full" and ratio != 1.0:
                ref = None
            for m in METRICS:
                row[f"{method}_trained_{m}"] = ref[f"{m}_mean"] if ref else ""
                # a standard deviation over one run (one defined value) is not 0: left empty
                row[f"{method}_trained_{m}_std"] = ref[f"{m}_std"] if ref and ref.get(f"{m}_n", ref["runs"]) > 1 \
                    else ""
            row[f"{method}_trained_runs"] = ref["runs"] if ref else 0
        lat = (latency or {}).get("ms", {}).get(str(row["k"]))
        row["latency_ms_median"] = lat["median"] if lat else ""
        row["latency_ms_iqr"] = lat["iqr"] if lat else ""
        row["latency_ms_min"] = lat["min"] if lat else ""
        row["train_keep_ratio"] = es[0]["train_keep_ratio"]
        row["train_k"] = es[0]["train_k"]
        rows.append(row)
    return rows


#: cell settings that may differ between a reference cell and the one model's (what the cells are, where the data is)
_CELL_KEYS = ("method", "keep_ratio", "seed", "fold", "data_dir")


def check_same_settings(references: Sequence[dict], own: Sequence[dict]) -> None:
    """
    Refuse reference cells (``--references-from``) trained with other settings than the one model's cells (e.g.
    another ``--max-epochs`` or ``--override``): the comparison would be of recipes, not of k. Compared: each
    cell's recorded ``overrides`` except :data:`_CELL_KEYS`.
    """
    def settings(r: dict) -> dict:
        return {k: v for k, v in (r.get("overrides") or {}).items() if k not in _CELL_KEYS}

    if not own:
        return
    mine = settings(own[0])
    for r in references:
        theirs = settings(r)
        if theirs != mine:
            keys = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            diff = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in keys)
            raise ValueError(f"--references-from: the cell {r['dataset']}/{r['method']} keep {r['keep_ratio']} seed "
                             f"{r['seed']} fold {r.get('fold')} was trained with other settings than the one model "
                             f"({diff}); use the same --max-epochs/--patience/--override, or train the references "
                             "here (without --references-from).")


def paired_rows(evals: Sequence[dict], trained: Sequence[dict], references: Sequence[str],
                metric: str = "auc") -> list[dict[str, Any]]:
    """
    ``one model − <method> trained at k`` of ``metric`` at each keep ratio, paired by seed and fold (the same data split
    and initial seed; the seeds of a POCUS fold averaged into one unit), with a 95 % interval:
    :func:`compare_methods.paired_differences` with the one model's evaluations as the reference method. ``full`` is
    paired at every ratio (it keeps every frame); a ratio nothing was trained at has no row. No row pairs the one model
    with DAS trained at the one model's own training ratio: that is the same checkpoint (or, with
    ``--references-from``, a rerun of the same cell), a difference of zero by construction, not a comparison, and it
    would count among the intervals of :func:`compare_methods.chance_note`.
    """
    one = [{"dataset": e["dataset"], "method": "one_model", "label": "one_model", "keep_ratio": e["keep_ratio"],
            "seed": e["seed"], "fold": e.get("fold"), metric: e.get(metric), "code_hash": e.get("code_hash")}
           for e in evals]
    others = [dict(r, label=r["method"]) for r in trained]  # the tag, if any, is the same for every cell here
    rows = cm.paired_differences(one + others, reference="one_model", against=("das", *references), metric=metric)
    own = {(e["dataset"], float(e["train_keep_ratio"])) for e in evals if e.get("train_keep_ratio") is not None}
    rows = [r for r in rows if not (r["baseline"] == "das" and (r["dataset"], float(r["keep_ratio"])) in own)]
    for r in rows:
        r["comparison"] = f"one model − {r['baseline']} " + ("(all frames)" if r["baseline"] == "full"
                                                              else "trained at k")
    return rows


def _fmt(v: Any, std: Any = None, runs: int = 1, pct: bool = False) -> str:
    if v == "" or v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
    return f(v) + (f" ± {f(std)}" if runs > 1 and std not in ("", None) else "")


def table_markdown(rows: Sequence[dict[str, Any]], references: Sequence[str]) -> str:
    if not rows:
        return "(no rows)"
    train_k = rows[0]["train_k"]
    cols = [("kept", "kept"), ("k", "k / T"), ("one_auc", f"one model (trained at k={train_k}): AUC"),
            ("one_bacc", "bal. acc.")]
    for method in ("das", *references):
        cols += [(f"{method}_auc", f"{method} trained at k: AUC"), (f"{method}_bacc", "bal. acc.")]
    cols += [("lat", "ONNX Runtime batch 1 (ms, median ± IQR)")]
    lines = []
    for r in rows:
        line = {"kept": f"{100 * r['keep_ratio']:g}%", "k": f"{r['k']} / {r['frames_total']}",
                "one_auc": _fmt(r["one_model_auc"], r["one_model_auc_std"], r["one_model_runs"]),
                "one_bacc": _fmt(r["one_model_balanced_accuracy"], r["one_model_balanced_accuracy_std"],
                                 r["one_model_runs"], pct=True),
                "lat": "—" if r["latency_ms_median"] == "" else
                f"{r['latency_ms_median']:.2f} ± {r['latency_ms_iqr']:.2f}"}
        for method in ("das", *references):
            n = r[f"{method}_trained_runs"]
            line[f"{method}_auc"] = _fmt(r[f"{method}_trained_auc"], r[f"{method}_trained_auc_std"], n)
            line[f"{method}_bacc"] = _fmt(r[f"{method}_trained_balanced_accuracy"],
                                          r[f"{method}_trained_balanced_accuracy_std"], n, pct=True)
        lines.append(line)
    return markdown_table(lines, cols)


def plot_curve(rows: Sequence[dict[str, Any]], references: Sequence[str], title: str, path: Path) -> str:
    """Test AUC against frames kept (% of T): the one model as a curve, models trained at each k as markers, and the
    one model's ONNX Runtime batch-1 latency on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str, rs: Sequence[dict]) -> tuple[list, list, list]:
        rs = [r for r in rs if r[key] != "" and not math.isnan(float(r[key]))]
        return ([r["frames_kept_pct"] for r in rs], [float(r[key]) for r in rs],
                [float(r[f"{key}_std"] or 0.0) for r in rs])

    fig, ax = plt.subplots(figsize=(6.8, 4.6), dpi=120)
    train_k = rows[0]["train_k"]
    x, y, e = series("one_model_auc", rows)
    ax.errorbar(x, y, yerr=e, marker="o", lw=2, capsize=3, color="C0",
                label=f"one DAS model trained at k={train_k}, run at each k")
    styles = {"das": ("s", "C1"), "uniform": ("^", "C2"), "random": ("v", "C4"), "dps": ("D", "C5"),
              "adps": ("P", "C6")}
    for method in ("das", *references):
        x, y, e = series(f"{method}_trained_auc", rows)
        if not x:
            continue
        if method == "full":
            ax.axhline(y[0], color="k", ls="--", lw=1, alpha=0.6)
            ax.errorbar(x, y, yerr=e, fmt="*", ms=10, color="k", capsize=3, label="full (all frames) trained")
        else:
            marker, color = styles.get(method, ("x", "C7"))
            ax.errorbar(x, y, yerr=e, fmt=marker, ms=8, mfc="none", mew=1.5, color=color, capsize=3, ls=":",
                        label=f"{method} trained at each k")
    ax.axvline(100.0 * train_k / rows[0]["frames_total"], color="C0", lw=0.8, ls=":", alpha=0.7)
    ax.set_xlabel("frames kept at inference (% of T)")
    ax.set_ylabel(f"{rows[0].get('eval_split', 'test')} AUC (mean ± std)")
    ax.set_xlim(0, 105)
    ax.grid(alpha=0.3)
    lat = [(r["frames_kept_pct"], float(r["latency_ms_median"])) for r in rows if r["latency_ms_median"] != ""]
    handles, labels = ax.get_legend_handles_labels()
    if lat:
        ax2 = ax.twinx()
        line, = ax2.plot([p for p, _ in lat], [v for _, v in lat], color="0.4", ls="--", marker="x",
                         label="one model: ONNX Runtime batch-1 latency")
        for p, v in lat:
            ax2.annotate(f"{v:.1f} ms", (p, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7,
                         color="0.3")
        ax2.set_ylabel("latency, batch 1 (ms, median)", color="0.3")
        ax2.set_ylim(0, 1.15 * max(v for _, v in lat))
        handles.append(line)
        labels.append(line.get_label())
    ax.legend(handles, labels, fontsize=7, loc="best")
    ax.set_title("\n".join(textwrap.fill(line, 80) for line in title.splitlines()), fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return str(path)


def write_outputs(spec: cm.DatasetSpec, rows: Sequence[dict], evals: Sequence[dict], trained: Sequence[dict],
                  latency: dict | None, references: Sequence[str], out: Path, header: dict) -> dict[str, str]:
    """``any_k_<dataset>.csv``, ``any_k_<dataset>_paired.csv``, ``.md`` and ``.png``."""
    key = spec.key
    csv_rows = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    paths = {"csv": write_csv(csv_rows, out / f"any_k_{key}.csv")}
    paired = paired_rows(evals, trained, [m for m in references if m != "das"])
    if paired:
        paths["paired_csv"] = write_csv([{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
                                         for r in paired], out / f"any_k_{key}_paired.csv")
    train_k, t = rows[0]["train_k"], rows[0]["frames_total"]
    paths["png"] = plot_curve(rows, references, f"{spec.title}\none model at any k vs models trained at each k, "
                              f"{header['mode']} mode", out / f"any_k_{key}.png")
    seeds = sorted({e["seed"] for e in evals})
    folds = sorted({e["fold"] for e in evals if e.get("fold") is not None})
    lat_text = ("not measured (--no-latency)" if latency is None else
                f"ONNX Runtime {latency.get('ort_version', '')} on the CPU, {latency['threads']} intra-op thread(s), "
                f"batch 1 (input {latency['item_shape']}), `OnnxClassifier(model.onnx).forward_with_indices(x, k)`; "
                f"{latency['repeats']} interleaved rounds over every k after {latency['warmup']} warm-up round(s), "
                f"median and interquartile range; load average at the end {latency['load_average']}; ONNX file "
                f"exported from the one checkpoint (seed {evals[0]['seed']}"
                + (f", fold {evals[0]['fold']}" if evals[0].get("fold") is not None else "")
                + ") with `monai_das.engines.save_onnx` (checked against the eager network)")
    lines = [
        f"# {spec.title}: one DAS model at any k", "",
        f"Mode: **{header['mode']}** — {header['description']}.", "",
        environment_markdown(header["environment"]), "",
        f"One DAS checkpoint per seed{' × fold' if folds else ''}, trained at keep ratio "
        f"{rows[0]['train_keep_ratio']:g} (k = {train_k} of T = {t}), evaluated on the "
        f"{rows[0].get('eval_split', 'test')} split at every k below (the bundle's evaluate config with `keep_ratio` "
        f"overridden; k = max(1, round(r·T))). Beside it: DAS and {', '.join(references)} trained at each k "
        + ("(compare_methods cells of the same work folder; " if not header.get("references_from") else
           f"(the finished compare_methods cells of `{header['references_from']}`, same seeds and folds; ")
        + "`full` keeps every frame, at k = T). Mean ± std over "
        f"seeds {seeds}" + (f" × folds {folds}" if folds else "") + ". "
        + ("At the training k both DAS columns are the same checkpoint and evaluation." if not
           header.get("references_from") else "At the training k the two DAS columns are separate runs of the same "
           "cell (the one model was trained again here to keep its checkpoint): equal where training is "
           "reproducible and the code did not change."), "",
        f"Latency: {lat_text}.", "",
        f"Settings: {header['settings']}", "",
        "Training code (hash): " + ", ".join(f"`{h}`" for h in sorted({str(r.get('code_hash')) for r in
                                                                         [*evals, *trained]})), "",
        f"![AUC against frames kept](any_k_{key}.png)", "",
        table_markdown(rows, references), "",
        *(["### Paired differences (test AUC, per seed / fold)", "",
           "The one model at each k against each model trained at that k (and `full`), paired by seed and fold "
           "(the seeds of a POCUS fold averaged into one unit), mean and 95 % Student-t interval. Not against DAS "
           "trained at the one model's own k: that is the same model (or a rerun of its cell).", "",
           cm.paired_table(paired, reference="one model"), "", cm.chance_note(paired), ""] if paired else []),
        cm.cell_provenance(trained), "",
        f"Per-k evaluations: `{header['work_dir']}/{key}/<das cell>/any_k/keep<r>/result.json` (and its "
        "`eval/k<k>/metrics.json`, `eval/metrics.json` at the trained k); latency: `any_k/latency.json`.",
    ]
    paths["md"] = write_text_atomic("\n".join(lines) + "\n", out / f"any_k_{key}.md")
    return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="profile", const="quick",
                      help="compare_methods' quick profile (default; 2 CPU cores)")
    mode.add_argument("--standard", action="store_const", dest="profile", const="standard",
                      help="compare_methods' standard profile (converged, early stopping; 2 CPU cores)")
    mode.add_argument("--full", action="store_const", dest="profile", const="full",
                      help="compare_methods' full profile (paper settings, for a GPU)")
    mode.add_argument("--smoke", action="store_const", dest="profile", const="smoke",
                      help="synthetic data, tiny, 1 epoch (CI)")
    p.set_defaults(profile="quick")
    p.add_argument("--data-root", default=os.environ.get("MONAI_DAS_DATA", str(REPO.parent / "shared" / "data")),
                   help="as compare_methods (default $MONAI_DAS_DATA or <repo>/../shared/data)")
    p.add_argument("--out", default=None,
                   help="results folder (default benchmarks/results/any_k; cells in <out>/_work/<profile>)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help=f"dataset keys (default {' '.join(DEFAULT_DATASETS)}; smoke: the synthetic set)")
    p.add_argument("--keep-ratios", nargs="+", type=float, default=list(KEEP_RATIOS),
                   help="keep ratios of the curve and of the trained models (k = T is always added)")
    p.add_argument("--train-keep-ratio", type=float, default=TRAIN_KEEP_RATIO,
                   help="keep ratio the one DAS model is trained at")
    p.add_argument("--references", nargs="*", default=list(REFERENCES),
                   choices=[m for m in cm.METHODS if m != "das"],
                   help="methods trained at each keep ratio beside DAS (full: once, at k = T)")
    p.add_argument("--references-from", default=None, metavar="RESULTS_DIR",
                   help="read DAS and the references trained at each k from the finished cells of "
                        "RESULTS_DIR/_work/<profile> (e.g. benchmarks/results/standard) instead of training them "
                        "here: only the one DAS model is trained (a cell of the same method, k, seed and fold in "
                        "this --out's work folder, e.g. run again on the current code, is used instead)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="override the profile's seeds")
    p.add_argument("--folds", nargs="+", type=int, default=None, help="POCUS folds (override the profile's)")
    p.add_argument("--max-epochs", type=positive_int, default=None, help="override the profile's epoch limit")
    p.add_argument("--patience", type=positive_int, default=None, help="early-stopping patience (epochs)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch and ONNX Runtime CPU threads")
    p.add_argument("--override", action="append", type=parse_override, default=[], metavar="KEY=JSON",
                   help="bundle config override for every cell (repeatable; as compare_methods)")
    p.add_argument("--tag", default="", help="name of the variant (with --override; as compare_methods)")
    p.add_argument("--latency-repeats", type=int, default=None, help="timed rounds (default: 30 quick, 50 full)")
    p.add_argument("--latency-warmup", type=int, default=None, help="untimed rounds first (default: 3 quick)")
    p.add_argument("--no-latency", action="store_true", help="skip the ONNX export and latency")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep models/ of every cell (default: only of the DAS cells at --train-keep-ratio)")
    p.add_argument("--allow-code-change", action="store_true", help="as compare_methods")
    p.add_argument("--dry-run", action="store_true", help="list the cells and evaluations and exit")
    args = p.parse_args(argv)

    ratios = ratio_list(args.keep_ratios)
    if not all(0.0 < r <= 1.0 for r in ratios) or not 0.0 < args.train_keep_ratio < 1.0:
        raise ValueError(f"keep ratios must lie in (0, 1] and --train-keep-ratio in (0, 1), got {args.keep_ratios}, "
                         f"{args.train_keep_ratio}.")
    prof = cm.PROFILES[args.profile]
    seeds = args.seeds if args.seeds is not None else prof["seeds"]
    folds = args.folds if args.folds is not None else prof["folds"]
    # its own folder by default: compare_methods rewrites <out>/<dataset>.md and accuracy_summary.md from the cells
    # of <out>/_work, which would replace the reports of the main grid in benchmarks/results
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / "any_k"
    work_dir = out / "_work" / args.profile
    datasets = args.datasets or (None if args.profile == "smoke" else list(DEFAULT_DATASETS))
    all_specs = cm.discover_datasets(args.data_root, args.profile)
    specs = ([s for s in all_specs if s.key in datasets] if datasets else [s for s in all_specs if s.default])
    missing = set(datasets or ()) - {s.key for s in specs}
    if missing or not specs:
        raise FileNotFoundError(f"dataset(s) {sorted(missing)} not found under '{args.data_root}'; available: "
                                f"{[s.key for s in all_specs]}.")
    train_ratios = sorted({r for r in ratios if r < 1.0} | {args.train_keep_ratio})
    methods = ["das", *[m for m in args.references if m != "das"]]
    ref_work = Path(args.references_from) / "_work" / args.profile if args.references_from else work_dir
    if args.references_from and not ref_work.is_dir():
        raise FileNotFoundError(f"--references-from '{args.references_from}': no cells of the {args.profile} "
                                f"profile there (expected the folder '{ref_work}').")
    # cells trained here: every method at every ratio, or only the one model when the others come from elsewhere
    run_methods, run_ratios = (["das"], [args.train_keep_ratio]) if args.references_from else (methods, train_ratios)
    own_seeds = args.seeds is None  # a dataset's own seeds (profile entry) unless --seeds is given, as compare_methods
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{cm._hms(time.perf_counter() - start)}] {msg}", flush=True)

    cm_argv = [f"--{args.profile}", "--data-root", args.data_root, "--out", str(out),
               "--datasets", *[s.key for s in specs], "--methods", *run_methods,
               "--keep-ratios", *[f"{r:g}" for r in run_ratios], *([] if own_seeds else ["--seeds", *map(str, seeds)]),
               "--folds", *map(str, folds), "--threads", str(args.threads), "--keep-checkpoints",
               *(["--max-epochs", str(args.max_epochs)] if args.max_epochs else []),
               *(["--patience", str(args.patience)] if args.patience else []),
               *[a for k, v in args.override for a in ("--override", f"{k}={json.dumps(v)}")],
               *(["--tag", args.tag] if args.tag else []),
               *(["--allow-code-change"] if args.allow_code_change else []), *(["--dry-run"] if args.dry_run else [])]
    train_cells = cm.build_cells(specs, ["das"], [args.train_keep_ratio], seeds, folds, args.tag, own_seeds=own_seeds,
                                 own_ratios=False)
    grid = cm.build_cells(specs, run_methods, run_ratios, seeds, folds, args.tag, own_seeds=own_seeds,
                          own_ratios=False)

    def cdir(c: cm.Cell) -> Path:
        return work_dir / c.dataset / c.name

    log(f"any_k: {args.profile.upper()} mode; datasets {[s.key for s in specs]}; one DAS model trained at keep "
        f"{args.train_keep_ratio:g}, run at keep {ratios}; references trained at each keep ratio: {methods}"
        + (f" (finished cells read from {ref_work}, not trained here)" if args.references_from else ""))
    # 1. the cells, through compare_methods (it resumes by cell); the one model's cell must keep its checkpoint
    retrain = [c for c in train_cells if (cdir(c) / "result.json").is_file()
               and not (cdir(c) / "models" / "model.pt").is_file()]
    # checkpoints of finished cells that were kept on purpose (compare_methods --keep-checkpoints) stay
    had_models = {c.name + c.dataset for c in grid if (cdir(c) / "models").exists()
                  and (cdir(c) / "result.json").is_file()}
    if args.dry_run:
        cm.main(cm_argv)
        for c in train_cells:
            for r in ratios:
                state = "done" if (eval_dir(cdir(c), r) / "result.json").is_file() else "todo"
                print(f"  {state}  {c.dataset}/{c.name}/any_k/keep{r:g}")
        return {"cells": [c.name for c in grid], "retrain": [c.name for c in retrain]}
    # the grid's lock before anything here moves a result: another grid in this work folder refuses this run at once
    # (compare_methods' own call holds it again; its refusal below would read as "some cells failed")
    cm.hold_grid(work_dir)
    for c in retrain:
        log(f"{c.dataset}/{c.name} finished earlier without its checkpoint (models/ removed): training it again "
            f"(previous result kept as result.without_checkpoint.json)")
        (cdir(c) / "result.json").replace(cdir(c) / "result.without_checkpoint.json")
    failed_cells = False
    saved_argv0 = sys.argv[0]
    try:
        # the cells record `python benchmarks/compare_methods.py <args>`: the command that reproduces them
        rel = os.path.relpath(cm.__file__)
        sys.argv[0] = cm.__file__ if rel.startswith("..") else rel
        cm_out = cm.main(cm_argv)
        counts = cm_out["counts"]
    except SystemExit as e:  # some cells failed: go on with what exists
        log(f"compare_methods: {e}")
        counts, failed_cells = {}, True
    finally:
        sys.argv[0] = saved_argv0
        for c in retrain:
            if not (cdir(c) / "result.json").is_file() and (cdir(c) / "result.without_checkpoint.json").is_file():
                (cdir(c) / "result.without_checkpoint.json").replace(cdir(c) / "result.json")
    if not args.keep_checkpoints:
        keep = {c.name + c.dataset for c in train_cells}
        for c in grid:
            if (c.name + c.dataset) not in keep | had_models and (cdir(c) / "result.json").is_file():
                shutil.rmtree(cdir(c) / "models", ignore_errors=True)

    # 2.-4. the one model at every k, latency, reports
    env = environment(argv if argv is None else [sys.argv[0], *argv])
    env["torch_threads"] = torch.get_num_threads()
    provenance = {"command": env["command"], "git_commit": env["git_commit"]}
    code = None if args.allow_code_change else cm.code_hash()
    repeats, warmup = LATENCY[args.profile]
    repeats = args.latency_repeats or repeats
    warmup = args.latency_warmup if args.latency_warmup is not None else warmup
    settings = (f"compare_methods {args.profile} profile ({prof['description']}); seeds {seeds}"
                + (f", POCUS folds {folds}" if any(s.cross_validated for s in specs) else "")
                + f"; DAS trained at keep {args.train_keep_ratio:g} evaluated at keep {ratios}; references "
                f"{args.references} trained at keep {train_ratios}"
                + (f" (the finished cells of `{args.references_from}` at those ratios)" if args.references_from else "")
                + (f"; overrides {json.dumps(dict(args.override))}" if args.override else "")
                + (f"; epochs {args.max_epochs}" if args.max_epochs else "")
                + (f"; patience {args.patience}" if args.patience else "")
                + (f"; tag `{args.tag}`" if args.tag else ""))
    header = {"mode": args.profile, "description": prof["description"], "environment": env, "settings": settings,
              "work_dir": str(work_dir.relative_to(out)) if work_dir.is_relative_to(out) else str(work_dir),
              "references_from": str(ref_work) if args.references_from else None}
    evals_counts = {"evaluations": 0, "ran": 0, "skipped": 0, "failed": 0, "latency_ran": 0, "latency_skipped": 0}
    outputs: dict[str, dict[str, str]] = {}
    tables: dict[str, list[dict]] = {}
    for spec in specs:
        configs = cm.VIDEO_CONFIGS if spec.overrides.get("dataset") == "pocus" else cm.CONFIGS
        evals: list[dict] = []
        latency = None
        for c in (c for c in train_cells if c.dataset == spec.key):
            d = cdir(c)
            if not (d / "result.json").is_file() or not (d / "models" / "model.pt").is_file():
                log(f"{spec.key}/{c.name}: no finished cell with a checkpoint; skipped (see error.txt there)")
                evals_counts["failed"] += len(ratios)
                continue
            train_result = json.loads((d / "result.json").read_text())
            for r in ratios:
                evals_counts["evaluations"] += 1
                try:
                    res, ran = evaluate_at(train_result, d, r, code, log, provenance)
                except Exception as e:
                    evals_counts["failed"] += 1
                    error = eval_dir(d, r) / "error.txt"
                    write_text_atomic(traceback.format_exc(), error)
                    log(f"{spec.key}/{c.name} at keep {r:g} FAILED: {type(e).__name__}: {e} (traceback in {error})")
                    continue
                evals_counts["ran" if ran else "skipped"] += 1
                evals.append(res)
                log(f"{spec.key}/{c.name} at keep {r:g} (k={res['k']}/{res['frames_total']}): {res['eval_split']} "
                    f"AUC {metric_text(res['auc'])}, bal. acc {metric_text(res['balanced_accuracy'])}"
                    + (f" ({res['eval_s']:.0f} s)" if ran else " (cached)"))
            if latency is None and not args.no_latency:
                ks = sorted({e["k"] for e in evals if e["seed"] == c.seed and e.get("fold") == c.fold})
                latency, ran = measure_latency(d, configs, ks, args.threads, repeats, warmup, log)
                evals_counts["latency_ran" if ran else "latency_skipped"] += 1
                log(f"{spec.key}/{c.name}: ONNX Runtime batch-1 latency (ms, median) "
                    + ", ".join(f"k={k}: {v['median']:.2f}" for k, v in latency["ms"].items())
                    + ("" if ran else " (cached)"))
        if not evals:
            continue
        keep_units = {(c.seed, c.fold) for c in train_cells if c.dataset == spec.key}

        def wanted(results: Sequence[dict]) -> list[dict]:
            return [r for r in results if r["method"] in methods and (r["seed"], r.get("fold")) in keep_units
                    and r.get("tag", "") == args.tag]

        trained = wanted(cm.load_results(work_dir, [spec.key]))
        if args.references_from:
            # a cell run in this work folder too (e.g. again on the current code) replaces that one, but not the one
            # model's own cells: at the training k the reference is the other folder's DAS cell, a separate run
            trained = [r for r in trained if not (r["method"] == "das"
                                                  and float(r["keep_ratio"]) == args.train_keep_ratio)]
            here = {(r["method"], float(r["keep_ratio"]), r["seed"], r.get("fold")) for r in trained}
            refs = [r for r in wanted(cm.load_results(ref_work, [spec.key]))
                    if (r["method"], float(r["keep_ratio"]), r["seed"], r.get("fold")) not in here]
            check_same_settings(refs, [json.loads((cdir(c) / "result.json").read_text()) for c in train_cells
                                       if c.dataset == spec.key and (cdir(c) / "result.json").is_file()])
            trained += refs
        rows = curve_rows(evals, trained, latency, ratios, [m for m in args.references if m != "das"], args.tag)
        for row in rows:
            row["eval_split"] = evals[0]["eval_split"]
        env["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        outputs[spec.key] = write_outputs(spec, rows, evals, trained, latency, args.references, out, header)
        tables[spec.key] = rows
    for key, rows in tables.items():
        print(f"\n## {key}: one DAS model at any k ({out / f'any_k_{key}.md'})\n")
        print(table_markdown(rows, [m for m in args.references if m != "das"]))
    log(f"done: cells {counts or 'see above'}; evaluations {evals_counts}; outputs in {out}")
    if failed_cells or evals_counts["failed"]:
        raise SystemExit("some cells or evaluations failed; see the log above and error.txt in the cell folders.")
    return {"cells": counts, "evaluations": evals_counts, "outputs": outputs, "rows": tables}


if __name__ == "__main__":
    main()
