"""``fx-upscale explain MODEL``: run :data:`~fx_upscale.cli.pipeline.PRUNE_STEPS` and print, per segment, its
producers and each consumer's access (full, narrow, gather, absorbed) and why; ``--graph`` writes the segment graph
(:mod:`fx_upscale.cli.graph`). Start reading at :func:`command_explain`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..report import ExportReport
from ..tables import format_table
from .errors import CommandError
from .graph import segment_graph, write_graph
from .pipeline import PRUNE_STEPS, run_steps


def command_explain(args: argparse.Namespace) -> int:
    report = run_steps(args, PRUNE_STEPS).result.report
    segments = select_segments(report, args.segment, args.gathers_only)
    print(f"{args.model}: {args.amount:.0%} {args.side}-side {args.method} {args.heuristic} masks; {report.summary()}")
    print(explain_text(segments))
    if args.graph:
        write_graph(segment_graph(segments), args.graph)
        print(f"wrote {args.graph}")
    return 0


def select_segments(report: ExportReport, indices: Sequence[int] | None, gathers_only: bool) -> list:
    known = {segment.index for segment in report.segments}
    unknown = sorted(set(indices or ()) - known)
    if unknown:
        raise CommandError(f"--segment {unknown}: the export has segments 0..{max(known, default=-1)}")
    chosen = [s for s in report.segments if not indices or s.index in indices]
    if gathers_only:
        chosen = [s for s in chosen if any(c.access == "gather" for c in s.consumers)]
    return chosen


def explain_text(segments: Sequence) -> str:
    """Per segment: channels kept, producers, and a table of its consumers (access, channels, copies, why)."""
    blocks = []
    for segment in segments:
        head = (f"segment {segment.index}: {segment.kept} of {segment.channels} channels kept; "
                f"producers: {', '.join(segment.producers) or '(graph input)'}")  # fmt: skip
        if segment.extra_pruned:
            head += f"; {segment.extra_pruned} dropped beyond the masks"
        if segment.frozen_by:
            head += f"; frozen by {', '.join(segment.frozen_by)}"
        table = consumer_table(segment.consumers) if segment.consumers else "(no consumers)"
        blocks.append(head + "\n" + "\n".join("  " + line for line in table.splitlines()))
    return "\n\n".join(blocks) if blocks else "(no segment selected)"


def consumer_table(consumers: Sequence) -> str:
    headers = ("consumer", "reads", "access", "needed/available", "copied", "predicted µs", "why")
    rows = [(c.node, c.source, c.access, f"{c.channels_needed}/{c.channels_available}", f"{c.copied_elements:,}",
             f"{1e6 * c.predicted_seconds:.1f}", c.reason) for c in consumers]  # fmt: skip
    return format_table(rows, headers)
