"""Bad input fails loudly, with typed errors that name the culprit and a fix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec, TracingError, UnsupportedOpError


class CumsumBetweenConvs(nn.Module):
    """torch.cumsum over channels mixes them: the registry cannot map channels through it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        z = torch.cumsum(y, dim=1)  # UNSUPPORTED-LINE
        return self.conv3(self.conv2(y) + z)


def _line_of(marker: str) -> int:
    with open(__file__) as source:
        return next(i for i, line in enumerate(source, 1) if marker in line)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 5, 5, dtype=torch.float64)


def test_unsupported_op_in_a_pruned_segment_raises_with_node_op_target_and_line(x):
    model = CumsumBetweenConvs().double().eval()
    spec = PruneSpec(inputs={"conv2.weight": [0, 3]})
    with pytest.raises(UnsupportedOpError) as error:
        fx_upscale.export(model, x, spec=spec)
    message = str(error.value)
    assert "node 'cumsum' (call_function torch.cumsum)" in message
    assert f"test_errors.py:{_line_of('UNSUPPORTED-' + 'LINE')}" in message
    assert "on_unsupported='freeze'" in message and "fx_upscale.register_pointwise" in message


def test_freeze_keeps_the_channels_crossing_the_op_and_reports_it(x):
    model = CumsumBetweenConvs().double().eval()
    spec = PruneSpec(inputs={"conv2.weight": [0, 3], "conv3.weight": [1, 2]})
    result = fx_upscale.export(model, x, spec=spec, on_unsupported="freeze")
    assert result.report.frozen == ("cumsum",)
    assert result.module.conv1.out_channels == 8  # read in full by cumsum
    assert result.module.conv3.in_channels == 6  # its own segment is not frozen
    assert_exact(result, spec.apply(model), x)


class BatchStatistics(CumsumBetweenConvs):
    """F.batch_norm in training mode normalizes each channel with statistics of the batch it is given."""

    def forward(self, x):
        y = self.conv1(x)
        return self.conv3(self.conv2(y) + F.batch_norm(y, None, None, training=True))  # BATCH-STATISTICS


def test_functional_batch_norm_with_batch_statistics_is_unsupported(x):
    model = BatchStatistics().double().eval()
    spec = PruneSpec(inputs={"conv2.weight": [0, 3], "conv3.weight": [1, 2]})
    with pytest.raises(UnsupportedOpError) as error:
        fx_upscale.export(model, x, spec=spec)
    message = str(error.value)
    assert "node 'batch_norm' (call_function torch.nn.functional.batch_norm)" in message
    assert f"test_errors.py:{_line_of('BATCH-' + 'STATISTICS')}" in message  # not torch's dispatch code
    assert "batch statistics" in message
    result = fx_upscale.export(model, x, spec=spec, on_unsupported="freeze")
    assert result.report.frozen == ("batch_norm",) and result.module.conv1.out_channels == 8
    assert_exact(result, spec.apply(model), x)


def test_unsupported_op_outside_pruned_segments_is_fine(x):
    model = CumsumBetweenConvs().double().eval()
    spec = PruneSpec(inputs={"conv3.weight": [1]})
    result = fx_upscale.export(model, x, spec=spec)
    assert result.module.conv3.in_channels == 7
    assert_exact(result, spec.apply(model), x)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.conv(x))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return x
        return -x


def test_untraceable_forward_raises_tracing_error_suggesting_leaf_modules(x):
    with pytest.raises(TracingError, match=r"could not trace DataDependent.*leaf_modules"):
        fx_upscale.export(DataDependent().double().eval(), x)


def test_leaf_modules_make_it_traceable_and_keep_their_channels(x):
    model = DataDependent().double().eval()
    result = fx_upscale.export(model, x, leaf_modules=["gate"])
    with torch.no_grad():
        assert torch.equal(result.module(x), model(x))


def test_bad_mode_is_named(x):
    with pytest.raises(ValueError, match=r"mode must be one of \('upscale', 'baseline', 'constrained'\), not 'fast'"):
        fx_upscale.export(CumsumBetweenConvs().double().eval(), x, mode="fast")


def test_training_mode_warns_and_exports_in_eval_mode(x):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)).double()
    before = model[1].running_mean.clone()
    with pytest.warns(UserWarning, match=r"eval mode"):
        result = fx_upscale.export(model, x)
    assert model.training and torch.equal(model[1].running_mean, before)
    assert not result.module.training
