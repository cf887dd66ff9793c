"""python -m benchmarks.accuracy: unconstrained versus constrained post-training pruning under three protocols, with
and without BatchNorm recalibration, beside Torch-Pruning.

Trains (or loads from ``${XDG_CACHE_HOME:-~/.cache}/fx_upscale/accuracy/``) resnet18, mobilenet_v2, densenet121 and
efficientnet_b0 on scikit-learn's digits, then for every heuristic, side, method and amount masks the trained model,
exports it (mode upscale), checks that the export predicts what the masked model predicts (also with BatchNorm
recalibrated), evaluates and times it; prunes the same models with Torch-Pruning at target parameter counts. Writes
CSVs (points, models, training curves, gains, Torch-Pruning rows and table), a plot per protocol and the training
curves as PNG, and prints the Markdown tables.

    python -m benchmarks.accuracy [--models ...] [--heuristics ...] [--sides ...] [--amounts ...] [--workers 2]
                                  [--out benchmarks/results] [--plots docs] [--native-kernels]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

from fx_upscale.tables import format_table

from . import compare, depgraph, plots
from .experiment import DIGITS, MODELS, TRAINING, Experiment, run_experiment, write_csv
from .finetune import finetune_points
from .sweep import AMOUNTS, HEURISTICS, SIDES, Setting


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--heuristics", nargs="+", default=list(HEURISTICS))
    parser.add_argument("--sides", nargs="+", default=list(SIDES))
    parser.add_argument("--amounts", nargs="+", type=float, default=list(AMOUNTS))
    parser.add_argument("--tool-sparsities", nargs="*", type=float, default=list(depgraph.SPARSITIES))
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--plots", type=Path, default=None, help="directory of the PNGs (default: --out)")
    parser.add_argument("--native-kernels", action="store_true", help="train with this machine's fastest kernels")
    parser.add_argument("--finetune", default="resnet18", help="model whose exports are fine-tuned ('none': skip)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-amounts", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    experiment = run_experiment(
        args.models,
        args.heuristics,
        args.sides,
        args.amounts,
        tool_sparsities=args.tool_sparsities,
        portable=not args.native_kernels,
        workers=args.workers,
    )
    write_results(experiment, args.out, args.plots or args.out)
    print_summary(experiment)
    if args.finetune != "none":
        finetune(args, experiment)
    print(f"\nwhole command: {time.perf_counter() - start:.0f} s, load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip


def write_results(experiment: Experiment, out: Path, figures: Path) -> None:
    write_csv(out / "accuracy.csv", experiment.rows)
    write_csv(out / "accuracy-models.csv", [{k: v for k, v in m.items() if k != "history"} for m in experiment.models])
    curves = [{"model": m["model"], **h} for m in experiment.models for h in m.get("history") or []]
    if curves:
        write_csv(out / "accuracy-training.csv", curves)
    write_csv(out / "accuracy-gains.csv", experiment.gains)
    figures.mkdir(parents=True, exist_ok=True)
    for protocol in compare.PROTOCOLS:
        plots.plot_protocol(experiment.rows, experiment.bases(), protocol, str(figures / f"accuracy-{protocol}.png"),
                            experiment.tool)  # fmt: skip
    if curves:
        plots.plot_training(experiment.models, str(figures / "accuracy-training.png"))
    if experiment.tool:
        write_csv(out / "accuracy-torch-pruning.csv", experiment.tool)
        write_csv(out / "accuracy-tools.csv", experiment.tool_table)


def finetune(args: argparse.Namespace, experiment: Experiment) -> None:
    start = time.perf_counter()
    setting = Setting(DIGITS, {args.finetune: TRAINING[args.finetune]}, None)
    rows = finetune_points(args.finetune, "l2", "input", args.finetune_amounts, args.finetune_epochs, setting,
                           args.workers)  # fmt: skip
    write_csv(args.out / "accuracy-finetune.csv", rows)
    print_finetune(rows, experiment.bases()[False], time.perf_counter() - start)


def print_finetune(rows: list[dict], base: dict[str, float], seconds: float) -> None:
    model, epochs = rows[0]["model"], rows[0]["epochs"]
    print(f"\nfine-tuned exports of {model} (l2, input side, {epochs} epoch(s) each, {seconds:.0f} s):\n")
    headers = ("method", "amount", "sparsity", "accuracy after pruning", "after fine-tuning")
    cells = [(row["method"], row["amount"], f"{row['sparsity']:.1%}", f"{row['accuracy_before']:.1%}",
              f"{row['accuracy']:.1%}") for row in rows]  # fmt: skip
    print(format_table(cells, headers, markdown=True))
    (gain,) = compare.gains(rows, base)
    before = compare.gains([{**row, "accuracy": row["accuracy_before"]} for row in rows], base)[0]
    print(
        f"\ngain of unconstrained over constrained at matched sparsity: mean {before['mean_gain']:+.1f} points "
        f"before fine-tuning, {gain['mean_gain']:+.1f} after ({gain['levels']} sparsity levels)"
    )


def models_markdown(models: list[dict]) -> str:
    """The trained models: parameters, recipe (epochs, of which at the constant final learning rate), mean training
    loss over the last 5 epochs and the 5 before, its trend over the last 10, test accuracy (as trained, BatchNorm
    recalibrated), training seconds and load."""
    headers = ("model", "params", "epochs (constant tail)", "batch", "loss, last 5 epochs (5 before)",
               "trend, last 10 epochs (%/epoch ± s.e.)", "test accuracy", "recalibrated", "training s",
               "load during training")  # fmt: skip
    rows = []
    for info in models:
        losses = [h["loss"] for h in info.get("history") or []] or [float("nan")]
        last, before = statistics.mean(losses[-5:]), statistics.mean(losses[-10:-5] or [float("nan")])
        slope, error = loss_trend(losses[-10:])
        seconds = f"{info.get('seconds', float('nan')):.0f}" + (" (cached)" if info.get("cached") else "")
        load = f"{info.get('load_before', float('nan')):.1f} / {info.get('load_after', float('nan')):.1f}"
        rows.append((info["model"], f"{info['params']:,}", f"{info['epochs']} ({info['tail_epochs']})",
                     info["batch_size"],
                     f"{last:.3f} ({before:.3f})", f"{slope:+.1f} ± {error:.1f}", f"{info['accuracy']:.1%}",
                     f"{info['recalibrated_accuracy']:.1%}", seconds, load))  # fmt: skip
    return format_table(rows, headers, markdown=True)


def loss_trend(losses: list[float]) -> tuple[float, float]:
    """The least-squares slope of ``losses`` (one per epoch) and its standard error, in percent of their mean per
    epoch: a slope within about two standard errors of zero is a loss that has stopped falling beyond its noise."""
    if len(losses) < 3:
        return float("nan"), float("nan")
    epochs = range(len(losses))
    slope, intercept = statistics.linear_regression(epochs, losses)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(epochs, losses))
    spread = sum((x - statistics.mean(epochs)) ** 2 for x in epochs)
    scale = 100 / statistics.mean(losses)
    return slope * scale, math.sqrt(residual / (len(losses) - 2) / spread) * scale


def print_summary(experiment: Experiment) -> None:
    print("\ndigits: trained models (test accuracy, unpruned)\n")
    print(models_markdown(experiment.models))
    for name, protocol in compare.PROTOCOLS.items():
        print(f"\nGain of unconstrained over constrained at {protocol.title} (accuracy points; "
              "as measured / BatchNorm recalibrated):\n")  # fmt: skip
        print(compare.markdown(experiment.gains, name))
    if experiment.tool_table:
        print("\nTorch-Pruning / fx_upscale constrained (l2, output) / fx_upscale upscale (l2, input), at the "
              "Torch-Pruning export's parameter count:\n")  # fmt: skip
        print(compare.tool_markdown(experiment.tool_table))
    print_checks(experiment)


def print_checks(experiment: Experiment) -> None:
    checked = (("exported vs masked", experiment.rows), ("Torch-Pruning vs its masked twin", experiment.tool))
    for what, rows in checked:
        for prefix, label in (("", "as trained"), ("recalibrated_", "recalibrated")):
            if rows:
                print_check(rows, prefix, f"{what} predictions ({label})")
    t = experiment.timings
    print(
        f"wall time: training {t['train_seconds']:.0f} s, pruning sweep {t['sweep_seconds']:.0f} s "
        f"({t['points']} points, {t['workers']} workers x 1 thread); load average {t['load_before']:.2f} before, "
        f"{t['load_after']:.2f} after"
    )


def print_check(rows: list[dict], prefix: str, what: str) -> None:
    mismatches = sum(row[f"{prefix}mismatches"] for row in rows)
    mismatches64 = sum(row[f"{prefix}mismatches_float64"] for row in rows)
    largest = max(row[f"{prefix}max_abs_logit_diff"] for row in rows)
    print(f"\n{what}, {len(rows)} points: {mismatches} differ in float32 ({mismatches64} in float64); "
          f"max |logit difference| {largest:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
