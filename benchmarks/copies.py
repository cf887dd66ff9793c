"""Copies benchmark: what each export mode copies, per model and pruning amount, predicted and measured.

For each torchvision model (weights=None, seed 0, batch 1, 224x224, float32, one thread) and each amount, masks the
model with input-side unconstrained L2 masks and exports it in modes baseline and upscale. Records gathers, narrows,
absorbed selections, copied elements per forward as the report predicts them, the elements copying ops produce in a
real forward (``fx_upscale.copy_count``: inserted = index_select, total = every copying op including the model's own
``cat``), parameters kept and export seconds (trace + analysis + plan + passes). Writes a CSV and prints a Markdown
table.

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
from fx_upscale.copy_count import count_copies
from fx_upscale.tables import format_table

MODELS = ["resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s", "mnasnet0_5"]


def measure(name: str, amount: float, size: int) -> list[dict]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    spec = fx_upscale.mask(model, x, amount=amount, side="input")
    unpruned = count_copies(model, x)
    rows = []
    for mode in ("baseline", "upscale"):
        start = time.perf_counter()
        result = fx_upscale.export(model, x, spec=spec, mode=mode)
        seconds = time.perf_counter() - start
        measured = count_copies(result.module, x)
        report = result.report
        rows.append(
            {
                "model": name,
                "amount": amount,
                "mode": mode,
                "gathers": report.gathers,
                "narrows": report.narrows,
                "absorbed": report.absorbed,
                "copied_elements": report.copied_elements,
                "measured_inserted": measured["index_select"],
                "measured_total": measured.total,
                "unpruned_total": unpruned.total,
                "params_before": report.params_before,
                "params_after": report.params_after,
                "export_seconds": round(seconds, 3),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """One row per model and amount: baseline against upscale, as the report predicts and as measured."""
    headers = ("model", "amount", "baseline: gathers / copied", "upscale: gathers / narrows / absorbed / copied",
               "measured copies, total (unpruned → upscale)", "params kept", "upscale export s")  # fmt: skip
    table = []
    for base, up in zip(rows[::2], rows[1::2]):
        assert up["measured_inserted"] == up["copied_elements"] and base["measured_inserted"] == base["copied_elements"]
        table.append((
            up["model"], f"{up['amount']:.0%}", f"{base['gathers']} / {base['copied_elements']:,}",
            f"{up['gathers']} / {up['narrows']} / {up['absorbed']} / {up['copied_elements']:,}",
            f"{up['unpruned_total']:,} → {up['measured_total']:,}",
            f"{100 * up['params_after'] / up['params_before']:.1f}%", f"{up['export_seconds']:.2f}",
        ))  # fmt: skip
    return format_table(table, headers, markdown=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--amounts", nargs="+", type=float, default=[0.1, 0.3, 0.5])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/copies.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = [row for name in args.models for amount in args.amounts for row in measure(name, amount, args.size)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    load_after = os.getloadavg()[0]
    print(f"threads 1, load average {load_before:.2f} before / {load_after:.2f} after, torch {torch.__version__}")
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
