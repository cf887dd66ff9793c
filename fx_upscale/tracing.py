"""Turning the user's model into a GraphModule we own, annotated with shapes.

:func:`trace` checks that the model has data (not on the meta device) and that the example inputs fit its
``forward``, deep-copies the model (the caller's model is never mutated), symbolically traces it with stack traces
recorded (so errors can point at source lines), removes dead code, and runs the copy on the example inputs so every
node carries ``meta["tensor_meta"]``. Which front end captures the graph (symbolic tracing or ``torch.export``) is
``capture.py``'s. Every failure on the way is a :class:`TracingError` naming the culprit.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from copy import deepcopy
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from .capture import CapturedGraph, allow_mode_changes, capture_graph, check_capture, module_of
from .capture_hints import detection_hint
from .errors import TracingError, describe_node
from .folding import fold_constant_subgraphs
from .ops import HandlerTable, default_handlers
from .recompose import recompose_core_aten


class _Tracer(fx.Tracer):
    """A tracer that records stack traces and treats the named submodules as leaves."""

    def __init__(self, leaf_modules: Iterable[str], handlers: HandlerTable) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.leaf_names = frozenset(leaf_modules)
        self.handlers = handlers

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or self.handlers.is_leaf(module):
            return True
        return super().is_leaf_module(module, qualname)


def normalize_inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple (a lone tensor is wrapped)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def trace(
    model: nn.Module | torch.export.ExportedProgram,
    example_inputs: tuple[torch.Tensor, ...],
    leaf_modules: Iterable[str] = (),
    copy: bool = True,
    handlers: HandlerTable | None = None,
    capture: str = "auto",
) -> fx.GraphModule:
    """A shape-annotated GraphModule over ``model`` in eval mode; over a private copy unless ``copy=False``.

    ``capture`` chooses the front end (``capture.py``): ``"auto"``, ``"symbolic_trace"`` or ``"torch.export"``;
    an ``ExportedProgram`` gives its module (its graph, as ``torch.export`` captured it).
    Raises :class:`TracingError` for a model on the meta device, a ``forward`` no front end captures, or example
    inputs that do not fit the model (their number, shape, dtype or device).
    """
    return capture_model(model, example_inputs, leaf_modules, copy, handlers, capture).graph_module


def capture_model(
    model: nn.Module | torch.export.ExportedProgram,
    example_inputs: tuple[torch.Tensor, ...],
    leaf_modules: Iterable[str] = (),
    copy: bool = True,
    handlers: HandlerTable | None = None,
    capture: str = "auto",
) -> CapturedGraph:
    """:func:`trace`, saying which front end made the graph (and, for ``"auto"``, why not symbolic tracing)."""
    how = check_capture(capture)
    if isinstance(model, torch.export.ExportedProgram):
        model = module_of(model)
    check_materialized(model, example_inputs)
    if isinstance(model, fx.GraphModule):
        allow_mode_changes(model)  # an ExportedProgram's module() (its graph fixed the mode already)
    if model.training and not _mode_is_fixed(model):
        warnings.warn(
            f"{type(model).__name__} is in training mode; fx_upscale traces a copy of it in eval mode (BatchNorm "
            "uses its running statistics, dropout is off) and leaves the model itself in training mode. Call "
            "model.eval() first to silence this warning",
            stacklevel=3,
        )
    private = deepcopy(model) if copy else model
    table = handlers or default_handlers()
    captured = capture_graph(private, example_inputs, how, lambda m: _symbolic_trace(m, leaf_modules, table))
    gm = captured.graph_module
    if captured.capture == "torch.export" or _mode_is_fixed(gm):
        recompose_core_aten(gm)  # run_decompositions()'s aten.convolution, addmm ... into the default IR's ops
        fold_constant_subgraphs(gm)  # attribute-only subgraphs (a norm's scale and shift computed per call) to buffers
    gm.eval()
    if gm.graph.eliminate_dead_code():
        gm.recompile()
    _check_input_count(gm, example_inputs)
    with torch.no_grad():
        _propagate_shapes(gm, example_inputs)
    return captured


def _mode_is_fixed(model: nn.Module) -> bool:
    """A graph of aten ops (an ExportedProgram's module): train / eval mode was fixed when it was captured."""
    if not isinstance(model, fx.GraphModule):
        return False
    return any(isinstance(node.target, torch._ops.OpOverload) for node in model.graph.nodes)


def check_materialized(model: nn.Module, example_inputs: tuple[Any, ...]) -> None:
    """Raise :class:`TracingError` if a parameter, buffer or example input lives on the meta device (no data)."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.is_meta:
                raise TracingError(
                    f"{kind} {name!r} of {type(model).__name__} is on the meta device: it has no values, and "
                    "fx_upscale reads weight values (zero channels to remove, magnitudes to rank). Materialize the "
                    "model first, e.g. model.to_empty(device='cpu') followed by "
                    "model.load_state_dict(checkpoint), or load the checkpoint with load_state_dict(..., assign=True)"
                )
    for index, value in enumerate(example_inputs):
        if isinstance(value, torch.Tensor) and value.is_meta:
            raise TracingError(
                f"example input {index} is on the meta device: fx_upscale runs the model on the example inputs; "
                f"pass real tensors on the model's device, e.g. torch.randn({', '.join(map(str, value.shape))})"
            )


def _symbolic_trace(model: nn.Module, leaf_modules: Iterable[str], handlers: HandlerTable) -> fx.GraphModule:
    tracer = _Tracer(leaf_modules, handlers)
    try:
        graph = tracer.trace(model)
    except Exception as error:  # any failure of symbolic tracing is reported the same way
        raise TracingError(
            f"torch.fx.symbolic_trace could not trace {type(model).__name__}: {type(error).__name__}: {error}. "
            "Data-dependent control flow cannot be traced; pass leaf_modules=[...] naming the submodules that "
            "contain it (their channels are then kept), or trace the model yourself and pass the GraphModule"
            f"{detection_hint(model)}"
        ) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _check_input_count(gm: fx.GraphModule, example_inputs: tuple[Any, ...]) -> None:
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if any(str(node.target).startswith("*") for node in placeholders):
        return  # forward(*args): any number fits
    required = [node for node in placeholders if not node.args]  # a placeholder's args hold its default
    if len(required) <= len(example_inputs) <= len(placeholders):
        return
    names = ", ".join(str(node.target) for node in placeholders)
    expected = (
        str(len(placeholders)) if len(required) == len(placeholders) else f"{len(required)} to {len(placeholders)}"
    )
    raise TracingError(
        f"{type(gm).__name__}.forward({names}) takes {expected} input(s), but {len(example_inputs)} example "
        "input(s) were given; pass one example tensor per forward argument (a tuple for several)"
    )


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once, storing each tensor result's metadata in ``node.meta["tensor_meta"]`` (as
    ``torch.fx.passes.shape_prop.ShapeProp`` does), each integer or shape result (``x.size(1) // 2``,
    ``x.shape``) in ``node.meta["traced_value"]``, and remembering the node that was running if one fails."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.extra_traceback = False
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        found = False

        def extract(value: Any) -> Any:
            nonlocal found
            if isinstance(value, torch.Tensor):
                found = True
                return _extract_tensor_metadata(value)
            return value

        meta = map_aggregate(result, extract)
        if found:
            n.meta["tensor_meta"] = meta
        if _is_shape_value(result):
            n.meta["traced_value"] = result
        n.meta["type"] = type(result)
        return result


def _is_shape_value(value: Any) -> bool:
    """An int (not a bool) or a tuple of them (``torch.Size``): shape arithmetic a bound may be computed by."""
    if isinstance(value, tuple):
        return all(_is_shape_value(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _propagate_shapes(gm: fx.GraphModule, example_inputs: tuple[Any, ...]) -> None:
    recorder = _ShapeRecorder(gm)
    try:
        recorder.run(*example_inputs)
    except Exception as error:  # the model rejected the example inputs (or failed on them)
        raise TracingError(_run_failure_message(gm, example_inputs, recorder.current, error)) from error


def _run_failure_message(gm: fx.GraphModule, inputs: tuple[Any, ...], node: fx.Node | None, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    where = f" at {describe_node(node)}" if node is not None else ""
    given = "; ".join(f"example input {i}: {_describe_value(value)}" for i, value in enumerate(inputs)) or "none"
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    expected = [text for i, p in enumerate(placeholders) if (text := _expected_input(gm, i, p))]
    return (
        f"running {type(gm).__name__} on the example inputs failed{where}: {type(error).__name__}: {reason}. "
        f"Given {given}. {' '.join(expected)}"
        f"{' ' if expected else ''}Pass example inputs shaped and typed like a real batch of the model's inputs, "
        "in the model's dtype and on its device"
    )


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
    return f"{type(value).__name__} {value!r}"[:80]


def _expected_input(gm: fx.GraphModule, index: int, placeholder: fx.Node) -> str | None:
    """What the first layer with parameters reading input ``index`` expects (channels or features, dtype)."""
    module_name, module = _first_layer(gm, placeholder)
    if module is None:
        return None
    weight = next(module.parameters())
    sizes = [f"{attr}={getattr(module, attr)}" for attr in _SIZE_ATTRIBUTES if hasattr(module, attr)]
    size = f" with {', '.join(sizes)}" if sizes else ""
    return (
        f"Input {index} ({placeholder.target!r}) first reaches {module_name} ({type(module).__name__}{size}; "
        f"weight dtype {weight.dtype}, on {weight.device})."
    )


_SIZE_ATTRIBUTES = ("in_channels", "in_features", "num_features", "normalized_shape", "num_embeddings")


def _first_layer(gm: fx.GraphModule, placeholder: fx.Node) -> tuple[str, nn.Module | None]:
    reached = {placeholder}
    for node in gm.graph.nodes:
        if node in reached or not any(source in reached for source in node.all_input_nodes):
            continue
        reached.add(node)
        if node.op == "call_module":
            module = gm.get_submodule(str(node.target))
            if next(module.parameters(), None) is not None:
                return str(node.target), module
    return "", None
