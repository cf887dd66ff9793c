"""Sums, means and norms over the channel axis: RMS normalisation across channels, ``F.normalize``.

timm's ``RmsNorm2d`` (MobileNetV5, the normalisation of every block) computes ``x * rsqrt(mean(x ** 2, dim=1) + eps)
* weight``: the mean runs over the channel axis. A zero channel adds nothing to a sum, so a sum over the channels
reads only its input's non-zero channels, and any subset holding them gives the same result; a mean divides by the
channel count, so where the pruned graph reads fewer channels it computes the mean as that sum divided by the count
before pruning (:func:`channel_mean`). The result carries no channels (their axis is reduced), so the normalised
``x * r`` keeps each zero channel zero: pruning through the normalisation is exact. ``mask()`` chooses nothing
here, and, on the input side, still masks the columns of the layers reading the normalised channels (the sum keeps
reading every channel those layers drop, through a gather or a range).

A vector norm of positive order (``linalg_vector_norm``, what ``F.normalize`` computes in an aten graph) is a sum
too: a zero channel adds nothing to it.

Not mapped: ``amax`` over the channels (a zero channel may be the largest), a reduction over every axis, and one over
a flattened channel axis (each channel spanning several entries).

:class:`~fx_upscale.ops.shape.ReduceHandler` finds it: a reduction whose axes include its input's channel axis is
given the role :class:`ChannelReduction` (``ChannelWalk.reassign``). Start reading at
:class:`ChannelReductionHandler`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.fx as fx

from .base import Masking, OpHandler, RewriteContext, Updates, arg
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

MEANS = (torch.mean, "mean", torch.ops.aten.mean.dim)
SUMS = (torch.sum, "sum", torch.ops.aten.sum.dim_IntList)
VECTOR_NORM = "vector_norm"  # the table's data for a norm: ``(x, order, dim, keepdim)``
NORMS = (torch.linalg.vector_norm, torch.norm, "norm", torch.ops.aten.linalg_vector_norm.default)


@dataclass(frozen=True, kw_only=True)
class ChannelReduction:
    """A sum or mean of ``data`` over axes that include its channel axis ``axis``."""

    data: str
    axis: int
    mean: bool


def channel_mean(
    input: torch.Tensor,
    dim: int | Sequence[int],
    keepdim: bool = False,
    *,
    dtype: torch.dtype | None = None,
    channels: int,
    axis: int,
) -> torch.Tensor:
    """``torch.mean(input, dim, keepdim, dtype=dtype)`` of a tensor whose channel axis ``axis`` held ``channels``
    channels before pruning, the channels since removed all zero: the sum of what is left over ``dim``, divided by
    the number of entries the mean covered before pruning."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    others = math.prod(input.shape[d] for d in dims if d % input.dim() != axis)
    return torch.sum(input, dims, keepdim=keepdim, dtype=dtype) / (channels * others)


class ChannelReductionHandler(OpHandler[ChannelReduction]):
    """Reads the non-zero channels of its input; a mean reading fewer channels than it did becomes
    :func:`channel_mean`."""

    role = ChannelReduction

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: ChannelReduction) -> bool:
        source = walk.layouts.get(role.data)
        if source is None or source.repeat != 1 or source.split:
            return False
        walk.add_read(node.name, role.data, tuple(not zero for zero in walk.zeros[role.data]))
        return True

    def masking(self, role: ChannelReduction) -> Masking:
        return Masking(needs_only_nonzero=True)

    def rewrite(self, name: str, role: ChannelReduction, context: RewriteContext, updates: Updates) -> None:
        access = context.accesses.get(name)
        before = context.size(role.data)
        if not role.mean or access is None or len(access.columns) == before:
            return
        after = len(context.analysis.nodes[name].args)  # past the positional arguments: keywords
        updates.arg(name, after, "channels", before, target=channel_mean)
        updates.arg(name, after, "axis", role.axis)


def channel_reduction(node: fx.Node, data: str, axis: int, order: float | None = None) -> ChannelReduction | None:
    """The :class:`ChannelReduction` ``node`` is if it sums or averages ``data`` over its channel axis ``axis``, or
    takes its norm of a positive ``order`` (``None`` for ``amax`` or a norm of order zero or less: there a zero
    channel counts)."""
    if order is not None:
        return ChannelReduction(data=data, axis=axis, mean=False) if order > 0 else None
    if node.target not in MEANS + SUMS:
        return None
    return ChannelReduction(data=data, axis=axis, mean=node.target in MEANS)


def norm_order(node: fx.Node) -> float | Unknown:
    """The order of a vector norm (``torch.norm``'s ``"fro"`` is 2; its default too, as ``linalg.vector_norm``'s)."""
    order = arg(node, 1, "ord", None)
    if order is None:
        order = arg(node, 1, "p", 2)
    if order == "fro":
        return 2.0
    if isinstance(order, (int, float)) and not isinstance(order, bool):
        return float(order)
    return Unknown(f"a norm of order {order!r}")


def add_routes(table: HandlerTable) -> None:
    """Add the handler, and route vector norms to the reduction's handler (which reassigns a norm over the
    channels here)."""
    from .shape import Reduce

    table.add_handler(ChannelReductionHandler())
    table.add(Reduce, NORMS, VECTOR_NORM)
