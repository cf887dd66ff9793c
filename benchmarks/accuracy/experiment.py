"""The whole experiment as one function: train (or load) the models, sweep the pruning points, compare, write.

:func:`run_experiment` is what ``python -m benchmarks.accuracy`` runs (and, reduced, what the test runs). Training
runs in spawned processes with the CPU kernels pinned (:data:`PORTABLE_KERNELS`): which vectorised kernels torch
picks depends on the machine, and so, bit for bit, do the trained weights (``reproducibility``).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import fx_upscale

from . import compare, depgraph
from .data import DataConfig, load_digits_split
from .sweep import (
    AMOUNTS,
    HEURISTICS,
    RECALIBRATION_BATCHES,
    SIDES,
    Point,
    Setting,
    all_points,
    calibration_batches,
    load_trained,
    run_points,
)
from .train import TrainConfig, accuracy, checkpoint_path, trained_model

MODELS = ("resnet18", "mobilenet_v2", "densenet121", "efficientnet_b0")
DIGITS = DataConfig()  # 32x32, 3 channels, stratified 80/20 split, seed 0
# Per model: trained until the training loss has flattened. A one-cycle schedule anneals the learning rate to a
# floor of 10% of its peak, and a tail of epochs trains at that constant rate: there the loss stops falling (its
# trend over the last 10 epochs is within two standard errors of zero; the curves are in the README), where a
# schedule annealed to zero keeps it falling until the last step. AdamW shrinks every weight by lr * weight_decay per
# step: over the schedule by exp(-weight_decay * (sum of the learning rates)), which DECAY sets to exp(-1.6) ~ 0.2
# for every model, so that what training does not hold up fades and filter norms rank channels by use rather than
# by initialisation (with a decay of 0.04, resnet18's filter norms kept their initial ranking: Spearman 0.94;
# magnitude_check.py measures it). efficientnet_b0 unclipped fit even its training images badly (57% with seed 2 in
# a shorter recipe): its gradient norm is clipped.
DECAY = 1.6
TRAINING = {
    "resnet18": TrainConfig(epochs=36, tail_epochs=12, floor=0.1, weight_decay=1.712),  # learning rates sum to 0.93
    "mobilenet_v2": TrainConfig(
        epochs=40, tail_epochs=10, floor=0.1, batch_size=32, lr=1e-2, weight_decay=0.211
    ),  # 7.58
    "densenet121": TrainConfig(epochs=36, tail_epochs=12, floor=0.1, weight_decay=1.712),  # 0.93
    "efficientnet_b0": TrainConfig(
        epochs=46, tail_epochs=16, floor=0.1, batch_size=32, clip_grad_norm=1.0, weight_decay=0.68
    ),  # 2.35
}
# Seconds each takes to train here (accuracy-models.csv), so that two workers start the longest first and finish
# together.
TRAINING_SECONDS = {"efficientnet_b0": 425, "densenet121": 347, "resnet18": 334, "mobilenet_v2": 204}
# The kernels every x86-64 machine since 2013 has: ATen's AVX2 kernels and oneDNN's AVX2 convolutions.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@dataclass
class Experiment:
    rows: list[dict]  # one per pruning point (sweep.evaluate_point)
    models: list[dict]  # one per trained model: accuracy, training seconds, ...
    gains: list[dict]  # compare.all_gains: every protocol, as measured and recalibrated
    tool: list[dict]  # one per Torch-Pruning target (depgraph.evaluate_target)
    tool_table: list[dict]  # compare.tool_rows
    timings: dict = field(default_factory=dict)

    def bases(self) -> dict[bool, dict[str, float]]:
        """The unpruned models' accuracies, as trained (False) and recalibrated (True)."""
        return {
            recal: {info["model"]: info["recalibrated_accuracy" if recal else "accuracy"] for info in self.models}
            for recal in (False, True)
        }


