"""Attention-head pruning on timm transformers: heads removed whole, exact, and the latency it buys.

Per model (timm, ``pretrained=False``, seed 0) and fraction of heads: ``fx_upscale.mask`` (L2, output side,
unconstrained: a head's query, key and value rows are one class, chosen whole) restricted to the attention's qkv
projections, then ``fx_upscale.export`` (mode upscale) through each front end. Reports the heads kept (summed over
the blocks), the parameters kept, the exactness (float64, batch 2: max |exported - masked| over the output's
scale) and the latency of the unpruned model against the export (float32, CPU, one thread, interleaved rounds:
median and quartiles; ``fx_upscale.latency.time_round_robin``). Near-zero parameters (layer scales) are redrawn as
in the timm tests, so that the output depends on the input. Writes ``benchmarks/results/attention_heads.csv``
and prints the README table.

    OMP_NUM_THREADS=1 python benchmarks/attention_heads.py [--models deit_small_patch16_224 ...]
        [--fractions 0.25 0.5] [--batch 1] [--repeats 15] [--out benchmarks/results/attention_heads.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import randomize_small_parameters  # noqa: E402

import fx_upscale  # noqa: E402
from fx_upscale import PruneSpec  # noqa: E402
from fx_upscale.latency import summarize, time_round_robin  # noqa: E402
from fx_upscale.tables import format_table  # noqa: E402

MODELS = ["deit_small_patch16_224", "vit_base_patch16_224", "cait_xxs24_224", "davit_tiny"]
CAPTURES = ("symbolic_trace", "torch.export")


def build(name: str) -> nn.Module:
    """The model, seeded, with its near-zero parameters (layer scales initialised at 1e-5) redrawn as the timm
    tests do, so that its output depends on its input and the exactness check means something."""
    torch.manual_seed(0)
    return randomize_small_parameters(timm.create_model(name, pretrained=False)).eval()


def input_size(model: nn.Module) -> tuple[int, ...]:
    return tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))


def heads_spec(model: nn.Module, x: torch.Tensor, fraction: float) -> PruneSpec:
    """``fraction`` of each attention's heads masked (their query, key and value rows), by L2 norm."""
    spec = fx_upscale.mask(model, x, amount=fraction, side="output", method="unconstrained")
    return PruneSpec(outputs={name: rows for name, rows in spec.outputs.items() if name.endswith("qkv.weight")})


def head_dims(model: nn.Module) -> dict[str, int]:
    """Each timm attention's qkv weight name -> its head dimension."""
    return {
        f"{name}.qkv.weight": module.qkv.out_features // (3 * module.num_heads)
        for name, module in model.named_modules()
        if isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int)
    }


def heads(module: nn.Module, dims: dict[str, int]) -> int:
    """Heads over every attention of ``module`` (the unpruned model's or an export's): qkv rows / 3 / head_dim."""
    return sum(p.shape[0] // (3 * dims[name]) for name, p in module.named_parameters() if name in dims)


def exactness(model: nn.Module, spec: PruneSpec, size: tuple[int, ...], capture: str) -> tuple[float, nn.Module]:
    """max |exported - masked| over the masked output's scale (float64, batch 2), checking first that the output
    differs between the two samples (else the check could not see a wrongly routed channel)."""
    double = model.double()
    x = torch.randn(2, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = spec.apply(double)(x)
    scale = expected.abs().max().item()
    if (expected[0] - expected[1]).abs().max().item() <= 1e-3 * scale:
        raise RuntimeError("the masked model's output hardly depends on its input: no exactness check")
    result = fx_upscale.export(double, x, spec=spec, capture=capture)
    with torch.no_grad():
        error = (result.module(x) - expected).abs().max().item() / scale
    model.float()
    return error, result.module


def measure(name: str, fractions: list[float], batch: int, repeats: int) -> list[dict]:
    model = build(name)
    dims = head_dims(model)
    size = input_size(model)
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(1))
    rows = []
    for fraction in fractions:
        spec = heads_spec(model, x, fraction)
        errors, modules = {}, {}
        for capture in CAPTURES:
            errors[capture], modules[capture] = exactness(model, spec, size, capture)
        exported = modules["symbolic_trace"].float()
        seconds = time_round_robin({("unpruned",): model, ("export",): exported}, x, repeats=repeats, warmup=2)
        before, after = summarize(seconds[("unpruned",)]), summarize(seconds[("export",)])
        params = sum(p.numel() for p in exported.parameters()) / sum(p.numel() for p in model.parameters())
        rows.append({
            "model": name, "fraction": fraction, "heads_before": heads(model, dims),
            "heads_after": heads(exported, dims),
            "params_kept": round(params, 4), "error_symbolic_trace": errors["symbolic_trace"],
            "error_torch_export": errors["torch.export"], "batch": batch,
            "unpruned_ms": round(before[0], 2), "unpruned_q1": round(before[1], 2), "unpruned_q3": round(before[2], 2),
            "export_ms": round(after[0], 2), "export_q1": round(after[1], 2), "export_q3": round(after[2], 2),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    headers = ["model", "heads masked", "heads kept", "params kept", "max error (both front ends)",
               "unpruned ms (q1-q3)", "export ms (q1-q3)", "speed-up"]  # fmt: skip
    cells = [
        [r["model"], f"{r['fraction']:.0%}", f"{r['heads_after']} / {r['heads_before']}", f"{r['params_kept']:.1%}",
         f"{max(r['error_symbolic_trace'], r['error_torch_export']):.0e}",
         f"{r['unpruned_ms']:.1f} ({r['unpruned_q1']:.1f}-{r['unpruned_q3']:.1f})",
         f"{r['export_ms']:.1f} ({r['export_q1']:.1f}-{r['export_q3']:.1f})",
         f"{r['unpruned_ms'] / r['export_ms']:.2f}x"]
        for r in rows
    ]  # fmt: skip
    return format_table(cells, headers, markdown=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/attention_heads.csv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    rows = [row for name in args.models for row in measure(name, args.fractions, args.batch, args.repeats)]
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(table(rows))
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nwrote {args.out} ({len(rows)} rows) in {time.time() - start:.0f} s; load average {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
