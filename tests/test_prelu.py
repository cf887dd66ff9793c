"""PReLU (``nn.PReLU`` and ``F.prelu``): per-channel weights follow the kept channels; a shared weight is an activation.

Exported equals masked in float64, through modules and functional calls, output- and input-side masks, and the
module's ``num_parameters`` follows its weight.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact
from torch import nn

import fx_upscale

X = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class ModuleNet(nn.Module):
    def __init__(self, per_channel: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.PReLU(8 if per_channel else 1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


class FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.slope = nn.Parameter(torch.rand(8))
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(F.prelu(self.conv1(x), self.slope))


def build(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = model.double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "act" in name or name == "slope":
                parameter.uniform_(-0.5, 0.5)  # slopes of both signs, none the default
    return model


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "shared"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_prelu_module_exports_exactly(per_channel: bool, side: str) -> None:
    model = build(ModuleNet(per_channel))
    spec = fx_upscale.mask(model, X, amount=0.4, side=side)
    result = fx_upscale.export(model, X, spec=spec)
    assert_exact(result, spec.apply(model), X)
    kept = result.module.conv1.out_channels
    assert kept < 8
    act = result.module.act
    assert act.num_parameters == act.weight.numel() == (kept if per_channel else 1)


def test_prelu_function_reslices_its_weight() -> None:
    model = build(FunctionalNet())
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [0, 5, 6]})
    result = fx_upscale.export(model, X, spec=spec)
    assert_exact(result, spec.apply(model), X)
    assert result.module.slope.shape == (5,)
    assert torch.equal(result.module.slope, model.slope.detach()[[1, 2, 3, 4, 7]])


def test_prelu_keeps_zero_so_masks_cross_it() -> None:
    """An input-side mask of conv2 removes conv1's filter through the PReLU: PReLU(0) == 0."""
    model = build(ModuleNet(per_channel=True))
    spec = fx_upscale.PruneSpec(inputs={"conv2.weight": [2, 3]})
    result = fx_upscale.export(model, X, spec=spec)
    assert_exact(result, spec.apply(model), X)
    assert result.module.conv1.out_channels == 6 and result.module.act.num_parameters == 6


def test_prelu_invariant_names_num_parameters() -> None:
    act = nn.PReLU(8)
    act.weight = nn.Parameter(act.weight.detach()[:5])
    handler = fx_upscale.default_handlers().handler(
        fx_upscale.ops.PReLU(data="x", weight="w", per_channel=True, module=None)
    )
    [mismatch] = handler.invariant(act)
    assert (mismatch.attr, mismatch.actual, mismatch.expected) == ("num_parameters", 8, 5)
