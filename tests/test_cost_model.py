"""The latency cost model (fx_upscale.cost_model) and the accesses mode upscale chooses by it: calibration and its
cache, predictions counted from the dispatched ops, absorption into a cat taken or declined by predicted cost,
zero-column reads (opt-in), the report's predicted costs, and exactness whatever is chosen."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from support import assert_exact, gathers_in_graph, randomize_batchnorm
from test_absorption import SPEC, Dense
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec
from fx_upscale import cost_model as cm

UNIT = cm.CostModel("cpu", "float64", "eager", 1, view_seconds=10.0, op_seconds=1.0, conv_seconds=100.0,
                    grouped_conv_seconds=300.0, norm_seconds=1000.0, input_seconds=0.5, module_seconds=0.25,
                    context_seconds=0.0, seconds_per_byte=1e-3, seconds_per_memory_byte=1e-3,
                    seconds_per_grouped_byte=1e-2, seconds_per_unaligned_grouped_byte=2e-2,
                    seconds_per_special_byte=1e-1, seconds_per_fresh_byte=1.0, seconds_per_norm_byte=1e-3,
                    seconds_per_pool_tap=1e-2, seconds_per_mac=1e-6, seconds_per_batched_mac=1e-7,
                    channel_block=1)  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cm.CACHE_ENV, str(tmp_path))
    return tmp_path / "cost_models.json"


def test_calibration_measures_every_constant_and_is_cached_per_device_dtype_backend_and_threads(cache):
    assert cm.load_cost_model().source == "default" and not cache.exists()
    eager = cm.calibrate(trials=2)
    assert eager.source == "calibrated" and eager.backend == "eager" and eager.device == "cpu"
    times = [eager.view_seconds, eager.op_seconds, eager.conv_seconds, eager.norm_seconds, eager.seconds_per_byte,
             eager.seconds_per_grouped_byte, eager.seconds_per_special_byte, eager.seconds_per_mac]  # fmt: skip
    assert all(0 < t < 1e-2 for t in times) and eager.input_seconds >= 0 and eager.module_seconds >= 0
    assert eager.seconds_per_fresh_byte >= 0 and eager.seconds_per_special_byte > eager.seconds_per_byte
    assert eager.seconds_per_norm_byte > 0 and eager.seconds_per_pool_tap > 0
    assert eager.grouped_conv_seconds > eager.op_seconds and eager.seconds_per_unaligned_grouped_byte > 0
    assert 0 <= eager.context_seconds < 1e-3
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cm.calibrate(trials=1, passes=1)
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is left alone
    assert eager.channel_block in (4, 8, 16)
    compiled = replace(eager, backend="compile", view_seconds=0.0, input_seconds=0.0, module_seconds=0.0)
    assert cm.save_cost_model(eager) == cm.save_cost_model(compiled) == cache
    assert cm.load_cost_model() == eager and cm.load_cost_model(backend="compile") == compiled
    assert cm.load_cost_model(dtype=torch.float64).source == "default"  # another dtype: not calibrated
    assert set(json.loads(cache.read_text())) == {eager.key, compiled.key}
    assert f"threads={torch.get_num_threads()}" in eager.key


def test_compile_backend_prices_views_and_module_calls_at_nothing():
    compiled = cm.default_cost_model(backend="compile")
    assert compiled.view_seconds == compiled.input_seconds == compiled.module_seconds == 0 < compiled.op_seconds
    with pytest.raises(ValueError, match=r"backend must be one of \('eager', 'compile'\), not 'jit'"):
        cm.load_cost_model(backend="jit")


class ConvNarrowCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([y.narrow(1, 0, 2), y.narrow(1, 4, 2)], 1)


def test_a_prediction_adds_up_the_dispatched_ops():
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    prediction = cm.predict_latency(ConvNarrowCat().double(), x, UNIT)
    conv_macs = 6 * 25 * 4 * 9
    conv_bytes = 8 * (x.numel() + 6 * 4 * 9 + 6 * 25)
    cat_bytes = 8 * (2 * 2 * 25 + 4 * 25)
    assert (prediction.views, prediction.ops, prediction.module_calls) == (2, 2, 1)
    assert prediction.macs == conv_macs and prediction.bytes_moved == conv_bytes + cat_bytes
    expected = 100 + conv_bytes * 1e-3 + conv_macs * 1e-6 + 2 * 10 + 1 + 2 * 0.5 + cat_bytes * 1e-3 + 0.25
    assert prediction.seconds == pytest.approx(expected)
    assert set(prediction.by_op) == {"convolution", "narrow", "cat"} or set(prediction.by_op) == {
        "convolution", "slice", "cat"}  # fmt: skip
    by_kind = {"conv": 100 + conv_bytes * 1e-3 + conv_macs * 1e-6, "view": 2 * 10,
               "cat": 1 + 2 * 0.5 + cat_bytes * 1e-3, "module call": 0.25}  # fmt: skip
    assert prediction.by_kind == pytest.approx(by_kind)


def test_the_breakdown_by_pricing_rule_tells_grouped_convolutions_and_norms_apart():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4), nn.SiLU(), nn.AdaptiveAvgPool2d(1)).eval()
    prediction = cm.predict_latency(model.double(), torch.randn(1, 4, 6, 6, dtype=torch.float64), UNIT)
    assert set(prediction.by_kind) == {"grouped conv", "norm", "special", "op", "module call"}
    assert sum(prediction.by_kind.values()) == pytest.approx(prediction.seconds)
    assert prediction.by_kind["module call"] == 4 * 0.25
    assert [cm.op_kind(name, groups) for name, groups in (("convolution", 1), ("convolution", 8), ("max_pool2d", 1),
            ("cat", 1), ("add", 1))] == ["conv", "grouped conv", "pool", "cat", "op"]  # fmt: skip


def test_transcendental_ops_and_large_fresh_outputs_cost_more_per_byte():
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    relu, silu = (cm.predict_latency(f, x, UNIT) for f in (nn.ReLU(), nn.SiLU()))
    moved = 2 * x.nbytes
    assert relu.seconds == pytest.approx(1.0 + moved * 1e-3)  # the module called is not a call inside
    assert silu.seconds == pytest.approx(1.0 + moved * 1e-1)
    fresh = cm.predict_latency(nn.ReLU(), x, replace(UNIT, fresh_bytes=x.nbytes - 1))
    assert fresh.seconds == pytest.approx(relu.seconds + x.nbytes * 1.0)
    in_place = cm.predict_latency(nn.ReLU(inplace=True), x.clone(), replace(UNIT, fresh_bytes=x.nbytes - 1))
    assert in_place.seconds == pytest.approx(relu.seconds)  # relu_ writes into its input: no fresh buffer


def test_a_depthwise_convolution_pays_its_own_fixed_cost_and_more_per_byte_where_its_channels_are_unaligned():
    x = torch.randn(1, 12, 5, 5, dtype=torch.float64)
    depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False).double()
    moved = 8 * (x.numel() + 12 * 9 + x.numel())
    assert cm.predict_latency(depthwise, x, UNIT).seconds == pytest.approx(300 + moved * 1e-2)
    aligned = cm.predict_latency(depthwise, x, replace(UNIT, channel_block=4)).seconds
    unaligned = cm.predict_latency(depthwise, x, replace(UNIT, channel_block=8)).seconds
    assert aligned == pytest.approx(300 + moved * 1e-2) and unaligned == pytest.approx(300 + moved * 2e-2)


def test_every_op_of_a_forward_pays_the_in_context_cost_and_so_does_a_planned_gather():
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    plain = cm.predict_latency(ConvNarrowCat().double(), x, UNIT)
    in_context = cm.predict_latency(ConvNarrowCat().double(), x, replace(UNIT, context_seconds=7.0))
    assert in_context.by_kind["context"] == 2 * 7.0  # the convolution and the cat; the narrow views are free
    assert in_context.seconds == pytest.approx(plain.seconds + 2 * 7.0) and "context" not in plain.by_kind
    assert replace(UNIT, context_seconds=7.0).gather(80) == pytest.approx(UNIT.gather(80) + 7.0)
    assert replace(UNIT, context_seconds=7.0).cat(1, 2, 80) == pytest.approx(UNIT.cat(1, 2, 80) + 7.0)


def test_the_in_context_cost_is_measured_on_a_network_of_pruned_blocks():
    network = cm.CalibrationNetwork().eval()
    x = torch.randn(1, 3, 128, 128)
    assert network(x).shape == (1, 10)
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert any(m.groups > 1 for m in convolutions) and any(m.kernel_size == (3, 3) and m.groups == 1
                                                            for m in convolutions)  # fmt: skip
    assert any(m.out_channels % 8 for m in convolutions)  # widths a pruning leaves
    prediction = cm.predict_latency(network, x, UNIT)
    assert {"cat", "special", "grouped conv", "conv", "norm"} <= set(prediction.by_kind)


def test_a_pooling_is_priced_by_its_window_taps():
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    pooled = cm.predict_latency(nn.MaxPool2d(3, 2, 1), x, UNIT)
    assert pooled.seconds == pytest.approx(1.0 + 8 * 3 * 3 * 9 * 1e-2)
    averaged = cm.predict_latency(nn.AvgPool2d(2), x, UNIT)
    assert averaged.seconds == pytest.approx(1.0 + 8 * 3 * 3 * 4 * 1e-2)


def test_convolutions_are_priced_with_channels_padded_to_the_kernel_block():
    conv = nn.Conv2d(9, 17, 1, bias=False).double()
    x = torch.randn(1, 9, 4, 4, dtype=torch.float64)
    plain = cm.predict_latency(conv, x, UNIT).macs
    padded = cm.predict_latency(conv, x, replace(UNIT, channel_block=8)).macs
    wide = cm.predict_latency(conv, x, replace(UNIT, channel_block=8, width_block=16)).macs
    assert plain == 9 * 17 * 16 and padded == 16 * 24 * 16 and wide == 16 * 24 * 4 * 16
    batched = cm.predict_latency(conv, torch.randn(cm.BATCHED, 9, 4, 4, dtype=torch.float64), UNIT)
    single = cm.predict_latency(conv, x, UNIT)
    moved = 8 * (cm.BATCHED * 9 * 16 + 17 * 9 + cm.BATCHED * 17 * 16)
    assert batched.seconds == pytest.approx(100 + moved * 1e-3 + cm.BATCHED * plain * 1e-7)
    assert single.seconds == pytest.approx(100 + 8 * (9 * 16 + 17 * 9 + 17 * 16) * 1e-3 + plain * 1e-6)


def test_absorbing_a_selection_into_its_cat_is_declined_where_views_cost_more_than_a_gather():
    model = randomize_batchnorm(Dense()).double().eval()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dear_views = replace(cm.default_cost_model(), view_seconds=1.0, input_seconds=1.0)
    free_views = cm.default_cost_model(backend="compile")
    declined = fx_upscale.export(model, x, spec=SPEC, cost_model=dear_views)
    taken = fx_upscale.export(model, x, spec=SPEC, cost_model=free_views)
    assert declined.report.absorbed == 0 < gathers_in_graph(declined.module) == declined.report.gathers
    assert taken.report.absorbed == 2 and gathers_in_graph(taken.module) == 0
    masked = SPEC.apply(model)
    assert_exact(declined, masked, x)
    assert_exact(taken, masked, x)
    reasons = [c.reason for s in declined.report.segments for c in s.consumers if c.access == "gather"]
    assert reasons and all("predicted faster than the cat concatenating only them" in r for r in reasons)
    assert declined.report.predicted_access_seconds == pytest.approx(
        sum(c.predicted_seconds for s in declined.report.segments for c in s.consumers)
    )
    assert declined.report.predicted_access_seconds > 0 and "cpu/float32/eager" in declined.report.cost_model


class Fan(nn.Module):
    """One producer read by three consumers needing channels {0, 1}, {1, 2} and {0, 2} (with ``FAN_SPEC``): no
    order makes all three contiguous, so one of them gathers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.heads = nn.ModuleList(nn.Conv2d(3, 4, 1) for _ in range(3))

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return sum(head(y) for head in self.heads)


