"""fx_upscale as a torch.compile backend: prune the graph Dynamo hands over, then compile it with another backend.

Start at :func:`compile_backend`. Two ways to combine fx_upscale with ``torch.compile``:

1. export first, then compile: ``torch.compile(fx_upscale.export(model, x).module)``. Always works.
2. ``torch.compile(model, backend=fx_upscale.compile_backend())``: the backend prunes each graph Dynamo captures.
   This needs the weights in the graph as attributes (``get_attr`` nodes), which Dynamo does under
   ``torch._dynamo.config.patch(install_free_tensors=True)``. By default Dynamo lifts parameters and buffers to
   graph inputs; they arrive at full size with every call, so they cannot be resliced, and the backend raises
   :class:`~fx_upscale.errors.UnsupportedGraphError` pointing to way 1.

The compiled graph holds the pruned weights (a frozen copy): later changes to the model's weights do not reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.fx as fx
from torch import nn

from .errors import SpecError, UnsupportedGraphError
from .export import ExportResult, export
from .spec import PruneSpec

_LIFTED = ("_parameters_", "_buffers_")  # how Dynamo names a placeholder holding a module's parameter or buffer
_HOW_TO_FIX = (
    "Export first and compile the pruned module: torch.compile(fx_upscale.export(model, x).module); or compile "
    "under torch._dynamo.config.patch(install_free_tensors=True), which keeps weights in the graph as attributes"
)


class UpscaleBackend:
    """A ``torch.compile`` backend: ``(graph_module, example_inputs) -> compiled callable``.

    Each call exports the graph with :func:`fx_upscale.export` (``spec`` names parameters as the compiled model
    does, e.g. ``"layer1.0.conv1.weight"``; ``None`` reads the spec from all-zero weight slices) and hands the
    pruned module to ``delegate``. ``results`` lists the :class:`ExportResult` of every graph pruned so far.
    """

    def __init__(self, spec: PruneSpec | None, mode: str, delegate: str | Callable, on_unsupported: str) -> None:
        self.spec = spec
        self.mode = mode
        self.delegate = delegate
        self.on_unsupported = on_unsupported
        self.results: list[ExportResult] = []
        self.__name__ = f"fx_upscale(mode={mode!r}, delegate={getattr(delegate, '__name__', delegate)!r})"

    def __call__(self, graph_module: fx.GraphModule, example_inputs: Sequence) -> Callable:
        inputs = _concrete_inputs(graph_module, example_inputs)
        spec = _renamed_spec(self.spec, graph_module) if self.spec is not None else None
        graph_module.train(False)  # Dynamo's graphs are functional: the flag only silences the eval-mode warning
        result = export(graph_module, inputs, spec=spec, mode=self.mode, on_unsupported=self.on_unsupported)
        self.results.append(result)
        return _lookup_delegate(self.delegate)(result.module, list(inputs))


def compile_backend(
    spec: PruneSpec | None = None,
    *,
    mode: str = "upscale",
    delegate: str | Callable = "inductor",
    on_unsupported: str = "raise",
) -> UpscaleBackend:
    """A backend for ``torch.compile(model, backend=...)`` that prunes, then compiles with ``delegate``.

    ``delegate`` is a backend name (``"inductor"``, ``"aot_eager"``, ``"eager"``, see
    ``torch._dynamo.list_backends()``) or a backend callable. Compile the model in eval mode, with
    ``dynamic=False``, under ``torch._dynamo.config.patch(install_free_tensors=True)`` (see the module docstring).
    """
    return UpscaleBackend(spec, mode, delegate, on_unsupported)


def _concrete_inputs(graph_module: fx.GraphModule, example_inputs: Sequence) -> tuple[torch.Tensor, ...]:
    placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    lifted = [
        node.target
        for node, value in zip(placeholders, example_inputs)
        if isinstance(value, nn.Parameter) or any(part in str(node.target) for part in _LIFTED)
    ]
    if lifted:
        raise UnsupportedGraphError(
            f"torch.compile handed fx_upscale a graph whose weights are graph inputs ({', '.join(lifted[:3])}"
            f"{', ...' if len(lifted) > 3 else ''}): Dynamo lifts module parameters and buffers to inputs, which "
            f"arrive at full size with every call, so they cannot be resliced at compile time. {_HOW_TO_FIX}"
        )
    from torch._subclasses.fake_tensor import FakeTensor

    symbolic = [
        node.target
        for node, value in zip(placeholders, example_inputs)
        if not isinstance(value, torch.Tensor) or isinstance(value, FakeTensor)
    ]
    if symbolic:
        raise UnsupportedGraphError(
            f"torch.compile handed fx_upscale symbolic inputs ({', '.join(map(str, symbolic[:3]))}): pruning needs "
            "concrete example shapes. Compile with torch.compile(..., dynamic=False)"
        )
    return tuple(example_inputs)


def _renamed_spec(spec: PruneSpec, graph_module: fx.GraphModule) -> PruneSpec:
    """``spec`` with the model's parameter names replaced by the names Dynamo gave them in this graph."""
    flat_names = {fqn: flat for flat, fqn in graph_module.meta.get("dynamo_flat_name_to_original_fqn", {}).items()}
    missing = sorted(name for name in (*spec.inputs, *spec.outputs) if name not in flat_names)
    if missing:
        raise SpecError(
            f"the spec names {missing[:3]}, which the graph torch.compile captured does not hold as attributes "
            f"(it holds {sorted(flat_names)[:3]} ...); a graph break may have split the model. Apply the spec "
            "first and let the backend read it from the zeros: torch.compile(spec.apply(model), "
            "backend=fx_upscale.compile_backend())"
        )
    return PruneSpec(
        inputs={flat_names[name]: channels for name, channels in spec.inputs.items()},
        outputs={flat_names[name]: channels for name, channels in spec.outputs.items()},
    )


def _lookup_delegate(delegate: str | Callable) -> Callable:
    if callable(delegate):
        return delegate
    from torch._dynamo import lookup_backend  # torch._dynamo is heavy: import it only when compiling

    return lookup_backend(delegate)
