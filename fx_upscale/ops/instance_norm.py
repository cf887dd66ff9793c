"""InstanceNorm: ``nn.InstanceNorm1d/2d/3d``, ``F.instance_norm`` and ``torch.instance_norm`` / its aten overload.

Each channel of each sample is normalised by its own statistics (``use_input_stats``: the usual case, and what
``track_running_stats=False`` always does), or by its running statistics (a module tracking them, in eval mode).
Either way channel ``c`` of the output depends on channel ``c`` of the input only: channels may be removed or
reordered freely, and the affine weight and bias (and the running statistics, if tracked) are resliced with them,
``num_features`` following. A zero input channel gives ``(0 - 0) / sqrt(0 + eps) * w + b = b``: it stays zero iff
its bias is zero (or there is none); with running statistics, ``-mean / sqrt(var + eps) * w + b`` as BatchNorm.

Start reading at :class:`InstanceNormHandler`; :func:`add_routes` adds it to a handler table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.instancenorm import _InstanceNorm

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

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

INSTANCE_NORM_MODULES = (
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d,
    nn.LazyInstanceNorm3d,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class InstanceNormArguments:
    """Where a functional instance norm holds its tensors and its ``use_input_stats`` flag (position, or keyword)."""

    running_mean: int
    running_var: int
    weight: int
    bias: int
    use_input_stats: int = 5

    def tensors(self, node: fx.Node) -> list[Any]:
        """The node's weight, bias, running mean and running variance arguments, in that order."""
        names = ("weight", "bias", "running_mean", "running_var")
        return [arg(node, getattr(self, name), name) for name in names]


# F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
F_INSTANCE_NORM = InstanceNormArguments(running_mean=1, running_var=2, weight=3, bias=4)
# torch.instance_norm / aten.instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, ...)
ATEN_INSTANCE_NORM = InstanceNormArguments(weight=1, bias=2, running_mean=3, running_var=4)


@dataclass(frozen=True, kw_only=True)
class InstanceNorm:
    """One InstanceNorm call: its input, channel axis and per-channel tensors (qualified names; ``None`` absent)."""

    data: str  # its input, channels on axis 1
    weight: str | None
    bias: str | None
    running_mean: str | None
    running_var: str | None
    use_input_stats: bool  # normalises by each sample's statistics (else by the running ones)
    module: str | None  # an nn.InstanceNorm*d whose num_features follows the channel count

    @property
    def params(self) -> tuple[str, ...]:
        """Every per-channel tensor, resliced together."""
        names = (self.weight, self.bias, self.running_mean, self.running_var)
        return tuple(name for name in names if name is not None)


