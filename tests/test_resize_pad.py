"""Resizing (``F.interpolate``, ``nn.Upsample`` ...) and padding (``F.pad``, ``nn.*Pad*d``) map channel ``c`` to
channel ``c``, through both front ends (``symbolic_trace``: the torch-level functions and modules; ``torch.export``:
the aten overloads).

Exported equals masked in float64 for input- and output-side masks and explicit specs, on small realistic models:
a UNet block (bilinear upsampling, cat with the skip), an FPN top-down add of an upsampled map, a timm-style "same"
padded strided conv, reflection-padded residual blocks (style transfer), and 1-D and 3-D variants. A non-zero
constant pad makes a pruned channel non-zero, so the channels it reaches are kept; a pad of the channel axis is a
barrier saying so.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.errors import UnsupportedOpError
from fx_upscale.ops import Unknown
from fx_upscale.ops.pad import Pad
from fx_upscale.ops.resize import Resize

CAPTURES = ["symbolic_trace", "torch.export"]


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


X = images(2, 3, 8, 8)


class UNetBlock(nn.Module):
    """conv -> downsample -> conv -> bilinear x2 -> cat with the skip -> conv."""

    def __init__(self, upsample_module: bool = False) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 12, 3, padding=1)
        self.dec = nn.Conv2d(20, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear") if upsample_module else None

    def forward(self, x):
        skip = F.relu(self.enc1(x))
        deep = F.relu(self.enc2(F.max_pool2d(skip, 2)))
        if self.up is None:
            up = F.interpolate(deep, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            up = self.up(deep)
        return self.head(F.relu(self.dec(torch.cat([up, skip], dim=1))))


class FPN(nn.Module):
    """Lateral 1x1 convs, the coarse map upsampled to the fine one's size and added to it, 3x3 output convs."""

    def __init__(self, upsample: nn.Module | None = None, mode: str = "nearest") -> None:
        super().__init__()
        self.c3 = nn.Conv2d(3, 8, 3, padding=1)
        self.c4 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.lat3, self.lat4 = nn.Conv2d(8, 12, 1), nn.Conv2d(16, 12, 1)
        self.out3, self.out4 = nn.Conv2d(12, 4, 3, padding=1), nn.Conv2d(12, 4, 3, padding=1)
        self.upsample, self.mode = upsample, mode

    def forward(self, x):
        c3 = F.relu(self.c3(x))
        c4 = F.relu(self.c4(c3))
        p4 = self.lat4(c4)
        if self.upsample is None:
            top = F.interpolate(p4, size=c3.shape[-2:], mode=self.mode)
        else:
            top = self.upsample(p4)
        p3 = self.lat3(c3) + top
        return self.out3(p3), self.out4(p4)


class SamePadConv(nn.Module):
    """timm's Conv2dSame: a strided conv after ``F.pad`` with TensorFlow's "same" padding, computed from the input
    size (nodes of the graph under symbolic tracing, constants under torch.export)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        ih, iw = x.shape[-2], x.shape[-1]
        ph = (-(-ih // self.stride) - 1) * self.stride + self.kernel - ih
        pw = (-(-iw // self.stride) - 1) * self.stride + self.kernel - iw
        return self.conv(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]))


class SameNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = SamePadConv(3, 8, 3, 2)
        self.block = SamePadConv(8, 12, 3, 1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        return self.head(F.relu(self.block(F.relu(self.stem(x)))))


class SamePaddingMixer(nn.Module):
    """ConvMixer's block: a depthwise and a dense conv with ``padding="same"`` (``aten.conv2d.padding`` under
    torch.export), the depthwise one in a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding="same")
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8, padding="same")
        self.norm = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 8, 1, padding="same")
        self.head = nn.Conv2d(8, 4, 3, padding="same")

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.norm(F.gelu(self.depthwise(x)))
        return self.head(F.relu(self.pointwise(x)))


