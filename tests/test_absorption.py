"""Selections absorbed into concatenations: a consumer reading cat -> BN -> ReLU needs no inserted copy."""

from __future__ import annotations

import torch
from support import assert_exact, gathers_in_graph, randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec
from fx_upscale.cost_model import default_cost_model


class Dense(nn.Module):
    """Two producers concatenated, read through BatchNorm and ReLU by one consumer each."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.bn1 = nn.BatchNorm2d(10)
        self.head1 = nn.Conv2d(10, 5, 1)
        self.bn2 = nn.BatchNorm2d(10)
        self.head2 = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        first = self.head1(torch.relu(self.bn1(torch.cat([a, b], 1))))
        second = self.head2(torch.relu(self.bn2(torch.cat([a, b], 1))))
        return first + second


SPEC = PruneSpec(inputs={"head1.weight": [1, 3, 7], "head2.weight": [0, 2, 4, 6, 8]})
FREE_VIEWS = default_cost_model(backend="compile")  # views cost nothing: absorbing is always predicted faster


def test_each_cat_concatenates_only_what_its_consumer_needs():
    model = randomize_batchnorm(Dense()).double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    result = fx_upscale.export(model, x, spec=SPEC, cost_model=FREE_VIEWS)
    assert gathers_in_graph(result.module) == result.report.gathers == 0
    assert result.report.copied_elements == 0 and result.report.absorbed == 2
    assert result.module.bn1.num_features == result.module.head1.in_channels == 7
    assert result.module.bn2.num_features == result.module.head2.in_channels == 5
    cats = [n for n in result.module.graph.nodes if n.target is torch.cat]
    assert all(all(arg.target is torch.narrow or arg.op == "call_module" for arg in cat.args[0]) for cat in cats)
    reports = {c.node: c for s in result.report.segments for c in s.consumers}
    assert reports["head1"].access == reports["head2"].access == "absorbed"
    assert_exact(result, SPEC.apply(model), x)


def test_baseline_gathers_instead():
    model = randomize_batchnorm(Dense()).double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    result = fx_upscale.export(model, x, spec=SPEC, mode="baseline")
    assert result.report.gathers == 2 and result.report.absorbed == 0
    assert result.module.bn1.num_features == 10
    assert_exact(result, SPEC.apply(model), x)
