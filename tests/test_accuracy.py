"""The accuracy benchmark (benchmarks/accuracy), reduced: one small model trained for one epoch, two heuristics,
three amounts, one Torch-Pruning target. The exported models must predict exactly what the masked models predict,
as trained and with BatchNorm recalibrated; the three protocols' tables and the tool table must be well-formed."""

import math
import statistics
import sys
from pathlib import Path

import pytest
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fx_upscale  # noqa: E402
from benchmarks.accuracy import compare, depgraph, float64_check  # noqa: E402
from benchmarks.accuracy.data import DataConfig, load_digits_split  # noqa: E402
from benchmarks.accuracy.experiment import run_experiment  # noqa: E402
from benchmarks.accuracy.sweep import (  # noqa: E402
    RECALIBRATION_BATCHES,
    Point,
    Setting,
    calibration_batches,
    load_trained,
)
from benchmarks.accuracy.train import TrainConfig, predict, trained_model  # noqa: E402

DATA = DataConfig(size=16, train_fraction=0.5)
TRAINING = {"resnet18": TrainConfig(epochs=1)}
AMOUNTS = (0.1, 0.3, 0.5)
CHECKS = {"accuracy", "masked_accuracy", "mismatches", "mismatches_float64", "max_abs_logit_diff"}
LATENCY = {"latency_ms", "latency_q1_ms", "latency_q3_ms", "unpruned_ms", "relative_latency"}
COLUMNS = {
    *("model", "heuristic", "side", "method", "amount", "params_before", "params_after", "sparsity"),
    *CHECKS,
    *(f"recalibrated_{column}" for column in CHECKS),
    *("gathers", "narrows", "extra_pruned_channels", "seconds"),
    *LATENCY,
}
TOOL_COLUMNS = {
    *("tool", "model", "target_sparsity", "pruning_ratio", "params_before", "params_after", "sparsity"),
    *("accuracy", "recalibrated_accuracy", "seconds"),
    *(f"{prefix}{column}" for prefix in ("", "recalibrated_") for column in depgraph.EXACTNESS),
    *LATENCY,
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
    assert (row["protocol"], row["recalibrated"], row["levels"]) == ("size", False, 2)
    assert row["mean_gain"] == pytest.approx(100 * (0.16 + 0.32) / 2, abs=0.01)
    assert (row["best_gain"], row["best_at"]) == (pytest.approx(32.0), 0.2)


def point(method: str, amount: float, sparsity: float, relative_latency: float, accuracy: float) -> dict:
    return {"model": "m", "heuristic": "h", "side": "input", "method": method, "amount": amount,
            "sparsity": sparsity, "relative_latency": relative_latency, "accuracy": accuracy,
            "masked_accuracy": accuracy, "recalibrated_accuracy": accuracy + 0.1,
            "recalibrated_masked_accuracy": accuracy + 0.1}  # fmt: skip


def test_same_amount_and_matched_latency():
    rows = [
        point("unconstrained", 0.1, 0.1, 1.1, 0.8),  # slower than the unpruned model: latency saved -10%
        point("unconstrained", 0.3, 0.3, 0.8, 0.6),
        point("constrained", 0.1, 0.2, 0.9, 0.7),
        point("constrained", 0.3, 0.5, 0.6, 0.2),
    ]
    (amount,) = compare.gains(rows, {"m": 0.9}, compare.PROTOCOLS["amount"])
    assert amount["levels"] == 2 and amount["mean_gain"] == pytest.approx(100 * (0.1 + 0.4) / 2)
    (recalibrated,) = compare.gains(rows, {"m": 1.0}, compare.PROTOCOLS["amount"], recalibrated=True)
    assert recalibrated["mean_gain"] == pytest.approx(amount["mean_gain"])  # both methods gained 0.1
    xs, ys = compare.curve(members(rows, "unconstrained"), 0.9, "latency_saved")
    assert xs.tolist() == pytest.approx([-0.1, 0.0, 0.2]) and ys.tolist() == [0.8, 0.9, 0.6]
    (latency,) = compare.gains(rows, {"m": 0.9}, compare.PROTOCOLS["latency"], levels=(0.1, 0.2, 0.3))
    # at 10% saved: unconstrained 0.75, constrained 0.7; at 20%: 0.6 against 0.7 - 0.5 / 3; 30% is out of range
    assert latency["levels"] == 2
    assert latency["mean_gain"] == pytest.approx(100 * (0.05 + 0.6 - 0.7 + 0.5 / 3) / 2, abs=0.01)


def members(rows: list[dict], method: str) -> list[dict]:
    return [row for row in rows if row["method"] == method]


@pytest.mark.slow
def test_reduced_experiment(tmp_path):
    experiment = run_experiment(
        ["resnet18"],
        ["l2", "hrank"],
        ["input"],
        AMOUNTS,
        tool_sparsities=(0.2,),
        data=DATA,
        training=TRAINING,
        workers=1,
        directory=tmp_path,
        quiet=True,
    )
    (info,) = experiment.models
    assert info["model"] == "resnet18" and not info["cached"] and 0.1 < info["accuracy"] <= 1.0
    assert info["kernels"] == "avx2" and [h["epoch"] for h in info["history"]] == [1]
    assert 0 < info["history"][0]["loss"] and 0 <= info["history"][0]["test_accuracy"] <= 1
    check_rows(experiment.rows)
    check_gains(experiment)
    check_tool(experiment)
    check_one_point_by_hand(experiment.rows, tmp_path)


def check_rows(rows: list[dict]) -> None:
    assert len(rows) == 2 * 2 * len(AMOUNTS) and all(set(row) == COLUMNS for row in rows)
    for prefix in ("", "recalibrated_"):
        assert all(row[f"{prefix}mismatches"] == 0 and row[f"{prefix}mismatches_float64"] == 0 for row in rows)
        assert all(row[f"{prefix}accuracy"] == row[f"{prefix}masked_accuracy"] for row in rows)
    assert all(0 < row["params_after"] < row["params_before"] for row in rows)
    assert all(row["latency_q1_ms"] <= row["latency_ms"] <= row["latency_q3_ms"] for row in rows)
    assert all(
        row["relative_latency"] == pytest.approx(row["latency_ms"] / row["unpruned_ms"], rel=1e-3) for row in rows
    )
    for heuristic in ("l2", "hrank"):
        for method in ("unconstrained", "constrained"):
            curve = [r for r in rows if (r["heuristic"], r["method"]) == (heuristic, method)]
            assert [r["amount"] for r in curve] == list(AMOUNTS)
            assert all(0 < a["sparsity"] < b["sparsity"] < 1 for a, b in zip(curve, curve[1:]))
            if method == "constrained":
                assert all(r["gathers"] == 0 for r in curve)


def check_gains(experiment) -> None:
    gains, rows = experiment.gains, experiment.rows
    keys = [(g["protocol"], g["recalibrated"], g["heuristic"]) for g in gains]
    assert keys == [(p, r, h) for p in ("amount", "size", "latency") for r in (False, True) for h in ("l2", "hrank")]
    assert all(tuple(g) == compare.GAIN_COLUMNS and g["best_gain"] >= g["mean_gain"] for g in gains)
    for g in compare.members(gains, protocol="amount"):  # the paper's protocol, recomputed from the rows
        prefix = "recalibrated_" if g["recalibrated"] else ""
        accuracy = {(r["method"], r["amount"]): r[f"{prefix}masked_accuracy"] for r in rows
                    if r["heuristic"] == g["heuristic"]}  # fmt: skip
        by_hand = statistics.mean(100 * (accuracy["unconstrained", a] - accuracy["constrained", a]) for a in AMOUNTS)
        assert g["levels"] == len(AMOUNTS) and g["mean_gain"] == pytest.approx(by_hand, abs=0.01)
    assert all(g["levels"] >= 3 and math.isfinite(g["mean_gain"]) for g in compare.members(gains, protocol="size"))
    for protocol in compare.PROTOCOLS:
        table = [
            [c.strip() for c in line.strip("|").split("|")] for line in compare.markdown(gains, protocol).splitlines()
        ]
        assert table[0] == ["model", "side", "l2", "hrank", "mean"] and set(table[1][0]) == {"-"}
        assert len(table) == 4 and table[2][:2] == ["resnet18", "input"] and table[3][:2] == ["all", ""]
        assert all(" / " in cell for cell in table[2][2:])


def check_tool(experiment) -> None:
    (row,) = experiment.tool
    assert set(row) == TOOL_COLUMNS and row["tool"] == "torch-pruning" and row["model"] == "resnet18"
    assert abs(row["sparsity"] - 0.2) <= depgraph.TOLERANCE and 0 < row["pruning_ratio"] < 0.2
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["recalibrated_accuracy"] <= 1 and row["seconds"] > 0
    for prefix in ("", "recalibrated_"):  # Torch-Pruning's model predicts what its masked twin predicts
        assert row[f"{prefix}mismatches"] == 0 and row[f"{prefix}max_abs_logit_diff"] < 1e-3
    (entry,) = experiment.tool_table
    assert entry["params"] == row["params_after"] and entry["torch-pruning_accuracy"] == row["accuracy"]
    # fx_upscale's curves interpolated at Torch-Pruning's sparsity lie between their measured neighbours
    for label, (heuristic, side, method) in compare.COMPARED.items():
        if side == "input":
            curve = compare.members(experiment.rows, heuristic=heuristic, side=side, method=method)
            values = [experiment.bases()[False]["resnet18"]] + [r["accuracy"] for r in curve]
            assert min(values) <= entry[f"{label}_accuracy"] <= max(values)
    lines = compare.tool_markdown(experiment.tool_table).splitlines()
    assert len(lines) == 3 and lines[2].count(" / ") == 8


def check_one_point_by_hand(rows: list[dict], directory: Path) -> None:
    """The checkpoint is cached, and one point recomputed by hand (as trained and recalibrated) agrees with its row."""
    split = load_digits_split(DATA)
    _, again = trained_model("resnet18", split, TRAINING["resnet18"], DATA, directory=directory)
    assert again["cached"]
    model = load_trained("resnet18", Setting(DATA, TRAINING, directory))
    x = split.test_x[:1]
    spec = fx_upscale.mask(model, x, amount=0.3, heuristic="l2", side="input", method="unconstrained")
    result = fx_upscale.export(model, x, spec=spec, mode="upscale")
    exported = predict(result.module, split.test_x).argmax(1)
    assert torch.equal(exported, predict(spec.apply(model), split.test_x).argmax(1))
    recalibrated = fx_upscale.recalibrate_batchnorm(
        spec.apply(model), calibration_batches(split, RECALIBRATION_BATCHES)
    )
    recalibrated_export = fx_upscale.export(recalibrated, x, spec=spec, mode="upscale").module
    predicted = predict(recalibrated_export, split.test_x).argmax(1)
    assert torch.equal(predicted, predict(recalibrated, split.test_x).argmax(1))
    (row,) = [r for r in rows if (r["heuristic"], r["method"], r["amount"]) == ("l2", "unconstrained", 0.3)]
    assert row["params_after"] == result.report.params_after
    assert row["accuracy"] == pytest.approx(float((exported == split.test_y).float().mean()), abs=1e-6)
    assert row["recalibrated_accuracy"] == pytest.approx(float((predicted == split.test_y).float().mean()), abs=1e-6)
    found = float64_check.check(model, Point("resnet18", "l2", "input", "unconstrained", 0.3), split)
    assert found["float64"] <= 1e-9 * found["scale"] and found["float32"] <= 1e-3 * found["scale"]
    assert found["float32"] == pytest.approx(row["recalibrated_max_abs_logit_diff"], rel=1e-6, abs=1e-9)


def test_float64_check_selects_the_points_above_its_threshold(tmp_path):
    table = tmp_path / "accuracy.csv"
    table.write_text(
        "model,heuristic,side,method,amount,recalibrated_max_abs_logit_diff\n"
        "densenet121,fpgm,input,constrained,0.55,0.054\nresnet18,l2,input,unconstrained,0.3,1e-6\n"
    )
    assert float64_check.suspicious_points(table, 1e-3) == [Point("densenet121", "fpgm", "input", "constrained", 0.55)]


def test_torch_pruning_twin_zeroes_what_torch_pruning_removes() -> None:
    """A DenseNet's BatchNorm reads a concatenation that several groups prune one after another, each naming rows by
    their position as pruned so far: the twin follows them, and computes what the pruned model computes."""
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(3, 3), num_init_features=16, num_classes=10)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.bias.data.uniform_(-0.5, 0.5)
    model = model.double().eval()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    pruned, twin = depgraph.prune_with_twin(model, x[:1], 0.3)
    assert depgraph.count(pruned) < 0.8 * depgraph.count(model)
    zeroed = [
        n for n, p in twin.named_parameters() if p.eq(0).any() and not dict(model.named_parameters())[n].eq(0).any()
    ]
    assert any(".norm1." in n for n in zeroed) and any(".conv2." in n for n in zeroed)
    with torch.no_grad():
        assert torch.allclose(pruned(x), twin(x), rtol=0, atol=1e-10)
        assert not torch.allclose(model(x), twin(x), rtol=0, atol=1e-3)  # the twin is pruned: it computes another model


