"""Stage 3 of planning a segment: how each consumer reads its input.

Per consumer, :func:`consumer_accesses` chooses a :class:`~fx_upscale.ordering.Full` read, a ``Narrow`` view or a
``Gather`` (``ordering.choose_access``) of its input's physical layout. With ``policy.whole_reads`` every consumer
reads its whole input. With ``policy.absorb``, a consumer reading a ``cat`` through per-channel ops has its
selection absorbed into the cat (``absorption.py``); with ``policy.share_gathers``, consumers gathering from one
tensor share gathers (``ordering.share_gathers``) where a channel range of the shared gather is a free view: at the
example inputs' batch 1, not at a larger batch, where the convolution reading a range would copy it again.

With ``policy.by_latency`` the cost model (``cost_model.py``) chooses, per consumer, the read predicted fastest
(:func:`_cheapest_read`): the exact range or gather, the smallest enclosing range or the whole tensor read through
zero weight columns; and whether a selection is absorbed into its cat (each piece a dispatched view) or the whole
cat is read (:func:`_absorbs`). Every consumer's access carries its predicted cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..absorption import cat_pieces
from ..layouts import Read
from ..ops import Concat
from ..ordering import Access, Full, Gather, Narrow, choose_access, share_gathers
from ..plan_types import CatSelection, ConsumerAccess
from .context import SegmentContext
from .order import Ordering, needed_positions

Choice = tuple[Access, int]  # an access and the number of channels its consumer needs


@dataclass(frozen=True, kw_only=True)
class Accesses:
    consumers: tuple[ConsumerAccess, ...]
    cat_selections: tuple[CatSelection, ...]
    physical: Mapping[str, tuple[int, ...]]  # the ordering's, with absorbed chains narrowed to their selection


def consumer_accesses(context: SegmentContext, reads: tuple[Read, ...], ordering: Ordering) -> Accesses:
    physical = dict(ordering.physical)
    kept = frozenset(c for layout in ordering.layouts.values() for _, c in layout)
    choices: dict[str, Choice] = {}
    selections = []
    for read in reads:
        needed = needed_positions(read, ordering.positions[read.source], kept)
        access: Access = Full()
        if not context.policy.whole_reads:
            access = choose_access(ordering.layouts[read.source], needed, allow_narrow=context.policy.narrow)
        absorb = read.reader in context.absorbable and not isinstance(access, Full)
        if context.policy.by_latency and not isinstance(access, Full):
            access, absorb = _choose_by_latency(context, read, access, len(needed), physical)
        if absorb:
            selections.append(_absorb(context, read, _columns(access, physical[read.source]), physical))
            access = Full()
        choices[read.reader] = (access, len(needed))
    if context.policy.share_gathers:
        choices.update(_shared_gathers(context, reads, choices))
    absorbed = {selection.consumer: selection for selection in selections}
    consumers = _consumer_accesses(context, reads, choices, ordering, physical, absorbed)
    return Accesses(consumers=consumers, cat_selections=tuple(selections), physical=physical)


def _consumer_accesses(
    context: SegmentContext, reads: tuple[Read, ...], choices: Mapping[str, Choice], ordering: Ordering,
    physical: Mapping[str, tuple[int, ...]], absorbed: Mapping[str, CatSelection],
) -> tuple[ConsumerAccess, ...]:  # fmt: skip
    accesses: list[ConsumerAccess] = []
    gathers: dict[tuple[str, tuple[int, ...]], str] = {}  # one gather per distinct (source, indices)
    for read in reads:
        access, channels_needed = choices[read.reader]
        copied, shared = 0, None
        if isinstance(access, Gather):
            shared = gathers.get((read.source, access.indices))
            copied = 0 if shared else len(access.indices) * read.elements_per_channel
            gathers.setdefault((read.source, access.indices), read.reader)
        layout, selection = context.analysis.layouts[read.source], absorbed.get(read.reader)
        available = len(ordering.layouts[read.source])
        if selection is not None:
            seconds = _selection_seconds(context, selection)
        else:
            seconds = 0.0 if shared else read_seconds(context, read, access, channels_needed, available)
        accesses.append(
            ConsumerAccess(
                node=read.reader, source=read.source, axis=layout.axis, repeat=layout.repeat, access=access,
                columns=_columns(access, physical[read.source]), copied_elements=copied, shared_with=shared,
                channels_needed=channels_needed, channels_available=available,
                absorbed_into=selection.cat if selection else None, element_size=read.element_size,
                groups=read.groups, predicted_seconds=seconds,
                not_absorbed=read.reader in context.absorbable and selection is None and not isinstance(access, Full),
            )
        )  # fmt: skip
    return tuple(accesses)


def _selection_seconds(context: SegmentContext, selection: CatSelection) -> float:
    """What concatenating a selection costs beyond the whole inputs: a view and a cat input per partial piece."""
    cost = context.pricing.cost_model
    partial = sum(not piece.whole for piece in selection.pieces)
    return partial * cost.view_seconds + max(0, len(selection.pieces) - _cat_inputs(context, selection.cat)) * (
        cost.input_seconds
    )


def _cat_inputs(context: SegmentContext, cat: str) -> int:
    role = context.analysis.roles[cat]
    assert isinstance(role, Concat), "an absorbing chain starts at a cat"
    return len(role.inputs)


def _shared_gathers(context: SegmentContext, reads: tuple[Read, ...], choices: Mapping[str, Choice]) -> dict:
    """Consumers gathering from one tensor share gathers ordered so that each reads a contiguous range."""
    by_source: dict[str, dict[str, tuple[int, ...]]] = {}
    for read in reads:
        access = choices[read.reader][0]
        if not _narrows_are_views(context, read.source):
            continue
        if isinstance(access, Gather) and read.groups == 1:  # a grouped read keeps its groups' order
            by_source.setdefault(read.source, {})[read.reader] = access.indices
    updates = {}
    for needs in by_source.values():
        if len(needs) > 1:
            for reader, shared in share_gathers(needs).items():
                updates[reader] = (shared, choices[reader][1])
    return updates


def _narrows_are_views(context: SegmentContext, source: str) -> bool:
    """Whether a channel range of a tensor shaped like ``source`` is contiguous: only if every axis before the
    channel axis has size 1 (batch 1, at the example inputs). Otherwise the convolution reading it copies it into
    a contiguous buffer, so a consumer reading a range of a shared gather would copy its channels twice."""
    shape = context.analysis.nodes[source].meta["tensor_meta"].shape
    return math.prod(shape[: context.analysis.layouts[source].axis]) == 1


def _absorb(
    context: SegmentContext, read: Read, selected: tuple[int, ...], physical: dict[str, tuple[int, ...]]
) -> CatSelection:
    """Narrow the chain from the cat to the consumer down to ``selected`` (original positions, in order)."""
    chain = context.absorbable[read.reader]
    pieces = cat_pieces(context.analysis, chain[0], selected, physical)
    for name in chain:
        physical[name] = selected
    return CatSelection(cat=chain[0], pieces=pieces, consumer=read.reader)


def _choose_by_latency(
    context: SegmentContext, read: Read, exact: Access, needed: int, physical: dict[str, tuple[int, ...]]
) -> tuple[Access, bool]:
    """The access predicted fastest, and whether the exact selection is instead absorbed into a cat."""
    plain = _cheapest_read(context, read, exact, needed, len(physical[read.source]))
    if read.reader in context.absorbable:
        if _absorbs(context, read, plain, _columns(exact, physical[read.source]), needed, physical):
            return exact, True
    return plain, False


def _cheapest_read(context: SegmentContext, read: Read, access: Access, needed: int, available: int) -> Access:
    """Of ``access`` (the exact range or gather), the smallest range enclosing a gather's channels and the whole
    tensor, both read through zero weight columns, the one the cost model predicts fastest."""
    candidates = [access]
    if context.pricing.zero_columns and read.macs_per_channel and read.groups == 1:
        if isinstance(access, Gather):
            first, last = access.indices[0], access.indices[-1]
            candidates.append(Narrow(first, last - first + 1))
        candidates.append(Full())
    return min(candidates, key=lambda candidate: read_seconds(context, read, candidate, needed, available))


def read_seconds(context: SegmentContext, read: Read, access: Access, needed: int, available: int) -> float:
    """Predicted seconds ``read`` spends on its access: a gather's copy, a range's view (and the copy a
    convolution makes of a strided one), and the multiply-adds of channels read through zero weight columns."""
    cost = context.pricing.cost_model
    channel_bytes = read.elements_per_channel * read.element_size
    if isinstance(access, Gather):
        return 0.0 if access.within else cost.gather(len(access.indices) * channel_bytes)
    length = access.length if isinstance(access, Narrow) else available
    extra = cost.zero_columns(max(0, length - needed) * read.macs_per_channel)
    if isinstance(access, Full):
        return extra
    return extra + cost.narrow(length * channel_bytes, _narrows_are_views(context, read.source))


def _absorbs(
    context: SegmentContext, read: Read, plain: Access, selected: tuple[int, ...], needed: int,
    physical: dict[str, tuple[int, ...]],
) -> bool:  # fmt: skip
    """Whether concatenating only ``selected`` (one view per partial piece) and running the per-channel ops on
    them is predicted faster than the whole cat, the ops on every channel, and the ``plain`` read."""
    cost = context.pricing.cost_model
    chain = context.absorbable[read.reader]
    pieces = cat_pieces(context.analysis, chain[0], selected, physical)
    channels, cat_bytes = len(physical[chain[0]]), context.analysis.channel_bytes(chain[0])
    absorbed = cost.cat(sum(not p.whole for p in pieces), len(pieces), len(selected) * cat_bytes)
    whole = cost.cat(0, _cat_inputs(context, chain[0]), channels * cat_bytes)
    for name in chain[1:]:
        absorbed += cost.pointwise(len(selected) * context.analysis.channel_bytes(name))
        whole += cost.pointwise(channels * context.analysis.channel_bytes(name))
    return absorbed <= whole + read_seconds(context, read, plain, needed, len(physical[read.source]))


def _columns(access: Access, physical: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(access, Full):
        return physical
    if isinstance(access, Narrow):
        return physical[access.start : access.start + access.length]
    return tuple(physical[i] for i in access.selected)
