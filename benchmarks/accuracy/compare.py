"""Unconstrained versus constrained under three protocols: interpolation, gain tables, the tool table, plots.

Start at :data:`PROTOCOLS`. Each curve (model, heuristic, side, method) is an accuracy against an x value, starting
at the unpruned model (x = 0, its test accuracy):

- ``amount`` (the paper's protocol): x is the masking ``amount``, the fraction of channels zeroed per layer (input
  side: per consumer unconstrained, one shared choice per segment constrained); y is the masked model's accuracy.
  Both methods are measured at the same amounts, so the gain at an amount needs no interpolation.
- ``size``: x is the realised parameter sparsity of the export (``1 - params_after / params_before``), y the
  export's accuracy; both curves are linearly interpolated at 5%, 10%, ... 70%.
- ``latency``: x is the latency saved (``1 - relative_latency``: the export's median CPU time over the unpruned
  model's, measured interleaved), y the export's accuracy; points sorted by x, interpolated like ``size``.

A level outside either curve's measured range is left out. The gain at a level is the unconstrained accuracy minus
the constrained one, in points; a (model, heuristic, side) row reports the mean gain over its levels and the best
one. Every protocol is computed on the accuracies as they are and with BatchNorm recalibrated (``recalibrated_*``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy

from fx_upscale.tables import format_table

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 15))  # 5%, 10%, ... 70%
GAIN_COLUMNS = (
    "protocol",
    "recalibrated",
    "model",
    "heuristic",
    "side",
    "levels",
    "mean_gain",
    "best_gain",
    "best_at",
)


@dataclass(frozen=True)
class Protocol:
    name: str
    x: str  # a row's column, or "latency_saved" (1 - relative_latency)
    y: str  # the accuracy column (prefixed with "recalibrated_" when recalibrated)
    title: str
    axis: str  # the plot's x label


PROTOCOLS = {
    "amount": Protocol("amount", "amount", "masked_accuracy", "same amount (the paper's protocol)", "amount (%)"),
    "size": Protocol("size", "sparsity", "accuracy", "matched parameter count", "parameters kept (%)"),
    "latency": Protocol(
        "latency", "latency_saved", "accuracy", "matched CPU latency", "latency, % of the unpruned model"
    ),
}


def x_value(row: dict, x: str) -> float:
    return round(1 - row["relative_latency"], 6) if x == "latency_saved" else row[x]


def y_column(protocol: Protocol, recalibrated: bool) -> str:
    return f"recalibrated_{protocol.y}" if recalibrated else protocol.y


def curve(
    rows: Iterable[dict], base: float, x: str = "sparsity", y: str = "accuracy"
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(x values, accuracies) of one curve, sorted by x, with the unpruned model at (0, base)."""
    points = sorted([(0.0, base)] + [(x_value(row, x), row[y]) for row in rows])
    return numpy.array([p[0] for p in points]), numpy.array([p[1] for p in points])


def interpolate(xs: numpy.ndarray, ys: numpy.ndarray, levels: Sequence[float]) -> list[float]:
    """The curve at each level (linear between measured points; NaN outside the measured range)."""
    return [float(numpy.interp(level, xs, ys)) if xs[0] <= level <= xs[-1] else math.nan for level in levels]


def levels_of(protocol: Protocol, rows: Sequence[dict]) -> tuple[float, ...]:
    return tuple(sorted({row["amount"] for row in rows})) if protocol.x == "amount" else LEVELS


def members(rows: Sequence[dict], **key) -> list[dict]:
    return [row for row in rows if all(row[name] == value for name, value in key.items())]


def gains(
    rows: Sequence[dict],
    base: dict[str, float],
    protocol: Protocol = PROTOCOLS["size"],
    recalibrated: bool = False,
    levels: Sequence[float] | None = None,
) -> list[dict]:
    """One row per (model, heuristic, side): mean and best gain (points) of unconstrained over constrained."""
    levels = levels if levels is not None else levels_of(protocol, rows)
    y = y_column(protocol, recalibrated)
    table = []
    for model, heuristic, side in dict.fromkeys((row["model"], row["heuristic"], row["side"]) for row in rows):
        accuracy = {
            method: interpolate(
                *curve(members(rows, model=model, heuristic=heuristic, side=side, method=method), base[model],
                       protocol.x, y),
                levels,
            )
            for method in ("unconstrained", "constrained")
        }  # fmt: skip
        pairs = [
            (level, 100 * (u - c))
            for level, u, c in zip(levels, accuracy["unconstrained"], accuracy["constrained"])
            if not (math.isnan(u) or math.isnan(c))
        ]
        best_at, best = max(pairs, key=lambda pair: pair[1]) if pairs else (math.nan, math.nan)
        mean = round(float(numpy.mean([g for _, g in pairs])), 2) if pairs else math.nan
        table.append(dict(zip(GAIN_COLUMNS, (protocol.name, recalibrated, model, heuristic, side, len(pairs), mean,
                                             round(best, 2), best_at))))  # fmt: skip
    return table


