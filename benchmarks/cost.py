"""Cost of DAS and the baselines, every method measured side by side in one run (CPU unless a GPU is present).

For each scenario (T=28 volumes keeping k=14 slices, T=64 volumes keeping k=32, a T=64 clip of 112×112 frames
keeping k=32):

- parameters and multiply-accumulates (MACs) of the sampler and of the downstream network (encoder on the kept
  frames, temporal head, classifier) separately (``monai_das.utils.model_cost``);
- inference latency (eval, no gradient) at batch 1 and at batch 16;
- training throughput (inputs/s) of one optimisation step at batch 16 (forward, cross-entropy, backward, Adam with
  the bundle's ``monai_das.engines.build_optimizer``);
- peak tensor memory of the batch-16 inference and training step (``torch.profiler`` allocation events, see
  ``bench_utils.peak_tensor_memory``);
- each of these as a ratio to ``full`` (the whole sequence).

The sampler alone: DAS (one pass) against ADPS (``k`` sequential steps) at each scenario and over ``k``.

The data pipeline: the bundle's own training loader (``train#dataloader`` of
``bundles/das_volume_classification/configs/train.json``, parsed with ``monai.bundle.ConfigParser``) and MONAI's
``ThreadDataLoader`` on the same dataset, timed with the DAS training step against the model-only time on batches
already in memory, for VesselMNIST3D 28/64 and the POCUS clips when their files are present.

Timings are interleaved: every round calls each method once, so a load change on a shared machine hits all methods
alike; the tables give the best of the rounds (other processes only ever add time), the CSV/JSON the medians too.

Usage::

    python benchmarks/cost.py                       # full measurement, writes benchmarks/results/cost.{md,csv,json}
    python benchmarks/cost.py --smoke --out /tmp/c  # tiny sizes: checks the script, measures nothing

Options: ``--out DIR``, ``--threads N`` (torch CPU threads, default 2), ``--repeats N`` (timed rounds for batch-16
and training, default 3), ``--repeats-b1 N`` (rounds at batch 1, default 10), ``--scenarios``, ``--methods``,
``--batch N`` (default 16), ``--keep-ratio`` (default 0.5), ``--no-pipeline``, ``--pipeline-batches N`` (batches
per timed pass, default 6; 0 = a whole epoch), ``--pipeline-repeats N`` (default 2), ``--data-dir`` (the shared
data folder with ``medmnist3d/`` and ``video/covid19_lus_pocus/``; default ``$MONAI_DAS_DATA`` or
``<repo>/../shared/data``), ``--smoke``. ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see below).

With ``--no-pipeline`` the data-pipeline table is not measured and ``cost_pipeline.csv`` in ``--out`` is left as it is;
``cost.md`` names the parts this run measured and any file beside it that an earlier run wrote. A focused run (a few
scenarios, no pipeline) belongs in its own ``--out``, so that the published ``benchmarks/results/cost.*`` stay one
run's.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning: on a shared, oversubscribed CPU, spinning threads make 2-thread
# timings swing by 100x (measured: 1 ms -> 230 ms for the DAS sampler). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (  # noqa: E402
    REPO,
    environment,
    environment_markdown,
    markdown_table,
    parts_note,
    peak_tensor_memory,
    summarize_times,
    time_interleaved,
    write_csv,
    write_json_atomic,
    write_text_atomic,
)

from monai_das.engines import build_optimizer  # noqa: E402
from monai_das.networks import build_classifier, get_sampler, num_kept  # noqa: E402
from monai_das.utils import count_macs, count_parameters, model_cost  # noqa: E402

METHODS = ("full", "uniform", "random", "dps", "adps", "das")
TRAIN_CONFIG = REPO / "bundles" / "das_volume_classification" / "configs" / "train.json"
VIDEO_TRAIN_CONFIG = REPO / "bundles" / "das_video_classification" / "configs" / "train.json"
MIB = 2.0**20


@dataclass(frozen=True)
class Scenario:
    """One input shape: ``layout`` volume (``B×1×T×S×S``) or video (``B×T×1×S×S``)."""

    name: str
    layout: str
    num_frames: int
    size: int
    num_classes: int
    description: str

    def inputs(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self.num_frames, self.size
        shape = (batch, 1, t, s, s) if self.layout == "volume" else (batch, t, 1, s, s)
        x = torch.rand(shape, generator=generator)
        y = torch.randint(0, self.num_classes, (batch,), generator=generator)
        return x, y


SCENARIOS = {
    "vol28": Scenario("vol28", "volume", 28, 28, 2, "volume 28×28×28 (VesselMNIST3D 28), T=28"),
    "vol64": Scenario("vol64", "volume", 64, 64, 2, "volume 64×64×64 (VesselMNIST3D 64), T=64"),
    "video64": Scenario("video64", "video", 64, 112, 3, "clip of 64 frames 112×112 (POCUS), T=64"),
}
SMOKE_SCENARIOS = {
    "vol8": Scenario("vol8", "volume", 8, 16, 2, "smoke: volume 8×16×16"),
    "video8": Scenario("video8", "video", 8, 16, 3, "smoke: clip of 8 frames 16×16"),
}


def _default_data_dir() -> Path:
    return Path(os.environ.get("MONAI_DAS_DATA", REPO.parent / "shared" / "data"))


def _ms(seconds: float) -> float:
    return round(1000.0 * seconds, 2)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimisation step as the bundle's ``SupervisedTrainer`` does it (cross-entropy, Adam)."""
    net.train()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def infer(net: torch.nn.Module, x: torch.Tensor) -> None:
    net.eval()
    with torch.no_grad():
        net(x)


