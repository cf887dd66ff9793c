"""Planning: from the channel analysis and an export mode to a :class:`~fx_upscale.plan_types.ChannelPlan`.

Each segment (``segments.py``) is planned on its own, in three pure stages over one :class:`SegmentContext`
(``context.py``), with the mode expressed as a :class:`Policy` (``policy.py``):

1. ``keep.py``: which channel classes are kept (:func:`kept_channels`);
2. ``order.py``: the ordering problem, the orders chosen (``ordering.py``) and each tensor's physical layout
   (:func:`order_channels`);
3. ``access.py``: each consumer's access and the selections absorbed into cats (:func:`consumer_accesses`).

Then every node's handler says what the plan changes at it (parameter slices, attribute and argument updates).
Start reading at :func:`plan_channels`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..channels import ChannelAnalysis
from ..layouts import Read
from ..ops import RewriteContext, Updates
from ..plan_types import ChannelPlan, SegmentPlan
from ..segments import Segment
from .access import Accesses, consumer_accesses
from .context import Pricing, SegmentContext, check_barriers, segment_context
from .keep import KeptChannels, kept_channels
from .order import Ordering, order_channels
from .policy import POLICIES, Policy, policy_for

__all__ = [
    "POLICIES",
    "Accesses",
    "Pricing",
    "KeptChannels",
    "Ordering",
    "Policy",
    "SegmentContext",
    "consumer_accesses",
    "kept_channels",
    "order_channels",
    "plan_channels",
    "plan_segment",
    "segment_contexts",
    "policy_for",
    "segment_context",
]


def plan_channels(
    analysis: ChannelAnalysis, segments: tuple[Segment, ...], mode: str, on_unsupported: str = "raise",
    pricing: Pricing | None = None,
) -> ChannelPlan:  # fmt: skip
    """The :class:`ChannelPlan` for ``mode`` over every segment; ``pricing`` (default: the default cost model, no
    zero-column reads) prices the accesses."""
    policy = policy_for(mode)
    if on_unsupported not in ("raise", "freeze"):
        raise ValueError(f"on_unsupported must be 'raise' or 'freeze', not {on_unsupported!r}")
    physical: dict[str, tuple[int, ...]] = {}
    segment_plans = []
    for context in segment_contexts(analysis, segments, policy, pricing):
        segment_plan, segment_physical = plan_segment(context, on_unsupported)
        segment_plans.append(segment_plan)
        physical.update(segment_physical)
    updates = _parameter_updates(analysis, physical, segment_plans)
    return ChannelPlan(
        mode=policy.mode, segments=tuple(segment_plans), physical=physical, param_slices=tuple(updates.slices),
        attr_updates=tuple(updates.attrs), arg_updates=tuple(updates.args),
    )  # fmt: skip


def segment_contexts(
    analysis: ChannelAnalysis, segments: tuple[Segment, ...], policy: Policy, pricing: Pricing | None = None
) -> list[SegmentContext]:
    """One :class:`SegmentContext` per segment, in order: what each stage reads."""
    owners: dict[int, set[str]] = {}
    for i, owner in analysis.owner.items():
        owners.setdefault(analysis.class_of[i], set()).add(owner)
    owners_of = {c: frozenset(names) for c, names in owners.items()}
    reads_of: dict[str, list[Read]] = {}
    for read in analysis.reads:
        reads_of.setdefault(read.source, []).append(read)
    contexts = []
    pricing = pricing or Pricing()
    for segment in segments:
        reads = tuple(read for name in segment.tensors for read in reads_of.get(name, ()))
        contexts.append(segment_context(analysis, segment, policy, reads, owners_of, pricing))
    return contexts


def plan_segment(context: SegmentContext, on_unsupported: str) -> tuple[SegmentPlan, Mapping[str, tuple[int, ...]]]:
    """One segment's plan and its tensors' kept channels in physical order: the three stages in turn."""
    frozen_by = check_barriers(context, on_unsupported)
    kept = kept_channels(context)
    ordering = order_channels(context, kept)
    accesses = consumer_accesses(context, kept.consumer_reads, ordering)
    segment = context.segment
    plan = SegmentPlan(
        index=segment.index, producers=_producers(context),
        consumers=accesses.consumers, channels=len(segment.classes), kept=len(kept.kept),
        extra_pruned=kept.extra_pruned, frozen_by=frozen_by, cat_selections=accesses.cat_selections,
        kept_for_groups=kept.kept_for_groups,
    )  # fmt: skip
    return plan, accesses.physical


def _producers(context: SegmentContext) -> tuple[str, ...]:
    analysis = context.analysis
    return tuple(o for o in context.segment.owners if analysis.handler(o).creates_channels(analysis.roles[o]))


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
