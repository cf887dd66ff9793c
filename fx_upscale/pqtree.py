"""PQ-trees (Booth & Lueker, 1976): all orders of a ground set in which given subsets are consecutive.

A PQ-tree's leaves are the elements; a P-node's children may be permuted freely, a Q-node's children only reversed.
Its frontier (leaves left to right) is one valid order, and every valid order is the frontier of an equivalent tree.
:meth:`PQTree.reduce` adds one constraint "these elements are consecutive": it labels the pertinent subtree
(empty / full / partial nodes), checks that a template applies at every partial node *before* changing anything, and
then rewrites bottom-up. A failed reduction leaves the tree as it was, so constraints can be offered greedily and
kept only when they fit.

Pure Python on hashable elements. Each reduction is O(n) here (the pertinent subtree is sized by a walk, not by
Booth and Lueker's amortised bookkeeping), which is plenty for channel counts in the thousands.

>>> tree = PQTree(range(6))
>>> all(tree.reduce(s) for s in ({0, 3}, {3, 5}, {1, 2, 4}))
True
>>> order = tree.frontier()
>>> all(max(order.index(e) for e in s) - min(order.index(e) for e in s) == len(s) - 1
...     for s in ({0, 3}, {3, 5}, {1, 2, 4}))
True
>>> tree.reduce({0, 5})  # 0-3-5 is a path: 0 and 5 cannot also be adjacent
False
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable

EMPTY, FULL, PARTIAL = "E", "F", "P"
_ROOT_Q = re.compile(r"^E*P?F*P?E*$")
_SIDE_Q = re.compile(r"^E*P?F*$")


class _Node:
    __slots__ = ("kind", "children", "parent", "value")

    def __init__(self, kind: str, children: list[_Node] | None = None, value: Hashable = None) -> None:
        self.kind = kind  # "leaf" | "P" | "Q"
        self.value = value
        self.parent: _Node | None = None
        self.children: list[_Node] = []
        if children:
            self.adopt(children)

    def adopt(self, children: list[_Node]) -> None:
        self.children = list(children)
        for child in children:
            child.parent = self


def _group(nodes: list[_Node]) -> list[_Node]:
    """Nodes whose order is free, as at most one node (a P-node when there are several)."""
    return [] if not nodes else [nodes[0]] if len(nodes) == 1 else [_Node("P", list(nodes))]


class PQTree:
    """The set of orders of ``elements`` that keep every reduced subset consecutive."""

    def __init__(self, elements: Iterable[Hashable], ends: tuple[Hashable, Hashable] | None = None) -> None:
        """All orders of ``elements``; with ``ends`` = (left, right), two extra elements fixed at the two ends
        (so "consecutive with an end" expresses a prefix or a suffix).

        >>> tree = PQTree(range(4), ends=("L", "R"))
        >>> tree.reduce({2, "L"}), tree.reduce({0, 3, "R"}), tree.reduce({2, 3}), tree.reduce({1, 3})
        (True, True, False, True)
        >>> tree.frontier()
        ['L', 2, 1, 3, 0, 'R']
        """
        leaves = [_Node("leaf", value=e) for e in elements]
        middle = leaves[0] if len(leaves) == 1 else _Node("P", list(leaves))
        if ends is not None:
            left, right = _Node("leaf", value=ends[0]), _Node("leaf", value=ends[1])
            leaves += [left, right]
            middle = _Node("Q", [left, middle, right])
        if len({leaf.value for leaf in leaves}) != len(leaves):
            raise ValueError("PQTree elements must be distinct")
        self.leaf_of = {leaf.value: leaf for leaf in leaves}
        self.root = middle

    def frontier(self) -> list[Hashable]:
        """One valid order: the leaves from left to right."""
        order, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if node.kind == "leaf":
                order.append(node.value)
            else:
                stack.extend(reversed(node.children))
        return order

    def fits(self, subset: Iterable[Hashable]) -> bool:
        """Whether some order the tree allows keeps ``subset`` consecutive (the tree is not changed)."""
        labelled = self._label(set(subset))
        return labelled is None or self._feasible(*labelled)

    def reduce(self, subset: Iterable[Hashable]) -> bool:
        """Restrict the tree to orders where ``subset`` is consecutive; False (tree unchanged) if none is left."""
        labelled = self._label(set(subset))
        if labelled is None:
            return True
        root, status = labelled
        if not self._feasible(root, status):
            return False
        arranged = self._arrange_all(root, status)
        if root.kind == "P":
            self._rewrite_p_root(root, status, arranged)
        else:
            self._rewrite_q_root(root, status, arranged)
        return True

    # -- labelling ----------------------------------------------------------------------------------------------

    def _label(self, subset: set) -> tuple[_Node, dict[_Node, str]] | None:
        """The pertinent root and the labels of its subtree; None when ``subset`` is consecutive already."""
        if not subset <= self.leaf_of.keys():
            raise ValueError(f"unknown elements {sorted(map(str, subset - self.leaf_of.keys()))[:5]}")
        if len(subset) <= 1 or len(subset) == len(self.leaf_of):
            return None
        counts = self._count(subset)
        root = self.leaf_of[next(iter(subset))]
        while counts[root] < len(subset):
            parent = root.parent
            assert parent is not None, "the tree's root holds every element"
            root = parent
        status = self._status(root, counts)
        return None if status[root] == FULL else (root, status)

    def _count(self, subset: set) -> dict[_Node, int]:
        """How many elements of ``subset`` lie under each node on their paths to the root.

        The paths are walked once each up to where they meet (O(union of paths), not O(|subset| x depth)),
        then counted bottom-up.
        """
        below: dict[_Node, list[_Node]] = {}
        for element in subset:
            node = self.leaf_of[element]
            below[node] = []
            while node.parent is not None:
                parent, seen = node.parent, node.parent in below
                below.setdefault(parent, []).append(node)
                if seen:
                    break
                node = parent
        counts: dict[_Node, int] = {}
        stack = [(self.root, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done or not below[node]:
                counts[node] = sum(counts[c] for c in below[node]) if below[node] else 1
            else:
                stack.append((node, True))
                stack.extend((child, False) for child in below[node])
        return counts

    def _status(self, root: _Node, counts: dict[_Node, int]) -> dict[_Node, str]:
        """EMPTY / FULL / PARTIAL of every counted node and its children: a node is full when all its children
        are (children first: counted nodes come in post-order from :meth:`_count`)."""
        status: dict[_Node, str] = {}
        for node in counts:  # post-order: children before parents
            if node.kind == "leaf":
                status[node] = FULL
                continue
            labels = [status.get(child, EMPTY) for child in node.children]
            for child, label in zip(node.children, labels):
                status[child] = label
            status[node] = FULL if all(label == FULL for label in labels) else PARTIAL
        return status

    @staticmethod
    def _partial_nodes(root: _Node, status: dict[_Node, str]) -> list[_Node]:
        """The partial nodes of the pertinent subtree, parents before children."""
        order, stack = [], [root]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(child for child in node.children if status[child] == PARTIAL)
        return order

    def _feasible(self, root: _Node, status: dict[_Node, str]) -> bool:
        """Does a template apply at every partial node of the pertinent subtree?"""
        for node in self._partial_nodes(root, status):
            labels = "".join(status[child] for child in node.children)
            if node.kind == "P":
                if labels.count(PARTIAL) > (2 if node is root else 1):
                    return False
            elif node is root:
                if not _ROOT_Q.match(labels):
                    return False
            elif not (_SIDE_Q.match(labels) or _SIDE_Q.match(labels[::-1])):
                return False
        return True

    # -- rewriting (only after _feasible said yes) --------------------------------------------------------------

    def _arrange_all(self, root: _Node, status: dict[_Node, str]) -> dict[_Node, list[_Node]]:
        """Every partial non-root node as a sequence, empty part first and full part last (children first)."""
        arranged: dict[_Node, list[_Node]] = {}
        for node in reversed(self._partial_nodes(root, status)):
            if node is not root:
                arranged[node] = self._arranged(node, status, arranged)
        return arranged

    @staticmethod
    def _arranged(node: _Node, status: dict[_Node, str], arranged: dict[_Node, list[_Node]]) -> list[_Node]:
        if node.kind == "P":
            empty = [c for c in node.children if status[c] == EMPTY]
            full = [c for c in node.children if status[c] == FULL]
            partial = [c for c in node.children if status[c] == PARTIAL]
            middle = arranged[partial[0]] if partial else []
            return _group(empty) + middle + _group(full)
        children = node.children
        if not _SIDE_Q.match("".join(status[c] for c in children)):
            children = children[::-1]
        sequence: list[_Node] = []
        for child in children:
            sequence += arranged[child] if status[child] == PARTIAL else [child]
        return sequence

    def _rewrite_p_root(self, root: _Node, status: dict[_Node, str], arranged: dict[_Node, list[_Node]]) -> None:
        empty = [c for c in root.children if status[c] == EMPTY]
        full = [c for c in root.children if status[c] == FULL]
        partial = [c for c in root.children if status[c] == PARTIAL]
        middle = list(arranged[partial[0]]) if partial else []
        middle += _group(full)
        if len(partial) == 2:
            middle += arranged[partial[1]][::-1]
        block = middle[0] if len(middle) == 1 else _Node("Q", middle)
        if empty:
            root.adopt(empty + [block])
        else:
            self._replace(root, block)

    def _rewrite_q_root(self, root: _Node, status: dict[_Node, str], arranged: dict[_Node, list[_Node]]) -> None:
        """Pattern E* P? F* P? E*: a partial child left of the full block turns its full side right, one right of
        it turns its full side left (of two adjacent partials, the first is the left one)."""
        labels = [status[c] for c in root.children]
        partials = [i for i, label in enumerate(labels) if label == PARTIAL]
        sequence = []
        for index, child in enumerate(root.children):
            if labels[index] != PARTIAL:
                sequence.append(child)
                continue
            if len(partials) == 2:
                left = index == partials[0]
            else:
                left = FULL in labels[index + 1 :] or FULL not in labels[:index]
            sequence += arranged[child] if left else arranged[child][::-1]
        root.adopt(sequence)

    def _replace(self, old: _Node, new: _Node) -> None:
        parent = old.parent
        if parent is None:
            self.root = new
            new.parent = None
        else:
            parent.children[parent.children.index(old)] = new
            new.parent = parent