def run_experiment(
    models: Sequence[str] = MODELS,
    heuristics: Sequence[str] = HEURISTICS,
    sides: Sequence[str] = SIDES,
    amounts: Sequence[float] = AMOUNTS,
    *,
    tool_sparsities: Sequence[float] = depgraph.SPARSITIES,
    portable: bool = True,
    data: DataConfig = DIGITS,
    training: dict[str, TrainConfig] | None = None,
    workers: int = 2,
    directory: Path | None = None,
    quiet: bool = False,
) -> Experiment:
    training = {name: (training or TRAINING)[name] for name in models}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    trained = train_all(models, data, training, workers, directory, quiet, portable)
    trained_at = time.perf_counter()
    setting = Setting(data, training, directory)
    targets = [depgraph.Target(m, s) for m in models for s in tool_sparsities]
    points: list[Point | depgraph.Target] = [*all_points(models, heuristics, sides, amounts), *targets]
    with tqdm(total=len(points), desc="pruning", disable=quiet) as bar:

        def progress(row: dict) -> None:
            what = row.get("tool") or f"{row['heuristic']} {row['side']} {row['method']} {row['amount']}"
            bar.set_postfix_str(f"{row['model']} {what}")
            bar.update()

        results = run_points(points, setting, workers, progress)
    rows, tool = results[: len(points) - len(targets)], results[len(points) - len(targets) :]
    timings = {
        "train_seconds": round(trained_at - start, 1),
        "sweep_seconds": round(time.perf_counter() - trained_at, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "workers": workers,
        "points": len(rows),
    }
    experiment = Experiment(rows, trained, [], tool, [], timings)
    bases = experiment.bases()
    experiment.gains = compare.all_gains(rows, bases[False], bases[True])
    experiment.tool_table = compare.tool_rows(tool, rows, bases[False], bases[True]) if rows else []
    return experiment


def train_all(
    models: Sequence[str],
    data: DataConfig,
    training: dict[str, TrainConfig],
    workers: int,
    directory: Path | None,
    quiet: bool,
    portable: bool = True,
) -> list[dict]:
    """Train (or load from the cache) every model, ``workers`` at a time in spawned processes (kernels pinned if
    ``portable``); each one's record and test accuracy, as trained and recalibrated, evaluated in this process."""
    jobs = [(name, data, training[name], directory) for name in models]
    to_train = [job for job in jobs if not checkpoint_path(job[0], job[2], data, directory).exists()]
    to_train.sort(key=lambda job: -TRAINING_SECONDS.get(job[0], 0.0))  # the longest first
    records = {}
    if to_train:
        with kernels(PORTABLE_KERNELS if portable else {}):
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(to_train)) or 1)
        with pool, tqdm(total=len(to_train), desc="training", disable=quiet) as bar:
            for info in pool.imap_unordered(_train_one, to_train):
                records[info["model"]] = info
                bar.set_postfix_str(info["model"])
                bar.update()
    split = load_digits_split(data)
    return [describe(name, split, Setting(data, training, directory), records.get(name)) for name in models]


@contextmanager
def kernels(variables: dict[str, str]) -> Iterator[None]:
    """Environment variables set while processes are spawned (they read them when torch starts)."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _train_one(job: tuple) -> dict:
    name, data, train, directory = job
    torch.set_num_threads(1)
    _, info = trained_model(name, load_digits_split(data), train, data, directory=directory)
    return {"model": name, **info, "kernels": os.environ.get("ATEN_CPU_CAPABILITY", "native")}


def describe(name: str, split, setting: Setting, record: dict | None) -> dict:
    """One trained model's row: its accuracy as trained and with BatchNorm recalibrated (as the pruned models
    are), its recipe and its training record (from this run, or the JSON beside the cached checkpoint)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = load_trained(name, setting)
    if record is None:
        _, record = trained_model(name, split, setting.train[name], setting.data, directory=setting.directory)
    recalibrated = fx_upscale.recalibrate_batchnorm(model, calibration_batches(split, RECALIBRATION_BATCHES))
    torch.set_num_threads(threads)
    train = setting.train[name]
    return {
        "model": name,
        "accuracy": accuracy(model, split),
        "recalibrated_accuracy": accuracy(recalibrated, split),
        "epochs": train.epochs,
        "tail_epochs": train.tail_epochs,
        "floor": train.floor,
        "batch_size": train.batch_size,
        "weight_decay": train.weight_decay,
        "params": sum(p.numel() for p in model.parameters()),
        **{key: value for key, value in record.items() if key != "model"},
    }


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
