"""torchvision segmentation models and detection backbones, with BatchNorm2d and FrozenBatchNorm2d, through both front
ends; FrozenBatchNorm2d's handler (``symbolic_trace``) and the folding of attribute-only subgraphs
(``torch.export``); whole detection models refused with a clear error, and their backbones pruned instead.

- Every model of ``tests/segdet_models.py`` × norm × capture: 30% input-side and output-side masks, modes upscale
  and baseline, exported equals masked within 1e-8 of the output's scale (float64), the graph holds exactly
  ``report.gathers`` gathers, upscale never gathers more than baseline, and parameters are removed. By default only
  LR-ASPP (segmentation) and the FPN backbone of Faster R-CNN MobileNetV3-320 run; the rest are marked slow.
- An output mask reaches past a FrozenBatchNorm2d: a spec names its weight buffer, and masking zeroes its weight and
  bias there; ``mask()`` masks them through either front end.
- ``torch.export`` graphs of FrozenBatchNorm2d models hold no ``rsqrt``: each norm's arithmetic is recomposed into
  ``batch_norm`` over its own buffers (``fx_upscale/recompose.py``) before the analysis, so its channels are pruned
  as through ``symbolic_trace``. Folding attribute-only subgraphs (``fx_upscale/folding.py``) is tested on the
  norm's graph as ``torch.export`` gives it.
"""

from __future__ import annotations

import copy
import functools

import pytest
import segdet_models
import torch
import torch.nn.functional as F
from support import assert_relatively_exact, checked_exports
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import fx_upscale
from fx_upscale.capture_hints import caused_by, detection_hint, is_detection_model
from fx_upscale.channels import analyse_channels
from fx_upscale.errors import TracingError
from fx_upscale.folding import FOLDED_PREFIX, fold_constant_subgraphs
from fx_upscale.ops.frozen_batch_norm import FrozenBatchNorm, FrozenBatchNormHandler

CAPTURES = ("symbolic_trace", "torch.export")
SIDES = ("input", "output")
FAST = ("lraspp_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")
X = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def model_cases() -> list:
    return [
        pytest.param(name, norm, capture, marks=() if name in FAST else (pytest.mark.slow,))
        for name, norm in segdet_models.variants()
        for capture in CAPTURES
    ]


@pytest.mark.parametrize("name, norm, capture", model_cases())
def test_model_exports_exactly_and_shrinks(name: str, norm: str, capture: str) -> None:
    model, x = segdet_models.build(name, norm)
    reports = {}
    for side, mode, result in checked_exports(model, x, capture):
        where = f"side {side}, mode {mode}"
        if norm == "frozen" and capture == "torch.export":  # every FrozenBatchNorm2d folded to a scale, a shift
            assert torch.ops.aten.rsqrt.default not in {n.target for n in result.module.graph.nodes}, where
        assert result.report.params_after < result.report.params_before, where
        reports[side, mode] = result.report
    for side in SIDES:
        assert reports[side, "upscale"].gathers <= reports[side, "baseline"].gathers, side


# -- FrozenBatchNorm2d -------------------------------------------------------------------------------------------


