"""Paired differences between two variants of a recipe study (``compare_methods.py --tag``), from its run tables.

A recipe study runs the same cells (dataset, method, keep ratio, seed, fold) twice, once per ``--tag``: a candidate
setting and a same-code reference. This prints ``candidate − reference`` of a metric per dataset (and per keep ratio),
paired by cell, with the mean, a two-sided 95 % Student-t interval over the independent units, the units the candidate
won and every difference, as a markdown table (also written as ``paired_<candidate>_vs_<reference>.md`` in the folder).
A unit is a fold where there are folds (POCUS): the cells run on one fold (its seeds and keep ratios) share its test
patients, so their differences are averaged into one, as ``compare_methods.py`` does; and a seed where there are none
(VesselMNIST3D): the cells of one seed at several keep ratios share its initial weights and data order, so where keep
ratios are pooled (the row per dataset) they are averaged into one too; a row per keep ratio has one cell per seed.

Only like with like is paired. Each pair's recorded settings (the ``overrides`` column of the run tables: the bundle
overrides a cell's ``result.json`` records, as ``compare_methods.py`` writes them) must agree, apart from the settings
the candidate is about (the keys its cells' command set with ``--override``, ``--max-epochs`` or ``--patience``, and
any ``--about KEY``), where a cell is tracked or shown (MLflow, progress bar, figures) and where the data lies
(``data_dir``); their training code (``code_hash``, which also hashes the bundle configs: a changed default such as
augmentation or the sampler's learning rate shows only there) must be the same; and, for a metric of the evaluation
(anything but the training-side ``best_val_auc``, ``best_epoch``, ``epochs``), so must the split scored. Mismatched
pairs are refused, naming both cells and what differs (``--allow-other-settings``, ``--allow-code-change`` accept
them; the report then says so). Tag, command, commit, dates and timings are not settings and may differ.

Usage::

    python benchmarks/paired_tags.py benchmarks/results/feature_size --candidate fs14 --reference ref
    python benchmarks/paired_tags.py DIR --candidate X --reference Y --metric auc --by-keep

Options: ``--metric`` (a column of ``<dataset>_runs.csv``; default ``best_val_auc``), ``--by-keep`` (one row per keep
ratio too, besides the row per dataset), ``--reference-folder DIR`` (read the reference's cells from another
``--out`` folder, e.g. the standard grid's, with ``--reference ""`` for its untagged cells; the report lists the
training-code hashes of both sides), ``--about KEY`` (a setting the candidate is about besides those its command set;
repeatable), ``--allow-code-change`` and ``--allow-other-settings`` (accept pairs run with other training code or other
settings; see above).

    # refused now (the grid's reference cells were rerun later on other code; see benchmarks/README.md)
    python benchmarks/paired_tags.py benchmarks/results/temporal_head --candidate gated --reference "" \
        --reference-folder benchmarks/results/standard --by-keep

The run tables are every ``*_runs.csv`` of the folder: ``<dataset>_runs.csv`` and, of a validation-split run written
since ``compare_methods.py`` keeps those apart, ``<dataset>_val_runs.csv`` (read after it: a cell in both is taken
from the latter).
"""

from __future__ import annotations

import argparse
import ast
import csv
import math
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import markdown_table, write_text_atomic  # noqa: E402
from compare_methods import CONFIGS, TRACKING_KEYS, VIDEO_CONFIGS, count_label, t_interval, unit_means  # noqa: E402

#: recorded settings that may differ within a pair: what pairs the cells (equal by construction), where a cell is
#: tracked or shown (not what it trains) and where the data lies (the same files elsewhere)
NOT_SETTINGS = ("method", "keep_ratio", "seed", "fold", "data_dir", "progress_bar", "num_figures", *TRACKING_KEYS)
#: metrics of the training run itself (the validation during training): the split a cell was scored on does not matter
TRAINING_METRICS = ("best_val_auc", "best_epoch", "epochs")
#: command-line options of compare_methods.py that set a bundle entry (besides ``--override KEY=JSON``)
FORCED_OPTIONS = {"--max-epochs": "max_epochs", "--patience": "patience"}


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


