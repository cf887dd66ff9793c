"""Where a forward's time goes, predicted and measured, per pricing rule of the cost model.

For each torchvision model (``weights=None``, seed 0, 224x224, float32, eval, one thread) and batch: the cost
model's prediction per rule (``fx_upscale.cost_model.KINDS``: dense and grouped convolutions, norms, poolings,
transcendental ops, ``cat``, other ops, views, module calls), beside the time ``torch.profiler`` measures in the ops
of that rule (the inclusive CPU time of each top-level aten op, the mean over ``--repeats`` forwards), and the
forward's wall-clock median without the profiler. The cost model is calibrated at the start (``--cached``: the
calibration ``fx-upscale calibrate`` cached). It locates the cost model's error: which rule misses the time.

    OMP_NUM_THREADS=1 python benchmarks/cost_breakdown.py [--models mobilenet_v2 ...] [--batch 1 8] [--csv PATH]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torchvision

from fx_upscale.cost_model import KINDS, calibrate, load_cost_model, op_kind, predict_latency
from fx_upscale.tables import format_table

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s", "densenet121"]
CONVOLUTIONS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}
VIEWS = {"view", "flatten", "reshape", "narrow", "t", "transpose", "permute", "expand", "squeeze", "unsqueeze",
         "slice", "select", "as_strided", "_reshape_alias", "alias", "detach", "unflatten", "chunk",
         "split"}  # fmt: skip


def measured_kind(event) -> str:
    """The pricing rule of a profiled top-level aten op (its name as the module calls it, e.g. ``conv2d``)."""
    name = event.name.removeprefix("aten::")
    if name in CONVOLUTIONS:
        image, weight = event.input_shapes[0], event.input_shapes[1]
        return op_kind("convolution", image[1] // weight[1])
    if name in VIEWS:
        return "view"
    return op_kind(name)  # the module-level names (batch_norm, softmax, max_pool2d) are the rules' names too


def is_top_level(event) -> bool:
    """An aten op that no other aten op called."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return event.name.startswith("aten::")


def measure(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[dict[str, float], float]:
    """Seconds per forward in each rule's top-level aten ops (profiled), and the wall-clock median (not profiled)."""
    with torch.no_grad():
        for _ in range(3):
            model(x)
        wall = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            wall.append(time.perf_counter() - start)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(repeats):
                model(x)
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if is_top_level(event):
            seconds[measured_kind(event)] += event.cpu_time_total / 1e6 / repeats
    return seconds, statistics.median(wall)


def breakdown(name: str, batch: int, cost_model, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    predicted = predict_latency(model, x, cost_model)
    measured, wall = measure(model, x, repeats)
    rows = [{"model": name, "batch": batch, "kind": kind, "predicted_ms": 1000 * predicted.by_kind.get(kind, 0.0),
             "measured_ms": 1000 * measured.get(kind, 0.0)} for kind in KINDS]  # fmt: skip
    profiled = sum(measured.values())
    rows.append({"model": name, "batch": batch, "kind": "total (measured: profiled ops)",
                 "predicted_ms": predicted.milliseconds, "measured_ms": 1000 * profiled})  # fmt: skip
    rows.append({"model": name, "batch": batch, "kind": "total (measured: wall-clock median)",
                 "predicted_ms": predicted.milliseconds, "measured_ms": 1000 * wall})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cached", action="store_true", help="use the cached calibration instead of calibrating")
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/results/cost_breakdown.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    cost_model = load_cost_model() if args.cached else calibrate()
    rows = [row for name in args.models for batch in args.batch
            for row in breakdown(name, batch, cost_model, args.repeats)]  # fmt: skip
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cells = [(r["model"], r["batch"], r["kind"], f"{r['predicted_ms']:.2f}", f"{r['measured_ms']:.2f}",
              f"{r['predicted_ms'] / r['measured_ms'] - 1:+.0%}" if r["measured_ms"] > 0.05 else "")
             for r in rows if r["predicted_ms"] > 0.05 or r["measured_ms"] > 0.05]  # fmt: skip
    print(format_table(cells, ("model", "batch", "rule", "predicted ms", "measured ms", "error"), markdown=True))
    print(f"\nload average {load:.2f} before, {os.getloadavg()[0]:.2f} after; cost model: {cost_model.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
