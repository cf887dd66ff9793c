"""The ``fx-upscale`` command line (also ``python -m fx_upscale``): prune, explain, bench.

- ``prune MODEL``: mask, export, and write ``model.pt2`` (:func:`fx_upscale.save`; reload with
  :func:`fx_upscale.load`), ``report.json`` (the :class:`ExportReport`), ``spec.json`` (the masked channels) and
  ``summary.md``;
- ``explain MODEL``: per segment, its producers and each consumer's access and why; ``--graph`` draws the segment
  graph (``.dot`` always, ``.png`` / ``.svg`` with matplotlib);
- ``bench MODEL...``: the latency of the unpruned model and of every export (``latency.py``), measured and
  predicted;
- ``calibrate``: measure the latency cost model's constants here and cache them (``cost_model.py``).

MODEL is a torchvision model name (needs ``fx_upscale[models]``) or ``package.module:factory``. Errors print one
line (``--debug`` shows the traceback). Start reading at :func:`main`; then ``parser.py`` (every option),
``pipeline.py`` (the steps prune and explain share), and one module per command: ``prune.py``, ``explain.py``
(``graph.py`` draws its segment graph), ``bench.py``, ``calibrate.py``. ``models.py`` loads MODEL,
``progress.py`` holds the progress bar and the check for the ``cli`` extra, ``errors.py`` the one-line errors.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from .bench import command_bench
from .calibrate import command_calibrate
from .errors import CommandError, one_line
from .explain import command_explain
from .models import DTYPES, load_model
from .parser import HEURISTICS, PROG, build_parser, parse_shape
from .pipeline import PRUNE_STEPS, Pruned, run_steps
from .progress import CLI_EXTRA, progress_bar, require_cli_extra
from .prune import command_prune

__all__ = [
    "CLI_EXTRA",
    "COMMANDS",
    "DTYPES",
    "HEURISTICS",
    "PROG",
    "PRUNE_STEPS",
    "CommandError",
    "Pruned",
    "build_parser",
    "load_model",
    "main",
    "one_line",
    "parse_shape",
    "progress_bar",
    "require_cli_extra",
    "run_steps",
]

COMMANDS = {"prune": command_prune, "explain": command_explain, "bench": command_bench, "calibrate": command_calibrate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors: one line on stderr, status 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        require_cli_extra()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the command line's boundary: one line, or the traceback with --debug
        if args.debug:
            traceback.print_exc()
        else:
            print(f"{PROG} {args.command}: error: {one_line(error)} (--debug for the traceback)", file=sys.stderr)
        return 1
