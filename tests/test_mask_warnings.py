"""mask() never prunes nothing in silence: layers an unmapped op keeps from being masked are named, with the op."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import fx_upscale

X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class LocalResponseNormNet(nn.Module):
    """LocalResponseNorm (which mixes neighbouring channels) after every conv: no handler maps it, so no conv may be
    masked."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 8, 3), nn.LocalResponseNorm(3)
        self.c2, self.n2 = nn.Conv2d(8, 8, 3), nn.LocalResponseNorm(3)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c3(self.n2(self.c2(self.n1(self.c1(x)))))


class HalfBlocked(nn.Module):
    """Two branches: one through a cumulative sum over channels (unmapped), one through ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3)
        self.ca, self.cb = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.ca(torch.cumsum(self.a(x), dim=1)) + self.cb(torch.relu(self.b(x)))


def test_a_model_where_an_unmapped_op_blocks_every_layer_warns_and_names_it() -> None:
    with pytest.warns(fx_upscale.MaskWarning, match=r"mask\(\) chose no channel because .*LocalResponseNorm") as caught:
        spec = fx_upscale.mask(LocalResponseNormNet().eval(), X, amount=0.3, side="both")
    assert spec.is_empty()
    [warning] = [w.message for w in caught if isinstance(w.message, fx_upscale.MaskWarning)]
    assert set(warning.blocked) == {
        "c1.weight (output)",
        "c2.weight (input)",
        "c2.weight (output)",
        "c3.weight (input)",
    }
    assert all("no handler for module type LocalResponseNorm" in why for why in warning.blocked.values())


def test_layers_left_unmasked_are_named_beside_those_masked() -> None:
    with pytest.warns(fx_upscale.MaskWarning, match=r"left 1 layer\(s\) unmasked .*cumsum") as caught:
        spec = fx_upscale.mask(HalfBlocked().eval(), X, amount=0.5, side="input")
    assert set(spec.inputs) == {"cb.weight"}
    [warning] = [w.message for w in caught if isinstance(w.message, fx_upscale.MaskWarning)]
    assert list(warning.blocked) == ["ca.weight (input)"]


def test_a_model_with_nothing_to_mask_says_so() -> None:
    with pytest.warns(fx_upscale.MaskWarning, match=r"chose no channel: no layer has channels it may mask"):
        spec = fx_upscale.mask(nn.Conv2d(3, 4, 3).eval(), X, amount=0.3)
    assert spec.is_empty()


def test_a_model_fx_upscale_maps_entirely_masks_without_warning() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", fx_upscale.MaskWarning)
        spec = fx_upscale.mask(model, torch.randn(1, 3, 32, 32), amount=0.3, side="both")
    assert not spec.is_empty()