class InstanceNormHandler(OpHandler[InstanceNorm]):
    """Channel ``c`` in, channel ``c`` out: a per-channel layer whose statistics read channel ``c`` alone."""

    role = InstanceNorm

    def recognise(self, node: fx.Node, context: Context, data: Any) -> InstanceNorm | Unknown:
        source = data_name(node)
        if source is None:
            return Unknown("instance_norm of something other than a tensor")
        if node.op == "call_function":
            arguments = data if isinstance(data, InstanceNormArguments) else F_INSTANCE_NORM
            return _functional_instance_norm(node, source, arguments)
        name = str(node.target)
        module = context.graph_module.get_submodule(name)
        assert isinstance(module, _InstanceNorm)  # the table routes only InstanceNorm modules here
        if len(shape(node.args[0])) == module._get_no_batch_dim():
            return Unknown("InstanceNorm of an unbatched input (channels on axis 0)")
        use_input_stats = module.training or not module.track_running_stats
        if not use_input_stats and (module.running_mean is None or module.running_var is None):
            return Unknown("InstanceNorm tracking running statistics without any")
        tracked = module.running_mean is not None and module.running_var is not None
        return InstanceNorm(
            data=source, weight=tensor_name(module, name, "weight"), bias=tensor_name(module, name, "bias"),
            running_mean=f"{name}.running_mean" if tracked else None,
            running_var=f"{name}.running_var" if tracked else None, use_input_stats=use_input_stats, module=name,
        )  # fmt: skip

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: InstanceNorm) -> bool:
        source = walk.layout_on(role.data, 1)
        if source is None or source.repeat != 1:
            return False
        count = len(source.ids)
        if any(walk.tensor(name).shape[0] != count for name in role.params):
            return False
        no_bias = torch.ones(count, dtype=torch.bool) if role.bias is None else walk.tensor(role.bias).eq(0)
        zero_weight = walk.tensor(role.weight).eq(0) if role.weight else torch.zeros(count, dtype=torch.bool)
        masked = no_bias & zero_weight  # 0 * (normalised) + 0, whatever it reads
        if role.use_input_stats:  # (0 - 0) / sqrt(0 + eps) * weight + bias = bias
            keeps_zero = no_bias
        else:  # (0 - mean) / sqrt(var + eps) * weight + bias
            assert role.running_mean is not None  # recognise requires running statistics without input stats
            keeps_zero = no_bias & (walk.tensor(role.running_mean).eq(0) | zero_weight)
        zeros_in = torch.tensor(walk.zeros[role.data], dtype=torch.bool)
        walk.set_output(node, source, tuple((masked | (zeros_in & keeps_zero)).tolist()))
        return True

    def rewrite(self, name: str, role: InstanceNorm, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)
        if rows is None:
            return
        for param in role.params:
            updates.keep(param, 0, rows, context.size(name))
        updates.attr(role.module, "num_features", len(rows))

    def masking(self, role: InstanceNorm) -> Masking:
        if role.weight is not None:  # masked with the producer's rows: weight and bias zero, so is its output
            return Masking(
                carry=Carry.PER_CHANNEL, per_channel_weight=role.weight, per_channel_input=role.data, ranks_after=True
            )
        if role.bias is None and role.use_input_stats:  # a zero channel stays zero: the mask passes
            return Masking(carry=Carry.THROUGH, ranks_after=True)
        return Masking(ranks_after=True)  # a running mean, or a bias nothing masks, revives the channel

    def output_weight(self, role: InstanceNorm) -> str | None:
        return role.weight

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if not isinstance(module, _InstanceNorm):
            return []
        sizes = [axis_size(t, 0) for t in (module.weight, module.running_mean) if t is not None]
        return implied_mismatches(module, {"num_features": sizes[0] if sizes else None})


def _functional_instance_norm(node: fx.Node, source: str, arguments: InstanceNormArguments) -> InstanceNorm | Unknown:
    """``F.instance_norm`` (symbolic tracing), ``torch.instance_norm`` and ``aten.instance_norm`` (``torch.export``)."""
    tensors = arguments.tensors(node)
    if not all(t is None or is_get_attr(t) for t in tensors):
        return Unknown(
            "instance_norm tensors that are not plain attributes read by this node alone (get_attr) cannot be resliced"
        )
    weight, bias, mean, var = (str(t.target) if t is not None else None for t in tensors)
    use_input_stats = arg(node, arguments.use_input_stats, "use_input_stats", True)
    if not isinstance(use_input_stats, bool):
        return Unknown("instance_norm whose use_input_stats is not a constant")
    if not use_input_stats and (mean is None or var is None):
        return Unknown("instance_norm without input statistics nor running ones")
    owner = next((name.rpartition(".")[0] for name in (weight, mean) if name is not None), None)
    module = owner if owner is not None and isinstance(owner_module(node, owner), _InstanceNorm) else None
    return InstanceNorm(
        data=source, weight=weight, bias=bias, running_mean=mean, running_var=var,
        use_input_stats=use_input_stats, module=module,
    )  # fmt: skip


def add_routes(table: HandlerTable) -> None:
    """The modules, the functions and the aten overload (``torch.export``'s graphs) go to one handler."""
    table.add_handler(InstanceNormHandler())
    table.add(InstanceNorm, INSTANCE_NORM_MODULES + (F.instance_norm,))
    table.add(InstanceNorm, (torch.instance_norm, torch.ops.aten.instance_norm.default), ATEN_INSTANCE_NORM)