def measure_models(sc: Scenario, methods: list[str], args: argparse.Namespace, log) -> list[dict[str, Any]]:
    """One row per method: parameters, MACs, latency, training throughput, peak memory and ratios to ``full``."""
    g = torch.Generator().manual_seed(0)
    x1, _ = sc.inputs(1, g)
    xb, yb = sc.inputs(args.batch, g)
    torch.manual_seed(0)
    nets = {
        m: build_classifier(m, sc.num_classes, sc.num_frames, keep_ratio=args.keep_ratio, layout=sc.layout)
        for m in methods
    }
    opts = {m: build_optimizer(net, lr=1e-4) for m, net in nets.items()}
    rows = {m: {"scenario": sc.name, "method": m, "T": sc.num_frames, "frame": f"{sc.size}x{sc.size}",
                **model_cost(net, x1)} for m, net in nets.items()}
    log(f"[{sc.name}] latency at batch 1 ({args.repeats_b1} rounds)")
    t1 = time_interleaved({m: functools.partial(infer, net, x1) for m, net in nets.items()}, args.repeats_b1)
    log(f"[{sc.name}] latency at batch {args.batch} ({args.repeats} rounds)")
    tb = time_interleaved({m: functools.partial(infer, net, xb) for m, net in nets.items()}, args.repeats)
    log(f"[{sc.name}] training step at batch {args.batch} ({args.repeats} rounds)")
    tt = time_interleaved({m: functools.partial(train_step, net, opts[m], xb, yb) for m, net in nets.items()},
                          args.repeats)
    log(f"[{sc.name}] peak memory")
    for m, net in nets.items():
        r = rows[m]
        s1, sb, st = summarize_times(t1[m]), summarize_times(tb[m]), summarize_times(tt[m])
        r["macs_total"] = r["macs_sampler"] + r["macs_downstream"]
        # best of the rounds: contention on a shared machine only ever adds time; medians are kept beside
        r["latency_b1_ms"], r["latency_b1_median_ms"] = _ms(s1["min"]), _ms(s1["median"])
        r["latency_batch_ms"], r["latency_batch_median_ms"] = _ms(sb["min"]), _ms(sb["median"])
        r["batch"] = args.batch
        r["train_items_per_s"] = round(args.batch / st["min"], 3)
        r["train_items_per_s_median"] = round(args.batch / st["median"], 3)
        r["peak_infer_mib"] = round(peak_tensor_memory(functools.partial(infer, net, xb)) / MIB, 1)
        r["peak_train_mib"] = round(peak_tensor_memory(functools.partial(train_step, net, opts[m], xb, yb)) / MIB, 1)
    if "full" in rows:
        ref = rows["full"]
        for r in rows.values():
            r["macs_x_full"] = _ratio(r["macs_total"], ref["macs_total"])
            r["latency_b1_x_full"] = _ratio(r["latency_b1_ms"], ref["latency_b1_ms"])
            r["latency_batch_x_full"] = _ratio(r["latency_batch_ms"], ref["latency_batch_ms"])
            r["train_speedup_vs_full"] = _ratio(r["train_items_per_s"], ref["train_items_per_s"])
            r["peak_train_x_full"] = _ratio(r["peak_train_mib"], ref["peak_train_mib"])
    return list(rows.values())


