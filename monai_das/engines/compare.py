"""
Is one model better than another on your test list? A paired comparison of two evaluations of the same items.

``evaluate.json`` writes ``eval/test_predictions.csv`` (one row per test study: ``id``, ``label``, ``prob_<class>``,
...). Given those of two models evaluated on the same test list (e.g. DAS and ``--method uniform``, each trained in
its own ``bundle_root``), this prints each model's macro ROC AUC and balanced accuracy, their difference, and a 95 %
interval of the difference from a paired bootstrap over the test items
(:func:`monai_das.handlers.metrics.paired_bootstrap`: both models scored on the same resampled items, drawn within
each class, so a rare class of 2 studies keeps its 2; where the files name each item's patient, a ``group``
column as ``evaluate.json`` writes a datalist's, whole patients are drawn: a patient's studies are not independent,
and drawing them one by one made the interval too narrow, trial T58)::

    python -m monai_das.engines.compare --candidate runs/das/eval --reference runs/uniform/eval

Several seeds of each (``--candidate runs/das_s0/eval runs/das_s1/eval ...``, paired in the order given with
``--reference``) give each pair's difference and the interval of their mean. The interval says how much the
difference depends on which studies happen to be in the test list (and on the seeds given); a mean ± std over seeds
(``multiseed aggregate``) says neither, and on one test list of 14 studies it made 0.94 ± 0.04 against 0.89 ± 0.02
(3 seeds each) look like a clear win where the paired interval of the mean difference was [−0.03, +0.13] (trial
T57). An interval above zero is evidence of a difference on data like this test list; one that includes zero is not
evidence of no difference.

Arguments: ``--candidate`` and ``--reference`` (as many each: an evaluation folder holding ``test_predictions.csv``,
or a predictions CSV with ``id``, ``label`` and ``prob_<class>`` columns, e.g. ``eval/val/val_predictions.csv`` or
bundle inference's ``predictions.csv`` of labelled studies), ``--resamples`` (default 2000), ``--seed`` (default
0), ``--level`` (default 0.95), ``--output`` (a JSON report, written atomically). Refused, naming the file: items
that differ between the files (another test list), another label for an item, other classes, a row without a label
or with an error, a row cut short (a run stopped while writing), a class without items.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_das.handlers.metrics import MIN_ITEMS_PER_CLASS, class_support, few_items_named, paired_bootstrap
from monai_das.handlers.predictions import read_predictions_csv
from monai_das.utils.io import write_json_atomic
from monai_das.utils.logs import bounded_repr

__all__ = ["read_predictions", "compare_predictions", "format_comparison", "main"]

#: the file an evaluation folder holds (``evaluate.json``'s test split)
PREDICTIONS = "test_predictions.csv"


def read_predictions(path: str | os.PathLike) -> dict:
    """
    ``{"path", "ids", "labels", "probs", "classes"}`` of a predictions CSV (an evaluation folder: its
    ``test_predictions.csv``): one row per item with its ``id``, integer ``label`` (>= 0) and ``prob_<class>``
    columns (``classes`` in column order). Read as data (:func:`~monai_das.handlers.predictions.read_predictions_csv`,
    nothing evaluated).

    Raises:
        FileNotFoundError, ValueError: naming the file, and the line of a bad row.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist: give an evaluation folder (evaluate.json's eval/, holding "
                                f"{PREDICTIONS}) or a predictions CSV.")
    # the project's reader of predictions files: BOM, cells written by csv_cell (a formula-like id) given back as
    # written; a row cut short (a run killed while writing) is counted, and refused here
    columns, rows, dropped = read_predictions_csv(path)
    classes = [c[len("prob_"):] for c in columns if c.startswith("prob_")]
    missing = [c for c in ("id", "label") if c not in columns]
    if missing or len(classes) < 2:
        raise ValueError(f"'{path}' is not a predictions CSV: it needs the columns id, label and prob_<class> for "
                         f"two or more classes; its columns are {columns}.")
    if dropped:
        raise ValueError(f"'{path}' has {dropped} incomplete row(s) (a run stopped while writing it?): compare "
                         "complete predictions files.")
    ids, labels, probs, groups = [], [], [], []
    for line, row in enumerate(rows, start=2):  # one line per row: a file with a cut row is refused above
        where = f"'{path}' line {line} (id {row.get('id')!r})"
        if (row.get("error") or "").strip():
            raise ValueError(f"{where} is an error row ({row['error'][:120]}): its study has no prediction; "
                             "compare files whose every row was predicted.")
        try:
            label = int(row["label"])
            values = [float(row[f"prob_{c}"]) for c in classes]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {row.get('label')!r} or a probability is not a number.") from None
        if not 0 <= label < len(classes) or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where}: label {label} is not a class index 0..{len(classes) - 1} (-1: a study "
                             "without a known label) or a probability is not finite; compare labelled studies.")
        ids.append(str(row["id"]))
        labels.append(label)
        probs.append(values)
        groups.append((row.get("group") or "").strip() or None)
    if not ids:
        raise ValueError(f"'{path}' has no rows.")
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise ValueError(f"'{path}': ids appear twice, e.g. {twice[:3]}: one row per item is needed to pair them.")
    return {"path": str(path), "ids": ids, "labels": np.array(labels), "probs": np.array(probs), "classes": classes,
            "groups": groups if "group" in columns and any(g is not None for g in groups) else None,
            "stale": _replaced_checkpoint(path)}


