"""ChannelReorderPass: apply a ChannelPlan to the GraphModule it was planned on.

What it does, in order: reslice every parameter and buffer the plan names (rows of producers, columns of consumers,
per-channel tensors), set module attributes (``in_channels``, ``num_features`` ...) and node arguments (functional
``groups``) to the new sizes, and insert one ``torch.narrow`` or ``torch.index_select`` node in front of every
consumer that does not read its whole input (consumers needing the same gather share one node). Inserted nodes carry
``node.meta["upscale"]``. The plan's fingerprint is recorded on the output node, so a second run is a no-op that
reports ``modified=False``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import UnsupportedGraphError
from ..ops import HandlerTable, default_handlers
from ..plan_types import CatSelection, ChannelPlan, ConsumerAccess, Full, Gather, Narrow, ParamSlice
from .invariants import INDEX_PREFIX, check_plan_applied, graph_module_check


class ChannelReorderPass(PassBase):
    """Physically prune and reorder channels as ``plan`` says."""

    def __init__(self, plan: ChannelPlan, handlers: HandlerTable | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.handlers = handlers or default_handlers()  # whose invariants ``ensures`` checks
        parts = (plan.mode, plan.param_slices, plan.attr_updates, plan.arg_updates, plan.accesses, plan.cat_selections)
        self.fingerprint = hash(repr(parts))  # repr: argument updates may hold slices, unhashable before Python 3.12

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        if self._already_applied(graph_module):
            return PassResult(graph_module, False)
        self.requires(graph_module)
        with torch.no_grad():
            for param_slice in self.plan.param_slices:
                _reslice(graph_module, param_slice)
        for update in self.plan.attr_updates:
            setattr(graph_module.get_submodule(update.module), update.attr, update.value)
        nodes = {node.name: node for node in graph_module.graph.nodes}
        for arg in self.plan.arg_updates:
            node = nodes[arg.node]
            if arg.target is not None:
                node.target = arg.target
                if callable(arg.target) and node.op == "call_method":  # x.mean(...) becomes f(x, ...)
                    node.op = "call_function"
            node.update_arg(arg.index, arg.value) if len(node.args) > arg.index else node.update_kwarg(
                arg.keyword, arg.value
            )
        _insert_accesses(graph_module, nodes, self.plan.accesses)
        for selection in self.plan.cat_selections:
            _select_in_cat(graph_module.graph, nodes, selection)
        self._output(graph_module).meta.setdefault("upscale", {}).setdefault("applied", []).append(self.fingerprint)
        graph_module.recompile()
        return PassResult(graph_module, True)

    def requires(self, graph_module: fx.GraphModule) -> None:
        """The plan must fit this graph: every node it names exists and every tensor it slices has its old size."""
        if self._already_applied(graph_module):
            return
        names = {node.name for node in graph_module.graph.nodes}
        missing = sorted({access.node for access in self.plan.accesses} - names)
        if missing:
            raise UnsupportedGraphError(
                f"the plan names nodes {missing[:5]} that this graph does not have; "
                "plan and apply on the same GraphModule"
            )
        for param_slice in self.plan.param_slices:
            tensor = _fetch(graph_module, param_slice.name)
            if tensor.shape[param_slice.axis] != param_slice.size_before:
                raise UnsupportedGraphError(
                    f"{param_slice.name} has {tensor.shape[param_slice.axis]} channels on axis {param_slice.axis}, "
                    f"the plan expects {param_slice.size_before}; plan and apply on the same GraphModule"
                )

    def ensures(self, graph_module: fx.GraphModule) -> None:
        """The graph lints, module attributes agree with tensor shapes, every tensor the plan slices has its new
        size, and every consumer the plan narrows or gathers reads a node marked ``meta["upscale"]``."""
        graph_module_check(self.handlers)(graph_module)
        check_plan_applied(graph_module, self.plan)

    def _already_applied(self, graph_module: fx.GraphModule) -> bool:
        return self.fingerprint in self._output(graph_module).meta.get("upscale", {}).get("applied", ())

    @staticmethod
    def _output(graph_module: fx.GraphModule) -> fx.Node:
        return next(node for node in reversed(graph_module.graph.nodes) if node.op == "output")


def _fetch(graph_module: fx.GraphModule, qualname: str) -> torch.Tensor:
    module_name, _, leaf = qualname.rpartition(".")
    return getattr(graph_module.get_submodule(module_name), leaf)


def _reslice(graph_module: fx.GraphModule, param_slice: ParamSlice) -> None:
    module_name, _, leaf = param_slice.name.rpartition(".")
    owner = graph_module.get_submodule(module_name)
    old = getattr(owner, leaf)
    index = torch.tensor(param_slice.indices, dtype=torch.long, device=old.device)
    if param_slice.groups == 1:
        new = old.detach().index_select(param_slice.axis, index)  # a new tensor, sharing nothing with ``old``
    else:  # the input axis of a grouped convolution: each group's block along axis 0 keeps its own selection
        blocks, indices = old.detach().chunk(param_slice.groups, dim=0), index.chunk(param_slice.groups)
        new = torch.cat([block.index_select(param_slice.axis, i) for block, i in zip(blocks, indices)])
    if isinstance(old, nn.Parameter):
        setattr(owner, leaf, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(owner, leaf, new)  # a registered buffer stays registered


def _insert_accesses(graph_module: fx.GraphModule, nodes: dict[str, fx.Node], accesses) -> None:
    device = next((p.device for p in graph_module.parameters()), torch.device("cpu"))
    gathered: dict[tuple[str, tuple[int, ...]], fx.Node] = {}  # one index_select per distinct gather
    graph = graph_module.graph
    for access in accesses:
        if isinstance(access.access, Full):
            continue
        consumer, source = nodes[access.node], nodes[access.source]
        with graph.inserting_before(consumer):
            if isinstance(access.access, Narrow):
                reader = _narrow(graph, source, access, access.access.start, access.access.length)
            else:
                key = (access.source, access.access.indices)
                if key not in gathered:
                    gathered[key] = _gather(graph_module, source, access, device, len(gathered))
                reader = gathered[key]
                if access.access.within is not None:  # a shared gather: this consumer's range of it
                    reader = _narrow(graph, reader, access, *access.access.within)
        consumer.replace_input_with(source, reader)


def _narrow(graph: fx.Graph, source: fx.Node, access: ConsumerAccess, start: int, length: int) -> fx.Node:
    r = access.repeat
    node = graph.call_function(torch.narrow, (source, access.axis, start * r, length * r))
    node.meta["upscale"] = {"access": "narrow", "consumer": access.node}
    return node


def _gather(graph_module: fx.GraphModule, source: fx.Node, access: ConsumerAccess, device, count: int) -> fx.Node:
    name = f"{INDEX_PREFIX}{count}"
    while hasattr(graph_module, name):
        name += "_"
    graph_module.register_buffer(name, torch.tensor(_expanded(access), dtype=torch.long, device=device))
    graph = graph_module.graph
    index = graph.get_attr(name)
    index.meta["upscale"] = {"access": "index", "consumer": access.node}
    node = graph.call_function(torch.index_select, (source, access.axis, index))
    node.meta["upscale"] = {"access": "gather", "consumer": access.node}
    return node


def _select_in_cat(graph: fx.Graph, nodes: dict[str, fx.Node], selection: CatSelection) -> None:
    """Make the cat concatenate only the selected pieces: narrow views of its inputs, or the inputs themselves."""
    cat = nodes[selection.cat]
    axis = _cat_dim(cat)
    pieces = []
    with graph.inserting_before(cat):
        for piece in selection.pieces:
            source = nodes[piece.source]
            if piece.whole:
                pieces.append(source)
                continue
            view = graph.call_function(torch.narrow, (source, axis, piece.start, piece.length))
            view.meta["upscale"] = {"access": "narrow", "consumer": selection.consumer, "cat": selection.cat}
            pieces.append(view)
    if len(cat.args) > 0:
        cat.update_arg(0, pieces)
    else:
        cat.update_kwarg("tensors", pieces)
    cat.meta.setdefault("upscale", {})["selection_of"] = selection.consumer


def _cat_dim(cat: fx.Node) -> int:
    # fx types every argument as the whole Argument union; a traced cat's dim is an int (ops/elementwise.py reads it so)
    dim = cast(int, cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0))
    return dim % len(cat.meta["tensor_meta"].shape)


def _expanded(access: ConsumerAccess) -> tuple[int, ...]:
    if isinstance(access.access, Gather):
        return tuple(i * access.repeat + k for i in access.access.indices for k in range(access.repeat))
    return ()
