"""Do the trained models' weight magnitudes rank channels by use? Two checks on the cached trained models.

1. **Magnitude against chance**: per model, side and amount, the test accuracy of the model masked (unconstrained)
   with L2 scores and with random scores (``--seeds`` draws), as trained and with BatchNorm recalibrated. Magnitudes
   that rank channels by use keep more accuracy than chance picks of the same number of channels.
2. **Magnitude against initialisation**: per convolution, the Spearman rank correlation between each filter's L2
   norm at initialisation (the same seed, so the same initial weights) and after training. Near zero: the ranking
   the heuristics see is training's (AdamW's weight decay shrinks what the loss does not hold up), not the
   initialiser's.

Writes ``benchmarks/results/accuracy-magnitude.csv`` (one row per model, side, amount, heuristic and seed) and
prints both tables.

    OMP_NUM_THREADS=1 python -m benchmarks.accuracy.magnitude_check [--models ...] [--amounts ...] [--seeds 5]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import fx_upscale
from fx_upscale.tables import format_table

from .data import Split, load_digits_split
from .experiment import DIGITS, MODELS, TRAINING
from .sweep import RECALIBRATION_BATCHES, SIDES, Setting, calibration_batches, load_trained
from .train import accuracy, build_model

CSV = Path("benchmarks/results/accuracy-magnitude.csv")
AMOUNTS = (0.1, 0.2, 0.3)
FIELDS = ("model", "side", "amount", "heuristic", "seed", "accuracy", "recalibrated_accuracy")


def random_scores(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A heuristic that scores every channel at random (one generator per mask, so a seed gives one mask)."""
    generator = torch.Generator().manual_seed(seed)
    return lambda slices: torch.rand(len(slices), generator=generator, dtype=torch.float64)


def masked_accuracy(model: nn.Module, split: Split, side: str, amount: float, heuristic, seed: int | None) -> dict:
    """Test accuracy of ``model`` masked at ``amount`` (unconstrained) by ``heuristic``, as is and recalibrated."""
    spec = fx_upscale.mask(model, split.test_x[:1], amount=amount, heuristic=heuristic, side=side)
    masked = spec.apply(model)
    recalibrated = fx_upscale.recalibrate_batchnorm(masked, calibration_batches(split, RECALIBRATION_BATCHES))
    return {"accuracy": accuracy(masked, split), "recalibrated_accuracy": accuracy(recalibrated, split)}


def chance_rows(name: str, model: nn.Module, split: Split, amounts, seeds: int) -> list[dict]:
    rows = []
    for side in SIDES:
        for amount in amounts:
            point = {"model": name, "side": side, "amount": amount}
            rows.append(
                {**point, "heuristic": "l2", "seed": "", **masked_accuracy(model, split, side, amount, "l2", None)}
            )
            for seed in range(seeds):
                found = masked_accuracy(model, split, side, amount, random_scores(seed), seed)
                rows.append({**point, "heuristic": "random", "seed": seed, **found})
    return rows


def rank_correlations(name: str, trained: nn.Module) -> list[float]:
    """Per convolution with more than two filters: Spearman's rank correlation of filter L2 norms, initial against
    trained."""
    initial = dict(build_model(name, TRAINING[name]).named_modules())
    found = []
    for layer_name, layer in trained.named_modules():
        if isinstance(layer, nn.Conv2d) and layer.out_channels > 2:
            before, after = (m.weight.detach().flatten(1).norm(dim=1) for m in (initial[layer_name], layer))
            found.append(_spearman(before, after))
    return found


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [t.argsort().argsort().double() for t in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def chance_table(rows: list[dict]) -> str:
    headers = ("model", "side", "amount", "l2 % (recalibrated)", "random % mean [min–max] (recalibrated mean)")
    cells = []
    for model, side, amount in dict.fromkeys((r["model"], r["side"], r["amount"]) for r in rows):
        point = [r for r in rows if (r["model"], r["side"], r["amount"]) == (model, side, amount)]
        (l2,) = [r for r in point if r["heuristic"] == "l2"]
        chance = [r for r in point if r["heuristic"] == "random"]
        plain = [100 * r["accuracy"] for r in chance]
        recalibrated = statistics.mean(100 * r["recalibrated_accuracy"] for r in chance)
        by_magnitude = f"{100 * l2['accuracy']:.1f} ({100 * l2['recalibrated_accuracy']:.1f})"
        by_chance = f"{statistics.mean(plain):.1f} [{min(plain):.1f}–{max(plain):.1f}] ({recalibrated:.1f})"
        cells.append((model, side, f"{amount:.0%}", by_magnitude, by_chance))
    return format_table(cells, headers, markdown=True)


def correlation_table(correlations: dict[str, list[float]]) -> str:
    headers = ("model", "convolutions", "Spearman ρ, initial vs trained filter norms: median [quartiles]")
    cells = []
    for model, values in correlations.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        cells.append((model, len(values), f"{median:+.2f} [{q1:+.2f}, {q3:+.2f}]"))
    return format_table(cells, headers, markdown=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--amounts", nargs="*", type=float, default=list(AMOUNTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--csv", type=Path, default=CSV)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    split, rows, correlations = load_digits_split(DIGITS), [], {}
    for name in args.models:
        model = load_trained(name, Setting(DIGITS, {name: TRAINING[name]}, None))
        correlations[name] = rank_correlations(name, model)
        rows += chance_rows(name, model, split, args.amounts, args.seeds)
        print(f"{name}: done", flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print("\nMasked at random against by L2 magnitude (unconstrained; test accuracy %):\n")
    print(chance_table(rows))
    print("\nFilter norms, initial against trained:\n")
    print(correlation_table(correlations))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
