"""Attention over whole heads: ``scaled_dot_product_attention``, batched ``matmul`` and ``softmax``.

Multi-head attention splits a projection's channels into heads (``qkv(x).reshape(B, N, 3, heads, head_dim)``);
:class:`~fx_upscale.ops.shape.ReshapeHandler` ties every channel of one head, in the query, key and value parts, into
one class, and carries one channel per head on the heads axis. From there the heads are a batch axis of the
attention: each head attends on its own. So

- :class:`Attention` (``F.scaled_dot_product_attention``) ties the heads of query, key and value (and of a mask
  with a heads axis), and its head ``h`` is zero where the value's head ``h`` is;
- :class:`BatchedMatmul` (``q @ k.transpose(-2, -1)``, ``attn @ v``) with the channels on a batch axis ties its
  operands' channels, and its channel is zero where either operand's is;
- :class:`Softmax` along another axis than the channels' keeps each channel on its own (a zero channel becomes
  uniform, not zero).

A head nobody needs (its value rows or the output projection's columns pruned) is removed whole: its query, key and
value rows, its projection columns, and one from the head count of every reshape (``ops/shape.py`` rewrites the
sizes). Heads are never cut apart: a mask that prunes part of a head keeps the head. Start reading at
:class:`AttentionHandler`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..layouts import Layout
from .base import Context, OpHandler, arg, data_name, is_tensor, shape
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

aten = torch.ops.aten

ATTENTION = (F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default)
MATMULS = (operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm", aten.matmul.default, aten.bmm.default)
SOFTMAXES = (
    F.softmax, torch.softmax, "softmax", F.log_softmax, torch.log_softmax, "log_softmax",
    aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax.default,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Attention:
    """``scaled_dot_product_attention(query, key, value, attn_mask)``: heads on a batch axis."""

    query: str
    key: str
    value: str
    mask: str | None  # an attention mask tensor, if any
    grouped: bool  # ``enable_gqa``: fewer key/value heads than query heads


@dataclass(frozen=True, kw_only=True)
class BatchedMatmul:
    """``left @ right`` of tensors of three or more axes: channels may lie on a batch axis."""

    left: str
    right: str


@dataclass(frozen=True, kw_only=True)
class Softmax:
    """``softmax`` / ``log_softmax`` along ``dim`` (non-negative)."""

    data: str
    dim: int


def batch_channels(walk: ChannelWalk, node: fx.Node, operands: Sequence[str]) -> tuple[int, list[Layout]] | None:
    """The output axis and the layouts of ``operands`` whose channels lie on one batch axis of ``node`` (axes
    counted from the end, as broadcasting aligns them). An operand that does not carry them but has that axis gets
    fixed ids there (so the channels it meets are kept and keep their order); one broadcasting along it is left out.
    ``None``: no operand carries channels. Raises ``ValueError`` if they lie elsewhere (a matrix axis)."""
    out_ndim = len(shape(node))
    axes = set()
    for name in operands:
        layout, ndim = walk.layouts.get(name), len(shape(walk.nodes[name]))
        if layout is None:
            continue
        if layout.repeat != 1 or layout.split or layout.axis >= ndim - 2:
            raise ValueError("its channels lie on a matrix axis, not a batch axis")
        axes.add(layout.axis - ndim + out_ndim)
    if not axes:
        return None
    if len(axes) != 1:
        raise ValueError("its operands carry channels on different axes")
    axis = axes.pop()
    layouts = []
    for name in operands:
        ndim = len(shape(walk.nodes[name]))
        own_axis = axis - out_ndim + ndim
        if own_axis < 0 or shape(walk.nodes[name])[own_axis] == 1:
            continue  # broadcast along the channels
        layout = walk.layout_on(name, own_axis)
        if layout is None:
            raise ValueError(f"operand {name!r} has no channel layout")
        layouts.append(layout)
    if len({len(layout.ids) for layout in layouts}) != 1:
        raise ValueError("its operands carry different numbers of channels")
    return axis, layouts


def _tie_batch(walk: ChannelWalk, node: fx.Node, operands: Sequence[str], zeros_from: Sequence[str]) -> None:
    """Tie the channels of ``operands`` on their batch axis; the output's channel is zero where any operand among
    ``zeros_from`` has it zero."""
    try:
        found = batch_channels(walk, node, operands)
    except ValueError as error:
        walk.barrier(node, str(error))
        return
    if found is None:
        return
    axis, layouts = found
    count = len(layouts[0].ids)
    zeros = [False] * count
    for name in zeros_from:
        if walk.layouts.get(name) in layouts:  # not broadcast along the channels
            zeros = [zero or walk.zeros[name][i] for i, zero in enumerate(zeros)]
    walk.tie(node, layouts, axis, tuple(zeros))


class AttentionHandler(OpHandler[Attention]):
    """Query, key and value heads tied; head ``h`` of the output is zero where the value's head ``h`` is."""

    role = Attention

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Attention | Unknown:
        tensors = [arg(node, i, key) for i, key in enumerate(("query", "key", "value"))]
        if not all(isinstance(t, fx.Node) and is_tensor(t) for t in tensors):
            return Unknown("attention of something other than tensors")
        mask = arg(node, 3, "attn_mask")
        if isinstance(mask, fx.Node) and not is_tensor(mask):
            mask = None  # a value that held no tensor at the example inputs (an ``attn_mask=None`` argument)
        elif mask is not None and not isinstance(mask, fx.Node):
            return Unknown("attention with a mask that is not a tensor")
        query, key, value = (t.name for t in tensors)
        grouped = bool(node.kwargs.get("enable_gqa", False))
        return Attention(query=query, key=key, value=value, mask=mask.name if mask is not None else None,
                         grouped=grouped)  # fmt: skip

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Attention) -> None:
        operands = [role.query, role.key, role.value] + ([role.mask] if role.mask else [])
        if role.grouped and len({_heads(walk, name) for name in operands[:3]}) != 1:
            walk.barrier(node, "grouped-query attention (fewer key/value heads than query heads)")
            return
        _tie_batch(walk, node, operands, [role.value])


