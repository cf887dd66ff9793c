"""``fx-upscale bench MODEL...``: time the unpruned model and every export (:mod:`fx_upscale.latency`) for each
model and batch size, and print the latency and copies tables (``--csv`` and ``--plot`` write them too). Start
reading at :func:`command_bench`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .. import latency as lat
from ..cost_model import CostModel, calibrate, save_cost_model
from ..tables import format_table
from .errors import CommandError
from .models import DTYPES, load_model
from .progress import progress_bar


def command_bench(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    config = lat.BenchConfig(
        models=tuple(args.models), amount=args.amount, heuristic=args.heuristic, side=args.side, method=args.method,
        batches=tuple(args.batch), backends=tuple(args.backend), compile_models=tuple(args.compile_models or ()),
        repeats=args.repeats, warmup=args.warmup, device=args.device, dtype=DTYPES[args.dtype],
    )  # fmt: skip

    def load(name: str) -> tuple[nn.Module, tuple[int, ...]]:
        torch.manual_seed(args.seed)
        model, shape = load_model(name)
        return model, args.input_shape or shape

    def calibrated() -> dict[str, CostModel]:
        return {b: calibrate(args.device, DTYPES[args.dtype], b) for b in args.backend}

    cost_models = calibrated() if args.calibrate else None
    for model in (cost_models or {}).values():
        print(f"calibrated {model.key} (cached in {save_cost_model(model)})")
    load_before = os.getloadavg()
    recalibrate = calibrated if args.calibrate else None
    timings = bench_cases(config, load, quiet=args.quiet, cost_models=cost_models, recalibrate=recalibrate)
    load_after = os.getloadavg()
    print(f"{args.amount:.0%} {args.side}-side {args.method} {args.heuristic} masks, {args.dtype}, device "
          f"{args.device}, threads {args.threads}, {args.repeats} interleaved repeats (median [q1–q3] ms), load "
          f"average {load_before[0]:.2f} before / {load_after[0]:.2f} after, torch {torch.__version__}")  # fmt: skip
    print(latency_table(timings))
    print("\nPredicted by the cost model the exports were planned with (ms), and the error against the measured median")
    print(prediction_table(timings))
    print("\nElements copied per eager forward (M): by copying ops + by convolutions making strided inputs contiguous")
    print(copies_table(timings))
    if args.csv:
        lat.write_csv(timings, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        lat.plot(timings, args.plot)
        print(f"wrote {args.plot}")
    return 0


def bench_cases(
    config: lat.BenchConfig,
    load: Callable,
    *,
    quiet: bool,
    cost_models: dict[str, CostModel] | None = None,
    recalibrate: Callable[[], dict[str, CostModel]] | None = None,
) -> list[lat.Timing]:
    """:func:`latency.run` for each model and batch size of ``config`` in turn (each loads its model afresh, seeded
    alike), with a progress bar over them. ``recalibrate``: called before every case but the first for the cost
    models that case plans and predicts with, so that each prediction is priced at the machine's speed of the
    minutes it is measured in (a shared machine's speed drifts by tens of percent within minutes)."""
    cases = [(name, batch) for name in config.models for batch in config.batches]
    timings: list[lat.Timing] = []
    with progress_bar(cases, quiet=quiet, description="bench") as bar:
        for index, (name, batch) in enumerate(bar):
            if recalibrate is not None and index:
                cost_models = recalibrate()
            bar.set_description(f"bench {name}, batch {batch}")
            case = dataclasses.replace(config, models=(name,), batches=(batch,))
            timings += lat.run(case, load, bar.set_postfix_str, cost_models)
    return timings


def latency_table(timings: Sequence[lat.Timing]) -> str:
    """A Markdown table: per model, batch and backend, each variant's median ms [q1–q3], and upscale's ratios."""
    groups = _by_variant(timings, lambda t: (t.model, t.batch, t.backend))
    present = [v for v in lat.VARIANTS if any(v in row for row in groups.values())]
    headers = ["model", "batch", "backend", *(f"{v} ms" for v in present), "upscale / oracle", "upscale / baseline"]
    rows = [[*key, *(_quartiles(row.get(v)) for v in present), _ratio(row, "oracle"), _ratio(row, "baseline")]
            for key, row in groups.items()]  # fmt: skip
    return format_table(rows, headers, markdown=True)


def prediction_table(timings: Sequence[lat.Timing]) -> str:
    """A Markdown table: per model, batch and backend, each variant's predicted ms and its error against the
    measured median, and whether the prediction ranks the variants as the medians do."""
    groups = _by_variant(timings, lambda t: (t.model, t.batch, t.backend))
    present = [v for v in lat.VARIANTS if any(v in row for row in groups.values())]
    rows = []
    for key, row in groups.items():
        cells = [_predicted(row.get(v)) for v in present]
        rows.append([*key, *cells, "yes" if _same_ranking(row) else "no"])
    return format_table(rows, ["model", "batch", "backend", *present, "ranks as measured"], markdown=True)


def _predicted(t: lat.Timing | None) -> str:
    return "" if t is None else f"{t.predicted_ms:.1f} ({100 * (t.predicted_ms / t.median_ms - 1):+.0f}%)"


def _same_ranking(row: dict[str, lat.Timing]) -> bool:
    """Whether predicted and measured medians order the variants alike, ignoring pairs whose measured
    quartiles overlap (noise) and the oracle (not exact, a floor)."""
    variants = [t for v, t in row.items() if v != "oracle"]
    for a in variants:
        for b in variants:
            apart = a.q3_ms < b.q1_ms
            if apart and not a.predicted_ms < b.predicted_ms:
                return False
    return True


def copies_table(timings: Sequence[lat.Timing]) -> str:
    """A Markdown table: per model and batch, the elements each variant copies per eager forward, as copying ops
    + convolutions making strided inputs contiguous."""
    groups = _by_variant(timings, lambda t: (t.model, t.batch))
    rows = [[*key, *(_copies(row.get(v)) for v in lat.VARIANTS)] for key, row in groups.items()]
    return format_table(rows, ["model", "batch", *lat.VARIANTS], markdown=True)


def _by_variant(
    timings: Sequence[lat.Timing], key: Callable[[lat.Timing], tuple]
) -> dict[tuple, dict[str, lat.Timing]]:
    groups: dict[tuple, dict[str, lat.Timing]] = {}
    for t in timings:
        groups.setdefault(key(t), {})[t.variant] = t
    return groups


def _quartiles(t: lat.Timing | None) -> str:
    return "" if t is None else f"{t.median_ms:.1f} [{t.q1_ms:.1f}–{t.q3_ms:.1f}]"


def _copies(t: lat.Timing | None) -> str:
    return "" if t is None else f"{t.copied_elements / 1e6:.2f}M + {t.conv_copied_elements / 1e6:.2f}M"


def _ratio(row: dict[str, lat.Timing], other: str) -> str:
    """upscale's median relative to ``other``'s, as a signed percentage."""
    if "upscale" not in row or other not in row:
        return ""
    return f"{100 * (row['upscale'].median_ms / row[other].median_ms - 1):+.1f}%"
