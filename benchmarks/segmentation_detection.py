"""Segmentation and detection benchmark: every torchvision segmentation model, and every detection model's
backbone (body and FPN), with BatchNorm2d and with FrozenBatchNorm2d, through both front ends.

The models of tests/segdet_models.py (``weights=None, weights_backbone=None``, seed 0, BatchNorm randomised and
calibrated, near-zero parameters redrawn, float64, batch 2, 64x64 inputs; SSD300 300x300, SSDlite 320x320). Norm
``frozen`` is the model as the pretrained builders make it (FrozenBatchNorm2d in the detection bodies; every norm of
the segmentation models); the ``_v2`` and SSD detection models keep BatchNorm2d when trained and have no such
variant. Per model, norm and capture (``symbolic_trace``, ``torch.export``) and per side (30% unconstrained L2
masks from ``fx_upscale.mask`` with that capture, one per side, shared by the modes), modes upscale and baseline:
max |exported - masked| relative to the output's scale ("exact": at most 1e-8), parameters before and after,
gathers (reported, and ``index_select`` nodes in the graph), narrows, export seconds. Each whole detection model is
also exported once per capture, which fails (box post-processing): its error is recorded.

Writes a CSV (one row per model, norm, capture, side and mode) and prints a Markdown table (one row per model, norm
and capture) and progress. A failure is recorded with its error and the run goes on.

    python benchmarks/segmentation_detection.py [--models NAME ...] [--no-whole]
        [--out benchmarks/results/segmentation_detection.csv]
"""

from __future__ import annotations

import argparse
import csv
import gc
import re
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import segdet_models  # noqa: E402
from exactness import CAPTURES, SIDES, first_line, side_mode_rows  # noqa: E402

import fx_upscale  # noqa: E402
from fx_upscale.tables import format_table  # noqa: E402

FIELDS = (
    "model", "part", "norm", "capture", "side", "mode", "input", "exact", "max_relative_diff", "params_before",
    "params_after", "params_kept", "gathers", "gathers_in_graph", "narrows", "export_seconds", "error",
)  # fmt: skip


def measure(name: str, norm: str, capture: str) -> list[dict]:
    """The rows of one model, norm and capture (or one row holding its error)."""
    base = {"model": name, "part": "model" if name in segdet_models.SEGMENTATION else "backbone", "norm": norm,
            "capture": capture}  # fmt: skip
    rows = []
    try:
        model, x = segdet_models.build(name, norm)
        base["input"] = x.shape[-1]
        rows += side_mode_rows(model, x, base)
    except Exception as error:  # recorded in the table, not hidden
        print(traceback.format_exc(), file=sys.stderr)
        rows.append({**base, "error": first_line(error)})
    gc.collect()
    return rows


def whole_model_row(name: str, capture: str) -> dict:
    """Export the whole detection model (it is expected to fail capture): the error it raises."""
    model = segdet_models.build_whole(name)
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))]
    row = {"model": name, "part": "whole model", "norm": "batch_norm", "capture": capture, "input": 64}
    try:
        fx_upscale.export(model, (images,), spec=fx_upscale.PruneSpec(), capture=capture)
        return {**row, "error": "no error: the whole model was captured"}
    except Exception as error:  # what it raises is what this row records
        return {**row, "error": first_line(error)}


HEADERS = ("model", "part", "norm", "capture", "params", "input side: kept", "gathers upscale / baseline",
           "output side: kept", "gathers upscale / baseline", "exact (max rel. diff)")  # fmt: skip


def markdown(rows: list[dict]) -> str:
    """One row per model, norm and capture: its input side and output side exports, or its error."""
    table, keys = [], []
    for row in rows:
        key = (row["model"], row["part"], row["norm"], row["capture"])
        if key not in keys and row["part"] != "whole model":
            keys.append(key)
    for key in keys:
        mine = [r for r in rows if (r["model"], r["part"], r["norm"], r["capture"]) == key]
        if any(r.get("error") for r in mine):
            table.append((*key, "", f"error: {mine[-1]['error'][:120]}", "", "", "", "no"))
            continue
        get = {(r["side"], r["mode"]): r for r in mine}
        worst = max(float(r["max_relative_diff"]) for r in mine)
        cells = []
        for side in SIDES:
            up, base = get[side, "upscale"], get[side, "baseline"]
            cells += [f"{float(up['params_kept']):.0%}", f"{up['gathers']} / {base['gathers']}"]
        exact = all(r["exact"] for r in mine)
        params = f"{mine[0]['params_before'] / 1e6:.1f} M"
        table.append((*key, params, *cells, f"{'yes' if exact else 'no'} ({worst:.0e})"))
    return format_table(table, HEADERS, markdown=True)


def whole_markdown(rows: list[dict]) -> str:
    """One row per whole detection model and capture: its error, where torch.export says it failed, and whether
    the message names the box post-processing and the backbone way."""
    cells = []
    for row in (r for r in rows if r["part"] == "whole model"):
        error = row["error"]
        where = re.search(r"\(in ([^()]*)\)\. ", error)
        cells.append((
            row["model"], row["capture"], error.split(":")[0], error.partition(": ")[2].partition(": ")[2][:70],
            where.group(1) if where else "", "yes" if "box post-processing" in error else "no",
        ))  # fmt: skip
    headers = ("detection model (whole)", "capture", "error", "cause", "where", "says: prune model.backbone")
    return format_table(cells, headers, markdown=True) if cells else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="only these (of the segmentation and detection models)")
    parser.add_argument("--no-whole", action="store_true", help="skip exporting the whole detection models")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/segmentation_detection.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = segdet_models.SEGMENTATION + segdet_models.DETECTION
    if args.models:
        unknown = sorted(set(args.models) - set(names))
        if unknown:
            parser.error(f"unknown models: {unknown}")
        names = tuple(n for n in names if n in args.models)
    rows: list[dict] = []
    start = time.perf_counter()
    for name, norm in segdet_models.variants(names):
        for capture in CAPTURES:
            found = measure(name, norm, capture)
            rows += found
            status = "ok" if all(r.get("exact") for r in found) else "NOT EXACT OR FAILED"
            print(f"[{time.perf_counter() - start:7.0f} s] {name} {norm} {capture}: {status}", flush=True)
    if not args.no_whole:
        for name in (n for n in names if n in segdet_models.DETECTION):
            for capture in CAPTURES:
                rows.append(whole_model_row(name, capture))
                print(f"[{time.perf_counter() - start:7.0f} s] {name} whole model {capture}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({field: row.get(field, "") for field in FIELDS} for row in rows)
    print(markdown(rows))
    print()
    print(whole_markdown(rows))
    print(f"\nwrote {args.out} ({len(rows)} rows) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