def measure_samplers(sc: Scenario, args: argparse.Namespace, ks: list[int], log) -> list[dict[str, Any]]:
    """DAS against ADPS alone (eval, no gradient): parameters, MACs, sequential steps and latency for each ``k``."""
    g = torch.Generator().manual_seed(1)
    frames = {b: sc.inputs(b, g)[0] for b in (1, args.batch)}
    if sc.layout == "volume":
        frames = {b: x.movedim(2, 1) for b, x in frames.items()}  # B×C×D×H×W → B×T×C×H×W
    rows = []
    for k in ks:
        torch.manual_seed(0)
        samplers = {"das": get_sampler("das", k), "adps": get_sampler("adps", k, num_frames=sc.num_frames)}
        for s in samplers.values():
            s.eval()
        log(f"[{sc.name}] sampler alone, k={k}")
        fns = {}
        for name, s in samplers.items():
            for b, x in frames.items():
                fns[(name, b)] = functools.partial(infer, s, x)
        times = time_interleaved(fns, args.repeats_b1)
        for name, s in samplers.items():
            rows.append({
                "scenario": sc.name, "sampler": name, "T": sc.num_frames, "k": k,
                "sequential_steps": 1 if name == "das" else k,
                "params": count_parameters(s),
                "macs": count_macs(s, frames[1]),
                "latency_b1_ms": _ms(summarize_times(times[(name, 1)])["min"]),
                "latency_batch_ms": _ms(summarize_times(times[(name, args.batch)])["min"]),
                "batch": args.batch,
            })
        das, adps = rows[-2], rows[-1]
        for r in (das, adps):
            r["latency_b1_x_das"] = _ratio(r["latency_b1_ms"], das["latency_b1_ms"])
            r["latency_batch_x_das"] = _ratio(r["latency_batch_ms"], das["latency_batch_ms"])
    return rows


def _pipeline_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.smoke:
        return [{"case": "synthetic 16", "overrides": {"dataset": "synthetic", "size": 16, "num_train": 8}}]
    root = Path(args.data_dir)
    cases = []
    for size, fname in ((28, "vesselmnist3d.npz"), (64, "vesselmnist3d_64.npz")):
        if (root / "medmnist3d" / fname).is_file():
            cases.append({"case": f"vesselmnist3d {size}", "overrides": {
                "dataset": "vesselmnist3d", "size": size, "data_dir": str(root / "medmnist3d")}})
    pocus = root / "video" / "covid19_lus_pocus"
    if (pocus / "MANIFEST.csv").is_file():
        cases.append({"case": "pocus convex T=64 112x112 (fold 0)", "overrides": {
            "dataset": "pocus", "size": 112, "num_frames": 64, "data_dir": str(pocus)}})
    return cases


