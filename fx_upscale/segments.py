"""Segments: the connected channel spaces of a graph, as a networkx graph keyed by FX node name.

Two nodes are joined when they share a channel space: an owner (a node that creates channel ids: producer, graph
input, tied attribute) is joined to the owners of every id tied to its own and of every id in the same tensor, and
a reader (consumer or barrier) to the owners of the ids it reads. The connected components, in graph order, are the
segments; each is planned on its own.

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
    """The dependency graph: owners and readers, joined where they share channels."""
    graph = nx.Graph()
    for name, layout in analysis.layouts.items():
        owners = {analysis.owner[analysis.class_of[i]] for i in layout.ids} | {analysis.owner[i] for i in layout.ids}
        _join(graph, sorted(owners))
    for read in analysis.reads:
        owners = {analysis.owner[i] for i in analysis.layouts[read.source].ids}
        _join(graph, [read.reader, *sorted(owners)])
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
    readers_of: dict[int, set[str]] = {}
    for read in analysis.reads:
        readers_of.setdefault(segment_of[read.reader], set()).add(read.reader)
    tensors_of: dict[int, list[str]] = {}
    for name in analysis.order:
        layout = analysis.layouts.get(name)
        if layout is not None and layout.ids:
            tensors_of.setdefault(segment_of[analysis.owner[layout.ids[0]]], []).append(name)
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
