"""Property-based tests: random DAG models (``random_models.py``), random prune specs, every mode.

Per drawn case (a model, a spec, a mode):

1. modes ``baseline`` and ``upscale`` compute what the masked model computes (float64, 1e-9);
2. mode ``constrained`` inserts no ``torch.index_select``;
3. ``report.gathers`` (and ``report.narrows``) count the graph's ``index_select`` (``narrow``) nodes, every mode;
4. exporting twice gives the same generated code and the same state dict (determinism), in the drawn mode;
5. ``mask`` and ``export`` leave the caller's model (parameters, buffers, structure) unchanged;
6. upscale never has more gathers nor more copied elements than baseline;

and, beyond those: what constrained keeps plus the channels it drops beyond the spec is what upscale keeps; when it
drops none it is exact too; with a spec from ``mask(method="constrained")`` it drops none.

The fast suite runs ``FAST_EXAMPLES`` cases per profile, derandomized (the same cases on every run). Set
``FX_UPSCALE_LONG_FUZZ=10000`` for a long, randomized run (``test_long_fuzz``: that many cases per profile).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from random_models import (
    LONG_PROFILES,
    MODES,
    PROFILES,
    Op,
    Program,
    RandomNet,
    SpecRecipe,
    example_input,
    make_spec,
    programs,
    spec_recipes,
)  # fmt: skip
from support import assert_exact, gathers_in_graph

import fx_upscale

FAST_EXAMPLES = 200  # per profile (4 profiles)
LONG_EXAMPLES = int(os.environ.get("FX_UPSCALE_LONG_FUZZ", "0") or 0)

FAST = settings(
    max_examples=FAST_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def snapshot(model: torch.nn.Module) -> tuple[str, dict[str, torch.Tensor], bool]:
    tensors = {f"p:{n}": p.detach().clone() for n, p in model.named_parameters()}
    tensors |= {f"b:{n}": b.detach().clone() for n, b in model.named_buffers()}
    return str(model), tensors, model.training


def assert_unchanged(model: torch.nn.Module, before: tuple[str, dict[str, torch.Tensor], bool]) -> None:
    structure, tensors, training = snapshot(model)
    assert structure == before[0], "the model's structure changed"
    assert training == before[2], "the model's training flag changed"
    assert tensors.keys() == before[1].keys(), "the model's parameters or buffers were renamed, added or removed"
    for name, tensor in tensors.items():
        old = before[1][name]
        assert tensor.dtype == old.dtype and torch.equal(tensor, old), f"{name} changed"


def export_checked(model, x, spec, mode) -> fx_upscale.ExportResult:
    result = fx_upscale.export(model, x, spec=spec, mode=mode)
    report = result.report
    assert report.mode == mode
    assert report.gathers == gathers_in_graph(result.module), (mode, report.summary(), result.module.code)  # 3
    inserted = [node for node in result.module.graph.nodes if "upscale" in node.meta]  # not the model's own
    assert report.narrows == sum(node.target is torch.narrow for node in inserted), (mode, report.summary())
    return result


def assert_deterministic(first: fx_upscale.ExportResult, second: fx_upscale.ExportResult) -> None:
    assert first.module.code == second.module.code
    a, b = first.module.state_dict(), second.module.state_dict()
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name
    assert first.report.gathers == second.report.gathers
    assert first.report.copied_elements == second.report.copied_elements
    assert first.report.params_after == second.report.params_after


def check_case(program, recipe, mode: str) -> None:
    note(program.source())
    note(repr(program))
    note(repr(recipe))
    model = RandomNet(program)
    x = example_input(program)
    before = snapshot(model)
    spec = make_spec(model, x, recipe)
    note(f"spec = {spec!r}")
    assert_unchanged(model, before)  # 5 (mask)
    masked = spec.apply(model)
    results = {m: export_checked(model, x, spec, m) for m in MODES}
    for m in ("baseline", "upscale"):  # 1
        note(f"checking {m}")
        assert_exact(results[m], masked, x)
    assert gathers_in_graph(results["constrained"].module) == 0 == results["constrained"].report.gathers  # 2
    up, base = results["upscale"].report, results["baseline"].report
    constrained = results["constrained"].report  # what constrained keeps, plus what it drops, upscale keeps
    kept = sum(segment.kept for segment in constrained.segments)
    if constrained.kept_for_groups == up.kept_for_groups == 0:  # equal-width padding differs between the modes
        assert kept + constrained.extra_pruned_channels == sum(segment.kept for segment in up.segments)
    if recipe.kind == "cmask":  # a constrained mask needs no channel dropped beyond it
        assert constrained.extra_pruned_channels == 0, constrained.summary()
    if constrained.extra_pruned_channels == 0:  # nothing dropped beyond the spec: exact too
        note("checking constrained")
        assert_exact(results["constrained"], masked, x)
    assert_deterministic(results[mode], fx_upscale.export(model, x, spec=spec, mode=mode))  # 4
    # 6
    assert up.gathers <= base.gathers, (up.summary(), base.summary())
    assert up.copied_elements <= base.copied_elements, (up.summary(), base.summary())
    assert_unchanged(model, before)  # 5 (export)


@pytest.mark.parametrize("profile", list(PROFILES))
@FAST
@given(data=st.data())
def test_random_models(profile: str, data) -> None:
    program = data.draw(programs(PROFILES[profile]), label="program")
    recipe = data.draw(spec_recipes, label="recipe")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    check_case(program, recipe, mode)


@pytest.mark.skipif(not LONG_EXAMPLES, reason="opt-in: set FX_UPSCALE_LONG_FUZZ=<examples per profile>")
@pytest.mark.parametrize("profile", list(LONG_PROFILES))
@pytest.mark.timeout(max(900, 2 * LONG_EXAMPLES))  # 2 s a case: a hanging case fails the run instead of stalling it
@settings(FAST, max_examples=max(LONG_EXAMPLES, 1), derandomize=False)
@given(data=st.data())
def test_long_fuzz(profile: str, data) -> None:
    program = data.draw(programs(LONG_PROFILES[profile]), label="program")
    recipe = data.draw(spec_recipes, label="recipe")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    check_case(program, recipe, mode)


# ------------------------------------------------------------------------------------------------------------
# Regressions: minimal cases the properties found (shrunk by hypothesis), kept as explicit tests
# ------------------------------------------------------------------------------------------------------------


class CatOfInputs(torch.nn.Module):
    """A channel-axis ``cat`` of the graph input and a pointwise op of it (``cat([relu(x), x])``), read through a
    per-channel layer by a consumer that does not need every channel.

    Found as ``v1 = relu(v0); v2 = cat([v1, v0], 1); v3 = depthwise(v2); fc(flatten(gap(v3)))`` with
    ``outputs={"m3.weight": {0, 1}}`` (any masked channel fails, in mode upscale)."""

    def __init__(self, relu: bool = True) -> None:
        super().__init__()
        self.relu = relu
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        a = torch.relu(x) if self.relu else x
        return self.fc(self.bn(torch.cat([a, x], 1)).mean((2, 3)))


@pytest.mark.parametrize("relu", [True, False], ids=["cat_relu_x_x", "cat_x_x"])
def test_regression_absorbing_into_cat_of_untracked_inputs(relu: bool) -> None:
    torch.manual_seed(0)
    model = CatOfInputs(relu).double().eval()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    spec = fx_upscale.PruneSpec(outputs={"bn.weight": [0]})
    result = export_checked(model, x, spec, "upscale")
    assert_exact(result, spec.apply(model), x)


class SqueezeExciteThenBatchNorm(torch.nn.Module):
    """A conv, an SE gate on it (``v * sigmoid(conv1x1(mean(v)))``), then a BatchNorm, then the head.

    Found (shrunk from a 5-op model) as ``v1 = conv(v0); v2 = v1 * sigmoid(conv1x1(v1.mean((2, 3), keepdim=True)));
    v3 = bn(v2); fc(flatten(gap(v3)))`` with the spec ``mask(amount=0.5, side="output", method="constrained")``:
    ``outputs={"conv.weight": {c}, "se.weight": {c}}``, the BatchNorm not masked."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 1, bias=False)
        self.se = torch.nn.Conv2d(2, 2, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        v = self.conv(x)
        v = v * torch.sigmoid(self.se(v.mean((2, 3), keepdim=True)))
        return self.fc(torch.flatten(self.pool(self.bn(v)), 1))


def test_regression_constrained_mask_through_se_gate_then_batchnorm() -> None:
    from support import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(SqueezeExciteThenBatchNorm(), seed=1).double().eval()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    spec = fx_upscale.mask(model, x, amount=0.5, side="output", method="constrained")
    assert not spec.is_empty()
    result = export_checked(model, x, spec, "constrained")
    assert result.report.extra_pruned_channels == 0, (spec, result.report.summary())
    assert_exact(result, spec.apply(model), x)


class ChosenChannelAlsoReadWithGraphInput(torch.nn.Module):
    """A channel read by a conv and, through depthwise convs, by a head that also reads graph-input channels.

    Found by the long fuzz (``large`` profile) with ``mask(amount=0.5, side="both", method="constrained")``: the head
    was skipped for reading graph-input channels, so only the conv masked the chosen channel and constrained mode
    dropped a channel the head needed."""

    def __init__(self) -> None:
        super().__init__()
        self.m1 = torch.nn.Conv2d(2, 2, 1, bias=False)
        self.m2 = torch.nn.Conv2d(2, 3, 1, bias=False)
        self.m3 = torch.nn.Conv2d(2, 2, 1, groups=2, bias=False)
        self.m4 = torch.nn.Conv2d(2, 2, 1, groups=2, bias=False)
        self.m7 = torch.nn.Conv2d(2, 2, 1, groups=2, bias=False)
        self.fc = torch.nn.Linear(7, 2)

    def forward(self, v0):
        v1 = self.m1(v0)
        v6 = torch.relu(self.m4(self.m3(v1)))
        features = torch.cat([self.m2(v1), v6, self.m7(v0)], 1)
        return self.fc(torch.flatten(features.mean((2, 3), keepdim=True), 1))


def test_regression_constrained_mask_reaches_readers_of_graph_input_too() -> None:
    torch.manual_seed(0)
    model = ChosenChannelAlsoReadWithGraphInput().double().eval()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    spec = fx_upscale.mask(model, x, amount=0.5, side="both", method="constrained")
    result = export_checked(model, x, spec, "constrained")
    assert result.report.extra_pruned_channels == 0, (spec, result.report.summary())
    assert_exact(result, spec.apply(model), x)


# Found by the long fuzz (``large`` profile, 10,000 cases): a slice whose channels were all removed left a
# BatchNorm with no channel (now every slice or split piece keeps one), and a constrained mask whose chosen
# channels filled a whole slice masked every channel of the depthwise conv after it (now a per-channel layer keeps
# one). Both as drawn, with the mode that failed first; every mode is checked.
SLICE_EMPTIED = Program(
    channels=4, size=4, ops=(
        Op("slice", (0,), functional=True, span=(1, 4)), Op("conv", (1,), 12, 3, True), Op("cat", (1, 1)),
        Op("bn", (2,), bias=False), Op("slice", (4,), span=(9, 11)), Op("bn", (1,), bias=False), Op("bn", (5,)),
        Op("shuffle", (6,), groups=3), Op("conv", (1,), 4, 3, True), Op("bn", (8,)),
    ), head="gap", classes=4, seed=84,
)  # fmt: skip
SLICE_FILLED_BY_CHOICE = Program(
    channels=3, size=3, ops=(
        Op("conv", (0,), 2, 1, False), Op("conv", (1,), 10, 3, False), Op("cat", (2, 1)), Op("dw", (3,), bias=False),
        Op("slice", (4,), span=(3, 8)), Op("dw", (5,), bias=False), Op("dw", (6,), bias=False),
        Op("shuffle", (7,), groups=5), Op("conv", (8,), 2, 1, False), Op("dw", (9,), bias=False),
    ), head="gap", classes=2, seed=0,
)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("program", "recipe"),
    [
        (SLICE_EMPTIED, SpecRecipe(kind="cmask", side="both", amount=0.75, seed=541, aligned=True)),
        (SLICE_FILLED_BY_CHOICE, SpecRecipe(kind="cmask", side="both", amount=0.5, seed=0, aligned=False)),
    ],
    ids=["slice-emptied", "slice-filled-by-choice"],
)
@settings(max_examples=1, database=None, deadline=None)
@given(st.just(None))  # check_case records notes, which only a hypothesis test can
def test_regression_slices(program: Program, recipe: SpecRecipe, mode: str, _) -> None:
    check_case(program, recipe, mode)