def measure_pipeline(args: argparse.Namespace, log) -> list[dict[str, Any]]:
    """Epoch time with the bundle's loader (and a ``ThreadDataLoader``) over the model-only time, DAS training."""
    from monai.bundle import ConfigParser
    from monai.data import ThreadDataLoader

    rows = []
    for case in _pipeline_cases(args):
        parser = ConfigParser()
        video = case["overrides"].get("dataset") == "pocus"
        parser.read_config(str(VIDEO_TRAIN_CONFIG if video else TRAIN_CONFIG))
        parser.update({"method": "das", "batch_size": args.batch, "mlflow": False, "keep_ratio": args.keep_ratio,
                       "bundle_root": str(Path(args.out) / "_work" / "cost_pipeline"), **case["overrides"]})
        log(f"[pipeline] {case['case']}: building the bundle's train#dataloader")
        t0 = time.perf_counter()
        loader = parser.get_parsed_content("train#dataloader")
        build_s = time.perf_counter() - t0
        torch.manual_seed(0)
        net = parser.get_parsed_content("network")
        opt = parser.get_parsed_content("optimizer")
        thread_loader = ThreadDataLoader(loader.dataset, batch_size=args.batch, shuffle=True, num_workers=0,
                                         buffer_size=1)
        n_epoch = len(loader)
        n = n_epoch if args.pipeline_batches <= 0 else min(args.pipeline_batches, n_epoch)

        def batches(dl):
            for i, batch in enumerate(dl):
                if i >= n:
                    break
                yield batch["image"], torch.as_tensor(batch["label"]).long().reshape(-1)

        cached = list(batches(loader))

        def loader_only(dl=loader):
            for _ in batches(dl):
                pass

        def model_only():
            for x, y in cached:
                train_step(net, opt, x, y)

        def loader_and_model(dl):
            for x, y in batches(dl):
                train_step(net, opt, x, y)

        log(f"[pipeline] {case['case']}: {n} of {n_epoch} batches per pass, {args.pipeline_repeats} rounds")
        times = time_interleaved({
            "model_only": model_only,
            "bundle_loader_only": loader_only,
            "bundle_loader_and_model": functools.partial(loader_and_model, loader),
            "thread_loader_and_model": functools.partial(loader_and_model, thread_loader),
        }, args.pipeline_repeats, warmup=0)
        med = {k: summarize_times(v)["min"] for k, v in times.items()}  # best of the rounds, as above
        per_epoch = n_epoch / n
        rows.append({
            "case": case["case"], "items": len(loader.dataset), "batch": args.batch,
            "batches_per_epoch": n_epoch, "batches_timed": n,
            "dataset_build_s": round(build_s, 2),
            "loader": f"{type(loader).__name__}(num_workers={loader.num_workers}) on {type(loader.dataset).__name__}",
            "loader_only_epoch_s": round(med["bundle_loader_only"] * per_epoch, 2),
            "model_only_epoch_s": round(med["model_only"] * per_epoch, 2),
            "bundle_loader_epoch_s": round(med["bundle_loader_and_model"] * per_epoch, 2),
            "thread_loader_epoch_s": round(med["thread_loader_and_model"] * per_epoch, 2),
            "bundle_loader_x_model_only": _ratio(med["bundle_loader_and_model"], med["model_only"]),
            "thread_loader_x_model_only": _ratio(med["thread_loader_and_model"], med["model_only"]),
        })
    return rows


