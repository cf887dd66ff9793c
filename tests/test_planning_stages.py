"""Each planning stage on its own (``fx_upscale/planning/``): kept channels, orders, accesses, and the policies.

The model: ``conv0`` writes 6 channels that two consumers read, ``left`` needing channels {0, 1, 2} and ``right``
{2, 3, 4} (their other weight columns masked); channel 5 is needed by nobody. Stage by stage, for each mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fx_upscale
from fx_upscale.channels import analyse_channels
from fx_upscale.ordering import Full, Gather, Narrow
from fx_upscale.planning import (
    POLICIES,
    consumer_accesses,
    kept_channels,
    order_channels,
    plan_channels,
    policy_for,
    segment_contexts,
)
from fx_upscale.segments import find_segments

LEFT, RIGHT = (0, 1, 2), (2, 3, 4)


class TwoReaders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 6, 1)
        self.left = nn.Conv2d(6, 4, 1)
        self.right = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.conv0(x)
        return self.left(y) + self.right(y)


def context_of(mode: str, model: nn.Module | None = None, spec: fx_upscale.PruneSpec | None = None):
    """The context of the segment that ``conv0`` writes."""
    torch.manual_seed(0)
    model = model or TwoReaders().double().eval()
    spec = spec or fx_upscale.PruneSpec(
        inputs={
            "left.weight": [c for c in range(6) if c not in LEFT],
            "right.weight": [c for c in range(6) if c not in RIGHT],
        }
    )
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    analysis = analyse_channels(fx_upscale.trace(spec.apply(model), (x,)))
    contexts = segment_contexts(analysis, find_segments(analysis), policy_for(mode))
    return next(c for c in contexts if "conv0" in c.segment.owners)


def test_policy_for_an_unknown_mode_names_the_modes() -> None:
    with pytest.raises(ValueError, match=r"mode must be one of \('upscale', 'baseline', 'constrained'\), not 'fast'"):
        policy_for("fast")


def test_policies_differ_where_the_modes_do() -> None:
    upscale, baseline, constrained = (POLICIES[m] for m in ("upscale", "baseline", "constrained"))
    assert upscale.reorder and upscale.narrow and upscale.absorb and upscale.share_gathers
    assert not (baseline.reorder or baseline.narrow or baseline.whole_reads)
    assert constrained.whole_reads and not constrained.reorder


@pytest.mark.parametrize("mode", ["upscale", "baseline"])
def test_kept_channels_are_what_some_consumer_needs(mode: str) -> None:
    context = context_of(mode)
    kept = kept_channels(context)
    classes = context.analysis.classes("conv0")
    assert kept.kept == {classes[c] for c in sorted(set(LEFT) | set(RIGHT))}
    assert kept.extra_pruned == 0 and kept.kept_for_groups == 0


def test_whole_reads_keep_only_what_every_reader_needs() -> None:
    context = context_of("constrained")
    kept = kept_channels(context)
    classes = context.analysis.classes("conv0")
    assert kept.kept == {classes[2]}  # the one channel both consumers need
    assert kept.extra_pruned == 4  # 0, 1, 3, 4: needed by one consumer, dropped


def test_orders_keep_ranges_that_are_contiguous_already() -> None:
    for mode in ("upscale", "baseline"):
        context = context_of(mode)
        ordering = order_channels(context, kept_channels(context))
        physical = ordering.physical["conv0"]
        assert sorted(physical) == [0, 1, 2, 3, 4], mode
        for needed in (LEFT, RIGHT):
            positions = sorted(physical.index(c) for c in needed)
            assert positions == list(range(positions[0], positions[0] + 3)), (mode, needed)


def test_orders_that_cannot_be_contiguous_in_the_original_order_are_reordered() -> None:
    spec = fx_upscale.PruneSpec(inputs={"left.weight": [1, 3, 5], "right.weight": [0, 2, 5]})  # 0,2,4 and 1,3,4
    physical = {}
    for mode in ("upscale", "baseline"):
        context = context_of(mode, spec=spec)
        physical[mode] = order_channels(context, kept_channels(context)).physical["conv0"]
    assert physical["baseline"] == (0, 1, 2, 3, 4)
    for needed in ((0, 2, 4), (1, 3, 4)):
        positions = sorted(physical["upscale"].index(c) for c in needed)
        assert positions == list(range(positions[0], positions[0] + 3)), physical["upscale"]


@pytest.mark.parametrize(("mode", "access_type"), [("upscale", Narrow), ("baseline", Gather), ("constrained", Full)])
def test_accesses_follow_the_policy(mode: str, access_type: type) -> None:
    spec = fx_upscale.PruneSpec(inputs={"left.weight": [1, 3, 5], "right.weight": [0, 2, 5]})
    context = context_of(mode, spec=spec)
    kept = kept_channels(context)
    accesses = consumer_accesses(context, kept.consumer_reads, order_channels(context, kept))
    by_node = {access.node: access for access in accesses.consumers}
    assert set(by_node) == {"left", "right"}
    for access in by_node.values():
        assert isinstance(access.access, access_type), (mode, access)
    if mode != "constrained":
        assert sorted(by_node["left"].columns) == [0, 2, 4] and sorted(by_node["right"].columns) == [1, 3, 4]
        assert by_node["left"].channels_needed == 3 and by_node["left"].channels_available == 5


def test_stages_compose_to_the_plan() -> None:
    """plan_channels is the stages in turn: its physical layout and accesses are theirs."""
    context = context_of("upscale")
    kept = kept_channels(context)
    ordering = order_channels(context, kept)
    accesses = consumer_accesses(context, kept.consumer_reads, ordering)
    plan = plan_channels(context.analysis, find_segments(context.analysis), "upscale")
    assert plan.physical["conv0"] == accesses.physical["conv0"] == ordering.physical["conv0"]
    assert {a.node: a.access for a in plan.accesses if a.node in ("left", "right")} == {
        a.node: a.access for a in accesses.consumers
    }


def test_grouped_convolutions_keep_equal_groups() -> None:
    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv0 = nn.Conv2d(3, 8, 1)
            self.grouped = nn.Conv2d(8, 8, 1, groups=2)

        def forward(self, x):
            return self.grouped(self.conv0(x))

    # conv0's channels 0-3 feed group 0, 4-7 group 1; masking 3 filters of group 0 and 1 of group 1
    spec = fx_upscale.PruneSpec(outputs={"conv0.weight": [0, 1, 2, 4]})
    context = context_of("upscale", model=Grouped().double().eval(), spec=spec)
    kept = kept_channels(context)
    classes = context.analysis.classes("conv0")
    per_group = [len({classes[c] for c in range(g * 4, g * 4 + 4)} & kept.kept) for g in range(2)]
    assert per_group == [3, 3] and kept.kept_for_groups == 2
