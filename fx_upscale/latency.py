"""Latency of a pruned model against every alternative, measured fairly: one process, interleaved repetitions.

For one model and one mask, :func:`build_variants` makes five modules: the unpruned model, the ``constrained``,
``baseline`` and ``upscale`` exports, and the copy-free oracle (:func:`copy_free_oracle`: the upscale export with
every inserted gather replaced by a ``narrow`` view of the same shape, which is not exact but is the floor that
reordering can reach); the upscale export is planned for the backend it runs under. :func:`measure` times them,
eager and under ``torch.compile``, round-robin (the order shuffled each round) and returns one
:class:`Timing` per variant and backend with the median, quartiles, min and max, the latency the cost model
predicts (``cost_model.predict_latency``), and the elements each variant copies in an eager forward
(:func:`measure_copies`), including what convolutions copy to make a strided input (a ``narrow`` view of the
channel axis at batch > 1) contiguous.
Used by ``fx-upscale bench`` (``cli/bench.py``, which also draws its tables) and ``benchmarks/latency.py``; :func:`plot`
draws the results.
"""

from __future__ import annotations

import copy
import csv
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx
from torch import nn

from .copy_count import count_copies
from .cost_model import CostModel, load_cost_model, predict_latency
from .export import export
from .masking import mask

VARIANTS = ("unpruned", "constrained", "baseline", "upscale", "oracle")
BACKENDS = ("eager", "compile")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Timing:
    model: str
    batch: int
    backend: str  # "eager" | "compile" (inductor)
    variant: str  # one of VARIANTS
    device: str
    threads: int
    repeats: int
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    load_before: float  # 1-minute load average before and after this model and batch
    load_after: float
    copied_elements: int = 0  # per eager forward: elements copying ops produce (fx_upscale.copy_count)
    conv_copied_elements: int = 0  # per eager forward: elements of strided inputs convolutions make contiguous
    predicted_ms: float = 0.0  # what the cost model the export was planned with predicts (cost_model.py)
    cost_model: str = "default"  # its source: "calibrated" or "default"


def copy_free_oracle(module: fx.GraphModule) -> fx.GraphModule:
    """A copy of an exported module whose inserted gathers (``index_select`` nodes marked ``access == "gather"``)
    are ``torch.narrow`` views of the same length from channel 0: same shapes, no copy, not the same values."""
    oracle = fx.GraphModule(module, copy.deepcopy(module.graph), class_name="CopyFreeOracle")  # shares weights
    graph, indices = oracle.graph, []
    for node in list(graph.nodes):
        if node.meta.get("upscale", {}).get("access") != "gather":
            continue
        source, axis, index = node.args
        with graph.inserting_before(node):
            view = graph.call_function(torch.narrow, (source, axis, 0, _index_length(module, index)))
        view.meta["upscale"] = {"access": "oracle", "consumer": node.meta["upscale"]["consumer"]}
        node.replace_all_uses_with(view)
        graph.erase_node(node)
        indices.append(index.target)
    graph.eliminate_dead_code()
    for target in dict.fromkeys(indices):
        if not any(n.op == "get_attr" and n.target == target for n in graph.nodes):
            owner, _, name = target.rpartition(".")
            delattr(oracle.get_submodule(owner) if owner else oracle, name)
    oracle.delete_all_unused_submodules()
    graph.lint()
    oracle.recompile()
    return oracle.eval()


def _index_length(module: fx.GraphModule, index: fx.Node) -> int:
    assert isinstance(index.target, str), "the gather's index is a get_attr of the buffer reorder inserted"
    owner, _, name = index.target.rpartition(".")
    holder = module.get_submodule(owner) if owner else module
    return getattr(holder, name).shape[0]


def build_variants(
    model: nn.Module,
    example: torch.Tensor,
    *,
    amount: float,
    heuristic: str = "l2",
    side: str = "input",
    method: str = "unconstrained",
    backends: Sequence[str] = ("eager",),
    cost_models: dict[str, CostModel] | None = None,
) -> dict[str, dict[str, nn.Module]]:
    """Per backend, the five modules of :data:`VARIANTS` for ``model`` masked at ``amount`` (exports traced at
    ``example``); the upscale export (and its oracle) is planned with that backend's cost model (default: the
    cached calibration), the others are the same modules for every backend."""
    model = model.eval()
    spec = mask(model, example, amount=amount, heuristic=heuristic, side=side, method=method)
    shared = {mode: export(model, example, spec=spec, mode=mode).module for mode in ("constrained", "baseline")}
    variants = {}
    for backend in backends:
        cost_model = (cost_models or {}).get(backend)
        upscale = export(model, example, spec=spec, backend=backend, cost_model=cost_model).module
        variants[backend] = {"unpruned": model, **shared, "upscale": upscale, "oracle": copy_free_oracle(upscale)}
    return variants


