"""The copy counter measures a real forward, and agrees with what the report predicts."""

from __future__ import annotations

import pytest
import torch
import torchvision

import fx_upscale
from fx_upscale.copy_count import count_copies


def test_counts_each_copying_op():
    x = torch.randn(2, 6, 3, 3)
    index = torch.tensor([0, 2])

    class Copies(torch.nn.Module):
        def forward(self, x):
            y = torch.cat([x, x], 1)  # 2*12*9 = 216
            z = torch.index_select(y, 1, index)  # 2*2*9 = 36
            w = x.transpose(1, 2).contiguous()  # a copy: 108
            return z.sum() + w.sum() + torch.narrow(x, 1, 0, 3).sum()  # narrow: a view, no copy

    count = count_copies(Copies(), x)
    assert count["cat"] == 216 and count["index_select"] == 36 and count["clone"] == 108
    assert count.total == 360


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_measured_gathers_equal_the_report(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    spec = fx_upscale.mask(model, x, amount=0.3)
    unpruned = count_copies(model, x)
    for mode in ("baseline", "upscale"):
        result = fx_upscale.export(model, x, spec=spec, mode=mode)
        measured = count_copies(result.module, x)
        assert measured["index_select"] == result.report.copied_elements
        assert measured["cat"] <= unpruned["cat"]
    if name == "densenet121":  # with views free, every selection is absorbed: the cats copy less than unpruned
        free_views = fx_upscale.cost_model.default_cost_model(backend="compile")
        absorbed = count_copies(fx_upscale.export(model, x, spec=spec, cost_model=free_views).module, x)
        assert absorbed["index_select"] == 0 and absorbed["cat"] < unpruned["cat"]
