"""Export-time benchmark: how long fx_upscale takes, end to end and for planning alone.

1. Export time (mask once, then trace + analysis + plan + passes; float32, batch 1, 224x224, 30% input-side
   unconstrained L2 masks) for resnet50, densenet121 and efficientnet_v2_s: the models are interleaved over
   ``--repeats`` rounds in one process; medians and min-max are reported.
2. A synthetic segment: one 1x1 conv producing 1024 channels read by 512 1x1 convs, each keeping a random 70% of
   them; the time to plan it (analysis + segments + ordering) on the traced graph.

    python benchmarks/export_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch
import torchvision
from torch import nn

import fx_upscale
from fx_upscale.tables import format_table

MODELS = ["resnet50", "densenet121", "efficientnet_v2_s"]


class Fan(nn.Module):
    """One producer of ``channels`` channels read by ``readers`` 1x1 convs."""

    def __init__(self, channels: int = 1024, readers: int = 512) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.heads = nn.ModuleList(nn.Conv2d(channels, 2, 1) for _ in range(readers))

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return sum(head(y) for head in self.heads)


def synthetic_plan_seconds(repeats: int) -> list[float]:
    rng = random.Random(0)
    model = Fan().eval()
    spec = fx_upscale.PruneSpec(inputs={f"heads.{i}.weight": rng.sample(range(1024), 307) for i in range(512)})
    graph_module = fx_upscale.trace(spec.apply(model), (torch.randn(1, 3, 7, 7),))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fx_upscale.plan(graph_module)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    cases = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        cases[name] = (model, x, fx_upscale.mask(model, x, amount=0.3, side="input"))
    seconds: dict[str, list[float]] = {name: [] for name in MODELS}
    for _ in range(args.repeats):
        for name, (model, x, spec) in cases.items():
            start = time.perf_counter()
            fx_upscale.export(model, x, spec=spec)
            seconds[name].append(time.perf_counter() - start)
    seconds["synthetic plan: 512 consumers x 1024 channels"] = synthetic_plan_seconds(args.repeats)
    print(
        f"threads 1, {args.repeats} interleaved repeats, load average {load_before:.2f} before / "
        f"{os.getloadavg()[0]:.2f} after, torch {torch.__version__}"
    )
    rows = [(name, *(f"{f(values):.2f}" for f in (statistics.median, min, max))) for name, values in seconds.items()]
    print(format_table(rows, ("case", "median s", "min s", "max s"), markdown=True))


if __name__ == "__main__":
    main()
