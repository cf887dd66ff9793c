"""PruneSpec: validation messages, masking, inference from zeros, and mask() choices."""

from __future__ import annotations

import pytest
import torch
from support import assert_exact, randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec, SpecError


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def model() -> nn.Module:
    return randomize_batchnorm(Small()).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, dtype=torch.float64)


def test_unknown_name_suggests_close_names(model):
    with pytest.raises(SpecError, match=r"'conv2\.wieght'.*did you mean 'conv2\.weight'"):
        PruneSpec(inputs={"conv2.wieght": [0]}).apply(model)


def test_out_of_range_channels_are_named(model):
    with pytest.raises(SpecError, match=r"conv2\.weight.*\[8, 9\] out of range.*8 channels on axis 1"):
        PruneSpec(inputs={"conv2.weight": [1, 8, 9]}).apply(model)


def test_pruning_every_channel_of_a_layer_is_refused(model):
    with pytest.raises(SpecError, match=r"prunes all 8 channels of conv1\.weight"):
        PruneSpec(outputs={"conv1.weight": range(8)}).apply(model)


def test_inputs_of_a_one_dimensional_parameter_are_refused(model):
    with pytest.raises(SpecError, match=r"bn1\.weight.*no input axis.*'outputs'"):
        PruneSpec(inputs={"bn1.weight": [0]}).apply(model)


def test_apply_masks_a_copy_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masked = PruneSpec(inputs={"conv2.weight": [1, 3]}, outputs={"conv1.weight": [2], "bn1.weight": [2]}).apply(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert masked.conv2.weight[:, [1, 3]].abs().sum() == 0
    assert masked.conv1.weight[2].abs().sum() == 0 and masked.conv1.bias[2] == 0
    assert masked.bn1.weight[2] == 0 and masked.bn1.bias[2] == 0
    assert masked.conv2.weight[:, 0].abs().sum() > 0


def test_from_zeros_recovers_the_spec(model, x):
    spec = fx_upscale.mask(model, x, amount=0.5, side="both")
    assert PruneSpec.from_zeros(spec.apply(model)) == spec


def test_export_without_spec_reads_the_zeros(model, x):
    spec = PruneSpec(inputs={"conv2.weight": [0, 5], "fc.weight": [1]}, outputs={"conv1.weight": [3]})
    masked = spec.apply(model)
    explicit = fx_upscale.export(model, x, spec=spec)
    inferred = fx_upscale.export(masked, x)
    assert_exact(inferred, masked, x)
    assert inferred.report.params_after == explicit.report.params_after < explicit.report.params_before


def test_output_side_masks_include_the_following_batchnorm(model, x):
    spec = fx_upscale.mask(model, x, amount=0.25, side="output")
    assert set(spec.outputs) == {"conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight"}
    assert spec.outputs["conv1.weight"] == spec.outputs["bn1.weight"] and len(spec.outputs["conv1.weight"]) == 2
    result = fx_upscale.export(model, x, spec=spec)
    assert result.module.conv1.out_channels == 6 and result.module.conv2.in_channels == 6
    assert_exact(result, spec.apply(model), x)


def test_input_side_masks_skip_the_layer_reading_the_graph_input(model, x):
    spec = fx_upscale.mask(model, x, amount=0.5, side="input")
    assert set(spec.inputs) == {"conv2.weight", "fc.weight"}
    assert all(len(channels) == 4 for channels in spec.inputs.values())


def test_l1_and_l2_pick_the_smallest_columns(x):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)).double().eval()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[3.0, -0.1, 2.0, 0.2], [-1.0, 0.1, 2.0, 0.25]]).reshape(2, 4, 1, 1))
    # column L1 norms: 4.0, 0.2, 4.0, 0.45; L2 (squared): 10, 0.02, 8, 0.1025
    assert fx_upscale.mask(model, x, amount=0.5, heuristic="l1").inputs == {"2.weight": frozenset({1, 3})}
    assert fx_upscale.mask(model, x, amount=0.75, heuristic="l2").inputs == {"2.weight": frozenset({1, 2, 3})}
    assert fx_upscale.mask(model, x, amount=0.75, heuristic="l1").inputs == {"2.weight": frozenset({1, 3, 0})}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"amount": 1.0}, r"amount must be a fraction in \[0, 1\)"),
        ({"amount": 0.3, "heuristic": "l3"}, r"heuristic must be one of \('l1', .*'hrank'\) or a callable.*, not 'l3'"),
        ({"amount": 0.3, "side": "left"}, r"side must be one of"),
        ({"amount": 0.3, "method": "loose"}, r"method must be one of"),
    ],
)
def test_mask_rejects_bad_arguments(model, x, kwargs, message):
    with pytest.raises(SpecError, match=message):
        fx_upscale.mask(model, x, **kwargs)


def test_constrained_masks_agree_across_coupled_layers(x):
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 10, 1)
            self.a = nn.Conv2d(10, 4, 1)
            self.b = nn.Conv2d(10, 4, 1)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            return self.a(y) + self.b(y)

    model = Branches().double().eval()
    spec = fx_upscale.mask(model, x, amount=0.3, method="constrained")
    assert spec.inputs["a.weight"] == spec.inputs["b.weight"] and len(spec.inputs["a.weight"]) == 3
    free = fx_upscale.mask(model, x, amount=0.3, method="unconstrained")
    assert free.inputs["a.weight"] != free.inputs["b.weight"]