def _finite(value: Any) -> bool:
    """Whether a run-table value is a finite number (not empty, ``nan`` or ``inf``)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def paired_rows(rows: list[dict[str, Any]], candidate: str, reference: str,
                metric: str = "best_val_auc") -> dict[str, dict[tuple, dict[str, Any]]]:
    """
    The rows that pair, ``{tag: {cell_key: row}}`` for both tags: cells run with both tags that have a finite
    ``metric`` (one definition of "paired" for the differences and for the code hashes reported beside them). A cell
    whose value is undefined (``nan`` in the run table, e.g. the best validation AUC of a run whose every validation
    AUC was undefined) is left out, as ``compare_methods.paired_differences`` does (it made the interval fail with an
    ``AttributeError`` in ``statistics.stdev``; trial T71a).
    """
    found: dict[str, dict[tuple, dict[str, Any]]] = {candidate: {}, reference: {}}
    for r in rows:
        if r.get("tag") in found and _finite(r.get(metric)):
            found[r["tag"]][cell_key(r)] = r
    keys = set(found[candidate]) & set(found[reference])
    if not keys:
        raise SystemExit(f"no cell was run with both tags {candidate!r} and {reference!r} (tags found: "
                         f"{sorted({r.get('tag') for r in rows})}).")
    return {tag: {k: found[tag][k] for k in sorted(keys, key=str)} for tag in found}


def recorded_overrides(r: dict[str, Any]) -> dict[str, Any] | None:
    """A run's recorded bundle overrides (``overrides`` column: a dict, or its Python/JSON text), ``None`` if absent."""
    value = r.get("overrides")
    if value in (None, ""):
        return None
    if isinstance(value, dict):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise SystemExit(f"run {describe(r)}: unreadable 'overrides' column {value[:80]!r}.") from None
    return parsed if isinstance(parsed, dict) else None