MODEL_COLUMNS = [
    ("method", "method"), ("frames_kept", "k"), ("params_sampler", "sampler params"),
    ("params_downstream", "downstream params"), ("macs_sampler", "sampler MACs"),
    ("macs_downstream", "downstream MACs"), ("macs_x_full", "MACs × full"),
    ("latency_b1_ms", "latency b=1 (ms)"), ("latency_b1_x_full", "× full"),
    ("latency_batch_ms", "latency b=B (ms)"), ("latency_batch_x_full", "× full"),
    ("train_items_per_s", "train (inputs/s)"), ("train_speedup_vs_full", "speed-up vs full"),
    ("peak_infer_mib", "peak infer (MiB)"), ("peak_train_mib", "peak train (MiB)"),
    ("peak_train_x_full", "train mem × full"),
]
SAMPLER_COLUMNS = [
    ("scenario", "scenario"), ("T", "T"), ("k", "k"), ("sampler", "sampler"),
    ("sequential_steps", "sequential steps"), ("params", "params"), ("macs", "MACs / input"),
    ("latency_b1_ms", "latency b=1 (ms)"), ("latency_b1_x_das", "× DAS"),
    ("latency_batch_ms", "latency b=B (ms)"), ("latency_batch_x_das", "× DAS"),
]
PIPELINE_COLUMNS = [
    ("case", "dataset"), ("items", "train items"), ("batches_timed", "batches timed / epoch"),
    ("dataset_build_s", "dataset build (s)"), ("loader_only_epoch_s", "loading only (s/epoch)"),
    ("model_only_epoch_s", "model only (s/epoch)"), ("bundle_loader_epoch_s", "bundle loader + model (s/epoch)"),
    ("bundle_loader_x_model_only", "× model only"), ("thread_loader_epoch_s", "ThreadDataLoader + model (s/epoch)"),
    ("thread_loader_x_model_only", "× model only"),
]


