"""Zoo benchmark: every torchvision classification model, exported with 30% input-side and 30% output-side masks.

The models of tests/zoo_models.py (every model ``torch.fx.symbolic_trace`` can trace with at most 100 M parameters;
with ``--large``, the larger ones too), built as the tests build them (``weights=None``, seed 0, BatchNorm
calibrated, near-zero parameters redrawn, batch 2, the smallest input the model takes). Per model and side
(unconstrained L2 masks, one per side, shared by the modes):

- float64: modes upscale and baseline, max |exported - masked| relative to the output's scale ("exact": at most
  1e-8 for all four exports), parameters, gathers, narrows, channels kept for grouped convolutions;
- float32, one thread: the export seconds of each mode (trace + analysis + plan + passes; the mask is not timed).

Writes a CSV (one row per model, side and mode) and prints a Markdown table (one row per model) and progress.
A model that fails is recorded with its error and the run goes on.

    python benchmarks/zoo.py [--large] [--models NAME ...] [--out benchmarks/results/zoo.csv]
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import zoo_models  # noqa: E402
from support import gathers_in_graph, max_abs_diff, outputs  # noqa: E402

import fx_upscale  # noqa: E402
from fx_upscale.tables import format_table  # noqa: E402

SIDES = ("input", "output")
MODES = ("upscale", "baseline")
AMOUNT = 0.3
RTOL = 1e-8


def check_float64(name: str) -> tuple[list[dict], dict]:
    """Exactness and report numbers in float64; returns the rows and the specs (per side) for the timing."""
    model, x = zoo_models.build(name)
    rows, specs = [], {}
    for side in SIDES:
        spec = specs[side] = fx_upscale.mask(model, x, amount=AMOUNT, side=side)
        with torch.no_grad():
            expected = spec.apply(model)(x)
            scale = max(t.abs().max().item() for t in outputs(expected))
            for mode in MODES:
                result = fx_upscale.export(model, x, spec=spec, mode=mode)
                report = result.report
                relative = max_abs_diff(result.module(x), expected) / scale
                rows.append({
                    "model": name, "input": x.shape[-1], "side": side, "mode": mode,
                    "params_before": report.params_before, "params_after": report.params_after,
                    "gathers": report.gathers, "gathers_in_graph": gathers_in_graph(result.module),
                    "narrows": report.narrows, "copied_elements": report.copied_elements,
                    "absorbed": report.absorbed, "kept_for_groups": report.kept_for_groups,
                    "output_scale": scale, "max_relative_diff": relative,
                })  # fmt: skip
                del result
    return rows, specs


def time_float32(name: str, specs: dict, rows: list[dict]) -> None:
    """Float32 export seconds per side and mode, added to ``rows``."""
    model, x = zoo_models.build(name, dtype=torch.float32)
    for row in rows:
        start = time.perf_counter()
        fx_upscale.export(model, x, spec=specs[row["side"]], mode=row["mode"])
        row["export_seconds_float32"] = round(time.perf_counter() - start, 3)


def measure(name: str) -> list[dict]:
    try:
        rows, specs = check_float64(name)
        gc.collect()
        time_float32(name, specs, rows)
    except Exception as error:  # recorded in the table, not hidden
        head = "".join(traceback.format_exception_only(error)).strip().splitlines()[0][:300]
        print(traceback.format_exc(), file=sys.stderr)
        rows = [{"model": name, "error": head}]
    gc.collect()
    return rows


def is_exact(rows: list[dict]) -> bool:
    return all(r["max_relative_diff"] <= RTOL and r["gathers"] == r["gathers_in_graph"] for r in rows)


HEADERS = ("model", "input", "params", "input side: params after", "gathers upscale / baseline",
           "output side: params after", "gathers upscale / baseline", "kept for groups (in / out)",
           "exact (max rel. diff)", "export s, upscale (in / out)")  # fmt: skip


def markdown(rows: list[dict]) -> str:
    """One row per model: its input side and output side exports, or its error."""
    table = []
    for name in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == name]
        if "error" in mine[0]:
            table.append((name, "", "", f"error: {mine[0]['error']}", "", "", "", "", "no", ""))
        else:
            table.append(model_cells(name, mine))
    return format_table(table, HEADERS, markdown=True)


def model_cells(name: str, mine: list[dict]) -> tuple[str, ...]:
    get = {(r["side"], r["mode"]): r for r in mine}
    up_in, up_out = get["input", "upscale"], get["output", "upscale"]
    kept = (up_in["kept_for_groups"], up_out["kept_for_groups"])
    worst = max(r["max_relative_diff"] for r in mine)
    return (
        name, f"{up_in['input']}", f"{up_in['params_before'] / 1e6:.1f} M",
        f"{up_in['params_after'] / 1e6:.1f} M", f"{up_in['gathers']} / {get['input', 'baseline']['gathers']}",
        f"{up_out['params_after'] / 1e6:.1f} M", f"{up_out['gathers']} / {get['output', 'baseline']['gathers']}",
        f"{kept[0]} / {kept[1]}" if any(kept) else "",
        f"{'yes' if is_exact(mine) else 'no'} ({worst:.0e})",
        f"{up_in['export_seconds_float32']:.2f} / {up_out['export_seconds_float32']:.2f}",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help="also the models with more than 100 M parameters")
    parser.add_argument("--models", nargs="+", help="only these (of the zoo, with --large of all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/zoo.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = zoo_models.zoo(large=args.large)
    if args.models:
        unknown = sorted(set(args.models) - set(names))
        if unknown:
            parser.error(f"not in the zoo{'' if args.large else ' (try --large)'}: {unknown}")
        names = [n for n in names if n in args.models]
    load_before = os.getloadavg()[0]
    rows = []
    for index, name in enumerate(names, 1):
        start = time.perf_counter()
        mine = measure(name)
        rows += mine
        status = "error: " + mine[0]["error"] if "error" in mine[0] else ("exact" if is_exact(mine) else "NOT EXACT")
        print(f"[{index}/{len(names)}] {name}: {status}, {time.perf_counter() - start:.0f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"threads 1, load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after, "
        f"torch {torch.__version__}, {len(names)} models"
    )
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
