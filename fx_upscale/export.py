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
import torch.utils._pytree as pytree
from torch import nn

from .capture import module_of
from .channels import ChannelAnalysis, analyse_channels
from .cost_model import CostModel, load_cost_model
from .errors import SpecError, describe_node
from .folding import folded_sources
from .ops import HandlerTable, LayerNorm, PerChannel, Unknown, producer_weights
from .passes import apply_plan
from .plan_types import ChannelPlan
from .planning import Pricing, plan_channels
from .report import ExportReport, build_report, count_parameters
from .segments import find_segments
from .spec import PruneSpec
from .tracing import capture_model, normalize_inputs


@dataclass(frozen=True)
class ExportResult:
    module: fx.GraphModule  # physically pruned and reordered; computes what the masked model computes
    report: ExportReport
    plan: ChannelPlan


def export(
    model: nn.Module | torch.export.ExportedProgram,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    spec: PruneSpec | None = None,
    mode: str = "upscale",
    on_unsupported: str = "raise",
    leaf_modules: Iterable[str] = (),
    handlers: HandlerTable | None = None,
    capture: str = "auto",
    backend: str = "eager",
    cost_model: CostModel | None = None,
    zero_columns: bool = False,
) -> ExportResult:
    """Export ``model`` with the channels of ``spec`` physically removed.

    ``spec=None`` reads the spec from the model's all-zero weight slices. ``mode`` is ``"upscale"`` (reorder
    channels to avoid copies; the default), ``"baseline"`` (no reordering; a gather for every consumer that reads a
    subset) or ``"constrained"`` (no copies; drops every channel some consumer of its group does not need, so the
    output may differ from the masked model: see ``report.extra_pruned_channels``). ``on_unsupported="freeze"``
    keeps every channel that crosses an op fx_upscale cannot map, instead of raising. ``leaf_modules`` names
    submodules not to trace into. ``handlers`` is the handler table saying how channels cross each op (default:
    ``fx_upscale.default_handlers()``). ``capture`` chooses the front end: ``"auto"`` (symbolic tracing, or
    ``torch.export`` when that fails or its graph does not reproduce the model's outputs), ``"symbolic_trace"`` or
    ``"torch.export"``; ``report.capture`` says which made the graph. ``model`` may also be a ``GraphModule`` or
    a ``torch.export.ExportedProgram``. ``backend`` (``"eager"`` or ``"compile"``) is how the export will run: mode
    ``upscale`` chooses each consumer's access by the latency ``cost_model`` predicts for it (default: the
    calibration ``fx-upscale calibrate`` cached for the example inputs' device and dtype, else defaults; see
    ``cost_model.py``); ``zero_columns=True`` lets a consumer read channels it does not need through zero weight
    columns where that is predicted faster than a copy (the export then keeps those columns: more parameters than
    baseline). The caller's model is never modified.
    """
    start = time.perf_counter()
    inputs = normalize_inputs(example_inputs)
    from_program = isinstance(model, torch.export.ExportedProgram)
    if isinstance(model, torch.export.ExportedProgram):
        model = module_of(model)
    masked = spec.apply(model) if spec is not None else model
    captured = capture_model(masked, inputs, leaf_modules, copy=spec is None, handlers=handlers, capture=capture)
    graph_module = captured.graph_module
    analysis = analyse_channels(graph_module, handlers)
    if spec is not None:
        check_output_channels(spec, analysis)
    pricing = Pricing(cost_model or _cost_model_for(inputs, backend), zero_columns)
    channel_plan = plan_channels(analysis, find_segments(analysis), mode, on_unsupported, pricing)
    if spec is not None:
        check_spec_is_read(spec, analysis, folded_sources(graph_module))  # after planning, which names an unmapped
        # op inside a pruned segment
    params_before = count_parameters(graph_module)
    apply_plan(graph_module, channel_plan, handlers=handlers)
    seconds = time.perf_counter() - start
    capture_used = "torch.export" if from_program else captured.capture
    cost = f"{pricing.cost_model.key} ({pricing.cost_model.source})"
    report = build_report(channel_plan, graph_module, params_before, seconds, capture_used, cost)
    return ExportResult(graph_module, report, channel_plan)


