"""Planning: from the channel analysis and an export mode to a :class:`ChannelPlan` the passes apply.

Per segment (see ``segments.py``), the planner decides

1. which channel classes are *kept*: those some consumer needs, plus the pinned ones (graph inputs, channels read by
   a barrier such as the graph output). Mode ``constrained`` keeps a class only if *every* consumer reading it needs
   it, so all consumers read their whole input (no copies, possibly more channels dropped than asked). Grouped
   convolutions and ``chunk`` pieces then get equal widths: narrower groups keep extra channels (``_equalize_groups``);
2. the order of each unit of channels (``ordering.py``): the original order (modes ``baseline`` and ``constrained``)
   or a reordering that minimises copies (mode ``upscale``);
3. each consumer's access — :class:`~fx_upscale.ordering.Full`, ``Narrow`` or ``Gather`` — and its weight columns.
   In mode ``upscale``, a consumer reading a ``cat`` through per-channel ops has its selection absorbed into the
   cat (``absorption.py``), and consumers gathering from one tensor share gathers (``ordering.share_gathers``)
   where a channel range of the shared gather is a free view: at the example inputs' batch 1, not at a larger batch,
   where the convolution reading a range would copy it a second time (``_narrows_are_views``).

The plan is a frozen value: parameter slices, module attribute updates, node argument updates, and consumer
accesses, all named by qualified parameter / module / FX node names. Start reading at :func:`plan_channels`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from .absorption import absorbing_chain, cat_pieces
from .channels import ChannelAnalysis
from .errors import UnsupportedOpError, describe_node
from .layouts import Read
from .ops import Grouped, RewriteContext, Slice, Split, SplitPiece, Updates, producer_weights
from .ordering import (
    Access,
    Block,
    Full,
    Gather,
    Narrow,
    OrderProblem,
    Reader,
    choose_access,
    choose_orders,
    physical_layout,
    share_gathers,
)
from .plan_types import MODES, CatSelection, ChannelPlan, ConsumerAccess, Mode, SegmentPlan
from .segments import Segment


def plan_channels(
    analysis: ChannelAnalysis, segments: tuple[Segment, ...], mode: str, on_unsupported: str = "raise"
) -> ChannelPlan:
    """The :class:`ChannelPlan` for ``mode`` over every segment."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    checked_mode = cast(Mode, mode)
    if on_unsupported not in ("raise", "freeze"):
        raise ValueError(f"on_unsupported must be 'raise' or 'freeze', not {on_unsupported!r}")
    physical: dict[str, tuple[int, ...]] = {}
    segment_plans = []
    owners_of: dict[int, set[str]] = {}
    for i, owner in analysis.owner.items():
        owners_of.setdefault(analysis.class_of[i], set()).add(owner)
    reads_of: dict[str, list[Read]] = {}
    for read in analysis.reads:
        reads_of.setdefault(read.source, []).append(read)
    for segment in segments:
        reads = [read for name in segment.tensors for read in reads_of.get(name, ())]
        planner = _SegmentPlanner(analysis, segment, mode, on_unsupported, owners_of, reads)
        segment_plans.append(planner.plan())
        physical.update(planner.physical)
    updates = _parameter_updates(analysis, physical, segment_plans)
    return ChannelPlan(
        mode=checked_mode, segments=tuple(segment_plans), physical=physical, param_slices=tuple(updates.slices),
        attr_updates=tuple(updates.attrs), arg_updates=tuple(updates.args),
    )  # fmt: skip


