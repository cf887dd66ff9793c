"""Views of token tensors that leave the channel axis whole (LeViT's): ``flatten(0, 1)`` of batch and tokens, a
BatchNorm1d read back with ``reshape_as``, strided slicing of the token grid (``x[:, ::2, ::2]``) and
``reshape(B, -1, C)`` (whose ``C`` is a literal in ``torch.export``'s graphs).

Exported equals masked in float64 through both front ends, the layers shrink, and ``mask()`` warns about nothing.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from support import checked_exports, randomize_batchnorm
from torch import nn

SIDE, DIM, HIDDEN = 4, 8, 16
X = torch.randn(2, SIDE * SIDE, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class LinearNorm(nn.Module):
    """timm's LeViT LinearNorm: a linear layer, then BatchNorm1d over every token of the batch."""

    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self.linear, self.bn = nn.Linear(fin, fout, bias=False), nn.BatchNorm1d(fout)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class Downsample(nn.Module):
    """Every other token of the grid, as LeViT's subsampling attention takes its queries."""

    def forward(self, x):
        batch, _, channels = x.shape
        x = x.view(batch, SIDE, SIDE, channels)[:, ::2, ::2]
        return x.reshape(batch, -1, channels)


class TinyLevit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mlp1, self.mlp2 = LinearNorm(DIM, DIM), LinearNorm(DIM, HIDDEN), LinearNorm(HIDDEN, DIM)
        self.down, self.head = Downsample(), nn.Linear(DIM, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.mlp2(torch.relu(self.mlp1(x)))
        return self.head(self.down(x).mean(1))


@pytest.mark.parametrize("capture", ["symbolic_trace", "torch.export"])
def test_token_views_export_exactly_and_shrink(capture: str) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(TinyLevit()).double().eval()
    kept = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MaskWarning: nothing blocks a layer
        for side, mode, result in checked_exports(model, X, capture):
            kept[side, mode] = result.report.params_after / result.report.params_before
    assert kept["input", "upscale"] < 0.95 and kept["output", "upscale"] < 0.95, kept
