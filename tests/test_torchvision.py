"""Exactness of exports on real torchvision architectures (weights=None, seeded, float64, small inputs).

Every model × side × amount: modes baseline and upscale equal the masked model within 1e-9; upscale never has
more gathers or copied elements than baseline; the graph holds exactly report.gathers index_select nodes.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from support import assert_exact, gathers_in_graph, randomize_batchnorm
from torch import nn

import fx_upscale

pytestmark = pytest.mark.slow

MODELS = {  # name: input side length (the smallest that keeps every model's feature maps non-empty)
    "resnet18": 32,
    "resnet50": 32,
    "densenet121": 32,
    "mobilenet_v2": 32,
    "efficientnet_b0": 32,
    "vgg11_bn": 32,
    "alexnet": 64,
    "squeezenet1_0": 64,
    "mnasnet0_5": 32,
}
CHAINS = {"vgg11_bn", "alexnet"}


@functools.lru_cache(maxsize=2)
def model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    model = randomize_batchnorm(model).double().eval()
    size = MODELS[name]
    return model, torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("side", ["input", "output", "both"])
@pytest.mark.parametrize("name", list(MODELS))
def test_unconstrained_exports_are_exact(name: str, side: str, amount: float) -> None:
    model, x = model_and_input(name)
    before = state(model)
    spec = fx_upscale.mask(model, x, amount=amount, side=side)
    masked = spec.apply(model)
    reports = {}
    for mode in ("baseline", "upscale"):
        result = fx_upscale.export(model, x, spec=spec, mode=mode)
        assert_exact(result, masked, x)
        assert gathers_in_graph(result.module) == result.report.gathers
        assert result.report.params_after < result.report.params_before
        reports[mode] = result.report
    assert reports["upscale"].gathers <= reports["baseline"].gathers
    if name == "densenet121":  # with views free, every selection is absorbed into the cat building its input
        free_views = fx_upscale.cost_model.default_cost_model(backend="compile")
        absorbed = fx_upscale.export(model, x, spec=spec, cost_model=free_views)
        assert_exact(absorbed, masked, x)
        assert absorbed.report.gathers == absorbed.report.copied_elements == 0
        assert (absorbed.report.absorbed > 0) == (side != "output")  # output masks leave every consumer whole
    assert reports["upscale"].copied_elements <= reports["baseline"].copied_elements
    # same channels kept; absorbing a selection into a cat also shrinks the per-channel layers after it
    assert reports["upscale"].params_after <= reports["baseline"].params_after
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "export or mask changed the caller's model"


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("name", list(MODELS))
def test_constrained_mode_has_no_gather(name: str, side: str) -> None:
    model, x = model_and_input(name)
    spec = fx_upscale.mask(model, x, amount=0.3, side=side, method="constrained")
    result = fx_upscale.export(model, x, spec=spec, mode="constrained")
    assert gathers_in_graph(result.module) == 0 == result.report.gathers
    assert result.report.extra_pruned_channels == 0
    assert_exact(result, spec.apply(model), x)
    # Unconstrained masks exported constrained: still no gather, but channels are dropped beyond the spec.
    loose = fx_upscale.mask(model, x, amount=0.3, side="input")
    dropped = fx_upscale.export(model, x, spec=loose, mode="constrained")
    assert gathers_in_graph(dropped.module) == 0
    kept = fx_upscale.export(model, x, spec=loose, mode="upscale")
    if name in CHAINS:  # no channel is shared by two consumers: nothing to agree on
        assert dropped.report.extra_pruned_channels == 0
        assert dropped.report.params_after == kept.report.params_after
    else:
        assert dropped.report.extra_pruned_channels > 0
        assert dropped.report.params_after < kept.report.params_after


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v2", "efficientnet_b0"])
def test_exported_module_is_consistent(name: str) -> None:
    model, x = model_and_input(name)
    spec = fx_upscale.mask(model, x, amount=0.3, side="both")
    result = fx_upscale.export(model, x, spec=spec)
    exported = result.module
    for qualname, module in exported.named_modules():
        if isinstance(module, nn.Conv2d):
            assert module.weight.shape[0] == module.out_channels, qualname
            assert module.weight.shape[1] * module.groups == module.in_channels, qualname
        elif isinstance(module, nn.Linear):
            assert tuple(module.weight.shape) == (module.out_features, module.in_features), qualname
        elif isinstance(module, nn.BatchNorm2d):
            assert module.weight.numel() == module.running_mean.numel() == module.num_features, qualname
    original = dict(model.named_parameters())
    smaller = [n for n, p in exported.named_parameters() if p.numel() < original[n].numel()]
    assert len(smaller) > 10
    retraced = torch.fx.symbolic_trace(exported)
    with torch.no_grad():
        assert torch.equal(retraced(x), exported(x))
    exported.load_state_dict(exported.state_dict(), strict=True)
