"""Unconstrained versus constrained at matched parameter counts: interpolation, gain table, plot.

Each curve (model, heuristic, side, method) is accuracy against the realised parameter sparsity of the exported
models, starting at the unpruned model (sparsity 0, its test accuracy). The two methods reach different sparsities
for the same ``amount``, so each curve is linearly interpolated at common sparsity levels (5%, 10%, ... 70%; a level
outside a curve's measured range is left out), and the gain at a level is the unconstrained accuracy minus the
constrained one, in percentage points. A (model, heuristic, side) row reports the mean gain over its levels and the
best (largest) one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy

from fx_upscale.tables import format_table

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 15))  # 5%, 10%, ... 70%
GAIN_COLUMNS = ("model", "heuristic", "side", "levels", "mean_gain", "best_gain", "best_at")


def curve(rows: Iterable[dict], base_accuracy: float) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(sparsities, accuracies) of one curve, sorted by sparsity, starting at (0, base accuracy)."""
    points = sorted((row["sparsity"], row["accuracy"]) for row in rows)
    sparsity = numpy.array([0.0] + [p[0] for p in points])
    accuracy = numpy.array([base_accuracy] + [p[1] for p in points])
    return sparsity, accuracy


def interpolate(sparsity: numpy.ndarray, accuracy: numpy.ndarray, levels: Sequence[float]) -> list[float]:
    """Accuracy at each level (linear between measured points; NaN outside the measured range)."""
    return [
        float(numpy.interp(level, sparsity, accuracy)) if sparsity[0] <= level <= sparsity[-1] else math.nan
        for level in levels
    ]


def gains(rows: Sequence[dict], base: dict[str, float], levels: Sequence[float] = LEVELS) -> list[dict]:
    """One row per (model, heuristic, side): mean and best gain (points) of unconstrained over constrained."""
    keys = list(dict.fromkeys((row["model"], row["heuristic"], row["side"]) for row in rows))
    table = []
    for model, heuristic, side in keys:
        accuracy = {}
        for method in ("unconstrained", "constrained"):
            members = [
                r
                for r in rows
                if (r["model"], r["heuristic"], r["side"], r["method"]) == (model, heuristic, side, method)
            ]
            accuracy[method] = interpolate(*curve(members, base[model]), levels)
        pairs = [
            (level, 100 * (u - c))
            for level, u, c in zip(levels, accuracy["unconstrained"], accuracy["constrained"])
            if not (math.isnan(u) or math.isnan(c))
        ]
        best_at, best = max(pairs, key=lambda pair: pair[1]) if pairs else (math.nan, math.nan)
        table.append(
            {
                "model": model,
                "heuristic": heuristic,
                "side": side,
                "levels": len(pairs),
                "mean_gain": round(float(numpy.mean([g for _, g in pairs])), 2) if pairs else math.nan,
                "best_gain": round(best, 2),
                "best_at": best_at,
            }
        )
    return table


def markdown(table: Sequence[dict]) -> str:
    """The gain table in Markdown: a row per (model, side) with the mean gain of each heuristic, its mean, and the
    best gain (and at which sparsity)."""
    heuristics = list(dict.fromkeys(row["heuristic"] for row in table))
    rows = []
    for model, side in dict.fromkeys((row["model"], row["side"]) for row in table):
        members = {row["heuristic"]: row for row in table if (row["model"], row["side"]) == (model, side)}
        means = [members[h]["mean_gain"] for h in heuristics if h in members]
        best = max(members.values(), key=lambda row: row["best_gain"])
        cells = [f"{members[h]['mean_gain']:+.1f}" if h in members else "" for h in heuristics]
        best_cell = f"{best['best_gain']:+.1f} ({best['heuristic']}, {best['best_at']:.0%})"
        rows.append([model, side, *cells, f"**{numpy.mean(means):+.1f}**", best_cell])
    overall = [row["mean_gain"] for row in table if not math.isnan(row["mean_gain"])]
    rows.append(["all", "", *("" for _ in heuristics), f"**{numpy.mean(overall):+.1f}**", ""])
    return format_table(rows, ["model", "side", *heuristics, "mean", "best (at sparsity)"], markdown=True)


def plot(rows: Sequence[dict], base: dict[str, float], path: str) -> None:
    """Accuracy against parameters kept: a panel per (side, model), a colour per heuristic, solid unconstrained,
    dashed constrained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in rows))
    sides = list(dict.fromkeys(row["side"] for row in rows))
    heuristics = list(dict.fromkeys(row["heuristic"] for row in rows))
    colours = dict(zip(heuristics, plt.get_cmap("tab10").colors))
    figure, axes = plt.subplots(
        len(sides), len(models), figsize=(3.2 * len(models), 2.8 * len(sides)), squeeze=False, sharey=True
    )
    for i, side in enumerate(sides):
        for j, model in enumerate(models):
            ax = axes[i][j]
            for heuristic in heuristics:
                for method, style in (("unconstrained", "-"), ("constrained", "--")):
                    members = [
                        r
                        for r in rows
                        if (r["model"], r["side"], r["heuristic"], r["method"]) == (model, side, heuristic, method)
                    ]
                    if members:
                        sparsity, accuracy = curve(members, base[model])
                        ax.plot(
                            100 * (1 - sparsity),
                            100 * accuracy,
                            style,
                            color=colours[heuristic],
                            lw=1.2,
                            marker=".",
                            ms=3,
                            label=f"{heuristic} {method}",
                        )
            ax.set_title(f"{model}, {side} side", fontsize=9)
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == len(sides) - 1:
                ax.set_xlabel("parameters kept (%)", fontsize=8)
            if j == 0:
                ax.set_ylabel("test accuracy (%)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(heuristics), fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
