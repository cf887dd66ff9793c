"""Hostile input: every bad input to ``export`` and ``mask`` fails with a typed error naming the culprit and a fix,
half-precision models export exactly, and the caller's model is never mutated, whether the call succeeds or fails."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.fx as fx
from support import assert_exact, randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec, SpecError, TracingError


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


class Branchy(nn.Module):
    """Residual adds and a stem read by two convs, so that half-precision exports reorder and narrow."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 1)
        self.c = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        z = torch.relu(self.a(y)) + self.b(y)
        return self.fc((self.c(z) + z).mean((2, 3)))


class ResidualOut(nn.Module):
    """Returns ``y + conv2(relu(y))``: conv2's filters are added into the model's output channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 1)
        self.conv2 = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        y = self.conv1(x)
        return y + self.conv2(torch.relu(y))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y if y.sum() > 0 else -y  # data-dependent control flow


@pytest.fixture
def model() -> nn.Module:
    return randomize_batchnorm(Small()).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, dtype=torch.float64)


def run_mask(model, inputs):
    return fx_upscale.mask(model, inputs, amount=0.5, side="both")


def run_export(model, inputs):
    return fx_upscale.export(model, inputs)


ENTRY_POINTS = pytest.mark.parametrize("entry", [run_export, run_mask], ids=["export", "mask"])


# -- the spec -------------------------------------------------------------------------------------------------


def test_unknown_parameter_suggests_the_closest_names(model, x):
    spec = PruneSpec(outputs={"conv1.wieght": [0]})
    with pytest.raises(SpecError, match=r"outputs names parameter 'conv1\.wieght'.*did you mean 'conv1\.weight'"):
        fx_upscale.export(model, x, spec=spec)


@pytest.mark.parametrize("side", ["inputs", "outputs"])
def test_a_bias_is_refused_naming_its_weight(model, x, side):
    spec = PruneSpec(**{side: {"conv1.bias": [0]}})
    with pytest.raises(SpecError, match=rf"{side} names 'conv1\.bias', a bias; name its weight 'conv1\.weight'"):
        fx_upscale.export(model, x, spec=spec)


@pytest.mark.parametrize("channels, bad", [([1, 8], r"\[8\]"), ([-1, 2], r"\[-1\]")])
def test_channel_indices_out_of_range_are_named(model, x, channels, bad):
    spec = PruneSpec(inputs={"conv2.weight": channels})
    with pytest.raises(SpecError, match=rf"inputs\['conv2\.weight'\] has channel indices {bad} out of range.*8 chan"):
        fx_upscale.export(model, x, spec=spec)


def test_masking_every_channel_of_a_layer_is_refused(model, x):
    with pytest.raises(SpecError, match=r"prunes all 8 channels of conv2\.weight.*keep at least one"):
        fx_upscale.export(model, x, spec=PruneSpec(inputs={"conv2.weight": range(8)}))
    with pytest.raises(SpecError, match=r"prunes all 8 channels of bn1\.weight"):
        fx_upscale.export(model, x, spec=PruneSpec(outputs={"bn1.weight": range(8)}))


def test_mask_never_masks_every_channel_of_a_layer(model, x):
    spec = fx_upscale.mask(model, x, amount=0.99, side="both")
    params = dict(model.named_parameters())
    assert spec.inputs and spec.outputs
    for side, mapping in ((1, spec.inputs), (0, spec.outputs)):
        for name, channels in mapping.items():
            assert len(channels) == params[name].shape[side if params[name].ndim > 1 else 0] - 1
    assert_exact(fx_upscale.export(model, x, spec=spec), spec.apply(model), x)


@pytest.mark.parametrize(
    "make, weight, channels, node",
    [
        (Small, "fc.weight", [1, 3], "fc"),
        (lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6)), "2.weight", [2], "_2"),
        (ResidualOut, "conv2.weight", [4], "conv2"),
    ],
    ids=["linear-head", "final-batchnorm", "added-into-output"],
)
def test_pruning_the_model_output_channels_is_refused(x, make, weight, channels, node):
    model = make().double().eval()
    with pytest.raises(SpecError) as error:
        fx_upscale.export(model, x, spec=PruneSpec(outputs={weight: channels}))
    message = str(error.value)
    assert f"PruneSpec.outputs[{weight!r}] prunes channels {channels} of node {node!r}" in message
    assert "model's output" in message and "change the output's shape" in message
    assert "Remove them from the spec" in message


def test_zero_output_channels_without_a_spec_are_kept(x):
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 6, 1)).double().eval()
    with torch.no_grad():
        model[2].weight[1] = 0
        model[2].bias[1] = 0
        model[2].weight[:, 5] = 0
    result = fx_upscale.export(model, x)
    assert result.module(x).shape == model(x).shape == (2, 6, 6, 6)
    assert result.module.get_submodule("2").in_channels == 7
    assert_exact(result, model, x)


# -- the example inputs ---------------------------------------------------------------------------------------


@ENTRY_POINTS
def test_example_input_with_the_wrong_channel_count(model, x, entry):
    wrong = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    with pytest.raises(TracingError) as error:
        entry(model, wrong)
    message = str(error.value)
    assert "failed at node 'conv1' (call_module conv1)" in message
    assert "example input 0: shape (2, 5, 6, 6), dtype torch.float64" in message
    assert "Input 0 ('x') first reaches conv1 (Conv2d with in_channels=3; weight dtype torch.float64" in message
    assert "Pass example inputs shaped and typed like a real batch" in message
    assert isinstance(error.value.__cause__, RuntimeError)


@ENTRY_POINTS
def test_example_input_with_the_wrong_rank(model, x, entry):
    with pytest.raises(TracingError, match=r"example input 0: shape \(3, 6, 6, 7, 2\).*in_channels=3"):
        entry(model, torch.randn(3, 6, 6, 7, 2, dtype=torch.float64))


@ENTRY_POINTS
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_example_input_with_the_wrong_dtype(model, x, entry, dtype):
    with pytest.raises(TracingError) as error:
        entry(model, x.to(dtype))
    message = str(error.value)
    assert f"example input 0: shape (2, 3, 6, 6), dtype {dtype}" in message
    assert "weight dtype torch.float64" in message and "in the model's dtype" in message
    assert isinstance(error.value.__cause__, RuntimeError)


@ENTRY_POINTS
@pytest.mark.parametrize("count", [0, 2])
def test_wrong_number_of_example_inputs(model, x, entry, count):
    with pytest.raises(TracingError, match=rf"Small\.forward\(x\) takes 1 input\(s\), but {count} example input"):
        entry(model, (x,) * count)


def test_a_later_layer_rejecting_the_input_names_its_node(x):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 5 * 5, 2)).double().eval()
    with pytest.raises(TracingError, match=r"failed at node '_2' \(call_module 2\).*shape \(2, 3, 6, 6\)"):
        fx_upscale.export(model, x)


# -- the model ------------------------------------------------------------------------------------------------


@ENTRY_POINTS
def test_untraceable_forward(x, entry):
    with pytest.raises(TracingError, match=r"could not trace Untraceable.*control flow.*leaf_modules"):
        entry(Untraceable().double().eval(), x)


@ENTRY_POINTS
def test_training_mode_warns_and_leaves_the_model_training(model, x, entry):
    model.train()
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match=r"Small is in training mode; fx_upscale traces a copy of it in eval mode"):
        result = entry(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics not updated
    if isinstance(result, fx_upscale.ExportResult):
        assert not result.module.training
        assert_exact(result, model.eval(), x)  # computed with the running statistics, as in eval mode


def test_eval_mode_does_not_warn(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fx_upscale.export(model, x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("side", ["input", "output", "both"])
def test_half_precision_models_export_and_match_in_their_dtype(dtype, side):
    model = randomize_batchnorm(Branchy()).to(dtype).eval()
    x = torch.randn(2, 3, 8, 8).to(dtype)
    spec = fx_upscale.mask(model, x, amount=0.5, side=side)
    result = fx_upscale.export(model, x, spec=spec)
    assert result.report.params_after < result.report.params_before
    assert all(p.dtype == dtype for p in result.module.parameters())
    with torch.no_grad():
        expected, actual = spec.apply(model)(x), result.module(x)
    assert actual.dtype == dtype
    # The export computes the same sums as the masked model with the zero terms left out and channels in another
    # order, so results may differ by the rounding of a few sums: allow 4 units in the last place at the output scale.
    scale = expected.abs().max().item()
    assert scale > 1e-2
    torch.testing.assert_close(actual, expected, rtol=0, atol=4 * torch.finfo(dtype).eps * scale)


def _meta_small() -> nn.Module:
    with torch.device("meta"):
        return Small().eval()


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: fx_upscale.export(m, x),
        lambda m, x: fx_upscale.export(m, x, spec=PruneSpec(inputs={"conv2.weight": [1]})),
        lambda m, x: fx_upscale.mask(m, x, amount=0.3),
    ],
    ids=["export", "export-with-spec", "mask"],
)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_model_on_the_meta_device_asks_to_be_materialized(call, device):
    x = torch.randn(2, 3, 6, 6, device=device)
    with pytest.raises(TracingError, match=r"parameter 'conv1\.weight' of Small is on the meta device.*to_empty"):
        call(_meta_small(), x)


def test_example_input_on_the_meta_device(model):
    with pytest.raises(TracingError, match=r"example input 0 is on the meta device.*real tensors"):
        fx_upscale.export(model, torch.randn(2, 3, 6, 6, dtype=torch.float64, device="meta"))


# -- the caller's model is never mutated ----------------------------------------------------------------------


def _snapshot(model: nn.Module) -> dict:
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    return {
        "values": {name: t.detach().clone() for name, t in tensors.items()},
        "identity": {name: id(t) for name, t in tensors.items()},
        "requires_grad": {name: t.requires_grad for name, t in tensors.items()},
        "training": {name: m.training for name, m in model.named_modules()},
        "structure": repr(model),
        "code": model.code if isinstance(model, fx.GraphModule) else None,
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["values"].keys() == before["values"].keys()
    for name, value in before["values"].items():
        now = after["values"][name]
        assert now.dtype == value.dtype and now.device == value.device and torch.equal(now, value), name
    for key in ("identity", "requires_grad", "training", "structure", "code"):
        assert after[key] == before[key], key


CALLS = {
    "export": lambda m, x: fx_upscale.export(m, x),
    "export-with-spec": lambda m, x: fx_upscale.export(m, x, spec=PruneSpec(inputs={"conv2.weight": [0, 3]})),
    "export-constrained": lambda m, x: fx_upscale.export(m, x, spec=run_mask(m, x), mode="constrained"),
    "mask": run_mask,
    "mask-constrained": lambda m, x: fx_upscale.mask(m, x, amount=0.5, side="both", method="constrained"),
    "bad-spec-name": lambda m, x: fx_upscale.export(m, x, spec=PruneSpec(inputs={"conv9.weight": [0]})),
    "output-channels": lambda m, x: fx_upscale.export(m, x, spec=PruneSpec(outputs={"fc.weight": [0]})),
    "wrong-shape-export": lambda m, x: fx_upscale.export(m, x[:, :2], spec=PruneSpec(inputs={"conv2.weight": [0]})),
    "wrong-dtype-mask": lambda m, x: run_mask(m, x.float()),
    "bad-mode": lambda m, x: fx_upscale.export(m, x, mode="fast"),
}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
def test_the_callers_model_is_never_mutated(model, x, call, training):
    model.train(training)
    before = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call(model, x)
        except (fx_upscale.UpscaleError, ValueError):
            pass
    _assert_unchanged(model, before)


def test_a_graph_module_passed_in_is_not_mutated(model, x):
    graph_module = fx.symbolic_trace(model)
    before = _snapshot(graph_module)
    spec = fx_upscale.mask(graph_module, x, amount=0.5, side="both")
    result = fx_upscale.export(graph_module, x, spec=spec)
    assert result.report.params_after < result.report.params_before
    _assert_unchanged(graph_module, before)
