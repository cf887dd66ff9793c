"""Cutting the channel axis: ``split`` / ``chunk`` into pieces, ``narrow`` and ``x[:, a:b]`` slices.

- :class:`Split` cuts an axis into pieces (along another axis than the channels', each piece carries every
  channel); :class:`SplitPiece` is ``getitem`` of one piece.
- :class:`Slice` one range of an axis; :class:`Strided` slicing with steps or of several axes, which channels pass
  through when it does not touch their axis.

When channels are removed, split sizes and slice bounds are rewritten to count the kept channels of each range;
``chunk`` pieces keep equal widths instead (the planner pads them), so ``chunk(n)`` still cuts them right. Sizes and
bounds computed in the graph from shapes (``x[:, : x.size(1) // 2]``) are read at their traced values
(``ops.base.traced_int``) and, on the channel axis, rewritten to constants for the pruned widths.
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx

from ..layouts import Layout
from .base import Carry, Context, Masking, OpHandler, RewriteContext, Updates, arg, data_name, shape, traced_int
from .pointwise import Pointwise
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk

SPLIT_FUNCTIONS = (torch.split, torch.chunk)
SPLIT_METHODS = ("split", "chunk")
_ATEN_SPLITS = (torch.ops.aten.chunk.default, torch.ops.aten.split_with_sizes.default, torch.ops.aten.split.Tensor)
UNBINDS = (torch.unbind, "unbind", torch.ops.aten.unbind.int)
SELECTS = (torch.select, "select", torch.ops.aten.select.int)
_SPLITS = {("call_function", f) for f in SPLIT_FUNCTIONS + _ATEN_SPLITS + (torch.unbind, torch.ops.aten.unbind.int)} | {
    ("call_method", m) for m in SPLIT_METHODS + ("unbind",)
}


class SliceArguments(enum.Enum):
    """How a slice states its range after its axis: ``narrow(dim, start, length)`` or ``slice(dim, start, end)``."""

    START_LENGTH = "start_length"
    START_END = "start_end"


@dataclass(frozen=True, kw_only=True)
class Split:
    data: str
    dim: int  # non-negative
    sections: tuple[int, ...]  # piece sizes along ``dim`` at the example inputs
    chunks: bool  # ``chunk``: equal pieces, so every piece must keep the same number of channels


@dataclass(frozen=True, kw_only=True)
class Unbind:
    """``unbind`` along ``dim`` (non-negative): each piece (a :class:`SplitPiece`) one axis fewer. Along another
    axis than the channels' (attention's ``q, k, v = qkv.unbind(0)``), every piece carries every channel."""

    data: str
    dim: int


@dataclass(frozen=True, kw_only=True)
class Select:
    """``x.select(dim, i)`` / ``x[:, i]``: one index of an axis, which disappears."""

    data: str
    dim: int  # non-negative
    index: int


@dataclass(frozen=True, kw_only=True)
class SplitPiece:
    split: str
    index: int


@dataclass(frozen=True, kw_only=True)
class Slice:
    data: str
    dim: int  # non-negative
    start: int
    length: int
    getitem: bool  # ``x[...]`` (rewrite the index) rather than ``narrow`` (rewrite start and length)
    arguments: SliceArguments = SliceArguments.START_LENGTH  # how a call states its range (not ``x[...]``)


@dataclass(frozen=True, kw_only=True)
class Strided:
    """Slicing with a step, or of several axes at once (``x[:, ::2, ::2]``): each channel on its own when the
    channels lie on none of ``dims`` (non-negative)."""

    data: str
    dims: tuple[int, ...]


def _count(kept: tuple[int, ...], start: int, end: int) -> int:
    return sum(start <= p < end for p in kept)


class SplitHandler(OpHandler[Split]):
    role = Split

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Split | Unknown:
        """The table's data is the kind (``"chunk"`` or ``"split"``) where the target does not say it."""
        kind = data if data in ("chunk", "split") else "chunk" if node.target in (torch.chunk, "chunk") else "split"
        source, axes = data_name(node), shape(node.args[0])
        if source is None or not axes:
            return Unknown(f"{kind} of a non-tensor")
        size = arg(node, 1, "chunks" if kind == "chunk" else "split_size_or_sections")
        size, dim = node.kwargs.get("split_size", size), traced_int(arg(node, 2, "dim", 0))
        if dim is None:
            return Unknown(f"{kind} along an axis that is not a constant")
        dim %= len(axes)
        length, count = axes[dim], traced_int(size)
        if kind == "chunk":
            if count is None or length % count:
                return Unknown(f"chunk into {size} pieces of an axis of {length}: not equal pieces")
            return Split(data=source, dim=dim, sections=(length // count,) * count, chunks=True)
        sizes = [traced_int(s) for s in size] if isinstance(size, (list, tuple)) else []
        if count is not None and count > 0:
            sections = (count,) * (length // count) + ((length % count,) if length % count else ())
        elif sizes and all(s is not None for s in sizes):
            sections = tuple(s for s in sizes if s is not None)
        else:
            return Unknown(f"split with sizes that are neither constants nor shape arithmetic: {size}")
        return Split(data=source, dim=dim, sections=sections, chunks=False)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Split) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if role.dim == source.axis and source.repeat != 1:
            return False
        walk.splits[node.name] = (role, source, walk.zeros[role.data])
        return None

    def rewrite(self, name: str, role: Split, context: RewriteContext, updates: Updates) -> None:
        kept = context.physical.get(role.data)
        if kept is None or role.chunks or context.analysis.layouts[role.data].axis != role.dim:
            return  # chunk pieces keep equal widths (the planner pads them): chunk(n) still cuts them right
        bounds = [sum(role.sections[:i]) for i in range(len(role.sections) + 1)]
        sizes = tuple(_count(kept, a, b) for a, b in zip(bounds, bounds[1:]))
        node = context.analysis.nodes[name]
        if node.target is torch.ops.aten.split.Tensor:  # its size is one int: the pieces now differ
            updates.arg(name, 1, "split_size", list(sizes), target=torch.ops.aten.split_with_sizes.default)
            return
        updates.arg(name, 1, "split_size_or_sections" if node.op == "call_function" else "split_size", sizes)


class StridedHandler(OpHandler[Strided]):
    """Channels pass through a slicing of other axes; slicing the channel axis with a step (or with another axis)
    is not mapped."""

    role = Strided

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Strided) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.axis in role.dims:
            return False
        walk.set_output(node, source, walk.zeros[role.data])
        return None

    def masking(self, role: Strided) -> Masking:
        return Masking(carry=Carry.THROUGH)


def _without_axis(layout: Layout, dim: int) -> Layout | None:
    """``layout`` once axis ``dim`` (not its channel axis) is removed; ``None`` if it is the channel axis."""
    if dim == layout.axis or (layout.split and dim == layout.axis + 1):
        return None
    return Layout(layout.axis - (dim < layout.axis), layout.ids, layout.repeat, layout.split)


def _dropping_axis(walk: ChannelWalk, node: fx.Node, data: str, dim: int, reason: str) -> Layout | None:
    """``data``'s layout once axis ``dim`` is dropped (unbind, select); ``None`` if ``data`` carries no channels, or
    if ``dim`` is their axis (``node`` then becomes a barrier for ``reason``)."""
    source = walk.layouts.get(data)
    layout = _without_axis(source, dim) if source is not None else None
    if source is not None and layout is None:
        walk.barrier(node, reason)
    return layout


class UnbindHandler(OpHandler[Unbind]):
    """Along another axis than the channels', each piece carries them; along theirs, a barrier."""

    role = Unbind
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Unbind | Unknown:
        source, axes, dim = data_name(node), shape(node.args[0]), traced_int(arg(node, 1, "dim", 0))
        if source is None or not axes or dim is None:
            return Unknown("unbind along an axis that is not a constant")
        return Unbind(data=source, dim=dim % len(axes))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Unbind) -> None:
        piece = _dropping_axis(walk, node, role.data, role.dim, "unbind of the channel axis: each piece is one channel")
        if piece is not None:
            walk.splits[node.name] = (role, piece, walk.zeros[role.data])


