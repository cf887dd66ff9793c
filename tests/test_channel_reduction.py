"""Sums and means over the channel axis (RMS normalisation across channels, as timm's RmsNorm2d computes it).

Exported equals masked in float64 through both front ends; a mean that reads fewer channels after pruning becomes
``channel_mean`` (the sum over what is left, divided by the count before), one that reads them all stays a mean;
``amax`` over the channels stays a barrier; the pruned graph re-exports, saves and reloads.
"""

from __future__ import annotations

import pytest
import torch
from support import assert_exact, count_calls
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.ops import Unknown
from fx_upscale.ops.channel_reduction import ChannelReduction, channel_mean

X = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
CAPTURES = ("symbolic_trace", "torch.export")


class RmsNet(nn.Module):
    """conv -> RMS over channels (a method-call mean, then a function-call mean) -> conv, and a channel sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        y = y * torch.rsqrt(y.pow(2).mean(1, keepdim=True) + 1e-6)
        z = self.conv2(y)
        z = z * torch.rsqrt(torch.mean(z * z, dim=[1], keepdim=True) + 1e-6)
        return self.conv3(z) + z.sum(dim=1, keepdim=True)


class AffineRmsNet(nn.Module):
    """timm's RmsNorm2d with its weight (``x * rsqrt(mean(x ** 2, 1) + eps) * weight.reshape(1, -1, 1, 1)``)
    after each convolution, then a 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.weight1 = nn.Parameter(torch.rand(8) + 0.5)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        y = y * torch.rsqrt(y.pow(2).mean(1, keepdim=True) + 1e-6) * self.weight1.reshape(1, -1, 1, 1)
        return self.conv2(y)


class MaxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        return self.conv2(y / (torch.amax(y * y, dim=1, keepdim=True) + 1.0))


def build(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return model.double().eval()


def channel_means(graph_module) -> int:
    return count_calls(graph_module, channel_mean)


@pytest.mark.parametrize("capture", CAPTURES)
def test_output_side_masks_prune_through_the_rms_normalisation(capture: str) -> None:
    model = build(RmsNet())
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": {1, 4, 6}, "conv2.weight": {0, 3}})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    parameters = {name: p.shape for name, p in result.module.named_parameters()}
    assert parameters["conv1.weight"][0] == 5 and parameters["conv2.weight"] == (6, 5, 1, 1)
    assert channel_means(result.module) == 2  # both means read fewer channels: sum / count before pruning
    reloaded = torch.export.export(result.module, (X,)).module()
    assert torch.allclose(reloaded(X), spec.apply(model)(X), rtol=0, atol=1e-10)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
def test_masks_prune_through_an_affine_rms_norm(capture: str, side: str) -> None:
    model = build(AffineRmsNet())
    spec = fx_upscale.mask(model, X, amount=0.4, side=side, capture=capture)
    assert set(spec.outputs if side == "output" else spec.inputs) == {"conv1.weight" if side == "output" else
                                                                       "conv2.weight"}  # fmt: skip
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    if side == "output":  # the normalisation's weight is resliced with conv1's kept channels
        kept = result.module.get_parameter("conv1.weight").shape[0]
        assert kept < 8 and result.module.get_parameter("weight1").shape == (kept,)
        assert channel_means(result.module) == 1
    else:  # conv2 reads a subset (mask() chose its inputs though the mean reads them); the mean reads them all
        assert result.module.get_parameter("conv2.weight").shape[1] < 8
        assert result.module.get_parameter("weight1").shape == (8,)


def test_a_mean_reading_every_channel_stays_a_mean() -> None:
    model = build(RmsNet())
    spec = fx_upscale.PruneSpec(inputs={"conv2.weight": {1, 2}})  # conv1's channels are all still read by the mean
    result = fx_upscale.export(model, X, spec=spec)
    assert_exact(result, spec.apply(model), X)
    assert result.module.conv1.out_channels == 8
    assert channel_means(result.module) == 0
    means = [node for node in result.module.graph.nodes if node.target in ("mean", torch.mean)]
    assert len(means) == 2


def test_channel_reductions_are_recognised_in_both_graphs() -> None:
    model = build(RmsNet())
    for capture in CAPTURES:
        graph_module = fx_upscale.trace(model, (X,), capture=capture)
        analysis = analyse_channels(graph_module)
        roles = [role for role in analysis.roles.values() if isinstance(role, ChannelReduction)]
        assert [role.mean for role in roles] == [True, True, False], capture
        assert not analysis.barriers, capture


@pytest.mark.parametrize("capture", CAPTURES)
def test_amax_over_channels_stays_a_barrier(capture: str) -> None:
    model = build(MaxNet())
    graph_module = fx_upscale.trace(model, (X,), capture=capture)
    analysis = analyse_channels(graph_module)
    (reason,) = analysis.barriers.values()
    assert reason == "its channel layout does not match what this op expects"
    assert any(isinstance(role, Unknown) for role in analysis.roles.values())
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": {1, 4}})
    result = fx_upscale.export(model, X, spec=spec, capture=capture, on_unsupported="freeze")
    assert_exact(result, spec.apply(model), X)
    assert result.module.get_parameter("conv1.weight").shape[0] == 8  # the max reads every channel


def test_channel_mean_is_the_mean_before_pruning() -> None:
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    x[:, [2, 5]] = 0
    kept = x[:, [0, 1, 3, 4, 6, 7]]
    for dims, keepdim in (([1], True), ((1, 2, 3), False), (1, False)):
        expected = torch.mean(x, dims, keepdim=keepdim)
        assert torch.allclose(channel_mean(kept, dims, keepdim, channels=8, axis=1), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("capture", CAPTURES)
def test_timm_rms_norm_layers_export_exactly_and_shrink(capture: str) -> None:
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), layers.RmsNormAct2d(16, act_layer=nn.GELU),
        nn.Conv2d(16, 16, 1), layers.RmsNorm2d(16), nn.Conv2d(16, 4, 1),
    )  # fmt: skip
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, layers.RmsNorm2d):
                module.weight.uniform_(0.5, 1.5)
    model = model.double().eval()
    spec = fx_upscale.mask(model, X, amount=0.3, side="output", capture=capture)
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    before = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in result.module.parameters()) < 0.8 * before
    assert channel_means(result.module) == 2


