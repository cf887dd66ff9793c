"""benchmarks/layers_alone.py: a forward's ops timed one by one, on copies of the arguments they got."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import layers_alone  # noqa: E402
from fx_upscale import cost_model as cm  # noqa: E402


def test_every_op_but_the_views_is_timed_alone_and_priced():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Flatten()).eval()
    x = torch.randn(1, 3, 6, 6)
    row = layers_alone.ops_row(model, x, cm.default_cost_model())
    prediction = cm.predict_latency(model, x, cm.default_cost_model())
    assert row["part"] == "every op, each alone" and row["layers"] == prediction.ops >= 3  # the flatten is a view
    assert row["measured_ms"] > 0 and row["predicted_ms"] == 1e3 * prediction.seconds
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 4, 1)).eval()
    assert layers_alone.depthwise_row(depthwise, torch.randn(1, 4, 5, 5), cm.default_cost_model())["layers"] == 1
