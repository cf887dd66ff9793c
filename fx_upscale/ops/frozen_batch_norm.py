"""torchvision's ``FrozenBatchNorm2d``: a per-channel affine map held in four buffers.

``torchvision.ops.misc.FrozenBatchNorm2d`` (the norm of torchvision's pretrained detection backbones) computes
``x * scale + shift`` with ``scale = weight * (running_var + eps).rsqrt()`` and
``shift = bias - running_mean * scale``, where ``weight``, ``bias``, ``running_mean`` and ``running_var`` are buffers
with one entry per channel (axis 1). Channel ``c`` of its input becomes channel ``c`` of its output; the four
buffers are resliced with the channels. Output channel ``c`` is zero where ``shift[c] == 0`` and the input channel
is zero, or where ``scale[c] == 0`` and ``shift[c] == 0`` whatever the input.

- ``symbolic_trace``: the module is traced as a leaf (the route registers it), so one ``call_module`` node holds
  it, and :class:`FrozenBatchNormHandler` owns it.
- ``torch.export``: its aten graph computes ``scale`` and ``shift`` from ``get_attr`` buffers on every call;
  :mod:`fx_upscale.recompose` rewrites that arithmetic into ``aten.batch_norm`` over the four buffers (equal up to
  rounding), which the per-channel handler owns: no handler of this module is involved.

``mask()`` carries an output mask through it: a :class:`~fx_upscale.PruneSpec` names its ``weight`` buffer like a
BatchNorm's weight parameter (:func:`fx_upscale.spec.nameable_tensors`), and masking channel ``c`` zeroes
``weight[c]`` and ``bias[c]``, so ``scale[c] == shift[c] == 0`` and the channel is zero after the norm (without it,
a masked filter would become ``shift[c]`` and stay); in a ``torch.export`` graph the recomposed ``batch_norm`` carries
it the same way. torchvision is optional: without it, :func:`add_routes` adds nothing.

Start reading at :class:`FrozenBatchNormHandler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from .base import Carry, Context, Masking, Mismatch, OpHandler, RewriteContext, Updates, axis_size, data_name
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

BUFFERS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True, kw_only=True)
class FrozenBatchNorm:
    """One ``FrozenBatchNorm2d`` call: its input (channels on axis 1) and its module's qualified name."""

    data: str
    module: str

    @property
    def buffers(self) -> tuple[str, ...]:
        """Qualified names of its per-channel buffers (weight, bias, running_mean, running_var)."""
        return tuple(f"{self.module}.{name}" for name in BUFFERS)


class FrozenBatchNormHandler(OpHandler[FrozenBatchNorm]):
    role = FrozenBatchNorm

    def recognise(self, node: fx.Node, context: Context, data: Any) -> FrozenBatchNorm | Unknown:
        source = data_name(node)
        if source is None:
            return Unknown("FrozenBatchNorm2d of something other than a tensor")
        return FrozenBatchNorm(data=source, module=str(node.target))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: FrozenBatchNorm) -> bool:
        source = walk.layout_on(role.data, 1)
        if source is None or source.repeat != 1:
            return False
        weight, bias, mean, var = (walk.tensor(name) for name in role.buffers)
        if any(t.dim() != 1 or t.shape[0] != len(source.ids) for t in (weight, bias, mean, var)):
            return False
        eps = getattr(walk.gm.get_submodule(role.module), "eps", 1e-5)
        scale, shift = affine(weight, bias, mean, var, eps)
        keeps_zero = shift.eq(0)
        zeros_in = torch.tensor(walk.zeros[role.data], dtype=torch.bool)
        walk.set_output(node, source, tuple((keeps_zero & (zeros_in | scale.eq(0))).tolist()))
        return True

    def rewrite(self, name: str, role: FrozenBatchNorm, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)
        if rows is None:
            return
        for buffer in role.buffers:
            updates.keep(buffer, 0, rows, context.size(name))

    def masking(self, role: FrozenBatchNorm) -> Masking:
        """Carries a filter's mask on, masking its weight and bias buffers (HRank ranks a producer's channels after
        the norm, as after BatchNorm)."""
        return Masking(
            carry=Carry.PER_CHANNEL, per_channel_weight=role.buffers[0], per_channel_input=role.data, ranks_after=True
        )

    def output_weight(self, role: FrozenBatchNorm) -> str | None:
        return role.buffers[0]

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        """Its four buffers hold one entry per channel each: as many as its weight."""
        if not is_frozen_batch_norm(module):
            return []
        count = axis_size(module.get_buffer("weight"), 0)
        sizes = {name: axis_size(module.get_buffer(name), 0) for name in BUFFERS[1:]}
        return [Mismatch(f"{name}.shape[0]", size, count) for name, size in sizes.items() if size != count]


def affine(
    weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` as ``FrozenBatchNorm2d.forward`` computes them (one entry per channel)."""
    scale = weight * (var + eps).rsqrt()
    return scale, bias - mean * scale


QUALNAME = "torchvision.ops.misc.FrozenBatchNorm2d"


def is_frozen_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` is torchvision's FrozenBatchNorm2d, known by name: fx_upscale never imports torchvision."""
    return any(f"{t.__module__}.{t.__qualname__}" == QUALNAME for t in type(module).__mro__)


def add_routes(table: HandlerTable) -> None:
    """Add the handler, and route ``FrozenBatchNorm2d`` (traced as a leaf) to it by its qualified name."""
    table.add_handler(FrozenBatchNormHandler())
    table.add_module_qualname(FrozenBatchNorm, QUALNAME, leaf=True)