class SelectHandler(OpHandler[Select]):
    """One index of another axis than the channels': every channel, one axis fewer."""

    role = Select
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Select | Unknown:
        source, axes = data_name(node), shape(node.args[0])
        dim, index = traced_int(arg(node, 1, "dim")), traced_int(arg(node, 2, "index"))
        if source is None or not axes or dim is None or index is None:
            return Unknown("select along an axis or at an index that is not a constant")
        return Select(data=source, dim=dim % len(axes), index=index % axes[dim % len(axes)])

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Select) -> None:
        layout = _dropping_axis(walk, node, role.data, role.dim, "select of one channel of the channel axis")
        if layout is not None:
            walk.set_output(node, layout, _part_zeros(walk, role.data, role.dim, role.index))


def _part_zeros(walk: ChannelWalk, data: str, dim: int, index: int) -> tuple[bool, ...]:
    """The zeros of part ``index`` along ``dim`` of ``data``'s channels, if it records them (``ChannelWalk.parts``);
    else those of the whole channels."""
    axis, zeros = walk.parts.get(data, (None, ()))
    return zeros[index] if axis == dim else walk.zeros[data]


class SplitPieceHandler(OpHandler[SplitPiece]):
    """A piece of a split along the channel axis holds that range of channels; along another axis, all."""

    role = SplitPiece

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: SplitPiece) -> None:
        if role.split not in walk.splits:
            return  # a piece of an untracked tensor
        split, source, zeros = walk.splits[role.split]
        if isinstance(split, Unbind):
            walk.set_output(node, source, _part_zeros(walk, split.data, split.dim, role.index))
            return
        if split.dim != source.axis:
            walk.set_output(node, source, zeros)
            return
        index = role.index % len(split.sections)
        start, length = sum(split.sections[:index]), split.sections[index]
        walk.set_output(node, Layout(source.axis, source.ids[start : start + length]), zeros[start : start + length])


