"""Elementwise ops (``add``, ``sub``, ``mul``, ``div``, ``addcmul``) and ``cat``.

- :class:`Elementwise` channel ``i`` of every full-width operand is merged into channel ``i``: their ids are *tied*
  (one channel class, kept or removed as a whole); an operand broadcast along channels is read whole.
- :class:`Concat` concatenates channel spaces along the channel axis; along another axis it ties them like ``add``.
"""

from __future__ import annotations

import enum
import numbers
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx

from ..layouts import Layout
from .base import Context, OpHandler, arg, is_tensor, shape
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk


class Operation(enum.Enum):
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    ADDCMUL = "addcmul"  # input + value * tensor1 * tensor2 (timm's Affine: ResMLP)


ELEMENTWISE_FUNCTIONS = {
    operator.add: Operation.ADD, operator.iadd: Operation.ADD, torch.add: Operation.ADD,
    operator.sub: Operation.SUB, operator.isub: Operation.SUB, torch.sub: Operation.SUB,
    operator.mul: Operation.MUL, operator.imul: Operation.MUL, torch.mul: Operation.MUL,
    operator.truediv: Operation.DIV, operator.itruediv: Operation.DIV, torch.div: Operation.DIV,
    torch.addcmul: Operation.ADDCMUL,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "add": Operation.ADD, "add_": Operation.ADD, "sub": Operation.SUB, "sub_": Operation.SUB,
    "mul": Operation.MUL, "mul_": Operation.MUL, "div": Operation.DIV, "div_": Operation.DIV,
    "addcmul": Operation.ADDCMUL, "addcmul_": Operation.ADDCMUL,
}  # fmt: skip
CONCAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)


@dataclass(frozen=True)
class Elementwise:
    operation: Operation


@dataclass(frozen=True)
class Concat:
    inputs: tuple[str, ...]
    dim: int


class ElementwiseHandler(OpHandler[Elementwise]):
    """The table's data for an elementwise target is its :class:`Operation`."""

    role = Elementwise

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Elementwise:
        return Elementwise(data)

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Elementwise) -> bool | None:
        out_shape = shape(node)
        operands = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
        reference = next((a for a in operands if a.name in walk.layouts and _full(walk, a, node)), None)
        if reference is None:
            return False if any(a.name in walk.layouts for a in operands) else None
        ref = walk.layouts[reference.name]
        out_axis = ref.axis + len(out_shape) - len(shape(reference))
        names, layouts = [], []
        for operand in operands:
            axis = out_axis - (len(out_shape) - len(shape(operand)))
            if axis < 0 or shape(operand)[axis] != out_shape[out_axis]:
                walk.read_all(node.name, operand.name)  # broadcast along channels: reads all of its own
                continue
            layout = walk.layout_on(operand.name, axis, fixed=operand.op != "get_attr")
            if layout is None or layout.repeat != ref.repeat:
                return False
            names.append(operand.name)
            layouts.append(layout)
        walk.tie(node, layouts, out_axis, _zeros(walk, node, names, role.operation))
        return None


def _full(walk: ChannelWalk, operand: fx.Node, node: fx.Node) -> bool:
    layout, out_shape = walk.layouts[operand.name], shape(node)
    out_axis = layout.axis + len(out_shape) - len(shape(operand))
    return 0 <= out_axis < len(out_shape) and shape(operand)[layout.axis] == out_shape[out_axis]


def _zeros(walk: ChannelWalk, node: fx.Node, names: list[str], operation: Operation) -> tuple[bool, ...]:
    """Which channels of an elementwise result are exactly zero."""
    count = len(walk.zeros[names[0]])
    if operation is Operation.ADDCMUL:
        added, factor, other = (_operand_zeros(walk, node, names, position, count) for position in range(3))
        scaled_to_zero = arg(node, 3, "value", 1) == 0
        return tuple(a and (f or o or scaled_to_zero) for a, f, o in zip(added, factor, other))
    if operation is Operation.DIV:
        numerator = node.args[0]
        if isinstance(numerator, fx.Node) and numerator.name in names:
            return walk.zeros[numerator.name]
        return (False,) * count
    columns = zip(*(walk.zeros[name] for name in names))
    scalars = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, numbers.Number)]
    if operation is Operation.MUL:
        if any(s == 0 for s in scalars):
            return (True,) * count
        return tuple(any(column) for column in columns)
    broadcasts = any(n.name not in names and is_tensor(n) for n in node.all_input_nodes)
    if broadcasts or any(s != 0 for s in scalars):
        return (False,) * count
    return tuple(all(column) for column in columns)


def _operand_zeros(walk: ChannelWalk, node: fx.Node, names: list[str], position: int, count: int) -> tuple[bool, ...]:
    """The zero channels of positional operand ``position`` (none known for one broadcast along channels)."""
    operand = arg(node, position, ("input", "tensor1", "tensor2")[position])
    if isinstance(operand, fx.Node) and operand.name in names:
        return walk.zeros[operand.name]
    return (isinstance(operand, numbers.Number) and operand == 0,) * count


class ConcatHandler(OpHandler[Concat]):
    role = Concat

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Concat | Unknown:
        tensors = arg(node, 0, "tensors")
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
            return Unknown("cat of something other than a list of tensors")
        dim = arg(node, 1, "dim", 0)
        return Concat(tuple(t.name for t in tensors), dim % len(shape(node)))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Concat) -> bool | None:
        known = [walk.layouts[name] for name in role.inputs if name in walk.layouts]
        if not known:
            return None
        axis = known[0].axis
        layouts = [walk.layout_on(name, axis) for name in role.inputs]
        if any(layout is None or layout.repeat != 1 for layout in layouts):
            return False
        present = [layout for layout in layouts if layout is not None]
        if role.dim == axis:
            ids = tuple(i for layout in present for i in layout.ids)
            zeros = tuple(z for name in role.inputs for z in walk.zeros[name])
            walk.set_output(node, Layout(role.dim, ids), zeros)
            return None
        columns = zip(*(walk.zeros[name] for name in role.inputs))  # another axis: channel i of each input merge
        walk.tie(node, present, axis, tuple(all(column) for column in columns))
        return None
