"""Torch-Pruning (DepGraph; constrained by design) on the same trained models, at target parameter counts.

The tool users reach for today, beside fx_upscale's constrained and upscale exports. :func:`evaluate_target` finds,
by bisection on Torch-Pruning's ``pruning_ratio`` (one ratio for every coupled group, the classifier left whole),
the L2-magnitude pruned model (``MagnitudePruner`` with ``MagnitudeImportance(p=2)``) whose parameter count is
closest to ``(1 - sparsity)`` of the model's, then reports its accuracy as it is and with BatchNorm recalibrated
(as for fx_upscale's points), its CPU latency beside the unpruned model and the time of the final pruning call
(dependency graph, importance, removal). A benchmark extra: the library never imports ``torch_pruning``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5)
TOLERANCE = 0.005  # of the unpruned parameter count
STEPS = 10  # bisection steps at most


@dataclass(frozen=True)
class Target:
    model: str
    sparsity: float


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    """A pruned copy of ``model``: Torch-Pruning's L2 magnitude pruner, ``ratio`` of every group's channels."""
    import torch_pruning

    model = copy.deepcopy(model).eval()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = torch_pruning.pruner.MagnitudePruner(
        model,
        x,
        importance=torch_pruning.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[classifier],
    )
    pruner.step()
    return model.eval()


def ratio_for(model: nn.Module, x: torch.Tensor, target: int) -> float:
    """The pruning ratio whose pruned parameter count is closest to ``target`` (bisection)."""
    low, high, best = 0.0, 0.95, (0.0, count(model))
    for _ in range(STEPS):
        ratio = (low + high) / 2
        params = count(prune(model, x, ratio))
        if abs(params - target) < abs(best[1] - target):
            best = (ratio, params)
        if abs(params - target) <= TOLERANCE * count(model):
            break
        low, high = (ratio, high) if params > target else (low, ratio)
    return best[0]


def evaluate_target(model: nn.Module, split, target: Target) -> dict:
    """One CSV row: Torch-Pruning at ``target.sparsity`` of the parameters, evaluated like a pruning point."""
    from fx_upscale import recalibrate_batchnorm

    from .sweep import RECALIBRATION_BATCHES, calibration_batches
    from .timing import BATCH, latency
    from .train import accuracy

    x = split.test_x[:1]
    params_before = count(model)
    ratio = ratio_for(model, x, round((1 - target.sparsity) * params_before))
    start = time.perf_counter()
    pruned = prune(model, x, ratio)
    seconds = time.perf_counter() - start
    recalibrated = recalibrate_batchnorm(pruned, calibration_batches(split, RECALIBRATION_BATCHES))
    return {
        "tool": "torch-pruning",
        "model": target.model,
        "target_sparsity": target.sparsity,
        "pruning_ratio": round(ratio, 5),
        "params_before": params_before,
        "params_after": count(pruned),
        "sparsity": round(1 - count(pruned) / params_before, 6),
        "accuracy": accuracy(pruned, split),
        "recalibrated_accuracy": accuracy(recalibrated, split),
        **latency(model, pruned, split.test_x[:BATCH]),
        "seconds": round(seconds, 3),
    }