class _SegmentPlanner:
    def __init__(
        self,
        analysis: ChannelAnalysis,
        segment: Segment,
        mode: str,
        on_unsupported: str,
        owners_of: Mapping[int, set[str]],
        reads: list[Read],
    ) -> None:
        self.analysis, self.segment, self.mode = analysis, segment, mode
        self.on_unsupported, self.owners_of = on_unsupported, owners_of
        self.reads = reads
        self.consumer_reads = [read for read in self.reads if read.consumer]
        self.absorbable: dict[str, tuple[str, ...]] = {}
        if mode == "upscale":
            for read in self.consumer_reads:
                chain = absorbing_chain(analysis, read) if read.groups == 1 else None
                if chain is not None:
                    self.absorbable[read.reader] = chain
        self.pinned = self._pinned()
        self.physical: dict[str, tuple[int, ...]] = {}

    def plan(self) -> SegmentPlan:
        frozen_by = self._check_barriers()
        kept_free = self._keep_a_channel_per_producer(self._kept("upscale"))
        if self.mode == "constrained":
            revived = self._revive_producers(self._kept("constrained"), kept_free)
            kept = self._keep_a_channel_per_consumer(revived, kept_free)
        else:
            kept = kept_free
        equal_kept = self._equalize_groups(kept)
        kept_for_groups, kept = len(equal_kept - kept), equal_kept
        problem, position_maps = self._order_problem(kept)
        orders = choose_orders(problem) if self.mode == "upscale" else problem.units
        layouts = {}
        for index, name in enumerate(self.segment.tensors):
            layout = physical_layout(problem.tensors[index], orders, problem.pinned)
            layouts[name] = layout
            self.physical[name] = tuple(position_maps[name][p] for p in layout)
        consumers, selections = self._consumer_accesses(layouts, position_maps)
        producers = tuple(o for o in self.segment.owners if producer_weights(self.analysis.roles[o]))
        return SegmentPlan(
            index=self.segment.index, producers=producers, consumers=consumers, channels=len(self.segment.classes),
            kept=len(kept), extra_pruned=len(kept_free - kept), frozen_by=frozen_by, cat_selections=selections,
            kept_for_groups=kept_for_groups,
        )  # fmt: skip

    # -- what is kept ------------------------------------------------------------------------------------------

    def _classes_read(self, read: Read, only_needed: bool) -> set[int]:
        classes = self.analysis.classes(read.source)
        return {c for c, need in zip(classes, read.needed) if need or not only_needed}

    def _pinned(self) -> frozenset[int]:
        """Classes whose channels are kept in their original order: graph inputs, outputs of unknown ops, and
        whatever a barrier (the graph output, an unknown op) reads."""
        pinned = {self.analysis.class_of[i] for i in self.analysis.fixed} & set(self.segment.classes)
        for read in self.reads:
            if not read.consumer:
                pinned |= self._classes_read(read, only_needed=False)
        return frozenset(pinned)

    def _kept(self, mode: str) -> frozenset[int]:
        kept = set(self.pinned)
        if mode != "constrained":
            for read in self.consumer_reads:
                kept |= self._classes_read(read, only_needed=True)
            return frozenset(kept)
        vetoed: set[int] = set()
        for read in self.consumer_reads:
            needed = self._classes_read(read, only_needed=True)
            kept |= needed
            vetoed |= self._classes_read(read, only_needed=False) - needed
        return frozenset(kept - (vetoed - self.pinned))

    def _keep_a_channel_per_producer(self, kept: frozenset[int]) -> frozenset[int]:
        """A producer none of whose channels is needed (e.g. its rows masked on one side and its consumers'
        columns on the other) keeps its first channel rather than vanishing; consumers read it through zero
        weight columns, so the result stays exact."""
        extra: set[int] = set()
        for owner in self.segment.owners:
            if producer_weights(self.analysis.roles[owner]):
                classes = self.analysis.classes(owner)
                if not set(classes) & kept:
                    extra.add(classes[0])
        return self._keep_a_channel_per_consumer(kept | extra, frozenset())

    def _keep_a_channel_per_consumer(self, kept: frozenset[int], preferred: frozenset[int]) -> frozenset[int]:
        """A slice or split piece, or a consumer reading one, none of whose channels is kept keeps one (a
        ``preferred`` one if it can) rather than an empty tensor; whoever reads it reads it through a zero weight
        column, or not at all."""
        pieces = [name for name in self.segment.tensors if isinstance(self.analysis.roles[name], (Slice, SplitPiece))]
        extra: set[int] = set()
        for name in [read.source for read in self.consumer_reads] + pieces:
            classes = self.analysis.classes(name)
            if not set(classes) & (kept | extra):
                extra.add(next((c for c in classes if c in preferred), classes[0]))
        return kept | extra

    def _revive_producers(self, kept: frozenset[int], kept_free: frozenset[int]) -> frozenset[int]:
        """Constrained mode must not delete a producer outright: keep what its consumers need of it.

        Consumers that do not need those channels read them through zero weight columns, so no copy is added.
        """
        revived = set(kept)
        for owner in self.segment.owners:
            if producer_weights(self.analysis.roles[owner]):
                classes = set(self.analysis.classes(owner))
                if not classes & kept:
                    revived |= classes & kept_free
        return frozenset(revived)

    # -- grouped convolutions --------------------------------------------------------------------------------------

    def _equalize_groups(self, kept: frozenset[int]) -> frozenset[int]:
        """Every group of a grouped convolution must keep the same number of channels, on both sides.

        Narrower groups keep extra channels (read through zero weight columns, so the result stays exact) until
        they are as wide as the widest; a grouped read's padded ``needed`` replaces its read. Keeping a channel can
        widen another group (tied channels), so this runs to a fixed point; it only ever adds channels.
        """
        kept_set = set(kept)
        changed = True
        while changed:
            changed = False
            for index, read in enumerate(self.consumer_reads):
                if read.groups > 1:
                    padded = self._pad_grouped_read(read, kept_set)
                    changed |= padded != read
                    self.consumer_reads[index] = padded
            for owner in self.segment.owners:
                role = self.analysis.roles[owner]
                if isinstance(role, Grouped):
                    changed |= self._pad_groups(self.analysis.classes(owner), role.groups, kept_set)
            for split in self._channel_chunks():
                changed |= self._pad_groups(self.analysis.classes(split.data), len(split.sections), kept_set)
        return frozenset(kept_set)

    def _channel_chunks(self) -> list[Split]:
        """``chunk`` ops cutting a tensor of this segment along its channel axis: equal pieces, before and after."""
        tensors = set(self.segment.tensors)
        chunks = []
        for name in self.analysis.order:
            role = self.analysis.roles[name]
            if isinstance(role, Split) and role.chunks and role.data in tensors:
                if self.analysis.layouts[role.data].axis == role.dim:
                    chunks.append(role)
        return chunks

    def _pad_grouped_read(self, read: Read, kept: set[int]) -> Read:
        classes = self.analysis.classes(read.source)
        if self.mode == "constrained":  # reads its whole input: the tensor's kept channels must fill equal groups
            self._pad_groups(classes, read.groups, kept)
            return read
        needed = {p for p, need in enumerate(read.needed) if need and classes[p] in kept}
        self._pad_groups(classes, read.groups, kept, needed)
        return replace(read, needed=tuple(p in needed for p in range(len(classes))))

    @staticmethod
    def _pad_groups(classes: tuple[int, ...], groups: int, kept: set[int], chosen: set[int] | None = None) -> bool:
        """Pad each group of positions of ``classes`` to the width of the widest, adding to ``kept`` (and to
        ``chosen``). Groups are counted by ``chosen`` positions, or by kept classes when ``chosen`` is ``None``;
        padding prefers positions whose class is kept anyway. Returns whether ``kept`` grew."""
        width = len(classes) // groups
        members = [
            [p for p in range(g * width, (g + 1) * width) if (classes[p] in kept if chosen is None else p in chosen)]
            for g in range(groups)
        ]
        target = max(1, max(len(m) for m in members))
        grew = False
        for g, member in enumerate(members):
            spare = [p for p in range(g * width, (g + 1) * width) if p not in member]
            spare.sort(key=lambda p: (classes[p] not in kept, p))
            for p in spare[: target - len(member)]:
                if chosen is not None:
                    chosen.add(p)
                grew |= classes[p] not in kept
                kept.add(classes[p])
        return grew

    def _group_bound_classes(self) -> set[int]:
        """Classes whose order must stay the original one: grouped outputs and the inputs grouped convs read."""
        bound: set[int] = set()
        for owner in self.segment.owners:
            if isinstance(self.analysis.roles[owner], Grouped):
                bound.update(self.analysis.classes(owner))
        for read in self.consumer_reads:
            if read.groups > 1:
                bound.update(self.analysis.classes(read.source))
        return bound

    # -- barriers -----------------------------------------------------------------------------------------------

    def _is_pruned(self) -> bool:
        if any(not all(read.needed) for read in self.consumer_reads):
            return True
        return any(any(self.analysis.zeros[owner]) for owner in self.segment.owners if owner in self.analysis.zeros)

    def _check_barriers(self) -> tuple[str, ...]:
        barriers = [read.reader for read in self.reads if read.reader in self.analysis.barriers]
        barriers = list(dict.fromkeys(barriers))
        if not barriers or not self._is_pruned():
            return ()
        if self.on_unsupported == "freeze":
            return tuple(barriers)
        node = self.analysis.nodes[barriers[0]]
        raise UnsupportedOpError(
            f"{describe_node(node)} is in a segment being pruned, and fx_upscale cannot map channels through it "
            f"({self.analysis.barriers[node.name]}). Fix: pass on_unsupported='freeze' to keep every channel that "
            "crosses it, make it a leaf module, or declare how channels cross it with "
            "fx_upscale.register_pointwise(target, keeps_zero=...) or fx_upscale.register_per_channel(module_type)"
        )

    # -- orders -------------------------------------------------------------------------------------------------

    def _order_problem(self, kept: frozenset[int]) -> tuple[OrderProblem, dict[str, dict]]:
        unit_of, unit_classes = self._units()
        pinned = {unit_of[c] for c in self.pinned | self._group_bound_classes()}
        tensors, position_maps = [], {}
        by_ids: dict[tuple[int, ...], tuple] = {}  # pass-through chains repeat one layout: split it once
        for name in self.segment.tensors:
            ids = self.analysis.layouts[name].ids
            if ids not in by_ids:
                by_ids[ids] = self._blocks(name, unit_of, unit_classes, kept)
            blocks, positions, invalid = by_ids[ids]
            pinned |= invalid
            tensors.append(tuple(blocks))
            position_maps[name] = positions
        units = tuple(tuple(c for c in classes if c in kept) for classes in unit_classes)
        readers = []
        tensor_index = {name: index for index, name in enumerate(self.segment.tensors)}
        for read in self.consumer_reads:
            needed = self._needed_positions(read, position_maps[read.source], kept)
            absorbed = read.reader in self.absorbable  # costs no copy: fewer views is all an order can win
            bytes_per_channel = read.elements_per_channel * read.element_size
            readers.append(Reader(tensor_index[read.source], needed, bytes_per_channel, absorbed))
        return OrderProblem(units, frozenset(pinned), tuple(tensors), tuple(readers)), position_maps

    def _units(self) -> tuple[dict[int, int], list[list[int]]]:
        """Units: classes with the same set of owners travel together."""
        owners_of = self.owners_of
        unit_index: dict[frozenset[str], int] = {}
        unit_of: dict[int, int] = {}
        unit_classes: list[list[int]] = []
        for c in self.segment.classes:
            key = frozenset(owners_of[c])
            if key not in unit_index:
                unit_index[key] = len(unit_classes)
                unit_classes.append([])
            unit_of[c] = unit_index[key]
            unit_classes[unit_of[c]].append(c)
        return unit_of, unit_classes

    def _blocks(self, name: str, unit_of: dict, unit_classes: list, kept: frozenset[int]):
        """Split a tensor into runs of one unit each. A run holding part of a unit, or all of it in an order other
        than the unit's own (a slice taking the end of one copy of a unit in a ``cat`` and the start of the next),
        pins that unit: every tensor then keeps its own original order, which is right whatever made it."""
        classes = self.analysis.classes(name)
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
            channels = tuple(classes[p] for p in run if classes[p] in kept)
            blocks.append(Block(unit, channels))
            positions.update({(index, classes[p]): p for p in run})
        return blocks, positions, invalid

    def _needed_positions(self, read: Read, positions: dict, kept: frozenset[int]) -> frozenset:
        wanted = {p for p, need in enumerate(read.needed) if need}
        needed = frozenset(key for key, p in positions.items() if p in wanted and key[1] in kept)
        available = [(p, key) for key, p in positions.items() if key[1] in kept]
        if needed or not available:
            return needed
        return frozenset({min(available)[1]})  # a consumer needing nothing still reads one channel

    # -- results ------------------------------------------------------------------------------------------------

    def _consumer_accesses(self, layouts: dict, position_maps: dict):
        kept = frozenset(c for layout in layouts.values() for _, c in layout)
        plain, selections = {}, []
        for read in self.consumer_reads:
            needed = self._needed_positions(read, position_maps[read.source], kept)
            access: Access = Full()
            if self.mode != "constrained":
                access = choose_access(layouts[read.source], needed, allow_narrow=self.mode == "upscale")
            if read.reader in self.absorbable and not isinstance(access, Full):
                selections.append(self._absorb(read, _columns(access, self.physical[read.source])))
                access = Full()
            plain[read.reader] = (access, len(needed))
        if self.mode == "upscale":
            plain.update(self._shared_gathers(plain))
        absorbed = {selection.consumer: selection.cat for selection in selections}
        accesses: list[ConsumerAccess] = []
        gathers: dict[tuple[str, tuple[int, ...]], str] = {}
        for read in self.consumer_reads:
            access, channels_needed = plain[read.reader]
            copied, shared = 0, None
            if isinstance(access, Gather):
                shared = gathers.get((read.source, access.indices))
                copied = 0 if shared else len(access.indices) * read.elements_per_channel
                gathers.setdefault((read.source, access.indices), read.reader)
            layout = self.analysis.layouts[read.source]
            accesses.append(
                ConsumerAccess(
                    node=read.reader, source=read.source, axis=layout.axis, repeat=layout.repeat, access=access,
                    columns=_columns(access, self.physical[read.source]), copied_elements=copied, shared_with=shared,
                    channels_needed=channels_needed, channels_available=len(layouts[read.source]),
                    absorbed_into=absorbed.get(read.reader), element_size=read.element_size, groups=read.groups,
                )
            )  # fmt: skip
        return tuple(accesses), tuple(selections)

    def _shared_gathers(self, plain: dict) -> dict:
        """Consumers gathering from one tensor share gathers ordered so that each reads a contiguous range."""
        by_source: dict[str, dict[str, tuple[int, ...]]] = {}
        for read in self.consumer_reads:
            access = plain[read.reader][0]
            if not self._narrows_are_views(read.source):
                continue
            if isinstance(access, Gather) and read.groups == 1:  # a grouped read keeps its groups' order
                by_source.setdefault(read.source, {})[read.reader] = access.indices
        updates = {}
        for needs in by_source.values():
            if len(needs) > 1:
                for reader, access in share_gathers(needs).items():
                    updates[reader] = (access, plain[reader][1])
        return updates

    def _narrows_are_views(self, source: str) -> bool:
        """Whether a channel range of a tensor shaped like ``source`` is contiguous: only if every axis before the
        channel axis has size 1 (batch 1, at the example inputs). Otherwise the convolution reading it copies it
        into a contiguous buffer, so a consumer reading a range of a shared gather would copy its channels twice."""
        shape = self.analysis.nodes[source].meta["tensor_meta"].shape
        return math.prod(shape[: self.analysis.layouts[source].axis]) == 1

    def _absorb(self, read: Read, selected: tuple[int, ...]) -> CatSelection:
        """Narrow the chain from the cat to the consumer down to ``selected`` (original positions, in order)."""
        chain = self.absorbable[read.reader]
        pieces = cat_pieces(self.analysis, chain[0], selected, self.physical)
        for name in chain:
            self.physical[name] = selected
        return CatSelection(cat=chain[0], pieces=pieces, consumer=read.reader)


def _columns(access: Access, physical: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(access, Full):
        return physical
    if isinstance(access, Narrow):
        return physical[access.start : access.start + access.length]
    return tuple(physical[i] for i in access.selected)


def _parameter_updates(
    analysis: ChannelAnalysis, physical: Mapping[str, tuple[int, ...]], segments: list[SegmentPlan]
) -> Updates:
    """Parameter slices, attribute and argument updates that realise ``physical`` and the consumers' columns: each
    node's handler says what pruning changes at it."""
    accesses = {access.node: access for segment in segments for access in segment.consumers}
    context = RewriteContext(analysis, physical, accesses)
    updates = Updates()
    for name in analysis.order:
        analysis.handler(name).rewrite(name, analysis.roles[name], context, updates)
    return updates