FAN_SPEC = PruneSpec(inputs={"heads.0.weight": [2], "heads.1.weight": [0], "heads.2.weight": [1]})


def test_zero_column_reads_are_opt_in_and_exact():
    model = Fan().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    dear_copies = replace(cm.default_cost_model(), op_seconds=1.0, seconds_per_mac=0.0)
    default = fx_upscale.export(model, x, spec=FAN_SPEC, cost_model=dear_copies)
    zero = fx_upscale.export(model, x, spec=FAN_SPEC, cost_model=dear_copies, zero_columns=True)
    assert default.report.gathers == 1 and zero.report.gathers == gathers_in_graph(zero.module) == 0
    assert zero.report.params_after > default.report.params_after  # the zero columns are kept
    masked = FAN_SPEC.apply(model)
    assert_exact(default, masked, x)
    assert_exact(zero, masked, x)
    reasons = [c.reason for s in zero.report.segments for c in s.consumers]
    assert any("through zero weight columns: predicted faster than a gather" in r for r in reasons)
    cheap_copies = replace(cm.default_cost_model(), seconds_per_mac=1.0)
    assert fx_upscale.export(model, x, spec=FAN_SPEC, cost_model=cheap_copies, zero_columns=True).report.gathers == 1


def test_baseline_and_constrained_ignore_the_cost_model():
    model = Fan().double().eval()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    for mode in ("baseline", "constrained"):
        plans = [fx_upscale.export(model, x, spec=FAN_SPEC, mode=mode, cost_model=model_, zero_columns=True).plan
                 for model_ in (UNIT, cm.default_cost_model(backend="compile"))]  # fmt: skip
        assert plans[0].param_slices == plans[1].param_slices and plans[0].segments[0].consumers[0].access == (
            plans[1].segments[0].consumers[0].access
        )


def test_the_calibrate_command_prints_the_constants_and_caches_them(cache, capsys):
    from fx_upscale.cli import main

    assert main(["calibrate", "--backend", "eager", "compile", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"cached in {cache}") == 2 and "| view_seconds" in out and "G multiply-adds/s" in out
    assert all(f"| {rate} rate" in out for rate in ("memory_byte", "pool_tap", "batched_mac", "norm_byte"))
    assert cm.load_cost_model().source == cm.load_cost_model(backend="compile").source == "calibrated"
    assert main(["calibrate", "--device", "cuda"]) == (0 if torch.cuda.is_available() else 1)
