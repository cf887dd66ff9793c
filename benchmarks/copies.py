"""Copies benchmark: what each export mode inserts, per model and pruning amount.

For each torchvision model (weights=None, seed 0, batch 1, 224x224, float32) and each amount, masks the model with
input-side unconstrained L2 masks and exports it in modes baseline and upscale; records gathers, narrows, copied
elements per forward, parameters kept and export seconds. Writes a CSV and prints a Markdown table.

    python benchmarks/copies.py [--models resnet18 ...] [--amounts 0.1 0.3 0.5] [--out benchmarks/results/copies.csv]
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch
import torchvision

import fx_upscale

MODELS = ["resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s", "mnasnet0_5"]


def measure(name: str, amount: float, size: int) -> list[dict]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    spec = fx_upscale.mask(model, x, amount=amount, side="input")
    rows = []
    for mode in ("baseline", "upscale"):
        start = time.perf_counter()
        report = fx_upscale.export(model, x, spec=spec, mode=mode).report
        rows.append(
            {
                "model": name,
                "amount": amount,
                "mode": mode,
                "gathers": report.gathers,
                "narrows": report.narrows,
                "copied_elements": report.copied_elements,
                "params_before": report.params_before,
                "params_after": report.params_after,
                "export_seconds": round(time.perf_counter() - start, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--amounts", nargs="+", type=float, default=[0.1, 0.3, 0.5])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/copies.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for name in args.models for amount in args.amounts for row in measure(name, amount, args.size)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"threads 1, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    print("| model | amount | baseline gathers / copied elements | upscale gathers / narrows / copied elements | "
          "params kept | upscale export s |")
    print("|---|---|---|---|---|---|")
    for base, up in zip(rows[::2], rows[1::2]):
        print(
            f"| {up['model']} | {up['amount']:.0%} | {base['gathers']} / {base['copied_elements']:,} | "
            f"{up['gathers']} / {up['narrows']} / {up['copied_elements']:,} | "
            f"{100 * up['params_after'] / up['params_before']:.1f}% | {up['export_seconds']:.2f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