def _heads(walk: ChannelWalk, name: str) -> int:
    axes = shape(walk.nodes[name])
    return axes[-3] if len(axes) >= 3 else 1


class BatchedMatmulHandler(OpHandler[BatchedMatmul]):
    """Operands' channels on one batch axis tied; the product's channel is zero where either operand's is."""

    role = BatchedMatmul

    def recognise(self, node: fx.Node, context: Context, data: Any) -> BatchedMatmul | Unknown:
        left, right = arg(node, 0, "input"), arg(node, 1, "other")
        if not (isinstance(left, fx.Node) and isinstance(right, fx.Node) and is_tensor(left) and is_tensor(right)):
            return Unknown("matmul of something other than two tensors")
        if min(len(shape(left)), len(shape(right))) < 3:
            return Unknown("matmul with a matrix or vector operand (a weight): not mapped")
        return BatchedMatmul(left=left.name, right=right.name)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: BatchedMatmul) -> None:
        _tie_batch(walk, node, [role.left, role.right], [role.left, role.right])


class SoftmaxHandler(OpHandler[Softmax]):
    """Along another axis than the channels', each channel on its own; along the channels, a barrier."""

    role = Softmax

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Softmax | Unknown:
        source, dim = data_name(node), arg(node, 1, "dim")
        if source is None or not isinstance(dim, int):
            return Unknown("softmax along an axis that is not a constant")
        return Softmax(data=source, dim=dim % max(1, len(shape(node))))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Softmax) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.axis == role.dim or source.split:
            walk.barrier(node, "softmax along the channel axis: each channel's value depends on every channel")
            return None
        walk.set_output(node, source, (False,) * len(source.ids))
        return None


TIMM_MASKS = "timm.layers.attention.resolve_self_attn_mask"  # reads the scores' shape and dtype only
TIMM_MASK_ADD = "timm.layers.attention.maybe_add_mask"  # scores, or scores + mask


def add_routes(table: HandlerTable) -> None:
    """The handlers, their torch-level and aten targets, and timm's two traced-as-leaf helpers of its unfused
    attention (known by name: timm is not imported)."""
    from .elementwise import Elementwise, Operation
    from .structural import Metadata

    table.add_handler(AttentionHandler())
    table.add_handler(BatchedMatmulHandler())
    table.add_handler(SoftmaxHandler())
    table.add(Attention, ATTENTION)
    table.add(BatchedMatmul, MATMULS)
    table.add(Softmax, SOFTMAXES)
    table.add_qualname(Metadata, TIMM_MASKS)
    table.add_qualname(Elementwise, TIMM_MASK_ADD, Operation.ADD)