class SliceHandler(OpHandler[Slice]):
    """``narrow`` with constant arguments, and ``getitem``: a split's piece, or basic slicing of one axis."""

    role = Slice

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Any:
        if node.target is operator.getitem:
            return _recognise_getitem(node)
        if data is SliceArguments.START_END:
            return _recognise_start_end(node)
        source, axes = data_name(node), shape(node.args[0])
        dim, start, length = (traced_int(arg(node, i, key)) for i, key in enumerate(("dim", "start", "length"), 1))
        if source is None or not axes or dim is None or start is None or length is None:
            return Unknown("narrow with arguments that are neither constants nor shape arithmetic")
        dim %= len(axes)
        return Slice(data=source, dim=dim, start=start % axes[dim], length=length, getitem=False)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Slice) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if role.dim != source.axis:
            walk.set_output(node, source, walk.zeros[role.data])
            return None
        if source.repeat != 1:
            return False
        kept = slice(role.start, role.start + role.length)
        walk.set_output(node, Layout(source.axis, source.ids[kept]), walk.zeros[role.data][kept])
        return None

    def rewrite(self, name: str, role: Slice, context: RewriteContext, updates: Updates) -> None:
        kept = context.physical.get(role.data)
        if kept is None or context.analysis.layouts[role.data].axis != role.dim:
            return
        start, length = _count(kept, 0, role.start), _count(kept, role.start, role.start + role.length)
        if role.arguments is SliceArguments.START_END:
            updates.arg(name, 2, "start", start)
            updates.arg(name, 3, "end", start + length)
            return
        if not role.getitem:
            updates.arg(name, 2, "start", start)
            updates.arg(name, 3, "length", length)
            return
        node = context.analysis.nodes[name]
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        index = index + (slice(None),) * (role.dim + 1 - len(index))
        updates.arg(name, 1, "", index[: role.dim] + (slice(start, start + length),) + index[role.dim + 1 :])


def _recognise_start_end(node: fx.Node) -> Slice | Strided | Unknown:
    """``aten.slice.Tensor(x, dim, start, end, step)``: ``None`` bounds and bounds past the axis are clamped."""
    source, axes = data_name(node), shape(node.args[0])
    dim, start, end, step = arg(node, 1, "dim", 0), arg(node, 2, "start"), arg(node, 3, "end"), arg(node, 4, "step", 1)
    bounds_known = all(v is None or isinstance(v, int) for v in (start, end))
    if source is None or not axes or not isinstance(dim, int) or not bounds_known:
        return Unknown("slice with bounds that are not constants")
    dim %= len(axes)
    if step != 1:
        return Strided(data=source, dims=(dim,))
    first, stop, _ = slice(start, end).indices(axes[dim])
    return Slice(
        data=source, dim=dim, start=first, length=max(0, stop - first), getitem=False,
        arguments=SliceArguments.START_END,
    )  # fmt: skip


def _recognise_getitem(node: fx.Node) -> Any:
    """``getitem`` of a split's piece, or basic slicing of one axis (``x[:, a:b]``); anything else is unknown."""
    source, index = node.args[0], node.args[1]
    if not isinstance(source, fx.Node):
        return Unknown("getitem of a non-node")
    if isinstance(index, int) and (source.op, source.target) in _SPLITS:
        return SplitPiece(split=source.name, index=index)
    axes = shape(source)
    index = index if isinstance(index, tuple) else (index,)
    ints = [dim for dim, i in enumerate(index) if isinstance(i, int)]
    others = [i for dim, i in enumerate(index) if dim not in ints]
    if axes and len(index) <= len(axes) and len(ints) == 1 and all(i == slice(None) for i in others):
        position = index[ints[0]]
        assert isinstance(position, int)  # ``ints`` holds the axes indexed by an int
        return Select(data=source.name, dim=ints[0], index=position % axes[ints[0]])
    if not axes or len(index) > len(axes) or not all(isinstance(i, slice) for i in index):
        return Unknown("indexing other than basic slices of a tensor")
    resolved = [_traced_slice(i) for i in index if isinstance(i, slice)]  # every one is (checked above)
    if None in resolved:
        return Unknown("slicing with bounds that are neither constants nor shape arithmetic")
    ranges = [(dim, i.indices(axes[dim])) for dim, i in enumerate(resolved) if i is not None and i != slice(None)]
    if len(ranges) > 1 or any(step != 1 for _, (_, _, step) in ranges):
        return Strided(data=source.name, dims=tuple(dim for dim, _ in ranges))
    if not ranges:
        return Pointwise(data=source.name, keeps_zero=True)
    dim, (start, stop, _) = ranges[0]
    return Slice(data=source.name, dim=dim, start=start, length=max(0, stop - start), getitem=True)


def _traced_slice(index: slice) -> slice | None:
    """``index`` with its bounds at their traced values (``None`` if one is neither a constant nor shape
    arithmetic)."""
    parts = [None if v is None else traced_int(v) for v in (index.start, index.stop, index.step)]
    known = all(v is not None or p is None for v, p in zip(parts, (index.start, index.stop, index.step)))
    return slice(*parts) if known else None
