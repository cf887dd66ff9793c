"""Core-ATen benchmark: classification models exported from ``ExportedProgram.run_decompositions()`` (the opset
AOTAutograd and inductor passes see) beside the default IR's program of the same model.

Per model (tests/zoo_models.py: ``weights=None``, seed 0, BatchNorm randomised and calibrated, float64, batch 2, the
zoo's input size) and IR (``default``: ``torch.export.export(model, (x,))``; ``core``: that program's
``run_decompositions()``), per side (30% unconstrained L2 masks from ``fx_upscale.mask`` on that program) and mode
(upscale, baseline): exact (max |exported - masked model| at most 1e-8 of the output's scale, and
``report.gathers`` equal to the graph's ``index_select`` nodes), parameters kept, gathers, narrows, export seconds.

``--models timm:FAMILY ...`` measures timm families instead (tests/timm_models.py's model and input). Writes a CSV
(one row per model, IR, side and mode; a failure is a row with its error) and prints a Markdown table (one row per
model and IR).

    python benchmarks/core_aten.py [--models NAME|timm:FAMILY ...] [--out benchmarks/results/core_aten.csv]
"""

from __future__ import annotations

import argparse
import csv
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timm_models  # noqa: E402
import zoo_models  # noqa: E402
from exactness import SIDES, first_line, side_mode_rows  # noqa: E402

from fx_upscale.tables import format_table  # noqa: E402

MODELS = ("resnet18", "densenet121", "mobilenet_v3_large", "efficientnet_v2_s", "convnext_tiny", "regnet_y_400mf",
          "swin_t", "vit_b_16")  # fmt: skip
FIELDS = (
    "model", "ir", "capture", "side", "mode", "input", "distinct_ops", "exact", "max_relative_diff", "params_before",
    "params_after", "params_kept", "gathers", "gathers_in_graph", "narrows", "export_seconds", "error",
)  # fmt: skip


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A torchvision model of the zoo, or ``timm:FAMILY`` (tests/timm_models.py's model of that family)."""
    if name.startswith("timm:"):
        return timm_models.build(name.removeprefix("timm:"))
    return zoo_models.build(name)


def measure(name: str) -> list[dict]:
    """The rows of one model: both IRs, both sides, both modes (an error row where a step fails)."""
    model, x = build(name)
    try:
        program = torch.export.export(model, (x,))
    except Exception as error:  # recorded, not hidden
        return [{"model": name, "ir": "default", "capture": "torch.export", "error": first_line(error)}]
    rows = []
    for ir in ("default", "core"):
        base = {"model": name, "ir": ir, "capture": "torch.export", "input": x.shape[-1]}
        try:
            source = program if ir == "default" else program.run_decompositions()
            base["distinct_ops"] = len({str(n.target) for n in source.graph.nodes if n.op == "call_function"})
            rows += side_mode_rows(model, x, base, source)
        except Exception as error:  # recorded, not hidden
            rows.append({**base, "error": first_line(error)})
    del model, program
    gc.collect()
    return rows


HEADERS = ("model", "IR", "distinct ops", "input side: kept", "gathers upscale / baseline", "output side: kept",
           "gathers upscale / baseline", "exact (max rel. diff)")  # fmt: skip


def markdown(rows: list[dict]) -> str:
    """One row per model and IR."""
    table = []
    for key in dict.fromkeys((row["model"], row["ir"]) for row in rows):
        mine = [row for row in rows if (row["model"], row["ir"]) == key]
        if any(row.get("error") for row in mine):
            error = next(row["error"] for row in mine if row.get("error"))
            table.append((*key, mine[0].get("distinct_ops", ""), f"error: {error[:100]}", "", "", "", "no"))
            continue
        get = {(row["side"], row["mode"]): row for row in mine}
        cells = []
        for side in SIDES:
            up, base = get[side, "upscale"], get[side, "baseline"]
            cells += [f"{float(up['params_kept']):.1%}", f"{up['gathers']} / {base['gathers']}"]
        worst = max(float(row["max_relative_diff"]) for row in mine)
        exact = "yes" if all(row["exact"] for row in mine) else "no"
        table.append((*key, mine[0]["distinct_ops"], *cells, f"{exact} ({worst:.0e})"))
    return format_table(table, HEADERS, markdown=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="zoo models, or timm:FAMILY")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core_aten.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start, rows = time.perf_counter(), []
    for name in args.models:
        rows += measure(name)
        print(f"[{time.perf_counter() - start:7.0f} s] {name}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(markdown(rows))
    print(f"wrote {args.out} ({len(rows)} rows) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