# Found by the long fuzz: SE gates whose convs also produce channels tied to graph-input channels were left out of
# constrained output masks, so a BatchNorm further on revived the chosen channel and constrained mode dropped it.
SE_TIED_TO_INPUT = [
    Program(
        channels=3, size=3, ops=(
            Op("conv", (0,), 2, 1, False), Op("cat", (1, 0)), Op("se", (2,), bias=False), Op("se", (3,), bias=False),
            Op("add", (4, 3)), Op("conv", (5,), 2, 1, False), Op("dw", (6,), bias=False), Op("bn", (5,), bias=False),
        ), head="gap", classes=2, seed=0,
    ),
    Program(
        channels=2, size=3, ops=(
            Op("dw", (0,), bias=False), Op("conv", (1,), 11, 1, False), Op("act", (2,), variant="relu"),
            Op("cat", (3, 2, 1)), Op("conv", (4,), 2, 1, False), Op("add", (5, 1)), Op("se", (4,), bias=False),
            Op("bn", (7,), bias=False),
        ), head="gap", classes=2, seed=0,
    ),
]  # fmt: skip


# And: a masked filter read through a sigmoid (0 -> 0.5) by a conv and a depthwise conv: the depthwise conv was masked
# as if the channel were still zero, so the head stopped needing it and constrained mode dropped what the conv needed.
SIGMOID_BRANCH = Program(
    channels=2, size=3, ops=(
        Op("conv", (0,), 2, 1, False), Op("conv", (1,), 2, 1, False), Op("conv", (2,), 2, 1, False),
        Op("conv", (3,), 2, 1, False), Op("conv", (0,), 2, 3, False), Op("conv", (5,), 2, 1, False),
        Op("conv", (6,), 2, 1, False), Op("act", (7,), variant="sigmoid"), Op("dw", (8,), bias=False),
        Op("conv", (8,), 2, 1, False), Op("dw", (10,), bias=False),
    ), head="gap", classes=2, seed=0,
)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "program", SE_TIED_TO_INPUT + [SIGMOID_BRANCH], ids=["se-after-cat", "se-of-cat-of-three", "sigmoid-branch"]
)
@settings(max_examples=1, database=None, deadline=None)
@given(st.just(None))
def test_regression_se_tied_to_input(program: Program, mode: str, _) -> None:
    check_case(program, SpecRecipe(kind="cmask", side="both", amount=0.5, seed=0, aligned=False), mode)


