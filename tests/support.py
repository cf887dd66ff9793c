"""Helpers shared by the tests: realistic BatchNorm statistics, exactness checks, graph op counts."""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

import fx_upscale

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (in place), so that a freshly
    initialised model has outputs of a meaningful scale and a wrong export cannot hide below 1e-9."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NORMS):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                if module.weight is not None:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def outputs(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in outputs(v)]
    return [t for v in value for t in outputs(v)]


def max_abs_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(outputs(a), outputs(b), strict=True))


def assert_exact(result: fx_upscale.ExportResult, masked: nn.Module, inputs, tol: float = 1e-9) -> float:
    """The exported module computes what the masked model computes (float64), on a non-vacuous output."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    with torch.no_grad():
        expected = masked.eval()(*inputs)
        actual = result.module(*inputs)
    scale = max(t.abs().max().item() for t in outputs(expected))
    assert scale > 1e-6, f"output scale {scale} is too small for an exactness check to mean anything"
    diff = max_abs_diff(actual, expected)
    assert diff <= tol, f"max |exported - masked| = {diff} (output scale {scale})"
    return diff


def count_calls(graph_module: fx.GraphModule, target) -> int:
    return sum(node.op == "call_function" and node.target is target for node in graph_module.graph.nodes)


def gathers_in_graph(graph_module: fx.GraphModule) -> int:
    return count_calls(graph_module, torch.index_select)
