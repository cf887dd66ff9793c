"""GroupNorm: ``nn.GroupNorm``, ``F.group_norm`` and ``torch.group_norm`` / its aten overload.

GroupNorm(G, C) cuts the channels of each sample into G contiguous groups of ``C // G`` and normalises each group by
its own statistics, then scales each channel on its own (``* weight[c] + bias[c]``). The statistics of a group read
every channel of the group: removing one channel of a group changes every other channel of it, removing a whole
group changes no other group. Output channel ``c`` is zero when its bias is and its weight is, or its whole group
reads zeros (``(0 - 0) / sqrt(0 + eps) * w + b = b``).

The rules, all exact, by the group width ``C // G``:

- width 1 (``GroupNorm(C, C)``): each channel is its own group, a per-channel layer like InstanceNorm. Channels may be
  removed (``num_groups`` drops with them) or reordered freely; masking carries an output mask through its weight.
- wider groups, by default: GroupNorm reads every channel of its input, as LayerNorm does. Nothing that reaches it is
  removed and masking never chooses those channels (``Masking(reads_every_channel=True)``); its read is a grouped
  read (``groups=G``), so the planner keeps its input's channels in their original order, the groups contiguous.
- wider groups, with ``GroupNormHandler(whole_groups=True)`` (opt-in, in a table of one's own): each group's
  channels are tied into one channel class, so a group is kept whole or removed whole (``num_groups`` drops, the
  weight and bias are resliced), in its original order. A spec (or ``mask(method="constrained")``, which chooses
  classes) that zeroes whole groups removes them. Unconstrained ``mask()`` chooses single channels, which the export
  then keeps unless they make whole groups (exactly, but for nothing): that is why this rule is not the default.

Start reading at :class:`GroupNormHandler`; :func:`add_routes` adds it to a handler table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedGraphError, describe_node
from ..layouts import Layout
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
    is_get_attr,
    owner_module,
    shape,
)
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable


@dataclass(frozen=True, kw_only=True)
class GroupNorm:
    """One GroupNorm call: its input (channels on axis 1), its channel and group counts, its per-channel tensors."""

    data: str
    channels: int
    groups: int
    weight: str | None  # qualified names; ``None`` when absent
    bias: str | None
    module: str | None  # an nn.GroupNorm whose num_groups and num_channels follow the kept channels
    functional: bool = False  # F.group_norm / aten.group_norm: its num_groups argument (index 1) follows

    @property
    def width(self) -> int:
        """Channels per group."""
        return self.channels // self.groups


class GroupNormHandler(OpHandler[GroupNorm]):
    """Groups of one channel are per-channel; wider groups are read whole (or, with ``whole_groups``, tied into one
    channel class each).

    Whole-group pruning as the default would need ``mask()`` to choose whole groups on its own (unconstrained, a
    layer's positions sharing one channel class chosen together: ``masking/choosing.py``), or the planner to know a
    read whose ``groups`` blocks are all-or-nothing (``planning/keep.py`` keeping every class of a block when one is
    kept, where grouped convolutions pad groups to equal widths instead; ``planning/access.py`` giving such a reader
    a full read of whatever is kept), so that the read can tell masking what it reads."""

    role = GroupNorm

    def __init__(self, *, whole_groups: bool = False) -> None:
        self.whole_groups = whole_groups

    def recognise(self, node: fx.Node, context: Context, data: Any) -> GroupNorm | Unknown:
        source = data_name(node)
        if source is None:
            return Unknown("group_norm of something other than a tensor")
        if node.op == "call_function":
            return _functional_group_norm(node, source)
        name = str(node.target)
        module = context.graph_module.get_submodule(name)
        assert isinstance(module, nn.GroupNorm)  # the table routes only nn.GroupNorm modules here
        weight, bias = (f"{name}.{a}" if getattr(module, a, None) is not None else None for a in ("weight", "bias"))
        return GroupNorm(
            data=source, channels=module.num_channels, groups=module.num_groups, weight=weight, bias=bias, module=name
        )

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: GroupNorm) -> bool:
        source = walk.layout_on(role.data, 1)
        if source is None or source.repeat != 1 or len(source.ids) != role.channels or role.channels % role.groups:
            return False
        count = role.channels
        if any(walk.tensor(p).shape[0] != count for p in (role.weight, role.bias) if p):
            return False
        zero_groups = torch.tensor(walk.zeros[role.data], dtype=torch.bool).reshape(role.groups, -1).all(dim=1)
        zero_in = zero_groups.repeat_interleave(role.width)  # its whole group reads zeros
        zero_weight = walk.tensor(role.weight).eq(0) if role.weight else torch.zeros(count, dtype=torch.bool)
        no_bias = walk.tensor(role.bias).eq(0) if role.bias else torch.ones(count, dtype=torch.bool)
        zeros = tuple((no_bias & (zero_weight | zero_in)).tolist())
        if role.width > 1 and self.whole_groups:
            _tie_groups(walk, node, source, role.width, zeros)
        elif role.width > 1:
            walk.add_read(node.name, role.data, (True,) * count, groups=role.groups)
        walk.set_output(node, source, zeros)
        return True

    def rewrite(self, name: str, role: GroupNorm, context: RewriteContext, updates: Updates) -> None:
        rows, size = context.physical.get(name), context.size(name)
        if rows is None or rows == tuple(range(size)):
            return
        groups = _kept_groups(rows, role.width)
        if groups is None:
            raise UnsupportedGraphError(
                f"{describe_node(context.analysis.nodes[name])}: the plan keeps channels {list(rows[:12])} of "
                f"its {size} (in {role.groups} groups of {role.width}), which are not equal runs of distinct "
                "groups; GroupNorm cannot compute them exactly. This is a planner bug: please report it"
            )
        for param in (role.weight, role.bias):
            if param is not None:
                updates.keep(param, 0, rows, size)
        updates.attr(role.module, "num_channels", len(rows))
        updates.attr(role.module, "num_groups", groups)
        if role.functional:
            updates.arg(name, 1, "num_groups", groups)

    def masking(self, role: GroupNorm) -> Masking:
        if role.width > 1 and not self.whole_groups:
            return Masking(reads_every_channel=True)
        if role.weight is not None:  # masked with the producer's rows: weight and bias zero, so is its output
            return Masking(carry=Carry.PER_CHANNEL, per_channel_weight=role.weight, per_channel_input=role.data)
        if role.width == 1 and role.bias is None:  # a zero channel is a zero group: it stays zero
            return Masking(carry=Carry.THROUGH)
        return Masking()

    def output_weight(self, role: GroupNorm) -> str | None:
        return role.weight

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if not isinstance(module, nn.GroupNorm):
            return []
        found = []
        channels = axis_size(module.weight, 0) if module.weight is not None else None
        if channels is not None and module.num_channels != channels:
            found.append(Mismatch("num_channels", module.num_channels, channels))
        if module.num_groups < 1 or module.num_channels % module.num_groups:
            found.append(Mismatch("num_groups", module.num_groups, f"a divisor of num_channels={module.num_channels}"))
        return found


def _tie_groups(walk: ChannelWalk, node: fx.Node, source: Layout, width: int, zeros: tuple[bool, ...]) -> None:
    """Tie every channel of each group to the group's first: one channel class per group, kept or removed whole.

    The planner then keeps each group's channels together and in order: a tensor holding one class at several
    positions splits into single-position runs that differ from their unit, which pins the unit's order
    (``planning/order.py``, ``_blocks``); ``tests/test_group_norm.py`` checks that it does."""
    starts = range(0, len(source.ids), width)
    firsts = tuple(source.ids[s] for s in starts for _ in range(width - 1))
    others = tuple(source.ids[s + k] for s in starts for k in range(1, width))
    walk.tie(node, [Layout(source.axis, firsts), Layout(source.axis, others)], source.axis, zeros)


def _kept_groups(rows: tuple[int, ...], width: int) -> int | None:
    """How many groups ``rows`` (kept channels in physical order) fill: runs of one equal length, each run from one
    original group of ``width`` channels and no group in two runs (groups may come in any order: each group's
    statistics, weight and bias move with it); ``None`` if they are not such runs.

    >>> _kept_groups((0, 1, 4, 5), 2), _kept_groups((0, 2, 4, 6), 2), _kept_groups((4, 5, 1, 0), 2)
    (2, 4, 2)
    >>> _kept_groups((0, 1, 2, 4), 2), _kept_groups((0, 2, 3), 2), _kept_groups((0, 2, 1, 3), 2)
    (None, None, None)
    """
    runs: list[list[int]] = []
    for row in rows:
        if runs and runs[-1][0] // width == row // width:
            runs[-1].append(row)
        else:
            runs.append([row])
    groups = [run[0] // width for run in runs]
    if len({len(run) for run in runs}) != 1 or len(set(groups)) != len(groups):
        return None
    return len(runs)


def _functional_group_norm(node: fx.Node, source: str) -> GroupNorm | Unknown:
    """``F.group_norm`` (symbolic tracing), ``torch.group_norm`` and ``aten.group_norm`` (``torch.export``): the
    same arguments in the same places (input, num_groups, weight, bias, eps)."""
    groups = arg(node, 1, "num_groups")
    weight, bias = arg(node, 2, "weight"), arg(node, 3, "bias")
    dims = shape(node.args[0])
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or len(dims) < 2:
        return Unknown("group_norm whose num_groups is not a constant, or of a tensor without channels")
    if not all(p is None or is_get_attr(p) for p in (weight, bias)):
        return Unknown(
            "group_norm weights that are not plain attributes read by this node alone (get_attr) cannot be resliced"
        )
    names = [str(p.target) if p is not None else None for p in (weight, bias)]
    owner = next((name.rpartition(".")[0] for name in names if name is not None), None)
    module = owner if owner is not None and isinstance(owner_module(node, owner), nn.GroupNorm) else None
    return GroupNorm(
        data=source, channels=dims[1], groups=groups, weight=names[0], bias=names[1], module=module, functional=True
    )


def add_routes(table: HandlerTable) -> None:
    """The module, the functions and the aten overload (``torch.export``'s graphs) go to one handler. For
    whole-group pruning: ``table.add_handler(GroupNormHandler(whole_groups=True))`` on a copy of the default table."""
    table.add_handler(GroupNormHandler())
    table.add(GroupNorm, (nn.GroupNorm, F.group_norm, torch.group_norm, torch.ops.aten.group_norm.default))
