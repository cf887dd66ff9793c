"""Invariants of a pruned GraphModule: what the passes' ``ensures`` check, also usable as a PassManager check.

Start at :func:`check_graph_module` (holds for any graph: it lints, every convolution, linear layer and BatchNorm
has attributes that agree with its tensors, every index buffer fx_upscale inserted feeds marked nodes) and
:func:`check_plan_applied` (a plan's slices and reads are in place). Both raise
:class:`~fx_upscale.errors.UnsupportedGraphError` naming the module or node, what disagrees and how to fix it.
Names a later pass removed (a BatchNorm folded into its convolution) are skipped, so the checks still hold after
other passes of a pipeline ran.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx as fx

from ..errors import UnsupportedGraphError, describe_node
from ..ops import HandlerTable, default_handlers
from ..plan_types import ChannelPlan, Gather, Narrow

INDEX_PREFIX = "_upscale_index_"
_FIX = "keep module attributes and tensor shapes in step (ChannelReorderPass updates both from one plan)"


def check_graph_module(graph_module: fx.GraphModule) -> None:
    """Lint the graph, check module attributes against tensor shapes (each default handler's invariant), and that
    inserted gathers are marked. One argument, as ``PassManager.add_checks`` wants; :func:`graph_module_check`
    makes the same check for another handler table."""
    graph_module_check(default_handlers())(graph_module)


def graph_module_check(handlers: HandlerTable) -> Callable[[fx.GraphModule], None]:
    """:func:`check_graph_module` with the invariants of ``handlers``' handlers."""

    def check(graph_module: fx.GraphModule) -> None:
        _check_graph_module(graph_module, handlers)

    return check


def _check_graph_module(graph_module: fx.GraphModule, handlers: HandlerTable) -> None:
    try:
        graph_module.graph.lint()
    except Exception as error:  # lint raises RuntimeError or AssertionError: report both the same way
        raise UnsupportedGraphError(f"the graph does not lint: {error}; a pass left it inconsistent") from error
    for name, module in graph_module.named_modules():
        for handler in handlers.handlers():
            for mismatch in handler.invariant(module):
                raise UnsupportedGraphError(
                    f"module {name!r} ({type(module).__name__}) has {mismatch.attr}={mismatch.actual} but its tensors "
                    f"say {mismatch.expected}; {_FIX}"
                )
    _check_index_buffers(graph_module)


def check_plan_applied(graph_module: fx.GraphModule, plan: ChannelPlan) -> None:
    """Every tensor the plan slices has its new size; every consumer it narrows or gathers reads a marked node."""
    for param_slice in plan.param_slices:
        tensor = _lookup(graph_module, param_slice.name)
        if tensor is not None and tensor.shape[param_slice.axis] != param_slice.size_after:
            raise UnsupportedGraphError(
                f"{param_slice.name} has {tensor.shape[param_slice.axis]} channels on axis {param_slice.axis}, the "
                f"plan leaves {param_slice.size_after}; it was resliced twice or by another pass. Apply a plan "
                "once, to the GraphModule it was planned on"
            )
    nodes = {node.name: node for node in graph_module.graph.nodes}
    for access in plan.accesses:
        consumer = nodes.get(access.node)
        if consumer is None or not isinstance(access.access, (Narrow, Gather)):
            continue
        if not any("upscale" in source.meta for source in consumer.all_input_nodes):
            raise UnsupportedGraphError(
                f"{describe_node(consumer)} should read {access.source} through an inserted narrow or gather "
                f"(node.meta['upscale']), but reads {[n.name for n in consumer.all_input_nodes]}; a pass replaced "
                "or unmarked the inserted node. Keep node.meta when rewriting nodes fx_upscale inserted"
            )


def _check_index_buffers(graph_module: fx.GraphModule) -> None:
    for node in graph_module.graph.nodes:
        if node.op != "get_attr" or not str(node.target).startswith(INDEX_PREFIX):
            continue
        unmarked = [user.name for user in node.users if "upscale" not in user.meta]
        if unmarked:
            raise UnsupportedGraphError(
                f"nodes {unmarked} read fx_upscale's index buffer {node.target!r} but carry no node.meta['upscale']; "
                "every node fx_upscale inserts is marked so that later passes and reports can find it. Keep "
                "node.meta when rewriting these nodes"
            )


def _lookup(graph_module: fx.GraphModule, qualname: str) -> torch.Tensor | None:
    module_name, _, leaf = qualname.rpartition(".")
    try:
        owner = graph_module.get_submodule(module_name)
    except AttributeError:
        return None
    return getattr(owner, leaf, None)
