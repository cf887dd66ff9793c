"""The segment graph of ``fx-upscale explain --graph``: :func:`segment_graph` builds it (producer -> segment ->
consumer, each consumer edge labelled and coloured by its access) and :func:`write_graph` writes it as Graphviz
``.dot`` text or draws it as ``.png`` / ``.svg`` with matplotlib. Start reading at :func:`segment_graph`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import networkx as nx

from .errors import CommandError

ACCESS_COLORS = {"full": "black", "narrow": "royalblue", "gather": "red", "absorbed": "forestgreen"}


def segment_graph(segments: Sequence) -> nx.DiGraph:
    """Layers and segments: producer -> segment -> consumer, each consumer edge labelled with its access."""
    graph = nx.DiGraph()
    for segment in segments:
        node = f"segment {segment.index}"
        graph.add_node(node, kind="segment", label=f"segment {segment.index}\\n{segment.kept}/{segment.channels}")
        for producer in segment.producers:
            graph.add_node(producer, kind="layer", label=producer)
            graph.add_edge(producer, node, access="", label="")
        for c in segment.consumers:
            graph.add_node(c.node, kind="layer", label=c.node)
            label = f"{c.access} {c.channels_read}" + (f" ({c.copied_elements:,} copied)" if c.copied_elements else "")
            graph.add_edge(node, c.node, access=c.access, label=label)
    return graph


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT text (render with ``dot -Tpng``)."""
    quote = lambda text: '"' + str(text).replace('"', '\\"') + '"'  # noqa: E731
    lines = ["digraph segments {", "  rankdir=LR;", '  node [fontsize=10, fontname="Helvetica"];']
    for name, data in graph.nodes(data=True):
        shape = "ellipse, style=filled, fillcolor=lightyellow" if data["kind"] == "segment" else "box"
        lines.append(f"  {quote(name)} [label={quote(data['label'])}, shape={shape}];")
    for a, b, data in graph.edges(data=True):
        color = ACCESS_COLORS.get(data["access"], "grey")
        lines.append(f"  {quote(a)} -> {quote(b)} [label={quote(data['label'])}, color={color}, fontsize=8];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(graph: nx.DiGraph, path: str) -> None:
    """Write ``graph`` as ``.dot`` text, or draw it as ``.png`` / ``.svg`` with matplotlib."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".dot", ".png", ".svg"):
        raise CommandError(f"--graph {path}: choose a .dot, .png or .svg file")
    if suffix == ".dot":
        Path(path).write_text(to_dot(graph))
        return
    try:
        import matplotlib
    except ImportError:
        raise CommandError(f"--graph {path} needs matplotlib (pip install matplotlib); .dot needs nothing") from None
    matplotlib.use("Agg")
    _draw(graph, path)


def _assign_depths(graph: nx.DiGraph) -> None:
    """Columns for the drawing: topological generations, with each source layer just before what it feeds.

    A layer that reads a segment and also produces into it (``y = conv(y) + y``) is the only cycle a segment graph
    can have; it is drawn as a producer, before the segment."""
    dag = graph.copy()
    loops = [(a, b) for a, b in graph.edges if graph.nodes[a]["kind"] == "segment" and graph.has_edge(b, a)]
    dag.remove_edges_from(loops)
    for depth, layer in enumerate(nx.topological_generations(dag)):
        for node in layer:
            graph.nodes[node]["depth"] = depth
    for node in dag:
        if dag.in_degree(node) == 0 and dag.out_degree(node) > 0:
            graph.nodes[node]["depth"] = min(graph.nodes[s]["depth"] for s in dag.successors(node)) - 1


def _draw(graph: nx.DiGraph, path: str) -> None:
    import matplotlib.pyplot as plt

    _assign_depths(graph)
    pos = nx.multipartite_layout(graph, subset_key="depth") if len(graph) else {}
    columns = Counter(d for _, d in graph.nodes(data="depth"))
    depth, height = len(columns) or 1, max(columns.values(), default=1)
    fig, ax = plt.subplots(figsize=(min(60, 1.4 * depth + 2), min(60, 0.5 * height + 2)))
    segments = [n for n, kind in graph.nodes(data="kind") if kind == "segment"]
    nx.draw_networkx_nodes(graph, pos, nodelist=segments, node_color="lightyellow", edgecolors="grey", ax=ax)
    nx.draw_networkx_edges(graph, pos, edge_color=[ACCESS_COLORS.get(a, "grey") for *_, a in
                                                   graph.edges(data="access")], arrows=True, ax=ax)  # fmt: skip
    labels = {n: label.replace("\\n", "\n") for n, label in graph.nodes(data="label")}
    nx.draw_networkx_labels(graph, pos, labels, font_size=6, ax=ax)
    edge_labels = {(a, b): label for a, b, label in graph.edges(data="label") if label}
    nx.draw_networkx_edge_labels(graph, pos, edge_labels, font_size=5, ax=ax)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