def command_keys(command: str | None) -> set[str]:
    """The bundle entries a recorded ``compare_methods.py`` command set itself (``--override KEY=...``,
    ``--max-epochs``, ``--patience``): what a tagged variant is about."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return set()
    keys = set()
    for i, w in enumerate(words):
        if w == "--override" and i + 1 < len(words):
            keys.add(words[i + 1].split("=", 1)[0])
        elif w.startswith("--override="):
            keys.add(w[len("--override="):].split("=", 1)[0])
        elif w.split("=", 1)[0] in FORCED_OPTIONS:
            keys.add(FORCED_OPTIONS[w.split("=", 1)[0]])
    return keys


def describe(r: dict[str, Any]) -> str:
    """A run named as its cell: ``dataset/method keep r seed s [fold f] [tag t]``."""
    fold = f" fold {r['fold']}" if r.get("fold") not in (None, "") else ""
    return (f"{r.get('dataset')}/{r.get('method')} keep {r.get('keep_ratio')} seed {r.get('seed')}{fold} "
            f"[{r.get('tag') or 'untagged'}]")


_UNSET = object()


def bundle_default(key: str, dataset: Any) -> Any:
    """The value of the bundle entry ``key`` (``a#b`` walks nested dicts) in the train config a cell of ``dataset``
    runs (the video bundle's for POCUS, the volume bundle's otherwise), ``_UNSET`` when it has none: what a run that
    does not override ``key`` used."""
    import json

    configs = VIDEO_CONFIGS if str(dataset or "").startswith("pocus") else CONFIGS
    try:
        value: Any = json.loads((configs / "train.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _UNSET
    for part in key.split("#"):
        if not isinstance(value, dict) or part not in value:
            return _UNSET
        value = value[part]
    return value


def setting_differences(cand: dict[str, Any], ref: dict[str, Any], about: set[str] = frozenset(),
                        metric: str = "best_val_auc") -> tuple[list[str], list[str]]:
    """
    What differs between a candidate run and its reference run: ``(settings, code)``, each a list of
    ``"key: candidate value vs reference value"``. Settings: the recorded overrides except :data:`NOT_SETTINGS`, the
    keys in ``about`` and those the candidate's command set (:func:`command_keys`), plus the split scored for a metric
    of the evaluation (not in :data:`TRAINING_METRICS`); a run without recorded overrides has none to compare. Code:
    ``code_hash`` where both runs record one.
    """
    skip = set(NOT_SETTINGS) | set(about) | command_keys(cand.get("command"))
    settings = []
    a, b = recorded_overrides(cand), recorded_overrides(ref)
    if a is not None and b is not None:
        for k in sorted((set(a) | set(b)) - skip):
            # a key one side did not override ran at the bundle's default: the same setting when the other side set
            # that default (e.g. a same-code reference tagged with --override class_weights=null)
            default = bundle_default(k, cand.get("dataset"))
            va, vb = a.get(k, default), b.get(k, default)
            if va is _UNSET or vb is _UNSET or va != vb:
                show = [("(not set; no bundle default)" if v is _UNSET else repr(v)) for v in (va, vb)]
                settings.append(f"{k}: {show[0]} vs {show[1]}")
    if metric not in TRAINING_METRICS and cand.get("eval_split", "test") != ref.get("eval_split", "test"):
        settings.append(f"eval_split: {cand.get('eval_split')!r} vs {ref.get('eval_split')!r}")
    code = []
    if cand.get("code_hash") and ref.get("code_hash") and cand["code_hash"] != ref["code_hash"]:
        code.append(f"code_hash: {cand['code_hash']} vs {ref['code_hash']}")
    return settings, code


def check_pairs(paired: dict[str, dict[tuple, dict[str, Any]]], candidate: str, reference: str,
                metric: str = "best_val_auc", about: set[str] = frozenset(), allow_code_change: bool = False,
                allow_other_settings: bool = False) -> dict[str, int]:
    """
    Refuse (``SystemExit``) pairs of :func:`paired_rows` whose runs differ in settings or training code
    (:func:`setting_differences`), naming both cells and what differs, unless allowed. Returns the number of pairs
    that differ in each (``{"settings": n, "code": m}``), for the report.
    """
    bad: dict[str, list[str]] = {"settings": [], "code": []}
    for key, cand in paired[candidate].items():
        ref = paired[reference][key]
        settings, code = setting_differences(cand, ref, about, metric)
        for kind, diffs in (("settings", settings), ("code", code)):
            if diffs:
                bad[kind].append(f"{describe(cand)} and {describe(ref)}: {'; '.join(diffs)}")
    refused = [(kind, opt) for kind, opt, allowed in (("settings", "--allow-other-settings", allow_other_settings),
                                                      ("code", "--allow-code-change", allow_code_change))
               if bad[kind] and not allowed]
    if refused:
        lines = []
        for kind, opt in refused:
            what = ("other settings" if kind == "settings"
                    else "other training code (code_hash: code and bundle configs)")
            lines.append(f"{len(bad[kind])} of {len(paired[candidate])} pairs ran with {what}, e.g.\n  "
                         + "\n  ".join(bad[kind][:5]) + ("\n  ..." if len(bad[kind]) > 5 else "")
                         + f"\n(pass {opt} to pair them anyway)")
        raise SystemExit(f"paired_tags: refusing to pair {candidate!r} with {reference or 'untagged'!r}: "
                         + "\n".join(lines) + "\nA difference would be the settings' or the code's as well as the "
                         "candidate's: rerun the reference with the candidate's code and settings (a same-code "
                         "reference tag), or name the setting the candidate is about with --about KEY.")
    return {kind: len(v) for kind, v in bad.items()}


def paired_by_tag(rows: list[dict[str, Any]], candidate: str, reference: str, metric: str = "best_val_auc",
                  by_keep: bool = False) -> list[dict[str, Any]]:
    """
    ``candidate − reference`` per dataset (and keep ratio with ``by_keep``), paired by method, keep, seed and fold.
    Independent units: a fold where there are folds, else a seed (the cells of one fold, or of one seed at the keep
    ratios a row pools, averaged into one). Settings are not checked here (:func:`check_pairs`).
    """
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
        folds = any(c[4] not in (None, "") for c in cells)
        # a fold, else a seed: the cells of one seed (its keep ratios, pooled in this row) share its weights and data
        diffs = unit_means([(c[4] if folds else f"seed {c[3]}", c, values[candidate][c] - values[reference][c])
                            for c in cells])
        low, high = t_interval(diffs)
        out.append({"dataset": dataset, "keep": keep,
                    "pairs": count_label(len(diffs), len(cells), "folds" if folds else "seeds"),
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
    p.add_argument("--about", action="append", default=[], metavar="KEY",
                   help="a bundle setting the candidate is about, allowed to differ within a pair (repeatable; "
                        "those its cells' command set with --override, --max-epochs, --patience are taken already)")
    p.add_argument("--allow-code-change", action="store_true",
                   help="pair runs of other training code (code_hash, bundle configs included) instead of refusing")
    p.add_argument("--allow-other-settings", action="store_true",
                   help="pair runs whose recorded settings differ (besides what the candidate is about) instead of "
                        "refusing")
    args = p.parse_args(argv)
    ref_folder = args.reference_folder or args.folder
    for folder in {args.folder, ref_folder}:
        if not any(folder.glob("*_runs.csv")):
            raise SystemExit(f"paired_tags: no <dataset>_runs.csv in '{folder}' (a compare_methods.py --out folder).")
    runs = [r for r in read_runs(args.folder) if r.get("tag") == args.candidate]
    runs += [r for r in read_runs(ref_folder) if r.get("tag") == args.reference]
    paired = paired_rows(runs, args.candidate, args.reference, args.metric)
    mismatched = check_pairs(paired, args.candidate, args.reference, args.metric, set(args.about),
                             args.allow_code_change, args.allow_other_settings)
    rows = paired_by_tag(runs, args.candidate, args.reference, args.metric, args.by_keep)
    ref_label = args.reference or "untagged"
    # the code hashes of the cells that were paired (a reference folder may hold other cells on other code)
    hashes = {tag: sorted({r.get("code_hash") or "?" for r in cells.values()}) for tag, cells in paired.items()}
    accepted = [f"{n} of {len(paired[args.candidate])} pairs ran with "
                + ("other settings" if kind == "settings" else "other training code")
                + f" (accepted with --allow-{'other-settings' if kind == 'settings' else 'code-change'})"
                for kind, n in mismatched.items() if n]
    cmd = "python benchmarks/paired_tags.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"# {args.metric}: {args.candidate} − {ref_label}, paired by cell", "", f"- command: `{cmd}`", "",
        "Pairs: same dataset, method, keep ratio, seed and fold, same recorded settings apart from what the "
        "candidate is about, same training code. Mean over the independent units (a fold where there are folds, "
        "else a seed; the cells of a unit averaged), two-sided 95 % Student-t interval, units where "
        f"`{args.candidate}` was higher, the reference's mean over the cells, every unit's difference.", "",
        f"Training code of the paired cells (`code_hash` of the run tables): `{args.candidate}` "
        f"{', '.join(hashes[args.candidate])}; `{ref_label}` {', '.join(hashes[args.reference])}"
        + (f" (from `{ref_folder}`)" if args.reference_folder else "") + ".", "",
        *([f"**Mismatched pairs**: {'; '.join(accepted)}: a difference may be theirs as well as the candidate's.",
           ""] if accepted else []),
        markdown_table(rows, [("dataset", "dataset"), ("keep", "keep"), ("pairs", "pairs"), ("mean", "mean"),
                              ("ci", "95 % interval"), ("wins", f"{args.candidate} higher"),
                              ("reference_mean", f"{ref_label} mean"), ("diffs", "per unit")]), ""])
    write_text_atomic(text, args.folder / f"paired_{args.candidate}_vs_{ref_label}.md")
    print(text)
    return text


if __name__ == "__main__":
    main()
