"""Convolutions and linear layers: consumers of their input channels and producers of new ones.

- :class:`Weighted` conv / linear / conv-transpose with ``groups=1``: reads input channels through its weight's
  columns (a *consumer*) and writes new output channels, its weight's rows and bias (a *producer*).
- :class:`Grouped` a grouped convolution (``1 < groups``, not depthwise): group ``g`` reads input block ``g`` and
  writes output block ``g``; a consumer and a producer whose groups keep equal widths.

Depthwise convolutions keep channel identity: :class:`ConvHandler` recognises them as
:class:`~fx_upscale.ops.norm.PerChannel`; a linear layer over a non-channel axis mixes tokens
(:class:`~fx_upscale.ops.token_mixing.TokenMixing`). Start reading at :class:`WeightedHandler`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..layouts import Layout
from .base import (
    Context,
    Masking,
    Mismatch,
    OpHandler,
    RewriteContext,
    Updates,
    arg,
    axis_size,
    data_name,
    implied_mismatches,
    is_get_attr,
    shape,
    traced_int,
)
from .norm import PerChannel, PerChannelKind
from .structural import Unknown
from .token_mixing import TokenMixing, mixes_tokens

if TYPE_CHECKING:
    from ..channels import ChannelWalk

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
LINEAR = "linear"  # the table's data for a linear function other than F.linear (channels on the last axis)
TRANSPOSED = "transposed"  # the table's data for a transposed convolution function (weight: in x out, groups at 6)
CONV_TRANSPOSE_FUNCTIONS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


@dataclass(frozen=True, kw_only=True)
class Weighted:
    data: str  # the FX node feeding the input channels
    data_axis: int  # channel axis of input and output: 1 (conv) or -1 (linear: the last axis)
    weight: str  # qualified parameter name
    bias: str | None
    module: str | None  # qualified module name whose attributes describe the shape
    in_attr: str | None  # e.g. "in_channels", "in_features"
    out_attr: str | None
    weight_in_axis: int = 1
    weight_out_axis: int = 0


@dataclass(frozen=True, kw_only=True)
class Grouped:
    """A convolution with ``groups`` groups: weight rows of group ``g`` read only input channels of block ``g``."""

    conv: Weighted  # the convolution's data, weight, bias and shape attributes, as for ``groups=1``
    groups: int


def producer_weights(role: object) -> Weighted | None:
    """The weights of a role that creates channels (conv, linear, grouped conv), else ``None``."""
    if isinstance(role, Weighted):
        return role
    return role.conv if isinstance(role, Grouped) else None


class ConvHandler:
    """Recognises convolution modules and ``F.conv*``: :class:`Weighted`, :class:`Grouped` or depthwise
    :class:`~fx_upscale.ops.norm.PerChannel`, by their groups."""

    def recognise_module(self, node: fx.Node, module: _ConvNd, data: str) -> Any:
        name = str(node.target)
        bias = f"{name}.bias" if module.bias is not None else None
        transposed = isinstance(module, CONV_TRANSPOSE_MODULES)
        weighted = Weighted(
            data=data, data_axis=1, weight=f"{name}.weight", bias=bias, module=name, in_attr="in_channels",
            out_attr="out_channels", weight_in_axis=0 if transposed else 1, weight_out_axis=1 if transposed else 0,
        )  # fmt: skip
        if module.groups == 1:
            return weighted
        if not transposed and module.groups == module.in_channels == module.out_channels:
            counts = ("in_channels", "out_channels", "groups")
            return PerChannel(
                data=data, kind=PerChannelKind.DEPTHWISE, weight=weighted.weight, bias=bias, module=name,
                count_attrs=counts,
            )  # fmt: skip
        if not transposed:
            return Grouped(conv=weighted, groups=module.groups)
        return Unknown(f"grouped transposed convolution (groups={module.groups}) is not supported")

    def recognise_function(self, node: fx.Node, linear: bool, transposed: bool = False) -> Any:
        """``F.conv*`` / ``F.linear`` / ``F.conv_transpose*`` and their aten overloads, weights read by
        ``get_attr``."""
        data, weight, bias = data_name(node), arg(node, 1, "weight"), arg(node, 2, "bias")
        if data is None or not is_get_attr(weight) or not (bias is None or is_get_attr(bias)):
            return Unknown(
                "weights that are not plain attributes read by this node alone (get_attr) cannot be resliced"
            )
        bias_name = str(bias.target) if bias is not None else None
        weighted = Weighted(
            data=data, data_axis=1, weight=str(weight.target), bias=bias_name, module=None, in_attr=None, out_attr=None
        )
        if linear:
            return replace(weighted, data_axis=-1)
        groups = traced_int(arg(node, 6, "groups", 1))  # x.shape[1] in a depthwise blur: its traced value
        if groups is None:
            return Unknown("a convolution whose groups are neither a constant nor shape arithmetic")
        if transposed:  # F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
            if groups != 1:
                return Unknown(f"grouped transposed convolution (groups={groups}) is not supported")
            if not _in_conv_transpose_module(node, weighted.weight):
                return Unknown(
                    "a transposed convolution whose weight is no ConvTranspose module's: a PruneSpec reads such a "
                    "weight's axes as (out, in), the convolution as (in, out)"
                )
            return replace(weighted, weight_in_axis=0, weight_out_axis=1)
        if groups == 1:
            return weighted
        if groups == shape(node)[1] == shape(node.args[0])[1]:
            return PerChannel(
                data=data, kind=PerChannelKind.DEPTHWISE_FUNCTIONAL, weight=weighted.weight, bias=bias_name,
                module=None, count_attrs=(),
            )  # fmt: skip
        return Grouped(conv=weighted, groups=groups)


def _in_conv_transpose_module(node: fx.Node, weight: str) -> bool:
    """Whether ``node`` runs inside the ``ConvTranspose`` module owning ``weight`` (``torch.export`` records the
    module path and type of every node): then a :class:`~fx_upscale.PruneSpec` reads the weight's axes as the
    convolution does, (in, out)."""
    owner = weight.rpartition(".")[0]
    stack = node.meta.get("nn_module_stack") or {}
    for path, kind in stack.values():
        name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", "")
        if path == owner and name.rpartition(".")[2].startswith("ConvTranspose"):
            return True
    return False


class WeightedHandler(OpHandler[Weighted]):
    """Input channel ``c`` is needed unless its weight column is zero or the channel is; output channel ``r`` is
    zero when its weight row and bias are."""

    role = Weighted
    conv = ConvHandler()

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Any:
        if node.op == "call_function":
            linear = node.target is F.linear or data == LINEAR
            return self.conv.recognise_function(node, linear=linear, transposed=data == TRANSPOSED)
        module = context.graph_module.get_submodule(str(node.target))
        source = data_name(node)
        assert source is not None  # the table checked the module's one tensor input
        if isinstance(module, nn.Linear):
            name = str(node.target)
            bias = f"{name}.bias" if module.bias is not None else None
            return Weighted(
                data=source, data_axis=-1, weight=f"{name}.weight", bias=bias, module=name, in_attr="in_features",
                out_attr="out_features",
            )  # fmt: skip
        assert isinstance(module, _ConvNd)  # the table routes only convolutions and nn.Linear here
        return self.conv.recognise_module(node, module, source)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Weighted) -> bool | None:
        if role.data_axis == -1 and mixes_tokens(walk, role.data):
            return walk.reassign(node, TokenMixing(data=role.data, bias=role.bias))
        source = walk.layout_on(role.data, role.data_axis)
        weight = walk.tensor(role.weight)
        if source is None or weight.shape[role.weight_in_axis] != len(source.ids) * source.repeat:
            return False
        columns = weight.transpose(0, role.weight_in_axis).reshape(weight.shape[role.weight_in_axis], -1)
        used = columns.ne(0).any(dim=1).reshape(len(source.ids), source.repeat).any(dim=1).tolist()
        needed = tuple(u and not z for u, z in zip(used, walk.zeros[role.data]))
        walk.add_read(node.name, role.data, needed, macs_per_channel=_macs_per_channel(node, weight, role, source))
        rows = weight.transpose(0, role.weight_out_axis).reshape(weight.shape[role.weight_out_axis], -1)
        zero = rows.eq(0).all(dim=1)
        if role.bias is not None:
            zero &= walk.tensor(role.bias).eq(0)
        axis = role.data_axis % len(shape(node))
        walk.set_output(node, Layout(axis, walk.fresh(node.name, len(zero), fixed=False)), tuple(zero.tolist()))
        return True

    def rewrite(self, name: str, role: Weighted, context: RewriteContext, updates: Updates) -> None:
        rewrite_rows(name, role, context, updates)
        access = context.accesses.get(name)
        if access is not None:
            full = len(context.analysis.layouts[access.source].ids) * access.repeat
            columns = tuple(c * access.repeat + k for c in access.columns for k in range(access.repeat))
            updates.keep(role.weight, role.weight_in_axis, columns, full)
            if role.in_attr:
                updates.attr(role.module, role.in_attr, len(access.columns) * access.repeat)

    def masking(self, role: Weighted) -> Masking:
        return Masking(chooses=True, owns_free_channels=True)

    def output_weight(self, role: Weighted) -> str:
        return role.weight

    def creates_channels(self, role: Weighted) -> bool:
        return True

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if isinstance(module, _ConvNd):
            return _conv_mismatches(module)
        if isinstance(module, nn.Linear):
            rows = axis_size(module.weight, 0)
            found = implied_mismatches(module, {"out_features": rows, "in_features": axis_size(module.weight, 1)})
            return found + _bias_mismatches(module.bias, rows)
        return []


def _macs_per_channel(node: fx.Node, weight: torch.Tensor, role: Weighted, source: Layout) -> int:
    """Multiply-adds one input channel costs at the example inputs: every output element reads its
    ``repeat`` features through the kernel's taps."""
    taps = weight.numel() // (weight.shape[role.weight_in_axis] * weight.shape[role.weight_out_axis])
    return math.prod(shape(node)) * taps * source.repeat


