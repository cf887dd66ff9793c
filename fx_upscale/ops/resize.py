"""Resizing: ``F.interpolate``, ``nn.Upsample`` (``nn.UpsamplingNearest2d``, ``nn.UpsamplingBilinear2d``) and the
aten ``upsample_*`` overloads ``torch.export`` records (nearest, nearest-exact, linear, bilinear, bicubic,
trilinear, antialiased; ``.vec`` and ``.default``).

Every mode resizes the spatial axes (2 and after) of each channel on its own: channel ``c`` of the output is a
linear combination of the values of channel ``c`` of the input (``area`` too: an average), so a zero channel
stays zero and the channels pass through in order. Sizes and scale factors are spatial: pruning rewrites nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .base import Carry, Context, Masking, OpHandler, arg, data_name, is_tensor
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

aten = torch.ops.aten

RESIZE_MODULES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
RESIZE_FUNCTIONS = (F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)
# aten overload packet -> the mode it computes (the table's data for its overloads)
ATEN_MODES = {
    "upsample_nearest1d": "nearest", "upsample_nearest2d": "nearest", "upsample_nearest3d": "nearest",
    "_upsample_nearest_exact1d": "nearest-exact", "_upsample_nearest_exact2d": "nearest-exact",
    "_upsample_nearest_exact3d": "nearest-exact", "upsample_linear1d": "linear", "upsample_bilinear2d": "bilinear",
    "upsample_trilinear3d": "trilinear", "upsample_bicubic2d": "bicubic", "_upsample_bilinear2d_aa": "bilinear",
    "_upsample_bicubic2d_aa": "bicubic",
}  # fmt: skip


def aten_resizes() -> dict[Any, str]:
    """The ``.vec`` and ``.default`` overloads of every aten resize this torch has, each with its mode."""
    overloads: dict[Any, str] = {}
    for name, mode in ATEN_MODES.items():
        packet = getattr(aten, name, None)
        for overload in ("vec", "default"):
            if packet is not None and overload in packet.overloads():
                overloads[getattr(packet, overload)] = mode
    return overloads


@dataclass(frozen=True, kw_only=True)
class Resize:
    data: str
    mode: str  # "nearest", "bilinear" ...: what it computes, for messages (every mode maps channels alike)


class ResizeHandler(OpHandler[Resize]):
    """Channels pass through in order, zeros with them, when the channel axis is axis 1 (N, C, spatial ...). The
    table's data for an aten overload is its mode."""

    role = Resize

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Resize | Unknown:
        source = data_name(node)
        if node.op == "call_module":
            assert source is not None  # the table checked the module's one tensor input
            module = context.graph_module.get_submodule(str(node.target))
            return Resize(data=source, mode=str(getattr(module, "mode", "nearest")))
        if source is None or sum(is_tensor(n) for n in node.all_input_nodes) != 1:
            return Unknown("resize with other than one tensor input")
        mode = data if isinstance(data, str) else _function_mode(node)
        return Resize(data=source, mode=mode)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Resize) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.axis != 1:
            return False  # it resizes axes 2 and after: channels elsewhere would be resized
        walk.set_output(node, source, walk.zeros[role.data])
        return None

    def masking(self, role: Resize) -> Masking:
        return Masking(carry=Carry.THROUGH, ranks_after=True)


def _function_mode(node: fx.Node) -> str:
    if node.target is F.upsample_bilinear:
        return "bilinear"
    if node.target is F.upsample_nearest:
        return "nearest"
    return str(arg(node, 3, "mode", "nearest"))


def add_routes(table: HandlerTable) -> None:
    """The modules, the functions and the aten overloads (``torch.export``'s graphs) go to one handler."""
    table.add_handler(ResizeHandler())
    table.add(Resize, RESIZE_MODULES + RESIZE_FUNCTIONS)
    for overload, mode in aten_resizes().items():
        table.add(Resize, [overload], mode)
