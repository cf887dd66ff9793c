"""Which front end turns a model into the graph fx_upscale analyses: ``symbolic_trace`` or ``torch.export``.

- ``"symbolic_trace"``: ``torch.fx.symbolic_trace`` (torch-level graph: ``call_module`` Conv2d, ``F.relu``, tensor
  methods). Leaf modules and registered module types stay whole.
- ``"torch.export"``: ``torch.export.export`` (aten-level graph, as ``ExportedProgram.module()`` gives it: parameters
  as ``get_attr``, ``aten.conv2d.default`` ...). It captures forwards with control flow on shapes and loops over
  submodule outputs, which symbolic tracing cannot.
- ``"auto"`` (the default): symbolic tracing, unless it fails or its graph does not reproduce the module's outputs
  on the example inputs; then ``torch.export``.

A ``GraphModule`` is used as it is (``"graph_module"``); an ``ExportedProgram`` gives its module (``"torch.export"``).
Start reading at :func:`capture_graph`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_flatten

from .capture_hints import export_failure
from .errors import TracingError

Capture = Literal["auto", "symbolic_trace", "torch.export"]
CAPTURES: tuple[Capture, ...] = ("auto", "symbolic_trace", "torch.export")
Captured = Literal["symbolic_trace", "torch.export", "graph_module"]


@dataclass(frozen=True)
class CapturedGraph:
    graph_module: fx.GraphModule  # a private graph over a private copy of the model's parameters
    capture: Captured  # the front end that made it
    fallback_reason: str | None = None  # "auto": why symbolic tracing was not used


def check_capture(capture: str) -> Capture:
    if capture not in CAPTURES:
        raise ValueError(f"capture must be one of {CAPTURES}, not {capture!r}")
    return cast(Capture, capture)


def capture_graph(
    model: nn.Module, inputs: tuple[Any, ...], capture: Capture, symbolic_trace: Callable[[nn.Module], fx.GraphModule]
) -> CapturedGraph:
    """The graph of ``model`` (a private copy in eval mode) by the front end ``capture`` asks for.

    ``symbolic_trace`` traces a module (with the caller's leaf-module policy); it raises ``TracingError``."""
    if isinstance(model, fx.GraphModule):
        return CapturedGraph(model, "graph_module")
    if capture == "symbolic_trace":
        return CapturedGraph(symbolic_trace(model), "symbolic_trace")
    if capture == "torch.export":
        return CapturedGraph(export_graph(model, inputs), "torch.export")
    try:
        traced = symbolic_trace(model)
        reason = _mismatch(model, traced, inputs)
    except TracingError as error:
        reason = str(error)
    if reason is None:
        return CapturedGraph(traced, "symbolic_trace")
    try:
        return CapturedGraph(export_graph(model, inputs), "torch.export", reason)
    except TracingError as error:
        raise TracingError(f"{error}. symbolic_trace could not be used either: {reason}") from error


def export_graph(model: nn.Module, inputs: tuple[Any, ...]) -> fx.GraphModule:
    """``torch.export.export(model, inputs).module()`` in eval mode, or a :class:`TracingError` saying why not."""
    try:
        program = torch.export.export(model.eval(), inputs)
    except Exception as error:  # torch.export raises many kinds of errors; all mean "cannot capture"
        raise TracingError(export_failure(model, error)) from error
    return module_of(program)


def module_of(program: torch.export.ExportedProgram) -> fx.GraphModule:
    """The runnable GraphModule of an ExportedProgram, in eval mode.

    ``ExportedProgram.module()`` refuses ``train()`` / ``eval()`` (its graph fixed the mode when it was captured:
    ``aten.batch_norm(..., training=False)``); the flags are set anyway, so that fx_upscale's copies report the
    mode their graph computes."""
    graph_module = program.module()
    assert isinstance(graph_module, fx.GraphModule)  # ExportedProgram.module() unlifts into a GraphModule
    allow_mode_changes(graph_module)
    return graph_module.eval()


def allow_mode_changes(graph_module: fx.GraphModule) -> None:
    """Undo ``ExportedProgram.module()``'s instance-level ``train`` / ``eval`` that raise ``NotImplementedError``."""
    for name in ("train", "eval"):
        graph_module.__dict__.pop(name, None)


def _mismatch(model: nn.Module, traced: fx.GraphModule, inputs: tuple[Any, ...]) -> str | None:
    """Why ``traced`` does not stand for ``model`` on ``inputs`` (``None`` if it reproduces its outputs)."""
    with torch.no_grad():
        try:
            expected = model.eval()(*inputs)
        except Exception:  # the inputs do not fit the model itself: shape propagation reports that, clearly
            return None
        try:
            actual = traced.eval()(*inputs)
        except Exception as error:  # a traced graph that does not run (shape-dependent code baked in)
            return f"the symbolically traced graph does not run on the example inputs: {type(error).__name__}"
    if not _same_outputs(expected, actual):
        return "the symbolically traced graph does not reproduce the model's outputs on the example inputs"
    return None


def _same_outputs(expected: Any, actual: Any) -> bool:
    """Equal structure and values; an ``OrderedDict`` equals the plain ``dict`` a traced graph returns for it (a
    torchvision backbone's features)."""
    flat_expected, spec_expected = tree_flatten(_plain_dicts(expected))
    flat_actual, spec_actual = tree_flatten(_plain_dicts(actual))
    if spec_expected != spec_actual:
        return False
    return all(_same(e, a) for e, a in zip(flat_expected, flat_actual))


def _plain_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain_dicts(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_plain_dicts(item) for item in value)
    return value


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        return expected.shape == actual.shape and torch.allclose(expected, actual, rtol=1e-5, atol=1e-6, equal_nan=True)
    return bool(expected == actual)
