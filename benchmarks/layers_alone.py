"""Layers alone against the whole forward: where the latency cost model's error comes from.

Calibrates the cost model (``fx_upscale.cost_model.calibrate``), then per model (torchvision, ``weights=None``, seed
0, 224x224, float32, one thread) and batch:

- every depthwise convolution timed alone on the input it gets in the model (captured by a forward hook; the fastest
  of 7 trials of 5 calls), summed, beside the cost model's price of the same convolutions;
- every aten op of the forward but views, timed alone the same way on copies of the arguments it got, summed: what
  the forward would take if each op ran as fast as in a tight loop (the cost model's micro-benchmarks);
- the whole forward: the median of 11 calls after 3 warm-ups, beside ``predict_latency``.

Writes a CSV (one row per model, batch and part) and prints it as a table with the load average.

``--variant constrained`` (or ``baseline``, ``upscale``) measures that export of each model (30% input-side
unconstrained L2 masks, ``fx_upscale.latency.build_variants``) instead of the unpruned model.

    python benchmarks/layers_alone.py [--models mobilenet_v2 ...] [--batch 1 8] [--variant unpruned]
        [--out benchmarks/results/layers_alone.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from fx_upscale.cost_model import CostModel, calibrate, is_view, predict_latency
from fx_upscale.latency import VARIANTS, build_variants
from fx_upscale.tables import format_table

MODELS = ("mobilenet_v2", "efficientnet_b0", "resnet50", "densenet121")
FIELDS = ("model", "variant", "batch", "part", "layers", "predicted_ms", "measured_ms", "error")


def fastest(call, trials: int = 7, calls: int = 5) -> float:
    """Seconds per call: the fastest of ``trials`` loops of ``calls`` calls, after 3 warm-ups."""
    with torch.no_grad():
        for _ in range(3):
            call()
        samples = []
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            samples.append((time.perf_counter() - start) / calls)
    return min(samples)


def depthwise_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Conv2d, torch.Tensor]]:
    """Each depthwise convolution of ``model`` with the input it gets on ``x``."""
    found: list[tuple[nn.Conv2d, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, _out: object) -> None:
        found.append((module, args[0].detach().clone()))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return found


def depthwise_row(model: nn.Module, x: torch.Tensor, cost_model: CostModel) -> dict | None:
    layers = depthwise_inputs(model, x)
    if not layers:
        return None
    measured = sum(fastest(lambda m=m, t=t: m(t)) for m, t in layers)
    predicted = sum(predict_latency(m, t, cost_model).seconds for m, t in layers)
    return {"part": "depthwise convolutions, each alone", "layers": len(layers), "predicted_ms": 1e3 * predicted,
            "measured_ms": 1e3 * measured}  # fmt: skip


class _OpCalls(TorchDispatchMode):
    """Every non-view aten op a forward dispatches, with copies of its arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not is_view(func):
            copy = tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, (args, kwargs))
            self.calls.append((func, copy))
        return func(*args, **kwargs)


def ops_row(model: nn.Module, x: torch.Tensor, cost_model: CostModel) -> dict:
    recorder = _OpCalls()
    with torch.no_grad(), recorder:
        model(x)
    measured = sum(fastest(lambda f=f, a=a, k=k: f(*a, **k)) for f, (a, k) in recorder.calls)
    predicted = predict_latency(model, x, cost_model)
    return {"part": "every op, each alone", "layers": len(recorder.calls), "predicted_ms": 1e3 * predicted.seconds,
            "measured_ms": 1e3 * measured}  # fmt: skip


def forward_row(model: nn.Module, x: torch.Tensor, cost_model: CostModel) -> dict:
    with torch.no_grad():
        for _ in range(3):
            model(x)
        samples = []
        for _ in range(11):
            start = time.perf_counter()
            model(x)
            samples.append(time.perf_counter() - start)
    predicted = predict_latency(model, x, cost_model).seconds
    return {"part": "whole forward (median of 11)", "layers": "", "predicted_ms": 1e3 * predicted,
            "measured_ms": 1e3 * statistics.median(samples)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--variant", choices=VARIANTS, default="unpruned")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/layers_alone.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    cost_model = calibrate()
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        unpruned = torchvision.models.get_model(name, weights=None).eval()
        for batch in args.batch:
            x = torch.randn(batch, 3, 224, 224)
            variants = {"unpruned": unpruned}
            if args.variant != "unpruned":
                variants = build_variants(unpruned, x, amount=0.3, cost_models={"eager": cost_model})["eager"]
            model = variants[args.variant]
            parts = (
                depthwise_row(model, x, cost_model),
                ops_row(model, x, cost_model),
                forward_row(model, x, cost_model),
            )
            for row in parts:
                if row is not None:
                    error = f"{row['predicted_ms'] / row['measured_ms'] - 1:+.0%}"
                    rows.append({"model": name, "variant": args.variant, "batch": batch, **row, "error": error})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        writer.writeheader()
        writer.writerows({**r, "predicted_ms": f"{r['predicted_ms']:.2f}", "measured_ms": f"{r['measured_ms']:.2f}"}
                         for r in rows)  # fmt: skip
    table = [[r["model"], r["variant"], r["batch"], r["part"], r["layers"], f"{r['predicted_ms']:.2f}",
              f"{r['measured_ms']:.2f}", r["error"]] for r in rows]  # fmt: skip
    headers = ("model", "variant", "batch", "part", "layers", "predicted ms", "measured ms", "error")
    print(format_table(table, headers, markdown=True))
    print(f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after; wrote {args.out}")


if __name__ == "__main__":
    main()
