"""``F.normalize``: each entry divided by the vector norm of its slice along one axis (SSD300's L2Norm, CLIP-style
embedding heads).

Over the channel axis, the norm is a sum over the channels (of ``|x| ** p``, ``p > 0``): a zero channel adds nothing
to it, so the norm reads only its input's non-zero channels (as
:class:`~fx_upscale.ops.channel_reduction.ChannelReduction` does), and channel ``c`` of the output is ``x[c]``
divided by it: zero where ``x[c]`` is. Over another axis each channel is normalised on its own (a per-channel op that
keeps zero). Nothing is resliced: ``F.normalize`` has no sizes.

In ``torch.export``'s graph ``F.normalize`` is ``linalg_vector_norm``, ``clamp_min``, ``expand_as`` and ``div``: the
norm is a channel reduction there, and :mod:`fx_upscale.recompose` drops the ``expand_as`` the division broadcasts
anyway. Start reading at :class:`NormalizeHandler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.fx as fx
import torch.nn.functional as F

from .base import Carry, Context, Masking, OpHandler, arg, data_name, shape
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable


@dataclass(frozen=True, kw_only=True)
class Normalize:
    """``F.normalize(data, p, dim)``: ``dim`` non-negative."""

    data: str
    dim: int
    order: float


class NormalizeHandler(OpHandler[Normalize]):
    role = Normalize

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Normalize | Unknown:
        source, order, dim = data_name(node), arg(node, 1, "p", 2.0), arg(node, 2, "dim", 1)
        if source is None or not isinstance(dim, int) or arg(node, 4, "out") is not None:
            return Unknown("normalize of something other than a tensor, along an axis that is not a constant")
        if not isinstance(order, (int, float)) or isinstance(order, bool):
            return Unknown(f"normalize with a norm of order {order!r}")
        return Normalize(data=source, dim=dim % len(shape(node)), order=float(order))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Normalize) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        zeros = walk.zeros[role.data]
        if source.axis == role.dim:
            if role.order <= 0 or source.repeat != 1 or source.split:
                return False  # a norm of order zero or less counts zero channels
            walk.add_read(node.name, role.data, tuple(not zero for zero in zeros))
        walk.set_output(node, source, zeros)
        return None

    def masking(self, role: Normalize) -> Masking:
        return Masking(needs_only_nonzero=True, carry=Carry.THROUGH, ranks_after=True)


def add_routes(table: HandlerTable) -> None:
    table.add_handler(NormalizeHandler())
    table.add(Normalize, (F.normalize,))
