"""Parameters and multiply-accumulates of each sampler vs the downstream network.

Usage: python benchmarks/model_size.py [--frames 28] [--keep-ratio 0.5] [--size 28] [--classes 2]
Prints a markdown table measured on this run (one input, eval mode).
"""

from __future__ import annotations

import argparse

import torch

from monai_das.networks import SAMPLERS, build_classifier
from monai_das.utils import model_cost


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=28, help="T, slices per volume")
    p.add_argument("--size", type=int, default=28, help="H = W of a slice")
    p.add_argument("--keep-ratio", type=float, default=0.5, help="k / T")
    p.add_argument("--classes", type=int, default=2)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    x = torch.rand(1, 1, args.frames, args.size, args.size)
    rows = []
    print(f"T={args.frames}, k/T={args.keep_ratio}, frames {args.size}x{args.size}, 1 input, eval mode")
    print("| method | k | sampler params | downstream params | sampler MACs | downstream MACs | sampler/downstream MACs |")
    print("|---|---|---|---|---|---|---|")
    for method in SAMPLERS:
        net = build_classifier(method, args.classes, args.frames, keep_ratio=args.keep_ratio)
        c = model_cost(net, x)
        ratio = c["macs_sampler"] / c["macs_downstream"]
        rows.append({"method": method, **c})
        print(f"| {method} | {c['frames_kept']} | {c['params_sampler']:,} | {c['params_downstream']:,} | "
              f"{c['macs_sampler']:,} | {c['macs_downstream']:,} | {ratio:.4f} |")
    return rows


if __name__ == "__main__":
    main()