def test_every_model_decays_its_weights_alike() -> None:
    """weight decay x the schedule's summed learning rate is DECAY for every trained model (within 2%)."""
    from benchmarks.accuracy.experiment import DECAY, DIGITS, TRAINING
    from benchmarks.accuracy.train import learning_rate_sum

    examples = len(load_digits_split(DIGITS).train_y)
    for name, train in TRAINING.items():
        assert train.weight_decay * learning_rate_sum(train, examples) == pytest.approx(DECAY, rel=0.02), name


def test_schedule_anneals_to_its_floor_and_holds_it_for_the_tail() -> None:
    """With a floor, the one-cycle part ends at floor x lr and the tail epochs train at exactly that rate; the
    summed rate (what weight decay multiplies) counts the tail; a tail as long as the training is refused."""
    from benchmarks.accuracy.train import learning_rate_sum, optimizer_and_schedule

    examples, train = 640, TrainConfig(epochs=5, batch_size=64, lr=1e-2, floor=0.1, tail_epochs=2)
    optimizer, schedule = optimizer_and_schedule([torch.nn.Parameter(torch.zeros(1))], train, examples)
    assert schedule.total_steps == 3 * 10
    rates = []
    for _ in range(schedule.total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(rates) == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-3)
    assert learning_rate_sum(train, examples) == pytest.approx(sum(rates) + 20 * 1e-3)
    with pytest.raises(ValueError, match=r"tail_epochs=5 must be in \[0, epochs=5\)"):
        TrainConfig(epochs=5, tail_epochs=5)


def test_fine_tuning_runs_each_recipe_at_a_tenth_of_its_rate_without_the_tail() -> None:
    """Every trained model's recipe, shortened to one epoch of fine-tuning, is a valid configuration (the
    recipes' constant tails are longer than that epoch)."""
    from benchmarks.accuracy.experiment import TRAINING
    from benchmarks.accuracy.finetune import finetune_config

    for name, train in TRAINING.items():
        tuned = finetune_config(train, 1)
        assert (tuned.epochs, tuned.tail_epochs, tuned.lr) == (1, 0, train.lr / 10), name
        kept = (tuned.batch_size, tuned.weight_decay, tuned.floor)
        assert kept == (train.batch_size, train.weight_decay, train.floor), name
