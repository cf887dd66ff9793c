"""Split sizes, slice bounds and ``narrow`` arguments computed in the graph from shapes (``x.size(1) // 2``,
``x.shape[1] - k``), as CSP / GhostNet / hierarchical-attention blocks write them, through both front ends.

``symbolic_trace`` records such a bound as a chain of nodes (``getattr(x, "shape")``, ``getitem``, ``floordiv``); the
shape propagation records each integer's traced value (``meta["traced_value"]``), the handlers read the bound there
(``ops.base.traced_int``) and the rewrite replaces it, on the channel axis, by a constant counting the kept channels:
recomputing ``x.size(1) // 2`` from the pruned width would cut at the wrong channel. ``torch.export`` specialises
the bound to a constant itself. Exported equals masked in float64 for input- and output-side masks; a bound that is
neither a constant nor shape arithmetic is a clear unknown op, never a plain ``TypeError``.
"""

from __future__ import annotations

import operator

import pytest
import torch
from support import assert_exact, assert_masked_exports_shrink, count_calls
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.ops import Unknown
from fx_upscale.ops.split import Slice, Split
from fx_upscale.tracing import trace

CAPTURES = ["symbolic_trace", "torch.export"]
X = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class HalfSlice(nn.Module):
    """``y[:, :n]`` and ``y[:, n:]`` with ``n = y.shape[1] // 2``, each half into its own conv (CSP cross-stage)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.left, self.right = nn.Conv2d(8, 6, 1), nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        n = y.shape[1] // 2
        return self.head(torch.cat([self.left(y[:, :n]), self.right(y[:, n:])], dim=1))


class ShapeSplit(nn.Module):
    """``torch.split(y, [k, y.size(1) - k], dim=1)`` and ``y.narrow(1, 0, y.size(1) - k)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.a, self.b, self.c = nn.Conv2d(4, 5, 1), nn.Conv2d(8, 5, 1), nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        k = 4
        first, second = torch.split(y, [k, y.size(1) - k], dim=1)
        return self.a(first) + self.b(second) + self.c(y.narrow(1, y.size(1) - 8, y.size(1) - k))


class SplitBySize(nn.Module):
    """``y.split(y.shape[1] // 3, dim=1)``: three equal pieces whose size the graph computes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 1) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        pieces = y.split(y.shape[1] // 3, dim=1)
        return sum(conv(pieces[i]) for i, conv in enumerate(self.convs))


class BlurPool(nn.Module):
    """TResNet's anti-aliased downsampling: ``F.conv2d(x, self.filt, groups=x.shape[1])`` with a fixed blur filter
    held as a buffer (a depthwise conv: its filter is resliced, but never named by a mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.register_buffer("filt", torch.ones(8, 1, 3, 3) / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.head(torch.nn.functional.conv2d(x, self.filt, stride=2, padding=1, groups=x.shape[1]))


MODELS = [HalfSlice, ShapeSplit, SplitBySize, BlurPool]


def build(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().double().eval()


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_shape_computed_bounds_export_exactly(cls: type[nn.Module], side: str, capture: str) -> None:
    assert_masked_exports_shrink(build(cls), X, side, capture)


def test_bounds_are_read_at_their_traced_values() -> None:
    graph_module = trace(build(HalfSlice), (X,), capture="symbolic_trace")
    roles = analyse_channels(graph_module).roles
    slices = sorted((r.start, r.length) for r in roles.values() if isinstance(r, Slice))
    assert slices == [(0, 8), (8, 8)]
    graph_module = trace(build(ShapeSplit), (X,), capture="symbolic_trace")
    roles = analyse_channels(graph_module).roles
    assert [r.sections for r in roles.values() if isinstance(r, Split)] == [(4, 8)]
    assert [(r.start, r.length) for r in roles.values() if isinstance(r, Slice)] == [(4, 8)]


def test_pruned_bounds_are_constants_counting_kept_channels() -> None:
    """Stem output channels 0, 1 and 2 pruned: 13 kept, 5 in the first half and 8 in the second, so the cut is at 5;
    recomputing ``y.shape[1] // 2`` on the pruned tensor would cut at 6."""
    model = build(HalfSlice)
    spec = fx_upscale.PruneSpec(outputs={"stem.weight": [0, 1, 2]})
    result = fx_upscale.export(model, X, spec=spec, capture="symbolic_trace")
    assert_exact(result, spec.apply(model), X)
    cuts = [
        node.args[1][1]
        for node in result.module.graph.nodes
        if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], tuple)
    ]
    assert cuts == [slice(0, 5), slice(5, 13)]
    assert count_calls(result.module, operator.floordiv) == 0  # the shape arithmetic is gone with its readers


class DataBound(nn.Module):
    """A channel slice whose bound is computed from tensor data (a 0-d tensor), not from shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.conv = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.stem(x))
        n = (y.sum() > 0).long() * 2 + 2
        return y[:, :n]


def test_bound_from_tensor_data_is_an_unknown_op_not_a_type_error() -> None:
    model = build(DataBound)
    graph_module = trace(model, (X,), capture="symbolic_trace")
    reasons = [r.reason for r in analyse_channels(graph_module).roles.values() if isinstance(r, Unknown)]
    assert "slicing with bounds that are neither constants nor shape arithmetic" in reasons
    spec = fx_upscale.mask(model, X, amount=0.3, side="input", capture="symbolic_trace")
    result = fx_upscale.export(model, X, spec=spec, capture="symbolic_trace")
    assert_exact(result, spec.apply(model), X)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_buffer_filter_is_resliced_but_never_masked(capture: str) -> None:
    model = build(BlurPool)
    spec = fx_upscale.mask(model, X, amount=0.3, side="output", capture=capture)
    assert set(spec.outputs) == {"stem.weight"}
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert dict(result.module.named_buffers())["filt"].shape == (8 - len(spec.outputs["stem.weight"]), 1, 3, 3)
