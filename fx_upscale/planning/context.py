"""What every planning stage of one segment reads: :class:`SegmentContext`, built once by :func:`segment_context`,
and the barrier check that runs before the stages.

Vocabulary: a *pinned* class is kept, in its original order (graph-input channels, outputs of ops no handler maps,
and whatever a barrier such as the graph output reads); a *consumer read* is a conv/linear (or LayerNorm) input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..channels import ChannelAnalysis
from ..cost_model import CostModel, default_cost_model
from ..errors import UnsupportedOpError, describe_node
from ..layouts import Read
from ..segments import Segment
from .policy import Policy


@dataclass(frozen=True)
class Pricing:
    """How mode ``upscale`` prices accesses: the latency ``cost_model``, and whether a consumer may read channels
    it does not need through zero weight columns (an enclosing range or its whole input instead of a gather: it
    keeps those columns, so the export holds more parameters than baseline's; off by default)."""

    cost_model: CostModel = field(default_factory=default_cost_model)
    zero_columns: bool = False


@dataclass(frozen=True, kw_only=True)
class SegmentContext:
    analysis: ChannelAnalysis
    segment: Segment
    policy: Policy
    reads: tuple[Read, ...]  # every read of a tensor of this segment, consumers' and barriers'
    consumer_reads: tuple[Read, ...]
    owners_of: Mapping[int, frozenset[str]]  # channel class -> the nodes creating its ids
    pinned: frozenset[int]
    absorbable: Mapping[str, tuple[str, ...]]  # consumer -> the chain from a cat to what it reads (policy.absorb)
    pricing: Pricing  # prices each consumer's access (policy.by_latency chooses by it)

    def classes_read(self, read: Read, only_needed: bool) -> set[int]:
        classes = self.analysis.classes(read.source)
        return {c for c, need in zip(classes, read.needed) if need or not only_needed}


def segment_context(
    analysis: ChannelAnalysis, segment: Segment, policy: Policy, reads: tuple[Read, ...],
    owners_of: Mapping[int, frozenset[str]], pricing: Pricing,
) -> SegmentContext:  # fmt: skip
    from ..absorption import absorbing_chain

    consumer_reads = tuple(read for read in reads if read.consumer)
    absorbable: dict[str, tuple[str, ...]] = {}
    if policy.absorb:
        for read in consumer_reads:
            chain = absorbing_chain(analysis, read) if read.groups == 1 else None
            if chain is not None:
                absorbable[read.reader] = chain
    pinned = {analysis.class_of[i] for i in analysis.fixed} & set(segment.classes)
    for read in reads:
        if not read.consumer:
            pinned |= {c for c in analysis.classes(read.source)}
    return SegmentContext(
        analysis=analysis, segment=segment, policy=policy, reads=reads, consumer_reads=consumer_reads,
        owners_of=owners_of, pinned=frozenset(pinned), absorbable=absorbable, pricing=pricing,
    )  # fmt: skip


def check_barriers(context: SegmentContext, on_unsupported: str) -> tuple[str, ...]:
    """The barriers (ops no handler maps) this segment's channels cross, if the segment is pruned at all: with
    ``on_unsupported="freeze"`` they are returned (their channels are pinned), otherwise the first is an
    :class:`~fx_upscale.errors.UnsupportedOpError`."""
    analysis = context.analysis
    barriers = list(dict.fromkeys(read.reader for read in context.reads if read.reader in analysis.barriers))
    if not barriers or not _is_pruned(context):
        return ()
    if on_unsupported == "freeze":
        return tuple(barriers)
    node = analysis.nodes[barriers[0]]
    raise UnsupportedOpError(
        f"{describe_node(node)} is in a segment being pruned, and fx_upscale cannot map channels through it "
        f"({analysis.barriers[node.name]}). Fix: pass on_unsupported='freeze' to keep every channel that "
        "crosses it, make it a leaf module, or declare how channels cross it with "
        "fx_upscale.register_pointwise(target, keeps_zero=...) or fx_upscale.register_per_channel(module_type)"
    )


def _is_pruned(context: SegmentContext) -> bool:
    if any(not all(read.needed) for read in context.consumer_reads):
        return True
    zeros = context.analysis.zeros
    return any(any(zeros[owner]) for owner in context.segment.owners if owner in zeros)
