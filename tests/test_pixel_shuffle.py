"""Pixel shuffle and unshuffle (``nn.PixelShuffle`` / ``F.pixel_shuffle``, ``nn.PixelUnshuffle`` /
``F.pixel_unshuffle``), through both front ends (``symbolic_trace`` and ``torch.export``'s aten overloads).

A shuffle by ``r`` makes output channel ``c`` from input channels ``c*r² .. c*r² + r² - 1``: those are one channel
class, kept or removed whole, in place. An unshuffle makes output channels ``c*r² ..`` from input channel ``c``:
its consumer's weight columns go in blocks of ``r²``. Exported equals masked in float64 for input- and output-side
masks and explicit specs, on an ESPCN (conv -> PixelShuffle at the output), an EDSR-style upsampler (conv ->
PixelShuffle -> PReLU -> conv), a space-to-depth stem (PixelUnshuffle -> conv) and shuffles of unshuffled maps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.ops import Unknown
from fx_upscale.ops.pixel_shuffle import PixelShuffle

CAPTURES = ["symbolic_trace", "torch.export"]
X = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class ESPCN(nn.Module):
    """Shi et al. 2016: feature convs, then a conv to 3·r² channels shuffled into the r-times larger image."""

    def __init__(self, r: int = 2) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 5, padding=2), nn.Conv2d(16, 8, 3, padding=1)
        self.conv3, self.shuffle = nn.Conv2d(8, 3 * r * r, 3, padding=1), nn.PixelShuffle(r)

    def forward(self, x):
        return self.shuffle(self.conv3(torch.tanh(self.conv2(torch.tanh(self.conv1(x))))))


class Upsampler(nn.Module):
    """EDSR / SRResNet: a residual body, then conv to 4C channels, PixelShuffle(2), PReLU, and the tail conv."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body1, self.body2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Conv2d(8, 32, 3, padding=1)
        self.shuffle = None if functional else nn.PixelShuffle(2)
        self.act = nn.PReLU(8)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = self.head(x)
        h = h + self.body2(F.relu(self.body1(h)))
        u = self.up(h)
        u = F.pixel_shuffle(u, 2) if self.shuffle is None else self.shuffle(u)
        return self.tail(self.act(u))


class SpaceToDepth(nn.Module):
    """A conv, PixelUnshuffle(2) (each channel becomes four), convs, then back up with a PixelShuffle(2)."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.unshuffle = None if functional else nn.PixelUnshuffle(2)
        self.mix = nn.Conv2d(24, 16, 3, padding=1)
        self.up = nn.Conv2d(16, 16, 1)
        self.out = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.stem(x))
        d = F.pixel_unshuffle(s, 2) if self.unshuffle is None else self.unshuffle(s)
        return self.out(F.pixel_shuffle(F.relu(self.up(F.relu(self.mix(d)))), 2))


class Roundtrip(nn.Module):
    """Shuffles of unshuffled maps: unshuffle(2) then shuffle(2) (one channel again), unshuffle(4) then shuffle(2)
    (each channel a quarter of one)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        a = F.relu(self.c1(x))
        same = F.pixel_shuffle(F.pixel_unshuffle(a, 2), 2)  # (N, 8, 8, 8): a again
        quarter = F.pixel_shuffle(F.pixel_unshuffle(a, 4), 2)  # (N, 32, 4, 4): four per channel of a
        return self.c2(same).mean((2, 3)) + self.c3(quarter).mean((2, 3))


