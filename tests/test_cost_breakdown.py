"""benchmarks/cost_breakdown.py: predicted and profiled time per pricing rule of the cost model, on a real model."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import cost_breakdown  # noqa: E402


def test_breakdown_of_mobilenet_v3_small(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FX_UPSCALE_CACHE", str(tmp_path))  # no calibration cached: the defaults
    out = tmp_path / "breakdown.csv"
    argv = ["--models", "mobilenet_v3_small", "--repeats", "2", "--cached", "--csv", str(out)]
    assert cost_breakdown.main(argv) == 0
    with open(out) as handle:
        rows = {row["kind"]: row for row in csv.DictReader(handle)}
    for kind in ("conv", "grouped conv", "norm"):  # dense and depthwise convolutions, BatchNorms
        assert float(rows[kind]["predicted_ms"]) > 0 and float(rows[kind]["measured_ms"]) > 0, kind
    assert float(rows["cat"]["predicted_ms"]) == float(rows["cat"]["measured_ms"]) == 0  # it has no cat
    profiled = sum(float(rows[kind]["measured_ms"]) for kind in cost_breakdown.KINDS)
    assert float(rows["total (measured: profiled ops)"]["measured_ms"]) == pytest.approx(profiled)
    assert "| mobilenet_v3_small | 1       | grouped conv" in capsys.readouterr().out
