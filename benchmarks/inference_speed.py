"""Inference on the engines the product ships (eager PyTorch vs ONNX Runtime), folder throughput, training epoch time.

Everything is measured side by side in one run (interleaved rounds: every round calls each case once, so a load
change on a shared machine hits all cases alike; latency tables give the best round, the CSV the medians too; the
eager cases and the ONNX Runtime cases are interleaved among themselves, one engine after the other, the ONNX Runtime
ones in blocks of ``--block`` calls, the best of each block counting, so that no case pays for the threads the
previous engine or session leaves spinning):

1. **Latency per method and engine** (``full``, ``uniform``, ``dps``, ``adps``, ``das`` and ``das_fs14``: DAS with
   ``sampler_kwargs={"feature_size": 14}``, frame statistics on frames averaged to 14 px, the latency option)
   at batch 1 and batch 16, eval mode, for each scenario of ``cost.py``
   (``vol28``: 28³ volumes k=14; ``vol64``: 64³ k=32; ``video64``: 64 frames of 112² k=32): eager PyTorch and ONNX
   Runtime (CPU execution provider, ``--threads`` intra-op threads) on the file ``monai_das.engines.save_onnx``
   writes (logits and kept indices from one graph), and each method's latency as a ratio to ``full`` on the same
   engine. Issue targets, printed with the table: DAS at keep 50 % ≤ 0.60× full at batch 1 and ≤ 0.55× at batch 16
   under ONNX Runtime (limit 0.50).
2. **Folder throughput**: ``--studies`` synthetic NIfTI studies (default 500; random sizes around 40×44×36 voxels,
   random spacing, so loading, reorientation, intensity scaling and resizing to 28³ all work) classified by the
   volume bundle's own ``configs/inference.json`` (in-process, ``monai.bundle.ConfigParser``; ONNX Runtime engine,
   batch 16), with ``num_workers`` 0 (decoding in the main thread) and 1 (decoding overlapped with the model), in
   studies/s; plus the parts alone: the data loader alone (decode + preprocess) and the model alone on the same
   batches already in memory. The largest part is named as the limit.
3. **Training epoch** (DAS, 256 volumes of 28³, batch 16, Adam, cross-entropy as the bundle's trainer): the
   MobileNetV3 encoder with its depthwise kernels cropped to maps smaller than them (the current code) against the
   same network with plain convolutions (the code before), alternating epochs, with the time split into sampler
   forward, encoder + head forward, backward and optimizer step; and the bundle's own training loader
   (``train#dataloader`` of ``train.json``) for one epoch (data).

Usage::

    python benchmarks/inference_speed.py                      # writes benchmarks/results/inference_speed.{md,csv}
    python benchmarks/inference_speed.py --smoke --out /tmp/s # tiny sizes, a few minutes on 2 cores: checks the script

Options: ``--out DIR``, ``--threads N [N ...]`` (torch and ONNX Runtime intra-op threads the latency is measured
with, default 2 and 1: on a shared 2-core VM the second core is often busy and 2-thread timings scatter; the first
count is used for the folder and training parts), ``--scenarios``, ``--methods`` (also the DAS variants with fewer
frame statistics, ``das_scale1``, ``das_nosobel``, ``das_stats``: see ``VARIANTS``),
``--repeats N`` (timed rounds at batch 16, default 5), ``--repeats-b1 N`` (rounds at batch 1, default 30),
``--block N`` (consecutive ONNX Runtime calls per case and round, the best counting; default 3),
``--studies N`` (default 500), ``--epochs N`` (timed training epochs per variant, default 2), ``--no-latency``,
``--no-folder``,
``--no-training``, ``--smoke``. A part left out (``--no-...``) leaves its CSV in ``--out`` as it is; the report names
the parts this run measured and any CSV beside it that an earlier run wrote. A focused run (a few scenarios, one part)
belongs in its own ``--out``, so that the published ``benchmarks/results/inference_speed.md`` and its CSVs stay one
run's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Threads spin while waiting (the OpenMP default behaviour on an idle machine), unlike cost.py's PASSIVE: measured on
# this 2-core box, PASSIVE halves the DAS training throughput (438 vs 231 ms per batch-16 step at 28³), and this
# script measures what a user gets. Must be set before torch is imported (cost.py only sets it when unset).
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost import SCENARIOS, SMOKE_SCENARIOS, Scenario, _ms, _ratio  # noqa: E402  (sets OMP_WAIT_POLICY first)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_utils import (  # noqa: E402
    REPO,
    environment,
    environment_markdown,
    markdown_table,
    parts_note,
    time_interleaved,
    write_csv,
    write_text_atomic,
)

from monai_das.engines import build_optimizer, save_onnx  # noqa: E402
from monai_das.networks import OnnxClassifier, build_classifier, num_kept  # noqa: E402

METHODS = ("full", "uniform", "dps", "adps", "das", "das_fs14")
#: method variants: a row name → (sampler, sampler_kwargs); ``das_fs14``: DAS with its frame statistics computed on
#: frames area-averaged to 14 px (``sampler_kwargs={"feature_size": 14}``, the latency option; default 32). The
#: others are what the sampler's cost would be with fewer frame statistics (not options anyone validated; asked for
#: with ``--methods``, never in the default run): ``das_scale1`` one scale (``scales=(1,)``), ``das_nosobel`` without
#: the Sobel magnitude, ``das_stats`` intensity and variance only
VARIANTS = {"das_fs14": ("das", {"feature_size": 14}), "das_scale1": ("das", {"scales": (1,)}),
            "das_nosobel": ("das", {"features": ("intensity", "variance", "laplacian")}),
            "das_stats": ("das", {"features": ("intensity", "variance")})}

INFERENCE_CONFIG = REPO / "bundles" / "das_volume_classification" / "configs" / "inference.json"
TRAIN_CONFIG = REPO / "bundles" / "das_volume_classification" / "configs" / "train.json"
TARGETS = {1: 0.60, 16: 0.55}


def _label(method: str) -> str:
    """``DAS`` for ``das``; a variant as its sampler with its settings, e.g. ``DAS (feature_size 14)``."""
    base, kwargs = VARIANTS.get(method, (method, {}))
    settings = ", ".join(f"{k} {v}" for k, v in kwargs.items())
    return base.upper() + (f" ({settings})" if settings else "")


def _median(times: list[float]) -> float:
    return statistics.median(times)


def _network(sc: Scenario, method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    method, sampler_kwargs = VARIANTS.get(method, (method, {}))
    return build_classifier(method, sc.num_classes, sc.num_frames, layout=sc.layout, keep_ratio=0.5,
                            sampler_kwargs=sampler_kwargs).eval()


def measure_latency(sc: Scenario, methods: list[str], args: argparse.Namespace, tmp: Path, log,
                    threads: list[int] | tuple[int, ...] = (2,)) -> list[dict]:
    """Eager vs ONNX Runtime latency of every method at batch 1 and 16 (interleaved), ratios to ``full``, for each
    count of torch and ONNX Runtime intra-op ``threads`` (each model is exported once)."""
    item = [1, sc.num_frames, sc.size, sc.size] if sc.layout == "volume" else [sc.num_frames, 1, sc.size, sc.size]
    nets, paths = {}, {}
    for m in methods:
        log(f"[latency] {sc.name}: exporting {m} to ONNX")
        nets[m] = _network(sc, m)
        paths[m] = save_onnx(nets[m], tmp / f"{sc.name}_{m}.onnx", item)
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        runners = {m: (nets[m], OnnxClassifier(paths[m], num_threads=n_threads)) for m in methods}
        gen = torch.Generator().manual_seed(0)
        for batch, repeats in ((1, args.repeats_b1), (args.batch, args.repeats)):
            x = torch.rand(batch, *item, generator=gen)
            eager_fns, ort_fns = {}, {}
            for m, (net, ort_net) in runners.items():
                def eager(net=net):
                    with torch.no_grad():
                        net(x)
                eager_fns[(m, "eager")] = eager
                ort_fns[(m, "onnxruntime")] = lambda r=ort_net: r.forward_with_indices(x)
            log(f"[latency] {sc.name}: {n_threads} thread(s), batch {batch}, {repeats} interleaved rounds of "
                f"{len(eager_fns)} eager cases, then of {len(ort_fns)} ONNX Runtime cases (blocks of {args.block})")
            # one engine at a time, in blocks: torch's OpenMP threads spin for a while after a call and each ONNX
            # Runtime session has its own spinning pool, so a case timed right after another engine or session
            # would be charged for its threads (a single session in a process, what a user runs, has none of that)
            times = time_interleaved(eager_fns, repeats, warmup=2)
            time.sleep(0.5)
            times.update(time_interleaved(ort_fns, repeats, warmup=2, block=args.block))
            # best of the rounds: other processes on a shared machine only ever add time (medians in the CSV)
            best = {key: min(v) for key, v in times.items()}
            medians = {key: _median(v) for key, v in times.items()}
            for m in runners:
                row = {"scenario": sc.name, "threads": n_threads, "method": m, "batch": batch,
                       "k": num_kept(sc.num_frames, 0.5) if m != "full" else sc.num_frames, "T": sc.num_frames}
                for engine in ("eager", "onnxruntime"):
                    row[f"{engine}_ms"] = _ms(best[(m, engine)])
                    row[f"{engine}_median_ms"] = _ms(medians[(m, engine)])
                    row[f"{engine}_vs_full"] = (_ratio(best[(m, engine)], best[("full", engine)])
                                                if "full" in runners else "")
                row["ort_speedup_vs_eager"] = _ratio(best[(m, "eager")], best[(m, "onnxruntime")])
                rows.append(row)
    return rows


def _write_studies(folder: Path, n: int, seed: int = 0) -> None:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers(32, 48, size=3))
        data = rng.normal(100.0, 20.0, size=shape).astype(np.float32)
        affine = np.diag([*rng.uniform(0.8, 1.5, size=3), 1.0])
        nib.save(nib.Nifti1Image(data, affine), str(folder / f"study_{i:04d}.nii.gz"))


def measure_folder(args: argparse.Namespace, tmp: Path, log) -> list[dict]:
    """Studies/s of the bundle's inference.json over a folder of NIfTI studies, and its parts alone."""
    from monai.bundle import ConfigParser

    folder, root = tmp / "studies", tmp / "bundle"
    log(f"[folder] writing {args.studies} synthetic NIfTI studies")
    _write_studies(folder, args.studies)
    size = 28 if not args.smoke else 16

    def parser(workers: int, out: str) -> ConfigParser:
        p = ConfigParser()
        p.read_config(str(INFERENCE_CONFIG))
        p.update({"bundle_root": str(root), "size": size, "device": "$torch.device('cpu')", "input": str(folder),
                  "output_dir": str(tmp / out), "batch_size": 16, "num_workers": workers, "skip_done": False,
                  "num_threads": args.threads[0]})
        return p

    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(parser(0, "init").get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    parser(0, "export").get_parsed_content("network")  # the ONNX export happens once, outside the timings
    rows = []
    for workers in (0, 1):
        p = parser(workers, f"out{workers}")
        evaluator = p.get_parsed_content("evaluator")
        n = len(p.get_parsed_content("todo"))
        log(f"[folder] inference.json over {n} studies, num_workers={workers}")
        t0 = time.perf_counter()
        evaluator.run()
        dt = time.perf_counter() - t0
        rows.append({"part": f"whole pipeline (inference.json, num_workers={workers})", "seconds": round(dt, 2),
                     "studies_per_s": round(n / dt, 1)})
    p = parser(0, "parts")
    loader, network = p.get_parsed_content("dataloader"), p.get_parsed_content("network")
    log("[folder] data loader alone (decode + preprocess)")
    t0 = time.perf_counter()
    batches = [b["image"] for b in loader]
    dt_data = time.perf_counter() - t0
    log("[folder] model alone on the batches in memory")
    t0 = time.perf_counter()
    for x in batches:
        network(x)
    dt_model = time.perf_counter() - t0
    n = sum(len(x) for x in batches)
    rows.append({"part": "data loader alone (read NIfTI, orient, scale, resize)", "seconds": round(dt_data, 2),
                 "studies_per_s": round(n / dt_data, 1)})
    rows.append({"part": "model alone (ONNX Runtime, batch 16)", "seconds": round(dt_model, 2),
                 "studies_per_s": round(n / dt_model, 1)})
    limit = "data (decoding/preprocessing)" if dt_data > dt_model else "model"
    for r in rows:
        r["limit"] = limit
    return rows


def _plain_convs(net: torch.nn.Module) -> None:
    """The encoder as before the kernel crop: every "same" convolution runs its whole kernel."""
    from monai_das.networks.blocks import SameConv2d

    for m in net.modules():
        if isinstance(m, SameConv2d):
            m.forward = (lambda mod: (lambda x: torch.nn.Conv2d.forward(mod, x)))(m)


def measure_training(args: argparse.Namespace, log) -> list[dict]:
    """DAS training epoch (256 volumes 28³, batch 16): cropped kernels vs plain convolutions, split by phase."""
    n, batch = (256, 16) if not args.smoke else (32, 8)
    size = 28 if not args.smoke else 16
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(n, 1, size, size, size, generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    variants = {}
    for name in ("plain convolutions (before)", "cropped kernels (now)"):
        torch.manual_seed(0)
        net = build_classifier("das", 2, size).train()
        if name.startswith("plain"):
            _plain_convs(net)
        variants[name] = (net, build_optimizer(net, lr=1e-3))
    phases = ("sampler", "encoder_head", "backward", "optimizer")
    acc: dict[str, dict[str, list[float]]] = {v: {p: [] for p in (*phases, "epoch")} for v in variants}

    def epoch(name: str) -> None:
        net, opt = variants[name]
        spent = dict.fromkeys(phases, 0.0)
        t_start = time.perf_counter()
        for i in range(0, n, batch):
            x, y = data[i:i + batch], labels[i:i + batch]
            t0 = time.perf_counter()
            out = net.sample(x)
            t1 = time.perf_counter()
            loss = F.cross_entropy(net.classify_frames(out.frames), y)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            for p, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                spent[p] += dt
        for p in phases:
            acc[name][p].append(spent[p])
        acc[name]["epoch"].append(time.perf_counter() - t_start)

    log(f"[training] warm-up, then {args.epochs} alternating epochs per variant ({n} volumes, batch {batch})")
    for name in variants:  # warm-up: one batch each
        net, opt = variants[name]
        F.cross_entropy(net(data[:batch]), labels[:batch]).backward()
        opt.zero_grad(set_to_none=True)
    for e in range(args.epochs):
        for name in variants:
            epoch(name)
            log(f"[training] {name}: epoch {e + 1} {acc[name]['epoch'][-1]:.1f} s")
    rows = []
    before = _median(acc["plain convolutions (before)"]["epoch"])
    for name in variants:
        row = {"variant": name, "epoch_s": round(_median(acc[name]["epoch"]), 2)}
        row.update({f"{p}_s": round(_median(acc[name][p]), 2) for p in phases})
        row["volumes_per_s"] = round(n / _median(acc[name]["epoch"]), 1)
        row["speedup_vs_before"] = _ratio(before, _median(acc[name]["epoch"]))
        rows.append(row)
    # the bundle's own training loader for one epoch (data)
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(TRAIN_CONFIG))
    p.update({"bundle_root": tempfile.mkdtemp(), "size": size, "num_train": n, "num_workers": 0})
    loader = p.get_parsed_content("train#dataloader")
    next(iter(loader))  # the cache is filled on first use
    t0 = time.perf_counter()
    for _ in loader:
        pass
    rows.append({"variant": "data: bundle train#dataloader (cached, random transforms)",
                 "epoch_s": round(time.perf_counter() - t0, 2)})
    return rows


def report(env: dict, args: argparse.Namespace, latency: list[dict], folder: list[dict], training: list[dict],
           parts: str = "") -> str:
    title = "# Inference engines, folder throughput and training epoch time"
    lines = [title + (" (SMOKE: tiny sizes, checks the script, measures nothing)" if args.smoke else ""), "",
             environment_markdown(env), "", *([parts, ""] if parts else [])]
    if latency:
        lines += ["## Latency per method: eager PyTorch vs ONNX Runtime (eval, best of interleaved rounds; medians in the CSV)", "",
                  f"Issue targets (ONNX Runtime, DAS at keep 50 %): ≤ {TARGETS[1]}× full at batch 1, "
                  f"≤ {TARGETS[16]}× at batch 16 (physical limit 0.50).", ""]
        lines.append(markdown_table(latency, [
            ("scenario", "scenario"), ("threads", "threads"), ("method", "method"), ("batch", "batch"), ("k", "k"),
            ("T", "T"),
            ("eager_ms", "eager ms"), ("onnxruntime_ms", "ORT ms"), ("ort_speedup_vs_eager", "ORT speed-up"),
            ("eager_vs_full", "eager / full"), ("onnxruntime_vs_full", "ORT / full")]))
        verdicts = []
        for r in latency:
            das = VARIANTS.get(r["method"], (r["method"],))[0] == "das"
            if das and r["batch"] in TARGETS and r["onnxruntime_vs_full"] != "":
                ok = r["onnxruntime_vs_full"] <= TARGETS[r["batch"]]
                name = _label(r["method"])
                verdicts.append(f"- {r['scenario']}, {r['threads']} thread(s), batch {r['batch']}: {name}/full under "
                                "ONNX Runtime "
                                f"{r['onnxruntime_vs_full']} (target ≤ {TARGETS[r['batch']]}): "
                                f"{'met' if ok else 'missed'}")
        lines += ["", *verdicts, ""]
    if folder:
        lines += ["## Folder throughput: the bundle's inference.json over NIfTI studies (ONNX Runtime, batch 16)", "",
                  markdown_table(folder, [("part", "part"), ("seconds", "s"), ("studies_per_s", "studies/s"),
                                          ("limit", "limit")]), ""]
    if training:
        lines += ["## DAS training epoch (sampler + MobileNetV3-Small, Adam), before/after the kernel crop", "",
                  markdown_table(training, [("variant", "variant"), ("epoch_s", "epoch s"),
                                            ("sampler_s", "sampler fwd s"), ("encoder_head_s", "encoder+head fwd s"),
                                            ("backward_s", "backward s"), ("optimizer_s", "optimizer s"),
                                            ("volumes_per_s", "volumes/s"), ("speedup_vs_before", "speed-up")]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                    help="intra-op thread counts the latency is measured with (the first one for the folder and "
                         "training parts)")
    ap.add_argument("--scenarios", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *(v for v in VARIANTS
                                                                                 if v not in METHODS)])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--repeats-b1", type=int, default=30)
    ap.add_argument("--block", type=int, default=3)
    ap.add_argument("--studies", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-folder", action="store_true")
    ap.add_argument("--no-training", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.repeats, args.repeats_b1, args.studies, args.epochs, args.block = 4, 1, 2, 12, 1, 2
    torch.set_num_threads(args.threads[0])
    table = SMOKE_SCENARIOS if args.smoke else SCENARIOS
    names = args.scenarios or list(table)
    unknown = [s for s in names if s not in table]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {sorted(table)}")
    env = environment(argv if argv is not None else sys.argv)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.1f} s] {msg}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        latency = [] if args.no_latency else [
            r for s in names for r in measure_latency(table[s], args.methods, args, tmp, log, args.threads)]
        latency.sort(key=lambda r: args.threads.index(r["threads"]))  # one table per thread count
        torch.set_num_threads(args.threads[0])
        folder = [] if args.no_folder else measure_folder(args, tmp, log)
    training = [] if args.no_training else measure_training(args, log)
    env["duration_s"] = round(time.time() - t_start, 1)
    env["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    text = write_results(out, env, args, latency, folder, training)
    print(text)
    return {"latency": latency, "folder": folder, "training": training}


def write_results(out: Path, env: dict, args: argparse.Namespace, latency: list[dict], folder: list[dict],
                  training: list[dict]) -> str:
    """
    ``inference_speed.md`` and the CSV of every part this run measured (``inference_speed_{latency,folder,
    training}.csv``) in ``out``; returns the report. A part not measured (``--no-latency``, ``--no-folder``,
    ``--no-training``) leaves its CSV as it is, and the report says which parts it measured and which files beside it
    come from an earlier run (``bench_utils.parts_note``).
    """
    parts = {"latency": (bool(latency), ["inference_speed_latency.csv"]),
             "folder throughput": (bool(folder), ["inference_speed_folder.csv"]),
             "training epoch": (bool(training), ["inference_speed_training.csv"])}
    text = report(env, args, latency, folder, training, parts_note(out, parts))
    write_text_atomic(text + "\n", out / "inference_speed.md")
    for rows, name in ((latency, "latency"), (folder, "folder"), (training, "training")):
        if rows:
            write_csv(rows, out / f"inference_speed_{name}.csv")
    return text


if __name__ == "__main__":
    main()
