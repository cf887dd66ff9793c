"""The values a plan is made of: what the planner returns and the passes, report and serialization read.

A :class:`ChannelPlan` holds, per segment, a :class:`SegmentPlan` (its consumers' :class:`ConsumerAccess` and the
``cat`` selections absorbed into it), and for the whole graph the :class:`ParamSlice`, :class:`AttrUpdate` and
:class:`ArgUpdate` that realise it. Everything is named by qualified parameter / module / FX node names, so a plan
applies to the GraphModule it was made on. All are frozen and keyword-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .ordering import Access, Full, Gather, Narrow

Mode = Literal["upscale", "baseline", "constrained"]
MODES: tuple[Mode, ...] = ("upscale", "baseline", "constrained")

__all__ = [
    "MODES",
    "Access",
    "ArgUpdate",
    "AttrUpdate",
    "CatPiece",
    "CatSelection",
    "ChannelPlan",
    "ConsumerAccess",
    "Full",
    "Gather",
    "Mode",
    "Narrow",
    "ParamSlice",
    "SegmentPlan",
]


@dataclass(frozen=True, kw_only=True)
class ParamSlice:
    """Keep ``indices`` (in this order) of parameter or buffer ``name`` along ``axis``.

    With ``groups > 1`` (the input axis of a grouped convolution) the tensor is ``groups`` blocks along axis 0 and
    ``indices`` lists each block's own selection in turn, all of one length.
    """

    name: str
    axis: int
    indices: tuple[int, ...]
    size_before: int
    groups: int = 1

    @property
    def size_after(self) -> int:
        return len(self.indices) // self.groups


@dataclass(frozen=True, kw_only=True)
class AttrUpdate:
    """Set integer (or shape) attribute ``attr`` of submodule ``module`` to ``value``."""

    module: str
    attr: str
    value: int | tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class ArgUpdate:
    """Set argument ``index`` of node ``node`` (or its keyword ``keyword``, when passed by keyword) to ``value``,
    and the node's target to ``target`` where one is given (an overload whose signature takes the new value:
    ``aten.split.Tensor``'s int size becomes ``aten.split_with_sizes``'s list)."""

    node: str
    index: int
    keyword: str
    value: Any
    target: Any = None


@dataclass(frozen=True, kw_only=True)
class CatPiece:
    """``length`` channels of ``source`` from ``start`` (physical positions, along the cat axis)."""

    source: str
    start: int
    length: int
    whole: bool  # the piece is the entire input: use it as it is


@dataclass(frozen=True, kw_only=True)
class CatSelection:
    """Rewrite ``cat`` to concatenate ``pieces`` instead of its whole inputs, for ``consumer``."""

    cat: str
    pieces: tuple[CatPiece, ...]
    consumer: str


@dataclass(frozen=True, kw_only=True)
class ConsumerAccess:
    """How consumer ``node`` reads its input ``source``: positions of the source's physical layout."""

    node: str
    source: str
    axis: int
    repeat: int  # features per channel (after flatten)
    access: Access
    columns: tuple[int, ...]  # original input channels read, in physical order
    copied_elements: int  # elements its gather copies per forward at the example inputs (0 if shared)
    shared_with: str | None = None  # an earlier consumer whose identical gather it reuses
    channels_needed: int = 0  # channels it needs (non-zero columns of non-zero inputs)
    channels_available: int = 0  # channels its input carries after pruning
    absorbed_into: str | None = None  # the cat that now concatenates only what it needs
    element_size: int = 4  # bytes per element of its input
    groups: int = 1  # a grouped convolution: reads equal blocks of channels, one per group, in group order
    predicted_seconds: float = 0.0  # what its access costs per forward, by the cost model it was planned with
    not_absorbed: bool = False  # it could have had a cat concatenate its selection, predicted slower

    @property
    def copied_bytes(self) -> int:
        return self.copied_elements * self.element_size


@dataclass(frozen=True, kw_only=True)
class SegmentPlan:
    index: int
    producers: tuple[str, ...]
    consumers: tuple[ConsumerAccess, ...]
    channels: int  # channel classes in the segment
    kept: int
    extra_pruned: int  # classes a consumer needed but mode "constrained" dropped
    frozen_by: tuple[str, ...] = ()  # unknown ops whose channels were kept (on_unsupported="freeze")
    cat_selections: tuple[CatSelection, ...] = ()
    kept_for_groups: int = 0  # classes no consumer needed, kept so every group of a grouped conv has equal width


@dataclass(frozen=True, kw_only=True)
class ChannelPlan:
    mode: Mode
    segments: tuple[SegmentPlan, ...]
    physical: Mapping[str, tuple[int, ...]]  # node -> kept original channels of its output, in physical order
    param_slices: tuple[ParamSlice, ...]
    attr_updates: tuple[AttrUpdate, ...]
    arg_updates: tuple[ArgUpdate, ...] = ()

    @property
    def accesses(self) -> tuple[ConsumerAccess, ...]:
        return tuple(access for segment in self.segments for access in segment.consumers)

    @property
    def cat_selections(self) -> tuple[CatSelection, ...]:
        return tuple(selection for segment in self.segments for selection in segment.cat_selections)
