"""Paired differences between two variants of a recipe study (``compare_methods.py --tag``), from its run tables.

A recipe study runs the same cells (dataset, method, keep ratio, seed, fold) twice, once per ``--tag``: a candidate
setting and a same-code reference. This prints ``candidate − reference`` of a metric per dataset (and per keep ratio),
paired by cell, with the mean, a two-sided 95 % Student-t interval over the independent units, the units the candidate
won and every difference, as a markdown table (also written as ``paired_<candidate>_vs_<reference>.md`` in the folder).
A unit is a cell where there are no folds, and a fold where there are (POCUS): the cells run on one fold (its seeds and
keep ratios) share its test patients, so their differences are averaged into one, as ``compare_methods.py`` does.

Usage::

    python benchmarks/paired_tags.py benchmarks/results/feature_size --candidate fs14 --reference ref
    python benchmarks/paired_tags.py DIR --candidate X --reference Y --metric auc --by-keep

Options: ``--metric`` (a column of ``<dataset>_runs.csv``; default ``best_val_auc``), ``--by-keep`` (one row per keep
ratio too, besides the row per dataset), ``--reference-folder DIR`` (read the reference's cells from another
``--out`` folder, e.g. the standard grid's, with ``--reference ""`` for its untagged cells; the report lists the
training-code hashes of both sides, so a pairing across code versions shows).

    python benchmarks/paired_tags.py benchmarks/results/temporal_head --candidate gated --reference "" \
        --reference-folder benchmarks/results/standard --by-keep
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import markdown_table, write_text_atomic  # noqa: E402
from compare_methods import count_label, t_interval, unit_means  # noqa: E402


def read_runs(folder: Path) -> list[dict[str, Any]]:
    """Every row of the ``*_runs.csv`` tables in ``folder``."""
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*_runs.csv")):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def cell_key(r: dict[str, Any]) -> tuple:
    """What pairs two runs: dataset, method, keep ratio, seed and fold."""
    return r["dataset"], r["method"], float(r["keep_ratio"]), r["seed"], r.get("fold") or ""


def paired_rows(rows: list[dict[str, Any]], candidate: str, reference: str,
                metric: str = "best_val_auc") -> dict[str, dict[tuple, dict[str, Any]]]:
    """
    The rows that pair, ``{tag: {cell_key: row}}`` for both tags: cells run with both tags that have ``metric``
    (one definition of "paired" for the differences and for the code hashes reported beside them).
    """
    found: dict[str, dict[tuple, dict[str, Any]]] = {candidate: {}, reference: {}}
    for r in rows:
        if r.get("tag") in found and r.get(metric) not in (None, ""):
            found[r["tag"]][cell_key(r)] = r
    keys = set(found[candidate]) & set(found[reference])
    if not keys:
        raise SystemExit(f"no cell was run with both tags {candidate!r} and {reference!r} (tags found: "
                         f"{sorted({r.get('tag') for r in rows})}).")
    return {tag: {k: found[tag][k] for k in sorted(keys, key=str)} for tag in found}


def paired_by_tag(rows: list[dict[str, Any]], candidate: str, reference: str, metric: str = "best_val_auc",
                  by_keep: bool = False) -> list[dict[str, Any]]:
    """``candidate − reference`` per dataset (and keep ratio with ``by_keep``), paired by method, keep, seed and fold."""
    paired = paired_rows(rows, candidate, reference, metric)
    values = {tag: {k: float(r[metric]) for k, r in cells.items()} for tag, cells in paired.items()}
    pairs = list(paired[candidate])
    groups: dict[tuple, list[tuple]] = {}
    for p in pairs:
        groups.setdefault((p[0], "all"), []).append(p)
        if by_keep:
            groups.setdefault((p[0], f"{100 * p[2]:.0f}%"), []).append(p)
    out = []
    for (dataset, keep), cells in sorted(groups.items()):
        diffs = unit_means([(c[4], c, values[candidate][c] - values[reference][c]) for c in cells])
        low, high = t_interval(diffs)
        out.append({"dataset": dataset, "keep": keep, "pairs": count_label(len(diffs), len(cells)),
                    "mean": f"{statistics.mean(diffs):+.3f}",
                    "ci": "n/a" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]",
                    "wins": f"{sum(d > 0 for d in diffs)}/{len(diffs)}",
                    "reference_mean": f"{statistics.mean(values[reference][c] for c in cells):.3f}",
                    "diffs": " ".join(f"{d:+.3f}" for d in diffs)})
    return out


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a compare_methods --out folder with <dataset>_runs.csv tables")
    p.add_argument("--candidate", required=True, help="tag of the setting under study")
    p.add_argument("--reference", required=True, help="tag of the same-code reference")
    p.add_argument("--metric", default="best_val_auc", help="column of the run tables (default best_val_auc)")
    p.add_argument("--by-keep", action="store_true", help="a row per keep ratio too")
    p.add_argument("--reference-folder", type=Path, default=None,
                   help="folder whose run tables hold the reference's cells (default: FOLDER)")
    args = p.parse_args(argv)
    ref_folder = args.reference_folder or args.folder
    runs = [r for r in read_runs(args.folder) if r.get("tag") == args.candidate]
    runs += [r for r in read_runs(ref_folder) if r.get("tag") == args.reference]
    rows = paired_by_tag(runs, args.candidate, args.reference, args.metric, args.by_keep)
    ref_label = args.reference or "untagged"
    # the code hashes of the cells that were paired (a reference folder may hold other cells on other code)
    hashes = {tag: sorted({r.get("code_hash") or "?" for r in cells.values()})
              for tag, cells in paired_rows(runs, args.candidate, args.reference, args.metric).items()}
    cmd = "python benchmarks/paired_tags.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"# {args.metric}: {args.candidate} − {ref_label}, paired by cell", "", f"- command: `{cmd}`", "",
        "Pairs: same dataset, method, keep ratio, seed and fold. Mean over the independent units (a cell; a fold where "
        "there are folds, its cells averaged), two-sided 95 % Student-t interval, units where "
        f"`{args.candidate}` was higher, the reference's mean over the cells, every unit's difference.", "",
        f"Training code of the paired cells (`code_hash` of the run tables): `{args.candidate}` "
        f"{', '.join(hashes[args.candidate])}; `{ref_label}` {', '.join(hashes[args.reference])}"
        + (f" (from `{ref_folder}`)" if args.reference_folder else "") + ".", "",
        markdown_table(rows, [("dataset", "dataset"), ("keep", "keep"), ("pairs", "pairs"), ("mean", "mean"),
                              ("ci", "95 % interval"), ("wins", f"{args.candidate} higher"),
                              ("reference_mean", f"{ref_label} mean"), ("diffs", "per unit")]), ""])
    write_text_atomic(text, args.folder / f"paired_{args.candidate}_vs_{ref_label}.md")
    print(text)
    return text


if __name__ == "__main__":
    main()
