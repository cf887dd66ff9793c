"""The accuracy benchmark (benchmarks/accuracy), reduced: one small model trained for one epoch, two heuristics,
three amounts. The exported models must predict exactly what the masked models predict, and the tables must be
well-formed."""

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fx_upscale  # noqa: E402
from benchmarks.accuracy import compare  # noqa: E402
from benchmarks.accuracy.data import DataConfig, load_digits_split  # noqa: E402
from benchmarks.accuracy.experiment import run_experiment  # noqa: E402
from benchmarks.accuracy.sweep import Setting, load_trained  # noqa: E402
from benchmarks.accuracy.train import TrainConfig, predict, trained_model  # noqa: E402

DATA = DataConfig(size=16, train_fraction=0.5)
TRAINING = {"resnet18": TrainConfig(epochs=1)}
AMOUNTS = (0.1, 0.3, 0.5)
COLUMNS = {
    "model",
    "heuristic",
    "side",
    "method",
    "amount",
    "params_before",
    "params_after",
    "sparsity",
    "accuracy",
    "masked_accuracy",
    "mismatches",
    "mismatches_float64",
    "max_abs_logit_diff",
    "gathers",
    "narrows",
    "extra_pruned_channels",
    "seconds",
}


def test_interpolation_at_matched_sparsity():
    sparsity, accuracy = compare.curve([{"sparsity": 0.4, "accuracy": 0.5}, {"sparsity": 0.2, "accuracy": 0.9}], 1.0)
    assert sparsity.tolist() == [0.0, 0.2, 0.4] and accuracy.tolist() == [1.0, 0.9, 0.5]
    values = compare.interpolate(sparsity, accuracy, (0.1, 0.3, 0.5))
    assert values[:2] == pytest.approx([0.95, 0.7]) and math.isnan(values[2])
    rows = [
        {"model": "m", "heuristic": "h", "side": "input", "method": "unconstrained", "sparsity": 0.5, "accuracy": 0.8},
        {"model": "m", "heuristic": "h", "side": "input", "method": "constrained", "sparsity": 0.25, "accuracy": 0.5},
    ]
    (row,) = compare.gains(rows, {"m": 1.0}, levels=(0.1, 0.2, 0.3))
    # unconstrained: 1 - 0.4 s; constrained: 1 - 2 s up to 0.25; level 0.3 is beyond the constrained curve
    assert row["levels"] == 2
    assert row["mean_gain"] == pytest.approx(100 * (0.16 + 0.32) / 2, abs=0.01)
    assert (row["best_gain"], row["best_at"]) == (pytest.approx(32.0), 0.2)


@pytest.mark.slow
def test_reduced_experiment(tmp_path):
    experiment = run_experiment(
        ["resnet18"],
        ["l2", "hrank"],
        ["input"],
        AMOUNTS,
        data=DATA,
        training=TRAINING,
        workers=1,
        directory=tmp_path,
        quiet=True,
    )
    (info,) = experiment.models
    assert info["model"] == "resnet18" and not info["cached"] and 0.1 < info["accuracy"] <= 1.0

    rows = experiment.rows
    assert len(rows) == 2 * 2 * len(AMOUNTS) and all(set(row) == COLUMNS for row in rows)
    assert all(row["mismatches"] == 0 and row["mismatches_float64"] == 0 for row in rows)
    assert all(row["accuracy"] == row["masked_accuracy"] for row in rows)
    assert all(0 < row["params_after"] < row["params_before"] for row in rows)
    for heuristic in ("l2", "hrank"):
        for method in ("unconstrained", "constrained"):
            curve = [r for r in rows if (r["heuristic"], r["method"]) == (heuristic, method)]
            assert [r["amount"] for r in curve] == list(AMOUNTS)
            assert all(0 < a["sparsity"] < b["sparsity"] < 1 for a, b in zip(curve, curve[1:]))
            if method == "constrained":
                assert all(r["gathers"] == 0 for r in curve)

    gains = experiment.gains
    keys = [(g["model"], g["heuristic"], g["side"]) for g in gains]
    assert keys == [("resnet18", h, "input") for h in ("l2", "hrank")]
    assert all(tuple(g) == compare.GAIN_COLUMNS for g in gains)
    assert all(g["levels"] >= 3 and math.isfinite(g["mean_gain"]) and g["best_gain"] >= g["mean_gain"] for g in gains)
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in compare.markdown(gains).splitlines()]
    assert table[0] == ["model", "side", "l2", "hrank", "mean", "best (at sparsity)"] and set(table[1][0]) == {"-"}
    assert len(table) == 2 + 1 + 1 and table[2][:2] == ["resnet18", "input"] and table[3][:2] == ["all", ""]

    # the checkpoint is cached, and one point recomputed by hand agrees with its row
    split = load_digits_split(DATA)
    _, again = trained_model("resnet18", split, TRAINING["resnet18"], DATA, directory=tmp_path)
    assert again["cached"]
    model = load_trained("resnet18", Setting(DATA, TRAINING, tmp_path))
    x = split.test_x[:1]
    spec = fx_upscale.mask(model, x, amount=0.3, heuristic="l2", side="input", method="unconstrained")
    result = fx_upscale.export(model, x, spec=spec, mode="upscale")
    exported = predict(result.module, split.test_x).argmax(1)
    assert torch.equal(exported, predict(spec.apply(model), split.test_x).argmax(1))
    (row,) = [r for r in rows if (r["heuristic"], r["method"], r["amount"]) == ("l2", "unconstrained", 0.3)]
    assert row["params_after"] == result.report.params_after
    assert row["accuracy"] == pytest.approx(float((exported == split.test_y).float().mean()), abs=1e-6)
