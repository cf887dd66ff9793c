"""PReLU: ``max(0, x) + weight[c] * min(0, x)``, the module ``nn.PReLU`` and ``F.prelu``.

With one weight per channel the weight is resliced with the channels (and ``num_parameters`` follows); with a
single shared weight it is an activation like any other. Either way channel ``c`` of the input becomes channel
``c`` of the output, and ``PReLU(0) == 0``: a pruned channel stays prunable after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .base import Carry, Context, Masking, Mismatch, OpHandler, RewriteContext, Updates, arg, data_name, is_get_attr
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable


@dataclass(frozen=True, kw_only=True)
class PReLU:
    data: str
    weight: str  # qualified name of its weight
    per_channel: bool  # one weight per channel (along axis 1), else one shared weight
    module: str | None  # an nn.PReLU whose num_parameters follows the channel count


class PReLUHandler(OpHandler[PReLU]):
    role = PReLU

    def recognise(self, node: fx.Node, context: Context, data: Any) -> PReLU | Unknown:
        source = data_name(node)
        if source is None:
            return Unknown("prelu of something other than a tensor")
        if node.op == "call_module":
            name = str(node.target)
            weight = context.graph_module.get_submodule(name).get_parameter("weight")
            return PReLU(data=source, weight=f"{name}.weight", per_channel=weight.numel() > 1, module=name)
        weight_node = arg(node, 1, "weight")
        if not is_get_attr(weight_node):
            return Unknown(
                "prelu weights that are not plain attributes read by this node alone (get_attr) cannot be resliced"
            )
        count = context.tensor(str(weight_node.target)).numel()
        return PReLU(data=source, weight=str(weight_node.target), per_channel=count > 1, module=None)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: PReLU) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if role.per_channel and (source.axis != 1 or source.repeat != 1):
            return False  # per-channel weights apply along axis 1
        walk.set_output(node, source, walk.zeros[role.data])
        return None

    def rewrite(self, name: str, role: PReLU, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)
        if rows is not None and role.per_channel:
            updates.keep(role.weight, 0, rows, context.size(name))
            updates.attr(role.module, "num_parameters", len(rows))

    def masking(self, role: PReLU) -> Masking:
        return Masking(carry=Carry.THROUGH, ranks_after=True)

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if isinstance(module, nn.PReLU) and module.num_parameters != module.weight.numel():
            return [Mismatch("num_parameters", module.num_parameters, module.weight.numel())]
        return []


def add_routes(table: HandlerTable) -> None:
    """The module, the function and the aten overload (``torch.export``'s graphs) go to one handler."""
    table.add_handler(PReLUHandler())
    table.add(PReLU, (nn.PReLU, F.prelu, torch.prelu, torch.ops.aten.prelu.default))
