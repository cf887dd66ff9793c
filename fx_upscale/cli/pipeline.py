"""The steps ``prune`` and ``explain`` share (:data:`PRUNE_STEPS`): load the model and a seeded input, mask it,
export it, and check the export against the masked model, each filling in a field of :class:`Pruned`;
:func:`run_steps` runs them under a progress bar. Start reading at :data:`PRUNE_STEPS`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .. import export, mask
from ..export import ExportResult
from ..spec import PruneSpec
from .models import DTYPES, load_calibration, load_model
from .progress import progress_bar


@dataclasses.dataclass
class Pruned:
    """What the prune steps (:data:`PRUNE_STEPS`) make from the options, one step after the other."""

    args: argparse.Namespace
    model: nn.Module = dataclasses.field(init=False)
    inputs: torch.Tensor = dataclasses.field(init=False)
    spec: PruneSpec = dataclasses.field(init=False)
    result: ExportResult = dataclasses.field(init=False)
    max_abs_diff: float = dataclasses.field(init=False)


def load_model_and_inputs(pruned: Pruned) -> None:
    """The model, in the options' dtype, and a seeded random input of its shape."""
    args = pruned.args
    torch.manual_seed(args.seed)
    model, default_shape = load_model(args.model, args.weights)
    dtype = DTYPES[args.dtype]
    pruned.model = model.to(dtype)
    shape = args.input_shape or default_shape
    pruned.inputs = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed), dtype=dtype)


def mask_model(pruned: Pruned) -> None:
    args = pruned.args
    calibration = load_calibration(args.calibration, pruned.inputs.dtype)
    pruned.spec = mask(pruned.model, pruned.inputs, amount=args.amount, heuristic=args.heuristic, side=args.side,
                       method=args.method, scope=args.scope, calibration=calibration)  # fmt: skip


def export_model(pruned: Pruned) -> None:
    pruned.result = export(pruned.model, pruned.inputs, spec=pruned.spec, mode=pruned.args.mode)


def check_export(pruned: Pruned) -> None:
    """The largest difference between the export's output and the masked model's."""
    with torch.no_grad():
        exported, masked = pruned.result.module(pruned.inputs), pruned.spec.apply(pruned.model)(pruned.inputs)
    pruned.max_abs_diff = (exported - masked).abs().max().item()


Step = tuple[str, Callable[[Pruned], None]]
PRUNE_STEPS: tuple[Step, ...] = (
    ("loading the model", load_model_and_inputs),
    ("masking", mask_model),
    ("exporting", export_model),
    ("checking the export", check_export),
)


def run_steps(args: argparse.Namespace, steps: Sequence[Step]) -> Pruned:
    """Run ``steps`` in order on what the options describe, with a progress bar over them."""
    if args.threads:
        torch.set_num_threads(args.threads)  # the export plans with the cost model calibrated for this many
    pruned = Pruned(args)
    with progress_bar(steps, quiet=args.quiet, description=args.command) as bar:
        for label, step in bar:
            bar.set_postfix_str(label)
            step(pruned)
    return pruned
