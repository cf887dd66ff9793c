"""export(): the whole pipeline, from a model and example inputs to a physically pruned GraphModule.

trace (private copy) -> :func:`plan` (analyse channels, find segments, plan for a mode) -> ChannelReorderPass ->
CleanupPass.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.infra.pass_manager import PassManager

from .channels import analyse_channels
from .passes import ChannelReorderPass, CleanupPass
from .planning import ChannelPlan, plan_channels
from .report import ExportReport, build_report, count_parameters
from .segments import find_segments
from .spec import PruneSpec
from .tracing import normalize_inputs, trace


@dataclass(frozen=True)
class ExportResult:
    module: fx.GraphModule  # physically pruned and reordered; computes what the masked model computes
    report: ExportReport
    plan: ChannelPlan


def export(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    spec: PruneSpec | None = None,
    mode: str = "upscale",
    on_unsupported: str = "raise",
    leaf_modules: Iterable[str] = (),
) -> ExportResult:
    """Export ``model`` with the channels of ``spec`` physically removed.

    ``spec=None`` reads the spec from the model's all-zero weight slices. ``mode`` is ``"upscale"`` (reorder
    channels to avoid copies; the default), ``"baseline"`` (no reordering; a gather for every consumer that reads a
    subset) or ``"constrained"`` (no copies; drops every channel some consumer of its group does not need, so the
    output may differ from the masked model: see ``report.extra_pruned_channels``). ``on_unsupported="freeze"``
    keeps every channel that crosses an op fx_upscale cannot map, instead of raising. ``leaf_modules`` names
    submodules not to trace into. The caller's model is never modified.
    """
    start = time.perf_counter()
    inputs = normalize_inputs(example_inputs)
    masked = spec.apply(model) if spec is not None else model
    graph_module = trace(masked, inputs, leaf_modules, copy=spec is None)
    channel_plan = plan(graph_module, mode=mode, on_unsupported=on_unsupported)
    params_before = count_parameters(graph_module)
    PassManager([ChannelReorderPass(channel_plan), CleanupPass()])(graph_module)
    report = build_report(channel_plan, graph_module, params_before, time.perf_counter() - start)
    return ExportResult(graph_module, report, channel_plan)


def plan(graph_module: fx.GraphModule, *, mode: str = "upscale", on_unsupported: str = "raise") -> ChannelPlan:
    """The :class:`ChannelPlan` for a shape-annotated GraphModule holding masked weights (see ``tracing.trace``).

    Apply it with ``PassManager([ChannelReorderPass(plan), CleanupPass()])(graph_module)``.
    """
    analysis = analyse_channels(graph_module)
    return plan_channels(analysis, find_segments(analysis), mode, on_unsupported)
