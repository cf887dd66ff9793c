"""Grouped convolutions (ResNeXt, RegNet): every group keeps the same width, on both sides, and exports stay exact.

Masks are drawn per group (a weight column zeroed for the rows of one group only) and per filter, so the groups
want different widths; the export keeps the extra channels that equal widths need (``report.kept_for_groups``)
and must still compute exactly what the masked model computes.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact, gathers_in_graph, randomize_batchnorm
from torch import nn

import fx_upscale


class GroupedBlock(nn.Module):
    """A ResNeXt-like block (1x1, grouped 3x3, 1x1, residual), then a grouped conv and a channel multiplier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.bn_stem = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn_grouped = nn.BatchNorm2d(16)
        self.reduce = nn.Conv2d(16, 8, 1)
        self.pair = nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.multiplier = nn.Conv2d(12, 24, 3, padding=1, groups=12)  # depthwise with two filters per channel
        self.head = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        y = torch.relu(self.bn_stem(self.stem(x)))
        z = torch.relu(self.bn_grouped(self.grouped(y))) + y
        return self.head(torch.relu(self.multiplier(torch.relu(self.pair(self.reduce(z))))))


class FunctionalGrouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.weight = nn.Parameter(torch.randn(8, 4, 3, 3))
        self.bias = nn.Parameter(torch.randn(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(F.conv2d(self.stem(x), self.weight, self.bias, 1, 1, 1, 2))


GROUPED = {"grouped": "grouped.weight", "pair": "pair.weight", "multiplier": "multiplier.weight"}


def grouped_masks(model: nn.Module, seed: int) -> nn.Module:
    """Zero, per group, random input columns of every grouped conv, random filters, and random plain columns."""
    rng = random.Random(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                rows = module.out_channels // module.groups
                for g in range(module.groups):
                    for k in range(module.weight.shape[1]):
                        if rng.random() < 0.4:
                            module.weight[g * rows : (g + 1) * rows, k] = 0
                for o in range(module.out_channels):
                    if rng.random() < 0.3:
                        module.weight[o] = 0
                        module.bias[o] = 0
            elif isinstance(module, nn.Conv2d) and module.in_channels > 3:
                for k in range(module.in_channels):
                    if rng.random() < 0.3:
                        module.weight[:, k] = 0
    return model


def make(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return grouped_masks(randomize_batchnorm(GroupedBlock().double().eval(), seed), seed)


X = torch.randn(2, 3, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["upscale", "baseline"])
@pytest.mark.parametrize("seed", range(12))
def test_grouped_exports_are_exact(seed: int, mode: str) -> None:
    model = make(seed)
    result = fx_upscale.export(model, X, mode=mode)
    assert_exact(result, model, X)
    assert result.report.gathers == gathers_in_graph(result.module)
    for name in GROUPED:
        module = result.module.get_submodule(name)
        assert module.weight.shape[0] == module.out_channels and module.out_channels % module.groups == 0
        assert module.weight.shape[1] * module.groups == module.in_channels
    symbolic = torch.fx.symbolic_trace(result.module)
    torch.testing.assert_close(symbolic(X), result.module(X), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(12))
def test_grouped_constrained_never_gathers(seed: int) -> None:
    result = fx_upscale.export(make(seed), X, mode="constrained")
    assert gathers_in_graph(result.module) == 0 and result.report.gathers == 0
    assert result.module(X).shape == (2, 4, 8, 8)


def test_unequal_groups_keep_channels_and_say_so() -> None:
    """Group 0 of ``grouped`` keeps two filters, the others one: each keeps two, and the report counts the rest."""
    model = randomize_batchnorm(GroupedBlock().double().eval())
    with torch.no_grad():
        model.grouped.weight[[1, 2, 3, 6, 7, 10, 11, 14, 15]] = 0  # group 0 keeps rows 0, 1; groups 1-3 keep one row
        model.grouped.bias.zero_()
        model.reduce.weight[:, [1, 2, 3, 6, 7, 10, 11, 14, 15]] = 0
        model.bn_stem.weight[[1, 2, 3, 6, 7, 10, 11, 14, 15]] = 0  # the residual carries none of them either
        model.bn_stem.bias[[1, 2, 3, 6, 7, 10, 11, 14, 15]] = 0
        model.stem.weight[[1, 2, 3, 6, 7, 10, 11, 14, 15]] = 0
        model.stem.bias[[1, 2, 3, 6, 7, 10, 11, 14, 15]] = 0
    result = fx_upscale.export(model, X)
    assert_exact(result, model, X)
    assert result.module.grouped.out_channels == 8  # 4 groups x 2, not the 7 channels something needs
    assert result.report.kept_for_groups == 1
    assert "kept for groups 1" in result.report.summary()


def test_functional_grouped_conv() -> None:
    torch.manual_seed(0)
    model = FunctionalGrouped().double().eval()
    with torch.no_grad():
        model.weight[:4, 1] = 0  # group 0 drops its second input column
        model.weight[[1, 6]] = 0  # one filter of each group
        model.bias[[1, 6]] = 0
    result = fx_upscale.export(model, X)
    assert_exact(result, model, X)
    assert result.module.weight.shape == (6, 4, 3, 3)  # 2 groups x 3 filters; inputs: group 1 still needs 4


def test_grouped_masks_from_a_spec() -> None:
    """A PruneSpec names a grouped weight's columns (its axis 1), the same in every group."""
    torch.manual_seed(0)
    model = randomize_batchnorm(GroupedBlock().double().eval())
    spec = fx_upscale.PruneSpec(inputs={"grouped.weight": [0, 3]}, outputs={"pair.weight": [0, 1, 6]})
    result = fx_upscale.export(model, X, spec=spec)
    assert_exact(result, spec.apply(model), X)
    assert result.module.grouped.in_channels == 8
    # pair's filters feed ``multiplier``, whose 12 groups read one channel each: dropping one would drop a group,
    # so the three masked filters stay (as zeros) and the report says so
    assert result.module.pair.out_channels == 12 and result.report.kept_for_groups == 3
