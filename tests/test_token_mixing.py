"""Token-mixing linear layers (MLP-Mixer, ResMLP, gMLP) are not channel consumers, and ``addcmul`` (timm's Affine) is
elementwise.

A linear layer applied after ``x.transpose(1, 2)`` reads tokens: the channels pass through it one by one. Exported
equals masked in float64 through both front ends, the channel MLPs shrink, the token layers keep their weights, and
``mask()`` warns about nothing.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from support import assert_exact, checked_exports, randomize_small_parameters
from torch import nn

import fx_upscale
from fx_upscale.channels import ChannelAnalysis, analyse_channels
from fx_upscale.ops import Weighted
from fx_upscale.ops.token_mixing import TokenMixing

TOKENS, DIM, HIDDEN = 6, 8, 16
LINEARS = ("stem", "tokens", "fc1", "fc2", "head")  # MixerBlock's, in graph order
X = torch.randn(2, TOKENS, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class Affine(nn.Module):
    """ResMLP's per-channel affine map, as timm writes it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


class MixerBlock(nn.Module):
    """A token MLP over the transposed tokens, then a channel MLP; ``norm``: LayerNorm (Mixer) or Affine (ResMLP)."""

    def __init__(self, norm: str, token_bias: bool = True) -> None:
        super().__init__()
        make = (lambda: nn.LayerNorm(DIM)) if norm == "layer_norm" else (lambda: Affine(DIM))
        self.stem = nn.Linear(DIM, DIM)
        self.norm1, self.norm2 = make(), make()
        self.tokens = nn.Linear(TOKENS, TOKENS, bias=token_bias)
        self.fc1, self.act, self.fc2 = nn.Linear(DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, DIM)
        self.head = nn.Linear(DIM, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def build(norm: str, token_bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = MixerBlock(norm, token_bias).double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("norm", "tokens.bias")):
                parameter.uniform_(0.5, 1.5)  # affine parameters and a token bias that are not the defaults
    return randomize_small_parameters(model)


@pytest.mark.parametrize("capture", ["symbolic_trace", "torch.export"])
@pytest.mark.parametrize("norm", ["layer_norm", "affine"])
def test_token_mixing_block_exports_exactly_and_shrinks(norm: str, capture: str) -> None:
    model = build(norm)
    kept = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MaskWarning: nothing blocks a layer
        for side, mode, result in checked_exports(model, X, capture):
            report = result.report
            kept[side, mode] = report.params_after / report.params_before
            tokens = [p for n, p in result.module.named_parameters() if "tokens" in n and p.dim() == 2]
            assert [tuple(p.shape) for p in tokens] == [(TOKENS, TOKENS)]  # never resliced
    assert kept["input", "upscale"] < 0.95 and kept["output", "upscale"] < 0.95
    assert kept["input", "upscale"] == kept["input", "baseline"]


@pytest.mark.parametrize("capture", ["symbolic_trace", "torch.export"])
@pytest.mark.parametrize("norm", ["layer_norm", "affine"])
def test_token_linear_gets_the_token_mixing_role(norm: str, capture: str) -> None:
    """Its node is a TokenMixing (not a barrier, not a channel consumer); the channel MLP's layers stay Weighted."""
    analysis = analyse_channels(fx_upscale.trace(build(norm), (X,), capture=capture))
    roles = [type(analysis.roles[node.name]) for node in _linear_nodes(analysis)]
    assert roles == [Weighted, TokenMixing, Weighted, Weighted, Weighted]  # stem, tokens, fc1, fc2, head
    assert not analysis.barriers


def test_a_token_bias_keeps_a_masked_channel() -> None:
    """A zero channel comes out of the token layer as its bias: the channel is kept (and the export exact); without
    a bias it stays zero, and the residual stream loses it."""
    spec = fx_upscale.PruneSpec(outputs={"stem.weight": [2], "fc2.weight": [2]})  # residual channel 2, both writers
    for token_bias, stem_rows in ((True, DIM), (False, DIM - 1)):
        model = build("affine", token_bias)
        with torch.no_grad():
            model.norm1.beta.zero_(), model.norm2.beta.zero_()  # affine shifts that keep a zero channel zero
        result = fx_upscale.export(model, X, spec=spec)
        assert_exact(result, spec.apply(model), X)
        assert result.module.stem.out_features == stem_rows, token_bias


def _linear_nodes(analysis: ChannelAnalysis) -> list:
    """The linear layers in graph order: modules (symbolic_trace) or ``aten.linear`` calls (torch.export)."""
    linear = [n for n in analysis.nodes.values() if n.target is torch.ops.aten.linear.default]
    return linear or [n for n in analysis.nodes.values() if n.op == "call_module" and str(n.target) in LINEARS]