class FrozenNet(nn.Module):
    """conv -> FrozenBatchNorm2d -> relu -> conv -> FrozenBatchNorm2d -> conv, as torchvision's bodies use it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = FrozenBatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return self.conv3(F.relu(self.bn2(self.conv2(y))))


def frozen_net() -> nn.Module:
    torch.manual_seed(0)
    model = FrozenNet().double().eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in (model.bn1, model.bn2):
            n = norm.weight.numel()
            norm.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            norm.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            norm.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            norm.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
        model.bn1.bias[[2, 5]] = 0.0  # channels 2 and 5: shift 0, a zero input stays zero
        model.bn1.running_mean[[2, 5]] = 0.0
    return model


def test_frozen_batchnorm_is_one_leaf_node_with_its_own_role() -> None:
    graph_module = fx_upscale.trace(frozen_net(), (X,), capture="symbolic_trace")
    analysis = analyse_channels(graph_module)
    calls = {str(node.target): node.name for node in graph_module.graph.nodes if node.op == "call_module"}
    assert analysis.roles[calls["bn1"]] == FrozenBatchNorm(data=calls["conv1"], module="bn1")
    assert isinstance(analysis.handler(calls["bn1"]), FrozenBatchNormHandler)


@pytest.mark.parametrize("capture", CAPTURES)
def test_frozen_batchnorm_buffers_follow_the_kept_channels(capture: str) -> None:
    model = frozen_net()
    spec = fx_upscale.PruneSpec(inputs={"conv2.weight": [0, 3, 7], "conv3.weight": [1]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_relatively_exact(result.module, spec.apply(model)(X), X, rtol=1e-12)
    assert result.module.get_parameter("conv1.weight").shape[0] == 5  # its only reader drops 3 columns
    assert result.module.get_parameter("conv2.weight").shape == (5, 5, 3, 3)
    assert {tuple(b.shape) for b in result.module.get_submodule("bn1").buffers()} == {(5,)}
    assert {tuple(b.shape) for b in result.module.get_submodule("bn2").buffers()} == {(5,)}
    if capture == "symbolic_trace":
        assert isinstance(result.module.get_submodule("bn1"), FrozenBatchNorm2d)
    else:  # recomposed: one batch_norm per norm, over its own buffers
        norms = [n for n in result.module.graph.nodes if n.target is torch.ops.aten.batch_norm.default]
        assert [str(n.args[1].target) for n in norms] == ["bn1.weight", "bn2.weight"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_frozen_batchnorm_channel_is_zero_where_its_shift_is(capture: str) -> None:
    """conv1's filters 2 and 3 masked: after bn1, channel 2 (shift 0) is zero and is removed; channel 3 is the
    shift, read by conv2: kept."""
    model = frozen_net()
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [2, 3]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_relatively_exact(result.module, spec.apply(model)(X), X, rtol=1e-12)
    assert result.module.get_parameter("conv1.weight").shape[0] == 7
    assert result.module.get_parameter("conv2.weight").shape[1] == 7


@pytest.mark.parametrize("capture", CAPTURES)
def test_an_output_mask_carries_through_a_frozen_batchnorm(capture: str) -> None:
    """mask() names bn1's weight buffer with conv1's filters; the spec zeroes its weight and bias there, so the
    channels are zero after the norm and go, through either front end."""
    model = frozen_net()
    spec = fx_upscale.mask(model, X, amount=0.4, side="output", capture=capture)
    assert spec == fx_upscale.mask(model, X, amount=0.4, side="output", capture="symbolic_trace")
    assert set(spec.outputs) == {"conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight"}
    assert spec.outputs["bn1.weight"] == spec.outputs["conv1.weight"]
    masked = spec.apply(model)
    rows = sorted(spec.outputs["bn1.weight"])
    assert not masked.bn1.weight[rows].any() and not masked.bn1.bias[rows].any()
    assert masked.bn1.running_mean[rows].any()  # the statistics stay: scale and shift are zero without them
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_relatively_exact(result.module, masked(X), X, rtol=1e-12)
    assert result.module.get_parameter("conv1.weight").shape[0] == 8 - len(rows)
    assert {tuple(b.shape) for b in result.module.get_submodule("bn1").buffers()} == {(8 - len(rows),)}


def test_a_spec_names_a_frozen_batchnorm_by_its_weight_buffer() -> None:
    model = frozen_net()
    with pytest.raises(fx_upscale.SpecError, match=r"names 'bn1.bias', a bias; name its weight 'bn1.weight'"):
        fx_upscale.PruneSpec(outputs={"bn1.bias": [1]}).validate(model)
    with pytest.raises(fx_upscale.SpecError, match=r"'bn1.weight', a 1-D parameter with no input axis"):
        fx_upscale.PruneSpec(inputs={"bn1.weight": [1]}).validate(model)
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [1, 4], "bn1.weight": [1, 4]})
    assert fx_upscale.PruneSpec.from_zeros(spec.apply(model)) == spec


def test_frozen_batchnorm_invariant_names_a_buffer_of_another_length() -> None:
    norm = FrozenBatchNorm2d(4)
    assert FrozenBatchNormHandler().invariant(norm) == []
    norm.running_var = torch.ones(3)
    (mismatch,) = FrozenBatchNormHandler().invariant(norm)
    assert (mismatch.attr, mismatch.actual, mismatch.expected) == ("running_var.shape[0]", 3, 4)
    assert FrozenBatchNormHandler().invariant(nn.BatchNorm2d(4)) == []


# -- folding attribute-only subgraphs --------------------------------------------------------------------------------


def exported(model: nn.Module):
    return torch.export.export(model.eval(), (X,)).module()


def test_folding_turns_a_frozen_batchnorm_into_a_scale_and_a_shift() -> None:
    model = frozen_net()
    graph_module = exported(model)
    names = fold_constant_subgraphs(graph_module)
    assert sorted(name.partition(".")[0] for name in names) == ["bn1", "bn1", "bn2", "bn2"]  # a scale, a shift
    assert all(name.partition(".")[2].startswith(FOLDED_PREFIX) for name in names)
    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    assert torch.ops.aten.rsqrt.default not in targets and torch.ops.aten.reshape.default not in targets
    assert not any(name.endswith(("running_mean", "running_var")) for name, _ in graph_module.named_buffers())
    with torch.no_grad():
        assert torch.allclose(graph_module(X), model(X), rtol=0, atol=1e-13)
    assert fold_constant_subgraphs(graph_module) == []  # a second run finds nothing


class Guarded(nn.Module):
    """What folding leaves alone: a parameter's chain, a buffer computed into a conv weight, a random op; beside one
    buffer it folds (``beta`` reshaped, multiplying a random tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.gamma = nn.Parameter(torch.rand(3))
        self.register_buffer("kernel", torch.rand(3, 3, 1, 1))
        self.register_buffer("beta", torch.rand(3))

    def forward(self, x):
        y = self.conv(x) * self.gamma.reshape(1, -1, 1, 1)  # a parameter: kept trainable and named
        y = F.conv2d(y, self.kernel * 2.0)  # a weight computed from a buffer: the conv reads it
        return y + self.beta.reshape(1, -1, 1, 1) * torch.rand_like(y)  # random: computed on every call


def test_folding_leaves_parameters_weights_and_random_ops_alone() -> None:
    model = Guarded().double()
    graph_module = exported(model)
    (folded,) = fold_constant_subgraphs(graph_module)
    assert folded.startswith(FOLDED_PREFIX)
    assert torch.equal(graph_module.get_buffer(folded), model.beta.reshape(1, -1, 1, 1))
    targets = [node.target for node in graph_module.graph.nodes]
    assert {"gamma", "kernel", folded} <= set(targets) and "beta" not in targets
    assert torch.ops.aten.rand_like.default in targets
    assert isinstance(graph_module.get_parameter("gamma"), nn.Parameter)
    convs = [node for node in graph_module.graph.nodes if node.target is torch.ops.aten.conv2d.default]
    assert convs[1].args[1].target is torch.ops.aten.mul.Tensor  # kernel * 2.0, computed on every call


# -- whole detection models ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def detection_model() -> nn.Module:
    return segdet_models.build_whole("fasterrcnn_mobilenet_v3_large_320_fpn")


@pytest.mark.parametrize(
    "capture", ["auto", *(pytest.param(c, marks=pytest.mark.slow) for c in CAPTURES)]
)  # fmt: skip
def test_a_whole_detection_model_is_refused_naming_its_box_post_processing(capture: str) -> None:
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))]
    with pytest.raises(TracingError) as raised:
        fx_upscale.export(detection_model(), (images,), spec=fx_upscale.PruneSpec(), capture=capture)
    message = str(raised.value)
    assert "box post-processing" in message and "model.backbone = result.module" in message, message
    if capture != "symbolic_trace":
        assert "batched_nms" in message, message  # where torch.export failed


