"""The layers mask() may mask, what each of their channels owns, and how a choice becomes a PruneSpec.

A :class:`Layer` is one side of one conv/linear node: the input channels it reads (weight columns) or the output
channels it writes (weight rows with their bias). Each position carries a channel class from the channel analysis
(``channels.py``), which is how coupled layers are recognised, and a feature map, the tensor HRank ranks.

*Unmaskable* classes are never masked: graph-input channels and channels read by the graph output or by an op the
registry cannot map (so layers reading the model's input keep their input channels and layers writing its output
keep their outputs), and channels read or written by a layer mask() does not mask (a grouped convolution), unless
that reader needs only their non-zero values (a sum over the channels: ``Masking.needs_only_nonzero``).

Start reading at :func:`input_layers` and :func:`output_layers`; :func:`slices` gives a layer's parameters per
channel; :func:`input_spec` and :func:`output_spec` turn chosen positions into a :class:`PruneSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from ..channels import ChannelAnalysis, analyse_channels
from ..errors import describe_node
from ..layouts import Read
from ..ops import Carry, Flatten, Masking, Unknown, Weighted
from ..spec import PruneSpec, nameable_tensors


@dataclass(frozen=True)
class Layer:
    """One side of a conv/linear node: the channels mask() chooses among."""

    node: str  # the consumer (input side) or producer (output side)
    weight: str  # its weight parameter, as the spec names it
    side: str  # "input" | "output"
    classes: tuple[int, ...]  # the channel class at each position
    feature_map: str  # the node whose output carries these channels, position for position (ranked by HRank)
    repeat: int = 1  # weight entries per channel along its axis (a channel flattened into a linear layer)


def masking(analysis: ChannelAnalysis, node: str) -> Masking:
    """What mask() may do at ``node``, as its handler says."""
    return analysis.handler(node).masking(analysis.roles[node])


def unmaskable_classes(analysis: ChannelAnalysis, side: str) -> frozenset[int]:
    """Classes no layer masks on ``side``."""
    unmaskable = {analysis.class_of[i] for i in analysis.fixed}
    for read in analysis.reads:
        rule = masking(analysis, read.reader)
        unmasked_reader = side == "input" and not (rule.chooses or rule.needs_only_nonzero)
        if not read.consumer or unmasked_reader or rule.reads_every_channel:  # e.g. LayerNorm's statistics
            unmaskable |= set(analysis.classes(read.source))
    if side == "output":
        for i, owner in analysis.owner.items():
            if not masking(analysis, owner).owns_free_channels:
                unmaskable.add(analysis.class_of[i])
    return frozenset(unmaskable)


def input_layers(analysis: ChannelAnalysis, unmaskable: frozenset[int], constrained: bool) -> list[Layer]:
    """Every conv/linear input free of unmaskable classes; with ``constrained``, every one with some free class (so
    that each reader of a chosen channel masks it)."""
    layers = []
    for read in analysis.reads:
        role = analysis.roles[read.reader]
        if not read.consumer or not masking(analysis, read.reader).chooses:
            continue
        assert isinstance(role, Weighted)
        classes = analysis.classes(read.source)
        free = set(classes) - unmaskable
        if free and (constrained or len(free) == len(set(classes))):
            repeat = analysis.layouts[read.source].repeat
            layers.append(Layer(read.reader, role.weight, "input", classes, _unflattened(analysis, read), repeat))
    return layers


def blocked_layers(analysis: ChannelAnalysis, side: str, chosen_from: list[Layer]) -> dict[str, str]:
    """Conv/linear layers of ``side`` that are not among ``chosen_from`` because a barrier (an op no handler maps)
    reads their channels: ``"weight (side)"`` -> the first such barrier, described, with its reason."""
    barrier_of: dict[int, str] = {}  # channel class -> a barrier reading it, or making it (its output)
    for read in analysis.reads:
        if read.reader in analysis.barriers:
            for c in analysis.classes(read.source):
                barrier_of.setdefault(c, read.reader)
    for i, owner in analysis.owner.items():
        if isinstance(analysis.roles[owner], Unknown):
            barrier_of.setdefault(analysis.class_of[i], owner)
    taken = {layer.weight for layer in chosen_from}
    blocked = {}
    for weight, classes in _candidate_layers(analysis, side):
        barrier = next((barrier_of[c] for c in classes if c in barrier_of), None)
        if weight not in taken and barrier is not None:
            role = analysis.roles[barrier]
            reason = role.reason if isinstance(role, Unknown) else analysis.barriers.get(barrier, "")
            blocked[f"{weight} ({side})"] = f"{describe_node(analysis.nodes[barrier])}: {reason}"
    return blocked


def _candidate_layers(analysis: ChannelAnalysis, side: str) -> list[tuple[str, tuple[int, ...]]]:
    """(weight, channel classes) of every layer mask() could choose on ``side``."""
    candidates = []
    if side == "input":
        for read in analysis.reads:
            role = analysis.roles[read.reader]
            if read.consumer and isinstance(role, Weighted):
                candidates.append((role.weight, analysis.classes(read.source)))
        return candidates
    for name in analysis.order:
        role = analysis.roles[name]
        if isinstance(role, Weighted) and name in analysis.layouts:
            candidates.append((role.weight, analysis.classes(name)))
    return candidates


def _unflattened(analysis: ChannelAnalysis, read: Read) -> str:
    """The tensor a read's channels come from, before any ``flatten`` (whose maps have lost their shape)."""
    name = read.source
    while isinstance(role := analysis.roles[name], Flatten):
        name = role.data
    return name


