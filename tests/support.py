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


def randomize_small_parameters(model: nn.Module, seed: int = 0, threshold: float = 1e-3) -> nn.Module:
    """Redraw every parameter whose entries are all below ``threshold`` in magnitude (in place): zero-initialised
    heads and biases, ConvNeXt's 1e-6 layer scale. A zero head makes the output zero, a tiny layer scale hides the
    residual branch. Weights (2-D and more) become N(0, 2/fan_in), other parameters N(0, 0.01)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and parameter.abs().max() < threshold:
                fan_in = parameter.numel() // parameter.shape[0] if parameter.dim() > 1 else 0
                std = (2 / fan_in) ** 0.5 if fan_in else 0.1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def calibrate_batchnorm(model: nn.Module, inputs) -> nn.Module:
    """Set every BatchNorm's running statistics to those of what it reads in a forward of ``inputs``, as a trained
    network's are (in place; the model ends in eval mode). Each BatchNorm then normalises its input, so that no
    path fades away or explodes with depth, whatever the initialisation: with random statistics, the output of a deep
    network hardly depends on its input. In eval mode the model computes on ``inputs`` what it computed in that
    forward (training mode), so include the inputs of the checks in ``inputs``."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    norms = [module for module in model.modules() if isinstance(module, NORMS) and module.track_running_stats]
    model.eval()
    counts: dict[nn.Module, int] = {}  # values per channel in the batch

    def count(norm: nn.Module, args: tuple) -> None:
        counts[norm] = args[0].numel() // args[0].shape[1]

    hooks = [norm.register_forward_pre_hook(count) for norm in norms]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one batch, exactly its statistics
        norm.train()
    with torch.no_grad():
        if norms:
            model(*inputs)
        for norm, momentum, hook in zip(norms, momenta, hooks):
            hook.remove()
            n = counts.get(norm, 1)
            norm.running_var.mul_((n - 1) / max(n, 2))  # the biased variance, which training mode normalises by
            norm.momentum = momentum
            norm.eval()
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


def assert_relatively_exact(module: nn.Module, expected, inputs, rtol: float = 1e-8) -> float:
    """max |module(inputs) - expected| <= rtol x max |expected|; refuses an expected output of a near-zero scale or
    one that hardly differs between the samples of the batch (its first output, within 1e-3 of its scale): a check
    that cannot see the input cannot see a wrongly routed channel either. Returns the relative difference."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    with torch.no_grad():
        actual = module(*inputs)
    scale = max(t.abs().max().item() for t in outputs(expected))
    assert scale > 1e-3, f"output scale {scale} is too small for an exactness check to mean anything"
    first = outputs(expected)[0]
    spread = (first[0] - first[1:]).abs().max().item() if first.shape[0] > 1 else scale
    assert spread > 1e-3 * scale, f"the output hardly depends on the input: spread {spread:.3g}, scale {scale:.3g}"
    relative = max_abs_diff(actual, expected) / scale
    assert relative <= rtol, f"max |exported - masked| = {relative:.3g} x the output scale {scale:.3g}"
    return relative


def count_calls(graph_module: fx.GraphModule, target) -> int:
    return sum(node.op == "call_function" and node.target is target for node in graph_module.graph.nodes)


def gathers_in_graph(graph_module: fx.GraphModule) -> int:
    return count_calls(graph_module, torch.index_select)


def checked_exports(model: nn.Module, x: torch.Tensor, capture: str, amount: float = 0.3):
    """For each side (30% unconstrained L2 masks from ``fx_upscale.mask`` with ``capture``) and mode (upscale,
    baseline): export, check that the export used ``capture``, computes what the masked model computes within 1e-8
    of the output's scale, and holds exactly ``report.gathers`` gathers; yields ``(side, mode, result)`` for the
    caller's own checks."""
    for side in ("input", "output"):
        spec = fx_upscale.mask(model, x, amount=amount, side=side, capture=capture)
        with torch.no_grad():
            expected = spec.apply(model)(x)
        for mode in ("upscale", "baseline"):
            result = fx_upscale.export(model, x, spec=spec, mode=mode, capture=capture)
            where = f"side {side}, mode {mode}"
            assert result.report.capture == capture, where
            assert_relatively_exact(result.module, expected, x, rtol=1e-8)
            assert gathers_in_graph(result.module) == result.report.gathers, where
            yield side, mode, result


def assert_masked_exports_shrink(model: nn.Module, x: torch.Tensor, side: str, capture: str, amount: float = 0.3):
    """``amount`` of each layer's channels masked on ``side`` (``fx_upscale.mask`` with ``capture``): both modes
    export exactly (float64, :func:`assert_exact`) and remove parameters."""
    spec = fx_upscale.mask(model, x, amount=amount, side=side, capture=capture)
    for mode in ("upscale", "baseline"):
        result = fx_upscale.export(model, x, spec=spec, mode=mode, capture=capture)
        assert_exact(result, spec.apply(model), x)
        assert result.report.params_after < result.report.params_before, (side, mode)
