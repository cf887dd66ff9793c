"""Channel orders: choosing, per unit of channels, the order that lets consumers read contiguous ranges.

Pure Python on ints and tuples: no torch, no fx. The planner (``planning.py``) describes one segment as an
:class:`OrderProblem`:

- a *unit* is a set of channels that always travel together (one producer's channels, or the channels of producers
  tied by ``add``); its order is ours to choose unless it is *pinned* (graph inputs, channels read by a barrier);
- a *tensor* is a sequence of *blocks*, one per unit laid out in it (a ``cat`` has several), each listing the unit's
  channels in their original order;
- a *reader* (a consumer) reads one tensor and needs a set of its ``(block, channel)`` positions; reading a
  non-contiguous set costs a gather that copies ``bytes_per_channel`` per channel (channel size x element size).

:func:`choose_orders` returns one order per unit; :func:`physical_layout` and :func:`choose_access` turn orders into
what each consumer reads (:class:`Full`, :class:`Narrow` or :class:`Gather`).

The search, per segment:

1. :func:`consecutive_orders`: readers, heaviest first (channels x bytes per channel: what a gather would
   copy), each turned into "these channels are consecutive" constraints on the units it reads; a PQ-tree per unit
   (``pqtree.py``, Booth & Lueker) accepts a reader only if all its constraints fit together with the readers
   accepted before. If the family has the consecutive-ones property every reader is accepted: zero copies.
2. Start from the cheaper of that and the original orders, then a coordinate descent over units tries the
   reflected-binary (Gray) order of each unit's channels keyed by its readers, and its reverse, and keeps a change
   only if it lowers (copied bytes, gathers, views) with no more gathers than the original orders have.

Guarantees: zero copies whenever an order allows it (step 1, exact); never more copied bytes or gathers than the
original order. Otherwise heuristic: on 300 random small instances checked against a brute-force oracle
(``tests/test_ordering.py``) 299 are optimal and none copies more than 1.5x the optimum (observed worst 1.15x).
Complexity: O(readers x channels) for the PQ-trees, O(passes x units x readers x channels) for the descent;
polynomial throughout.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from .pqtree import PQTree

Position = tuple[int, int]  # (block index within the tensor, channel)


@dataclass(frozen=True)
class Full:
    """The consumer reads its whole input tensor."""


@dataclass(frozen=True)
class Narrow:
    """The consumer reads ``length`` channels from ``start``: a view, no copy."""

    start: int
    length: int


@dataclass(frozen=True)
class Gather:
    """The consumer reads channels copied out by an ``index_select`` of ``indices`` (in that order); when several
    consumers share one gather, each reads its range ``within`` = (start, length) of the gathered channels."""

    indices: tuple[int, ...]
    within: tuple[int, int] | None = None

    @property
    def selected(self) -> tuple[int, ...]:
        """The positions this consumer reads, in the order it reads them."""
        if self.within is None:
            return self.indices
        start, length = self.within
        return self.indices[start : start + length]


Access = Full | Narrow | Gather


@dataclass(frozen=True)
class Block:
    unit: int
    channels: tuple[int, ...]  # the unit's (kept) channels as laid out originally in this tensor


@dataclass(frozen=True)
class Reader:
    tensor: int
    positions: frozenset[Position]  # the (block, channel) positions it needs
    bytes_per_channel: int  # copied per gathered channel (or elements: any unit, consistently)
    absorbed: bool = False  # selected by a cat from views: costs no copy, one view per run of channels


@dataclass(frozen=True)
class OrderProblem:
    units: tuple[tuple[int, ...], ...]  # each unit's kept channels in their original order
    pinned: frozenset[int]  # units whose order is fixed
    tensors: tuple[tuple[Block, ...], ...]
    readers: tuple[Reader, ...]


Orders = tuple[tuple[int, ...], ...]


def physical_layout(tensor: Sequence[Block], orders: Orders, pinned: frozenset[int]) -> list[Position]:
    """The positions of ``tensor`` in physical order.

    >>> blocks = (Block(0, (4, 5, 6)), Block(1, (7, 8)))
    >>> physical_layout(blocks, ((6, 4, 5), (7, 8)), frozenset())
    [(0, 6), (0, 4), (0, 5), (1, 7), (1, 8)]
    """
    layout: list[Position] = []
    for index, block in enumerate(tensor):
        channels = block.channels if block.unit in pinned else orders[block.unit]
        layout.extend((index, channel) for channel in channels)
    return layout


def choose_access(layout: Sequence[Position], needed: frozenset[Position], allow_narrow: bool = True) -> Access:
    """How a reader needing ``needed`` reads a tensor laid out as ``layout``.

    >>> layout = [(0, 1), (0, 2), (0, 3), (0, 4)]
    >>> choose_access(layout, frozenset(layout))
    Full()
    >>> choose_access(layout, frozenset({(0, 2), (0, 3)}))
    Narrow(start=1, length=2)
    >>> choose_access(layout, frozenset({(0, 2), (0, 3)}), allow_narrow=False)
    Gather(indices=(1, 2), within=None)
    >>> choose_access(layout, frozenset({(0, 1), (0, 4)}))
    Gather(indices=(0, 3), within=None)
    """
    indices = tuple(i for i, position in enumerate(layout) if position in needed)
    if len(indices) == len(layout):
        return Full()
    if allow_narrow and indices and indices[-1] - indices[0] + 1 == len(indices):
        return Narrow(indices[0], len(indices))
    return Gather(indices)


Cost = tuple[int, int, int]  # (copied bytes, gathers, views of absorbed selections): compared in that order


def copy_cost(
    problem: OrderProblem, orders: Orders, readers: Sequence[Reader] | None = None, unit: int | None = None
) -> Cost:
    """(copied bytes, gathers, views) of ``readers`` (default: all); equal gathers of one tensor are shared.
    Bytes are ``len(gather) x reader.bytes_per_channel`` (the planner counts bytes).
    With ``unit``, absorbed readers count only the views in that unit's blocks (views never span blocks, so
    this is enough to compare orders of that unit).

    >>> problem = OrderProblem(units=((0, 1, 2),), pinned=frozenset(), tensors=((Block(0, (0, 1, 2)),),),
    ...     readers=(Reader(0, frozenset({(0, 0), (0, 2)}), 10), Reader(0, frozenset({(0, 0), (0, 2)}), 10, True)))
    >>> copy_cost(problem, ((0, 1, 2),))
    (20, 1, 2)
    >>> copy_cost(problem, ((0, 2, 1),))
    (0, 0, 1)
    """
    gathers: set[tuple[int, tuple[int, ...]]] = set()
    copied = views = 0
    layouts: dict[int, list[Position]] = {}
    for reader in problem.readers if readers is None else readers:
        if reader.absorbed:
            views += _block_views(problem, orders, reader, unit)
            continue
        if reader.tensor not in layouts:
            layouts[reader.tensor] = physical_layout(problem.tensors[reader.tensor], orders, problem.pinned)
        access = choose_access(layouts[reader.tensor], reader.positions)
        if isinstance(access, Gather) and (reader.tensor, access.indices) not in gathers:
            gathers.add((reader.tensor, access.indices))
            copied += len(access.indices) * reader.bytes_per_channel
    return copied, len(gathers), views


def share_gathers(needs: dict[str, tuple[int, ...]], exhaustive_limit: int = 24) -> dict[str, Gather]:
    """Serve consumers that gather from one tensor with as few gathers as possible, each copying the union of its
    consumers' channels in an order that makes every consumer's channels a contiguous range of it.

    ``needs`` maps each consumer to the positions it reads (sorted). Groups are formed greedily, largest needs
    first, with a PQ-tree over the union (a consumer joins the group if its positions can be consecutive together
    with those accepted before); beyond ``exhaustive_limit`` consumers, pairs are formed (two sets always fit).
    A shared gather never copies more than separate ones: |A ∪ B| <= |A| + |B|.

    >>> shared = share_gathers({"a": (0, 1, 2, 4), "b": (2, 4, 5, 6)})
    >>> shared["a"].indices == shared["b"].indices and len(shared["a"].indices) == 6
    True
    >>> sorted(shared["a"].selected), sorted(shared["b"].selected)
    ([0, 1, 2, 4], [2, 4, 5, 6])
    """
    pending = sorted(needs, key=lambda name: (-len(needs[name]), name))
    shared: dict[str, Gather] = {}
    while pending:
        if len(pending) > exhaustive_limit:
            group, pending = pending[:2], pending[2:]
            order = _pair_order(needs[group[0]], needs[group[-1]])
        else:
            group, pending, order = _largest_group(pending, needs)
        for name in group:
            chosen = set(needs[name])
            start = next(i for i, p in enumerate(order) if p in chosen)
            whole = len(chosen) == len(order)
            shared[name] = Gather(tuple(order), None if whole else (start, len(chosen)))
    return shared


def _largest_group(pending: list[str], needs: dict[str, tuple[int, ...]]) -> tuple[list[str], list[str], list[int]]:
    universe = sorted({p for name in pending for p in needs[name]})
    tree = PQTree(universe)
    group: list[str] = []
    rest: list[str] = []
    for name in pending:
        (group if tree.reduce(needs[name]) else rest).append(name)
    used = {p for name in group for p in needs[name]}
    return group, rest, [p for p in tree.frontier() if p in used]


def _pair_order(a: tuple[int, ...], b: tuple[int, ...]) -> list[int]:
    only_a, both, only_b = sorted(set(a) - set(b)), sorted(set(a) & set(b)), sorted(set(b) - set(a))
    return only_a + both + only_b


def _block_views(problem: OrderProblem, orders: Orders, reader: Reader, unit: int | None) -> int:
    """Views an absorbed reader needs: runs of its channels, block by block (only ``unit``'s blocks if given)."""
    views = 0
    for index, block in enumerate(problem.tensors[reader.tensor]):
        if unit is not None and block.unit != unit:
            continue
        channels = block.channels if block.unit in problem.pinned else orders[block.unit]
        views += count_runs([(index, c) for c in channels], reader.positions)
    return views


def count_runs(layout: Sequence[Position], needed: frozenset[Position]) -> int:
    """Runs of needed positions that are adjacent in ``layout`` and lie in one block.

    >>> count_runs([(0, 1), (0, 2), (1, 3), (1, 4)], frozenset({(0, 1), (0, 2), (1, 3)}))
    2
    """
    runs, previous = 0, None
    for position in layout:
        if position in needed:
            if previous is None or previous[0] != position[0]:
                runs += 1
            previous = position
        else:
            previous = None
    return runs


def choose_orders(problem: OrderProblem, passes: int = 3) -> Orders:
    """One order per unit, never copying more (bytes or gathers) than the original orders; among orders
    copying as little, fewer views for the selections absorbed into cats.

    >>> problem = OrderProblem(units=((0, 1, 2, 3),), pinned=frozenset(), tensors=((Block(0, (0, 1, 2, 3)),),),
    ...     readers=(Reader(0, frozenset({(0, 0), (0, 2)}), 5), Reader(0, frozenset({(0, 2), (0, 3)}), 1)))
    >>> orders = choose_orders(problem)
    >>> copy_cost(problem, orders)
    (0, 0, 0)
    """
    identity = problem.units
    gather_budget = copy_cost(problem, identity)[1]
    start = min((identity, consecutive_orders(problem)), key=lambda o: _budgeted(copy_cost(problem, o), gather_budget))
    return _descend(problem, start, gather_budget, passes)


def _budgeted(cost: Cost, gather_budget: int) -> tuple[bool, Cost]:
    return cost[1] > gather_budget, cost


def consecutive_orders(problem: OrderProblem) -> Orders:
    """Orders that make readers contiguous, heaviest reader first, as long as all accepted ones stay so.

    Every reader becomes a few "consecutive" constraints on the units it reads (its channels in one block; the
    end of one block and the start of the next when it spans blocks); a PQ-tree per unit accepts a reader's
    constraints only if an order satisfies them together with every reader accepted before. When all readers fit
    (the family has the consecutive-ones property) no reader copies anything.

    >>> blocks = (Block(0, (0, 1, 2, 3, 4)),)
    >>> needs = [{1, 3}, {3, 4}, {0, 2}, {0, 1}]
    >>> problem = OrderProblem(((0, 1, 2, 3, 4),), frozenset(), (blocks,),
    ...     tuple(Reader(0, frozenset((0, c) for c in need), 1) for need in needs))
    >>> orders = consecutive_orders(problem)
    >>> orders[0] in ((2, 0, 1, 3, 4), (4, 3, 1, 0, 2)), copy_cost(problem, orders)
    (True, (0, 0, 0))
    """
    trees: dict[int, PQTree] = {}  # made when a reader first constrains the unit
    free = {unit for unit, channels in enumerate(problem.units) if unit not in problem.pinned and len(channels) > 1}
    for reader in sorted(
        problem.readers, key=lambda reader: (reader.absorbed, -reader.bytes_per_channel * len(reader.positions))
    ):
        constraints = _reader_constraints(problem, reader)
        if constraints:
            constraints = {unit: sets for unit, sets in constraints.items() if unit in free}
            for unit in constraints.keys() - trees.keys():
                # the sentinels stand at the two ends: "prefix" and "suffix" become "consecutive with an end"
                trees[unit] = PQTree(problem.units[unit], ends=(_LEFT, _RIGHT))
            _offer(constraints, trees)
    orders = list(problem.units)
    for unit, tree in trees.items():
        order = tree.frontier()
        if order.index(_LEFT) > order.index(_RIGHT):
            order.reverse()
        rank = {c: i for i, c in enumerate(order)}  # the frontier holds each channel once, and the two ends
        orders[unit] = tuple(sorted(problem.units[unit], key=rank.__getitem__))
    return tuple(orders)


_LEFT, _RIGHT = ("end", "left"), ("end", "right")  # sentinel elements: never channel ints


def _reader_constraints(problem: OrderProblem, reader: Reader) -> dict[int, list[set]] | None:
    """Per unit, the sets that must be consecutive for ``reader`` to read a contiguous range; None if no order
    of the units can make it contiguous (it skips a block, or a pinned unit is in the way)."""
    blocks = problem.tensors[reader.tensor]
    touched = sorted({b for b, _ in reader.positions})
    if not touched:
        return {}
    first, last = touched[0], touched[-1]
    constraints: dict[int, list[set]] = {}
    for index in range(first, last + 1):
        block = blocks[index]
        chosen = {c for b, c in reader.positions if b == index}
        if len(chosen) == len(block.channels):
            continue
        if first < index < last:
            return None  # an inner block it does not read whole
        ends = set() if first == last else {_RIGHT} if index == first else {_LEFT}
        if block.unit in problem.pinned:
            if not _fits_fixed(block.channels, chosen, ends):
                return None
            continue
        constraints.setdefault(block.unit, []).append(chosen | ends)
    return constraints


def _fits_fixed(order: tuple[int, ...], chosen: set, ends: set) -> bool:
    """Is ``chosen`` contiguous in a fixed ``order`` (and at the required end)?"""
    marks = [_LEFT, *order, _RIGHT]
    indices = [i for i, c in enumerate(marks) if c in chosen or c in ends]
    return indices[-1] - indices[0] + 1 == len(indices)


def _offer(constraints: dict[int, list[set]], trees: dict[int, PQTree]) -> bool:
    """Apply all of one reader's constraints, or none of them."""
    if any(len(sets) > 1 for sets in constraints.values()):
        trial = {unit: copy.deepcopy(trees[unit]) for unit in constraints}
        if not all(trial[unit].reduce(s) for unit, sets in constraints.items() for s in sets):
            return False
        trees.update(trial)
        return True
    if not all(trees[unit].fits(sets[0]) for unit, sets in constraints.items()):
        return False
    for unit, sets in constraints.items():
        trees[unit].reduce(sets[0])
    return True


def _descend(problem: OrderProblem, start: Orders, gather_budget: int, passes: int) -> Orders:
    """Coordinate descent over units: try Gray orders of each free unit, keep what lowers the cost."""
    orders = list(start)
    readers_of = _readers_by_unit(problem)
    best = copy_cost(problem, tuple(orders))
    for _ in range(passes):
        improved = False
        for unit in range(len(orders)):
            if unit in problem.pinned or len(orders[unit]) < 2 or not readers_of[unit]:
                continue
            # Only the readers of tensors holding this unit change: compare their cost alone.
            local = copy_cost(problem, tuple(orders), readers_of[unit], unit)
            for candidate in _candidates(problem, unit, readers_of[unit]):
                trial = orders.copy()
                trial[unit] = candidate
                trial_local = copy_cost(problem, tuple(trial), readers_of[unit], unit)
                cost = _replaced(best, local, trial_local)
                if cost < best and cost[1] <= gather_budget:
                    best, orders, local, improved = cost, trial, trial_local, True
        if not improved:
            break
    return tuple(orders)


def _replaced(total: Cost, old: Cost, new: Cost) -> Cost:
    """``total`` with the part that cost ``old`` now costing ``new``."""
    return total[0] - old[0] + new[0], total[1] - old[1] + new[1], total[2] - old[2] + new[2]


def _readers_by_unit(problem: OrderProblem) -> list[list[Reader]]:
    readers: list[list[Reader]] = [[] for _ in problem.units]
    for reader in problem.readers:
        for unit in {block.unit for block in problem.tensors[reader.tensor]}:
            readers[unit].append(reader)
    return readers


def _candidates(problem: OrderProblem, unit: int, readers: list[Reader]) -> list[tuple[int, ...]]:
    """Gray orders of the unit's channels keyed by the readers needing them, heaviest reader first."""
    ranked = sorted(readers, key=lambda reader: -reader.bytes_per_channel * len(reader.positions))
    needs = [{channel for _, channel in _unit_positions(problem, reader, unit)} for reader in ranked]

    def gray_rank(channel: int) -> tuple[int, ...]:
        bits, previous = [], 0
        for need in needs:
            previous ^= channel in need
            bits.append(previous)
        return tuple(bits)

    gray = tuple(sorted(problem.units[unit], key=gray_rank))
    return [gray, gray[::-1]]


def _unit_positions(problem: OrderProblem, reader: Reader, unit: int) -> list[Position]:
    blocks = problem.tensors[reader.tensor]
    return [(b, c) for b, c in reader.positions if blocks[b].unit == unit]