def test_only_whole_detection_models_get_the_backbone_hint() -> None:
    model = detection_model()
    assert is_detection_model(model) and "fx_upscale.export(model.backbone" in detection_hint(model)
    assert not is_detection_model(model.backbone) and detection_hint(model.backbone) == ""
    assert caused_by(RuntimeError("guard\nCaused by: (torchvision/ops/boxes.py:86 in batched_nms)\nmore")) == (
        "torchvision/ops/boxes.py:86 in batched_nms"
    )
    assert caused_by(RuntimeError("no location")) is None


@pytest.mark.slow
@pytest.mark.parametrize("capture", CAPTURES)
def test_a_pruned_backbone_goes_back_into_its_detection_model(capture: str) -> None:
    """The documented way: prune ``model.backbone`` on the images the model's transform makes (``torch.export``
    fixes the input shape), then put it back; the detections equal those of the model with the masked backbone."""
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    whole, backbone, _ = segdet_models.build_with_whole(name, "frozen")
    whole.roi_heads.score_thresh = 0.0  # random heads score every class about equally: keep their detections
    images = list(torch.rand(2, 3, 64, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    x = whole.transform(images)[0].tensors
    spec = fx_upscale.mask(backbone, x, amount=0.3, side="input", capture=capture)
    result = fx_upscale.export(backbone, x, spec=spec, capture=capture)
    assert result.report.params_after < result.report.params_before
    masked, pruned = copy.deepcopy(whole), copy.deepcopy(whole)
    masked.backbone, pruned.backbone = spec.apply(backbone), result.module
    with torch.no_grad():
        expected, actual = masked(images), pruned(images)
    assert [len(d["boxes"]) for d in expected] == [len(d["boxes"]) for d in actual] and len(expected[0]["boxes"])
    for want, got in zip(expected, actual):
        assert torch.equal(want["labels"], got["labels"])
        assert torch.allclose(want["boxes"], got["boxes"], rtol=0, atol=1e-8)
        assert torch.allclose(want["scores"], got["scores"], rtol=0, atol=1e-10)
