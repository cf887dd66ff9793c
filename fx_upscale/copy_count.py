"""Counting copies honestly: elements produced by copying ops during a real forward.

:func:`count_copies` runs the module once under a ``TorchDispatchMode`` and adds up the elements of every output
of ``index_select``, ``index``, ``gather``, ``cat``, ``clone`` (which ``contiguous`` becomes when it copies),
``_to_copy`` and ``copy_``. It sees the ops dispatched from Python-level calls; copies a kernel makes internally (a
convolution making a strided input contiguous) are below it and not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
COPYING_OPS = {
    _aten.index_select: "index_select",
    _aten.index: "index",
    _aten.gather: "gather",
    _aten.cat: "cat",
    _aten.clone: "clone",
    _aten._to_copy: "to_copy",
    _aten.copy_: "copy_",
}


@dataclass(frozen=True)
class CopyCount:
    by_op: dict[str, int]  # elements produced per copying op

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __getitem__(self, op: str) -> int:
        return self.by_op.get(op, 0)


class _CopyCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.elements: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = COPYING_OPS.get(func.overloadpacket)
        if name is not None and isinstance(out, torch.Tensor):
            self.elements[name] += out.numel()
        return out


def count_copies(module: torch.nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> CopyCount:
    """Elements each copying op produces in one forward of ``module`` on ``inputs`` (no gradients)."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    counter = _CopyCounter()
    with torch.no_grad(), counter:
        module(*inputs)
    return CopyCount(dict(counter.elements))
