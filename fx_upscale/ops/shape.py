"""Ops that move, merge or reduce axes around the channels: flatten, reshape, permute, reductions.

- :class:`Flatten` ``flatten`` / ``view`` / ``reshape`` that expand each channel into consecutive features.
- :class:`Reshape` other ``view`` / ``reshape`` (and ``flatten`` of leading axes, ``reshape_as``): channels pass
  through if the channel axis survives as an axis, or is split into (groups, channels per group) and merged back:
  the steps of a channel shuffle; a split into ``(heads, head_dim)`` or ``(3, heads, head_dim)`` that no transpose
  of those two axes follows is a split into attention heads, kept or removed whole (``ops/attention.py``).
- :class:`Permute` ``permute`` / ``transpose`` / ``swapaxes``: moves the channel axis, channels unchanged.
- :class:`Reduce` ``mean`` / ``sum`` / ``amax`` over axes other than the channel axis (a sum or mean over the
  channel axis is a :class:`~fx_upscale.ops.channel_reduction.ChannelReduction`).

A view / reshape whose size for the channel-carrying axis is a literal (every size is, in ``torch.export``'s graphs:
``aten.view.default(x, [2, 320, 1, 1])``) has that size rewritten for the kept channels; one computed in the graph
(``-1``, ``x.size(1)``) follows the pruned tensor by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from ..layouts import Layout
from .base import Context, OpHandler, RewriteContext, Updates, arg, data_name, is_get_attr, is_tensor, shape, traced_int
from .channel_reduction import VECTOR_NORM, channel_reduction, norm_order
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk

PERMUTE_FUNCTIONS = (torch.permute, torch.transpose, torch.swapaxes, torch.swapdims)
PERMUTE_METHODS = ("permute", "transpose", "swapaxes", "swapdims")
REDUCE_FUNCTIONS = (torch.mean, torch.sum, torch.amax)
REDUCE_METHODS = ("mean", "sum", "amax")
RESHAPES = ("view", "reshape", torch.ops.aten.view.default, torch.ops.aten.reshape.default,
            torch.ops.aten._unsafe_view.default)  # fmt: skip
RESHAPES_AS = ("view_as", "reshape_as", torch.ops.aten.view_as.default, torch.ops.aten.reshape_as.default)


@dataclass(frozen=True, kw_only=True)
class Flatten:
    data: str
    start_dim: int
    constant: bool = False  # a view/reshape whose sizes are keywords: they cannot be rewritten for the kept channels


@dataclass(frozen=True, kw_only=True)
class Reshape:
    data: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    constant_axes: frozenset[int] = frozenset()  # output axes whose size is a literal in the graph
    like: str | None = None  # ``reshape_as(like)`` / ``view_as(like)``: the tensor whose shape it takes

    def channel_axis_after(self, axis: int) -> int | None:
        """Where input axis ``axis`` is in the output, if the reshape keeps it whole as one axis."""
        leading = math.prod(self.before[:axis])
        for k, size in enumerate(self.after):
            if math.prod(self.after[:k]) == leading and size == self.before[axis]:
                return None if k in self.constant_axes else k
        return None

    def split_axis(self, axis: int) -> int | None:
        """``k`` if input axis ``axis`` becomes output axes ``k`` (groups, a literal) and ``k + 1`` (computed)."""
        leading = math.prod(self.before[:axis])
        for k in range(len(self.after) - 1):
            if math.prod(self.after[:k]) == leading and self.after[k] * self.after[k + 1] == self.before[axis]:
                if self.after[k] > 1 and k + 1 not in self.constant_axes:
                    return k
        return None

    def heads_axis(self, axis: int) -> int | None:
        """The heads axis where input axis ``axis`` is split into two or three output axes, ``(heads, head_dim)``
        or ``(3, heads, head_dim)``, the axes after it unchanged: the second-last of those axes."""
        leading, trailing = math.prod(self.before[:axis]), self.before[axis + 1 :]
        for k in range(len(self.after)):
            if math.prod(self.after[:k]) != leading:
                continue
            for count in (2, 3):
                parts = self.after[k : k + count]
                whole = len(parts) == count and math.prod(parts) == self.before[axis]
                if whole and self.after[k + count :] == trailing:
                    return k + count - 2 if parts[-2] > 1 and parts[-1] > 1 else None
        return None

    def merged_axis(self, axis: int) -> int | None:
        """``k`` if input axes ``axis`` and ``axis + 1`` become output axis ``k`` (of a computed size)."""
        leading, merged = math.prod(self.before[:axis]), self.before[axis] * self.before[axis + 1]
        for k, size in enumerate(self.after):
            if math.prod(self.after[:k]) == leading and size == merged and k not in self.constant_axes:
                return k
        return None


@dataclass(frozen=True, kw_only=True)
class Permute:
    data: str
    dims: tuple[int, ...]  # output axis ``i`` is input axis ``dims[i]`` (non-negative)


@dataclass(frozen=True, kw_only=True)
class Reduce:
    data: str
    dims: tuple[int, ...]
    keepdim: bool
    order: float | None = None  # a vector norm's order (``None``: a sum, mean or maximum)


class FlattenHandler(OpHandler[Flatten]):
    """A channel flattened with the axes after it becomes ``repeat`` consecutive features (axes of size 1 before it
    change nothing: ``(N, 1, 1, C)`` viewed as ``(N, C)``)."""

    role = Flatten

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Any:
        if node.op == "call_module":
            module = context.graph_module.get_submodule(str(node.target))
            assert isinstance(module, nn.Flatten)  # the table routes only nn.Flatten modules here
            if module.end_dim != -1:
                return Unknown("Flatten with end_dim != -1")
            return Flatten(data=str(data_name(node)), start_dim=module.start_dim)
        if node.target in RESHAPES:
            return _recognise_reshape(node)
        if node.target in RESHAPES_AS:
            like = arg(node, 1, "other")
            if data_name(node) is None or not isinstance(like, fx.Node):
                return Unknown("reshape_as of a non-tensor")
            return Reshape(data=str(data_name(node)), before=tuple(shape(node.args[0])), after=tuple(shape(node)),
                           like=like.name)  # fmt: skip
        start_dim, end_dim = arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1)
        source, ndim = data_name(node), len(shape(node.args[0]))
        if source is None or ndim == 0:
            return Unknown("flatten of a non-tensor")
        if end_dim % ndim != ndim - 1:  # merges leading axes (batch and tokens): the channel axis may survive it
            return Reshape(data=source, before=tuple(shape(node.args[0])), after=tuple(shape(node)))
        return Flatten(data=source, start_dim=start_dim % ndim)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Flatten) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        before = shape(walk.nodes[role.data])
        if any(size != 1 for size in before[role.start_dim : source.axis]):
            return False  # axes of more than one entry before the channel axis: each channel scattered
        if role.constant and role.start_dim <= source.axis:  # its sizes cannot be rewritten for the kept channels
            walk.barrier(node, "a view/reshape with keyword sizes merges the channel axis")
            return None
        axis, repeat = source.axis, source.repeat
        if role.start_dim <= source.axis:  # (1, 1, C, ...) flattened: each channel still one run of entries
            axis, repeat = role.start_dim, repeat * math.prod(before[source.axis + 1 :])
        walk.set_output(node, Layout(axis, source.ids, repeat), walk.zeros[role.data])
        return None

    def rewrite(self, name: str, role: Flatten, context: RewriteContext, updates: Updates) -> None:
        _rewrite_literal_size(name, role.data, context, updates)


def _recognise_reshape(node: fx.Node) -> Flatten | Reshape | Unknown:
    """``view``/``reshape`` that equals ``flatten(start_dim)`` for some start_dim is a flatten.

    Where some sizes are computed in the graph (``x.size(0)``, ``c // groups``), the literal ones of a reshape are
    structure, never a channel width (``view(b, groups, c // groups, h, w)``): constants (but a head count, rewritten
    for the kept heads). Where every size is a literal or ``-1`` (``torch.export``'s graphs, ``x.view(2, 16)``,
    ``reshape(2, -1, 128)``), and in a flatten, the one that carries the channels is rewritten for the kept ones."""
    data = node.args[0]
    if not isinstance(data, fx.Node):
        return Unknown("reshape of a non-tensor")
    before, after = shape(data), shape(node)
    sizes = _sizes(node)
    literal = frozenset(k for k, size in enumerate(sizes or ()) if isinstance(size, int) and size != -1)
    if sizes is None or len(sizes) != len(after):
        constant = frozenset(range(len(after)))
    else:
        constant = literal if any(isinstance(size, fx.Node) for size in sizes) else frozenset()
    start = len(after) - 1
    if before[:start] == after[:start] and math.prod(before[start:]) == after[-1]:
        return Flatten(data=data.name, start_dim=start, constant=sizes is None or len(sizes) != len(after))
    return Reshape(data=data.name, before=tuple(before), after=tuple(after), constant_axes=constant)


def _sizes(node: fx.Node) -> list[Any] | None:
    """The sizes a view/reshape asks for, positionally (``view(2, 3)`` or ``view([2, 3])``); ``None`` if passed by
    keyword."""
    if len(node.args) < 2:
        return None
    packed = _packed_sizes(node)
    return list(packed) if packed is not None else list(node.args[1:])


def _packed_sizes(node: fx.Node) -> list[Any] | tuple[Any, ...] | None:
    """A view/reshape's sizes where they are one list argument (``view([2, 3])``, every aten view); ``None`` where
    they are spread over the arguments."""
    packed = node.args[1] if len(node.args) == 2 else None
    return packed if isinstance(packed, (list, tuple)) else None


def _rewrite_literal_size(name: str, data: str, context: RewriteContext, updates: Updates) -> None:
    """Set the size of the axis carrying the channels of ``name``'s output to what the kept channels need: the
    axis's share of each channel times the kept channels (for channels split into (groups, per group): the
    per-group axis, a ``groups``-th of them). A literal is rewritten; so is a size computed from another tensor's
    shape (attention's ``reshape(B, N, C)`` with ``C`` the block input's width), as a constant; one computed from
    the reshaped tensor itself (``-1``, ``x.size(1) // 2``) follows it by itself."""
    kept = context.physical.get(name, context.physical.get(data))
    layout, node = context.analysis.layouts.get(name), context.analysis.nodes[name]
    sizes = _sizes(node) if node.target in RESHAPES else None  # flatten's and reshape_as's arguments are no sizes
    if kept is None or layout is None or sizes is None:
        return
    axis = layout.axis + 1 if layout.split else layout.axis
    size = traced_int(sizes[axis]) if axis < len(sizes) else None
    if size is None or size == -1 or _follows(sizes[axis], node.args[0]):
        return
    per_channel, computed = size * (layout.split or 1) // len(layout.ids), sizes[axis]
    sizes[axis] = per_channel * len(kept) // (layout.split or 1)
    if isinstance(computed, fx.Node) and sizes[axis] == size:
        return  # a computed size that needs no change
    packed = _packed_sizes(node)
    if packed is not None:
        updates.arg(name, 1, "size", type(packed)(sizes))
    else:
        updates.arg(name, 1 + axis, "", sizes[axis])


def _follows(size: Any, data: Any) -> bool:
    """Whether ``size`` is computed from ``data``'s shape (so it follows ``data`` when ``data`` is pruned): the shape
    arithmetic behind it, up to the tensors whose shapes it reads, reaches ``data``."""
    pending, seen = [size], set()
    while pending:
        value = pending.pop()
        if value is data:
            return True
        if not isinstance(value, fx.Node) or value in seen or is_tensor(value):
            continue
        seen.add(value)
        pending.extend(value.all_input_nodes)
    return False


class ReshapeHandler(OpHandler[Reshape]):
    """Channels pass through a reshape that keeps the channel axis whole, that splits it into (groups, channels
    per group) or that merges such a split back (the three steps of a channel shuffle), or that splits it into
    attention heads (one class per head, :func:`_split_heads`)."""

    role = Reshape
    reads_split_layouts = True

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Reshape) -> None:
        source = walk.layouts.get(role.data) or _parameter_channels(walk, role)
        if source is None:
            return
        zeros = walk.zeros[role.data]
        whole = source.repeat == 1 and not source.split
        if role.like is not None:
            _reshape_as(walk, node, role, source)
        elif whole and (axis := role.channel_axis_after(source.axis)) is not None:
            walk.set_output(node, Layout(axis, source.ids), zeros)
        elif whole and (axis := role.split_axis(source.axis)) is not None and _shuffled(walk, node, axis):
            _tie_ranks(walk, source.ids, role.after[axis])
            walk.set_output(node, Layout(axis, source.ids, split=role.after[axis]), zeros)
        elif whole and _sizes(node) is not None and (axis := role.heads_axis(source.axis)) is not None:
            _split_heads(walk, node, source, zeros, axis)
        elif source.split and (axis := role.merged_axis(source.axis)) is not None:
            walk.set_output(node, Layout(axis, source.ids), zeros)
        else:
            walk.barrier(node, f"reshape from {role.before} to {role.after} splits or merges the channel axis")

    def rewrite(self, name: str, role: Reshape, context: RewriteContext, updates: Updates) -> None:
        _rewrite_literal_size(name, role.data, context, updates)


def _parameter_channels(walk: ChannelWalk, role: Reshape) -> Layout | None:
    """A parameter viewed to broadcast along one axis (``gamma.view(C, 1, 1)``, RmsNorm2d's
    ``weight.reshape(1, -1, 1, 1)``) gets channel ids on its one axis longer than 1, free ones: the elementwise op
    it meets ties them to the channels it scales, and the parameter is resliced with them (``GetAttrHandler``)."""
    longer = [axis for axis, size in enumerate(role.before) if size > 1]
    if role.like is not None or len(longer) != 1 or not is_get_attr(walk.nodes[role.data]):
        return None
    return walk.layout_on(role.data, longer[0], fixed=False)


def _reshape_as(walk: ChannelWalk, node: fx.Node, role: Reshape, source: Layout) -> None:
    """``reshape_as(like)`` keeping the channel axis whole: its output has ``like``'s shape, so ``like`` must carry
    as many channels on that axis after pruning. Their channels are tied (kept or removed together)."""
    axis = role.channel_axis_after(source.axis) if source.repeat == 1 and not source.split else None
    like = walk.layout_on(role.like, axis) if axis is not None and role.like is not None else None
    if axis is None or like is None or len(like.ids) != len(source.ids) or like.repeat != 1:
        walk.barrier(node, "reshape_as a tensor that does not carry the same channels on the same axis")
        return
    walk.tie(node, [Layout(axis, source.ids), like], axis, walk.zeros[role.data])


def _shuffled(walk: ChannelWalk, node: fx.Node, axis: int) -> bool:
    """Whether a reshape splitting the channels into axes ``axis`` (groups) and ``axis + 1`` is the first step of a
    channel shuffle: a user transposes those two axes. Otherwise the split is into heads (``_split_heads``)."""
    swap = list(range(len(shape(node))))
    swap[axis], swap[axis + 1] = axis + 1, axis
    for user in node.users:
        role = walk.handlers.classify(user, walk.context)
        if isinstance(role, Permute) and list(role.dims) == swap:
            return True
    return False


def _split_heads(walk: ChannelWalk, node: fx.Node, source: Layout, zeros: tuple[bool, ...], axis: int) -> None:
    """Channels split into ``(heads, head_dim)`` or ``(3, heads, head_dim)`` (attention's query, key and value
    heads): every channel of one head, in every part, is tied into one class, so heads are kept or removed whole.
    The output carries one channel per head on the heads axis."""
    heads, head_dim = shape(node)[axis : axis + 2]
    members: list[list[int]] = [[] for _ in range(heads)]
    for position in range(len(source.ids)):
        members[position // head_dim % heads].append(position)
    for positions in members:
        for p in positions[1:]:
            walk.tied.union(source.ids[positions[0]], source.ids[p])
    ids = tuple(source.ids[positions[0]] for positions in members)
    walk.set_output(node, Layout(axis, ids), tuple(all(zeros[p] for p in positions) for positions in members))
    parts = len(source.ids) // (heads * head_dim)
    if parts > 1:  # (3, heads, head_dim): the zeros of query, key and value heads, for unbind / select to read
        part = heads * head_dim
        walk.parts[node.name] = (axis - 1, tuple(
            tuple(all(zeros[k * part + h * head_dim : k * part + (h + 1) * head_dim]) for h in range(heads))
            for k in range(parts)
        ))  # fmt: skip


def _tie_ranks(walk: ChannelWalk, ids: tuple[int, ...], groups: int) -> None:
    """Channel ``k`` of every group is kept or removed together, so that each group keeps the same channels and
    the shuffle interleaves them exactly as before pruning."""
    per_group = len(ids) // groups
    for g in range(1, groups):
        for k in range(per_group):
            walk.tied.union(ids[k], ids[g * per_group + k])


class PermuteHandler(OpHandler[Permute]):
    role = Permute
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Permute | Unknown:
        name = data if isinstance(data, str) else getattr(node.target, "__name__", node.target)  # aten: the data
        source, ndim = data_name(node), len(shape(node))
        if source is None or ndim == 0:
            return Unknown("permute of a non-tensor")
        arguments: list[Any] = list(node.args[1:]) + list(node.kwargs.values())
        if name == "permute":
            single = len(arguments) == 1 and isinstance(arguments[0], (list, tuple))
            dims: list[Any] = list(arguments[0]) if single else arguments
        elif len(arguments) == 2:
            a, b = (d % ndim for d in arguments)
            dims = list(range(ndim))
            dims[a], dims[b] = b, a
        else:
            return Unknown(f"{name} with arguments {arguments}")
        if not all(isinstance(d, int) for d in dims) or len(dims) != ndim:
            return Unknown(f"{name} with dimensions that are not constants: {dims}")
        return Permute(data=source, dims=tuple(d % ndim for d in dims))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Permute) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.repeat != 1:
            return False
        if not source.split:
            walk.set_output(node, Layout(role.dims.index(source.axis), source.ids), walk.zeros[role.data])
            if role.data in walk.parts:  # parts along another axis move with it
                part_axis, part_zeros = walk.parts[role.data]
                walk.parts[node.name] = (role.dims.index(part_axis), part_zeros)
            return None
        swap = list(range(len(role.dims)))
        swap[source.axis], swap[source.axis + 1] = source.axis + 1, source.axis
        if list(role.dims) != swap:
            return False  # only the shuffle's transpose of the two channel axes is mapped
        per_group = len(source.ids) // source.split
        order = [g * per_group + k for k in range(per_group) for g in range(source.split)]
        zeros = walk.zeros[role.data]
        layout = Layout(source.axis, tuple(source.ids[i] for i in order), split=per_group)
        walk.set_output(node, layout, tuple(zeros[i] for i in order))
        return None


class ReduceHandler(OpHandler[Reduce]):
    role = Reduce

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Reduce | Unknown:
        """The table's data is ``VECTOR_NORM`` for a norm (its order first, then its axes); else ``None``."""
        first = 2 if data == VECTOR_NORM else 1
        source, dims, keepdim = data_name(node), arg(node, first, "dim"), arg(node, first + 1, "keepdim", False)
        if source is None or dims is None:
            return Unknown("reduction over every axis")
        order = norm_order(node) if data == VECTOR_NORM else None
        if isinstance(order, Unknown):
            return order
        ndim = len(shape(node.args[0]))
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        return Reduce(data=source, dims=tuple(sorted(d % ndim for d in dims)), keepdim=bool(keepdim), order=order)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Reduce) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.axis in role.dims:
            reduction = channel_reduction(node, role.data, source.axis, role.order)
            if reduction is not None:
                return walk.reassign(node, reduction)
        if source.axis in role.dims or source.repeat != 1:
            return False
        axis = source.axis if role.keepdim else source.axis - sum(d < source.axis for d in role.dims)
        walk.set_output(node, Layout(axis, source.ids), walk.zeros[role.data])
        return None
