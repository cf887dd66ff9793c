"""The recalibrated points whose float32 logits differ most between export and masked model, again in float64.

Reads ``benchmarks/results/accuracy.csv``, takes every point whose recalibrated float32 ``max |logit difference|`` is
above ``--above`` (default 1e-3), rebuilds it exactly as the sweep does (mask, ``recalibrate_batchnorm``, export of
the recalibrated masked model) and prints both differences, the logit scale and the smallest BatchNorm running
variance. A float64 difference at rounding level says the export computes what the masked model computes, and the
float32 one is rounding amplified by the normalisation.

    python -m benchmarks.accuracy.float64_check [--above 1e-3]
"""

from __future__ import annotations

import argparse
import copy
import csv
from pathlib import Path

import torch
from torch import nn

import fx_upscale

from .data import load_digits_split
from .experiment import DIGITS, TRAINING
from .sweep import RECALIBRATION_BATCHES, Point, Setting, calibration_batches, load_trained
from .train import predict

CSV = Path("benchmarks/results/accuracy.csv")


def suspicious_points(path: Path, above: float) -> list[Point]:
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if float(r["recalibrated_max_abs_logit_diff"] or 0) > above]
    return [Point(r["model"], r["heuristic"], r["side"], r["method"], float(r["amount"])) for r in rows]


def check(model: nn.Module, point: Point, split) -> dict:
    """The recalibrated export against the recalibrated masked model, in float32 and float64."""
    x = split.test_x[:1]
    calibration = calibration_batches(split) if point.heuristic == "hrank" else None
    spec = fx_upscale.mask(model, x, amount=point.amount, heuristic=point.heuristic, side=point.side,
                           method=point.method, calibration=calibration)  # fmt: skip
    recalibrated = fx_upscale.recalibrate_batchnorm(
        spec.apply(model), calibration_batches(split, RECALIBRATION_BATCHES)
    )
    exported = fx_upscale.export(recalibrated, x, spec=spec, mode="upscale").module
    float32 = (predict(exported, split.test_x) - predict(recalibrated, split.test_x)).abs().max().item()
    expected = predict(copy.deepcopy(recalibrated).double(), split.test_x.double())
    float64 = (predict(copy.deepcopy(exported).double(), split.test_x.double()) - expected).abs().max().item()
    variances = [
        m.running_var.min().item() for m in recalibrated.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    return {"float32": float32, "float64": float64, "scale": expected.abs().max().item(), "min_var": min(variances)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--above", type=float, default=1e-3)
    parser.add_argument("--csv", type=Path, default=CSV)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    split, models = load_digits_split(DIGITS), {}
    for point in suspicious_points(args.csv, args.above):
        if point.model not in models:
            models[point.model] = load_trained(point.model, Setting(DIGITS, {point.model: TRAINING[point.model]}, None))
        found = check(models[point.model], point, split)
        print(f"{point.model} {point.heuristic} {point.side} {point.method} {point.amount:.0%}: max |logit difference| "
              f"float32 {found['float32']:.2e}, float64 {found['float64']:.2e} (logits up to {found['scale']:.1f}; "
              f"smallest running variance {found['min_var']:.1e})", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
