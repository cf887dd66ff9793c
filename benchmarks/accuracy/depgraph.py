"""Torch-Pruning (DepGraph; constrained by design) on the same trained models, at target parameter counts.

The tool users reach for today, beside fx_upscale's constrained and upscale exports. :func:`evaluate_target` finds,
by bisection on Torch-Pruning's ``pruning_ratio`` (one ratio for every coupled group, the classifier left whole),
the L2-magnitude pruned model (``MagnitudePruner`` with ``MagnitudeImportance(p=2)``) whose parameter count is
closest to ``(1 - sparsity)`` of the model's, then reports its accuracy as it is and with BatchNorm recalibrated
(as for fx_upscale's points), its CPU latency beside the unpruned model and the time of the final pruning call
(dependency graph, importance, removal). Like every fx_upscale point, each is checked against a masked model: the
*masked twin* of :func:`prune_with_twin`, the unpruned model with the removed channels zeroed (predictions and
logits compared as trained and recalibrated). A benchmark extra: the library never imports ``torch_pruning``.
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
EXACTNESS = ("mismatches", "mismatches_float64", "max_abs_logit_diff")  # pruned against its masked twin


@dataclass(frozen=True)
class Target:
    model: str
    sparsity: float


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    """A pruned copy of ``model``: Torch-Pruning's L2 magnitude pruner, ``ratio`` of every group's channels."""
    return _pruned(model, x, ratio, None)


def prune_with_twin(model: nn.Module, x: torch.Tensor, ratio: float) -> tuple[nn.Module, nn.Module]:
    """The pruned copy of :func:`prune` and its *masked twin*: another copy of ``model`` in which every channel
    Torch-Pruning removes is zeroed instead (the rows of each layer whose output channels it removes: weight rows,
    bias, BatchNorm scale and shift). The two compute the same function when Torch-Pruning's removal is exact, as
    fx_upscale's export and its masked model do."""
    twin = MaskedTwin(model)
    return _pruned(model, x, ratio, twin), twin.model


def _pruned(model: nn.Module, x: torch.Tensor, ratio: float, twin: MaskedTwin | None) -> nn.Module:
    """:func:`prune`, zeroing in ``twin`` (if any) what each group removes."""
    import torch_pruning

    pruned = copy.deepcopy(model).eval()
    classifier = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]
    pruner = torch_pruning.pruner.MagnitudePruner(
        pruned,
        x,
        importance=torch_pruning.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[classifier],
    )
    names = {module: name for name, module in pruned.named_modules()}
    for group in pruner.step(interactive=True):
        removals = [
            (names[dep.target.module], [int(i) for i in idxs])
            for dep, idxs in group
            if twin is not None and pruner.DG.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names
        ]  # modules of the model only: Torch-Pruning's graph also holds its ops (add, cat, ...)
        group.prune()
        for name, rows in removals:
            assert twin is not None
            twin.zero(name, rows, remaining=_out_channels(pruned.get_submodule(name)))
    return pruned.eval()


class MaskedTwin:
    """A copy of a model whose rows are zeroed as Torch-Pruning removes them from another copy. Torch-Pruning prunes
    group after group, each naming rows by their position in the layer *as pruned so far*; the twin keeps, per layer,
    the original row of each remaining position."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval()
        self.rows: dict[str, list[int]] = {}  # layer -> original row of each position Torch-Pruning still holds

    @torch.no_grad()
    def zero(self, name: str, rows: list[int], remaining: int) -> None:
        """Zero what produces output channels ``rows`` (current positions) of layer ``name``, which has
        ``remaining`` output channels once they are removed."""
        layer = self.model.get_submodule(name)
        original = self.rows.setdefault(name, list(range(_out_channels(layer))))
        chosen = [original[r] for r in rows]
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            layer.weight[:, chosen] = 0
        elif isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            layer.weight[chosen] = 0
        else:
            raise TypeError(f"no masked twin for Torch-Pruning's removal of output channels of {type(layer).__name__}")
        if layer.bias is not None:
            layer.bias[chosen] = 0
        removed = set(rows)
        self.rows[name] = [row for position, row in enumerate(original) if position not in removed]
        if len(self.rows[name]) != remaining:
            raise RuntimeError(f"{name}: Torch-Pruning left {remaining} output channels, the twin expects "
                               f"{len(self.rows[name])}")  # fmt: skip


def _out_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return layer.weight.shape[1] * layer.groups
    return layer.weight.shape[0]


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

    from .sweep import RECALIBRATION_BATCHES, calibration_batches, compare_predictions
    from .timing import BATCH, latency
    from .train import accuracy

    x = split.test_x[:1]
    params_before = count(model)
    ratio = ratio_for(model, x, round((1 - target.sparsity) * params_before))
    start = time.perf_counter()
    prune(model, x, ratio)
    seconds = time.perf_counter() - start  # the pruning call alone, as a user makes it
    pruned, masked = prune_with_twin(model, x, ratio)  # the same pruned model, with its masked twin
    batches = calibration_batches(split, RECALIBRATION_BATCHES)
    recalibrated = recalibrate_batchnorm(pruned, batches)
    exactness = {
        **compare_predictions(pruned, masked, split, ""),
        **compare_predictions(recalibrated, recalibrate_batchnorm(masked, batches), split, "recalibrated_"),
    }
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
        **{
            f"{prefix}{column}": exactness[f"{prefix}{column}"]
            for prefix in ("", "recalibrated_")
            for column in EXACTNESS
        },
        **latency(model, pruned, split.test_x[:BATCH]),
        "seconds": round(seconds, 3),
    }
