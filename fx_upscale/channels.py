"""Channel analysis: which channel of which tensor is which, which are zero, and who needs them.

Every tensor node that carries channels gets a :class:`Layout`: its channel axis and one *channel id* per channel
along it. Producers (conv, linear) and graph inputs create fresh ids; pass-through ops reuse their input's ids;
``cat`` concatenates them; elementwise ops (``add``, ``mul`` ...) *tie* the ids of their operands, position by
position, with a union-find. The tied ids form a *channel class*: one channel of a shared channel space, kept or
removed as a whole.

In the same forward walk, :func:`analyse_channels` computes which channels are exactly zero in the masked model
(a pruned filter, a masked BatchNorm channel ...) and records every :class:`Read`: a consumer (conv/linear input)
needs a position unless its weight column is zero or the input channel is zero; a barrier (the graph output, an
op the registry cannot map) needs every position, in its original order.

Start reading at :func:`analyse_channels`; the per-role rules are the ``_visit_*`` methods of ``_Walk``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.fx as fx
from networkx.utils import UnionFind

from . import registry as r


@dataclass(frozen=True)
class Layout:
    """Channel ids along ``axis`` of a node's output; each channel spans ``repeat`` consecutive entries.

    ``split > 0``: the channels lie across two axes, ``axis`` (``split`` long) and ``axis + 1``, in row-major
    order: the middle of a channel shuffle (``view`` to groups, ``transpose``, ``view`` back). Only reshapes,
    permutes and pointwise ops read such a layout; any other reader is a barrier.
    """

    axis: int
    ids: tuple[int, ...]
    repeat: int = 1
    split: int = 0


@dataclass(frozen=True)
class Read:
    """``reader`` reads the channels of ``source``; ``needed[i]`` says whether position ``i`` matters to it."""

    reader: str
    source: str
    needed: tuple[bool, ...]
    consumer: bool  # a conv/linear input (may read a narrow or a gather); False: a barrier reading all, in order
    elements_per_channel: int  # elements one channel of ``source`` holds at the example inputs
    element_size: int = 4  # bytes per element of ``source``
    groups: int = 1  # a grouped convolution reads ``groups`` equal blocks, in order, one per group


@dataclass(frozen=True)
class ChannelAnalysis:
    """The result of :func:`analyse_channels`: frozen values the planner works from."""

    order: tuple[str, ...]  # node names in graph order
    nodes: Mapping[str, fx.Node]  # for error messages
    roles: Mapping[str, r.Role]
    layouts: Mapping[str, Layout]
    zeros: Mapping[str, tuple[bool, ...]]
    owner: Mapping[int, str]  # channel id -> the node that created it
    frozen: frozenset[int]  # ids that are never removed or reordered (graph inputs, outputs of unknown ops)
    class_of: Mapping[int, int]  # channel id -> its class (the smallest id tied to it)
    reads: tuple[Read, ...]
    barriers: Mapping[str, str]  # unknown-op node -> why it is a barrier

    def classes(self, node: str) -> tuple[int, ...]:
        return tuple(self.class_of[i] for i in self.layouts[node].ids)


def analyse_channels(gm: fx.GraphModule) -> ChannelAnalysis:
    """Walk ``gm`` (shape-annotated, masked weights) once and return its :class:`ChannelAnalysis`."""
    walk = _Walk(gm)
    for node in gm.graph.nodes:
        walk.visit(node)
    return walk.result()


_READS_SPLIT_CHANNELS = (r.Reshape, r.Permute, r.Pointwise, r.Output, r.Unknown, r.Metadata)


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _is_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


class _Walk:
    """Mutable state of one forward walk; :meth:`result` freezes it."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.nodes = {node.name: node for node in gm.graph.nodes}
        calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        self.module_calls = calls
        self.roles: dict[str, r.Role] = {}
        self.layouts: dict[str, Layout] = {}
        self.zeros: dict[str, tuple[bool, ...]] = {}
        self.owner: dict[int, str] = {}
        self.frozen: set[int] = set()
        self.reads: list[Read] = []
        self.barriers: dict[str, str] = {}
        self.splits: dict[str, tuple[r.Split, Layout, tuple[bool, ...]]] = {}  # split node -> its source's channels
        self.tied = UnionFind()

    def result(self) -> ChannelAnalysis:
        roots = {i: self.tied[i] for i in self.owner}  # ids never tied are their own root
        smallest: dict[int, int] = {}
        for i, root in roots.items():
            smallest[root] = min(smallest.get(root, i), i)
        class_of = {i: smallest[root] for i, root in roots.items()}
        return ChannelAnalysis(
            order=tuple(self.nodes),
            nodes=self.nodes,
            roles=self.roles,
            layouts=self.layouts,
            zeros=self.zeros,
            owner=self.owner,
            frozen=frozenset(self.frozen),
            class_of=class_of,
            reads=tuple(self.reads),
            barriers=self.barriers,
        )

    # -- helpers -------------------------------------------------------------------------------------------------

    def tensor(self, qualname: str) -> torch.Tensor:
        module_name, _, leaf = qualname.rpartition(".")
        return getattr(self.gm.get_submodule(module_name), leaf).detach()

    def fresh(self, node: str, count: int, frozen: bool) -> tuple[int, ...]:
        start = len(self.owner)
        ids = tuple(range(start, start + count))
        self.owner.update(dict.fromkeys(ids, node))
        if frozen:
            self.frozen.update(ids)
        return ids

    def layout_on(self, name: str, axis: int, frozen: bool = True) -> Layout | None:
        """``name``'s layout with its channel axis at ``axis``; untracked tensors get fresh ids on demand."""
        node = self.nodes[name]
        ndim = len(_shape(node))
        if ndim == 0:
            return None
        axis %= ndim
        known = self.layouts.get(name)
        if known is not None:
            return known if known.axis == axis else None
        if not _is_tensor(node) or node.op not in (
            "placeholder",
            "get_attr",
            "call_module",
            "call_function",
            "call_method",
        ):
            return None
        layout = Layout(axis, self.fresh(name, _shape(node)[axis], frozen))
        self.layouts[name] = layout
        self.zeros[name] = (False,) * len(layout.ids)
        return layout

    def read_all(self, reader: str, source: str) -> None:
        layout = self.layouts.get(source)
        if layout is not None:
            needed = (True,) * len(layout.ids)
            self.reads.append(
                Read(reader, source, needed, False, self.elements_per_channel(source), self.element_size(source))
            )

    def elements_per_channel(self, name: str) -> int:
        return math.prod(_shape(self.nodes[name])) // max(1, len(self.layouts[name].ids))

    def element_size(self, name: str) -> int:
        return self.nodes[name].meta["tensor_meta"].dtype.itemsize

    def set_output(self, node: fx.Node, layout: Layout, zeros: tuple[bool, ...]) -> None:
        self.layouts[node.name] = layout
        self.zeros[node.name] = zeros

    # -- dispatch --------------------------------------------------------------------------------------------------

    def visit(self, node: fx.Node) -> None:
        role = r.classify(node, self.gm, self.module_calls)
        self.roles[node.name] = role
        if not isinstance(role, _READS_SPLIT_CHANNELS) and any(
            self.layouts[n.name].split for n in node.all_input_nodes if n.name in self.layouts
        ):
            self.barrier(node, "it reads channels split across two axes (the middle of a channel shuffle)")
            return
        handler = getattr(self, f"_visit_{type(role).__name__.lower()}")
        if handler(node, role) is False:
            self.barrier(node, "its channel layout does not match what this op expects")

    def barrier(self, node: fx.Node, reason: str) -> None:
        """Treat ``node`` as an op the registry cannot map: it reads all its inputs; its output is untracked."""
        self.roles[node.name] = r.Unknown(reason)
        self.layouts.pop(node.name, None)
        self.zeros.pop(node.name, None)
        sources = [n.name for n in node.all_input_nodes if n.name in self.layouts]
        for source in sources:
            self.read_all(node.name, source)
        if sources:
            self.barriers[node.name] = reason

    def _visit_source(self, node: fx.Node, role: r.Source) -> None:
        """Graph inputs get frozen ids when something reads them (on the axis the reader needs)."""

    def _visit_getattr(self, node: fx.Node, role: r.GetAttr) -> None:
        """Attributes get ids when an elementwise op ties them to a channel space (or frozen ids otherwise)."""

    def _visit_metadata(self, node: fx.Node, role: r.Metadata) -> None:
        """Shape queries read no channel values."""

    def _visit_output(self, node: fx.Node, role: r.Output) -> None:
        for source in node.all_input_nodes:
            self.read_all(node.name, source.name)

    def _visit_unknown(self, node: fx.Node, role: r.Unknown) -> None:
        self.barrier(node, role.reason)

    def _visit_weighted(self, node: fx.Node, role: r.Weighted) -> bool:
        source = self.layout_on(role.data, role.data_axis)
        weight = self.tensor(role.weight)
        if source is None or weight.shape[role.weight_in_axis] != len(source.ids) * source.repeat:
            return False
        columns = weight.transpose(0, role.weight_in_axis).reshape(weight.shape[role.weight_in_axis], -1)
        used = columns.ne(0).any(dim=1).reshape(len(source.ids), source.repeat).any(dim=1).tolist()
        needed = tuple(u and not z for u, z in zip(used, self.zeros[role.data]))
        self.reads.append(
            Read(node.name, role.data, needed, True, self.elements_per_channel(role.data), self.element_size(role.data))
        )
        rows = weight.transpose(0, role.weight_out_axis).reshape(weight.shape[role.weight_out_axis], -1)
        zero = rows.eq(0).all(dim=1)
        if role.bias is not None:
            zero &= self.tensor(role.bias).eq(0)
        axis = role.data_axis % len(_shape(node))
        self.set_output(node, Layout(axis, self.fresh(node.name, len(zero), frozen=False)), tuple(zero.tolist()))
        return True

    def _visit_grouped(self, node: fx.Node, role: r.Grouped) -> bool:
        """Input channel ``c`` is needed if a row of its group uses its column; rows are produced channels."""
        conv, groups = role.conv, role.groups
        source = self.layout_on(conv.data, 1)
        weight = self.tensor(conv.weight)
        if source is None or source.repeat != 1 or weight.shape[1] * groups != len(source.ids):
            return False
        rows_per_group = weight.shape[0] // groups
        per_group = weight.reshape(groups, rows_per_group, weight.shape[1], -1)
        used = per_group.ne(0).any(dim=3).any(dim=1).reshape(-1).tolist()  # group-major: input channel order
        needed = tuple(u and not z for u, z in zip(used, self.zeros[conv.data]))
        elements, size = self.elements_per_channel(conv.data), self.element_size(conv.data)
        self.reads.append(Read(node.name, conv.data, needed, True, elements, size, groups))
        zero = weight.reshape(weight.shape[0], -1).eq(0).all(dim=1)
        if conv.bias is not None:
            zero &= self.tensor(conv.bias).eq(0)
        self.set_output(node, Layout(1, self.fresh(node.name, len(zero), frozen=False)), tuple(zero.tolist()))
        return True

    def _visit_perchannel(self, node: fx.Node, role: r.PerChannel) -> bool:
        source = self.layout_on(role.data, 1)
        if source is None or source.repeat != 1:
            return False
        if any(self.tensor(name).shape[0] != len(source.ids) for name in role.params):
            return False
        weight = self.tensor(role.weight) if role.weight else None
        bias = self.tensor(role.bias) if role.bias else None
        no_bias = torch.ones(len(source.ids), dtype=torch.bool) if bias is None else bias.eq(0)
        zero_weight = weight.reshape(len(source.ids), -1).eq(0).all(dim=1) if weight is not None else False
        if role.kind == "batchnorm":  # (x - mean) / sqrt(var + eps) * weight + bias
            masked = no_bias & zero_weight
            keeps_zero = no_bias & (self.tensor(role.running_mean).eq(0) | zero_weight)
        else:  # depthwise convolution: a zero filter with no bias outputs zero whatever its input
            masked = no_bias & zero_weight
            keeps_zero = no_bias
        zeros_in = torch.tensor(self.zeros[role.data], dtype=torch.bool)
        self.set_output(node, source, tuple((masked | (zeros_in & keeps_zero)).tolist()))
        return True

    def _visit_layernorm(self, node: fx.Node, role: r.LayerNorm) -> bool:
        """Its statistics read every channel, whatever its value; its output channel ``c`` is zero only when its
        weight and bias at ``c`` are."""
        source = self.layout_on(role.data, -1)
        if source is None or source.repeat != 1 or source.axis != len(_shape(node)) - 1:
            return False
        count = len(source.ids)
        needed = (True,) * count
        elements, size = self.elements_per_channel(role.data), self.element_size(role.data)
        self.reads.append(Read(node.name, role.data, needed, True, elements, size))
        weight_zero = self.tensor(role.weight).eq(0) if role.weight else torch.zeros(count, dtype=torch.bool)
        bias_zero = self.tensor(role.bias).eq(0) if role.bias else torch.ones(count, dtype=torch.bool)
        self.set_output(node, source, tuple((weight_zero & bias_zero).tolist()))
        return True

    def _visit_permute(self, node: fx.Node, role: r.Permute) -> bool | None:
        source = self.layouts.get(role.data)
        if source is None:
            return None
        if source.repeat != 1:
            return False
        if not source.split:
            self.set_output(node, Layout(role.dims.index(source.axis), source.ids), self.zeros[role.data])
            return None
        swap = list(range(len(role.dims)))
        swap[source.axis], swap[source.axis + 1] = source.axis + 1, source.axis
        if list(role.dims) != swap:
            return False  # only the shuffle's transpose of the two channel axes is mapped
        per_group = len(source.ids) // source.split
        order = [g * per_group + k for k in range(per_group) for g in range(source.split)]
        zeros = self.zeros[role.data]
        layout = Layout(source.axis, tuple(source.ids[i] for i in order), split=per_group)
        self.set_output(node, layout, tuple(zeros[i] for i in order))
        return None

    def _visit_split(self, node: fx.Node, role: r.Split) -> bool | None:
        source = self.layouts.get(role.data)
        if source is None:
            return None
        if role.dim == source.axis and source.repeat != 1:
            return False
        self.splits[node.name] = (role, source, self.zeros[role.data])
        return None

    def _visit_piece(self, node: fx.Node, role: r.Piece) -> None:
        """A piece of a split along the channel axis holds that range of channels; along another axis, all."""
        if role.split not in self.splits:
            return  # a piece of an untracked tensor
        split, source, zeros = self.splits[role.split]
        if split.dim != source.axis:
            self.set_output(node, source, zeros)
            return
        index = role.index % len(split.sections)
        start, length = sum(split.sections[:index]), split.sections[index]
        self.set_output(node, Layout(source.axis, source.ids[start : start + length]), zeros[start : start + length])

    def _visit_slice(self, node: fx.Node, role: r.Slice) -> bool | None:
        source = self.layouts.get(role.data)
        if source is None:
            return None
        if role.dim != source.axis:
            self.set_output(node, source, self.zeros[role.data])
            return None
        if source.repeat != 1:
            return False
        kept = slice(role.start, role.start + role.length)
        self.set_output(node, Layout(source.axis, source.ids[kept]), self.zeros[role.data][kept])
        return None

    def _visit_pointwise(self, node: fx.Node, role: r.Pointwise) -> None:
        source = self.layouts.get(role.data)
        if source is not None:
            zeros = self.zeros[role.data] if role.keeps_zero else (False,) * len(source.ids)
            self.set_output(node, source, zeros)

    def _visit_flatten(self, node: fx.Node, role: r.Flatten) -> bool | None:
        source = self.layouts.get(role.data)
        if source is None:
            return None
        if role.start_dim < source.axis:
            return False
        if role.constant and role.start_dim <= source.axis:  # only a computed size (-1, x.size(...)) follows
            self.barrier(node, "a view/reshape to a constant size merges the channel axis")
            return None
        repeat = source.repeat
        if role.start_dim == source.axis:
            repeat *= math.prod(_shape(self.nodes[role.data])[source.axis + 1 :])
        self.set_output(node, Layout(source.axis, source.ids, repeat), self.zeros[role.data])
        return None

    def _visit_reshape(self, node: fx.Node, role: r.Reshape) -> bool | None:
        """Channels pass through a reshape that keeps the channel axis whole, that splits it into (groups,
        channels per group) or that merges such a split back: the three steps of a channel shuffle."""
        source = self.layouts.get(role.data)
        if source is None:
            return None
        zeros = self.zeros[role.data]
        if source.repeat == 1 and not source.split and (axis := role.channel_axis_after(source.axis)) is not None:
            self.set_output(node, Layout(axis, source.ids), zeros)
        elif source.repeat == 1 and not source.split and (axis := role.split_axis(source.axis)) is not None:
            self._tie_ranks(source.ids, role.after[axis])
            self.set_output(node, Layout(axis, source.ids, split=role.after[axis]), zeros)
        elif source.split and (axis := role.merged_axis(source.axis)) is not None:
            self.set_output(node, Layout(axis, source.ids), zeros)
        else:
            self.barrier(node, f"reshape from {role.before} to {role.after} splits or merges the channel axis")
        return None

    def _tie_ranks(self, ids: tuple[int, ...], groups: int) -> None:
        """Channel ``k`` of every group is kept or removed together, so that each group keeps the same channels
        and the shuffle interleaves them exactly as before pruning."""
        per_group = len(ids) // groups
        for g in range(1, groups):
            for k in range(per_group):
                self.tied.union(ids[k], ids[g * per_group + k])

    def _visit_reduce(self, node: fx.Node, role: r.Reduce) -> bool | None:
        source = self.layouts.get(role.data)
        if source is None:
            return None
        if source.axis in role.dims or source.repeat != 1:
            return False
        axis = source.axis if role.keepdim else source.axis - sum(d < source.axis for d in role.dims)
        self.set_output(node, Layout(axis, source.ids), self.zeros[role.data])
        return None

    def _visit_concat(self, node: fx.Node, role: r.Concat) -> bool | None:
        known = [self.layouts[name] for name in role.inputs if name in self.layouts]
        if not known:
            return None
        layouts = [self.layout_on(name, known[0].axis) for name in role.inputs]
        if any(layout is None or layout.repeat != 1 for layout in layouts):
            return False
        if role.dim == known[0].axis:
            ids = tuple(i for layout in layouts for i in layout.ids)
            zeros = tuple(z for name in role.inputs for z in self.zeros[name])
            self.set_output(node, Layout(role.dim, ids), zeros)
            return None
        return self.tie(node, list(role.inputs), layouts, known[0].axis, "cat")

    def _visit_elementwise(self, node: fx.Node, role: r.Elementwise) -> bool | None:
        out_shape = _shape(node)
        operands = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
        reference = next((a for a in operands if a.name in self.layouts and self._full(a, node)), None)
        if reference is None:
            return False if any(a.name in self.layouts for a in operands) else None
        ref = self.layouts[reference.name]
        out_axis = ref.axis + len(out_shape) - len(_shape(reference))
        tied_names, tied_layouts = [], []
        for operand in operands:
            axis = out_axis - (len(out_shape) - len(_shape(operand)))
            if axis < 0 or _shape(operand)[axis] != out_shape[out_axis]:
                self.read_all(node.name, operand.name)  # broadcast along channels: reads all of its own
                continue
            layout = self.layout_on(operand.name, axis, frozen=operand.op != "get_attr")
            if layout is None or layout.repeat != ref.repeat:
                return False
            tied_names.append(operand.name)
            tied_layouts.append(layout)
        return self.tie(node, tied_names, tied_layouts, out_axis, role.operation)

    def _full(self, operand: fx.Node, node: fx.Node) -> bool:
        layout, out_shape = self.layouts[operand.name], _shape(node)
        out_axis = layout.axis + len(out_shape) - len(_shape(operand))
        return 0 <= out_axis < len(out_shape) and _shape(operand)[layout.axis] == out_shape[out_axis]

    def tie(self, node: fx.Node, names: list[str], layouts: list[Layout], axis: int, operation: str) -> None:
        first = layouts[0]
        for layout in layouts[1:]:
            for a, b in zip(first.ids, layout.ids):
                self.tied.union(a, b)
        self.set_output(node, Layout(axis, first.ids, first.repeat), self._tie_zeros(node, names, operation))

    def _tie_zeros(self, node: fx.Node, names: list[str], operation: str) -> tuple[bool, ...]:
        """Which channels of an elementwise result are exactly zero."""
        count = len(self.zeros[names[0]])
        columns = list(zip(*(self.zeros[name] for name in names)))
        scalars = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, numbers.Number)]
        broadcasts = [n for n in node.all_input_nodes if n.name not in names and _is_tensor(n)]
        if operation == "mul":
            if any(s == 0 for s in scalars):
                return (True,) * count
            return tuple(any(column) for column in columns)
        if operation == "cat":
            return tuple(all(column) for column in columns)
        if operation == "div":
            numerator = node.args[0]
            if isinstance(numerator, fx.Node) and numerator.name in names:
                return self.zeros[numerator.name]
            return (False,) * count
        if broadcasts or any(s != 0 for s in scalars):
            return (False,) * count
        return tuple(all(column) for column in columns)
