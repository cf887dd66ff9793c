"""The one error hierarchy of fx_upscale, and how errors name the FX node they are about.

Every error raised on bad input derives from :class:`UpscaleError`; each message says what went wrong,
where (node name, op, target, source line), why, and how to fix it.
"""

from __future__ import annotations

import os

import torch
import torch.fx as fx
from torch.fx.node import _get_qualified_name


class UpscaleError(Exception):
    """Base class of every error fx_upscale raises on bad input."""


class SpecError(UpscaleError, ValueError):
    """A PruneSpec (or a mask request) that does not fit the model."""


class TracingError(UpscaleError):
    """The model could not be turned into a shape-annotated FX graph: a ``forward`` that cannot be traced, example
    inputs that do not fit it (number, shape, dtype, device), or weights without values (the meta device)."""


class UnsupportedOpError(UpscaleError):
    """An op in a segment being pruned that no handler maps channels through."""


class UnsupportedGraphError(UpscaleError):
    """A graph structure fx_upscale cannot export exactly."""


class MaskWarning(UserWarning):
    """``mask()`` left layers unmasked because their channels cross ops no handler maps. ``blocked`` maps each
    skipped layer (``"weight (side)"``) to what blocked it (``"node 'x' (...): reason"``)."""

    def __init__(self, message: str, blocked: dict[str, str]) -> None:
        super().__init__(message)
        self.blocked = blocked


_TORCH_FRAMES = f'"{os.path.dirname(torch.__file__)}{os.sep}'  # the tracer, Module.__call__, F.* dispatch, Dynamo


def describe_node(node: fx.Node) -> str:
    """``node 'add_1' (call_function operator.add) at model.py:42`` — for error messages."""
    target = _target_name(node)
    where = source_line(node)
    text = f"node {node.name!r} ({node.op} {target})"
    return f"{text} at {where}" if where else text


def source_line(node: fx.Node) -> str | None:
    """The last user-code line of the node's recorded stack trace, as ``file:line``, if one was recorded."""
    trace = node.meta.get("stack_trace")
    if not trace:
        return None
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip().startswith("File ")]
    lines = [line for line in lines if _TORCH_FRAMES not in line] or lines
    if not lines:
        return None
    # 'File "/path/model.py", line 42, in forward'
    parts = lines[-1].split('"')
    if len(parts) < 3:
        return None
    line_no = parts[2].split(",")[1].strip().removeprefix("line ")
    return f"{parts[1]}:{line_no}"


def _target_name(node: fx.Node) -> str:
    if isinstance(node.target, str):
        return node.target
    try:
        return _get_qualified_name(node.target)
    except Exception:  # an unusual callable: fall back to its repr
        return repr(node.target)
