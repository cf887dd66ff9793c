"""The pruning sweep: for each model, heuristic, side, method and amount, mask, export, evaluate.

One *point* (start at :func:`evaluate_point`) is ``fx_upscale.mask(model, x, amount=..., heuristic=..., side=...,
method=...)`` on the trained model, then ``fx_upscale.export(model, x, spec=spec, mode="upscale")``: the exported
(physically pruned) module is evaluated on the test split in float32, and so is the masked model
``spec.apply(model)``; their predictions must agree (argmax over the test set; any disagreement is re-checked in
float64 and reported). The same again with BatchNorm recalibrated (``fx_upscale.recalibrate_batchnorm`` of the
masked model on 8 training batches of 32, then exported with the same spec): columns ``recalibrated_*``. No
fine-tuning. ``sparsity = 1 - params_after / params_before`` of the export; its CPU latency (``timing``) beside the
unpruned model's.

:func:`run_points` spreads the points over worker processes (one thread each), the slowest model first; it also
runs the Torch-Pruning points (``depgraph``), which carry a ``tool`` instead of a heuristic.
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

import fx_upscale

from . import depgraph
from .data import DataConfig, Split, load_digits_split
from .timing import BATCH, latency
from .train import TrainConfig, build_model, checkpoint_path, predict

# The heuristics the paper's harness runs at local scope (it runs LAMP only with a global threshold: within a layer
# LAMP ranks channels as L2 does; in a five-heuristic run 65 of its 112 points gave L2's results). --heuristics adds it.
HEURISTICS = ("l1", "l2", "fpgm", "hrank")
SIDES = ("input", "output")
METHODS = ("unconstrained", "constrained")
# Fractions of channels per layer (or group): dense where accuracy falls (post-training pruning of these models
# reaches chance level near 30-40% sparsity), then 0.3, 0.4 and 0.55, which give 32-56%, 45-72% and 63-88% parameter
# sparsity in the measured curves, so that every curve reaches 70%.
AMOUNTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.55)
CALIBRATION_BATCHES = 2  # HRank: this many training batches of 32 images
RECALIBRATION_BATCHES = 8  # BatchNorm recalibration: this many training batches of 32 images (no augmentation)


@dataclass(frozen=True)
class Point:
    model: str
    heuristic: str
    side: str
    method: str
    amount: float


@dataclass(frozen=True)
class Setting:
    """What every worker needs to rebuild the data and load the trained models."""

    data: DataConfig
    train: dict[str, TrainConfig]
    directory: Path | None


def calibration_batches(split: Split, count: int = CALIBRATION_BATCHES) -> list[torch.Tensor]:
    return [split.train_x[32 * i : 32 * (i + 1)] for i in range(count)]


def evaluate_point(model: nn.Module, split: Split, point: Point) -> dict:
    """Mask, export (mode upscale), evaluate the export and the masked model, as they are and with BatchNorm
    recalibrated; time the export; one CSV row."""
    x = split.test_x[:1]
    start = time.perf_counter()
    spec = fx_upscale.mask(
        model,
        x,
        amount=point.amount,
        heuristic=point.heuristic,
        side=point.side,
        method=point.method,
        calibration=calibration_batches(split) if point.heuristic == "hrank" else None,
    )
    result = fx_upscale.export(model, x, spec=spec, mode="upscale")
    seconds = time.perf_counter() - start
    masked = spec.apply(model)
    recalibrated = fx_upscale.recalibrate_batchnorm(masked, calibration_batches(split, RECALIBRATION_BATCHES))
    recalibrated_export = fx_upscale.export(recalibrated, x, spec=spec, mode="upscale").module
    report = result.report
    return {
        **asdict(point),
        "params_before": report.params_before,
        "params_after": report.params_after,
        "sparsity": round(1 - report.params_after / report.params_before, 6),
        **compare_predictions(result.module, masked, split, ""),
        **compare_predictions(recalibrated_export, recalibrated, split, "recalibrated_"),
        "gathers": report.gathers,
        "narrows": report.narrows,
        "extra_pruned_channels": report.extra_pruned_channels,
        **latency(model, result.module, split.test_x[:BATCH]),
        "seconds": round(seconds, 3),
    }


def compare_predictions(exported: nn.Module, masked: nn.Module, split: Split, prefix: str) -> dict:
    """Accuracy of the export and of the masked model, and how far their predictions and logits differ."""
    exported_logits, masked_logits = predict(exported, split.test_x), predict(masked, split.test_x)
    predicted = exported_logits.argmax(1)
    differ = predicted != masked_logits.argmax(1)
    return {
        f"{prefix}accuracy": round(float((predicted == split.test_y).float().mean()), 6),
        f"{prefix}masked_accuracy": round(float((masked_logits.argmax(1) == split.test_y).float().mean()), 6),
        f"{prefix}mismatches": int(differ.sum()),
        f"{prefix}mismatches_float64": mismatches_float64(exported, masked, split.test_x[differ])
        if differ.any()
        else 0,
        f"{prefix}max_abs_logit_diff": float((exported_logits - masked_logits).abs().max()),
    }


def mismatches_float64(exported: nn.Module, masked: nn.Module, x: torch.Tensor) -> int:
    """How many of ``x`` (images whose float32 predictions differ) still differ in float64."""
    exported64, masked64 = copy.deepcopy(exported).double(), copy.deepcopy(masked).double()
    return int((predict(exported64, x.double()).argmax(1) != predict(masked64, x.double()).argmax(1)).sum())


_WORKER: dict = {}


def _start_worker(setting: Setting) -> None:
    torch.set_num_threads(1)
    _WORKER.clear()
    _WORKER.update(setting=setting, split=load_digits_split(setting.data), models={})


def _run_one(job: tuple[int, Point | depgraph.Target]) -> tuple[int, dict]:
    index, point = job
    setting, models = _WORKER["setting"], _WORKER["models"]
    if point.model not in models:
        models[point.model] = load_trained(point.model, setting)
    if isinstance(point, depgraph.Target):
        return index, depgraph.evaluate_target(models[point.model], _WORKER["split"], point)
    return index, evaluate_point(models[point.model], _WORKER["split"], point)


def load_trained(name: str, setting: Setting) -> nn.Module:
    model = build_model(name, setting.train[name])
    path = checkpoint_path(name, setting.train[name], setting.data, setting.directory)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def all_points(
    models: Sequence[str], heuristics: Sequence[str], sides: Sequence[str], amounts: Sequence[float]
) -> list[Point]:
    return [
        Point(m, h, s, method, a)
        for m in models
        for h in heuristics
        for s in sides
        for method in METHODS
        for a in amounts
    ]


def run_points(
    points: Sequence[Point | depgraph.Target],
    setting: Setting,
    workers: int,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every point's row, in the order of ``points``; ``workers`` processes (1: in this process)."""
    rows: dict[int, dict] = {}
    for index, row in _results(list(enumerate(points)), setting, workers):
        rows[index] = row
        if progress is not None:
            progress(row)
    return [rows[index] for index in range(len(points))]


def _results(jobs: list[tuple[int, Point | depgraph.Target]], setting: Setting, workers: int) -> Iterator[tuple]:
    if workers <= 1:
        _start_worker(setting)
        yield from map(_run_one, jobs)
        return
    slowest_first = sorted(jobs, key=lambda job: -COST.get(job[1].model, 1.0))
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(setting,)) as pool:
        yield from pool.imap_unordered(_run_one, slowest_first)


COST = {"densenet121": 4.0, "efficientnet_b0": 2.0, "mobilenet_v2": 1.5, "resnet18": 1.0}  # relative, for ordering