class StyleResidual(nn.Module):
    """A style-transfer residual block: reflection pad -> conv -> BN -> ReLU -> reflection pad -> conv, plus x."""

    def __init__(self, channels: int, pad: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.pad1, self.conv1, self.bn1 = pad(), nn.Conv2d(channels, channels, 3), nn.BatchNorm2d(channels)
        self.pad2, self.conv2, self.bn2 = pad(), nn.Conv2d(channels, channels, 3), nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(self.pad1(x))))
        return x + self.bn2(self.conv2(self.pad2(y)))


class StyleNet(nn.Module):
    def __init__(self, pad: Callable[[], nn.Module] = lambda: nn.ReflectionPad2d(1)) -> None:
        super().__init__()
        self.stem_pad, self.stem = pad(), nn.Conv2d(3, 8, 3)
        self.res = StyleResidual(8, pad)
        self.expand = nn.Conv2d(8, 12, 1)
        self.out_pad, self.out = pad(), nn.Conv2d(12, 3, 3)

    def forward(self, x):
        y = self.res(F.relu(self.stem(self.stem_pad(x))))
        return self.out(self.out_pad(F.relu(self.expand(y))))


class FunctionalPadNet(nn.Module):
    """``F.pad`` in each non-constant mode, and a zero constant, between convs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)
        self.c3, self.c4 = nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3)

    def forward(self, x):
        y = F.relu(self.c1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        y = F.relu(self.c2(F.pad(y, (1, 1, 1, 1), mode="replicate")))
        y = F.relu(self.c3(F.pad(y, (2, 0, 0, 2), mode="circular")))
        return self.c4(F.pad(y, (1, 1, 1, 1), value=0.0))


class Net1d(nn.Module):
    """1-D: reflect pad, nearest and linear resizing, ConstantPad1d(0), ReplicationPad1d, CircularPad1d."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv1d(3, 8, 3), nn.Conv1d(8, 8, 3), nn.Conv1d(8, 8, 3)
        self.c4 = nn.Conv1d(8, 2, 3)
        self.zero, self.rep, self.circ = nn.ConstantPad1d(1, 0.0), nn.ReplicationPad1d(1), nn.CircularPad1d(1)

    def forward(self, x):
        y = F.relu(self.c1(F.pad(x, (1, 1), mode="reflect")))
        y = F.interpolate(y, scale_factor=2, mode="linear")
        y = F.relu(self.c2(self.rep(y)))
        y = F.interpolate(y, size=12, mode="nearest")
        y = F.relu(self.c3(self.circ(y)))
        return self.c4(self.zero(y))


class Net3d(nn.Module):
    """3-D: ReplicationPad3d, ZeroPad3d, trilinear and nearest resizing, reflect pad of three axes."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv3d(3, 6, 3), nn.Conv3d(6, 6, 3), nn.Conv3d(6, 2, 3)
        self.rep, self.zero = nn.ReplicationPad3d(1), nn.ZeroPad3d(1)

    def forward(self, x):
        y = F.relu(self.c1(self.rep(x)))
        y = F.interpolate(y, scale_factor=2, mode="trilinear")
        y = F.relu(self.c2(self.zero(y)))
        y = F.interpolate(y, scale_factor=0.5, mode="nearest")
        return self.c3(F.pad(y, (1, 1, 1, 1, 1, 1), mode="reflect"))


class ResizeModes(nn.Module):
    """Every 2-D mode and module, each between convs, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.nearest, self.bilinear = nn.UpsamplingNearest2d(scale_factor=2), nn.UpsamplingBilinear2d(scale_factor=2)
        self.heads = nn.ModuleList(nn.Conv2d(8, 2, 1) for _ in range(6))

    def forward(self, x):
        y = F.relu(self.c1(x))
        maps = [
            self.nearest(y), self.bilinear(y), F.interpolate(y, size=(16, 16), mode="bicubic", align_corners=True),
            F.interpolate(y, scale_factor=2, mode="nearest-exact"),
            F.interpolate(y, scale_factor=2, mode="bilinear", antialias=True), F.interpolate(y, size=16, mode="area"),
        ]  # fmt: skip
        return sum(head(m) for head, m in zip(self.heads, maps))


