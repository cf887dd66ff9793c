"""fx_upscale's passes inside a PassManager: composition with another pass, steps=3, run checks, errors, ensures."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.passes.infra.pass_manager import PassManager

import fx_upscale
from fx_upscale import PruneSpec, UnsupportedGraphError
from fx_upscale.passes import (
    ChannelReorderPass,
    CleanupPass,
    apply_plan,
    check_graph_module,
    upscale_error,
    upscale_passes,
)


class FoldBatchNormPass(PassBase):
    """Fold every Conv2d -> BatchNorm2d pair (torch.fx.experimental.optimization.fuse); idempotent."""

    def call(self, graph_module):
        if not any(isinstance(m, nn.BatchNorm2d) for m in graph_module.modules()):
            return PassResult(graph_module, False)
        return PassResult(fuse(graph_module, inplace=True, no_trace=True), True)


class Branches(nn.Module):
    """A conv-BN-ReLU stem read by three convolutions, each followed by BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6)) for _ in range(3))

    def forward(self, x):
        y = self.stem(x)
        return sum(head(y) for head in self.heads)


SPEC = PruneSpec(inputs={"heads.0.0.weight": [1, 3, 5], "heads.1.0.weight": [0, 1, 2], "heads.2.0.weight": [2, 6]})


@pytest.fixture
def model() -> nn.Module:
    from support import randomize_batchnorm

    return randomize_batchnorm(Branches()).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, dtype=torch.float64)


def _traced(model, x):
    graph_module = fx_upscale.trace(SPEC.apply(model), (x,))
    return graph_module, fx_upscale.plan(graph_module)


def test_with_another_pass_and_three_steps_the_pipeline_settles_and_a_rerun_changes_nothing(model, x):
    graph_module, plan = _traced(model, x)
    manager = PassManager([*upscale_passes(plan), FoldBatchNormPass()], steps=3, run_checks_after_each_pass=True)
    manager.add_checks(check_graph_module)
    result = manager(graph_module)
    assert result.modified
    pruned = result.graph_module
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pruned.modules())
    assert [pruned.get_submodule(f"heads.{i}.0").in_channels for i in range(3)] == [5, 5, 6]
    assert not manager(pruned).modified
    with torch.no_grad():
        assert (pruned(x) - SPEC.apply(model)(x)).abs().max() <= 1e-9


def test_folding_first_then_pruning_the_folded_graph(model, x):
    folded = FoldBatchNormPass()(fx_upscale.trace(SPEC.apply(model), (x,))).graph_module
    graph_module = fx_upscale.trace(folded, (x,))
    result = apply_plan(graph_module, fx_upscale.plan(graph_module), steps=3)
    assert result.modified
    with torch.no_grad():
        assert (result.graph_module(x) - SPEC.apply(model)(x)).abs().max() <= 1e-9


def test_a_pass_error_keeps_the_upscale_error_as_its_cause(model, x):
    _, plan = _traced(model, x)
    other = fx_upscale.trace(nn.Sequential(nn.Conv2d(3, 5, 1)).double().eval(), (x,))
    with pytest.raises(Exception, match="ChannelReorderPass") as caught:
        PassManager(upscale_passes(plan))(other)
    assert not isinstance(caught.value, fx_upscale.UpscaleError)  # PassManager wraps it ...
    assert isinstance(caught.value.__cause__, UnsupportedGraphError)  # ... and chains the original
    assert upscale_error(caught.value) is caught.value.__cause__
    with pytest.raises(UnsupportedGraphError, match="plan and apply on the same GraphModule"):
        apply_plan(other, plan)  # apply_plan (and fx_upscale.export) raise it unwrapped


def test_ensures_catches_a_module_whose_attributes_disagree_with_its_weight(model, x):
    graph_module, plan = _traced(model, x)
    reorder = ChannelReorderPass(plan)
    reorder(graph_module)
    reorder.ensures(graph_module)
    names = {node.name: node.target for node in graph_module.graph.nodes}
    narrowed = next(names[a.node] for a in plan.accesses if a.access.__class__.__name__ in ("Narrow", "Gather"))
    conv = graph_module.get_submodule(narrowed)
    conv.in_channels += 1
    with pytest.raises(UnsupportedGraphError, match=rf"module '{narrowed}' \(Conv2d\) has in_channels="):
        reorder.ensures(graph_module)
    with pytest.raises(Exception, match="ChannelReorderPass") as caught:
        PassManager([reorder]).__call__(graph_module)
    assert isinstance(upscale_error(caught.value), UnsupportedGraphError)


def test_ensures_catches_an_inserted_node_that_lost_its_mark(model, x):
    graph_module, plan = _traced(model, x)
    reorder = ChannelReorderPass(plan)
    reorder(graph_module)
    marked = [node for node in graph_module.graph.nodes if node.op == "call_function" and "upscale" in node.meta]
    assert marked
    for node in marked:
        del node.meta["upscale"]
    with pytest.raises(UnsupportedGraphError, match=r"through an inserted narrow or gather|carry no node.meta"):
        reorder.ensures(graph_module)


def test_ensures_catches_a_tensor_resliced_twice(model, x):
    graph_module, plan = _traced(model, x)
    reorder = ChannelReorderPass(plan)
    reorder(graph_module)
    conv = graph_module.get_submodule("heads.1.0")
    conv.weight = nn.Parameter(conv.weight[:, :-1])
    conv.in_channels -= 1
    with pytest.raises(UnsupportedGraphError, match=r"heads.1.0.weight has \d+ channels on axis 1, the plan leaves"):
        reorder.ensures(graph_module)


def test_cleanup_requires_a_graph_module_and_ensures_no_dead_code(model, x):
    with pytest.raises(UnsupportedGraphError, match="not a torch.fx.GraphModule"):
        CleanupPass()(model)
    graph_module, _ = _traced(model, x)
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    with graph_module.graph.inserting_before(output):
        graph_module.graph.call_function(torch.relu, (output.args[0],))
    with pytest.raises(UnsupportedGraphError, match="has no users after CleanupPass"):
        CleanupPass().ensures(graph_module)
    assert CleanupPass()(graph_module).modified
    assert not CleanupPass()(graph_module).modified
