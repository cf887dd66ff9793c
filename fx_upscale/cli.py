"""The ``fx-upscale`` command line (also ``python -m fx_upscale``): prune, explain, bench.

- ``prune MODEL``: mask, export, and write ``model.pt2`` (:func:`fx_upscale.save`; reload with
  :func:`fx_upscale.load`), ``report.json`` (the :class:`ExportReport`), ``spec.json`` (the masked channels) and
  ``summary.md``;
- ``explain MODEL``: per segment, its producers and each consumer's access and why; ``--graph`` draws the segment
  graph (``.dot`` always, ``.png`` / ``.svg`` with matplotlib);
- ``bench MODEL...``: the latency of the unpruned model and of every export (``latency.py``).

MODEL is a torchvision model name (needs ``fx_upscale[models]``) or ``package.module:factory``. Errors print one
line (``--debug`` shows the traceback). Start reading at :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import json
import os
import shlex
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import networkx as nx
import torch
from torch import nn

from . import __version__, export, mask, save
from . import latency as lat
from .export import ExportResult
from .planning import MODES
from .report import ExportReport
from .spec import PruneSpec
from .tables import INSTALL_HINT, format_table

if TYPE_CHECKING:
    from tqdm import tqdm

PROG = "fx-upscale"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
HEURISTICS = ("l1", "l2", "lamp", "fpgm", "hrank")
ACCESS_COLORS = {"full": "black", "narrow": "royalblue", "gather": "red", "absorbed": "forestgreen"}


class CommandError(Exception):
    """A user mistake the command line reports in one line."""


T = TypeVar("T")
CLI_EXTRA = ("tqdm", "tabulate")  # the progress bars and the tables


def require_cli_extra() -> None:
    """Fail at once, in one line, where a package of the ``cli`` extra is missing."""
    for name in CLI_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            raise CommandError(f"the command line needs {name}: {INSTALL_HINT}") from None


def progress_bar(items: Iterable[T], *, quiet: bool, description: str) -> tqdm[T]:
    """``items`` with a progress bar on stderr, drawn on a terminal only and never with ``--quiet``; use it as a
    context manager, so that the bar's line ends before what the command prints next."""
    from tqdm import tqdm

    return tqdm(items, desc=description, file=sys.stderr, disable=True if quiet else None, unit="step")


# ---------------------------------------------------------------------------------------------------------- models