def all_gains(rows: Sequence[dict], base: dict[str, float], base_recalibrated: dict[str, float]) -> list[dict]:
    """:func:`gains` for every protocol, as measured and with BatchNorm recalibrated."""
    return [
        row
        for protocol in PROTOCOLS.values()
        for recalibrated, bases in ((False, base), (True, base_recalibrated))
        for row in gains(rows, bases, protocol, recalibrated)
    ]


def overall(table: Sequence[dict], protocol: str, recalibrated: bool) -> float:
    values = [r["mean_gain"] for r in members(table, protocol=protocol, recalibrated=recalibrated)]
    values = [v for v in values if not math.isnan(v)]
    return float(numpy.mean(values)) if values else math.nan


def markdown(table: Sequence[dict], protocol: str) -> str:
    """One protocol's gain table in Markdown: a row per (model, side), a column per heuristic and the mean; each
    cell "as measured / BatchNorm recalibrated"."""
    plain, recal = members(table, protocol=protocol, recalibrated=False), members(table, protocol=protocol,
                                                                                    recalibrated=True)  # fmt: skip
    heuristics = list(dict.fromkeys(row["heuristic"] for row in plain))
    rows = []
    for model, side in dict.fromkeys((row["model"], row["side"]) for row in plain):
        cells = []
        for group in (plain, recal):
            found = {row["heuristic"]: row["mean_gain"] for row in members(group, model=model, side=side)}
            cells.append([found.get(h, math.nan) for h in heuristics])
        means = [float(numpy.nanmean(values)) for values in cells]
        pairs = [f"{a:+.1f} / {b:+.1f}" for a, b in zip(*cells)]
        rows.append([model, side, *pairs, f"**{means[0]:+.1f} / {means[1]:+.1f}**"])
    total = f"**{overall(table, protocol, False):+.1f} / {overall(table, protocol, True):+.1f}**"
    rows.append(["all", "", *("" for _ in heuristics), total])
    return format_table(rows, ["model", "side", *heuristics, "mean"], markdown=True)


# fx_upscale's curves set beside Torch-Pruning: (heuristic, side, method)
COMPARED = {"constrained": ("l2", "output", "constrained"), "upscale": ("l2", "input", "unconstrained")}


def tool_rows(tool: Sequence[dict], rows: Sequence[dict], base: dict, base_recalibrated: dict) -> list[dict]:
    """Per Torch-Pruning row: its accuracy (as measured, recalibrated), latency and pruning time, beside
    fx_upscale's :data:`COMPARED` curves interpolated at the same parameter sparsity."""
    table = []
    for row in tool:
        entry = {"model": row["model"], "sparsity": row["sparsity"], "params": row["params_after"]}
        starts = {"accuracy": base[row["model"]], "recalibrated_accuracy": base_recalibrated[row["model"]],
                  "relative_latency": 1.0, "seconds": 0.0}  # fmt: skip
        entry.update({f"torch-pruning_{column}": row[column] for column in starts})
        for label, (heuristic, side, method) in COMPARED.items():
            points = members(rows, model=row["model"], heuristic=heuristic, side=side, method=method)
            for column, start in starts.items():
                (value,) = interpolate(*curve(points, start, "sparsity", column), [row["sparsity"]])
                entry[f"{label}_{column}"] = round(value, 4)
        table.append(entry)
    return table


def tool_markdown(table: Sequence[dict]) -> str:
    """The tool table in Markdown; each cell "Torch-Pruning / fx_upscale constrained / fx_upscale upscale"."""
    tools = ("torch-pruning", *COMPARED)

    def cell(entry: dict, column: str, scale: float, digits: int) -> str:
        return " / ".join(f"{scale * entry[f'{tool}_{column}']:.{digits}f}" for tool in tools)

    headers = ("model", "sparsity", "params", "accuracy %", "recalibrated %", "latency % of unpruned", "pruning s")
    rows = [(e["model"], f"{e['sparsity']:.1%}", f"{e['params']:,}", cell(e, "accuracy", 100, 1),
             cell(e, "recalibrated_accuracy", 100, 1), cell(e, "relative_latency", 100, 0), cell(e, "seconds", 1, 2))
            for e in table]  # fmt: skip
    return format_table(rows, headers, markdown=True)
