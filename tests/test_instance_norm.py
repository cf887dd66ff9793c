"""InstanceNorm (``nn.InstanceNorm1d/2d/3d``, ``F.instance_norm``, ``aten.instance_norm``): a per-channel layer.

Exported equals masked in float64 through both front ends (``symbolic_trace`` and ``torch.export``), for masks of
either side and explicit specs, on a small medical-UNet (conv -> InstanceNorm -> LeakyReLU twice per block, a skip
``cat``), affine and not; the affine weight and bias (and running statistics) follow the kept channels and
``num_features`` follows them; a zero channel stays zero only where the bias is zero; ``mask()`` masks an
InstanceNorm-everywhere model (it warned and chose nothing while no handler mapped InstanceNorm).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.ops import Carry, Unknown
from fx_upscale.ops.instance_norm import InstanceNorm

CAPTURES = ("symbolic_trace", "torch.export")
X2 = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
X3 = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


class ConvBlock(nn.Module):
    """nnU-Net's stage: (conv -> InstanceNorm -> LeakyReLU) twice."""

    def __init__(self, cin: int, cout: int, affine: bool, dims: int = 2) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if dims == 2 else (nn.Conv3d, nn.InstanceNorm3d)
        self.conv1, self.norm1 = conv(cin, cout, 3, padding=1), norm(cout, affine=affine)
        self.conv2, self.norm2 = conv(cout, cout, 3, padding=1), norm(cout, affine=affine)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x):
        return self.act(self.norm2(self.conv2(self.act(self.norm1(self.conv1(x))))))


class UNet(nn.Module):
    """Encoder block, pooled bottleneck block, transposed-conv upsampling, skip ``cat``, decoder block, 1x1 head."""

    def __init__(self, affine: bool = True, dims: int = 2) -> None:
        super().__init__()
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.enc = ConvBlock(1, 8, affine, dims)
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.mid = ConvBlock(8, 16, affine, dims)
        self.up = up(16, 8, 2, stride=2)
        self.dec = ConvBlock(16, 8, affine, dims)
        self.head = nn.Conv2d(8, 3, 1) if dims == 2 else nn.Conv3d(8, 3, 1)

    def forward(self, x):
        skip = self.enc(x)
        return self.head(self.dec(torch.cat([self.up(self.mid(self.pool(skip))), skip], dim=1)))


class FunctionalNet(nn.Module):
    """``F.instance_norm`` with its own affine parameters (``x_weight`` / ``x_bias``: a spec masking the weight masks
    the bias beside it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.norm_weight, self.norm_bias = nn.Parameter(torch.ones(8)), nn.Parameter(torch.zeros(8))
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(
            F.leaky_relu(F.instance_norm(self.conv1(x), weight=self.norm_weight, bias=self.norm_bias), 0.01)
        )


class TrackedNet(nn.Module):
    """InstanceNorm1d tracking running statistics: in eval mode it normalises by them, as BatchNorm does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm1d(8, affine=True, track_running_stats=True)
        self.conv2 = nn.Conv1d(8, 4, 1)

    def forward(self, x):
        return self.conv2(F.leaky_relu(self.norm(self.conv1(x)), 0.01))


def build(model: nn.Module) -> nn.Module:
    """Float64, eval, every InstanceNorm with a weight away from 1 and a non-zero bias (and running statistics)."""
    model = model.double().eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1 and "norm" in name:
                if name.endswith("weight"):
                    parameter.copy_(torch.rand(parameter.shape, generator=generator, dtype=torch.float64) + 0.5)
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.3)
        for module in model.modules():
            if isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def instance_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)]


