"""Invariants of a pruned GraphModule: what the passes' ``ensures`` check, also usable as a PassManager check.

Start at :func:`check_graph_module` (holds for any graph: it lints, every convolution, linear layer and BatchNorm
has attributes that agree with its tensors, every index buffer fx_upscale inserted feeds marked nodes) and
:func:`check_plan_applied` (a plan's slices and reads are in place). Both raise
:class:`~fx_upscale.errors.UnsupportedGraphError` naming the module or node, what disagrees and how to fix it.
Names a later pass removed (a BatchNorm folded into its convolution) are skipped, so the checks still hold after
other passes of a pipeline ran.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.parameter import UninitializedParameter

from ..errors import UnsupportedGraphError, describe_node
from ..ordering import Gather, Narrow
from ..planning import ChannelPlan, ParamSlice

INDEX_PREFIX = "_upscale_index_"
_FIX = "keep module attributes and tensor shapes in step (ChannelReorderPass updates both from one plan)"


def check_graph_module(graph_module: fx.GraphModule) -> None:
    """Lint the graph, check module attributes against tensor shapes, and that inserted gathers are marked."""
    try:
        graph_module.graph.lint()
    except Exception as error:  # lint raises RuntimeError or AssertionError: report both the same way
        raise UnsupportedGraphError(f"the graph does not lint: {error}; a pass left it inconsistent") from error
    for name, module in graph_module.named_modules():
        for attr, actual, expected in _shape_mismatches(module):
            raise UnsupportedGraphError(
                f"module {name!r} ({type(module).__name__}) has {attr}={actual} but its tensors say {expected}; {_FIX}"
            )
    _check_index_buffers(graph_module)


def check_plan_applied(graph_module: fx.GraphModule, plan: ChannelPlan) -> None:
    """Every tensor the plan slices has its new size; every consumer it narrows or gathers reads a marked node."""
    for param_slice in plan.param_slices:
        tensor = _lookup(graph_module, param_slice.name)
        if tensor is not None and tensor.shape[param_slice.axis] != _size_after(param_slice):
            raise UnsupportedGraphError(
                f"{param_slice.name} has {tensor.shape[param_slice.axis]} channels on axis {param_slice.axis}, the "
                f"plan leaves {_size_after(param_slice)}; it was resliced twice or by another pass. Apply a plan "
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


def _shape_mismatches(module: nn.Module) -> list[tuple[str, int, int]]:
    """(attribute, its value, the value the module's tensors imply) for each attribute that disagrees."""
    if isinstance(module, _ConvNd):
        return _conv_mismatches(module)
    if isinstance(module, nn.Linear):
        return _mismatches(module, {"out_features": _rows(module.weight, 0), "in_features": _rows(module.weight, 1)})
    if isinstance(module, _NormBase):
        sizes = [_rows(t, 0) for t in (module.weight, module.running_mean) if t is not None]
        return _mismatches(module, {"num_features": sizes[0] if sizes else None})
    return []


def _conv_mismatches(conv: _ConvNd) -> list[tuple[str, int, int]]:
    rows, columns = _rows(conv.weight, 0), _rows(conv.weight, 1)
    columns = None if columns is None else columns * conv.groups
    inputs, outputs = (rows, columns) if conv.transposed else (columns, rows)
    found = _mismatches(conv, {"in_channels": inputs, "out_channels": outputs})
    if conv.bias is not None and outputs is not None and conv.bias.shape[0] != outputs:
        found.append(("bias length", conv.bias.shape[0], outputs))
    return found


def _mismatches(module: nn.Module, implied: dict[str, int | None]) -> list[tuple[str, int, int]]:
    return [
        (attr, getattr(module, attr), size)
        for attr, size in implied.items()
        if size is not None and getattr(module, attr) != size
    ]


def _rows(tensor: torch.Tensor | None, axis: int) -> int | None:
    if tensor is None or isinstance(tensor, UninitializedParameter) or tensor.dim() <= axis:
        return None
    return tensor.shape[axis]


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


def _size_after(param_slice: ParamSlice) -> int:
    groups = getattr(param_slice, "groups", 1)  # the input axis of a grouped convolution: one selection per group
    return len(param_slice.indices) if param_slice.axis == 0 else len(param_slice.indices) // groups


def _lookup(graph_module: fx.GraphModule, qualname: str) -> torch.Tensor | None:
    module_name, _, leaf = qualname.rpartition(".")
    try:
        owner = graph_module.get_submodule(module_name)
    except AttributeError:
        return None
    return getattr(owner, leaf, None)