class L2NormNet(nn.Module):
    """SSD300's L2Norm: ``scale.view(1, -1, 1, 1) * F.normalize(x)`` between two convolutions, then a norm over the
    channels of order 1 and one over the width (not the channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(8) * 20 + 1)
        self.conv2 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        y = self.scale.view(1, -1, 1, 1) * nn.functional.normalize(self.conv1(x))
        z = self.conv2(y)
        return nn.functional.normalize(z, p=1.0, dim=1) + nn.functional.normalize(z, dim=3)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
def test_masks_prune_through_normalize(capture: str, side: str) -> None:
    model = build(L2NormNet())
    graph_module = fx_upscale.trace(model, (X,), capture=capture)
    assert not analyse_channels(graph_module).barriers
    spec = fx_upscale.mask(model, X, amount=0.4, side=side, capture=capture)
    assert set(spec.outputs if side == "output" else spec.inputs) == {"conv1.weight" if side == "output" else
                                                                       "conv2.weight"}  # fmt: skip
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    if side == "output":  # conv1's masked filters and their scale entries go: the norm never read them
        kept = result.module.get_parameter("conv1.weight").shape[0]
        assert kept < 8 and result.module.get_parameter("scale").shape == (kept,)
    else:  # conv2 reads fewer channels; the norm still reads every non-zero one: conv1 keeps them all
        assert result.module.get_parameter("conv2.weight").shape[1] < 8
        assert result.module.get_parameter("conv1.weight").shape[0] == 8
    reloaded = torch.export.export(result.module, (X,)).module()
    assert torch.allclose(reloaded(X), spec.apply(model)(X), rtol=0, atol=1e-10)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_norm_of_order_zero_over_channels_is_a_barrier(capture: str) -> None:
    """``|x|_0`` counts the non-zero channels: removing a zero channel would not change it, but an order of zero
    or less is not a sum a zero adds nothing to (``p < 0``: ``0 ** p`` is infinite), so none is mapped."""

    class CountNet(MaxNet):
        def forward(self, x):
            y = self.conv1(x)
            return self.conv2(y) + torch.linalg.vector_norm(y, -1.0, dim=1, keepdim=True)

    model = build(CountNet())
    analysis = analyse_channels(fx_upscale.trace(model, (X,), capture=capture))
    assert "linalg_vector_norm" in analysis.barriers or "vector_norm" in analysis.barriers, analysis.barriers