class GroupedHandler(OpHandler[Grouped]):
    """Input channel ``c`` is needed if a row of its group uses its column; rows are produced channels."""

    role = Grouped

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Grouped) -> bool:
        conv, groups = role.conv, role.groups
        source = walk.layout_on(conv.data, 1)
        weight = walk.tensor(conv.weight)
        if source is None or source.repeat != 1 or weight.shape[1] * groups != len(source.ids):
            return False
        rows_per_group = weight.shape[0] // groups
        per_group = weight.reshape(groups, rows_per_group, weight.shape[1], -1)
        used = per_group.ne(0).any(dim=3).any(dim=1).reshape(-1).tolist()  # group-major: input channel order
        needed = tuple(u and not z for u, z in zip(used, walk.zeros[conv.data]))
        walk.add_read(node.name, conv.data, needed, groups)
        zero = weight.reshape(weight.shape[0], -1).eq(0).all(dim=1)
        if conv.bias is not None:
            zero &= walk.tensor(conv.bias).eq(0)
        walk.set_output(node, Layout(1, walk.fresh(node.name, len(zero), fixed=False)), tuple(zero.tolist()))
        return True

    def rewrite(self, name: str, role: Grouped, context: RewriteContext, updates: Updates) -> None:
        rewrite_rows(name, role.conv, context, updates)
        access = context.accesses.get(name)
        if access is not None:
            width = len(context.analysis.layouts[access.source].ids) * access.repeat // role.groups
            updates.keep(role.conv.weight, 1, tuple(c % width for c in access.columns), width, role.groups)
            if role.conv.in_attr:
                updates.attr(role.conv.module, role.conv.in_attr, len(access.columns) * access.repeat)

    def output_weight(self, role: Grouped) -> str:
        return role.conv.weight

    def creates_channels(self, role: Grouped) -> bool:
        return True


def rewrite_rows(name: str, role: Weighted, context: RewriteContext, updates: Updates) -> None:
    """A producer's kept rows, in physical order: weight rows, bias, and its output-size attribute."""
    rows = context.physical.get(name)
    if rows is None:
        return
    updates.keep(role.weight, role.weight_out_axis, rows, context.size(name))
    if role.bias is not None:
        updates.keep(role.bias, 0, rows, context.size(name))
    if role.out_attr:
        updates.attr(role.module, role.out_attr, len(rows))


def _conv_mismatches(conv: _ConvNd) -> list[Mismatch]:
    rows, columns = axis_size(conv.weight, 0), axis_size(conv.weight, 1)
    columns = None if columns is None else columns * conv.groups
    inputs, outputs = (rows, columns) if conv.transposed else (columns, rows)
    found = implied_mismatches(conv, {"in_channels": inputs, "out_channels": outputs})
    return found + _bias_mismatches(conv.bias, outputs)


def _bias_mismatches(bias: torch.Tensor | None, rows: int | None) -> list[Mismatch]:
    if bias is not None and rows is not None and bias.shape[0] != rows:
        return [Mismatch("bias length", bias.shape[0], rows)]
    return []
