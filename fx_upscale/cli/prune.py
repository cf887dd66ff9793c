"""``fx-upscale prune MODEL``: run :data:`~fx_upscale.cli.pipeline.PRUNE_STEPS`, then write DIR/``model.pt2``
(:func:`fx_upscale.save`), ``report.json`` (the settings, the check and the :class:`ExportReport`), ``spec.json``
(the masked channels) and ``summary.md``. Start reading at :func:`command_prune`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import torch

from .. import __version__, save
from ..report import ExportReport
from ..tables import format_table
from .parser import PROG
from .pipeline import PRUNE_STEPS, Pruned, run_steps


def command_prune(args: argparse.Namespace) -> int:
    pruned = run_steps(args, (*PRUNE_STEPS, ("saving the model", save_model), ("writing the reports", write_reports)))
    out = output_directory(args)
    print(pruned.result.report.summary())
    print(f"max |exported - masked| = {pruned.max_abs_diff:.2e}")
    print(f"wrote {out / 'model.pt2'}, {out / 'report.json'}, {out / 'spec.json'}, {out / 'summary.md'}")
    return 0


def output_directory(args: argparse.Namespace) -> Path:
    return Path(args.out or f"{args.model.replace(':', '_').replace('.', '_')}-pruned")


def save_model(pruned: Pruned) -> None:
    out = output_directory(pruned.args)
    out.mkdir(parents=True, exist_ok=True)
    save(pruned.result, out / "model.pt2")


def write_reports(pruned: Pruned) -> None:
    """report.json, spec.json and summary.md."""
    out, args = output_directory(pruned.args), pruned.args
    as_lists = lambda channels: {name: sorted(c) for name, c in channels.items()}  # noqa: E731
    spec = {"inputs": as_lists(pruned.spec.inputs), "outputs": as_lists(pruned.spec.outputs)}
    (out / "report.json").write_text(json.dumps(report_document(args, pruned), indent=1) + "\n")
    (out / "spec.json").write_text(json.dumps(spec) + "\n")
    (out / "summary.md").write_text(summary_markdown(args, pruned))


def report_document(args: argparse.Namespace, pruned: Pruned) -> dict:
    """report.json: the command's settings, the check against the masked model, and the ExportReport."""
    return {
        "fx_upscale": __version__,
        "torch": torch.__version__,
        "model": args.model,
        "weights": args.weights,
        "input_shape": list(pruned.inputs.shape),
        "dtype": args.dtype,
        "seed": args.seed,
        "mask": {k: getattr(args, k) for k in ("amount", "heuristic", "side", "method", "scope")},
        "mode": args.mode,
        "max_abs_diff": pruned.max_abs_diff,
        "report": dataclasses.asdict(pruned.result.report),
    }


def summary_markdown(args: argparse.Namespace, pruned: Pruned) -> str:
    """summary.md: the headline numbers, the consumers that copy, and how to load the model."""
    report, shape = pruned.result.report, "×".join(map(str, pruned.inputs.shape))
    rows = [
        ("model", f"{args.model} (weights: {args.weights or 'as constructed'}, seed {args.seed})"),
        ("input", f"{shape} {args.dtype}"),
        ("masks", f"{args.amount:.0%} {args.side}-side {args.method} {args.heuristic}, {args.scope} scope"),
        ("export mode", args.mode),
        (
            "parameters",
            f"{report.params_before:,} → {report.params_after:,} "
            f"({100 * report.params_after / max(1, report.params_before):.1f}%)",
        ),
        ("gathers / narrows / absorbed", f"{report.gathers} / {report.narrows} / {report.absorbed}"),
        ("copied per forward", f"{report.copied_elements:,} elements ({report.copied_bytes:,} bytes)"),
        ("extra pruned channels", f"{report.extra_pruned_channels}"),
        ("max abs(exported − masked)", f"{pruned.max_abs_diff:.2e}"),
        ("export time", f"{report.export_seconds:.2f} s"),
    ]
    lines = [f"# {PROG} prune {args.model}", "", f"`{PROG} {' '.join(map(shlex.quote, args.argv))}`", "",
             format_table(rows, ("", ""), markdown=True), ""]  # fmt: skip
    if args.mode == "constrained":
        lines += ["Mode `constrained` drops channels beyond the masks, so it differs from the masked model.", ""]
    lines += ["## Consumers that copy", "", copying_markdown(report)]
    return "\n".join([*lines, "", FILES_MARKDOWN])


def copying_markdown(report: ExportReport) -> str:
    """A Markdown table of the consumers that gather (copy) their channels, with why."""
    copying = [(s, c) for s in report.segments for c in s.consumers if c.access == "gather"]
    if not copying:
        return "None: every consumer reads its channels as a view."
    headers = ("segment", "consumer", "reads", "needed / available", "copied elements", "why")
    rows = [(s.index, c.node, c.source, f"{c.channels_needed} / {c.channels_available}", f"{c.copied_elements:,}",
             c.reason) for s, c in copying]  # fmt: skip
    return format_table(rows, headers, markdown=True)


FILES_MARKDOWN = """## Files

- `model.pt2`: `fx_upscale.load("model.pt2")` returns a runnable module (no model class needed)
- `report.json`: the export report, per segment and consumer, with the command's settings
- `spec.json`: the masked channels per parameter (`fx_upscale.PruneSpec(**json.load(f))`)
"""
