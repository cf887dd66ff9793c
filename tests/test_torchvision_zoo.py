"""Every torchvision classification model that symbolic_trace can trace and that has at most 100 M parameters
(tests/zoo_models.py) exports exactly, with 30% input-side and 30% output-side unconstrained L2 masks.

Per model (weights=None, seeded, near-zero parameters and BatchNorm randomised, float64, batch 2, the smallest input
the model takes), per side, one mask shared by both modes: modes upscale and baseline equal the masked model within
1e-8 of the output's scale, remove parameters, hold exactly ``report.gathers`` index_select nodes, and upscale has
no more gathers than baseline. The larger models run in ``benchmarks/zoo.py --large``.
"""

from __future__ import annotations

import gc

import pytest
import torch
import zoo_models
from support import assert_relatively_exact, gathers_in_graph

import fx_upscale

pytestmark = pytest.mark.slow

ZOO = zoo_models.ZOO  # written out: computing zoo_models.zoo() at collection would trace every model per worker
SIDES = ("input", "output")
MODES = ("upscale", "baseline")


def test_zoo_is_what_the_rule_gives() -> None:
    """ZOO is exactly the rule's list (traceable, at most 100 M parameters, most expensive first), and the models
    left out are exactly LARGE and UNTRACEABLE: a change in torchvision, or in the rule, is noticed here."""
    every = set(zoo_models.names())
    left_out = set(zoo_models.LARGE) | set(zoo_models.UNTRACEABLE)
    assert left_out <= every, f"no longer in torchvision: {sorted(left_out - every)}"
    assert every - set(ZOO) == left_out, "torchvision's models changed: update ZOO and LARGE / UNTRACEABLE"
    rule = zoo_models.zoo()
    missing, extra = sorted(set(rule) - set(ZOO)), sorted(set(ZOO) - set(rule))
    assert not missing and not extra, f"the rule also chooses {missing}, no longer chooses {extra}: update ZOO"
    assert list(ZOO) == rule, "the cost order changed: write zoo_models.zoo() out as ZOO"
    counts = zoo_models.parameter_counts()
    assert all(counts[name] > zoo_models.MAX_PARAMS for name in zoo_models.LARGE)
    assert not any(zoo_models.is_traceable(name) for name in zoo_models.UNTRACEABLE)
    assert len(ZOO) >= 63


@pytest.mark.parametrize("name", sorted(zoo_models.SIZES))
def test_input_size_is_needed(name: str) -> None:
    """Each larger input is the smallest the model takes, or (ViT, MaxViT) the one it was built for; not 32."""
    model = zoo_models.build_on_meta(name).to("meta").eval()
    size = zoo_models.input_size(name)
    smaller = zoo_models.SIZE if name in zoo_models.IMAGE_SIZED else size - 1
    with torch.no_grad():
        assert model(torch.empty(1, 3, size, size, device="meta")).shape == (1, 1000)
        with pytest.raises((RuntimeError, ValueError, AssertionError)):
            model(torch.empty(1, 3, smaller, smaller, device="meta"))


@pytest.mark.parametrize("name", ZOO)
def test_model_exports_exactly(name: str) -> None:
    model, x = zoo_models.build(name)
    try:
        for side in SIDES:
            check_side(model, x, side)
    finally:
        del model
        gc.collect()


def check_side(model: torch.nn.Module, x: torch.Tensor, side: str) -> None:
    spec = fx_upscale.mask(model, x, amount=0.3, side=side)
    with torch.no_grad():
        expected = spec.apply(model)(x)
    gathers = {}
    for mode in MODES:
        result = fx_upscale.export(model, x, spec=spec, mode=mode)
        where = f"side {side}, mode {mode}"
        assert_relatively_exact(result.module, expected, x, rtol=1e-8)
        assert gathers_in_graph(result.module) == result.report.gathers, where
        assert result.report.params_after < result.report.params_before, where
        gathers[mode] = result.report.gathers
    assert gathers["upscale"] <= gathers["baseline"], f"side {side}: {gathers}"
