"""Export modes as small policy objects: what the planner's stages do differently per mode.

>>> POLICIES["constrained"].whole_reads, POLICIES["baseline"].reorder, POLICIES["upscale"].by_latency
(True, False, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from ..plan_types import MODES, Mode


@dataclass(frozen=True, kw_only=True)
class Policy:
    mode: Mode
    whole_reads: bool  # every consumer reads its whole input: a channel survives only if all its readers need it
    reorder: bool  # choose channel orders that minimise copies (else keep the original order)
    narrow: bool  # a consumer may read a contiguous range as a view (else it gathers whatever it does not read whole)
    absorb: bool  # a consumer reading a cat through per-channel ops has its selection absorbed into the cat
    share_gathers: bool  # consumers gathering from one tensor share gathers where a range is a view
    by_latency: bool = False  # each consumer reads the way the cost model predicts fastest (zero weight columns,
    # an enclosing range, a gather, a selection absorbed into a cat or not)


POLICIES: dict[Mode, Policy] = {
    "upscale": Policy(
        mode="upscale", whole_reads=False, reorder=True, narrow=True, absorb=True, share_gathers=True, by_latency=True
    ),
    "baseline": Policy(
        mode="baseline", whole_reads=False, reorder=False, narrow=False, absorb=False, share_gathers=False
    ),
    "constrained": Policy(
        mode="constrained", whole_reads=True, reorder=False, narrow=False, absorb=False, share_gathers=False
    ),
}


def policy_for(mode: str) -> Policy:
    """The policy of ``mode``; a ``ValueError`` naming the modes for anything else."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return POLICIES[cast(Mode, mode)]