def _cost_model_for(inputs: Sequence, backend: str) -> CostModel:
    """The cached calibration (or defaults) for the device and dtype of the first floating-point example input."""
    tensors = [t for t in pytree.tree_leaves(list(inputs)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors:
        return load_cost_model(backend=backend)
    return load_cost_model(tensors[0].device, tensors[0].dtype, backend)


def plan(
    graph_module: fx.GraphModule,
    *,
    mode: str = "upscale",
    on_unsupported: str = "raise",
    handlers: HandlerTable | None = None,
    cost_model: CostModel | None = None,
) -> ChannelPlan:
    """The :class:`ChannelPlan` for a shape-annotated GraphModule holding masked weights (see ``tracing.trace``);
    ``cost_model`` prices the accesses mode ``upscale`` chooses between (default: ``default_cost_model()``).

    Apply it with ``fx_upscale.passes.apply_plan(graph_module, plan)``, or put
    ``fx_upscale.passes.upscale_passes(plan)`` in your own ``PassManager``.
    """
    analysis = analyse_channels(graph_module, handlers)
    pricing = Pricing(cost_model) if cost_model else None  # None: the default cost model
    return plan_channels(analysis, find_segments(analysis), mode, on_unsupported, pricing)


def check_output_channels(spec: PruneSpec, analysis: ChannelAnalysis) -> None:
    """Raise :class:`SpecError` if ``spec`` prunes output channels that end up in the model's output.

    The export never changes the shape of what ``forward`` returns, so it could only keep such channels, silently
    ignoring the spec; it refuses instead. A spec read from zeros (``spec=None``) keeps them without complaint.
    """
    returned: set[int] = set()
    for read in analysis.reads:
        if analysis.nodes[read.reader].op == "output":
            returned.update(analysis.classes(read.source))
    for name, role in analysis.roles.items():
        weight = analysis.handler(name).output_weight(role)
        if weight not in spec.outputs or name not in analysis.layouts:
            continue
        classes = analysis.classes(name)
        hit = sorted(c for c in spec.outputs[weight] if c < len(classes) and classes[c] in returned)
        if hit:
            raise SpecError(
                f"PruneSpec.outputs[{weight!r}] prunes channels {hit[:8]} of {describe_node(analysis.nodes[name])}, "
                "which end up in the model's output (what forward returns): removing them would change the "
                "output's shape. Remove them from the spec (fx_upscale.mask never chooses them); to return fewer "
                "channels, change the model's last layer"
            )


def check_spec_is_read(spec: PruneSpec, analysis: ChannelAnalysis, folded: frozenset[str] = frozenset()) -> None:
    """Raise :class:`SpecError` if ``spec`` names a weight no layer fx_upscale recognises prunes through: its
    channels would silently stay (a layer behind an op no handler maps, a graph whose layers are barriers). The
    buffers ``folded`` into constants (in a ``torch.export`` graph) are read through them."""
    inputs, outputs = set(), set(folded)
    for name, role in analysis.roles.items():
        weights = producer_weights(role)
        if weights is not None:
            inputs.add(weights.weight)
        outputs.add(analysis.handler(name).output_weight(role))
        if isinstance(role, (PerChannel, LayerNorm)):  # a spec may mask a per-channel layer's shift too
            outputs.update(t for t in (role.weight, role.bias) if t is not None)
    unread = sorted(set(spec.inputs) - inputs) + sorted(set(spec.outputs) - outputs)
    if not unread:
        return
    side = "inputs" if unread[0] in spec.inputs and unread[0] not in inputs else "outputs"
    raise SpecError(
        f"PruneSpec.{side}[{unread[0]!r}] names a weight no layer fx_upscale recognises prunes through"
        f"{_unread_reason(unread[0], analysis)}, so its channels would stay. Unread: {unread[:5]}"
        f"{' ...' if len(unread) > 5 else ''}. Fix the op (a handler: fx_upscale.register_pointwise, "
        "register_per_channel, HandlerTable.register_handler) or remove these names from the spec"
    )


def _unread_reason(weight: str, analysis: ChannelAnalysis) -> str:
    """Which node reads ``weight`` and why fx_upscale does not map it, if a node does."""
    owner = weight.rpartition(".")[0]
    for node in analysis.nodes.values():
        attribute = node.op == "get_attr" and str(node.target) == weight
        if attribute or (node.op == "call_module" and node.target == owner):
            reader = next(iter(node.users), node) if attribute else node
            role = analysis.roles.get(reader.name)
            why = f": {role.reason}" if isinstance(role, Unknown) else ""
            return f" ({describe_node(reader)} reads it{why})"
    return " (no node of the graph reads it)"
