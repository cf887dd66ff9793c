"""The ``fx-upscale`` argument parser: :func:`build_parser` (the ``prune``, ``explain``, ``bench`` and ``calibrate``
commands and every option, with its help), the option value types (:func:`parse_shape` and friends), and usage
errors in one line (exit status 2). Start reading at :func:`build_parser`."""

from __future__ import annotations

import argparse

import torch

from .. import __version__
from .. import latency as lat
from ..plan_types import MODES
from .models import DTYPES

PROG = "fx-upscale"
HEURISTICS = ("l1", "l2", "lamp", "fpgm", "hrank")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) as a tuple of positive ints."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be a positive integer")
    return shape


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prune a model with UPSCALE and see what it gains. "
                     "Run 'fx-upscale COMMAND --help' for each command's options.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__} (torch {torch.__version__})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    prune = commands.add_parser("prune", help="mask and export a model; write model.pt2, report.json, summary.md",
                                description="Mask MODEL, export it physically pruned, check it against the masked "
                                "model, and write DIR/model.pt2 (load with fx_upscale.load), report.json, spec.json "
                                "and summary.md.")  # fmt: skip
    _add_prune_options(prune)
    prune.add_argument("--out", metavar="DIR", help="output directory (default MODEL-pruned)")
    explain = commands.add_parser("explain", help="per segment: producers, consumers, each access and why",
                                  description="Mask and export MODEL as 'prune' does, and print, per segment, its "
                                  "producers and each consumer's access (full, narrow, gather, absorbed), channels "
                                  "needed / available, elements copied and the reason.")  # fmt: skip
    _add_prune_options(explain)
    explain.add_argument("--segment", type=int, action="append", metavar="N", help="only segment N (repeatable)")
    explain.add_argument("--gathers-only", action="store_true", help="only segments with a gather")
    explain.add_argument("--graph", metavar="PATH", help="draw the segment graph: .dot (text), .png or .svg")
    _add_bench_parser(commands)
    _add_calibrate_parser(commands)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it is only drawn on a terminal)")


def _add_mask_options(parser: argparse.ArgumentParser, *, models: str) -> None:
    parser.add_argument(
        "--amount",
        type=_fraction,
        default=0.3,
        help="fraction of the channels of each layer to mask, in [0, 1) (default 0.3)",
    )
    parser.add_argument(
        "--heuristic",
        choices=HEURISTICS,
        default="l2",
        help="channel score: l1/l2 norm, lamp, fpgm (geometric median), hrank (feature-map rank "
        "over --calibration batches); the lowest are masked (default l2)",
    )
    parser.add_argument(
        "--side",
        choices=("input", "output", "both"),
        default="input",
        help="mask consumers' input channels (weight columns), producers' output channels "
        "(filters), or both (default input)",
    )
    parser.add_argument(
        "--method",
        choices=("unconstrained", "constrained"),
        default="unconstrained",
        help="each layer chooses alone, or coupled layers share one choice (default unconstrained)",
    )
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        metavar="N,C,H,W",
        help=f"example input shape (default: the model's, 1,3,224,224 for most {models})",
    )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="model and input dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed for the model's initialisation and the input")


def _add_prune_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a torchvision model name (resnet50, ...) or package.module:factory (called with no "
        "arguments; modules in the current directory are found)",
    )
    parser.add_argument("--weights", metavar="PATH", help="a state_dict file to load (default: as constructed)")
    _add_mask_options(parser, models="torchvision models")
    parser.add_argument(
        "--scope",
        choices=("local", "global"),
        default="local",
        help="amount per layer, or over the whole model under one threshold (default local)",
    )
    parser.add_argument(
        "--calibration",
        metavar="PATH",
        help="for --heuristic hrank: a .pt file holding an input batch or a list of batches",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="upscale",
        help="export: upscale (reorder channels, gather only where unavoidable), baseline (a "
        "gather for every subset) or constrained (no copies, drops more) (default upscale)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        help="torch threads; the upscale export plans with the cost model calibrated for this many "
        "(fx-upscale calibrate --threads N) (default: torch's)",
    )
    _add_common(parser)


BENCH_DESCRIPTION = (
    "Time, for each MODEL (torchvision name or package.module:factory), the unpruned model, the constrained, "
    "baseline and upscale exports, and the copy-free oracle (the upscale export with each gather replaced by a "
    "same-shaped view: not exact, the floor reordering can reach), in one process, with interleaved repetitions; "
    "print median and quartiles."
)


def _add_bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="latency: unpruned vs constrained, baseline, upscale and a copy-free oracle",
        description=BENCH_DESCRIPTION,
    )
    bench.add_argument("models", nargs="+", metavar="MODEL", help="models to time")
    _add_mask_options(bench, models="torchvision models; the batch dimension is replaced by each --batch")
    bench.add_argument("--batch", type=_positive, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    bench.add_argument(
        "--backend",
        choices=lat.BACKENDS,
        nargs="+",
        default=["eager"],
        help="eager and/or compile (torch.compile, inductor) (default eager)",
    )
    bench.add_argument(
        "--compile-models",
        nargs="+",
        metavar="MODEL",
        help="run --backend compile only for these models (default: all)",
    )
    bench.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    bench.add_argument("--repeats", type=_positive, default=10, help="timed rounds over all variants (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed calls per variant first (default 2)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    bench.add_argument(
        "--calibrate", action="store_true",
        help="calibrate the cost model first (fx-upscale calibrate; cached), and again before each model and batch, "
        "whose exports and predictions use that calibration",
    )  # fmt: skip
    bench.add_argument("--csv", metavar="PATH", help="write one row per model, batch, backend and variant")
    bench.add_argument("--plot", metavar="PATH", help="draw a bar plot (.png or .svg; needs matplotlib)")
    _add_common(bench)


def _add_calibrate_parser(commands) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="measure the latency cost model's constants here and cache them",
        description="Time narrow views, small ops, convolutions, batch norms, cat inputs, copies and multiply-adds "
        "on this machine (about fifteen seconds per backend) and cache the constants under the device, dtype, backend, "
        "thread count and torch version (in $FX_UPSCALE_CACHE, default ~/.cache/fx_upscale): exports made with "
        "mode upscale there choose each consumer's access by the latency they predict.",
    )
    calibrate.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to measure (default cpu)")
    calibrate.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="dtype (default float32)")
    calibrate.add_argument("--backend", choices=lat.BACKENDS, nargs="+", default=["eager"],
                           help="eager and/or compile (default eager)")  # fmt: skip
    calibrate.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    _add_common(calibrate)
