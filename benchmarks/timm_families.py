"""timm benchmark: one model per architecture family (tests/timm_models.py, by rule), through both front ends.

Per family and front end (``symbolic_trace``, ``torch.export``): whether the front end itself captures the model
(``torch.fx.symbolic_trace`` giving a graph that reproduces the model's outputs on the example inputs;
``torch.export.export`` succeeding), then per side (30% unconstrained L2 masks from ``fx_upscale.mask`` with that
capture, one per side, shared by the modes) and mode (upscale, baseline): max |exported - masked| relative to the
output's scale ("exact": at most 1e-8, and the graph holds exactly ``report.gathers`` gathers), parameters kept,
gathers, narrows, export seconds. A family "exports exactly and shrinks" through a front end when all four exports
are exact and the input-side upscale export keeps at most 95% of the parameters. Float64, batch 2, each model at
its pretrained configuration's input size, one thread.

Each family runs in a fresh process (``--jobs`` at a time, ``--timeout`` seconds each); a failure is recorded with
its error and the run goes on. Writes a CSV (one row per family, capture, side and mode, or one row holding an error)
and prints a Markdown table (one row per family) and the counts per front end.

    python benchmarks/timm_families.py [--families NAME ...] [--captures symbolic_trace torch.export] [--jobs 2]
        [--timeout 1800] [--out benchmarks/results/timm_families.csv] [--update]
    python benchmarks/timm_families.py --check-list     # the family list against its rule (3 minutes)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timm_models  # noqa: E402
from exactness import CAPTURES, MODES, SIDES, first_line, side_mode_rows  # noqa: E402

from fx_upscale.capture import _mismatch  # noqa: E402
from fx_upscale.tables import format_table  # noqa: E402

MAX_KEPT = 0.95
FIELDS = (
    "family", "model", "capture", "captured", "side", "mode", "input", "exact", "max_relative_diff", "params_before",
    "params_after", "params_kept", "gathers", "gathers_in_graph", "narrows", "export_seconds", "error",
)  # fmt: skip


def front_end_captures(model, x, capture: str) -> str:
    """Empty if the front end itself captures ``model`` on ``x``, else why not (its error, first line)."""
    try:
        if capture == "torch.export":
            torch.export.export(model, (x,))
            return ""
        reason = _mismatch(model, torch.fx.symbolic_trace(model), (x,))
        return reason or ""
    except Exception as error:  # any error means "does not capture"; recorded
        return first_line(error)


def measure(family: str, captures: tuple[str, ...] = CAPTURES) -> list[dict]:
    """The rows of one family (through ``captures``)."""
    name, size = timm_models.FAMILIES[family][0], timm_models.input_size(family)
    model, x = timm_models.build(family)
    rows = []
    for capture in captures:
        base = {"family": family, "model": name, "capture": capture, "input": size}
        reason = front_end_captures(model, x, capture)
        base["captured"] = not reason
        try:
            rows += side_mode_rows(model, x, base)
        except Exception as error:  # recorded in the table, not hidden
            print(traceback.format_exc(), file=sys.stderr)
            rows.append({**base, "error": first_line(error) + (f" [capture: {reason}]" if reason else "")})
    return rows


def check_list() -> None:
    """Recompute the family list by its rule (tests/timm_models.py) and say whether the committed one follows it."""
    chosen, excluded = timm_models.choose_families()
    differ = {f for f in chosen.keys() | timm_models.FAMILIES.keys() if chosen.get(f) != timm_models.FAMILIES.get(f)}
    differ |= {
        f for f in excluded.keys() | timm_models.EXCLUDED.keys() if excluded.get(f) != timm_models.EXCLUDED.get(f)
    }
    if differ:
        sys.exit(f"the family list does not follow its rule for {sorted(differ)}: update tests/timm_models.py")
    print(f"the family list follows its rule: {len(chosen)} families, {len(excluded)} over the limit")


def run_family(family: str, timeout: float, captures: tuple[str, ...] = CAPTURES) -> list[dict]:
    """:func:`measure` in a fresh process (one thread), or a row per front end holding its failure."""
    command = [sys.executable, __file__, "--one", family, "--captures", *captures]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            return json.loads(lines[-1])
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    name = timm_models.FAMILIES[family][0]
    return [{"family": family, "model": name, "capture": capture, "error": error[:1000]} for capture in captures]


def verdicts(rows: list[dict]) -> dict[tuple[str, str], bool]:
    """(family, capture) -> exports exactly and shrinks."""
    found: dict[tuple[str, str], bool] = {}
    for key in {(r["family"], r["capture"]) for r in rows}:
        mine = [r for r in rows if (r["family"], r["capture"]) == key]
        good = len(mine) == len(SIDES) * len(MODES) and all(str(r["exact"]) == "True" for r in mine)
        kept = [float(r["params_kept"]) for r in mine if r.get("side") == "input" and r.get("mode") == "upscale"]
        found[key] = good and bool(kept) and kept[0] <= MAX_KEPT
    return found


def captured(rows: list[dict], family: str, capture: str) -> bool:
    return any(str(r.get("captured")) == "True" for r in rows if (r["family"], r["capture"]) == (family, capture))


def summary(rows: list[dict]) -> str:
    """Per front end: families it captures, and of those, how many export exactly and shrink."""
    good = verdicts(rows)
    families = sorted({r["family"] for r in rows})
    lines = []
    for capture in CAPTURES:
        caught = [f for f in families if captured(rows, f, capture)]
        exact = [f for f in caught if good.get((f, capture))]
        share = f"{len(exact) / len(caught):.1%}" if caught else "n/a"
        lines.append(f"{capture}: captures {len(caught)} of {len(families)} families; of those, {len(exact)} "
                     f"({share}) export exactly and shrink")  # fmt: skip
    either = [f for f in families if any(good.get((f, c)) for c in CAPTURES)]
    lines.append(f"either front end: {len(either)} of {len(families)} families export exactly and shrink")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    """One row per family: per front end, the parameters kept by the input-side and output-side upscale exports if
    all four exports are exact and the input side shrinks; else why not."""
    good = verdicts(rows)
    table = []
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family]
        cells = [family, mine[0]["model"]]
        for capture in CAPTURES:
            theirs = [r for r in mine if r["capture"] == capture]
            cells.append(_cell(theirs, good.get((family, capture), False), captured(rows, family, capture)))
        table.append(cells)
    headers = ("family", "model (smallest)", "symbolic_trace: kept in / out", "torch.export: kept in / out")
    return format_table(table, headers, markdown=True)


def _cell(rows: list[dict], good: bool, caught: bool) -> str:
    by = {(r.get("side"), r.get("mode")): r for r in rows}
    kept = [by.get((side, "upscale"), {}).get("params_kept", "") for side in SIDES]
    shown = " / ".join(f"{float(k):.0%}" for k in kept if k)
    error = next((r["error"] for r in rows if r.get("error")), "")
    if good:
        return shown
    if error:
        return f"{'not captured' if not caught else 'error'}: {error.split(':')[0]}"
    exact = all(str(r.get("exact")) == "True" for r in rows)
    return f"{shown} ({'exact, does not shrink' if exact else 'NOT EXACT'})"


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({field: row.get(field, "") for field in FIELDS} for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", help="only these families (of tests/timm_models.py)")
    parser.add_argument("--jobs", type=int, default=2, help="families measured at a time (each on one thread)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per family")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/timm_families.csv"))
    parser.add_argument("--captures", nargs="+", choices=CAPTURES, default=list(CAPTURES), help="front ends")
    parser.add_argument("--update", action="store_true", help="replace only these families' and captures' rows")
    parser.add_argument("--check-list", action="store_true", help="only check the family list against its rule")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # worker: measure one family, print its rows as JSON
    args = parser.parse_args()
    torch.set_num_threads(1)
    captures = tuple(args.captures)
    if args.one:
        print(json.dumps(measure(args.one, captures)))
        return
    if args.check_list:
        check_list()
        return
    families = list(timm_models.FAMILIES)
    if args.families:
        unknown = sorted(set(args.families) - set(families))
        if unknown:
            parser.error(f"unknown families: {unknown}")
        families = [f for f in families if f in args.families]
    start = time.perf_counter()
    found: dict[str, list[dict]] = {}

    def one(family: str) -> None:
        found[family] = run_family(family, args.timeout, captures)
        status = ", ".join(f"{c}: {'ok' if verdicts(found[family]).get((family, c)) else 'NO'}" for c in captures)
        print(f"[{time.perf_counter() - start:7.0f} s] {family} ({len(found)}/{len(families)}): {status}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, families))
    rows = [row for family in families for row in found[family]]
    if args.update:
        rows = [r for r in read(args.out) if r["family"] not in found or r["capture"] not in captures] + rows
        rows.sort(key=lambda r: list(timm_models.FAMILIES).index(r["family"]))
    write(args.out, rows)
    print(markdown(rows))
    print()
    print(summary(rows))
    print(f"\nwrote {args.out} ({len(rows)} rows) in {time.perf_counter() - start:.0f} s; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