def _replaced_checkpoint(predictions: Path) -> str | None:
    """What to say when the evaluation beside ``predictions`` (its ``metrics.json``: ``checkpoint``,
    ``checkpoint_sha256``) describes a checkpoint that has been replaced since (a retrain into the same bundle_root:
    compared as if it were the model there; trial T58b), else ``None``. Read as data."""
    import json

    from monai_das.utils.io import file_digest

    try:
        report = json.loads((predictions.parent / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ckpt, sha = (report.get("checkpoint"), report.get("checkpoint_sha256")) if isinstance(report, dict) else (None,
                                                                                                          None)
    if not (isinstance(ckpt, str) and isinstance(sha, str) and os.path.isfile(ckpt)) or file_digest(ckpt) == sha:
        return None
    return (f"'{predictions}' describes an earlier model: '{ckpt}' has changed since this evaluation (a retrain into "
            "the same bundle_root?); evaluate it again to compare the model that is there.")


def _aligned(first: dict, other: dict) -> tuple[np.ndarray, list | None]:
    """``other``'s probabilities and patients (``None`` without a ``group`` column) in ``first``'s item order, after
    checking they hold the same items, labels and classes (naming both files)."""
    if other["classes"] != first["classes"]:
        raise ValueError(f"'{other['path']}' has the classes {bounded_repr(other['classes'])}, '{first['path']}' "
                         f"{bounded_repr(first['classes'])}: not two models of one task.")
    index = {i: k for k, i in enumerate(other["ids"])}
    only_first = [i for i in first["ids"] if i not in index]
    only_other = sorted(set(other["ids"]) - set(first["ids"]))
    if only_first or only_other:
        raise ValueError(f"'{first['path']}' and '{other['path']}' hold other items: {len(only_first)} only in the "
                         f"first (e.g. {only_first[:3]}), {len(only_other)} only in the second (e.g. "
                         f"{only_other[:3]}). Compare evaluations of one test list.")
    order = np.array([index[i] for i in first["ids"]])
    differ = [first["ids"][k] for k in np.flatnonzero(other["labels"][order] != first["labels"])]
    if differ:
        raise ValueError(f"'{first['path']}' and '{other['path']}' give other labels to {len(differ)} item(s), e.g. "
                         f"{differ[:3]}: not one test list (or one was evaluated on an edited datalist).")
    return other["probs"][order], None if other["groups"] is None else [other["groups"][j] for j in order]


def compare_predictions(candidate: Sequence[str | os.PathLike], reference: Sequence[str | os.PathLike],
                        resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """The report :func:`main` prints: :func:`paired_bootstrap` of the files' probabilities, with the files, the
    classes and the number of items."""
    if not candidate or len(candidate) != len(reference):
        raise ValueError(f"give as many --candidate as --reference files (>= 1; seed i of one with seed i of the "
                         f"other), got {len(candidate)} and {len(reference)}.")
    runs = [read_predictions(p) for p in (*candidate, *reference)]
    first = runs[0]
    aligned = [(first["probs"], first["groups"]), *(_aligned(first, r) for r in runs[1:])]
    probs = [p for p, _ in aligned]
    half = len(candidate)
    # the patients, in the first file's item order: of the files that name them (evaluate.json writes a datalist's
    # group), which must agree (a file without the column, bundle inference's, takes them from the others)
    named = [(r["path"], g) for r, (_, g) in zip(runs, aligned) if g is not None]
    groups = named[0][1] if named else None
    for path, other in named[1:]:
        moved = [first["ids"][k] for k, (a, b) in enumerate(zip(groups, other)) if a != b]
        if moved:
            raise ValueError(f"'{named[0][0]}' and '{path}' give other patients (group) to {len(moved)} item(s), "
                             f"e.g. {moved[:3]}: not one test list (or one was evaluated on an edited datalist).")
    report = paired_bootstrap(probs[:half], probs[half:], first["labels"], resamples=resamples, level=level, seed=seed,
                              groups=groups)
    report.update(candidate=[r["path"] for r in runs[:half]], reference=[r["path"] for r in runs[half:]],
                  classes=first["classes"], num_items=len(first["ids"]))
    support, unit = class_support(first["labels"], len(first["classes"]), groups)
    few = few_items_named(support, first["classes"], unit=unit)
    notes = [f"{few}: the interval cannot show how a class of so few {unit}s would vary (fewer than "
             f"{MIN_ITEMS_PER_CLASS}); read it as a lower bound of the uncertainty." if few else None]
    if groups is None:  # a file of bundle inference, or of an earlier version: no patient column
        notes.append("the files name no patient (no 'group' column): items were drawn one by one; if a patient has "
                     "several items, the interval is too narrow (evaluate.json writes a datalist's patients).")
    notes += [r["stale"] for r in runs]
    report["note"] = " ".join(n for n in notes if n) or None
    return report


def format_comparison(report: dict) -> str:
    """The report as a short table (markdown) and one line of verdict per metric."""
    pct = f"{100 * report['level']:g} %"
    counts = ", ".join(f"{n} {c}" for c, n in zip(report["classes"], report["class_counts"]))
    lines = [f"{report['num_items']} items ({counts}); {len(report['candidate'])} pair(s); {report['method']}, "
             f"{report['resamples']} resamples, seed {report['seed']}", "",
             f"| metric | candidate | reference | candidate − reference | {pct} interval | pairs higher |",
             "|---|---|---|---|---|---|"]
    for name in ("auc", "balanced_accuracy"):
        m = report[name]
        values = lambda xs: " ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        interval = "undefined" if m["interval"] is None else "[{:+.3f}, {:+.3f}]".format(*m["interval"])
        lines.append(f"| {name} | {values(m['candidate'])} | {values(m['reference'])} | {m['difference']:+.3f} | "
                     f"{interval} | {m['pairs_higher']}/{len(m['per_pair'])} |")
    lines.append("")
    for name in ("auc", "balanced_accuracy"):
        if report[name]["interval"] is None:  # no resample held every class
            lines.append(f"{name}: no interval (no resample held every class).")
            continue
        low, high = report[name]["interval"]
        verdict = ("above zero: the candidate is better on data like this test list" if low > 0 else
                   "below zero: the reference is better on data like this test list" if high < 0 else
                   "includes zero: no difference shown (which is not evidence of none)")
        lines.append(f"{name}: the interval {verdict}.")
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_das.engines.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", nargs="+", required=True, help="evaluation folder(s) or predictions CSV(s)")
    parser.add_argument("--reference", nargs="+", required=True, help="as many, paired with --candidate in order")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--output", default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.resamples < 100 or not 0 < args.level < 1:
        parser.error(f"--resamples must be >= 100 and --level in (0, 1), got {args.resamples} and {args.level}.")
    try:
        report = compare_predictions(args.candidate, args.reference, args.resamples, args.level, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    print(format_comparison(report))
    if args.output:
        write_json_atomic(report, args.output)
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
