"""GroupNorm (``nn.GroupNorm``, ``F.group_norm``, ``aten.group_norm``): a group's statistics read the whole group.

Exported equals masked in float64 through both front ends (``symbolic_trace`` and ``torch.export``) on a
detection-head tower (conv -> GroupNorm -> ReLU twice, one tower shared by the classifier and the box convs):

- groups wider than one channel (the default rule): GroupNorm reads every channel, so ``mask()`` never chooses what
  reaches it, a spec's zeros there stay (the read says so in the report), and the groups keep their order;
  channels elsewhere (the stem) are pruned;
- one channel per group (``GroupNorm(C, C)``): a per-channel layer, ``num_groups`` drops with the channels;
- ``GroupNormHandler(whole_groups=True)``: whole groups are removed (``num_groups`` drops), others kept whole.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.errors import UnsupportedGraphError
from fx_upscale.ops import Carry, RewriteContext, Updates
from fx_upscale.ops.group_norm import GroupNorm, GroupNormHandler
from fx_upscale.plan_types import AttrUpdate

CAPTURES = ("symbolic_trace", "torch.export")
X = torch.randn(2, 8, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
GROUP_NORM = torch.ops.aten.group_norm.default


class Head(nn.Module):
    """A RetinaNet/FCOS-style head on one feature level: a 1x1 stem, a tower of (conv3x3 -> GroupNorm -> ReLU) x 2,
    then the classifier and box convs sharing the tower's output."""

    def __init__(self, groups: int, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(8, 16, 1)
        self.conv1, self.gn1 = nn.Conv2d(16, width, 3, padding=1), nn.GroupNorm(groups, width)
        self.conv2, self.gn2 = nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width)
        self.cls = nn.Conv2d(width, 6, 3, padding=1)
        self.box = nn.Conv2d(width, 4, 3, padding=1)

    def forward(self, x):
        tower = F.relu(self.gn2(self.conv2(F.relu(self.gn1(self.conv1(F.relu(self.stem(x))))))))
        return self.cls(tower), self.box(tower)