def _fmt(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({k: (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000 else v)
                    for k, v in r.items()})
    return out


def report(env: dict, args: argparse.Namespace, scenarios: list[Scenario], models: list[dict], samplers: list[dict],
           pipeline: list[dict], parts: str = "") -> str:
    mode = "SMOKE (tiny sizes; checks the script, numbers mean nothing)" if args.smoke else "full measurement"
    lines = [
        "# Cost of DAS and the baselines",
        "",
        f"Mode: **{mode}**.",
        "",
        environment_markdown(env),
        "",
        *([parts, ""] if parts else []),
        f"Settings: keep ratio {args.keep_ratio}, batch B={args.batch}, {args.repeats} interleaved timed rounds at "
        f"batch B and for training, {args.repeats_b1} at batch 1 (after one untimed warm-up round). Times are the "
        "best of the rounds (contention from other processes on a shared machine only adds time; the medians are in "
        "the CSV/JSON). MACs, parameters and memory are exact; time ratios carry the machine's noise (methods with "
        "identical compute, e.g. uniform and random, show its size).",
        "",
        "How to read it: *MACs* are multiply-accumulates per input (torch's FLOP counter / 2; the sampler's on all T "
        "frames, the downstream network's on the k kept frames). *Latency*: eval-mode forward without gradient. "
        "*Train*: one step of forward + cross-entropy + backward + Adam (the bundle's optimizer) at batch B. "
        "*Peak memory*: the highest amount of CPU tensor memory allocated during the call above what was live "
        "before it (activations, gradients, temporaries), summed from `torch.profiler` allocation/free events "
        "(`profile_memory=True`); parameters, Adam state and the input batch are not included. Ratios are against "
        "`full` measured in the same rounds.",
    ]
    for sc in scenarios:
        rows = [r for r in models if r["scenario"] == sc.name]
        lines += ["", f"## {sc.description}, keep ratio {args.keep_ratio}", "", markdown_table(_fmt(rows),
                                                                                                 MODEL_COLUMNS)]
    lines += [
        "", "## The sampler alone: DAS (one pass) against ADPS (k sequential steps)", "",
        "Eval mode, no gradient; input is the T-frame sequence. ADPS runs its frame encoder and LSTM cell once per "
        "kept frame, one after another; DAS scores all frames in one attention pass.", "",
        markdown_table(_fmt(samplers), SAMPLER_COLUMNS),
    ]
    if pipeline:
        lines += [
            "", "## Data pipeline: the real loader against model-only time (DAS training step)", "",
            "The bundle's `train#dataloader` (from `bundles/das_volume_classification/configs/train.json` through "
            "`monai.bundle.ConfigParser`) and MONAI's `ThreadDataLoader` (batches prepared in a background thread) "
            "on the same dataset, against the same training steps on batches already in memory. Per-epoch times are "
            "the measured time per batch × batches per epoch. *Dataset build* is the one-off construction (reading "
            "the .npz, or decoding and caching the clips in a `CacheDataset`).", "",
            markdown_table(_fmt(pipeline), PIPELINE_COLUMNS),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds at batch B and for training")
    p.add_argument("--repeats-b1", type=int, default=10, help="timed rounds at batch 1 and for the samplers")
    p.add_argument("--batch", type=int, default=16, help="batch size B")
    p.add_argument("--keep-ratio", type=float, default=0.5, help="k / T")
    p.add_argument("--scenarios", nargs="+", default=None, help=f"subset of {list(SCENARIOS)}")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--no-pipeline", action="store_true", help="skip the data pipeline measurement")
    p.add_argument("--pipeline-batches", type=int, default=6, help="batches per timed pass (0: whole epoch)")
    p.add_argument("--pipeline-repeats", type=int, default=2, help="timed rounds of the data pipeline passes")
    p.add_argument("--data-dir", default=str(_default_data_dir()), help="shared data folder")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and one round: checks the script only")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.repeats_b1, args.batch = 1, 1, 2
        args.pipeline_batches, args.pipeline_repeats = 2, 1
        table = SMOKE_SCENARIOS
    else:
        table = SCENARIOS
    names = args.scenarios or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {list(table)}.")
    scenarios = [table[n] for n in names]
    args.out = str(Path(args.out) if args.out else REPO / "benchmarks" / "results")
    torch.set_num_threads(args.threads)
    env = environment(argv if argv is None else [sys.argv[0], *argv])
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)

    log(f"cost benchmark ({'smoke' if args.smoke else 'full'}), {env['cpu_model']}, {args.threads} threads")
    models, samplers = [], []
    for sc in scenarios:
        models += measure_models(sc, list(args.methods), args, log)
        ks = [num_kept(sc.num_frames, args.keep_ratio)]
        if sc is scenarios[-1]:  # sweep k on the last scenario
            ks = sorted({num_kept(sc.num_frames, r) for r in (0.125, 0.25, 0.5, 0.75)})
        samplers += measure_samplers(sc, args, ks, log)
    pipeline = [] if args.no_pipeline else measure_pipeline(args, log)
    env["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    env["duration_s"] = round(time.perf_counter() - start, 1)
    result = {"mode": "smoke" if args.smoke else "full", "environment": env, "settings": vars(args),
              "models": models, "samplers": samplers, "pipeline": pipeline}
    write_results(Path(args.out), result, args, scenarios)
    log(f"wrote {Path(args.out) / 'cost.md'} (+ .csv, .json) in {env['duration_s']} s")
    return result


def write_results(out: Path, result: dict[str, Any], args: argparse.Namespace, scenarios: list[Scenario]) -> None:
    """
    ``cost.json``, ``cost.csv``, ``cost_samplers.csv``, ``cost_pipeline.csv`` and ``cost.md`` in ``out``. A part this
    run did not measure (``--no-pipeline``, or no data set found) leaves its file as it is, and the report says which
    parts it measured and which files beside it come from an earlier run (``bench_utils.parts_note``).
    """
    parts = {"models and samplers (" + ", ".join(sc.name for sc in scenarios) + ")":
             (True, ["cost.csv", "cost_samplers.csv"]),
             # --no-pipeline, or no data set found: not measured
             "data pipeline": (bool(result["pipeline"]), ["cost_pipeline.csv"])}
    note = parts_note(out, parts)
    result["parts_measured"] = [name for name, (measured, _) in parts.items() if measured]
    write_json_atomic(result, out / "cost.json")
    write_csv(result["models"], out / "cost.csv")
    write_csv(result["samplers"], out / "cost_samplers.csv")
    if result["pipeline"]:
        write_csv(result["pipeline"], out / "cost_pipeline.csv")
    write_text_atomic(report(result["environment"], args, scenarios, result["models"], result["samplers"],
                             result["pipeline"], note), out / "cost.md")


if __name__ == "__main__":
    main()
