"""The second front end: graphs captured by ``torch.export`` (aten-level), ``ExportedProgram`` in, and ``"auto"``.

- The classification models the aten path must handle export exactly through ``capture="torch.export"``, with 30%
  input-side and output-side masks, modes upscale and baseline, removing parameters (as the symbolic-trace zoo).
- An ``ExportedProgram`` in gives a pruned module that ``torch.export`` re-exports, saves and reloads.
- ``"auto"`` falls back to ``torch.export`` when symbolic tracing fails or does not reproduce the model, and says so.
- A spec naming weights that no recognised layer reads is an error, not a silent no-op.
"""

from __future__ import annotations

import collections
import gc

import pytest
import torch
import torch.nn.functional as F
import zoo_models
from support import assert_exact, assert_relatively_exact, gathers_in_graph
from torch import nn

import fx_upscale

ATEN_ZOO = [
    "resnet18",
    *[
        pytest.param(name, marks=pytest.mark.slow)
        for name in ("densenet121", "mobilenet_v3_large", "efficientnet_v2_s", "convnext_tiny", "regnet_y_400mf",
                     "swin_t", "vit_b_16")
    ],
]  # fmt: skip


@pytest.mark.parametrize("name", ATEN_ZOO)
def test_classification_model_exports_exactly_through_torch_export(name: str) -> None:
    model, x = zoo_models.build(name)
    try:
        for side in ("input", "output"):
            spec = fx_upscale.mask(model, x, amount=0.3, side=side)
            with torch.no_grad():
                expected = spec.apply(model)(x)
            for mode in ("upscale", "baseline"):
                result = fx_upscale.export(model, x, spec=spec, mode=mode, capture="torch.export")
                where = f"side {side}, mode {mode}"
                assert result.report.capture == "torch.export", where
                assert_relatively_exact(result.module, expected, x, rtol=1e-8)
                assert gathers_in_graph(result.module) == result.report.gathers, where
                assert result.report.params_after < result.report.params_before, where
    finally:
        del model
        gc.collect()


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = torch.relu_(self.conv2(y)) + y
        return self.fc(self.conv3(y).mean(dim=(2, 3)))


def small_net() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallNet().double().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model, torch.randn(2, 3, 8, 8, dtype=torch.float64)


SPEC = fx_upscale.PruneSpec(outputs={"conv1.weight": [1, 4]}, inputs={"conv3.weight": [0, 2, 5]})


def test_an_exported_program_is_pruned_saved_and_reloaded(tmp_path) -> None:
    model, x = small_net()
    program = torch.export.export(SPEC.apply(model), (x,))
    result = fx_upscale.export(program, x)  # the spec read from the program's zeros
    assert result.report.capture == "torch.export"
    assert_exact(result, SPEC.apply(model), x)
    assert result.report.params_after < result.report.params_before
    path = tmp_path / "pruned.pt2"
    torch.export.save(torch.export.export(result.module, (x,)), path)
    reloaded = torch.export.load(path).module()
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.module(x))


def test_an_exported_program_with_a_spec_naming_its_weights() -> None:
    model, x = small_net()
    result = fx_upscale.export(torch.export.export(model, (x,)), x, spec=SPEC)
    assert_exact(result, SPEC.apply(model), x)
    assert result.module.get_parameter("conv1.weight").shape[0] == 8  # the residual add ties them to conv2's
    assert result.module.get_parameter("conv3.weight").shape[1] == 5  # its masked columns removed
    assert result.report.narrows + result.report.gathers == 1


def test_the_callers_exported_program_is_not_changed() -> None:
    model, x = small_net()
    program = torch.export.export(model, (x,))
    before = {name: tensor.clone() for name, tensor in program.state_dict.items()}
    fx_upscale.export(program, x, spec=SPEC)
    assert all(torch.equal(program.state_dict[name], tensor) for name, tensor in before.items())
    with torch.no_grad():
        assert torch.equal(program.module()(x), model(x))


class ShapeBranch(SmallNet):
    """Control flow on a shape: symbolic_trace cannot trace it, torch.export captures the branch taken."""

    def forward(self, x):
        if x.shape[-1] > 4:
            x = F.max_pool2d(x, 2)
        return super().forward(x)


class TracingAware(SmallNet):
    """A forward that behaves differently under symbolic tracing: the traced graph does not reproduce it."""

    def forward(self, x):
        if torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            return super().forward(x) * 2
        return super().forward(x)


@pytest.mark.parametrize(
    ("model_type", "reason"),
    [(ShapeBranch, "symbolic_trace could not trace"), (TracingAware, "does not reproduce the model's outputs")],
)
def test_auto_falls_back_to_torch_export(model_type: type, reason: str) -> None:
    torch.manual_seed(0)
    model, x = model_type().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    result = fx_upscale.export(model, x, spec=SPEC)
    assert result.report.capture == "torch.export"
    assert_exact(result, SPEC.apply(model), x)
    captured = fx_upscale.tracing.capture_model(model, (x,))
    assert captured.capture == "torch.export" and reason in (captured.fallback_reason or "")