# Found by the long fuzz (``large`` profile, on the code of this file's other fixes): a slice taking the end of one
# copy of a layer's channels in a ``cat`` and the start of the next (``cat([relu(y), y])[:, 2:6]``) holds all of them,
# in another order; the planner laid that slice out in the layer's own order and permuted the depthwise conv reading
# it, in every mode and with nothing pruned.
ROTATED_BY_SLICE = Program(
    channels=2, size=3, ops=(
        Op("conv", (0,), 4, 1, False), Op("act", (1,), variant="relu"), Op("cat", (2, 1)),
        Op("slice", (3,), span=(2, 6)), Op("dw", (4,), bias=False), Op("conv", (5,), 2, 1, False),
    ), head="gap", classes=2, seed=0,
)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_regression_slice_across_two_copies_of_a_layer(mode: str) -> None:
    model, x = RandomNet(ROTATED_BY_SLICE), example_input(ROTATED_BY_SLICE)
    spec = fx_upscale.PruneSpec()
    assert_exact(export_checked(model, x, spec, mode), spec.apply(model), x)


# And: a constrained output mask chose filters whose channel also reaches the head through a sigmoid (0 -> 0.5): the
# conv reading the zero no longer needed it, the head did, so constrained mode dropped it. mask() now leaves such
# channels alone (masking them removes nothing) and chooses others.
REVIVED_BY_SIGMOID = Program(
    channels=2, size=3, ops=(
        Op("conv", (0,), 4, 1, False), Op("act", (1,), variant="sigmoid"), Op("conv", (1,), 4, 1, False),
        Op("cat", (2, 3)),
    ), head="gap", classes=2, seed=0,
)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=1, database=None, deadline=None)
@given(st.just(None))
def test_regression_constrained_mask_revived_by_a_sigmoid(mode: str, _) -> None:
    check_case(REVIVED_BY_SIGMOID, SpecRecipe(kind="cmask", side="output", amount=0.5, seed=0, aligned=False), mode)