class FunctionalHead(nn.Module):
    """``F.group_norm`` with its own parameters (``x_weight`` / ``x_bias``: a spec masking one masks both)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.gn_weight, self.gn_bias = nn.Parameter(torch.ones(16)), nn.Parameter(torch.zeros(16))
        self.conv2 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.conv2(F.relu(F.group_norm(self.conv1(x), self.groups, self.gn_weight, self.gn_bias)))


def build(model: nn.Module) -> nn.Module:
    """Float64, eval, every GroupNorm with a weight away from 1 and a non-zero bias."""
    model = model.double().eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "gn" in name and name.endswith("weight"):
                parameter.copy_(torch.rand(parameter.shape, generator=generator, dtype=torch.float64) + 0.5)
            elif "gn" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.3)
    return model


def group_norm_sizes(result: fx_upscale.ExportResult) -> list[tuple[int, int]]:
    """(num_groups, channels) of every GroupNorm of the export, checked against its weight and input; modules keep
    ``num_channels`` and ``num_groups`` in step with their tensors."""
    gm, sizes = result.module, []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(module := gm.get_submodule(str(node.target)), nn.GroupNorm):
            groups, channels = module.num_groups, module.num_channels
            assert module.weight.numel() == module.bias.numel() == channels
        elif node.op == "call_function" and node.target in (GROUP_NORM, F.group_norm):
            groups, weight = node.args[1], node.args[2] if len(node.args) > 2 else node.kwargs["weight"]
            channels = gm.get_parameter(str(weight.target)).numel()
        else:
            continue
        assert channels % groups == 0, node.name
        sizes.append((groups, channels))
    return sizes


def whole_group_table() -> fx_upscale.HandlerTable:
    table = fx_upscale.default_handlers().copy()
    table.add_handler(GroupNormHandler(whole_groups=True))
    return table


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("groups", [4, 32])
@pytest.mark.parametrize("side", ["input", "output"])
def test_head_masks_export_exactly_and_keep_the_groups(capture: str, groups: int, side: str) -> None:
    model = build(Head(groups, width=64))
    spec = fx_upscale.mask(model, X, amount=0.4, side=side, capture=capture)
    assert set(spec.outputs) | set(spec.inputs) == {"stem.weight" if side == "output" else "conv1.weight"}
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert result.report.params_after < result.report.params_before
    assert group_norm_sizes(result) == [(groups, 64), (groups, 64)]


@pytest.mark.parametrize("capture", CAPTURES)
def test_one_channel_groups_are_per_channel(capture: str) -> None:
    model = build(Head(32))  # GroupNorm(32, 32)
    for side in ("input", "output"):
        spec = fx_upscale.mask(model, X, amount=0.4, side=side, capture=capture)
        assert "conv2.weight" in (spec.inputs if side == "input" else spec.outputs)
        result = fx_upscale.export(model, X, spec=spec, capture=capture)
        assert_exact(result, spec.apply(model), X)
        sizes = group_norm_sizes(result)
        assert all(groups == channels < 32 for groups, channels in sizes), sizes


@pytest.mark.parametrize("capture", CAPTURES)
def test_spec_inside_groups_keeps_them_and_says_so(capture: str) -> None:
    """A whole group's filters and norm weights masked: GroupNorm reads every channel, so the group stays (exactly),
    and the report lists GroupNorm as a reader needing all of its input; the conv after it reads the group's zeros,
    which it does not need, through a gather."""
    model = build(Head(4))
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [*range(8, 16)], "gn1.weight": [*range(8, 16)]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert result.module.get_parameter("conv1.weight").shape[0] == 32
    assert result.module.get_parameter("conv2.weight").shape[1] == 24
    assert group_norm_sizes(result) == [(4, 32), (4, 32)]
    reads = [c for s in result.report.segments for c in s.consumers if c.channels_available == 32]
    norm_reads = [c for c in reads if "gn1" in c.node or c.node == "group_norm"]
    assert [(c.access, c.channels_needed) for c in norm_reads] == [("full", 32)]


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("whole_groups", [False, True], ids=["default", "whole-groups"])
def test_groups_keep_their_channels_together(capture: str, whole_groups: bool) -> None:
    """conv2 needs the first half of every group of gn1: an order making that a narrow would mix the groups, so
    GroupNorm's channels keep their order and conv2 gathers (with either rule)."""
    model, table = build(Head(4)), whole_group_table() if whole_groups else None
    spec = fx_upscale.PruneSpec(inputs={"conv2.weight": [c for c in range(32) if c % 8 >= 4]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture, handlers=table)
    assert_exact(result, spec.apply(model), X)
    assert result.report.gathers == 1 and group_norm_sizes(result) == [(4, 32), (4, 32)]


@pytest.mark.parametrize("capture", CAPTURES)
def test_whole_groups_are_removed_with_the_opt_in_rule(capture: str) -> None:
    """Group 1 of gn1 masked whole (filters and norm), and group 0 plus two channels of gn2: whole groups go,
    ``num_groups`` drops; the part of a group stays."""
    model, table = build(Head(4)), whole_group_table()
    spec = fx_upscale.PruneSpec(
        outputs={"conv1.weight": [*range(8, 16)], "gn1.weight": [*range(8, 16)], "conv2.weight": [*range(8), 30, 31],
                 "gn2.weight": [*range(8), 30, 31]}
    )  # fmt: skip
    result = fx_upscale.export(model, X, spec=spec, capture=capture, handlers=table)
    assert_exact(result, spec.apply(model), X)
    assert group_norm_sizes(result) == [(3, 24), (3, 24)]
    masked = spec.apply(model)
    assert torch.equal(result.module.get_parameter("gn2.weight"), masked.gn2.weight.detach()[8:])
    assert result.report.params_after < result.report.params_before


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
def test_constrained_masks_choose_whole_groups_with_the_opt_in_rule(capture: str, side: str) -> None:
    model, table = build(Head(4)), whole_group_table()
    spec = fx_upscale.mask(model, X, amount=0.4, side=side, method="constrained", capture=capture, handlers=table)
    result = fx_upscale.export(model, X, spec=spec, capture=capture, handlers=table)
    assert_exact(result, spec.apply(model), X)
    sizes = group_norm_sizes(result)
    assert all(channels == 8 * groups for groups, channels in sizes) and min(g for g, _ in sizes) < 4, sizes


class Residual(nn.Module):
    """GroupNorm's input also feeds a residual ``add`` (tying its channels to another conv's), a sigmoid branch, and a
    slice of the second norm's output joins a slice of the stem's in a ``cat``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv1, self.gn1 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.gn2 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(2, 16)
        self.side, self.out = nn.Conv2d(16, 3, 1), nn.Conv2d(16, 5, 1)

    def forward(self, x):
        a = F.relu(self.stem(x))
        b = self.conv1(a)
        c = F.relu(self.gn1(b))
        e = F.relu(self.gn2(self.conv2(c) + b))
        return self.out(torch.cat([e[:, :8], a[:, 4:12]], 1)), self.side(torch.sigmoid(c))


RESIDUAL_SPECS = (
    fx_upscale.PruneSpec(
        outputs={"conv1.weight": [*range(4, 8)], "gn1.weight": [*range(4, 8)], "conv2.weight": [*range(4, 8)]},
        inputs={"out.weight": [5, 6, 7, 9], "side.weight": [4, 5, 6, 7]},
    ),
    fx_upscale.PruneSpec(
        outputs={"stem.weight": [0, 5, 9, 14], "gn2.weight": [1, 2, 12]}, inputs={"conv2.weight": [3]}
    ),
)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("whole_groups", [False, True], ids=["default", "whole-groups"])
def test_residual_graph_exports_exactly(capture: str, whole_groups: bool) -> None:
    model, table = build(Residual()), whole_group_table() if whole_groups else None
    for spec in RESIDUAL_SPECS:
        for mode in ("upscale", "baseline"):
            result = fx_upscale.export(model, X, spec=spec, capture=capture, handlers=table, mode=mode)
            assert_exact(result, spec.apply(model), X)
            assert result.report.params_after < result.report.params_before
            group_norm_sizes(result)


@pytest.mark.parametrize("capture", CAPTURES)
def test_functional_group_norm_follows(capture: str) -> None:
    model = build(FunctionalHead(16))
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [0, 3, 4], "gn_weight": [0, 3, 4]})
    result = fx_upscale.export(model, X, spec=spec, capture=capture)
    assert_exact(result, spec.apply(model), X)
    assert group_norm_sizes(result) == [(13, 13)]
    model = build(FunctionalHead(4))
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": [4, 5, 6, 7], "gn_weight": [4, 5, 6, 7]})
    for table, expected in ((None, (4, 16)), (whole_group_table(), (3, 12))):
        result = fx_upscale.export(model, X, spec=spec, capture=capture, handlers=table)
        assert_exact(result, spec.apply(model), X)
        assert group_norm_sizes(result) == [expected]


def test_masking_rules() -> None:
    handler, wide = GroupNormHandler(), GroupNorm(data="x", channels=8, groups=2, weight="g.weight", bias=None,
                                                  module="g")  # fmt: skip
    assert handler.masking(wide).reads_every_channel
    narrow = GroupNorm(data="x", channels=8, groups=8, weight="g.weight", bias="g.bias", module="g")
    rule = handler.masking(narrow)
    assert rule.carry is Carry.PER_CHANNEL and not rule.reads_every_channel and rule.per_channel_weight == "g.weight"
    assert GroupNormHandler(whole_groups=True).masking(wide).carry is Carry.PER_CHANNEL
    assert handler.output_weight(wide) == "g.weight"


def rewrite_of(physical: tuple[int, ...]) -> Updates:
    model = build(Head(4))
    analysis = analyse_channels(fx_upscale.trace(model, (X,)))
    context = RewriteContext(analysis=analysis, physical={"gn1": physical}, accesses={})
    updates = Updates()
    analysis.handler("gn1").rewrite("gn1", analysis.roles["gn1"], context, updates)
    return updates


def test_rewrite_removes_whole_groups_and_refuses_broken_ones() -> None:
    assert rewrite_of(tuple(range(32))) == Updates()
    rows = (*range(8), *range(16, 32))
    updates = rewrite_of(rows)
    assert [(s.name, s.indices) for s in updates.slices] == [("gn1.weight", rows), ("gn1.bias", rows)]
    assert updates.attrs == [
        AttrUpdate(module="gn1", attr="num_channels", value=24),
        AttrUpdate(module="gn1", attr="num_groups", value=3),
    ]
    with pytest.raises(UnsupportedGraphError, match="gn1"):
        rewrite_of((*range(7), *range(8, 32)))


def test_invariant_names_num_channels_and_num_groups() -> None:
    handler = GroupNormHandler()
    norm = nn.GroupNorm(4, 32)
    assert handler.invariant(norm) == [] and handler.invariant(nn.Conv2d(3, 3, 1)) == []
    norm.weight = nn.Parameter(norm.weight.detach()[:24])
    assert [m.attr for m in handler.invariant(norm)] == ["num_channels"]
    norm.num_channels = 30
    assert [m.attr for m in handler.invariant(norm)] == ["num_channels", "num_groups"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_roles_from_both_front_ends(capture: str) -> None:
    for model, name in ((build(FunctionalHead(4)), "gn"), (build(Head(4)), "gn1")):
        graph = fx_upscale.trace(model, (X,), capture=capture)
        analysis = analyse_channels(graph)
        [role] = [r for r in analysis.roles.values() if isinstance(r, GroupNorm)][:1]
        module = "gn1" if name == "gn1" and capture == "symbolic_trace" else None  # torch.export keeps no modules
        assert (role.channels, role.groups, role.module) == (16 if name == "gn" else 32, 4, module)
        assert role.weight == ("gn_weight" if name == "gn" else "gn1.weight")
        assert role.functional == (module is None)
        assert isinstance(analysis.handler(next(n for n, r in analysis.roles.items() if r is role)), GroupNormHandler)
