"""Channel ordering: zero copies whenever an order allows it, never worse than the original order, checked
against a brute-force oracle over every order on small instances."""

from __future__ import annotations

import itertools
import random

import pytest

from fx_upscale.ordering import Block, OrderProblem, Reader, choose_orders, copy_cost
from fx_upscale.pqtree import PQTree


def interval_readers(order: list[int], count: int, rng: random.Random, block: int = 0) -> list[Reader]:
    """Readers each needing a random interval (of two or more channels) of ``order``."""
    readers = []
    for _ in range(count):
        start = rng.randrange(len(order) - 1)
        stop = rng.randrange(start + 2, len(order) + 1)
        readers.append(Reader(0, frozenset((block, c) for c in order[start:stop]), rng.randint(1, 50)))
    return readers


@pytest.mark.parametrize("seed", range(5))
def test_large_consecutive_ones_families_need_no_copy(seed):
    rng = random.Random(seed)
    channels = list(range(400))
    hidden = channels[:]
    rng.shuffle(hidden)  # the order that makes every set contiguous, hidden from the planner
    readers = interval_readers(hidden, 250, rng)
    problem = OrderProblem((tuple(channels),), frozenset(), ((Block(0, tuple(channels)),),), tuple(readers))
    assert copy_cost(problem, problem.units)[0] > 0  # the original order does copy
    orders = choose_orders(problem)
    assert sorted(orders[0]) == channels
    assert copy_cost(problem, orders)[:2] == (0, 0)


@pytest.mark.parametrize("seed", range(5))
def test_readers_spanning_a_cat_need_no_copy_when_an_order_allows(seed):
    """A cat of two units: readers needing the end of one block and the start of the next, or a range inside."""
    rng = random.Random(seed)
    a, b = list(range(0, 30)), list(range(30, 50))
    hidden_a, hidden_b = rng.sample(a, len(a)), rng.sample(b, len(b))
    tensor = (Block(0, tuple(a)), Block(1, tuple(b)))
    readers = []
    for _ in range(40):
        tail, head = rng.randint(1, 29), rng.randint(1, 19)
        needed = {(0, c) for c in hidden_a[-tail:]} | {(1, c) for c in hidden_b[:head]}
        readers.append(Reader(0, frozenset(needed), rng.randint(1, 9)))
    readers += [Reader(r.tensor, frozenset((1, c) for _, c in r.positions), r.bytes_per_channel)
                for r in interval_readers(hidden_b, 10, rng)]  # fmt: skip
    problem = OrderProblem((tuple(a), tuple(b)), frozenset(), (tensor,), tuple(readers))
    assert copy_cost(problem, choose_orders(problem))[:2] == (0, 0)


def test_pinned_units_keep_their_order():
    pinned = (0, 1, 2, 3)
    tensor = (Block(0, pinned),)
    readers = (Reader(0, frozenset({(0, 1), (0, 2)}), 1), Reader(0, frozenset({(0, 0), (0, 3)}), 7))
    problem = OrderProblem((pinned,), frozenset({0}), (tensor,), readers)
    orders = choose_orders(problem)
    assert copy_cost(problem, orders) == (14, 1, 0)  # the second reader must gather: the order is fixed


def brute_force(problem: OrderProblem) -> tuple[int, int, int]:
    """The least (elements, gathers, views) over every combination of unit orders."""
    choices = [
        [unit] if index in problem.pinned else list(itertools.permutations(unit))
        for index, unit in enumerate(problem.units)
    ]
    return min(copy_cost(problem, tuple(orders)) for orders in itertools.product(*choices))


def random_problem(rng: random.Random) -> OrderProblem:
    """≤ 8 channels in one or two units (one perhaps pinned), one or two tensors, ≤ 6 readers."""
    total = rng.randint(3, 8)
    split = rng.randint(1, total - 1) if rng.random() < 0.5 else total
    units = (tuple(range(split)), tuple(range(split, total))) if split < total else (tuple(range(total)),)
    pinned = frozenset({1}) if len(units) == 2 and rng.random() < 0.3 else frozenset()
    tensors = [tuple(Block(u, units[u]) for u in range(len(units)))]
    if len(units) == 2 and rng.random() < 0.5:
        tensors.append((Block(0, units[0]),))
    readers = []
    for _ in range(rng.randint(1, 6)):
        tensor = rng.randrange(len(tensors))
        positions = [(b, c) for b, block in enumerate(tensors[tensor]) for c in block.channels]
        needed = rng.sample(positions, rng.randint(1, len(positions)))
        readers.append(Reader(tensor, frozenset(needed), rng.choice([1, 4, 9, 16]), rng.random() < 0.2))
    return OrderProblem(units, pinned, tuple(tensors), tuple(readers))


def test_planner_against_the_brute_force_oracle():
    rng = random.Random(1234)
    optimal = zero_copy = 0
    worst_excess = 0.0
    for _ in range(300):
        problem = random_problem(rng)
        oracle = brute_force(problem)
        planned = copy_cost(problem, choose_orders(problem))
        original = copy_cost(problem, problem.units)
        # never worse than the original order, in elements and in gathers
        assert planned[0] <= original[0] and planned[1] <= original[1]
        if oracle[0] == 0:  # a zero-copy order exists: the planner finds one
            zero_copy += 1
            assert planned[0] == 0
        assert planned[0] >= oracle[0]
        optimal += planned[0] == oracle[0]
        if oracle[0]:
            worst_excess = max(worst_excess, planned[0] / oracle[0])
    assert zero_copy > 100 and optimal >= 280 and worst_excess <= 1.5  # the bound ordering.py documents
    print(f"oracle: {optimal}/300 optimal, {zero_copy} zero-copy instances, worst ratio {worst_excess:.2f}")


def test_pq_tree_agrees_with_brute_force():
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(2, 6)
        tree, accepted = PQTree(range(n)), []
        for _ in range(rng.randint(1, 5)):
            subset = set(rng.sample(range(n), rng.randint(1, n)))
            exists = any(
                all(_contiguous(order, s) for s in [*accepted, subset]) for order in itertools.permutations(range(n))
            )
            assert tree.reduce(subset) == exists
            if exists:
                accepted.append(subset)
            assert all(_contiguous(tree.frontier(), s) for s in accepted)


def _contiguous(order, subset) -> bool:
    positions = sorted(list(order).index(e) for e in subset)
    return positions[-1] - positions[0] + 1 == len(positions)