MODELS: dict[str, tuple[Callable[[], nn.Module], torch.Tensor]] = {
    "unet": (UNetBlock, X),
    "unet-upsample-module": (lambda: UNetBlock(upsample_module=True), X),
    "fpn-nearest": (FPN, X),
    "fpn-bicubic": (lambda: FPN(mode="bicubic"), X),
    "fpn-upsample-module": (lambda: FPN(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), X),
    "same-pad": (SameNet, images(2, 3, 9, 9)),
    "same-padding-conv": (SamePaddingMixer, X),
    "style-reflection": (StyleNet, X),
    "style-replication": (lambda: StyleNet(lambda: nn.ReplicationPad2d(1)), X),
    "style-zero": (lambda: StyleNet(lambda: nn.ZeroPad2d(1)), X),
    "functional-pads": (FunctionalPadNet, X),
    "resize-modes": (ResizeModes, X),
    "1d": (Net1d, images(2, 3, 6)),
    "3d": (Net3d, images(2, 3, 4, 4, 4)),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name][0]().double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("name", list(MODELS))
def test_masked_models_export_exactly(name: str, side: str, capture: str) -> None:
    model, x = build(name), MODELS[name][1]
    spec = fx_upscale.mask(model, x, amount=0.4, side=side, capture=capture)
    result = fx_upscale.export(model, x, spec=spec, capture=capture)
    assert result.report.capture == capture
    assert_exact(result, spec.apply(model), x)
    assert result.report.params_after < result.report.params_before


def roles_of(model: nn.Module, x: torch.Tensor, capture: str, kind: type) -> list:
    graph_module = fx_upscale.trace(model, (x,), capture=capture)
    return [role for role in analyse_channels(graph_module).roles.values() if isinstance(role, kind)]


@pytest.mark.parametrize("capture", CAPTURES)
def test_every_resize_and_pad_is_recognised(capture: str) -> None:
    """Each resize and pad of the models gets its role, not a barrier, in both IRs."""
    expected = {
        "resize-modes": (Resize, {"nearest", "bilinear", "bicubic", "nearest-exact"}),
        "fpn-bicubic": (Resize, {"bicubic"}),
        "1d": (Pad, {"reflect", "replicate", "circular", "constant"}),
        "3d": (Pad, {"reflect", "replicate", "constant"}),
        "functional-pads": (Pad, {"reflect", "replicate", "circular", "constant"}),
    }
    if capture == "symbolic_trace":
        expected["resize-modes"][1].add("area")  # torch.export records adaptive_avg_pool2d, a pointwise op
    for name, (kind, modes) in expected.items():
        model, x = build(name), MODELS[name][1]
        assert {role.mode for role in roles_of(model, x, capture, kind)} == modes, name
        graph_module = fx_upscale.trace(model, (x,), capture=capture)
        assert not analyse_channels(graph_module).barriers, name
    pads = roles_of(build("functional-pads"), X, capture, Pad)
    assert [role.padded_axes for role in pads] == [(2, 3)] * 4
    assert all(role.keeps_zero for role in pads)


