"""Helpers shared by the benchmark scripts: run provenance, tables, interleaved timing and peak tensor memory."""

from __future__ import annotations

import csv
import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_das.utils.io import atomic_file, write_json_atomic, write_text_atomic

__all__ = [
    "atomic_file",
    "REPO",
    "CODE_PATHS",
    "code_hash",
    "environment",
    "environment_markdown",
    "markdown_table",
    "write_csv",
    "parts_note",
    "write_json_atomic",
    "write_text_atomic",
    "time_interleaved",
    "summarize_times",
    "peak_tensor_memory",
]

REPO = Path(__file__).resolve().parents[1]
#: the code a trained cell's result depends on (hashed into ``code_hash``): training path and bundle configs (every
#: ``monai_das`` package the configs instantiate; ``losses`` was left out, trial T71a)
CODE_PATHS = ("monai_das/networks", "monai_das/engines", "monai_das/handlers", "monai_das/data",
              "monai_das/transforms", "monai_das/utils", "monai_das/losses",
              "bundles/das_volume_classification/configs",
              "bundles/das_video_classification/configs")


def code_hash(paths: Sequence[str] = CODE_PATHS) -> str:
    """Short SHA-256 of the ``.py`` and ``.json`` files under ``paths`` (relative to the repository), bundles'
    ``metadata.json`` left out: its version and changelog change with every release and train nothing (a
    changelog-only commit made every finished cell "other code"; review R71h)."""
    h = hashlib.sha256()
    for rel in paths:
        for f in sorted((REPO / rel).rglob("*")):
            if (f.is_file() and f.suffix in (".py", ".json") and "__pycache__" not in f.parts
                    and f.name != "metadata.json"):
                h.update(str(f.relative_to(REPO)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """
    Provenance of a benchmark run: exact command, UTC date, machine (``lscpu`` model name, logical CPUs, torch
    threads, load average), OS, Python and package versions (MONAI's own version report) and the git commit.
    """
    from monai.config.deviceconfig import get_config_values, get_optional_config_values

    versions = {k: str(v) for k, v in get_config_values().items()}
    optional = get_optional_config_values()
    for key in ("Pytorch Ignite", "mlflow", "Pillow", "pandas"):
        if key in optional:
            versions[key] = str(optional[key])
    try:
        from importlib.metadata import version

        versions["monai_das"] = version("monai_das")
    except Exception:  # not installed as a distribution
        versions["monai_das"] = "source tree"
    argv = list(sys.argv if argv is None else argv)
    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *argv]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git_commit(),
    }


def environment_markdown(env: Mapping[str, Any]) -> str:
    """The provenance block printed at the top of every results file."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        f"- command: `{env['command']}`",
        f"- date: {env['date_utc']}",
        f"- machine: {env['cpu_model']}, {env['logical_cpus']} logical CPUs, torch threads {env['torch_threads']}, "
        f"OMP_WAIT_POLICY={env.get('omp_wait_policy', 'unset')}, GPU: {env['cuda']}; "
        f"load average (1, 5, 15 min) at start {env['load_average_start']}"
        + (f", at end {env['load_average_end']}" if "load_average_end" in env else "")
        + (f"; duration {env['duration_s']} s" if "duration_s" in env else ""),
        f"- software: Python {env['python']}, {versions}; {env['os']}",
        f"- code: git {env['git_commit']}",
    ]
    return "\n".join(lines)


def parse_override(text: str) -> tuple[str, Any]:
    """``--override KEY=VALUE`` (argparse ``type``): ``(KEY, VALUE parsed as JSON, else the plain string)``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--override expects KEY=VALUE (VALUE as JSON), got {text!r}.")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def positive_int(text: str) -> int:
    """An integer option that must be at least 1 (argparse ``type``: ``--max-epochs``, ``--patience``, ``--threads``);
    0 or less is refused by argparse, naming the option (``--max-epochs 0`` was ignored without a word)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}.") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}.")
    return value


def metric_text(value: Any, digits: int = 4) -> str:
    """A metric for a progress line: ``n/a`` when it is undefined (``None`` or NaN: e.g. the AUC of a test list
    without an item of some class), else the number with ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` given as ``(key, header)``; values are printed as they are."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_csv(rows: Sequence[Mapping[str, Any]], filepath: str | os.PathLike) -> str:
    """Rows as CSV (header = union of the keys in first-seen order), written atomically."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_file(filepath) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return str(filepath)


def parts_note(out: str | os.PathLike, parts: Mapping[str, tuple[bool, Sequence[str]]]) -> str:
    """
    A markdown line for a report whose script measures several parts, each with its own files: which parts this run
    measured, and for each part it did not (``--no-...``) which of that part's files lie beside the report in ``out``
    anyway: they come from an earlier run (other settings, maybe other code) and are left as they are, never
    truncated. ``parts``: ``{name: (measured, [file names])}``.
    """
    done = [name for name, (measured, _) in parts.items() if measured]
    text = "Parts measured by this run: " + (", ".join(done) if done else "none") + "."
    for name, (measured, files) in parts.items():
        if measured:
            continue
        stale = [f for f in files if (Path(out) / f).is_file()]
        text += f" Not measured: {name}" + (
            f"; {', '.join(f'`{f}`' for f in stale)} beside this report {'is' if len(stale) == 1 else 'are'} from an "
            "earlier run, not this one (left as they were)." if stale else ".")
    return text


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                     block: int = 1) -> dict[str, list[float]]:
    """
    Wall time (s) of each callable, measured in ``repeats`` interleaved rounds (``block`` consecutive calls of every
    callable per round, after ``warmup`` untimed rounds), so that load changes on a shared machine hit all of them
    alike. A round's time of a callable is the best of its ``block`` calls: with ``block > 1`` the first call after a
    switch absorbs what the previous callable leaves behind (thread pools still spinning, caches), which would
    otherwise be charged to whichever callable comes next.
    """
    if repeats < 1 or block < 1:
        raise ValueError(f"repeats and block must be >= 1, got repeats={repeats}, block={block}.")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best = float("inf")
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            times[name].append(best)
    return times


def summarize_times(times: Sequence[float]) -> dict[str, float]:
    """Median, interquartile range and minimum of a list of timings (s), plus the count."""
    ts = sorted(times)
    if len(ts) >= 4:
        q = statistics.quantiles(ts, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = ts[-1] - ts[0]
    return {"median": statistics.median(ts), "iqr": iqr, "min": ts[0], "n": len(ts)}


def peak_tensor_memory(fn: Callable[[], Any]) -> int:
    """
    Peak of CPU tensor memory (bytes) allocated by ``fn()`` above what was live when it started, from the allocation
    and free events recorded by ``torch.profiler`` (``profile_memory=True``). It counts activations, gradients and
    temporaries at tensor granularity; parameters, optimizer state and inputs alive before the call are not
    included, and allocator overhead is not seen.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += int(e.nbytes())
        peak = max(peak, live)
    return peak