def test_auto_keeps_symbolic_trace_when_it_works() -> None:
    model, x = small_net()
    assert fx_upscale.export(model, x, spec=SPEC).report.capture == "symbolic_trace"


class Features(SmallNet):
    """Returns an ``OrderedDict`` of feature maps, as torchvision's backbones do; its traced graph returns a dict."""

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return collections.OrderedDict([("0", y), ("1", self.conv3(torch.relu_(self.conv2(y)) + y))])


def test_auto_keeps_symbolic_trace_for_a_model_returning_an_ordered_dict() -> None:
    torch.manual_seed(0)
    model, x = Features().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    captured = fx_upscale.tracing.capture_model(model, (x,))
    assert captured.capture == "symbolic_trace", captured.fallback_reason
    spec = fx_upscale.PruneSpec(inputs={"conv3.weight": [0, 2, 5]})
    result = fx_upscale.export(model, x, spec=spec)
    assert result.report.capture == "symbolic_trace"
    assert_exact(result, spec.apply(model), x)


def test_symbolic_trace_chosen_explicitly_still_refuses_shape_control_flow() -> None:
    torch.manual_seed(0)
    with pytest.raises(fx_upscale.TracingError, match="symbolic_trace could not trace ShapeBranch"):
        fx_upscale.export(ShapeBranch().eval(), torch.randn(2, 3, 8, 8), capture="symbolic_trace")


def test_an_unknown_capture_is_refused() -> None:
    model, x = small_net()
    with pytest.raises(ValueError, match=r"capture must be one of \('auto', 'symbolic_trace', 'torch.export'\)"):
        fx_upscale.export(model, x, capture="dynamo")


class TransposedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2)

    def forward(self, x):
        return self.up(self.conv(x))


def test_a_spec_naming_weights_no_recognised_layer_reads_is_an_error() -> None:
    """A grouped transposed convolution is a barrier: a spec masking its input columns would prune nothing."""
    torch.manual_seed(0)
    model, x = TransposedHead().double().eval(), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    spec = fx_upscale.PruneSpec(inputs={"up.weight": [1]})
    for capture in ("symbolic_trace", "torch.export"):
        with pytest.raises(fx_upscale.SpecError, match=r"PruneSpec.inputs\['up.weight'\] names a weight no layer"):
            fx_upscale.export(model, x, spec=spec, capture=capture)


def test_mask_takes_an_exported_program_and_names_its_weights() -> None:
    model, x = small_net()
    program = torch.export.export(model, (x,))
    spec = fx_upscale.mask(program, x, amount=0.3, side="input")
    assert spec == fx_upscale.mask(model, x, amount=0.3, side="input", capture="torch.export")
    assert spec.inputs and set(spec.inputs) <= {"conv2.weight", "conv3.weight", "fc.weight"}
    result = fx_upscale.export(program, x, spec=spec)
    assert_exact(result, spec.apply(model), x)


class Upsampler(nn.Module):
    """Transposed convolutions (weights: in x out): a module's, and ``F.conv_transpose2d`` of a bare parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.up_weight = nn.Parameter(torch.randn(6, 5, 2, 2))
        self.head = nn.Conv2d(5, 4, 1)

    def forward(self, x):
        y = F.relu(self.up(F.relu(self.conv(x))))
        return self.head(F.conv_transpose2d(y, self.up_weight, None, stride=2))


@pytest.mark.parametrize("capture", ["symbolic_trace", "torch.export"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_a_conv_transpose_module_prunes_through_both_front_ends(capture: str, side: str) -> None:
    """``up`` (a module) is pruned on both sides; ``F.conv_transpose2d`` of a bare weight, whose axes a spec would
    read as (out, in), is a barrier: its channels stay, exactly."""
    torch.manual_seed(0)
    model, x = Upsampler().double().eval(), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec = fx_upscale.mask(model, x, amount=0.4, side=side, capture=capture)
    assert set(spec.inputs if side == "input" else spec.outputs) == {"conv.weight" if side == "output" else
                                                                       "up.weight"}  # fmt: skip
    result = fx_upscale.export(model, x, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), x)
    assert result.module.get_parameter("up.weight").shape[0] < 8
    assert result.module.get_parameter("up_weight").shape == (6, 5, 2, 2)


def test_an_exported_programs_transposed_weight_is_read_in_out() -> None:
    torch.manual_seed(0)
    model, x = Upsampler().double().eval(), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    program = torch.export.export(model, (x,))
    spec = fx_upscale.PruneSpec(inputs={"up.weight": [1, 6]})
    assert spec.apply(program.module()).get_parameter("up.weight")[[1, 6]].abs().sum() == 0
    result = fx_upscale.export(program, x, spec=spec)
    assert_exact(result, spec.apply(model), x)
    assert result.module.get_parameter("up.weight").shape == (6, 6, 2, 2)
