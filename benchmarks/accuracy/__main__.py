"""python -m benchmarks.accuracy: unconstrained versus constrained post-training pruning, on the exported models.

Trains (or loads from ``${XDG_CACHE_HOME:-~/.cache}/fx_upscale/accuracy/``) resnet18, mobilenet_v2, densenet121 and
efficientnet_b0 on scikit-learn's digits, then for every heuristic, side, method and amount masks the trained model,
exports it (mode upscale), checks that the export predicts what the masked model predicts, and evaluates it. Writes
the points, the trained models and the gains as CSV, the plot as PNG, and prints the Markdown tables.

    python -m benchmarks.accuracy [--models ...] [--heuristics ...] [--sides ...] [--amounts ...] [--workers 2]
                                  [--out benchmarks/results] [--plot docs/accuracy.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fx_upscale.tables import format_table

from . import compare
from .experiment import DIGITS, MODELS, TRAINING, run_experiment, write_csv
from .finetune import finetune_points
from .sweep import AMOUNTS, HEURISTICS, SIDES, Setting


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--heuristics", nargs="+", default=list(HEURISTICS))
    parser.add_argument("--sides", nargs="+", default=list(SIDES))
    parser.add_argument("--amounts", nargs="+", type=float, default=list(AMOUNTS))
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--finetune", default="resnet18", help="model whose exports are fine-tuned ('none': skip)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-amounts", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: <out>/accuracy.png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    experiment = run_experiment(args.models, args.heuristics, args.sides, args.amounts, workers=args.workers)
    stem = "accuracy"
    write_csv(args.out / f"{stem}.csv", experiment.rows)
    write_csv(args.out / f"{stem}-models.csv", experiment.models)
    write_csv(args.out / f"{stem}-gains.csv", experiment.gains)
    base = {info["model"]: info["accuracy"] for info in experiment.models}
    plot = args.plot or args.out / f"{stem}.png"
    compare.plot(experiment.rows, base, str(plot))
    print_summary(experiment, plot)
    if args.finetune != "none":
        start = time.perf_counter()
        setting = Setting(DIGITS, {args.finetune: TRAINING[args.finetune]}, None)
        rows = finetune_points(
            args.finetune, "l2", "input", args.finetune_amounts, args.finetune_epochs, setting, args.workers
        )
        write_csv(args.out / "accuracy-finetune.csv", rows)
        print_finetune(rows, base, time.perf_counter() - start)


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
    """The trained models: parameters, training recipe, test accuracy, training seconds and load."""
    headers = ("model", "params", "epochs", "batch", "test accuracy", "training s", "load during training")
    rows = []
    for info in models:
        seconds = f"{info.get('seconds', float('nan')):.0f}" + (" (cached)" if info["cached"] else "")
        load = f"{info.get('load_before', float('nan')):.1f} / {info.get('load_after', float('nan')):.1f}"
        rows.append((info["model"], f"{info['params']:,}", info["epochs"], info["batch_size"],
                     f"{info['accuracy']:.1%}", seconds, load))  # fmt: skip
    return format_table(rows, headers, markdown=True)


def print_summary(experiment, plot: Path) -> None:
    print("\ndigits: trained models (test accuracy, unpruned)\n")
    print(models_markdown(experiment.models))
    print("\nGain of unconstrained over constrained (accuracy points, exported models, matched parameter counts;")
    print(f"mean over the sparsities {', '.join(f'{level:.0%}' for level in compare.LEVELS)} both curves reach):\n")
    print(compare.markdown(experiment.gains))
    rows = experiment.rows
    mismatches = sum(row["mismatches"] for row in rows)
    mismatches64 = sum(row["mismatches_float64"] for row in rows)
    print(
        f"\nexported vs masked predictions over the test set, {len(rows)} points: {mismatches} differ in float32 "
        f"({mismatches64} in float64); "
        f"max |logit difference| {max(row['max_abs_logit_diff'] for row in rows):.2e}"
    )
    t = experiment.timings
    print(
        f"wall time: training {t['train_seconds']:.0f} s, pruning sweep {t['sweep_seconds']:.0f} s "
        f"({t['points']} points, {t['workers']} workers x 1 thread); load average {t['load_before']:.2f} before, "
        f"{t['load_after']:.2f} after; plot {plot}"
    )


if __name__ == "__main__":
    main()
