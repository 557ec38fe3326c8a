"""BatchNorm lag: does the eval-mode network follow what was trained? Per epoch, with and without precise BN.

Trains the bundle's network (``bundles/das_volume_classification/configs/train.json``: its ``network``, ``optimizer``, ``loss``,
``train#dataloader`` and ``validate#dataloader``) for a few epochs, twice from the same seed: with BatchNorm running
averages only, and with :class:`monai_das.handlers.PreciseBNHandler` (statistics recomputed on the training batches
after each epoch). After every epoch it measures, on the training clips and on the validation split, the loss of the
eval-mode network and the spread (std across inputs, mean over classes) of its predicted probabilities: a spread near
0 means eval mode gives every input the same answer. Training and validation data only; the test split is not read.

Usage::

    python benchmarks/bn_lag.py                                   # POCUS fold 0, 32 frames 64×64, uniform, 8 epochs
    python benchmarks/bn_lag.py --override dataset=vesselmnist3d --override size=28 --override data_dir=...
    python benchmarks/bn_lag.py --smoke --out /tmp/bn                # synthetic, tiny (CI)

Writes ``<out>/bn_lag.md`` and ``.csv`` (default ``benchmarks/results``) with the command, date, machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (  # noqa: E402
    REPO,
    environment,
    environment_markdown,
    markdown_table,
    parse_override,
    write_csv,
    write_text_atomic,
)

CONFIGS = REPO / "bundles" / "das_volume_classification" / "configs"
VIDEO_CONFIGS = REPO / "bundles" / "das_video_classification" / "configs"


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        base = {"dataset": "synthetic", "size": 16, "num_train": 16, "num_val": 8, "batch_size": 8}
    else:
        data = Path(args.data_root) / "video" / "covid19_lus_pocus"
        base = {"dataset": "pocus", "data_dir": str(data), "probe": "convex", "num_frames": 32, "size": 64,
                "fold": 0}
    return {**base, "method": "uniform", "lr": 1e-3, "num_workers": 0, "mlflow": False, "num_figures": 0,
            **dict(args.override)}


def _eval_mode_stats(net: torch.nn.Module, loader, loss_fn, device) -> tuple[float, float]:
    """Loss and probability spread (std across inputs, mean over classes) of the eval-mode network on ``loader``."""
    net.eval()
    losses, probs, n = 0.0, [], 0
    with torch.no_grad():
        for batch in loader:
            x, y = batch["image"].to(device), batch["label"].long().view(-1).to(device)
            out = net(x)
            losses += float(loss_fn(out, y)) * len(y)
            n += len(y)
            probs.append(out.softmax(-1))
    return losses / n, float(torch.cat(probs).std(0).mean())


def run_variant(over: dict[str, Any], epochs: int, seed: int, precise_bn: bool, log) -> list[dict[str, Any]]:
    """Train once from ``seed``; one row of measurements per epoch."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    from monai_das.handlers import PreciseBNHandler

    # the bundle root (where a training run may write) is a temporary folder, removed when the variant is done
    with tempfile.TemporaryDirectory(prefix="bn_lag_") as bundle_root:
        parser = ConfigParser()
        parser.read_config(str((VIDEO_CONFIGS if over.get("dataset") == "pocus" else CONFIGS) / "train.json"))
        parser.update({"bundle_root": bundle_root, **over})
        set_determinism(seed)
        device = parser.get_parsed_content("device")
        net = parser.get_parsed_content("network")
        optimizer = parser.get_parsed_content("optimizer")
        loss_fn = parser.get_parsed_content("loss")
        train_loader = parser.get_parsed_content("train#dataloader")
        val_loader = parser.get_parsed_content("validate#dataloader")
        rows = []
        for epoch in range(1, epochs + 1):
            net.train()
            total, n = 0.0, 0
            for batch in train_loader:
                x, y = batch["image"].to(device), batch["label"].long().view(-1).to(device)
                optimizer.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                optimizer.step()
                total, n = total + loss.item() * len(y), n + len(y)
            if precise_bn:
                PreciseBNHandler(train_loader, net, num_batches=-1, device=device)()
            tr_loss, tr_std = _eval_mode_stats(net, train_loader, loss_fn, device)
            va_loss, va_std = _eval_mode_stats(net, val_loader, loss_fn, device)
            row = {"precise_bn": precise_bn, "epoch": epoch, "train_loss_train_mode": round(total / n, 4),
                   "train_loss_eval_mode": round(tr_loss, 4), "train_prob_std_eval_mode": float(f"{tr_std:.3g}"),
                   "val_loss_eval_mode": round(va_loss, 4), "val_prob_std_eval_mode": float(f"{va_std:.3g}")}
            log(f"precise_bn={precise_bn} epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                                         if k not in ("precise_bn", "epoch")))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("MONAI_DAS_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--override", action="append", type=parse_override, default=[], metavar="KEY=JSON",
                   help="bundle config override (repeatable), e.g. method=das")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--smoke", action="store_true", help="synthetic 16³ volumes, 2 epochs (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs = min(args.epochs, 2)
    torch.set_num_threads(args.threads)
    env = environment(argv if argv is None else [sys.argv[0], *argv])
    over = _overrides(args)
    rows = []
    for precise_bn in (False, True):
        rows += run_variant(over, args.epochs, args.seed, precise_bn, lambda m: print(m, flush=True))
    out = Path(args.out)
    write_csv(rows, out / "bn_lag.csv")
    table = markdown_table(rows, [(k, k.replace("_", " ")) for k in rows[0]])
    text = "\n".join([
        "# BatchNorm lag: eval-mode predictions with and without precise BN", "",
        f"Mode: **{'smoke' if args.smoke else 'measurement'}**.", "", environment_markdown(env), "",
        f"Bundle overrides: `{json.dumps({k: v for k, v in over.items() if k != 'data_dir'})}`; seed {args.seed}; "
        f"{args.epochs} epochs per variant, both from the same initial weights.", "",
        "*prob std*: standard deviation of the predicted probabilities across inputs (mean over classes); near 0, the "
        "eval-mode network answers every input alike. Training and validation splits only.", "", table, ""])
    write_text_atomic(text, out / "bn_lag.md")
    print(text)
    return rows


if __name__ == "__main__":
    main()