def load_model(name: str, weights: str | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """The model called ``name`` (torchvision name or ``package.module:factory``) in eval mode, with ``weights``
    (a state_dict file) loaded, and its default input shape."""
    model, shape = _from_factory(name) if ":" in name else _from_torchvision(name)
    if not isinstance(model, nn.Module):
        raise CommandError(f"{name} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(model, weights)
    return model.eval(), shape


def _from_factory(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    module_name, _, attribute = name.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules in the current directory are found
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import {module_name!r} (from MODEL {name!r}): {error}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"{module_name!r} has no callable {attribute!r} (MODEL is package.module:factory)")
    return factory(), (1, 3, 224, 224)


def _torchvision():
    try:
        import torchvision
    except ImportError as error:
        raise CommandError("torchvision models need torchvision: pip install 'fx_upscale[models]'") from error
    return torchvision


def _from_torchvision(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    models = _torchvision().models
    known = models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; or give package.module:factory"
        raise CommandError(f"unknown torchvision model {name!r}{hint}")
    side = 224
    try:
        side = models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    except Exception:  # models without classification weights: keep 224
        pass
    return models.get_model(name, weights=None), (1, 3, side, side)


def _load_weights(model: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise CommandError(f"--weights {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CommandError(f"--weights {path} holds a {type(state).__name__}, not a state_dict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CommandError(
            f"--weights {path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) as a tuple of positive ints."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be a positive integer")
    return shape


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


# ----------------------------------------------------------------------------------------------------------- prune


@dataclasses.dataclass
class Pruned:
    """What the prune steps (:data:`PRUNE_STEPS`) make from the options, one step after the other."""

    args: argparse.Namespace
    model: nn.Module = dataclasses.field(init=False)
    inputs: torch.Tensor = dataclasses.field(init=False)
    spec: PruneSpec = dataclasses.field(init=False)
    result: ExportResult = dataclasses.field(init=False)
    max_abs_diff: float = dataclasses.field(init=False)


def load_model_and_inputs(pruned: Pruned) -> None:
    """The model, in the options' dtype, and a seeded random input of its shape."""
    args = pruned.args
    torch.manual_seed(args.seed)
    model, default_shape = load_model(args.model, args.weights)
    dtype = DTYPES[args.dtype]
    pruned.model = model.to(dtype)
    shape = args.input_shape or default_shape
    pruned.inputs = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed), dtype=dtype)


def mask_model(pruned: Pruned) -> None:
    args = pruned.args
    calibration = _calibration(args.calibration, pruned.inputs.dtype)
    pruned.spec = mask(pruned.model, pruned.inputs, amount=args.amount, heuristic=args.heuristic, side=args.side,
                       method=args.method, scope=args.scope, calibration=calibration)  # fmt: skip


def export_model(pruned: Pruned) -> None:
    pruned.result = export(pruned.model, pruned.inputs, spec=pruned.spec, mode=pruned.args.mode)


def check_export(pruned: Pruned) -> None:
    """The largest difference between the export's output and the masked model's."""
    with torch.no_grad():
        exported, masked = pruned.result.module(pruned.inputs), pruned.spec.apply(pruned.model)(pruned.inputs)
    pruned.max_abs_diff = (exported - masked).abs().max().item()


Step = tuple[str, Callable[[Pruned], None]]
PRUNE_STEPS: tuple[Step, ...] = (
    ("loading the model", load_model_and_inputs),
    ("masking", mask_model),
    ("exporting", export_model),
    ("checking the export", check_export),
)


def run_steps(args: argparse.Namespace, steps: Sequence[Step]) -> Pruned:
    """Run ``steps`` in order on what the options describe, with a progress bar over them."""
    pruned = Pruned(args)
    with progress_bar(steps, quiet=args.quiet, description=args.command) as bar:
        for label, step in bar:
            bar.set_postfix_str(label)
            step(pruned)
    return pruned


def _calibration(path: str | None, dtype: torch.dtype):
    if path is None:
        return None
    if not os.path.isfile(path):
        raise CommandError(f"--calibration {path}: no such file")
    data = torch.load(path, map_location="cpu", weights_only=True)
    batches = [data] if isinstance(data, torch.Tensor) else list(data)
    if not batches or not all(isinstance(b, torch.Tensor) for b in batches):
        raise CommandError(f"--calibration {path} must hold a tensor (one batch) or a list of tensors")
    return [b.to(dtype) for b in batches]


def output_directory(args: argparse.Namespace) -> Path:
    return Path(args.out or f"{args.model.replace(':', '_').replace('.', '_')}-pruned")


def save_model(pruned: Pruned) -> None:
    out = output_directory(pruned.args)
    out.mkdir(parents=True, exist_ok=True)
    save(pruned.result, out / "model.pt2")


def write_reports(pruned: Pruned) -> None:
    """report.json, spec.json and summary.md."""
    out, args = output_directory(pruned.args), pruned.args
    as_lists = lambda channels: {name: sorted(c) for name, c in channels.items()}  # noqa: E731
    spec = {"inputs": as_lists(pruned.spec.inputs), "outputs": as_lists(pruned.spec.outputs)}
    (out / "report.json").write_text(json.dumps(report_document(args, pruned), indent=1) + "\n")
    (out / "spec.json").write_text(json.dumps(spec) + "\n")
    (out / "summary.md").write_text(summary_markdown(args, pruned))


def command_prune(args: argparse.Namespace) -> int:
    pruned = run_steps(args, (*PRUNE_STEPS, ("saving the model", save_model), ("writing the reports", write_reports)))
    out = output_directory(args)
    print(pruned.result.report.summary())
    print(f"max |exported - masked| = {pruned.max_abs_diff:.2e}")
    print(f"wrote {out / 'model.pt2'}, {out / 'report.json'}, {out / 'spec.json'}, {out / 'summary.md'}")
    return 0


def report_document(args: argparse.Namespace, pruned: Pruned) -> dict:
    """report.json: the command's settings, the check against the masked model, and the ExportReport."""
    return {
        "fx_upscale": __version__,
        "torch": torch.__version__,
        "model": args.model,
        "weights": args.weights,
        "input_shape": list(pruned.inputs.shape),
        "dtype": args.dtype,
        "seed": args.seed,
        "mask": {k: getattr(args, k) for k in ("amount", "heuristic", "side", "method", "scope")},
        "mode": args.mode,
        "max_abs_diff": pruned.max_abs_diff,
        "report": dataclasses.asdict(pruned.result.report),
    }


def summary_markdown(args: argparse.Namespace, pruned: Pruned) -> str:
    """summary.md: the headline numbers, the consumers that copy, and how to load the model."""
    report, shape = pruned.result.report, "×".join(map(str, pruned.inputs.shape))
    rows = [
        ("model", f"{args.model} (weights: {args.weights or 'as constructed'}, seed {args.seed})"),
        ("input", f"{shape} {args.dtype}"),
        ("masks", f"{args.amount:.0%} {args.side}-side {args.method} {args.heuristic}, {args.scope} scope"),
        ("export mode", args.mode),
        (
            "parameters",
            f"{report.params_before:,} → {report.params_after:,} "
            f"({100 * report.params_after / max(1, report.params_before):.1f}%)",
        ),
        ("gathers / narrows / absorbed", f"{report.gathers} / {report.narrows} / {report.absorbed}"),
        ("copied per forward", f"{report.copied_elements:,} elements ({report.copied_bytes:,} bytes)"),
        ("extra pruned channels", f"{report.extra_pruned_channels}"),
        ("max abs(exported − masked)", f"{pruned.max_abs_diff:.2e}"),
        ("export time", f"{report.export_seconds:.2f} s"),
    ]
    lines = [f"# {PROG} prune {args.model}", "", f"`{PROG} {' '.join(map(shlex.quote, args.argv))}`", "",
             format_table(rows, ("", ""), markdown=True), ""]  # fmt: skip
    if args.mode == "constrained":
        lines += ["Mode `constrained` drops channels beyond the masks, so it differs from the masked model.", ""]
    lines += ["## Consumers that copy", "", copying_markdown(report)]
    return "\n".join([*lines, "", FILES_MARKDOWN])


def copying_markdown(report: ExportReport) -> str:
    """A Markdown table of the consumers that gather (copy) their channels, with why."""
    copying = [(s, c) for s in report.segments for c in s.consumers if c.access == "gather"]
    if not copying:
        return "None: every consumer reads its channels as a view."
    headers = ("segment", "consumer", "reads", "needed / available", "copied elements", "why")
    rows = [(s.index, c.node, c.source, f"{c.channels_needed} / {c.channels_available}", f"{c.copied_elements:,}",
             c.reason) for s, c in copying]  # fmt: skip
    return format_table(rows, headers, markdown=True)


FILES_MARKDOWN = """## Files

- `model.pt2`: `fx_upscale.load("model.pt2")` returns a runnable module (no model class needed)
- `report.json`: the export report, per segment and consumer, with the command's settings
- `spec.json`: the masked channels per parameter (`fx_upscale.PruneSpec(**json.load(f))`)
"""


# --------------------------------------------------------------------------------------------------------- explain


def command_explain(args: argparse.Namespace) -> int:
    report = run_steps(args, PRUNE_STEPS).result.report
    segments = select_segments(report, args.segment, args.gathers_only)
    print(f"{args.model}: {args.amount:.0%} {args.side}-side {args.method} {args.heuristic} masks; {report.summary()}")
    print(explain_text(segments))
    if args.graph:
        write_graph(segment_graph(segments), args.graph)
        print(f"wrote {args.graph}")
    return 0


def select_segments(report: ExportReport, indices: Sequence[int] | None, gathers_only: bool) -> list:
    known = {segment.index for segment in report.segments}
    unknown = sorted(set(indices or ()) - known)
    if unknown:
        raise CommandError(f"--segment {unknown}: the export has segments 0..{max(known, default=-1)}")
    chosen = [s for s in report.segments if not indices or s.index in indices]
    if gathers_only:
        chosen = [s for s in chosen if any(c.access == "gather" for c in s.consumers)]
    return chosen


def explain_text(segments: Sequence) -> str:
    """Per segment: channels kept, producers, and a table of its consumers (access, channels, copies, why)."""
    blocks = []
    for segment in segments:
        head = (f"segment {segment.index}: {segment.kept} of {segment.channels} channels kept; "
                f"producers: {', '.join(segment.producers) or '(graph input)'}")  # fmt: skip
        if segment.extra_pruned:
            head += f"; {segment.extra_pruned} dropped beyond the masks"
        if segment.frozen_by:
            head += f"; frozen by {', '.join(segment.frozen_by)}"
        table = consumer_table(segment.consumers) if segment.consumers else "(no consumers)"
        blocks.append(head + "\n" + "\n".join("  " + line for line in table.splitlines()))
    return "\n\n".join(blocks) if blocks else "(no segment selected)"


def consumer_table(consumers: Sequence) -> str:
    headers = ("consumer", "reads", "access", "needed/available", "copied", "why")
    rows = [(c.node, c.source, c.access, f"{c.channels_needed}/{c.channels_available}", f"{c.copied_elements:,}",
             c.reason) for c in consumers]  # fmt: skip
    return format_table(rows, headers)


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


# ----------------------------------------------------------------------------------------------------------- bench


def command_bench(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    config = lat.BenchConfig(
        models=tuple(args.models), amount=args.amount, heuristic=args.heuristic, side=args.side, method=args.method,
        batches=tuple(args.batch), backends=tuple(args.backend), compile_models=tuple(args.compile_models or ()),
        repeats=args.repeats, warmup=args.warmup, device=args.device, dtype=DTYPES[args.dtype],
    )  # fmt: skip

    def load(name: str) -> tuple[nn.Module, tuple[int, ...]]:
        torch.manual_seed(args.seed)
        model, shape = load_model(name)
        return model, args.input_shape or shape

    load_before = os.getloadavg()
    timings = bench_cases(config, load, quiet=args.quiet)
    load_after = os.getloadavg()
    print(f"{args.amount:.0%} {args.side}-side {args.method} {args.heuristic} masks, {args.dtype}, device "
          f"{args.device}, threads {args.threads}, {args.repeats} interleaved repeats (median [q1–q3] ms), load "
          f"average {load_before[0]:.2f} before / {load_after[0]:.2f} after, torch {torch.__version__}")  # fmt: skip
    print(latency_table(timings))
    print("\nElements copied per eager forward (M): by copying ops + by convolutions making strided inputs contiguous")
    print(copies_table(timings))
    if args.csv:
        lat.write_csv(timings, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        lat.plot(timings, args.plot)
        print(f"wrote {args.plot}")
    return 0


def bench_cases(config: lat.BenchConfig, load: Callable, *, quiet: bool) -> list[lat.Timing]:
    """:func:`latency.run` for each model and batch size of ``config`` in turn (each loads its model afresh, seeded
    alike), with a progress bar over them."""
    cases = [(name, batch) for name in config.models for batch in config.batches]
    timings: list[lat.Timing] = []
    with progress_bar(cases, quiet=quiet, description="bench") as bar:
        for name, batch in bar:
            bar.set_description(f"bench {name}, batch {batch}")
            timings += lat.run(dataclasses.replace(config, models=(name,), batches=(batch,)), load, bar.set_postfix_str)
    return timings


def latency_table(timings: Sequence[lat.Timing]) -> str:
    """A Markdown table: per model, batch and backend, each variant's median ms [q1–q3], and upscale's ratios."""
    groups = _by_variant(timings, lambda t: (t.model, t.batch, t.backend))
    present = [v for v in lat.VARIANTS if any(v in row for row in groups.values())]
    headers = ["model", "batch", "backend", *(f"{v} ms" for v in present), "upscale / oracle", "upscale / baseline"]
    rows = [[*key, *(_quartiles(row.get(v)) for v in present), _ratio(row, "oracle"), _ratio(row, "baseline")]
            for key, row in groups.items()]  # fmt: skip
    return format_table(rows, headers, markdown=True)


def copies_table(timings: Sequence[lat.Timing]) -> str:
    """A Markdown table: per model and batch, the elements each variant copies per eager forward, as copying ops
    + convolutions making strided inputs contiguous."""
    groups = _by_variant(timings, lambda t: (t.model, t.batch))
    rows = [[*key, *(_copies(row.get(v)) for v in lat.VARIANTS)] for key, row in groups.items()]
    return format_table(rows, ["model", "batch", *lat.VARIANTS], markdown=True)


def _by_variant(
    timings: Sequence[lat.Timing], key: Callable[[lat.Timing], tuple]
) -> dict[tuple, dict[str, lat.Timing]]:
    groups: dict[tuple, dict[str, lat.Timing]] = {}
    for t in timings:
        groups.setdefault(key(t), {})[t.variant] = t
    return groups


def _quartiles(t: lat.Timing | None) -> str:
    return "" if t is None else f"{t.median_ms:.1f} [{t.q1_ms:.1f}–{t.q3_ms:.1f}]"


def _copies(t: lat.Timing | None) -> str:
    return "" if t is None else f"{t.copied_elements / 1e6:.2f}M + {t.conv_copied_elements / 1e6:.2f}M"


def _ratio(row: dict[str, lat.Timing], other: str) -> str:
    """upscale's median relative to ``other``'s, as a signed percentage."""
    if "upscale" not in row or other not in row:
        return ""
    return f"{100 * (row['upscale'].median_ms / row[other].median_ms - 1):+.1f}%"


# ---------------------------------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it is only drawn on a terminal)")


def _add_mask_options(parser: argparse.ArgumentParser, *, models: str) -> None:
    parser.add_argument(
        "--amount",
        type=_fraction,
        default=0.3,
        help="fraction of the channels of each layer to mask, in [0, 1) (default 0.3)",
    )
    parser.add_argument(
        "--heuristic",
        choices=HEURISTICS,
        default="l2",
        help="channel score: l1/l2 norm, lamp, fpgm (geometric median), hrank (feature-map rank "
        "over --calibration batches); the lowest are masked (default l2)",
    )
    parser.add_argument(
        "--side",
        choices=("input", "output", "both"),
        default="input",
        help="mask consumers' input channels (weight columns), producers' output channels "
        "(filters), or both (default input)",
    )
    parser.add_argument(
        "--method",
        choices=("unconstrained", "constrained"),
        default="unconstrained",
        help="each layer chooses alone, or coupled layers share one choice (default unconstrained)",
    )
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        metavar="N,C,H,W",
        help=f"example input shape (default: the model's, 1,3,224,224 for most {models})",
    )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="model and input dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed for the model's initialisation and the input")


def _add_prune_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a torchvision model name (resnet50, ...) or package.module:factory (called with no "
        "arguments; modules in the current directory are found)",
    )
    parser.add_argument("--weights", metavar="PATH", help="a state_dict file to load (default: as constructed)")
    _add_mask_options(parser, models="torchvision models")
    parser.add_argument(
        "--scope",
        choices=("local", "global"),
        default="local",
        help="amount per layer, or over the whole model under one threshold (default local)",
    )
    parser.add_argument(
        "--calibration",
        metavar="PATH",
        help="for --heuristic hrank: a .pt file holding an input batch or a list of batches",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="upscale",
        help="export: upscale (reorder channels, gather only where unavoidable), baseline (a "
        "gather for every subset) or constrained (no copies, drops more) (default upscale)",
    )
    _add_common(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prune a model with UPSCALE and see what it gains. "
                     "Run 'fx-upscale COMMAND --help' for each command's options.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__} (torch {torch.__version__})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    prune = commands.add_parser("prune", help="mask and export a model; write model.pt2, report.json, summary.md",
                                description="Mask MODEL, export it physically pruned, check it against the masked "
                                "model, and write DIR/model.pt2 (load with fx_upscale.load), report.json, spec.json "
                                "and summary.md.")  # fmt: skip
    _add_prune_options(prune)
    prune.add_argument("--out", metavar="DIR", help="output directory (default MODEL-pruned)")
    explain = commands.add_parser("explain", help="per segment: producers, consumers, each access and why",
                                  description="Mask and export MODEL as 'prune' does, and print, per segment, its "
                                  "producers and each consumer's access (full, narrow, gather, absorbed), channels "
                                  "needed / available, elements copied and the reason.")  # fmt: skip
    _add_prune_options(explain)
    explain.add_argument("--segment", type=int, action="append", metavar="N", help="only segment N (repeatable)")
    explain.add_argument("--gathers-only", action="store_true", help="only segments with a gather")
    explain.add_argument("--graph", metavar="PATH", help="draw the segment graph: .dot (text), .png or .svg")
    _add_bench_parser(commands)
    return parser


BENCH_DESCRIPTION = (
    "Time, for each MODEL (torchvision name or package.module:factory), the unpruned model, the constrained, "
    "baseline and upscale exports, and the copy-free oracle (the upscale export with each gather replaced by a "
    "same-shaped view: not exact, the floor reordering can reach), in one process, with interleaved repetitions; "
    "print median and quartiles."
)


def _add_bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="latency: unpruned vs constrained, baseline, upscale and a copy-free oracle",
        description=BENCH_DESCRIPTION,
    )
    bench.add_argument("models", nargs="+", metavar="MODEL", help="models to time")
    _add_mask_options(bench, models="torchvision models; the batch dimension is replaced by each --batch")
    bench.add_argument("--batch", type=_positive, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    bench.add_argument(
        "--backend",
        choices=lat.BACKENDS,
        nargs="+",
        default=["eager"],
        help="eager and/or compile (torch.compile, inductor) (default eager)",
    )
    bench.add_argument(
        "--compile-models",
        nargs="+",
        metavar="MODEL",
        help="run --backend compile only for these models (default: all)",
    )
    bench.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    bench.add_argument("--repeats", type=_positive, default=10, help="timed rounds over all variants (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed calls per variant first (default 2)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    bench.add_argument("--csv", metavar="PATH", help="write one row per model, batch, backend and variant")
    bench.add_argument("--plot", metavar="PATH", help="draw a bar plot (.png or .svg; needs matplotlib)")
    _add_common(bench)


# ------------------------------------------------------------------------------------------------------------ main

COMMANDS = {"prune": command_prune, "explain": command_explain, "bench": command_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors: one line on stderr, status 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        require_cli_extra()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the command line's boundary: one line, or the traceback with --debug
        if args.debug:
            traceback.print_exc()
        else:
            print(f"{PROG} {args.command}: error: {one_line(error)} (--debug for the traceback)", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """The error's message on one line, prefixed with its type unless it is a CommandError."""
    message = " ".join(str(error).split()) or repr(error)
    return message if isinstance(error, CommandError) else f"{type(error).__name__}: {message}"


if __name__ == "__main__":
    sys.exit(main())
