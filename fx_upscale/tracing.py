"""Turning the user's model into a GraphModule we own, annotated with shapes.

:func:`trace` deep-copies the model (the caller's model is never mutated), symbolically traces it with stack traces
recorded (so errors can point at source lines), removes dead code, and runs shape propagation on the example inputs
so every node carries ``meta["tensor_meta"]``.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from copy import deepcopy

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import TracingError


class _Tracer(fx.Tracer):
    """A tracer that records stack traces and treats the named submodules as leaves."""

    def __init__(self, leaf_modules: Iterable[str]) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.leaf_names = frozenset(leaf_modules)

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return qualname in self.leaf_names or super().is_leaf_module(module, qualname)


def normalize_inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple (a lone tensor is wrapped)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def trace(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    leaf_modules: Iterable[str] = (),
    copy: bool = True,
) -> fx.GraphModule:
    """A shape-annotated GraphModule over ``model`` in eval mode; over a private copy unless ``copy=False``."""
    if model.training:
        warnings.warn(
            "fx_upscale exports the model in eval mode (BatchNorm running statistics, dropout off); "
            "call model.eval() first to silence this warning",
            stacklevel=3,
        )
    private = deepcopy(model) if copy else model
    gm = private if isinstance(private, fx.GraphModule) else _symbolic_trace(private, leaf_modules)
    gm.eval()
    if gm.graph.eliminate_dead_code():
        gm.recompile()
    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    return gm


def _symbolic_trace(model: nn.Module, leaf_modules: Iterable[str]) -> fx.GraphModule:
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as error:  # any failure of symbolic tracing is reported the same way
        raise TracingError(
            f"torch.fx.symbolic_trace could not trace {type(model).__name__}: {type(error).__name__}: {error}. "
            "Data-dependent control flow cannot be traced; pass leaf_modules=[...] naming the submodules that "
            "contain it (their channels are then kept), or trace the model yourself and pass the GraphModule"
        ) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