@pytest.mark.parametrize("capture", CAPTURES)
def test_unet_explicit_spec_removes_channels_across_the_upsample(capture: str) -> None:
    """enc2's filters 1 and 5 pass the bilinear upsample and the cat: dec's columns 1 and 5 go with them, and
    dec's columns of the skip (12 + 2) with enc1's filter 2, which the skip and the pool share."""
    model = build("unet")
    spec = fx_upscale.PruneSpec(outputs={"enc2.weight": [1, 5], "enc1.weight": [2]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    params = dict(result.module.named_parameters())
    assert params["enc2.weight"].shape == (10, 7, 3, 3)
    assert params["dec.weight"].shape == (8, 17, 3, 3)


@pytest.mark.parametrize("capture", CAPTURES)
def test_fpn_input_spec_removes_the_tied_lateral_channel(capture: str) -> None:
    """The add ties lat3's and lat4's channels through the upsample: a channel neither output conv reads goes
    from both laterals at once."""
    model = build("fpn-nearest")
    spec = fx_upscale.PruneSpec(inputs={"out3.weight": [3, 7], "out4.weight": [3, 7]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    params = dict(result.module.named_parameters())
    assert params["lat3.weight"].shape[0] == params["lat4.weight"].shape[0] == 10


def constant_pad_net(pad: nn.Module | None, value: float) -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.pad = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3), pad

        def forward(self, x):
            y = F.relu(self.conv1(x))
            return self.conv2(self.pad(y) if self.pad is not None else F.pad(y, (1, 1, 1, 1), value=value))

    torch.manual_seed(0)
    return Net().double().eval()


CONSTANT_PADS = [
    pytest.param(lambda: nn.ConstantPad2d(1, 0.5), 0.5, 8, id="ConstantPad2d-0.5"),
    pytest.param(lambda: None, -1.0, 8, id="F.pad-value-minus-1"),
    pytest.param(lambda: nn.ConstantPad2d(1, 0.0), 0.0, 6, id="ConstantPad2d-0"),
    pytest.param(lambda: nn.ZeroPad2d(1), 0.0, 6, id="ZeroPad2d"),
    pytest.param(lambda: None, 0.0, 6, id="F.pad-value-0"),
]


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize(("pad", "value", "kept"), CONSTANT_PADS)
def test_a_nonzero_constant_pad_keeps_the_channels_it_makes_nonzero(
    pad: Callable[[], nn.Module | None], value: float, kept: int, capture: str
) -> None:
    """conv1's filters 1 and 3 are masked: after a zero pad the channels are zero and go; after a pad of another
    constant their border is that constant, which conv2 reads, so they stay."""
    model = constant_pad_net(pad(), value)
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [1, 3]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert result.module.get_parameter("conv1.weight").shape[0] == kept
    [role] = roles_of(model, X, capture, Pad)
    assert role.keeps_zero == (kept < 8)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_nonzero_constant_pad_is_exact_under_masks(capture: str) -> None:
    model = constant_pad_net(nn.ConstantPad2d(1, 0.5), 0.5)
    for side in ("input", "output"):
        spec = fx_upscale.mask(model, X, amount=0.4, side=side, capture=capture)
        result = fx_upscale.export(model, X, spec=spec, capture=capture)
        assert_exact(result, spec.apply(model), X)


class ChannelPad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 1), nn.Conv2d(10, 4, 1)

    def forward(self, x):
        return self.conv2(F.pad(self.conv1(x), (0, 0, 0, 0, 1, 1)))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_pad_of_the_channel_axis_is_a_barrier_saying_so(capture: str) -> None:
    torch.manual_seed(0)
    model = ChannelPad().double().eval()
    graph_module = fx_upscale.trace(model, (X,), capture=capture)
    analysis = analyse_channels(graph_module)
    [reason] = analysis.barriers.values()
    assert "padding of the channel axis (axis 1)" in reason
    assert any(isinstance(r, Unknown) and r.reason == reason for r in analysis.roles.values())
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [2]})
    with pytest.raises(UnsupportedOpError, match="channel axis"):
        fx_upscale.export(model, X, spec=spec, capture=capture)
    result = fx_upscale.export(model, X, spec=spec, capture=capture, on_unsupported="freeze")
    assert_exact(result, spec.apply(model), X)
    assert result.module.get_parameter("conv1.weight").shape[0] == 8


class ChannelsLastResize(nn.Module):
    """A resize of a tensor whose channels are on its last axis would resize the channels: a barrier."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(16, 4)

    def forward(self, x):
        y = self.fc1(x.permute(0, 2, 3, 1))  # (N, H, W, 8)
        return self.fc2(F.interpolate(y, scale_factor=2.0, mode="nearest"))


def test_a_resize_of_the_channel_axis_is_a_barrier() -> None:
    torch.manual_seed(0)
    model = ChannelsLastResize().double().eval()
    graph_module = fx_upscale.trace(model, (X,), capture="symbolic_trace")
    analysis = analyse_channels(graph_module)
    assert list(analysis.barriers) == ["interpolate"]
    assert isinstance(analysis.roles["interpolate"], Unknown)
