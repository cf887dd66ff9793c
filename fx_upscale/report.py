"""ExportReport: what an export did, in numbers, per segment and per consumer.

Built by :func:`build_report` from the plan and the exported module; every count is read from the plan or the
generated graph (``gathers`` is the number of ``index_select`` nodes fx_upscale inserted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx as fx

from .plan_types import ChannelPlan, ConsumerAccess, Full, Gather, Narrow, SegmentPlan

AccessKind = Literal["full", "narrow", "gather", "absorbed"]
_ACCESS_KINDS: dict[type, AccessKind] = {Full: "full", Narrow: "narrow", Gather: "gather"}


@dataclass(frozen=True)
class ConsumerReport:
    node: str
    source: str
    access: AccessKind
    channels_read: int
    channels_needed: int
    channels_available: int
    copied_elements: int
    copied_bytes: int
    reason: str
    predicted_seconds: float = 0.0  # what its access costs per forward, predicted (cost_model.py)


@dataclass(frozen=True)
class SegmentReport:
    index: int
    producers: tuple[str, ...]
    channels: int
    kept: int
    extra_pruned: int
    consumers: tuple[ConsumerReport, ...]
    frozen_by: tuple[str, ...]
    kept_for_groups: int = 0


@dataclass(frozen=True)
class ExportReport:
    mode: str
    gathers: int
    narrows: int
    copied_elements: int  # elements the inserted gathers copy per forward at the example inputs
    copied_bytes: int
    absorbed: int  # consumers whose selection a cat now makes (no copy inserted)
    params_before: int
    params_after: int
    extra_pruned_channels: int  # mode "constrained": channels dropped beyond the spec
    kept_for_groups: int  # channels no consumer needs, kept so that the groups of grouped convs stay equal
    segments: tuple[SegmentReport, ...]
    frozen: tuple[str, ...]  # unknown ops whose channels were kept (on_unsupported="freeze")
    export_seconds: float
    capture: str = "symbolic_trace"  # the front end that made the graph: symbolic_trace, torch.export, graph_module
    predicted_access_seconds: float = 0.0  # the consumers' accesses per forward, predicted by the cost model
    cost_model: str = ""  # the cost model the accesses were priced with: its key and source

    @property
    def predicted_access_ms(self) -> float:
        return 1000 * self.predicted_access_seconds

    def summary(self) -> str:
        """One line of the headline numbers."""
        return (
            f"{self.mode}: params {self.params_after:,}/{self.params_before:,} "
            f"({100 * self.params_after / max(1, self.params_before):.1f}%), gathers {self.gathers}, "
            f"narrows {self.narrows}, copied elements {self.copied_elements:,}, absorbed {self.absorbed}, "
            f"extra pruned channels {self.extra_pruned_channels}, kept for groups {self.kept_for_groups}, "
            f"{self.export_seconds:.2f} s, captured by {self.capture}, accesses predicted "
            f"{self.predicted_access_ms:.3f} ms"
        )


def build_report(
    plan: ChannelPlan, module: fx.GraphModule, params_before: int, seconds: float, capture: str = "symbolic_trace",
    cost_model: str = "",
) -> ExportReport:  # fmt: skip
    inserted = [node for node in module.graph.nodes if "upscale" in node.meta and "access" in node.meta["upscale"]]
    segments = tuple(_segment_report(segment) for segment in plan.segments)
    return ExportReport(
        mode=plan.mode,
        gathers=sum(node.target is torch.index_select for node in inserted),
        narrows=sum(node.target is torch.narrow for node in inserted),
        copied_elements=sum(a.copied_elements for a in plan.accesses),
        copied_bytes=sum(a.copied_bytes for a in plan.accesses),
        absorbed=len(plan.cat_selections),
        params_before=params_before,
        params_after=count_parameters(module),
        extra_pruned_channels=sum(segment.extra_pruned for segment in plan.segments),
        kept_for_groups=sum(segment.kept_for_groups for segment in plan.segments),
        segments=segments,
        frozen=tuple(name for segment in plan.segments for name in segment.frozen_by),
        export_seconds=seconds,
        capture=capture,
        predicted_access_seconds=sum(a.predicted_seconds for a in plan.accesses),
        cost_model=cost_model,
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _segment_report(segment: SegmentPlan) -> SegmentReport:
    consumers = tuple(_consumer_report(access) for access in segment.consumers)
    return SegmentReport(
        segment.index, segment.producers, segment.channels, segment.kept, segment.extra_pruned, consumers,
        segment.frozen_by, segment.kept_for_groups,
    )  # fmt: skip


def _consumer_report(access: ConsumerAccess) -> ConsumerReport:
    kind = _ACCESS_KINDS[type(access.access)]
    read = len(access.columns)
    if access.absorbed_into:
        kind = "absorbed"
        reason = f"cat {access.absorbed_into!r} concatenates only the {read} channels it needs, from narrow views"
    elif isinstance(access.access, (Full, Narrow)) and read > access.channels_needed:
        what = "every channel its input keeps" if isinstance(access.access, Full) else f"a range of {read} channels"
        reason = (
            f"reads {what}, the {read - access.channels_needed} it does not need through zero weight columns: "
            "predicted faster than a gather"
        )
    elif isinstance(access.access, Full):
        reason = "reads every channel its input keeps"
    elif isinstance(access.access, Narrow):
        reason = f"the {read} channels it needs are contiguous: a view"
    elif access.not_absorbed:
        reason = (
            f"gathers {read} of {access.channels_available} channels after its cat: predicted faster than the cat "
            "concatenating only them from views"
        )
    elif access.groups > 1:
        reason = (
            f"a convolution with {access.groups} groups reads its {read} channels as equal blocks in group order, "
            "which keep their original order; other consumers' channels lie between them"
        )
    elif access.shared_with:
        reason = f"reads {read} channels of the gather of {access.shared_with}, as a contiguous range"
    else:
        assert isinstance(access.access, Gather)
        reason = (
            f"needs {read} of {access.channels_available} channels; forced: no channel order keeps them contiguous "
            "together with the heavier consumers read as views"
        )
        if access.access.within is not None:
            reason += f"; its gather copies {len(access.access.indices)}, shared by other consumers"
    return ConsumerReport(
        access.node, access.source, kind, read, access.channels_needed, access.channels_available,
        access.copied_elements, access.copied_bytes, reason, access.predicted_seconds,
    )  # fmt: skip
