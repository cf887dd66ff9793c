"""Nodes that are not ops on channels: graph inputs and output, attributes, shape queries, and barriers.

- :class:`Source` a graph input: its channels are fixed (never pruned, never reordered).
- :class:`GetAttr` a tensor attribute: it gets channels when an elementwise op ties it to a channel space.
- :class:`Metadata` ``size`` / ``dim`` / ``shape``: reads no channel values.
- :class:`Output` the graph output: reads every channel, in order.
- :class:`Unknown` anything no handler maps: a barrier that reads every channel of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.fx as fx

from .base import Context, Masking, OpHandler, RewriteContext, Updates

if TYPE_CHECKING:
    from ..channels import ChannelWalk


@dataclass(frozen=True)
class Source:
    pass


@dataclass(frozen=True)
class GetAttr:
    pass


@dataclass(frozen=True)
class Metadata:
    pass


@dataclass(frozen=True)
class Output:
    pass


@dataclass(frozen=True)
class Unknown:
    reason: str


class SourceHandler(OpHandler[Source]):
    """Graph inputs get frozen ids when something reads them (on the axis the reader needs)."""

    role = Source

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Source:
        return Source()

    def masking(self, role: Source) -> Masking:
        return Masking(owns_free_channels=True)  # its ids are frozen anyway


class GetAttrHandler(OpHandler[GetAttr]):
    """Attributes get ids when an elementwise op ties them to a channel space (or frozen ids otherwise); a tied
    attribute is resliced with the channels it carries."""

    role = GetAttr

    def recognise(self, node: fx.Node, context: Context, data: Any) -> GetAttr:
        return GetAttr()

    def rewrite(self, name: str, role: GetAttr, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)
        if rows is not None:
            node = context.analysis.nodes[name]
            updates.keep(str(node.target), context.analysis.layouts[name].axis, rows, context.size(name))

    def masking(self, role: GetAttr) -> Masking:
        return Masking(owns_free_channels=True)


_METADATA_ATTRIBUTES = ("shape", "dtype", "device", "ndim")


class MetadataHandler(OpHandler[Metadata]):
    """Shape queries read no channel values."""

    role = Metadata
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Metadata | Unknown:
        if node.target is getattr and not (len(node.args) > 1 and node.args[1] in _METADATA_ATTRIBUTES):
            return Unknown("no handler for this attribute of a tensor")
        return Metadata()


class OutputHandler(OpHandler[Output]):
    role = Output
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Output:
        return Output()

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Output) -> None:
        for source in node.all_input_nodes:
            walk.read_all(node.name, source.name)


class UnknownHandler(OpHandler[Unknown]):
    """A barrier: every channel it reads is kept, in order; its output's channels are frozen."""

    role = Unknown
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Unknown:
        return Unknown(str(data))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Unknown) -> None:
        walk.barrier(node, role.reason)
