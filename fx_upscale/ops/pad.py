"""Padding: ``F.pad`` (modes constant, reflect, replicate, circular), ``nn.ZeroPad*d``, ``nn.ConstantPad*d``,
``nn.ReflectionPad*d``, ``nn.ReplicationPad*d``, ``nn.CircularPad*d`` and the aten overloads ``torch.export``
records (``aten.pad``, ``aten.constant_pad_nd``, ``aten.reflection_pad*d``, ``aten.replication_pad*d``,
``aten._pad_circular``).

A pad list of ``2k`` entries pads (or, negative, crops) the last ``k`` axes, each channel on its own, as long as
the channel axis is not among them: channel ``c`` of the output is channel ``c`` of the input with a border. A
pad list long enough to pad the channel axis adds or removes channels: the node is then a barrier saying so.
Reflect, replicate, circular and a zero constant keep a zero channel zero; a non-zero constant does not (the
border of a pruned, all-zero channel is that constant), so the channels it reaches are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .base import Carry, Context, Masking, OpHandler, arg, data_name, is_tensor, shape
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

aten = torch.ops.aten

MODULE_MODES: dict[type[nn.Module], str] = {
    nn.ZeroPad1d: "constant", nn.ZeroPad2d: "constant", nn.ZeroPad3d: "constant",
    nn.ConstantPad1d: "constant", nn.ConstantPad2d: "constant", nn.ConstantPad3d: "constant",
    nn.ReflectionPad1d: "reflect", nn.ReflectionPad2d: "reflect", nn.ReflectionPad3d: "reflect",
    nn.ReplicationPad1d: "replicate", nn.ReplicationPad2d: "replicate", nn.ReplicationPad3d: "replicate",
    nn.CircularPad1d: "circular", nn.CircularPad2d: "circular", nn.CircularPad3d: "circular",
}  # fmt: skip


@dataclass(frozen=True)
class PadArguments:
    """Where a padding function holds its arguments (the table's data): a fixed ``mode``, or ``None`` to read it
    from argument ``mode_index``; the fill value of a constant pad at ``value_index``."""

    mode: str | None = None
    mode_index: int = 2
    value_index: int | None = 3


FUNCTIONAL = PadArguments()  # F.pad(input, pad, mode="constant", value=None); aten.pad alike
CONSTANT_ND = PadArguments(mode="constant", value_index=2)  # aten.constant_pad_nd(self, pad, value=0)
ATEN_FIXED = {
    "reflection_pad1d": "reflect", "reflection_pad2d": "reflect", "reflection_pad3d": "reflect",
    "replication_pad1d": "replicate", "replication_pad2d": "replicate", "replication_pad3d": "replicate",
    "_pad_circular": "circular",
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Pad:
    data: str
    mode: str  # "constant", "reflect", "replicate" or "circular"
    padded_axes: tuple[int, ...]  # axes (non-negative) whose padding is not known to be (0, 0)
    keeps_zero: bool  # a zero channel stays zero: every mode but a constant other than 0


class PadHandler(OpHandler[Pad]):
    """Channels pass through in order when the channel axis is not padded; zeros pass with them when the pad keeps
    zero. The table's data is a :class:`PadArguments`."""

    role = Pad

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Pad | Unknown:
        source = data_name(node)
        if node.op == "call_module":
            assert source is not None  # the table checked the module's one tensor input
            module = context.graph_module.get_submodule(str(node.target))
            mode = next(m for t, m in MODULE_MODES.items() if isinstance(module, t))
            value = getattr(module, "value", 0) if mode == "constant" else 0
            return _pad(source, node, tuple(cast(Sequence[int], module.padding)), mode, value)
        if source is None or sum(is_tensor(n) for n in node.all_input_nodes) != 1:
            return Unknown("padding with other than one tensor input")
        arguments = data if isinstance(data, PadArguments) else FUNCTIONAL
        pad = arg(node, 1, "pad", arg(node, 1, "padding"))
        if not isinstance(pad, Sequence) or len(pad) % 2:
            return Unknown(f"padding with a pad list that is not a list of pairs: {pad!r}")
        mode = arguments.mode or arg(node, arguments.mode_index, "mode", "constant")
        if mode not in ("constant", "reflect", "replicate", "circular"):
            return Unknown(f"padding with the mode {mode!r}")
        value = 0 if arguments.value_index is None else arg(node, arguments.value_index, "value", 0)
        return _pad(source, node, tuple(pad), mode, value)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Pad) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None
        if source.axis in role.padded_axes:
            walk.barrier(node, f"{role.mode} padding of the channel axis (axis {source.axis}) adds or removes channels")
            return None
        zeros = walk.zeros[role.data] if role.keeps_zero else (False,) * len(source.ids)
        walk.set_output(node, source, zeros)
        return None

    def masking(self, role: Pad) -> Masking:
        return Masking(carry=Carry.THROUGH, ranks_after=True)


def _pad(source: str, node: fx.Node, pad: tuple[Any, ...], mode: str, value: Any) -> Pad:
    """The role of a pad of ``pad`` (pairs for the last axes, the last axis first)."""
    ndim = len(shape(node))
    padded = tuple(
        ndim - 1 - k for k in range(len(pad) // 2) if not (pad[2 * k] == 0 and pad[2 * k + 1] == 0)
    )  # entries computed in the graph (nodes) are not known to be 0
    keeps_zero = mode != "constant" or (isinstance(value, (int, float)) and value == 0) or value is None
    return Pad(data=source, mode=mode, padded_axes=tuple(sorted(padded)), keeps_zero=keeps_zero)


def add_routes(table: HandlerTable) -> None:
    """The modules, ``F.pad`` and the aten overloads (``torch.export``'s graphs) go to one handler."""
    table.add_handler(PadHandler())
    table.add(Pad, tuple(MODULE_MODES))
    table.add(Pad, [F.pad, aten.pad.default], FUNCTIONAL)
    table.add(Pad, [aten.constant_pad_nd.default], CONSTANT_ND)
    for name, mode in ATEN_FIXED.items():
        packet = getattr(aten, name, None)
        if packet is not None and "default" in packet.overloads():
            table.add(Pad, [packet.default], PadArguments(mode=mode, value_index=None))
