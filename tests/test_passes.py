"""The FX passes: PassManager composition, idempotence, plan/graph mismatch, shared gathers."""

from __future__ import annotations

import copy

import pytest
import torch
from support import assert_exact, gathers_in_graph
from torch import nn
from torch.fx.passes.infra.pass_manager import PassManager

import fx_upscale
from fx_upscale import PruneSpec, UnsupportedGraphError
from fx_upscale.channels import analyse_channels
from fx_upscale.latency import measure_copies
from fx_upscale.ordering import Gather
from fx_upscale.passes import ChannelReorderPass, CleanupPass
from fx_upscale.planning import plan_channels
from fx_upscale.segments import find_segments
from fx_upscale.tracing import trace


class Fan(nn.Module):
    """One activation read by four consumers; two of them need the same non-contiguous set."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 1)
        self.c = nn.Conv2d(8, 4, 1)
        self.d = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.a(y) + self.b(y) + self.c(y) + self.d(y)


# Pruned input columns: a and b keep {0, 2, 4, 6}; c keeps {0, 1, 2, 3}; d keeps {1, 3, 5, 7}.
FAN_SPEC = PruneSpec(
    inputs={"a.weight": [1, 3, 5, 7], "b.weight": [1, 3, 5, 7], "c.weight": [4, 5, 6, 7], "d.weight": [0, 2, 4, 6]}
)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 4, 4, dtype=torch.float64)


def _planned(model, x, mode="upscale"):
    graph_module = trace(FAN_SPEC.apply(model), (x,))
    analysis = analyse_channels(graph_module)
    return graph_module, plan_channels(analysis, find_segments(analysis), mode)


def test_pass_manager_runs_the_pipeline_and_a_second_run_changes_nothing(x):
    model = Fan().double().eval()
    graph_module, plan = _planned(model, x)
    manager = PassManager([ChannelReorderPass(plan), CleanupPass()], steps=3)
    result = manager(graph_module)
    assert result.modified
    again = PassManager([ChannelReorderPass(plan), CleanupPass()])(result.graph_module)
    assert not again.modified
    with torch.no_grad():
        assert (result.graph_module(x) - FAN_SPEC.apply(model)(x)).abs().max() <= 1e-12


def test_an_export_generates_code_twice_once_traced_once_pruned(x, monkeypatch):
    generated = []
    recompile = torch.fx.GraphModule.recompile
    monkeypatch.setattr(torch.fx.GraphModule, "recompile", lambda self: generated.append(self) or recompile(self))
    model = Fan().double().eval()
    result = fx_upscale.export(model, x, spec=FAN_SPEC, capture="symbolic_trace")
    assert len(generated) == 2 and generated[-1] is result.module and result.report.narrows > 0
    assert_exact(result, FAN_SPEC.apply(model), x)


def test_identical_gathers_are_shared(x):
    model = Fan().double().eval()
    result = fx_upscale.export(model, x, spec=FAN_SPEC, mode="baseline")
    # baseline gathers a/b (shared), c and d: three index_select nodes for four gathering consumers
    assert gathers_in_graph(result.module) == result.report.gathers == 3
    accesses = {a.node: a for a in result.plan.accesses}
    assert accesses["b"].shared_with == "a" and accesses["b"].copied_elements == 0
    assert_exact(result, FAN_SPEC.apply(model), x)


def test_upscale_orders_channels_so_fewer_consumers_gather(x):
    model = Fan().double().eval()
    baseline = fx_upscale.export(model, x, spec=FAN_SPEC, mode="baseline").report
    upscale = fx_upscale.export(model, x, spec=FAN_SPEC, mode="upscale")
    assert upscale.report.gathers < baseline.gathers
    assert upscale.report.copied_elements < baseline.copied_elements
    assert upscale.report.narrows + upscale.report.gathers == 4
    assert_exact(upscale, FAN_SPEC.apply(model), x)


def test_plan_applied_to_another_graph_is_refused(x):
    model = Fan().double().eval()
    graph_module, plan = _planned(model, x)
    other = trace(nn.Sequential(nn.Conv2d(3, 5, 1)).double().eval(), (x,))
    with pytest.raises(UnsupportedGraphError, match=r"plan and apply on the same GraphModule"):
        ChannelReorderPass(plan)(other)


def test_graph_module_input_is_accepted_and_not_mutated(x):
    model = Fan().double().eval()
    traced = torch.fx.symbolic_trace(FAN_SPEC.apply(model))
    code_before, state_before = traced.code, copy.deepcopy(traced.state_dict())
    result = fx_upscale.export(traced, x)
    assert traced.code == code_before
    assert all(torch.equal(state_before[k], v) for k, v in traced.state_dict().items())
    assert result.module.stem.out_channels == 8 and result.report.params_after < result.report.params_before
    assert_exact(result, traced, x)


def test_report_explains_every_consumer(x):
    model = Fan().double().eval()
    report = fx_upscale.export(model, x, spec=FAN_SPEC).report
    (segment,) = [s for s in report.segments if s.consumers and s.consumers[0].source == "relu"]
    assert [c.node for c in segment.consumers] == ["a", "b", "c", "d"]
    for consumer in segment.consumers:
        assert consumer.access in ("full", "narrow", "gather") and consumer.reason
        assert consumer.channels_needed == 4 and consumer.channels_available == 8
    assert sum(c.copied_elements for c in segment.consumers) == report.copied_elements


GENERAL_POSITION = PruneSpec(
    inputs={"a.weight": [4, 5, 6, 7], "b.weight": [0, 1, 6, 7], "c.weight": [1, 3, 5, 7], "d.weight": [0, 3, 5, 6]}
)  # no order makes all four kept sets contiguous


def test_consumers_gathering_from_one_tensor_share_one_gather(x):
    """At batch 1, four consumers in general position: two read ranges of the reordered tensor, the other two
    share one gather of the union of their channels, each reading a contiguous range of it (a free view)."""
    model, x = Fan().double().eval(), x[:1]
    result = fx_upscale.export(model, x, spec=GENERAL_POSITION)
    assert gathers_in_graph(result.module) == result.report.gathers == 1
    gathering = [a for a in result.plan.accesses if isinstance(a.access, Gather)]
    assert len(gathering) == 2 and all(a.access.within is not None for a in gathering)
    assert gathering[0].access.indices == gathering[1].access.indices
    union = {c for a in gathering for c in a.columns}
    assert len(gathering[0].access.indices) == len(union) < sum(len(a.columns) for a in gathering)
    assert result.report.copied_elements == len(union) * 4 * 4  # batch 1, 4x4 maps
    assert_exact(result, GENERAL_POSITION.apply(model), x)


def test_at_a_larger_batch_each_consumer_gathers_its_own(x):
    """At batch 2 a channel range is strided and the convolution reading it copies it: a range of a shared gather
    would be copied twice, so the two consumers that cannot read a range of the input gather their own channels,
    and what is copied in all (gathers plus convolution inputs) is no more than baseline's gathers."""
    model = Fan().double().eval()
    result = fx_upscale.export(model, x, spec=GENERAL_POSITION)
    baseline = fx_upscale.export(model, x, spec=GENERAL_POSITION, mode="baseline")
    gathering = [a for a in result.plan.accesses if isinstance(a.access, Gather)]
    assert gathers_in_graph(result.module) == result.report.gathers == len(gathering) == 2
    assert all(a.access.within is None and len(a.access.indices) == 4 for a in gathering)
    assert result.report.copied_elements == 2 * 4 * 2 * 4 * 4  # two gathers of 4 channels, batch 2, 4x4 maps
    assert sum(measure_copies(result.module, x)) <= sum(measure_copies(baseline.module, x))
    assert_exact(result, GENERAL_POSITION.apply(model), x)