def output_layers(analysis: ChannelAnalysis, unmaskable: frozenset[int], constrained: bool = False) -> list[Layer]:
    """Every conv/linear output free of unmaskable classes, in graph order; with ``constrained``, every one with some
    free class (so that each producer of a chosen channel masks it: an SE gate tied to graph-input channels too)."""
    layers = []
    for name in analysis.order:
        role = analysis.roles[name]
        if masking(analysis, name).chooses and name in analysis.layouts:
            assert isinstance(role, Weighted)
            classes = analysis.classes(name)
            free = set(classes) - unmaskable
            if free and (constrained or len(free) == len(set(classes))):
                layers.append(Layer(name, role.weight, "output", classes, _after_pass_through(analysis, name)))
    return layers


def _after_pass_through(analysis: ChannelAnalysis, name: str) -> str:
    """The end of the single-user chain of BatchNorm and pointwise ops (activations, pooling) after ``name``."""
    node = analysis.nodes[name]
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not masking(analysis, user.name).ranks_after or user.name not in analysis.layouts:
            break
        node = user
    return node.name


def slices(gm: fx.GraphModule, analysis: ChannelAnalysis, layer: Layer, flatten: bool = True) -> torch.Tensor:
    """A (channels, k) tensor: row ``p`` holds every parameter position ``p`` owns in the layer (its weight columns
    on the input side; its filter and bias entry on the output side). With ``flatten=False``, input-side slices are
    a view with the channel on dimension 0 and the rest unflattened (flattening weight columns copies the weight)."""
    role = analysis.roles[layer.node]
    assert isinstance(role, Weighted)
    weight = _tensor(gm, role.weight)
    if layer.side == "input":
        columns = weight.transpose(0, role.weight_in_axis).unflatten(0, (len(layer.classes), -1))
        return columns.reshape(len(layer.classes), -1) if flatten else columns
    rows = weight.transpose(0, role.weight_out_axis).reshape(len(layer.classes), -1)
    if role.bias is None:
        return rows
    return torch.cat([rows, _tensor(gm, role.bias).reshape(-1, 1)], dim=1)


def _tensor(gm: fx.GraphModule, qualname: str) -> torch.Tensor:
    module_name, _, leaf = qualname.rpartition(".")
    return getattr(gm.get_submodule(module_name), leaf).detach()


def input_spec(layers: list[Layer], chosen: list[list[int]]) -> PruneSpec:
    """Masked weight columns: each chosen position covers ``repeat`` consecutive columns."""
    columns = {}
    for layer, positions in zip(layers, chosen):
        columns[layer.weight] = frozenset(p * layer.repeat + k for p in positions for k in range(layer.repeat))
    return PruneSpec(inputs=columns)


def output_spec(
    gm: fx.GraphModule, analysis: ChannelAnalysis, layers: list[Layer], chosen: list[list[int]]
) -> tuple[PruneSpec, ChannelAnalysis]:
    """Masked filters, with the per-channel layers (BatchNorm, depthwise conv) that carry them on; and the channel
    analysis of the model that spec masks."""
    rows_of = {layer.node: positions for layer, positions in zip(layers, chosen)}
    parameters = set(nameable_tensors(gm))
    masked: dict[str, set[int]] = {}
    for layer, positions in zip(layers, chosen):
        masked[layer.weight] = set(positions)
        for weight in _following_per_channel(analysis, layer.node):
            if weight in parameters:  # a buffer (a fixed blur filter) is not a spec's to name; no bias, zero stays
                masked.setdefault(weight, set()).update(positions)
    sizes = {weight: len(analysis.layouts[node].ids) for node, weight in _per_channel_weights(analysis).items()}
    masked = {weight: _leave_one(positions, sizes.get(weight)) for weight, positions in masked.items()}
    found, masked_analysis = _masked_downstream(gm, analysis, rows_of, masked, parameters)
    for weight, more in found.items():
        masked.setdefault(weight, set()).update(more)
    return PruneSpec(outputs=_frozen(masked)), masked_analysis


