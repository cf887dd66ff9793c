"""Absorbing a consumer's channel selection into the ``cat`` that builds its input.

DenseNet-style graphs concatenate earlier outputs and read the result through per-channel ops only
(``cat -> BatchNorm -> ReLU -> conv``). A ``cat`` copies anyway, so when the consumer needs a subset of the
concatenated channels, the cheapest selection is to concatenate only those channels: each input contributes
``narrow`` views (free) of the runs of channels the consumer needs, in the input's physical order, and the per-channel
ops in between are resliced. No copy is inserted; the ``cat`` itself copies less.

:func:`absorbing_chain` says whether a consumer's read can be absorbed; :func:`cat_pieces` cuts the selection into
per-input runs. Start reading at :func:`absorbing_chain`.
"""

from __future__ import annotations

from .channels import ChannelAnalysis
from .layouts import Read
from .ops import Concat, Flatten, PerChannel, Pointwise, Reduce
from .plan_types import CatPiece


def absorbing_chain(analysis: ChannelAnalysis, read: Read) -> tuple[str, ...] | None:
    """The nodes from a channel-axis ``cat`` to ``read.source`` (cat first) if the consumer is their only reader
    and every node between them keeps channel positions (per-channel, pointwise, flatten, reduce over other axes);
    ``None`` otherwise."""
    chain = []
    name = read.source
    while True:
        node, role = analysis.nodes[name], analysis.roles[name]
        if len(node.users) != 1:
            return None
        chain.append(name)
        if isinstance(role, Concat):
            return tuple(reversed(chain)) if _concatenates_its_inputs(analysis, name, role) else None
        if not isinstance(role, (Pointwise, PerChannel, Flatten, Reduce)):
            return None
        name = role.data


def _concatenates_its_inputs(analysis: ChannelAnalysis, name: str, role: Concat) -> bool:
    """The cat's channels are its inputs' channels, in order (not ids made for an untracked cat)."""
    layout = analysis.layouts.get(name)
    if layout is None or role.dim != layout.axis or layout.repeat != 1:
        return False
    if any(source not in analysis.layouts for source in role.inputs):
        return False
    return layout.ids == tuple(i for source in role.inputs for i in analysis.layouts[source].ids)


def cat_pieces(
    analysis: ChannelAnalysis, cat: str, selected: tuple[int, ...], physical: dict[str, tuple[int, ...]]
) -> tuple[CatPiece, ...]:
    """Per input of ``cat``, the runs of ``selected`` (original cat positions, in physical order) as pieces."""
    role = analysis.roles[cat]
    assert isinstance(role, Concat)
    wanted = set(selected)
    pieces: list[CatPiece] = []
    offset = 0
    for source in role.inputs:
        size = len(analysis.layouts[source].ids)
        order = physical[source]
        indices = [i for i, position in enumerate(order) if position + offset in wanted]
        for start, length in _runs(indices):
            pieces.append(
                CatPiece(source=source, start=start, length=length, whole=start == 0 and length == len(order))
            )
        offset += size
    return tuple(pieces)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers as (start, length).

    >>> _runs([0, 1, 2, 5, 7, 8])
    [(0, 3), (5, 1), (7, 2)]
    """
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
