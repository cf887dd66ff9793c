"""The core-ATen IR (``ExportedProgram.run_decompositions()``): what AOTAutograd and inductor passes see.

``fx_upscale.recompose`` rewrites its ``convolution``, ``_native_batch_norm_legit_no_training``,
``native_layer_norm``, ``max_pool2d_with_indices``, ``addmm`` / ``mm`` of a transposed weight and the decomposed
activations into the default IR's ops, so the same handlers apply: the classification models export exactly from a
decomposed program, with 30% masks per side and both modes, from the masks ``mask()`` chooses on the default IR's
program, and keep exactly the parameters they keep from it.
"""

from __future__ import annotations

import gc
import operator

import pytest
import torch
import torch.nn.functional as F
import zoo_models
from support import assert_exact, assert_relatively_exact, gathers_in_graph, randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale.recompose import recompose_core_aten

aten = torch.ops.aten
CORE_ZOO = [
    "resnet18",
    *[pytest.param(name, marks=pytest.mark.slow) for name in ("mobilenet_v3_large", "convnext_tiny", "densenet121")],
]


@pytest.mark.parametrize("name", CORE_ZOO)
def test_a_decomposed_program_exports_exactly_and_keeps_what_the_default_ir_keeps(name: str) -> None:
    model, x = zoo_models.build(name)
    try:
        program = torch.export.export(model, (x,))
        core = program.run_decompositions()
        assert any(node.target is aten.convolution.default for node in core.graph.nodes)
        for side in ("input", "output"):
            spec = fx_upscale.mask(core, x, amount=0.3, side=side)
            twin_spec = fx_upscale.mask(program, x, amount=0.3, side=side)
            assert spec == twin_spec, side
            with torch.no_grad():
                expected = spec.apply(model)(x)
            for mode in ("upscale", "baseline"):
                result = fx_upscale.export(core, x, spec=spec, mode=mode)
                twin = fx_upscale.export(program, x, spec=twin_spec, mode=mode)
                where = f"side {side}, mode {mode}"
                assert_relatively_exact(result.module, expected, x, rtol=1e-8)
                assert gathers_in_graph(result.module) == result.report.gathers, where
                assert result.report.params_after == twin.report.params_after < result.report.params_before, where
    finally:
        del model
        gc.collect()


class CoreNet(nn.Module):
    """Every recomposed pattern: convolution, BatchNorm, max pooling, LayerNorm over the channels, and linear layers
    with and without a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 4, bias=False)

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        y = self.norm(self.conv2(y).mean(dim=(2, 3)))
        return self.fc2(F.hardswish(self.fc1(y)))


def core_net() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = randomize_batchnorm(CoreNet()).double().eval()
    return model, torch.randn(2, 3, 8, 8, dtype=torch.float64)


def test_each_core_aten_pattern_is_recomposed_into_its_default_ir_twin() -> None:
    model, x = core_net()
    graph_module = torch.export.export(model, (x,)).run_decompositions().module()
    with torch.no_grad():
        before = graph_module(x)
    assert recompose_core_aten(graph_module) == 8  # 2 convolutions, BN, max pool, LayerNorm, addmm, mm, hardswish
    targets = {node.target for node in graph_module.graph.nodes if node.op == "call_function"}
    assert {aten.conv2d.default, aten.batch_norm.default, aten.max_pool2d.default, aten.layer_norm.default,
            aten.linear.default, aten.hardswish.default} <= targets  # fmt: skip
    assert not targets & {aten.convolution.default, aten._native_batch_norm_legit_no_training.default,
                          aten.max_pool2d_with_indices.default, aten.native_layer_norm.default, aten.addmm.default,
                          aten.mm.default, operator.getitem}  # fmt: skip
    with torch.no_grad():
        assert torch.equal(graph_module(x), before)


def test_a_decomposed_program_prunes_through_every_pattern() -> None:
    model, x = core_net()
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [1, 4]}, inputs={"conv2.weight": [1, 4], "fc2.weight": [0, 3]})
    result = fx_upscale.export(torch.export.export(model, (x,)).run_decompositions(), x, spec=spec)
    assert_exact(result, spec.apply(model), x)
    assert result.module.get_parameter("conv1.weight").shape[0] == 6
    assert result.module.get_parameter("bn1.weight").shape == (6,)
    assert result.module.get_parameter("fc1.weight").shape[0] == 4  # fc2's masked columns: fc1's rows
    assert result.module.get_parameter("conv2.weight").shape[1] == 6


def test_a_pattern_whose_other_outputs_are_read_is_left_alone() -> None:
    """``max_pool2d_with_indices`` whose indices are used: no single-output twin computes them."""

    class Unpool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            values, indices = F.max_pool2d(self.conv(x), 2, return_indices=True)
            return F.max_unpool2d(values, indices, 2)

    torch.manual_seed(0)
    model, x = Unpool().double().eval(), torch.randn(1, 3, 4, 4, dtype=torch.float64)
    graph_module = torch.export.export(model, (x,)).run_decompositions().module()
    assert recompose_core_aten(graph_module) == 1  # the convolution only
    assert any(node.target is aten.max_pool2d_with_indices.default for node in graph_module.graph.nodes)
    with torch.no_grad():
        assert torch.equal(graph_module(x), model(x))


def test_a_transposed_convolution_is_recomposed_and_pruned_as_in_the_default_ir() -> None:
    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
            self.conv2 = nn.Conv2d(6, 4, 1)

        def forward(self, x):
            return self.conv2(F.relu(self.up(F.relu(self.conv1(x)))))

    torch.manual_seed(0)
    model, x = Decoder().double().eval(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    program = torch.export.export(model, (x,))
    core = program.run_decompositions()
    graph_module = core.module()
    assert recompose_core_aten(graph_module) == 3
    assert any(node.target is aten.conv_transpose2d.input for node in graph_module.graph.nodes)
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [0, 5]}, inputs={"conv2.weight": [2]})
    result, twin = (fx_upscale.export(p, x, spec=spec) for p in (core, program))
    assert_exact(result, spec.apply(model), x)
    assert result.report.params_after == twin.report.params_after < result.report.params_before