def revived_classes(
    analysis: ChannelAnalysis, masked_analysis: ChannelAnalysis, layers: list[Layer], chosen: list[list[int]]
) -> frozenset[int]:
    """Chosen output classes that some consumer of the masked model (``masked_analysis``) still needs: their zero
    does not reach it (``sigmoid`` of a masked channel is 0.5). Masking their filters removes nothing, and in mode
    ``constrained`` the consumers that do see a zero would drop a channel the others need."""
    dead = {layer.classes[p] for layer, positions in zip(layers, chosen) for p in positions}
    revived: set[int] = set()
    for read in masked_analysis.reads:
        classes = analysis.classes(read.source)
        revived.update(c for c, needed in zip(classes, read.needed) if needed and c in dead)
    return frozenset(revived)


def _leave_one(positions: set[int], size: int | None) -> set[int]:
    """``positions`` without its highest one if it masks every one of a per-channel layer's ``size`` channels (a
    constrained choice can hold every channel a slice passes on)."""
    if size is not None and len(positions) >= size:
        return positions - {max(positions)}
    return positions


def _masked_downstream(
    gm: fx.GraphModule,
    analysis: ChannelAnalysis,
    rows_of: dict[str, list[int]],
    masked: dict[str, set[int]],
    parameters: set[str],
) -> tuple[dict[str, set[int]], ChannelAnalysis]:
    """Per-channel layers (BatchNorm, depthwise conv) further on to mask where they carry a channel masked in
    every producer feeding it (DenseNet: a BatchNorm per reader of a ``cat``; an SE gate tied by ``mul``), so that
    its shift or bias does not revive the channel — where the channel is still zero when it reaches them (not
    after a sigmoid, say), as the channel analysis of the masked model says. Masking one can zero the input of the
    next, so this runs to a fixed point; every layer keeps at least one channel unmasked (its highest ones are
    left), so each round masks more and the loop ends.

    A per-channel layer right after a producer (through pass-through ops) is masked with the producer's rows by
    :func:`_following_per_channel`, whatever feeds the channel elsewhere. Only layers whose weight is one of
    ``parameters`` are masked (a spec names no buffer but a frozen norm's affine map). Returns what it masked, and
    the channel analysis of the model with ``masked`` and that applied.
    """
    masked_ids = {analysis.layouts[name].ids[p] for name, rows in rows_of.items() for p in rows}
    ids_of: dict[int, set[int]] = {}
    for i, c in analysis.class_of.items():
        ids_of.setdefault(c, set()).add(i)
    dead = {c for c, ids in ids_of.items() if ids <= masked_ids}
    found: dict[str, set[int]] = {}
    work = _masked(PruneSpec(outputs=_frozen(masked)), gm)
    weights = {node: weight for node, weight in _per_channel_weights(analysis).items() if weight in parameters}
    while True:
        masked_analysis = analyse_channels(work, analysis.handlers)
        zeros = masked_analysis.zeros
        new: dict[str, set[int]] = {}
        for node, weight in weights.items():
            data = masking(analysis, node).per_channel_input
            classes, zero_in = analysis.classes(node), zeros.get(data or "", ())
            have = masked.get(weight, set()) | found.get(weight, set())
            zero = [p for p, c in enumerate(classes) if c in dead and p < len(zero_in) and zero_in[p]]
            room = len(classes) - 1 - len(have)
            chosen = [p for p in zero if p not in have][: max(room, 0)]
            if chosen:
                new[weight] = set(chosen)
        if not new:
            return found, masked_analysis
        for weight, more in new.items():
            found.setdefault(weight, set()).update(more)
        work = _masked(PruneSpec(outputs=_frozen(new)), work)


def _frozen(channels: dict[str, set[int]]) -> dict[str, frozenset[int]]:
    return {name: frozenset(positions) for name, positions in channels.items()}


def _masked(spec: PruneSpec, graph_module: fx.GraphModule) -> fx.GraphModule:
    masked = spec.apply(graph_module)
    assert isinstance(masked, fx.GraphModule)  # a deep copy of a GraphModule
    return masked


def _following_per_channel(analysis: ChannelAnalysis, name: str) -> list[str]:
    """Weights of the per-channel layers on the single-user chain of pass-through ops after ``name``."""
    weights, node = [], analysis.nodes[name]
    while len(node.users) == 1:
        node = next(iter(node.users))
        rule = masking(analysis, node.name)
        if rule.carry is Carry.PER_CHANNEL and rule.per_channel_weight is not None:
            weights.append(rule.per_channel_weight)
        elif rule.carry is not Carry.THROUGH:
            break
    return weights


def _per_channel_weights(analysis: ChannelAnalysis) -> dict[str, str]:
    """Per-channel layers carrying channels (node -> its weight): masked with the channels they carry."""
    weights = {}
    for node in analysis.order:
        if node in analysis.layouts:
            weight = masking(analysis, node).per_channel_weight
            if weight is not None:
                weights[node] = weight
    return weights
