"""Choosing channels from scores: how many, where, and who must agree (pure Python over float64 score vectors).

- *unconstrained*: each layer's channels are chosen on their own scores; positions of one class in one layer (an
  attention head's query, key and value rows) are one channel, chosen whole on their mean score, since only a whole
  class is ever removed;
- *constrained*: the layers of one coupled group (a segment: one shared channel space) share one choice. A channel
  class scores the mean of its scores over the layers of the group that hold it (on the scale of one layer's
  scores, whatever the size of the group, so that a global threshold treats large and small groups alike), and
  each layer masks the positions of the chosen classes.
- *local* scope: each layer (or group) masks ``int(amount * size)`` of its channels;
  *global* scope: ``int(amount * total)`` channels over the whole model, the lowest scores first, i.e. one
  threshold for every layer (or group).

Either way, a layer or group never loses every channel: once it has one left, the next lowest score elsewhere is
taken instead (which only raises the threshold for the others). Ties break by position, so choices are deterministic.

Start reading at :func:`choose`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def choose(
    classes: Sequence[Sequence[int]],
    scores: Sequence[torch.Tensor],
    amount: float,
    *,
    groups: Sequence[Sequence[int]] | None,
    unmaskable: frozenset[int],
    scope: str,
) -> list[list[int]]:
    """Positions to mask per layer. ``classes[i]`` and ``scores[i]`` hold layer ``i``'s class and score per
    position; ``groups`` (class lists of coupled groups) makes the choice constrained; unmaskable classes are never
    chosen in a group.

    >>> choose([[0, 1, 2], [3, 4]], [torch.tensor([3., 1., 2.]), torch.tensor([0.5, 9.])], 0.4,
    ...        groups=None, unmaskable=frozenset(), scope="global")
    [[1], [0]]
    >>> choose([[0, 1, 2], [0, 1, 2]], [torch.tensor([3., 1., 2.]), torch.tensor([0., 4., 2.])], 0.34,
    ...        groups=[[0, 1, 2]], unmaskable=frozenset(), scope="local")  # class means 1.5, 2.5, 2
    [[0], [0]]
    """
    if groups is None:
        return _lowest_classes(classes, scores, amount, scope)
    means = _class_means(classes, scores, unmaskable)
    members = [[c for c in group if c in means] for group in groups]
    members = [group for group in members if group]
    picked = lowest([torch.tensor([means[c] for c in group], dtype=torch.float64) for group in members], amount, scope)
    chosen = {group[p] for group, positions in zip(members, picked) for p in positions}
    positions = [[p for p, c in enumerate(layer_classes) if c in chosen] for layer_classes in classes]
    return [found[: len(layer_classes) - 1] for found, layer_classes in zip(positions, classes)]


def _lowest_classes(
    classes: Sequence[Sequence[int]], scores: Sequence[torch.Tensor], amount: float, scope: str
) -> list[list[int]]:
    """Unconstrained: each layer's lowest-scoring classes (a class's score the mean over the layer's positions of it),
    as positions.

    >>> _lowest_classes([[7, 8, 7, 8]], [torch.tensor([1., 5., 2., 0.])], 0.5, "local")  # means 1.5, 2.5
    [[0, 2]]
    """
    uniques = [list(dict.fromkeys(layer_classes)) for layer_classes in classes]
    means = [_class_means([layer_classes], [layer_scores], frozenset()) for layer_classes, layer_scores in
             zip(classes, scores)]  # fmt: skip
    vectors = [torch.tensor([mean[c] for c in unique], dtype=torch.float64) for mean, unique in zip(means, uniques)]
    picked = lowest(vectors, amount, scope)
    chosen_classes = [{unique[i] for i in chosen} for unique, chosen in zip(uniques, picked)]
    return [[p for p, c in enumerate(layer) if c in chosen] for layer, chosen in zip(classes, chosen_classes)]


def _class_means(
    classes: Sequence[Sequence[int]], scores: Sequence[torch.Tensor], unmaskable: frozenset[int]
) -> dict[int, float]:
    """Each maskable class's mean score over the positions that hold it."""
    totals: dict[int, float] = {}
    counts: dict[int, int] = {}
    for layer_classes, layer_scores in zip(classes, scores):
        for c, score in zip(layer_classes, layer_scores.tolist()):
            if c not in unmaskable:
                totals[c] = totals.get(c, 0.0) + score
                counts[c] = counts.get(c, 0) + 1
    return {c: total / counts[c] for c, total in totals.items()}


def lowest(scores: Sequence[torch.Tensor], amount: float, scope: str) -> list[list[int]]:
    """The lowest-scoring positions of each vector: ``amount`` of each (local) or of all together (global).

    >>> lowest([torch.tensor([2., 1., 3.]), torch.tensor([0., 5.])], 0.5, "local")
    [[1], [0]]
    >>> lowest([torch.tensor([2., 1., 3.]), torch.tensor([0., 5.])], 0.6, "global")
    [[0, 1], [0]]
    >>> lowest([torch.tensor([0., 0.]), torch.tensor([1., 2.])], 0.75, "global")  # each keeps one
    [[0], [0]]
    """
    if scope == "local":
        return [_lowest_of_one(vector, count(amount, len(vector))) for vector in scores]
    total = sum(len(vector) for vector in scores)
    budget = min(int(amount * total), total - len(scores))
    ranked = sorted((score, i, p) for i, vector in enumerate(scores) for p, score in enumerate(vector.tolist()))
    chosen: list[list[int]] = [[] for _ in scores]
    for _, i, p in ranked:
        if budget <= 0:
            break
        if len(chosen[i]) < len(scores[i]) - 1:
            chosen[i].append(p)
            budget -= 1
    return [sorted(positions) for positions in chosen]


def count(amount: float, size: int) -> int:
    """How many of ``size`` channels one layer masks: ``int(amount * size)``, leaving at least one.

    >>> count(0.3, 10), count(0.99, 3), count(0.5, 1)
    (3, 2, 0)
    """
    return max(0, min(int(amount * size), size - 1))


def _lowest_of_one(scores: torch.Tensor, how_many: int) -> list[int]:
    values = scores.tolist()
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return sorted(order[:how_many])
