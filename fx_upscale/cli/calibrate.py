"""``fx-upscale calibrate``: measure the latency cost model's constants on this machine and cache them
(:func:`fx_upscale.cost_model.calibrate`, :func:`~fx_upscale.cost_model.save_cost_model`); exports made on the
same device, dtype, backend and thread count then plan with them. Start reading at :func:`command_calibrate`."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import torch

from .. import cost_model as cm
from ..tables import format_table
from .errors import CommandError
from .models import DTYPES

RATES = {
    "seconds_per_byte": "GB/s", "seconds_per_memory_byte": "GB/s", "seconds_per_grouped_byte": "GB/s",
    "seconds_per_unaligned_grouped_byte": "GB/s",
    "seconds_per_special_byte": "GB/s", "seconds_per_norm_byte": "GB/s", "seconds_per_fresh_byte": "GB/s",
    "seconds_per_pool_tap": "G taps/s", "seconds_per_mac": "G multiply-adds/s",
    "seconds_per_batched_mac": "G multiply-adds/s",
}  # fmt: skip
SIZES = {"fresh_bytes": "MiB", "cache_bytes": "MiB", "channel_block": "channels", "width_block": "columns"}


def command_calibrate(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    for backend in args.backend:
        model = cm.calibrate(args.device, DTYPES[args.dtype], backend)
        path = cm.save_cost_model(model)
        print(f"{model.key}: cached in {path}")
        print(constants_table(model))
    return 0


def constants_table(model: cm.CostModel) -> str:
    """A Markdown table of ``model``'s constants, in readable units."""
    rows = []
    for name, value in asdict(model).items():
        if name.endswith("_seconds"):
            rows.append([name, f"{value * 1e6:.2f}", "µs"])
        elif name in RATES:  # a rate of zero: that cost is not there (no fresh allocations on a GPU)
            rate = f"{1e-9 / value:.1f}" if value else "free"
            rows.append([name.replace("seconds_per_", "") + " rate", rate, RATES[name]])
        elif name in SIZES:
            rows.append([name, str(value >> 20 if SIZES[name] == "MiB" else value), SIZES[name]])
    return format_table(rows, ["constant", "value", "unit"], markdown=True)