def assert_sizes_follow(result: fx_upscale.ExportResult, capture: str) -> None:
    """Every InstanceNorm's ``num_features`` equals its tensors' length (modules survive ``symbolic_trace`` only)
    and the conv feeding it; under ``torch.export`` each ``aten.instance_norm``'s tensors match its input."""
    graph = result.module.graph
    norms = [n for n in graph.nodes if n.target is torch.ops.aten.instance_norm.default or n.op == "call_module"]
    checked = 0
    for node in norms:
        if node.op == "call_module":
            module = result.module.get_submodule(str(node.target))
            if not isinstance(module, nn.modules.instancenorm._InstanceNorm):
                continue
            producer = result.module.get_submodule(str(node.args[0].target))
            assert module.num_features == producer.out_channels, node.name
            for tensor in (module.weight, module.bias, module.running_mean):
                assert tensor is None or tensor.numel() == module.num_features, node.name
        else:
            weight = node.args[1]
            producer_weight = node.args[0].args[1]  # aten.conv*(input, weight, ...)
            if weight is not None:
                size = result.module.get_parameter(str(weight.target)).numel()
                assert size == result.module.get_parameter(str(producer_weight.target)).shape[0], node.name
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_unet_masks_export_exactly(capture: str, affine: bool, side: str) -> None:
    model = build(UNet(affine))
    spec = fx_upscale.mask(model, X2, amount=0.4, side=side, capture=capture)
    result = fx_upscale.export(model, X2, spec=spec, capture=capture)
    assert result.report.capture == capture
    assert_exact(result, spec.apply(model), X2)
    assert result.report.params_after < result.report.params_before
    assert_sizes_follow(result, capture)
    if capture == "symbolic_trace":
        assert result.module.enc.conv1.out_channels < 8 and result.module.enc.norm1.num_features < 8


@pytest.mark.parametrize("capture", CAPTURES)
def test_3d_unet_output_mask_exports_exactly(capture: str) -> None:
    model = build(UNet(affine=True, dims=3))
    spec = fx_upscale.mask(model, X3, amount=0.4, side="output", capture=capture)
    result = fx_upscale.export(model, X3, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X3)
    assert result.report.params_after < result.report.params_before
    assert_sizes_follow(result, capture)


@pytest.mark.parametrize("capture", CAPTURES)
def test_explicit_spec_reslices_weight_and_bias(capture: str) -> None:
    model = build(UNet())
    spec = fx_upscale.PruneSpec(outputs={"mid.conv1.weight": [0, 5, 9], "mid.norm1.weight": [0, 5, 9]})
    result = fx_upscale.export(model, X2, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X2)
    kept = [c for c in range(16) if c not in (0, 5, 9)]
    for name in ("weight", "bias"):
        resliced = result.module.get_parameter(f"mid.norm1.{name}")
        assert torch.equal(resliced, getattr(model.mid.norm1, name).detach()[kept])
    if capture == "symbolic_trace":
        norm = result.module.mid.norm1
        assert norm.num_features == 13


@pytest.mark.parametrize("capture", CAPTURES)
def test_zero_channel_becomes_its_bias(capture: str) -> None:
    """A masked filter feeds InstanceNorm zeros; ``(0 - 0) / sqrt(eps) * w + b = b``: with its bias left, the channel
    is needed and stays; with the norm's weight and bias masked too, it goes."""
    model = build(UNet())
    filters_only = fx_upscale.PruneSpec(outputs={"mid.conv1.weight": [1, 2]})
    with_norm = fx_upscale.PruneSpec(outputs={"mid.conv1.weight": [1, 2], "mid.norm1.weight": [1, 2]})
    for spec, expected in ((filters_only, 16), (with_norm, 14)):
        result = fx_upscale.export(model, X2, spec=spec, capture=capture)
        assert_exact(result, spec.apply(model), X2)
        conv_weights = [p for n, p in result.module.named_parameters() if n.startswith("mid.conv1")]
        assert conv_weights[0].shape[0] == expected


def test_functional_instance_norm_reslices_its_parameters() -> None:
    model = build(FunctionalNet())
    spec = fx_upscale.mask(model, X2, amount=0.4, side="output", capture="symbolic_trace")
    result = fx_upscale.export(model, X2, spec=spec, capture="symbolic_trace")
    assert_exact(result, spec.apply(model), X2)
    kept = result.module.conv1.out_channels
    assert kept < 8 and result.module.norm_weight.shape == result.module.norm_bias.shape == (kept,)
    for capture in CAPTURES:
        spec = fx_upscale.PruneSpec(inputs={"conv2.weight": [2, 3, 7]})
        result = fx_upscale.export(model, X2, spec=spec, capture=capture)
        assert_exact(result, spec.apply(model), X2)
        assert result.report.params_after < result.report.params_before


