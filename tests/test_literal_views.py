"""Views with literal sizes and powers, as timm's MetaFormer / PoolFormer blocks and every ``torch.export`` graph
write them, through both front ends.

``torch.export`` records every view / reshape size as a literal (``aten.view.default(x, [2, 320, 1, 1])``): the
size of the axis carrying channels is rewritten for the kept channels (``ops/shape.py``), so that a layer-scale
parameter viewed to ``(C, 1, 1)``, a classifier's flatten, and a channel shuffle's split into groups and merge back
stay prunable. ``x ** p`` with a constant ``p > 0`` keeps zero (StarReLU: ``s * relu(x) ** 2 + b``). Exported
equals masked in float64, input and output side, and parameters are removed.
"""

from __future__ import annotations

import pytest
import torch
from support import assert_exact, assert_masked_exports_shrink
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.ops import Unknown
from fx_upscale.tracing import trace

CAPTURES = ["symbolic_trace", "torch.export"]
X = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class Scale(nn.Module):
    """timm's ``metaformer.Scale``: ``x * self.scale.view(C, 1, 1)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(dim) + 0.5)
        self.shape = (dim, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


class MetaFormerBlock(nn.Module):
    """A PoolFormer-v2-like block: residual scaled by a viewed parameter, an MLP with StarReLU (a square)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(8, 12, 1), nn.Conv2d(12, 8, 1)
        self.res_scale = Scale(8)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.res_scale(x) + self.fc2(0.8 * torch.relu(self.fc1(x)) ** 2)
        x = nn.functional.max_pool2d(x, 2)
        return self.head(x.reshape(2, 128))  # a literal size for the flattened channels


class Shuffle(nn.Module):
    """A ShuffleNet channel shuffle with literal sizes (``view(2, 2, 4, 8, 8)``, ``view(2, 8, 8, 8)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x.view(2, 2, 4, 8, 8).transpose(1, 2).contiguous().view(2, 8, 8, 8)
        return self.conv(x)


MODELS = [MetaFormerBlock, Shuffle]


def build(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().double().eval()


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_literal_sizes_export_exactly(cls: type[nn.Module], side: str, capture: str) -> None:
    assert_masked_exports_shrink(build(cls), X, side, capture)


@pytest.mark.parametrize("capture", CAPTURES)
def test_every_view_and_power_is_recognised(capture: str) -> None:
    graph_module = trace(build(MetaFormerBlock), (X,), capture=capture)
    unknown = [r.reason for r in analyse_channels(graph_module).roles.values() if isinstance(r, Unknown)]
    assert unknown == []


@pytest.mark.parametrize("capture", CAPTURES)
def test_the_head_shrinks_through_the_literal_flatten(capture: str) -> None:
    """Residual channels 0 and 5 zero (stem and fc2 rows): the head keeps 6 x 16 of its 128 columns."""
    model = build(MetaFormerBlock)
    spec = fx_upscale.PruneSpec(outputs={"stem.weight": [0, 5], "fc2.weight": [0, 5]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert dict(result.module.named_parameters())["head.weight"].shape == (5, 96)


class NegativePower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv((self.stem(x) ** 2 + 1) ** -1)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_negative_power_does_not_keep_zero(capture: str) -> None:
    """``(y ** 2 + 1) ** -1`` of a removed channel is 1: the channel stays, its input-side mask is exact."""
    model = build(NegativePower)
    spec = fx_upscale.PruneSpec(outputs={"stem.weight": [1]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert dict(result.module.named_parameters())["conv.weight"].shape == (2, 4, 1, 1)
