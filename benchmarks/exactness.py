"""One export measured against its masked model, as the model-family benchmarks (segmentation_detection.py,
timm_families.py) record it: exact within ``RTOL`` of the output's scale, parameters kept, gathers, export time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import gathers_in_graph, max_abs_diff, outputs  # noqa: E402

import fx_upscale  # noqa: E402

CAPTURES = ("symbolic_trace", "torch.export")
SIDES = ("input", "output")
MODES = ("upscale", "baseline")
AMOUNT = 0.3  # of each layer's channels, masked by fx_upscale.mask (unconstrained, L2)
RTOL = 1e-8


def output_scale(expected) -> float:
    return max(t.abs().max().item() for t in outputs(expected))


def side_mode_rows(model, x, base: dict, source=None) -> list[dict]:
    """One row per side and mode: 30% masks of that side, shared by the modes, each mode exported with
    ``base["capture"]`` and measured (:func:`export_row`). ``source`` is what ``mask`` and ``export`` read (an
    ``ExportedProgram`` of ``model``, say; default ``model``); the masked ``model`` is the reference."""
    rows, source = [], model if source is None else source
    for side in SIDES:
        spec = fx_upscale.mask(source, x, amount=AMOUNT, side=side, capture=base["capture"])
        with torch.no_grad():
            expected = spec.apply(model)(x)
        scale = output_scale(expected)
        for mode in MODES:
            rows.append(export_row(source, x, spec, expected, scale, {**base, "side": side, "mode": mode}))
    return rows


def export_row(model, x, spec, expected, scale: float, row: dict) -> dict:
    """``row`` (which names the ``mode`` and ``capture``) completed by exporting ``model`` (a module or an
    ``ExportedProgram``) with ``spec``."""
    start = time.perf_counter()
    result = fx_upscale.export(model, x, spec=spec, mode=row["mode"], capture=row["capture"])
    seconds = time.perf_counter() - start
    report = result.report
    with torch.no_grad():
        relative = max_abs_diff(result.module(x), expected) / scale
    in_graph = gathers_in_graph(result.module)
    return {
        **row, "exact": relative <= RTOL and in_graph == report.gathers and report.capture == row["capture"],
        "max_relative_diff": f"{relative:.1e}", "params_before": report.params_before,
        "params_after": report.params_after, "params_kept": f"{report.params_after / report.params_before:.3f}",
        "gathers": report.gathers, "gathers_in_graph": in_graph, "narrows": report.narrows,
        "export_seconds": round(seconds, 2), "error": "",
    }  # fmt: skip


def first_line(error: BaseException) -> str:
    """``Type: first line of the message``, at most 1000 characters: what a table records of a failure."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:1000]
