"""Stage 1 of planning a segment: which channel classes are kept.

:func:`kept_channels` keeps what some consumer needs, plus the pinned classes. With ``policy.whole_reads`` (mode
``constrained``) a class survives only if *every* consumer reading it needs it, so that all consumers can read
their whole input. Grouped convolutions and ``chunk`` pieces then get equal widths: narrower groups keep extra
channels, read through zero weight columns so the result stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..layouts import Read
from ..ops import Grouped, Slice, Split, SplitPiece
from .context import SegmentContext


@dataclass(frozen=True, kw_only=True)
class KeptChannels:
    kept: frozenset[int]
    extra_pruned: int  # classes a consumer needed that whole reads dropped
    kept_for_groups: int  # classes no consumer needed, kept so every group of a grouped conv has equal width
    consumer_reads: tuple[Read, ...]  # the segment's consumer reads, a grouped read's ``needed`` padded to its groups


def kept_channels(context: SegmentContext) -> KeptChannels:
    needed = _keep_a_channel_per_producer(context, _needed_classes(context))
    kept = needed
    if context.policy.whole_reads:
        revived = _revive_producers(context, _agreed_classes(context), needed)
        kept = _keep_a_channel_per_reader(context, revived, preferred=needed)
    equal, reads = _equalize_groups(context, kept)
    return KeptChannels(
        kept=equal, extra_pruned=len(needed - equal), kept_for_groups=len(equal - kept), consumer_reads=reads
    )


def _needed_classes(context: SegmentContext) -> frozenset[int]:
    kept = set(context.pinned)
    for read in context.consumer_reads:
        kept |= context.classes_read(read, only_needed=True)
    return frozenset(kept)


def _agreed_classes(context: SegmentContext) -> frozenset[int]:
    """Classes every consumer reading them needs (and the pinned ones)."""
    kept, vetoed = set(context.pinned), set()
    for read in context.consumer_reads:
        needed = context.classes_read(read, only_needed=True)
        kept |= needed
        vetoed |= context.classes_read(read, only_needed=False) - needed
    return frozenset(kept - (vetoed - context.pinned))


def _producer_classes(context: SegmentContext) -> list[tuple[int, ...]]:
    analysis = context.analysis
    return [
        analysis.classes(o) for o in context.segment.owners if analysis.handler(o).creates_channels(analysis.roles[o])
    ]


def _keep_a_channel_per_producer(context: SegmentContext, kept: frozenset[int]) -> frozenset[int]:
    """A producer none of whose channels is needed (e.g. its rows masked on one side and its consumers' columns on
    the other) keeps its first channel rather than vanishing; consumers read it through zero weight columns, so
    the result stays exact."""
    extra = {classes[0] for classes in _producer_classes(context) if not set(classes) & kept}
    return _keep_a_channel_per_reader(context, kept | extra, preferred=frozenset())


def _keep_a_channel_per_reader(
    context: SegmentContext, kept: frozenset[int], preferred: frozenset[int]
) -> frozenset[int]:
    """A slice or split piece, or a consumer reading one, none of whose channels is kept keeps one (a
    ``preferred`` one if it can) rather than an empty tensor; whoever reads it reads it through a zero weight
    column, or not at all."""
    analysis = context.analysis
    pieces = [name for name in context.segment.tensors if isinstance(analysis.roles[name], (Slice, SplitPiece))]
    extra: set[int] = set()
    for name in [read.source for read in context.consumer_reads] + pieces:
        classes = analysis.classes(name)
        if not set(classes) & (kept | extra):
            extra.add(next((c for c in classes if c in preferred), classes[0]))
    return kept | extra


def _revive_producers(context: SegmentContext, kept: frozenset[int], needed: frozenset[int]) -> frozenset[int]:
    """Whole reads must not delete a producer outright: keep what its consumers need of it. Consumers that do not
    need those channels read them through zero weight columns, so no copy is added."""
    revived = set(kept)
    for classes in _producer_classes(context):
        if not set(classes) & kept:
            revived |= set(classes) & needed
    return frozenset(revived)


def _equalize_groups(context: SegmentContext, kept: frozenset[int]) -> tuple[frozenset[int], tuple[Read, ...]]:
    """Every group of a grouped convolution (and every ``chunk`` piece) must keep the same number of channels,
    on both sides. Narrower groups keep extra channels until they are as wide as the widest; a grouped read's
    padded ``needed`` replaces its read. Keeping a channel can widen another group (tied channels), so this runs to
    a fixed point; it only ever adds channels."""
    analysis = context.analysis
    kept_set, reads = set(kept), list(context.consumer_reads)
    grouped_owners = [(analysis.classes(o), r.groups) for o in context.segment.owners
                      if isinstance(r := analysis.roles[o], Grouped)]  # fmt: skip
    chunks = [(analysis.classes(split.data), len(split.sections)) for split in _channel_chunks(context)]
    changed = True
    while changed:
        changed = False
        for index, read in enumerate(reads):
            if read.groups > 1:
                padded = _pad_grouped_read(context, read, kept_set)
                changed |= padded != read
                reads[index] = padded
        for classes, groups in grouped_owners + chunks:
            changed |= _pad_groups(classes, groups, kept_set)
    return frozenset(kept_set), tuple(reads)


def _channel_chunks(context: SegmentContext) -> list[Split]:
    """``chunk`` ops cutting a tensor of this segment along its channel axis: equal pieces, before and after."""
    analysis, tensors = context.analysis, set(context.segment.tensors)
    chunks = []
    for name in analysis.order:
        role = analysis.roles[name]
        if isinstance(role, Split) and role.chunks and role.data in tensors:
            if analysis.layouts[role.data].axis == role.dim:
                chunks.append(role)
    return chunks


def _pad_grouped_read(context: SegmentContext, read: Read, kept: set[int]) -> Read:
    classes = context.analysis.classes(read.source)
    if context.policy.whole_reads:  # reads its whole input: the tensor's kept channels must fill equal groups
        _pad_groups(classes, read.groups, kept)
        return read
    needed = {p for p, need in enumerate(read.needed) if need and classes[p] in kept}
    _pad_groups(classes, read.groups, kept, needed)
    return replace(read, needed=tuple(p in needed for p in range(len(classes))))


def _pad_groups(classes: tuple[int, ...], groups: int, kept: set[int], chosen: set[int] | None = None) -> bool:
    """Pad each group of positions of ``classes`` to the width of the widest, adding to ``kept`` (and to
    ``chosen``). Groups are counted by ``chosen`` positions, or by kept classes when ``chosen`` is ``None``;
    padding prefers positions whose class is kept anyway. Returns whether ``kept`` grew.

    >>> kept = {10, 11, 13}
    >>> _pad_groups((10, 11, 12, 13, 14, 15), 2, kept), sorted(kept)
    (True, [10, 11, 13, 14])
    """
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
