"""Sub-pixel shuffles: ``nn.PixelShuffle`` / ``F.pixel_shuffle`` and ``nn.PixelUnshuffle`` /
``F.pixel_unshuffle``, and their aten overloads (``torch.export``'s graphs).

With factor ``r``, ``pixel_shuffle`` moves input channels ``c*r² .. c*r² + r² - 1`` into the ``r × r`` sub-pixels
of output channel ``c``; ``pixel_unshuffle`` is the inverse: input channel ``c`` becomes output channels
``c*r² .. c*r² + r² - 1``. Both work on axis -3 (``(*, C, H, W)``).

- Unshuffle: output channel ``c`` spans ``r²`` consecutive entries of the channel axis, as ``flatten`` makes a
  channel span its features: the output's layout has the input's ids with ``repeat`` times ``r²``.
- Shuffle: the ``r²`` input channels of one output channel are kept or removed together, in their order: they
  are tied into one channel class (:meth:`ChannelWalk.tie`) and the output carries the first id of each group.
  A tensor holding a class at several positions pins its order (``planning/order.py``: a run holding part of a
  unit), so the producer keeps its original channel order and each kept group stays whole and in place. An
  input whose channels already span ``k`` entries (``repeat``, after an unshuffle) ties ``r² / k`` of them, or
  keeps ``k / r²`` entries per output channel.

Neither keeps channel positions (a channel moves to other positions of the channel axis), so an output-side mask
is not carried past them and HRank does not rank channels after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..layouts import Layout
from .base import Context, OpHandler, arg, data_name, is_tensor, shape
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

aten = torch.ops.aten


@dataclass(frozen=True, kw_only=True)
class PixelShuffle:
    data: str
    factor: int  # r: the upscale (shuffle) or downscale (unshuffle) factor
    inverse: bool  # pixel_unshuffle


class PixelShuffleHandler(OpHandler[PixelShuffle]):
    """The table's data is ``inverse``: whether the target unshuffles."""

    role = PixelShuffle

    def recognise(self, node: fx.Node, context: Context, data: Any) -> PixelShuffle | Unknown:
        source = data_name(node)
        inverse = bool(data)
        if node.op == "call_module":
            assert source is not None  # the table checked the module's one tensor input
            module = context.graph_module.get_submodule(str(node.target))
            factor = module.downscale_factor if inverse else module.upscale_factor
        else:
            if source is None or sum(is_tensor(n) for n in node.all_input_nodes) != 1:
                return Unknown("pixel shuffle with other than one tensor input")
            name = "downscale_factor" if inverse else "upscale_factor"
            factor = arg(node, 1, name)
        if not isinstance(factor, int) or factor < 1:
            return Unknown(f"pixel shuffle with a factor that is not a constant positive int: {factor!r}")
        return PixelShuffle(data=source, factor=factor, inverse=inverse)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: PixelShuffle) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.axis != len(shape(walk.nodes[role.data])) - 3:
            return False  # it shuffles axis -3 with the two after it: channels elsewhere would be moved
        zeros, square = walk.zeros[role.data], role.factor**2
        if role.inverse:
            walk.set_output(node, Layout(source.axis, source.ids, source.repeat * square), zeros)
        elif source.repeat % square == 0:  # each output channel is a part of one input channel
            walk.set_output(node, Layout(source.axis, source.ids, source.repeat // square), zeros)
        elif square % source.repeat == 0:  # each output channel gathers ``group`` whole input channels
            group = square // source.repeat
            members = [Layout(source.axis, source.ids[k::group]) for k in range(group)]
            merged = tuple(all(zeros[c : c + group]) for c in range(0, len(zeros), group))
            walk.tie(node, members, source.axis, merged)
        else:
            return False
        return None


def add_routes(table: HandlerTable) -> None:
    """The modules, the functions and the aten overloads (``torch.export``'s graphs) go to one handler."""
    table.add_handler(PixelShuffleHandler())
    shuffles = (nn.PixelShuffle, F.pixel_shuffle, torch.pixel_shuffle, aten.pixel_shuffle.default)
    table.add(PixelShuffle, shuffles, False)
    unshuffles = (nn.PixelUnshuffle, F.pixel_unshuffle, torch.pixel_unshuffle, aten.pixel_unshuffle.default)
    table.add(PixelShuffle, unshuffles, True)
