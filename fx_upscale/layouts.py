"""The values the channel analysis records per node: a tensor's channel :class:`Layout` and a consumer's
:class:`Read`. Handlers (``ops/``) create them; the planner, segments and masking read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Channel ids along ``axis`` of a node's output; each channel spans ``repeat`` consecutive entries.

    ``split > 0``: the channels lie across two axes, ``axis`` (``split`` long) and ``axis + 1``, in row-major
    order: the middle of a channel shuffle (``view`` to groups, ``transpose``, ``view`` back). Only reshapes,
    permutes and pointwise ops read such a layout; any other reader is a barrier.
    """

    axis: int
    ids: tuple[int, ...]
    repeat: int = 1
    split: int = 0


@dataclass(frozen=True, kw_only=True)
class Read:
    """``reader`` reads the channels of ``source``; ``needed[i]`` says whether position ``i`` matters to it."""

    reader: str
    source: str
    needed: tuple[bool, ...]  # one flag per channel position of ``source``
    consumer: bool  # a conv/linear input (may read a narrow or a gather); False: a barrier reading all, in order
    elements_per_channel: int  # elements one channel of ``source`` holds at the example inputs
    element_size: int = 4  # bytes per element of ``source``
    groups: int = 1  # a grouped convolution reads ``groups`` equal blocks, in order, one per group
    macs_per_channel: int = 0  # multiply-adds one more channel read costs (0: it cannot read unneeded channels)
