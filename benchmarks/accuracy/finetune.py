"""Short fine-tuning of exported models: does the gap between the methods survive a little retraining?

For one model, heuristic and side, each method and amount: mask, export (mode upscale), evaluate, fine-tune the
exported (physically pruned) module for a few epochs with the training recipe at a tenth of its learning rate,
evaluate again. Rows carry the accuracy before and after; ``compare.gains`` on the ``accuracy`` column (after) gives
the gains at matched sparsity.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import torch

import fx_upscale

from .data import load_digits_split
from .sweep import METHODS, Point, Setting, calibration_batches, load_trained
from .train import TrainConfig, fit, predict


def finetune_points(
    model: str, heuristic: str, side: str, amounts: Sequence[float], epochs: int, setting: Setting, workers: int
) -> list[dict]:
    points = [Point(model, heuristic, side, method, amount) for method in METHODS for amount in amounts]
    jobs = [(point, epochs, setting) for point in points]
    if workers <= 1:
        return [_finetune_one(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_finetune_one, jobs)


def finetune_config(train: TrainConfig, epochs: int) -> TrainConfig:
    """The model's recipe for ``epochs`` epochs of fine-tuning: its one-cycle schedule at a tenth of its peak
    learning rate, without the constant tail."""
    return replace(train, epochs=epochs, tail_epochs=0, lr=train.lr / 10)


def _finetune_one(job: tuple) -> dict:
    point, epochs, setting = job
    torch.set_num_threads(1)
    split = load_digits_split(setting.data)
    model = load_trained(point.model, setting)
    x = split.test_x[:1]
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
    module = result.module
    before = float((predict(module, split.test_x).argmax(1) == split.test_y).float().mean())
    start = time.perf_counter()
    fit(module, split, finetune_config(setting.train[point.model], epochs), setting.data.noise)
    after = float((predict(module, split.test_x).argmax(1) == split.test_y).float().mean())
    report = result.report
    return {
        **asdict(point),
        "params_before": report.params_before,
        "params_after": report.params_after,
        "sparsity": round(1 - report.params_after / report.params_before, 6),
        "accuracy_before": round(before, 6),
        "accuracy": round(after, 6),
        "epochs": epochs,
        "seconds": round(time.perf_counter() - start, 1),
    }
