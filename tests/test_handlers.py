"""Handlers registered for custom ops and modules: how channels cross them, and what they refuse."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale.ops import Mismatch


@torch.fx.wrap
def soft_sign(x):
    return x / (1 + x.abs())


class SoftSignNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(soft_sign(self.conv1(x)).erfinv())


X = torch.rand(2, 3, 5, 5, dtype=torch.float64) * 0.5
SPEC = fx_upscale.PruneSpec(outputs={"conv1.weight": [0, 5]})


@pytest.fixture
def registered():
    fx_upscale.register_pointwise(soft_sign, keeps_zero=True)
    fx_upscale.register_pointwise("erfinv", keeps_zero=True)
    yield
    fx_upscale.unregister(soft_sign)
    fx_upscale.unregister("erfinv")


def test_unregistered_function_is_refused() -> None:
    model = SoftSignNet().double().eval()
    with pytest.raises(fx_upscale.UnsupportedOpError, match="soft_sign"):
        fx_upscale.export(model, X, spec=SPEC)


def test_registered_function_and_method_pass_channels_through(registered) -> None:
    model = SoftSignNet().double().eval()
    result = fx_upscale.export(model, X, spec=SPEC)
    assert_exact(result, SPEC.apply(model), X)
    assert result.module.conv1.out_channels == 6 and result.module.conv2.in_channels == 6


def test_a_function_that_does_not_keep_zero_keeps_the_channels(registered) -> None:
    fx_upscale.register_pointwise(soft_sign, keeps_zero=False)  # as if soft_sign(0) were not 0
    model = SoftSignNet().double().eval()
    result = fx_upscale.export(model, X, spec=SPEC)
    assert_exact(result, SPEC.apply(model), X)
    assert result.module.conv1.out_channels == 8  # the pruned filters' channels are no longer zero after it


def test_per_channel_registration_takes_a_module_type() -> None:
    with pytest.raises(TypeError, match="nn.Module subclass"):
        fx_upscale.register_per_channel(soft_sign)


class Scale(nn.Module):
    """``x[:, c] * weight[c]``, with an attribute that must follow the channel count."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)


@dataclass(frozen=True)
class ScaleRole:
    data: str
    module: str


class ForgetfulScaleHandler(fx_upscale.OpHandler[ScaleRole]):
    """Reslices the weight but forgets ``channels``: its own invariant must catch that."""

    role = ScaleRole

    def recognise(self, node, context, data):
        return ScaleRole(node.args[0].name, str(node.target))

    def propagate(self, walk, node, role):
        walk.set_output(node, walk.layouts[role.data], walk.zeros[role.data])

    def rewrite(self, name, role, context, updates):
        rows = context.physical.get(name)
        if rows is not None:
            updates.keep(f"{role.module}.weight", 0, rows, context.size(name))

    def invariant(self, module):
        if isinstance(module, Scale) and module.channels != module.weight.numel():
            return [Mismatch("channels", module.channels, module.weight.numel())]
        return []


def test_export_checks_the_invariants_of_the_table_it_was_given() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Scale(8), nn.Conv2d(8, 4, 1)).double().eval()
    table = fx_upscale.default_handlers().copy()
    table.register_handler(ForgetfulScaleHandler(), [Scale])
    spec = fx_upscale.PruneSpec(outputs={"0.weight": [1, 2]})
    with pytest.raises(
        fx_upscale.UnsupportedGraphError, match=r"module '1' \(Scale\) has channels=8 but its tensors say 6"
    ):
        fx_upscale.export(model, X, spec=spec, handlers=table)
    assert not fx_upscale.default_handlers().is_leaf(Scale(2))  # the default table was not changed
