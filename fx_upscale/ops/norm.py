"""Per-channel layers: one parameter slice per channel, channel identity kept.

- :class:`PerChannel` BatchNorm (module or ``F.batch_norm`` in inference mode), depthwise convolution, and modules
  registered with :func:`~fx_upscale.ops.table.HandlerTable.register_per_channel`: their tensors are resliced with
  the channels they carry.
- :class:`LayerNorm` LayerNorm over the channel axis (the last): its statistics read every channel, then it scales
  each channel on its own; channels may be reordered, not removed before it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .base import (
    Carry,
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
    owner_module,
    shape,
    tensor_name,
)
from .structural import Unknown
from .token_mixing import TokenMixing

if TYPE_CHECKING:
    from ..channels import ChannelWalk

BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True, kw_only=True)
class BatchNormArguments:
    """Where a functional batch norm holds its tensors and its training flag (by position, or keyword)."""

    running_mean: int = 1
    running_var: int = 2
    weight: int = 3
    bias: int = 4
    training: int = 5

    def tensors(self, node: fx.Node) -> list[Any]:
        """The node's running mean, running variance, weight and bias arguments, in that order."""
        names = ("running_mean", "running_var", "weight", "bias")
        return [arg(node, getattr(self, name), name) for name in names]


F_BATCH_NORM = BatchNormArguments()  # F.batch_norm(input, running_mean, running_var, weight, bias, training, ...)


class PerChannelKind(enum.Enum):
    BATCHNORM = "batchnorm"
    DEPTHWISE = "depthwise"
    DEPTHWISE_FUNCTIONAL = "depthwise_functional"  # F.conv2d with groups == channels: its groups argument follows
    AFFINE = "affine"  # a registered module


@dataclass(frozen=True, kw_only=True)
class PerChannel:
    """One slice per channel along axis 0 of each named tensor (qualified names; ``None`` when absent)."""

    data: str
    kind: PerChannelKind
    weight: str | None
    bias: str | None
    module: str | None
    count_attrs: tuple[str, ...]  # module attributes equal to the channel count
    running_mean: str | None = None
    running_var: str | None = None

    @property
    def params(self) -> tuple[str, ...]:
        """Every per-channel tensor, resliced together."""
        names = (self.weight, self.bias, self.running_mean, self.running_var)
        return tuple(name for name in names if name is not None)


@dataclass(frozen=True)
class AffineModule:
    """How a registered per-channel module holds its tensors: attribute names, and attributes equal to the count."""

    weight: str | None
    bias: str | None
    count_attrs: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class LayerNorm:
    data: str
    weight: str | None
    bias: str | None
    module: str | None  # an nn.LayerNorm whose normalized_shape follows the channel count
    functional: bool = False  # F.layer_norm: its normalized_shape argument follows the channel count


class PerChannelHandler(OpHandler[PerChannel]):
    role = PerChannel

    def recognise(self, node: fx.Node, context: Context, data: Any) -> PerChannel | Unknown:
        source = data_name(node)
        if source is None:
            return Unknown("batch_norm of something other than a tensor")
        if node.op == "call_function":
            return _functional_batch_norm(node, source, data if isinstance(data, BatchNormArguments) else F_BATCH_NORM)
        name = str(node.target)
        module = context.graph_module.get_submodule(name)
        if isinstance(data, AffineModule):
            weight, bias = (
                f"{name}.{a}" if a and getattr(module, a, None) is not None else None for a in (data.weight, data.bias)
            )
            return PerChannel(
                data=source, kind=PerChannelKind.AFFINE, weight=weight, bias=bias, module=name,
                count_attrs=data.count_attrs,
            )  # fmt: skip
        if not module.track_running_stats or module.running_mean is None:
            return Unknown("BatchNorm without running statistics normalizes with batch statistics")
        return PerChannel(
            data=source, kind=PerChannelKind.BATCHNORM, weight=tensor_name(module, name, "weight"),
            bias=tensor_name(module, name, "bias"), module=name, count_attrs=("num_features",),
            running_mean=f"{name}.running_mean", running_var=f"{name}.running_var",
        )  # fmt: skip

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: PerChannel) -> bool:
        source = walk.layout_on(role.data, 1)
        if source is None or source.repeat != 1:
            return False
        count = len(source.ids)
        if any(walk.tensor(name).shape[0] != count for name in role.params):
            return False
        no_bias = torch.ones(count, dtype=torch.bool) if role.bias is None else walk.tensor(role.bias).eq(0)
        zero_weight = walk.tensor(role.weight).reshape(count, -1).eq(0).all(dim=1) if role.weight else False
        masked = no_bias & zero_weight
        if role.kind is PerChannelKind.BATCHNORM:  # (x - mean) / sqrt(var + eps) * weight + bias
            assert role.running_mean is not None
            keeps_zero = no_bias & (walk.tensor(role.running_mean).eq(0) | zero_weight)
        else:  # a depthwise filter (or an affine scale) with no bias maps zero to zero
            keeps_zero = no_bias
        zeros_in = torch.tensor(walk.zeros[role.data], dtype=torch.bool)
        walk.set_output(node, source, tuple((masked | (zeros_in & keeps_zero)).tolist()))
        return True

    def rewrite(self, name: str, role: PerChannel, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)
        if rows is None:
            return
        for param in role.params:
            updates.keep(param, 0, rows, context.size(name))
        for attr in role.count_attrs:
            updates.attr(role.module, attr, len(rows))
        if role.kind is PerChannelKind.DEPTHWISE_FUNCTIONAL:
            updates.arg(name, 6, "groups", len(rows))

    def masking(self, role: PerChannel) -> Masking:
        batchnorm = role.kind is PerChannelKind.BATCHNORM
        if role.weight is None:
            return Masking(ranks_after=batchnorm)
        return Masking(
            carry=Carry.PER_CHANNEL, per_channel_weight=role.weight, per_channel_input=role.data, ranks_after=batchnorm
        )

    def output_weight(self, role: PerChannel) -> str | None:
        return role.weight

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if not isinstance(module, _NormBase):
            return []
        sizes = [axis_size(t, 0) for t in (module.weight, module.running_mean) if t is not None]
        return implied_mismatches(module, {"num_features": sizes[0] if sizes else None})


