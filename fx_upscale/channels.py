"""Channel analysis: which channel of which tensor is which, which are zero, and who needs them.

Every tensor node that carries channels gets a :class:`~fx_upscale.layouts.Layout`: its channel axis and one
*channel id* per channel along it. Producers (conv, linear) and graph inputs create fresh ids; pass-through ops reuse
their input's ids; ``cat`` concatenates them; elementwise ops (``add``, ``mul`` ...) *tie* the ids of their operands,
position by position, with a union-find. The tied ids form a *channel class*: one channel of a shared channel
space, kept or removed as a whole.

In the same forward walk, :func:`analyse_channels` computes which channels are exactly zero in the masked model
(a pruned filter, a masked BatchNorm channel ...) and records every :class:`~fx_upscale.layouts.Read`: a consumer
(conv/linear input) needs a position unless its weight column is zero or the input channel is zero; a barrier (the
graph output, an op no handler maps) needs every position, in its original order.

The per-op rules are the handlers' ``propagate`` methods (``ops/``); :class:`ChannelWalk` is the state they read
and write. Start reading at :func:`analyse_channels`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from networkx.utils import UnionFind

from .layouts import Layout, Read
from .ops.base import Context, shape
from .ops.structural import Unknown
from .ops.table import HandlerTable, default_handlers


@dataclass(frozen=True)
class ChannelAnalysis:
    """The result of :func:`analyse_channels`: frozen values the planner works from."""

    order: tuple[str, ...]  # node names in graph order
    nodes: Mapping[str, fx.Node]  # for error messages
    roles: Mapping[str, Any]  # node -> the role its handler recognised
    layouts: Mapping[str, Layout]
    zeros: Mapping[str, tuple[bool, ...]]
    owner: Mapping[int, str]  # channel id -> the node that created it
    fixed: frozenset[int]  # ids that are never removed or reordered (graph inputs, outputs of unknown ops)
    class_of: Mapping[int, int]  # channel id -> its class (the smallest id tied to it)
    reads: tuple[Read, ...]
    barriers: Mapping[str, str]  # unknown-op node -> why it is a barrier
    handlers: HandlerTable

    def classes(self, node: str) -> tuple[int, ...]:
        return tuple(self.class_of[i] for i in self.layouts[node].ids)

    def handler(self, node: str) -> Any:
        """The handler owning ``node``'s role."""
        return self.handlers.handler(self.roles[node])

    def channel_bytes(self, node: str) -> int:
        """Bytes one channel of ``node``'s value holds."""
        return _elements_per_channel(self.nodes[node], self.layouts[node]) * _element_size(self.nodes[node])


def analyse_channels(gm: fx.GraphModule, handlers: HandlerTable | None = None) -> ChannelAnalysis:
    """Walk ``gm`` (shape-annotated, masked weights) once and return its :class:`ChannelAnalysis`."""
    walk = ChannelWalk(gm, handlers or default_handlers())
    for node in gm.graph.nodes:
        walk.visit(node)
    return walk.result()


def _is_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


