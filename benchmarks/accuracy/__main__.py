"""python -m benchmarks.accuracy: unconstrained versus constrained post-training pruning, on the exported models.

Trains (or loads from ``${XDG_CACHE_HOME:-~/.cache}/fx_upscale/accuracy/``) resnet18, mobilenet_v2, densenet121 and
efficientnet_b0 on scikit-learn's digits, then for every heuristic, side, method and amount masks the trained model,
exports it (mode upscale), checks that the export predicts what the masked model predicts, and evaluates it. Writes
the points, the trained models and the gains as CSV, the plot as PNG, and prints the Markdown tables.

    python -m benchmarks.accuracy [--models ...] [--heuristics ...] [--sides ...] [--amounts ...] [--workers 2]
                                  [--variant digits|digits-hard] [--out benchmarks/results] [--plot docs/accuracy.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import compare
from .experiment import MODELS, VARIANTS, run_experiment, write_csv
from .sweep import AMOUNTS, HEURISTICS, SIDES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--heuristics", nargs="+", default=list(HEURISTICS))
    parser.add_argument("--sides", nargs="+", default=list(SIDES))
    parser.add_argument("--amounts", nargs="+", type=float, default=list(AMOUNTS))
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="digits")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: <out>/accuracy-<variant>.png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    experiment = run_experiment(
        args.models, args.heuristics, args.sides, args.amounts, data=VARIANTS[args.variant], workers=args.workers
    )
    stem = f"accuracy-{args.variant}"
    write_csv(args.out / f"{stem}.csv", experiment.rows)
    write_csv(args.out / f"{stem}-models.csv", experiment.models)
    write_csv(args.out / f"{stem}-gains.csv", experiment.gains)
    base = {info["model"]: info["accuracy"] for info in experiment.models}
    plot = args.plot or args.out / f"{stem}.png"
    compare.plot(experiment.rows, base, str(plot))
    print_summary(experiment, args.variant, plot)


def print_summary(experiment, variant: str, plot: Path) -> None:
    print(f"\n{variant}: trained models (test accuracy, unpruned)\n")
    print("| model | params | epochs | batch | test accuracy | training s | load during training |")
    print("|---|---|---|---|---|---|---|")
    for info in experiment.models:
        load = f"{info.get('load_before', float('nan')):.1f} / {info.get('load_after', float('nan')):.1f}"
        print(
            f"| {info['model']} | {info['params']:,} | {info['epochs']} | {info['batch_size']} | "
            f"{info['accuracy']:.1%} | {info.get('seconds', float('nan')):.0f}"
            f"{' (cached)' if info['cached'] else ''} | {load} |"
        )
    print("\nGain of unconstrained over constrained (accuracy points, exported models, matched parameter counts,")
    print(f"mean over sparsities {', '.join(f'{level:.0%}' for level in compare.LEVELS)}):\n")
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
