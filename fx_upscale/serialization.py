"""save() and load(): a pruned model as a ``.pt2`` file that loads without the model's Python class.

A pruned ``GraphModule``'s class is generated at export time and does not exist in another process, so
``torch.save(result.module)`` cannot be loaded there. :func:`save` runs ``torch.export.export`` on the pruned module
and writes the ``ExportedProgram`` with ``torch.export.save``; :func:`load` reads it with ``torch.export.load`` and
returns ``program.module()``, a runnable ``nn.Module``. Use ``torch.export.load(path)`` directly for the
``ExportedProgram`` itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from .errors import UnsupportedGraphError
from .export import ExportResult
from .tracing import normalize_inputs

_REPORT_FILE = "fx_upscale_report.json"


def save(
    result: ExportResult | fx.GraphModule,
    path: str | os.PathLike,
    example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    dynamic_shapes=None,
) -> torch.export.ExportedProgram:
    """Write the pruned module of ``result`` to ``path`` (a ``.pt2`` file) and return the ``ExportedProgram``.

    ``example_inputs=None`` uses zeros shaped like the example inputs of the export (recorded on the graph's
    placeholders). The program is specialised to those shapes unless ``dynamic_shapes`` (passed to
    ``torch.export.export``) says otherwise. The export report, if given an ``ExportResult``, is stored beside the
    program as ``fx_upscale_report.json`` (read it with :func:`load_report`).
    """
    module = result.module if isinstance(result, ExportResult) else result
    inputs = normalize_inputs(example_inputs) if example_inputs is not None else _recorded_inputs(module)
    program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes)
    extra = {_REPORT_FILE: json.dumps(_report_fields(result))} if isinstance(result, ExportResult) else {}
    torch.export.save(program, path, extra_files=extra)
    return program


def load(path: str | os.PathLike) -> nn.Module:
    """The module saved by :func:`save` at ``path``, runnable without fx_upscale or the model's class."""
    return torch.export.load(path).module()


def load_report(path: str | os.PathLike) -> dict:
    """The export report saved beside the program (params before and after, gathers, narrows, copied elements)."""
    extra = {_REPORT_FILE: ""}
    torch.export.load(path, extra_files=extra)
    return json.loads(extra[_REPORT_FILE]) if extra[_REPORT_FILE] else {}


def _recorded_inputs(module: fx.GraphModule) -> tuple[torch.Tensor, ...]:
    placeholders = [node for node in module.graph.nodes if node.op == "placeholder"]
    missing = [node.name for node in placeholders if "tensor_meta" not in node.meta]
    if missing:
        raise UnsupportedGraphError(
            f"placeholders {missing} carry no recorded shape (node.meta['tensor_meta']), so save() cannot make "
            "example inputs; pass example_inputs=... to fx_upscale.save"
        )
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    return tuple(
        torch.zeros(node.meta["tensor_meta"].shape, dtype=node.meta["tensor_meta"].dtype, device=device)
        for node in placeholders
    )


def _report_fields(result: ExportResult) -> dict:
    report = result.report
    names = ("params_before", "params_after", "gathers", "narrows", "copied_elements", "extra_pruned_channels")
    return {"mode": result.plan.mode, **{name: getattr(report, name) for name in names}}
