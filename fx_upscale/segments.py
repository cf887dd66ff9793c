"""Segments: the connected channel spaces of a graph, as a networkx graph keyed by FX node name.

The graph's nodes are *owners* (nodes that create channel ids: producers, graph inputs, tied attributes). Two owners
are joined when their ids are tied (``add``) or lie in one tensor (``cat``). The connected components, in graph
order, are the segments; each is planned on its own. Readers (consumers, barriers) belong to the segment of the
tensor they read: a conv reads one segment and owns the next.

Start reading at :func:`find_segments`.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .channels import ChannelAnalysis


@dataclass(frozen=True)
class Segment:
    index: int
    owners: tuple[str, ...]  # nodes creating the channel ids of this segment, in graph order
    readers: tuple[str, ...]  # consumers and barriers reading it, in graph order
    tensors: tuple[str, ...]  # every node whose output carries its channels, in graph order
    classes: tuple[int, ...]  # its channel classes, ascending


def build_segment_graph(analysis: ChannelAnalysis) -> nx.Graph:
    """The dependency graph over owners (FX node names): joined where they share a tensor or a channel class.

    Readers are not graph nodes (a conv reads one segment and owns the next, which must stay apart); the tensor a
    reader reads is a layout like any other, so its owners are already joined here.
    """
    graph = nx.Graph()
    for layout in analysis.layouts.values():
        owners = {analysis.owner[analysis.class_of[i]] for i in layout.ids} | {analysis.owner[i] for i in layout.ids}
        _join(graph, sorted(owners))
    return graph


def _join(graph: nx.Graph, names: list[str]) -> None:
    graph.add_nodes_from(names)
    graph.add_edges_from(zip(names, names[1:]))


def find_segments(analysis: ChannelAnalysis) -> tuple[Segment, ...]:
    """The segments of the analysed graph, in graph order."""
    graph = build_segment_graph(analysis)
    position = {name: i for i, name in enumerate(analysis.order)}
    components = sorted(nx.connected_components(graph), key=lambda c: min(position[n] for n in c))
    segment_of = {name: index for index, component in enumerate(components) for name in component}
    tensors_of: dict[int, list[str]] = {}
    for name in analysis.order:
        layout = analysis.layouts.get(name)
        if layout is not None and layout.ids:
            tensors_of.setdefault(segment_of[analysis.owner[layout.ids[0]]], []).append(name)
    readers_of: dict[int, set[str]] = {}
    for read in analysis.reads:
        readers_of.setdefault(segment_of[analysis.owner[analysis.layouts[read.source].ids[0]]], set()).add(read.reader)
    classes_of: dict[int, set[int]] = {}
    owners_of: dict[int, set[str]] = {}
    for i, owner in analysis.owner.items():
        classes_of.setdefault(segment_of[owner], set()).add(analysis.class_of[i])
        owners_of.setdefault(segment_of[owner], set()).add(owner)
    segments = []
    for index in range(len(components)):
        segments.append(
            Segment(
                index=index,
                owners=tuple(sorted(owners_of.get(index, ()), key=position.__getitem__)),
                readers=tuple(sorted(readers_of.get(index, ()), key=position.__getitem__)),
                tensors=tuple(tensors_of.get(index, ())),
                classes=tuple(sorted(classes_of.get(index, ()))),
            )
        )
    return tuple(segments)
