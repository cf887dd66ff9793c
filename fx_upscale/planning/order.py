"""Stage 2 of planning a segment: the ordering problem, its solution, and each tensor's physical layout.

:func:`order_problem` describes the segment to ``ordering.py`` (units of channels that travel together, each tensor
as blocks of units, each consumer as the positions it needs); :func:`physical_layouts` turns the chosen orders
into every tensor's kept channels in physical order. ``policy.reorder`` chooses orders that minimise copies (mode
``upscale``); otherwise every unit keeps its original order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..layouts import Read
from ..ops import Grouped
from ..ordering import Block, OrderProblem, Position, Reader, choose_orders, physical_layout
from .context import SegmentContext
from .keep import KeptChannels

PositionMap = Mapping[Position, int]  # (block, class) -> the position in the tensor's original layout


@dataclass(frozen=True, kw_only=True)
class Ordering:
    problem: OrderProblem
    positions: Mapping[str, PositionMap]  # per tensor of the segment
    layouts: Mapping[str, tuple[Position, ...]]  # per tensor: its kept positions in physical order
    physical: Mapping[str, tuple[int, ...]]  # per tensor: its kept original channels in physical order


def order_channels(context: SegmentContext, kept: KeptChannels) -> Ordering:
    problem, positions = order_problem(context, kept)
    orders = choose_orders(problem) if context.policy.reorder else problem.units
    layouts, physical = {}, {}
    for index, name in enumerate(context.segment.tensors):
        layout = tuple(physical_layout(problem.tensors[index], orders, problem.pinned))
        layouts[name] = layout
        physical[name] = tuple(positions[name][p] for p in layout)
    return Ordering(problem=problem, positions=positions, layouts=layouts, physical=physical)


def order_problem(context: SegmentContext, kept: KeptChannels) -> tuple[OrderProblem, dict[str, PositionMap]]:
    unit_of, unit_classes = _units(context)
    pinned = {unit_of[c] for c in context.pinned | _group_bound_classes(context, kept.consumer_reads)}
    tensors: list[tuple[Block, ...]] = []
    positions: dict[str, PositionMap] = {}
    by_ids: dict[tuple[int, ...], tuple[list[Block], dict[Position, int], set[int]]] = {}  # split a layout once
    for name in context.segment.tensors:
        ids = context.analysis.layouts[name].ids
        if ids not in by_ids:
            by_ids[ids] = _blocks(context, name, unit_of, unit_classes, kept.kept)
        blocks, tensor_positions, invalid = by_ids[ids]
        pinned |= invalid
        tensors.append(tuple(blocks))
        positions[name] = tensor_positions
    units = tuple(tuple(c for c in classes if c in kept.kept) for classes in unit_classes)
    tensor_index = {name: index for index, name in enumerate(context.segment.tensors)}
    readers = []
    for read in kept.consumer_reads:
        needed = needed_positions(read, positions[read.source], kept.kept)
        absorbed = read.reader in context.absorbable  # costs no copy: fewer views is all an order can win
        bytes_per_channel = read.elements_per_channel * read.element_size
        readers.append(Reader(tensor_index[read.source], needed, bytes_per_channel, absorbed))
    return OrderProblem(units, frozenset(pinned), tuple(tensors), tuple(readers)), positions


def needed_positions(read: Read, positions: PositionMap, kept: frozenset[int]) -> frozenset[Position]:
    """The kept positions ``read`` needs; a consumer needing nothing still reads one channel."""
    wanted = {p for p, need in enumerate(read.needed) if need}
    needed = frozenset(key for key, p in positions.items() if p in wanted and key[1] in kept)
    available = [(p, key) for key, p in positions.items() if key[1] in kept]
    if needed or not available:
        return needed
    return frozenset({min(available)[1]})


def _units(context: SegmentContext) -> tuple[dict[int, int], list[list[int]]]:
    """Units: classes with the same set of owners travel together."""
    unit_index: dict[frozenset[str], int] = {}
    unit_of: dict[int, int] = {}
    unit_classes: list[list[int]] = []
    for c in context.segment.classes:
        key = context.owners_of[c]
        if key not in unit_index:
            unit_index[key] = len(unit_classes)
            unit_classes.append([])
        unit_of[c] = unit_index[key]
        unit_classes[unit_of[c]].append(c)
    return unit_of, unit_classes


def _group_bound_classes(context: SegmentContext, consumer_reads: tuple[Read, ...]) -> set[int]:
    """Classes whose order must stay the original one: grouped outputs and the inputs grouped convs read."""
    analysis = context.analysis
    bound: set[int] = set()
    for owner in context.segment.owners:
        if isinstance(analysis.roles[owner], Grouped):
            bound.update(analysis.classes(owner))
    for read in consumer_reads:
        if read.groups > 1:
            bound.update(analysis.classes(read.source))
    return bound


def _blocks(
    context: SegmentContext, name: str, unit_of: dict[int, int], unit_classes: list[list[int]], kept: frozenset[int]
) -> tuple[list[Block], dict[Position, int], set[int]]:
    """Split a tensor into runs of one unit each. A run holding part of a unit, or all of it in an order other
    than the unit's own (a slice taking the end of one copy of a unit in a ``cat`` and the start of the next),
    pins that unit: every tensor then keeps its own original order, which is right whatever made it."""
    classes = context.analysis.classes(name)
    runs: list[list[int]] = []
    seen: set[int] = set()
    for position, c in enumerate(classes):
        if not runs or unit_of[classes[runs[-1][0]]] != unit_of[c] or c in seen:
            runs.append([])
            seen = set()
        runs[-1].append(position)
        seen.add(c)
    blocks, positions, invalid = [], {}, set()
    for index, run in enumerate(runs):
        unit = unit_of[classes[run[0]]]
        if [classes[p] for p in run] != unit_classes[unit]:
            invalid.add(unit)  # part of the unit, or all of it in another order (a slice across a cat)
        blocks.append(Block(unit, tuple(classes[p] for p in run if classes[p] in kept)))
        positions.update({(index, classes[p]): p for p in run})
    return blocks, positions, invalid