def _functional_batch_norm(node: fx.Node, source: str, arguments: BatchNormArguments) -> PerChannel | Unknown:
    """A functional batch norm in inference mode with running statistics (``F.batch_norm``: how Dynamo's graphs
    hold BatchNorm; ``aten.batch_norm``: how ``torch.export``'s do)."""
    tensors = arguments.tensors(node)
    if arg(node, arguments.training, "training", False) is not False or tensors[0] is None or tensors[1] is None:
        return Unknown("batch_norm in training mode or without running statistics normalizes with batch statistics")
    if not all(t is None or is_get_attr(t) for t in tensors):
        return Unknown(
            "batch_norm tensors that are not plain attributes read by this node alone (get_attr) cannot be resliced"
        )
    mean, var, weight, bias = (str(t.target) if t is not None else None for t in tensors)
    return PerChannel(
        data=source, kind=PerChannelKind.BATCHNORM, weight=weight, bias=bias, module=None, count_attrs=(),
        running_mean=mean, running_var=var,
    )  # fmt: skip


class LayerNormHandler(OpHandler[LayerNorm]):
    """Its statistics read every channel, whatever its value; its output channel ``c`` is zero only when its
    weight and bias at ``c`` are."""

    role = LayerNorm

    def recognise(self, node: fx.Node, context: Context, data: Any) -> LayerNorm | Unknown:
        source = data_name(node)
        if source is None:
            return Unknown("layer_norm of something other than a tensor")
        if node.op == "call_function":
            return _functional_layer_norm(node, source)
        name = str(node.target)
        module = context.graph_module.get_submodule(name)
        assert isinstance(module, nn.LayerNorm)  # the table routes only nn.LayerNorm modules here
        if len(module.normalized_shape) != 1:
            return Unknown("LayerNorm over more than the last axis")
        weight, bias = tensor_name(module, name, "weight"), tensor_name(module, name, "bias")
        return LayerNorm(data=source, weight=weight, bias=bias, module=name)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: LayerNorm) -> bool | None:
        known = walk.layouts.get(role.data)
        if known is not None and not known.split and known.repeat == 1 and known.axis != len(shape(node)) - 1:
            # over another axis than the channels' (a query/key norm over each head's features): each channel on
            # its own, its weight over that axis never resliced
            return walk.reassign(node, TokenMixing(data=role.data, bias=role.bias))
        source = walk.layout_on(role.data, -1)
        if source is None or source.repeat != 1 or source.axis != len(shape(node)) - 1:
            return False
        count = len(source.ids)
        walk.add_read(node.name, role.data, (True,) * count)
        weight_zero = walk.tensor(role.weight).eq(0) if role.weight else torch.zeros(count, dtype=torch.bool)
        bias_zero = walk.tensor(role.bias).eq(0) if role.bias else torch.ones(count, dtype=torch.bool)
        walk.set_output(node, source, tuple((weight_zero & bias_zero).tolist()))
        return True

    def rewrite(self, name: str, role: LayerNorm, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)
        if rows is None:
            return
        for param in (role.weight, role.bias):
            if param is not None:
                updates.keep(param, 0, rows, context.size(name))
        updates.attr(role.module, "normalized_shape", (len(rows),))
        if role.functional:
            updates.arg(name, 1, "normalized_shape", (len(rows),))

    def masking(self, role: LayerNorm) -> Masking:
        return Masking(reads_every_channel=True)

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if not isinstance(module, nn.LayerNorm) or module.weight is None:
            return []
        implied = tuple(module.weight.shape)
        if tuple(module.normalized_shape) != implied:
            return [Mismatch("normalized_shape", tuple(module.normalized_shape), implied)]
        return []

    def output_weight(self, role: LayerNorm) -> str | None:
        return role.weight


def _functional_layer_norm(node: fx.Node, source: str) -> LayerNorm | Unknown:
    normalized = arg(node, 1, "normalized_shape")
    weight, bias = arg(node, 2, "weight"), arg(node, 3, "bias")
    if not isinstance(normalized, (list, tuple)) or len(normalized) != 1:
        return Unknown("layer_norm over more than the last axis")
    if not all(p is None or is_get_attr(p) for p in (weight, bias)):
        return Unknown(
            "layer_norm weights that are not plain attributes read by this node alone (get_attr) cannot be resliced"
        )
    names = [str(p.target) if p is not None else None for p in (weight, bias)]
    owner = next((name.rpartition(".")[0] for name in names if name is not None), None)
    module = owner if owner is not None and isinstance(owner_module(node, owner), nn.LayerNorm) else None
    return LayerNorm(data=source, weight=names[0], bias=names[1], module=module, functional=True)