def measure(
    name: str,
    variants: dict[str, dict[str, nn.Module]],
    inputs: torch.Tensor,
    *,
    repeats: int = 10,
    warmup: int = 2,
    progress: Progress | None = None,
    cost_models: dict[str, CostModel] | None = None,
) -> list[Timing]:
    """Time every variant under every backend of ``variants`` (backend -> variant -> module) on ``inputs``,
    interleaved; one :class:`Timing` each, with the latency ``cost_models[backend]`` predicts (default: the
    cached calibration)."""
    models = {b: (cost_models or {}).get(b) or load_cost_model(inputs.device, inputs.dtype, b) for b in variants}
    modules = {(backend, variant): module for backend, row in variants.items() for variant, module in row.items()}
    copies_of: dict[int, tuple[int, int]] = {}  # a module shared by several backends is counted once
    for module in modules.values():
        if id(module) not in copies_of:
            copies_of[id(module)] = measure_copies(module, inputs)
    copies = {key: copies_of[id(module)] for key, module in modules.items()}
    predicted = {}
    for (backend, variant), module in modules.items():
        cost_model = models[backend]
        predicted[backend, variant] = (predict_latency(module, inputs, cost_model).milliseconds, cost_model.source)
    callables = {key: _prepare(module, key[0]) for key, module in modules.items()}
    load_before = os.getloadavg()[0]
    samples = time_round_robin(callables, inputs, repeats=repeats, warmup=warmup, progress=progress)
    load_after = os.getloadavg()[0]
    device = str(inputs.device)
    return [
        Timing(
            name,
            inputs.shape[0],
            backend,
            variant,
            device,
            torch.get_num_threads(),
            repeats,
            *summarize(samples[backend, variant]),
            load_before,
            load_after,
            *copies[backend, variant],
            *predicted[backend, variant],
        )  # fmt: skip
        for backend, variant in callables
    ]