class TiedShuffle(nn.Module):
    """unshuffle(2) then shuffle(4): each output channel holds four whole channels of c1."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        return self.c2(F.pixel_shuffle(F.pixel_unshuffle(F.relu(self.c1(x)), 2), 4))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "espcn": ESPCN,
    "espcn-r3": lambda: ESPCN(3),
    "upsampler": Upsampler,
    "upsampler-functional": lambda: Upsampler(functional=True),
    "space-to-depth": SpaceToDepth,
    "space-to-depth-functional": lambda: SpaceToDepth(functional=True),
}


def build(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = factory().double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("name", list(MODELS))
def test_masked_models_export_exactly(name: str, side: str, capture: str) -> None:
    model = build(MODELS[name])
    spec = fx_upscale.mask(model, X, amount=0.4, side=side, capture=capture)
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert result.report.capture == capture
    assert_exact(result, spec.apply(model), X)
    assert result.report.params_after < result.report.params_before


@pytest.mark.parametrize("capture", CAPTURES)
def test_an_input_mask_after_the_shuffle_removes_whole_groups(capture: str) -> None:
    """tail masks 3 of its 8 input channels: up loses the 3 groups of 4 filters that make them."""
    model = build(Upsampler)
    spec = fx_upscale.mask(model, X, amount=0.4, side="input", capture=capture)
    assert len(spec.inputs["tail.weight"]) == 3
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    params = dict(result.module.named_parameters())
    assert params["up.weight"].shape[0] == 20 and params["act.weight"].shape == (5,)
    assert params["tail.weight"].shape[1] == 5


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("functional", [False, True], ids=["module", "function"])
def test_explicit_spec_removes_only_whole_groups_in_place(capture: str, functional: bool) -> None:
    """up's filters 4..7 (all of output channel 1) and 20..23 (channel 5) go; filters 8 and 9 (half of channel 2)
    are zero but stay, since channel 2's other sub-pixels are not. The kept groups keep their order."""
    model = build(lambda: Upsampler(functional))
    spec = fx_upscale.PruneSpec(outputs={"up.weight": [4, 5, 6, 7, 8, 9, 20, 21, 22, 23]})
    result, masked = fx_upscale.export(model, X, spec=spec, capture=capture), spec.apply(model)
    assert_exact(result, masked, X)
    kept = [r for r in range(32) if not 4 <= r < 8 and not 20 <= r < 24]
    assert torch.equal(result.module.get_parameter("up.weight"), masked.get_parameter("up.weight").detach()[kept])
    assert result.module.get_parameter("tail.weight").shape[1] == 6


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_constrained_output_mask_removes_whole_groups(capture: str) -> None:
    """Constrained masking chooses channel classes: the four filters of a group together."""
    model = build(Upsampler)
    spec = fx_upscale.mask(model, X, amount=0.4, side="output", method="constrained", capture=capture)
    masked = sorted(spec.outputs["up.weight"])
    assert masked and {r // 4 for r in masked} == {r // 4 for r in masked if r % 4 == 0}
    assert len(masked) % 4 == 0
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert result.module.get_parameter("up.weight").shape[0] == 32 - len(masked)


@pytest.mark.parametrize("capture", CAPTURES)
def test_unshuffled_channels_are_read_in_blocks(capture: str) -> None:
    """mix reads stem's channels 1 and 4 as columns 4..7 and 16..19: masking those columns removes the filters."""
    model = build(SpaceToDepth)
    spec = fx_upscale.PruneSpec(inputs={"mix.weight": [4, 5, 6, 7, 16, 17, 18, 19]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    params = dict(result.module.named_parameters())
    assert params["stem.weight"].shape[0] == 4 and params["mix.weight"].shape[1] == 16


def shuffle_layouts(model: nn.Module, capture: str) -> tuple[list[tuple[int, int]], tuple[int, ...], Any]:
    """(channels, repeat) of each shuffle's and unshuffle's output, c1's ids (what the first unshuffle reads), and
    the analysis."""
    analysis = analyse_channels(fx_upscale.trace(model, (X,), capture=capture))
    assert not analysis.barriers
    roles = {n: role for n, role in analysis.roles.items() if isinstance(role, PixelShuffle)}
    layouts = sorted((len(analysis.layouts[n].ids), analysis.layouts[n].repeat) for n in roles)
    first = next(role.data for role in roles.values() if role.inverse)
    return layouts, analysis.layouts[first].ids, analysis


@pytest.mark.parametrize("capture", CAPTURES)
def test_shuffles_of_unshuffled_maps(capture: str) -> None:
    """c1's filters 2 and 5 are masked: c2's columns 2 and 5 go, and c3's 8..11 and 20..23 (a quarter-channel is
    four consecutive channels after unshuffle(4) and shuffle(2))."""
    model = build(Roundtrip)
    spec = fx_upscale.PruneSpec(outputs={"c1.weight": [2, 5]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    params = dict(result.module.named_parameters())
    assert params["c1.weight"].shape[0] == 6 and params["c2.weight"].shape[1] == 6
    kept = [k for k in range(32) if k // 4 not in (2, 5)]
    assert torch.equal(params["c3.weight"], model.c3.weight.detach()[:, kept])
    layouts, _, _ = shuffle_layouts(model, capture)
    assert layouts == [(8, 1), (8, 4), (8, 4), (8, 16)]


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_shuffle_of_an_unshuffled_map_ties_whole_channels(capture: str) -> None:
    """unshuffle(2) then shuffle(4): c1's channels 0..3 make output channel 0, 4..7 channel 1. Masking 4..7
    removes them; masking 0 and 1 removes nothing (channel 0 still reads 2 and 3)."""
    model = build(TiedShuffle)
    layouts, c1, analysis = shuffle_layouts(model, capture)
    assert layouts == [(2, 1), (8, 4)]
    assert len({analysis.class_of[i] for i in c1[:4]}) == len({analysis.class_of[i] for i in c1[4:]}) == 1
    for masked, kept in (([4, 5, 6, 7], 4), ([0, 1], 8)):
        spec = fx_upscale.PruneSpec(outputs={"c1.weight": masked})
        result = fx_upscale.export(model, X, spec=spec, capture=capture)
        assert_exact(result, spec.apply(model), X)
        assert result.module.get_parameter("c1.weight").shape[0] == kept


class Readers(nn.Module):
    """The shuffle's output feeds two convs, and up's output a third one besides the shuffle: an order that suits
    every reader would move channels inside and across the groups."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Conv2d(3, 24, 3, padding=1)
        self.a, self.b, self.side = nn.Conv2d(6, 2, 3, padding=1), nn.Conv2d(6, 2, 1), nn.Conv2d(24, 2, 1)

    def forward(self, x):
        u = F.relu(self.up(x))
        s = F.pixel_shuffle(u, 2)
        return self.a(s) + self.b(s), self.side(u)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("mode", ["upscale", "baseline"])
def test_readers_of_both_sides_of_a_shuffle(mode: str, capture: str) -> None:
    """a needs channels 0, 2, 4 of the shuffle, b 1, 2, 3, side up's filters 0..3, 8..11 and 13 (a gather that
    does not follow the groups): channel 5 (filters 20..23) is needed by no reader and goes, whole."""
    model = build(Readers)
    side = [k for k in range(24) if k not in (0, 1, 2, 3, 8, 9, 10, 11, 13)]
    spec = fx_upscale.PruneSpec(inputs={"a.weight": [1, 3, 5], "b.weight": [0, 4, 5], "side.weight": side})
    result = fx_upscale.export(model, X, spec=spec, capture=capture, mode=mode)
    assert_exact(result, spec.apply(model), X)
    params = dict(result.module.named_parameters())
    assert params["up.weight"].shape[0] == 20  # channel 5's four filters go
    assert params["side.weight"].shape[1] == 9
    kept = [k for k in range(24) if k < 20]
    assert torch.equal(params["up.weight"], model.up.weight.detach()[kept])


def test_a_shuffle_ties_each_group_of_its_input() -> None:
    model = build(Upsampler)
    analysis = analyse_channels(fx_upscale.trace(model, (X,), capture="symbolic_trace"))
    assert analysis.roles["shuffle"] == PixelShuffle(data="up", factor=2, inverse=False)
    up = analysis.classes("up")
    assert up == tuple(up[4 * (k // 4)] for k in range(32)) and len(set(up)) == 8
    assert analysis.classes("shuffle") == up[::4]


class ChannelsLastShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 8)

    def forward(self, x):
        return F.pixel_shuffle(self.fc(x.permute(0, 2, 3, 1)), 2)  # shuffles H with W and the 8 channels


def test_a_shuffle_of_other_than_the_channel_axis_is_a_barrier() -> None:
    torch.manual_seed(0)
    model = ChannelsLastShuffle().double().eval()
    analysis = analyse_channels(fx_upscale.trace(model, (X,), capture="symbolic_trace"))
    assert list(analysis.barriers) == ["pixel_shuffle"]
    assert isinstance(analysis.roles["pixel_shuffle"], Unknown)