class ChannelWalk:
    """Mutable state of one forward walk, and the operations handlers use on it; :meth:`result` freezes it."""

    def __init__(self, gm: fx.GraphModule, handlers: HandlerTable) -> None:
        self.gm, self.handlers = gm, handlers
        self.nodes = {node.name: node for node in gm.graph.nodes}
        calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        self.context = Context(gm, calls)
        self.roles: dict[str, Any] = {}
        self.layouts: dict[str, Layout] = {}
        self.zeros: dict[str, tuple[bool, ...]] = {}
        self.owner: dict[int, str] = {}
        self.fixed: set[int] = set()
        self.reads: list[Read] = []
        self.barriers: dict[str, str] = {}
        self.splits: dict[str, tuple[Any, Layout, tuple[bool, ...]]] = {}  # split node -> its source's channels
        # node -> (axis, zeros per index along it): its channels hold parts along another axis, each with its own
        # zeros (attention's query, key and value parts of one head); unbind / select of that axis reads them
        self.parts: dict[str, tuple[int, tuple[tuple[bool, ...], ...]]] = {}
        self.tied = UnionFind()

    def result(self) -> ChannelAnalysis:
        roots = {i: self.tied[i] for i in self.owner}  # ids never tied are their own root
        smallest: dict[int, int] = {}
        for i, root in roots.items():
            smallest[root] = min(smallest.get(root, i), i)
        return ChannelAnalysis(
            order=tuple(self.nodes),
            nodes=self.nodes,
            roles=self.roles,
            layouts=self.layouts,
            zeros=self.zeros,
            owner=self.owner,
            fixed=frozenset(self.fixed),
            class_of={i: smallest[root] for i, root in roots.items()},
            reads=tuple(self.reads),
            barriers=self.barriers,
            handlers=self.handlers,
        )

    # -- dispatch --------------------------------------------------------------------------------------------------

    def visit(self, node: fx.Node) -> None:
        role = self.handlers.classify(node, self.context)
        self.roles[node.name] = role
        handler = self.handlers.handler(role)
        reads_split = any(self.layouts[n.name].split for n in node.all_input_nodes if n.name in self.layouts)
        if reads_split and not handler.reads_split_layouts:
            self.barrier(node, "it reads channels split across two axes (the middle of a channel shuffle)")
            return
        if handler.propagate(self, node, role) is False:
            self.barrier(node, "its channel layout does not match what this op expects")

    # -- what handlers call ----------------------------------------------------------------------------------------

    def tensor(self, qualname: str) -> torch.Tensor:
        """The parameter or buffer ``qualname`` of the graph module (detached)."""
        module_name, _, leaf = qualname.rpartition(".")
        return getattr(self.gm.get_submodule(module_name), leaf).detach()

    def fresh(self, node: str, count: int, fixed: bool) -> tuple[int, ...]:
        """``count`` new channel ids created by ``node``; ``fixed`` ones are never removed or reordered."""
        start = len(self.owner)
        ids = tuple(range(start, start + count))
        self.owner.update(dict.fromkeys(ids, node))
        if fixed:
            self.fixed.update(ids)
        return ids

    def layout_on(self, name: str, axis: int, fixed: bool = True) -> Layout | None:
        """``name``'s layout with its channel axis at ``axis``; untracked tensors get fresh ids on demand."""
        node = self.nodes[name]
        ndim = len(shape(node))
        if ndim == 0:
            return None
        axis %= ndim
        known = self.layouts.get(name)
        if known is not None:
            return known if known.axis == axis else None
        if not _is_tensor(node) or node.op not in _TENSOR_OPS:
            return None
        layout = Layout(axis, self.fresh(name, shape(node)[axis], fixed))
        self.layouts[name] = layout
        self.zeros[name] = self._attribute_zeros(node, axis) if node.op == "get_attr" else (False,) * len(layout.ids)
        return layout

    def _attribute_zeros(self, node: fx.Node, axis: int) -> tuple[bool, ...]:
        """Which channels of a tensor attribute are zero: every entry of their slice along ``axis``."""
        value = self.tensor(str(node.target))
        return tuple(value.movedim(axis, 0).reshape(value.shape[axis], -1).eq(0).all(dim=1).tolist())

    def add_read(
        self, reader: str, source: str, needed: tuple[bool, ...], groups: int = 1, macs_per_channel: int = 0
    ) -> None:
        """A consumer ``reader`` reads ``source``, needing the positions flagged in ``needed``; with
        ``macs_per_channel``, it may also read unneeded channels through zero weight columns at that cost each."""
        read = Read(
            reader=reader, source=source, needed=needed, consumer=True, groups=groups,
            elements_per_channel=_elements_per_channel(self.nodes[source], self.layouts[source]),
            element_size=_element_size(self.nodes[source]),
            macs_per_channel=macs_per_channel,
        )  # fmt: skip
        self.reads.append(read)

    def read_all(self, reader: str, source: str) -> None:
        """A barrier ``reader`` reads every channel of ``source`` (if it carries any), in order."""
        layout = self.layouts.get(source)
        if layout is not None:
            read = Read(
                reader=reader, source=source, needed=(True,) * len(layout.ids), consumer=False,
                elements_per_channel=_elements_per_channel(self.nodes[source], layout),
                element_size=_element_size(self.nodes[source]),
            )  # fmt: skip
            self.reads.append(read)

    def set_output(self, node: fx.Node, layout: Layout, zeros: tuple[bool, ...]) -> None:
        self.layouts[node.name] = layout
        self.zeros[node.name] = zeros

    def tie(self, node: fx.Node, layouts: list[Layout], axis: int, zeros: tuple[bool, ...]) -> None:
        """Merge channel ``i`` of every layout into one class; ``node``'s output carries the first's ids."""
        first = layouts[0]
        for layout in layouts[1:]:
            for a, b in zip(first.ids, layout.ids):
                self.tied.union(a, b)
        self.set_output(node, Layout(axis, first.ids, first.repeat), zeros)

    def reassign(self, node: fx.Node, role: Any) -> bool | None:
        """Give ``node`` another role and propagate that: for a handler that finds, from the layouts, that its node
        does something else here (a linear layer over a non-channel axis mixes tokens)."""
        self.roles[node.name] = role
        return self.handlers.handler(role).propagate(self, node, role)

    def barrier(self, node: fx.Node, reason: str) -> None:
        """Treat ``node`` as an op no handler maps: it reads all its inputs; its output is untracked."""
        self.roles[node.name] = Unknown(reason)
        self.layouts.pop(node.name, None)
        self.zeros.pop(node.name, None)
        sources = [n.name for n in node.all_input_nodes if n.name in self.layouts]
        for source in sources:
            self.read_all(node.name, source)
        if sources:
            self.barriers[node.name] = reason


def _elements_per_channel(node: fx.Node, layout: Layout) -> int:
    return math.prod(shape(node)) // max(1, len(layout.ids))


def _element_size(node: fx.Node) -> int:
    return node.meta["tensor_meta"].dtype.itemsize


_TENSOR_OPS = ("placeholder", "get_attr", "call_module", "call_function", "call_method")