@pytest.mark.parametrize("capture", CAPTURES)
def test_running_statistics_follow_and_revive_zeros(capture: str) -> None:
    """Tracking running statistics (eval: ``(x - mean) / sqrt(var + eps) * w + b``), a zero input channel is not
    zero: masking the filter alone removes nothing; masking the norm too removes it, running statistics resliced."""
    model = build(TrackedNet())
    x = torch.randn(2, 3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for spec, kept in (
        (fx_upscale.PruneSpec(outputs={"conv1.weight": [0, 4]}), 8),
        (fx_upscale.PruneSpec(outputs={"conv1.weight": [0, 4], "norm.weight": [0, 4]}), 6),
    ):
        result = fx_upscale.export(model, x, spec=spec, capture=capture)
        assert_exact(result, spec.apply(model), x)
        buffers = dict(result.module.named_buffers())
        mean = next(b for n, b in buffers.items() if "running_mean" in n)
        assert mean.numel() == kept
        if kept < 8:
            assert torch.equal(mean, model.norm.running_mean[[1, 2, 3, 5, 6, 7]])
    spec = fx_upscale.mask(model, x, amount=0.4, side="output", capture=capture)
    result = fx_upscale.export(model, x, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), x)
    assert result.report.params_after < result.report.params_before


class Everywhere(nn.Module):
    """Every conv followed by an InstanceNorm: before InstanceNorm had a handler, nothing could be masked."""

    def __init__(self) -> None:
        super().__init__()
        self.block = ConvBlock(1, 8, affine=True)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.head(self.block(x))


def table_without_instance_norm() -> fx_upscale.HandlerTable:
    """The default table with InstanceNorm routed to no handler (the table before this family existed)."""
    table = fx_upscale.default_handlers().copy()
    reason = "no handler for module type InstanceNorm2d"
    table.add(Unknown, [nn.InstanceNorm2d, F.instance_norm, torch.ops.aten.instance_norm.default], reason)
    return table


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
def test_mask_masks_an_instance_norm_everywhere_model(capture: str, side: str) -> None:
    model = build(Everywhere())
    with pytest.warns(fx_upscale.MaskWarning):
        empty = fx_upscale.mask(
            model, X2, amount=0.4, side=side, capture=capture, handlers=table_without_instance_norm()
        )
    assert empty.is_empty()
    with warnings.catch_warnings():
        warnings.simplefilter("error", fx_upscale.MaskWarning)
        spec = fx_upscale.mask(model, X2, amount=0.4, side=side, capture=capture)
    assert not spec.is_empty()
    if side == "output":
        assert {"block.norm1.weight", "block.norm2.weight"} <= set(spec.outputs)
    result = fx_upscale.export(model, X2, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X2)
    assert result.report.params_after < result.report.params_before


def test_role_and_masking_rule() -> None:
    model = build(UNet(affine=False))
    analysis = analyse_channels(fx_upscale.trace(model, (X2,)))
    role = analysis.roles["enc_norm1"]
    assert role == InstanceNorm(
        data="enc_conv1", weight=None, bias=None, running_mean=None, running_var=None, use_input_stats=True,
        module="enc.norm1",
    )  # fmt: skip
    handler = analysis.handler("enc_norm1")
    assert handler.masking(role).carry is Carry.THROUGH  # no bias: zero stays zero
    affine = InstanceNorm(
        data="x", weight="n.weight", bias="n.bias", running_mean=None, running_var=None, use_input_stats=True,
        module="n",
    )  # fmt: skip
    rule = handler.masking(affine)
    assert rule.carry is Carry.PER_CHANNEL and rule.per_channel_weight == "n.weight"
    assert not rule.reads_every_channel and handler.output_weight(affine) == "n.weight"


def test_invariant_names_num_features() -> None:
    handler = fx_upscale.default_handlers().handler(
        InstanceNorm(data="x", weight=None, bias=None, running_mean=None, running_var=None, use_input_stats=True,
                     module=None)
    )  # fmt: skip
    norm = nn.InstanceNorm2d(8, affine=True)
    assert handler.invariant(norm) == []
    norm.weight = nn.Parameter(norm.weight.detach()[:5])
    [mismatch] = handler.invariant(norm)
    assert (mismatch.attr, mismatch.actual, mismatch.expected) == ("num_features", 8, 5)
    assert handler.invariant(nn.BatchNorm2d(8)) == []