def measure_copies(module: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """Elements copied in one eager forward: by copying ops (``index_select``, ``cat``, ...: what
    :func:`fx_upscale.copy_count.count_copies` sees), and by convolutions, which make a strided input (a ``narrow``
    of the channel axis at batch > 1) contiguous inside their kernel."""
    strided = []

    def record(_module, args):
        if isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
            strided.append(args[0].numel())

    convolutions = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    handles = [m.register_forward_pre_hook(record) for m in convolutions]
    try:
        explicit = count_copies(module, inputs).total
    finally:
        for handle in handles:
            handle.remove()
    return explicit, sum(strided)


def _prepare(module: nn.Module, backend: str) -> Callable:
    if backend == "eager":
        return module
    if backend == "compile":
        return torch.compile(module, dynamic=False)
    raise ValueError(f"unknown backend {backend!r}: choose from {BACKENDS}")


def time_round_robin(
    callables: dict, inputs: torch.Tensor, *, repeats: int, warmup: int, progress: Progress | None = None
) -> dict:
    """Seconds per call of each callable: ``warmup`` untimed calls each (compiling, if compiled), then ``repeats``
    rounds calling each once, in an order shuffled every round (seeded, :func:`round_orders`), so that no callable
    always runs after the same one (what one leaves behind, in the caches and the allocator, the next one pays)."""
    keys = list(callables)
    orders = round_orders(len(keys), repeats)
    sync = torch.cuda.synchronize if inputs.device.type == "cuda" else (lambda: None)
    samples: dict = {key: [] for key in keys}
    with torch.no_grad():
        for key in keys:
            for _ in range(warmup):
                callables[key](inputs)
            if progress:
                progress(f"warm-up {'/'.join(key)}")
        for round_index, order in enumerate(orders):
            for key in (keys[i] for i in order):
                sync()
                start = time.perf_counter()
                callables[key](inputs)
                sync()
                samples[key].append(time.perf_counter() - start)
            if progress:
                progress(f"round {round_index + 1}/{repeats}")
    return samples


def round_orders(count: int, repeats: int, seed: int = 0) -> list[list[int]]:
    """``repeats`` orders of ``count`` callables: the rotations of a random order, then of its reverse, then of
    another, and so on, so that each callable runs first equally often and after each other one about as often.

    >>> round_orders(3, 4)
    [[0, 2, 1], [2, 1, 0], [1, 0, 2], [1, 2, 0]]
    """
    generator = random.Random(seed)
    orders: list[list[int]] = []
    while len(orders) < repeats:
        base = list(range(count))
        generator.shuffle(base)
        for cycle in (base, base[::-1]):
            orders.extend(cycle[shift:] + cycle[:shift] for shift in range(count))
    return orders[:repeats]


def summarize(seconds: Sequence[float]) -> tuple[float, float, float, float, float]:
    """Median, first and third quartiles, min and max, in milliseconds."""
    ms = sorted(1000 * s for s in seconds)
    if len(ms) == 1:
        return (ms[0],) * 5
    q1, median, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return median, q1, q3, ms[0], ms[-1]


def plot(timings: Sequence[Timing], path: str | os.PathLike) -> None:
    """A bar plot: per batch and backend, each model's variants as median latency relative to the unpruned model,
    with the quartiles as error bars. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(t.batch, t.backend) for t in timings}, key=lambda p: (p[1] != "eager", p[0]))
    models = list(dict.fromkeys(t.model for t in timings))
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.6 * len(models) + 2.5, 2.6 * len(panels)), squeeze=False)
    for ax, (batch, backend) in zip(axes[:, 0], panels):
        _plot_panel(ax, [t for t in timings if (t.batch, t.backend) == (batch, backend)], models)
        ax.set_title(f"batch {batch}, {backend}", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncols=len(VARIANTS), loc="lower center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_panel(ax, timings: Sequence[Timing], models: list[str]) -> None:
    by_key = {(t.model, t.variant): t for t in timings}
    width = 0.8 / len(VARIANTS)
    for i, variant in enumerate(VARIANTS):
        xs: list[float] = []
        heights: list[float] = []
        errors: tuple[list[float], list[float]] = ([], [])
        for m, model in enumerate(models):
            t, base = by_key.get((model, variant)), by_key.get((model, "unpruned"))
            if t is None or base is None:
                continue
            xs.append(m + (i - (len(VARIANTS) - 1) / 2) * width)
            heights.append(t.median_ms / base.median_ms)
            errors[0].append((t.median_ms - t.q1_ms) / base.median_ms)
            errors[1].append((t.q3_ms - t.median_ms) / base.median_ms)
        ax.bar(xs, heights, width, yerr=errors, label=variant, capsize=1.5, error_kw={"lw": 0.6})
    ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    ax.set_xticks(range(len(models)), models, fontsize=8)
    ax.set_ylabel("latency / unpruned", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    amount: float = 0.3
    heuristic: str = "l2"
    side: str = "input"
    method: str = "unconstrained"
    batches: tuple[int, ...] = (1, 8)
    backends: tuple[str, ...] = ("eager",)
    compile_models: tuple[str, ...] = ()  # models that also run under "compile" (empty: all, if requested)
    repeats: int = 10
    warmup: int = 2
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    def backends_for(self, model: str) -> tuple[str, ...]:
        if not self.compile_models or model in self.compile_models:
            return self.backends
        return tuple(b for b in self.backends if b != "compile")


def run(
    config: BenchConfig,
    load: Callable[[str], tuple[nn.Module, tuple[int, ...]]],
    progress: Progress | None = None,
    cost_models: dict[str, CostModel] | None = None,
) -> list[Timing]:
    """Every model of ``config``, at every batch size: its variants, exported at that batch, then timed.

    ``load(name)`` returns the model and its input shape (whose batch dimension is replaced by each batch size).
    Each batch size gets its own exports because the plan depends on it: at batch 1 consumers share gathers through
    free ``narrow`` views, at a larger batch each consumer gathers its own channels (see ``planning.py``)."""
    timings = []
    for name in config.models:
        model, shape = load(name)
        model = model.to(device=config.device, dtype=config.dtype).eval()
        generator = torch.Generator().manual_seed(0)
        for batch in config.batches:
            inputs = torch.randn(batch, *shape[1:], generator=generator, dtype=config.dtype).to(config.device)
            variants = build_variants(model, inputs, amount=config.amount, heuristic=config.heuristic,
                                      side=config.side, method=config.method, backends=config.backends_for(name),
                                      cost_models=cost_models)  # fmt: skip
            if progress:
                progress(f"{name}: exported at batch {batch}")
            timings += measure(name, variants, inputs, repeats=config.repeats, warmup=config.warmup,
                               progress=progress, cost_models=cost_models)  # fmt: skip
    return timings


def write_csv(timings: Sequence[Timing], path: str | os.PathLike) -> None:
    """One row per :class:`Timing`, with the torch version."""
    rows = [{**asdict(t), "torch": torch.__version__} for t in timings]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
