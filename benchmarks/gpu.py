"""GPU latency benchmark: the README's latency models, pruned and exported, timed on one CUDA device.

Run once on a machine with a CUDA GPU, from the repository root (``benchmarks/gpu.sh`` wraps this file, adds a
time limit and keeps a log)::

    PYTHONPATH=. bash benchmarks/gpu.sh OUT_DIR [options]
    PYTHONPATH=. python3 benchmarks/gpu.py OUT_DIR [options]

What it measures. The models of ``benchmarks/latency.py`` (resnet50, mobilenet_v2, efficientnet_b0,
efficientnet_v2_s, densenet121; ``weights=None``, seed 0, the input side ``fx-upscale bench`` uses: 224, 384 for
efficientnet_v2_s) with 30% input-side unconstrained L2 masks, and the five variants of ``fx_upscale.latency``
(unpruned, constrained, baseline, upscale, copy-free oracle), in float16 and float32, at batch 1 and 8, eager and
under ``torch.compile`` (inductor; ``--cudagraphs`` adds ``mode="reduce-overhead"``). Per model, batch, dtype and
backend the variants run round-robin (``fx_upscale.latency.time_round_robin``: ``torch.cuda.synchronize()`` before
and after every timed call, the order shuffled each round) after untimed warm-up calls, then each is profiled for a
few forwards, one profiler session each (``torch.profiler``, CUDA activity): the summed device time of the kernels
(and memcpy / memset; not annotations or synchronisation waits) of one forward, the median over those forwards, is
the ``kernel_ms`` column, the paper's latency metric. Also recorded: the elements each
variant copies per eager forward (``fx_upscale.latency.measure_copies``), its parameters and graph nodes, the
seconds its compilation took (the first call), and, for float32 eager, the latency the cost model predicts
(``predicted_ms``: ``fx_upscale.cost_model``, calibrated on the device when the run starts, a few seconds; the
exports are planned with it).

Exports: once per model and batch, in float32 on the GPU, from a mask chosen once per model on the CPU in float32
(L2 norms of the CPU weights, the same masks as the CPU benchmark; they depend on the weights only, not on the
input). An export only slices and reorders weights (no arithmetic on them), so casting an export to float16
afterwards gives exactly the export of the float16 model; the float16 variants are such casts of copies. Tracing on
the GPU keeps the export's forward passes cheap; the plan depends on the batch (a channel ``narrow`` is a free view
only at batch 1), hence one export per batch.

Time budget (``--budget-s``, default 420 s from the start of the process; ``gpu.sh`` stops it at 460 s): every step
is estimated before it starts (priors for an H100 below, scaled by how the finished steps compared with theirs) and
skipped, with a row saying so, if it would end past the budget. All eager steps run first, then the compile cases
(float16 before float32, ``--compile-models`` in order, each batch): by the priors, exports and eager cases take
about 2 minutes and two of the eight compile cases fit. The CSV is appended and flushed row by row, so
a run stopped early leaves what it measured. A step that fails (an export, a compilation, a forward, the profiler)
records its error in its rows and the run goes on.

Writes ``OUT_DIR/gpu_latency.csv`` (one row per model, variant, dtype, batch and backend) and
``OUT_DIR/gpu_latency.md``, and prints Markdown tables (wall-clock and kernel time) with the device name. Needs
torch, torchvision and networkx only (no tabulate, pandas or matplotlib). Without a CUDA device it prints one line
(``no CUDA device: ...; nothing measured``) and exits 0. ``--device cpu --smoke`` runs a small model through the
same code (for the tests).
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here, torch's import included

import os  # noqa: E402

os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the profiler's own log: two lines per profiled forward otherwise

import argparse  # noqa: E402
import copy  # noqa: E402
import csv  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, fields  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.fx as fx  # noqa: E402
from torch import nn  # noqa: E402

from fx_upscale import export, mask  # noqa: E402
from fx_upscale.cost_model import CostModel, calibrate, predict_latency  # noqa: E402
from fx_upscale.latency import VARIANTS, copy_free_oracle, measure_copies, summarize, time_round_robin  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s", "densenet121")  # benchmarks/latency.py
COMPILE_MODELS = ("resnet50", "mobilenet_v2")  # as the CPU compile run of benchmarks/latency.py
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
EXPORT_DTYPE = torch.float32
EXPORT_MODES = ("constrained", "baseline", "upscale")
AMOUNT, SIDE, METHOD, HEURISTIC = 0.3, "input", "unconstrained", "l2"
CSV_NAME, MARKDOWN_NAME = "gpu_latency.csv", "gpu_latency.md"
TORCH_VERSION, CUDA_VERSION = torch.__version__, str(torch.version.cuda)

# Priors for the time estimates (one H100, 16 host cores, inductor's caches cold), seconds unless named otherwise:
# export = the model's load and mask (first batch) and three exports and the oracle, per model and batch (the
# planning is Python: 1.5-2x what a loaded 2-core machine took at 64x64, one thread, where the forwards cost
# nothing); call_ms = one eager forward, averaged over the five variants, launch-bound at these sizes (~12 us per
# graph node: 150-750 nodes, densenet121's upscale export 5,155 with its narrows); compile = one variant's
# inductor compilation. Models not listed get DEFAULT_PRIOR.
PRIORS = {
    "resnet50": {"export": 3.0, "call_ms": 6.0, "compile": 30.0},
    "mobilenet_v2": {"export": 2.0, "call_ms": 3.0, "compile": 25.0},
    "efficientnet_b0": {"export": 2.5, "call_ms": 5.0, "compile": 35.0},
    "efficientnet_v2_s": {"export": 6.0, "call_ms": 10.0, "compile": 60.0},
    "densenet121": {"export": 5.0, "call_ms": 15.0, "compile": 90.0},
    "tiny": {"export": 1.0, "call_ms": 1.0, "compile": 2.0},  # the smoke run's model
}
DEFAULT_PRIOR = {"export": 6.0, "call_ms": 10.0, "compile": 60.0}
FIRST_COMPILE_S = 20.0  # inductor's first compilation in a process: imports, the compile workers
PROFILE_OVERHEAD_S = 0.1  # per profiled forward: starting and stopping the profiler, reading its events
CASE_OVERHEAD_S = 0.5  # per case: casting and moving copies of the variants, summaries, CSV rows


class Stopped(BaseException):
    """SIGTERM (``timeout`` in gpu.sh) or SIGINT: stop measuring, print what was measured."""


@dataclass
class Row:
    """One CSV row: one variant of one model at one dtype, batch and backend."""

    model: str
    variant: str
    dtype: str
    batch: int
    backend: str  # "eager" | "compile" (inductor) | "cudagraphs" (inductor, mode="reduce-overhead")
    median_ms: float | None = None  # wall clock per forward, synchronised
    q1_ms: float | None = None
    q3_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    kernel_ms: float | None = None  # summed device time of one forward's kernels, median over the profiled forwards
    kernel_min_ms: float | None = None
    kernel_max_ms: float | None = None
    kernels: int | None = None  # device activities (kernels, memcpy, memset) in one profiled forward
    compile_s: float | None = None  # the first call (compilation included), compiled backends
    copied_elements: int | None = None  # per eager forward, by copying ops (fx_upscale.copy_count)
    conv_copied_elements: int | None = None  # per eager forward, strided inputs convolutions make contiguous
    params: int | None = None
    nodes: int | None = None  # graph nodes of an export (None for the unpruned nn.Module)
    predicted_ms: float | None = None  # float32 eager: what the cost model calibrated on this device predicts
    repeats: int = 0
    warmup: int = 0
    profiled: int = 0
    input_side: int = 0
    device: str = ""
    torch: str = TORCH_VERSION
    cuda: str = CUDA_VERSION
    error: str = ""


FIELDS = [f.name for f in fields(Row)]


@dataclass(frozen=True)
class Config:
    out_dir: str
    models: tuple[str, ...] = MODELS
    batches: tuple[int, ...] = (1, 8)
    dtypes: tuple[str, ...] = ("float16", "float32")
    compile_models: tuple[str, ...] = COMPILE_MODELS
    compile_dtypes: tuple[str, ...] = ("float16", "float32")
    compile_backend: str = "inductor"
    cudagraphs: bool = False
    repeats: int = 30
    warmup: int = 3
    profiled: int = 3
    budget_s: float = 420.0
    device: str = "cuda"
    input_side: int | None = None  # None: the model's own (224; 384 for efficientnet_v2_s)
    seed: int = 0
    cudnn_benchmark: bool = False

    @property
    def compile_backends(self) -> tuple[str, ...]:
        return ("compile", "cudagraphs") if self.cudagraphs else ("compile",)


@dataclass(frozen=True)
class Case:
    model: str
    batch: int
    dtype: str
    backend: str

    def __str__(self) -> str:
        return f"{self.model} batch {self.batch} {self.dtype} {self.backend}"


# --- pure helpers (tested without a GPU) ---------------------------------------------------------------------------


DEVICE_WORK = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})  # profiler activity types that are device work
SYNCS = frozenset({"Context Sync", "Stream Sync", "Event Sync", "Stream Wait Event"})  # device-side waits


def kernel_time_ms(events: Iterable, device: str = "cuda") -> tuple[float, int]:
    """Summed device time (ms) and number of the device activities among profiler ``events``
    (``torch.profiler.profile(...).events()``): the CUDA events that are device work (kernels, memcpy, memset), each
    its own ``time_range``; not the annotations spanning other events (``gpu_user_annotation``: torch.compile's
    ranges) nor synchronisation waits (``cuda_sync``: "Context Sync", ...). Where events carry no activity type
    (older torch), the CUDA events not named as a synchronisation count. For ``device="cpu"`` (the smoke run) the
    CPU ops' summed self time stands in."""
    total_us, count = 0.0, 0
    for event in events:
        kind = getattr(event.device_type, "name", str(event.device_type)).upper()
        activity = getattr(event, "activity_type", None) or None
        if device == "cpu":
            if kind == "CPU" and activity in (None, "cpu_op"):
                total_us += event.self_cpu_time_total
                count += 1
        elif kind == "CUDA" and (activity in DEVICE_WORK if activity else event.name not in SYNCS):
            total_us += event.time_range.elapsed_us()
            count += 1
    return total_us / 1000.0, count


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown pipe table of ``str(cell)`` (``|`` escaped), without tabulate."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(row) for row in rows)])


def one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cell(row: Row | None, value: Callable[[Row], str]) -> str:
    if row is None:
        return ""
    if row.error and row.median_ms is None:
        return "skipped" if row.error.startswith("skipped") else "error"
    return value(row)


def _ratio(group: dict[str, Row], metric: str, other: str) -> str:
    upscale, base = group.get("upscale"), group.get(other)
    a, b = (getattr(upscale, metric, None), getattr(base, metric, None))
    return "" if not a or not b else f"{100 * (a / b - 1):+.1f}%"


def latency_tables(rows: Sequence[Row]) -> str:
    """Three Markdown tables, per model, batch, dtype and backend: each variant's wall-clock median [q1–q3] ms, its
    summed kernel time ms, and (float32 eager) the latency the cost model predicts with its error against the
    median; with upscale's ratios to the oracle and to baseline."""
    groups: dict[tuple, dict[str, Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.batch, row.dtype, row.backend), {})[row.variant] = row
    keys = list(groups)
    headers = ["model", "batch", "dtype", "backend", *VARIANTS, "upscale / oracle", "upscale / baseline"]

    def table(metric: str, value: Callable[[Row], str], only: Sequence[tuple] = keys) -> str:
        return markdown_table(headers, [[*key, *(_cell(groups[key].get(v), value) for v in VARIANTS),
                                         _ratio(groups[key], metric, "oracle"), _ratio(groups[key], metric,
                                                                                       "baseline")]
                                        for key in only])  # fmt: skip

    predicted = [key for key in keys if any(r.predicted_ms for r in groups[key].values())]

    wall = table("median_ms", lambda r: f"{r.median_ms:.2f} [{r.q1_ms:.2f}–{r.q3_ms:.2f}]")
    kernel = table("kernel_ms", lambda r: "" if r.kernel_ms is None else f"{r.kernel_ms:.3f}")
    tables = (
        f"Wall clock per forward, ms: median [first–third quartile]\n\n{wall}\n\n"
        f"Summed kernel time of one forward (torch.profiler), ms: median over the profiled forwards\n\n{kernel}"
    )
    if not predicted:
        return tables
    guess = table("predicted_ms", _predicted, predicted)
    return f"{tables}\n\nPredicted by the cost model calibrated on the device, ms (error against the median)\n\n{guess}"


def _predicted(row: Row) -> str:
    if row.predicted_ms is None or not row.median_ms:
        return ""
    return f"{row.predicted_ms:.2f} ({100 * (row.predicted_ms / row.median_ms - 1):+.0f}%)"


class CsvLog:
    """Rows appended to a CSV file, flushed and synced one by one; a run stopped early leaves what it wrote."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        with open(self.path, "w", newline="") as handle:
            csv.DictWriter(handle, fieldnames=FIELDS).writeheader()

    def write(self, row: Row) -> None:
        self.rows.append(row)
        values = {
            k: (round(v, 5) if isinstance(v, float) else ("" if v is None else v)) for k, v in asdict(row).items()
        }
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=FIELDS).writerow(values)
            handle.flush()
            os.fsync(handle.fileno())


class Estimates:
    """Seconds each kind of step should take: a prior per model, scaled by how the finished steps of that kind
    compared with their priors (actual / prior, summed over them)."""

    def __init__(self) -> None:
        self.actual: dict[str, float] = {}
        self.prior: dict[str, float] = {}

    @staticmethod
    def prior_of(model: str, kind: str) -> float:
        return PRIORS.get(model, DEFAULT_PRIOR)[kind]

    def scale(self, kind: str) -> float:
        if not self.prior.get(kind):
            return 1.0
        return max(0.2, self.actual[kind] / self.prior[kind])

    def estimate(self, kind: str, prior_s: float) -> float:
        return prior_s * self.scale(kind)

    def record(self, kind: str, prior_s: float, actual_s: float) -> None:
        self.prior[kind] = self.prior.get(kind, 0.0) + prior_s
        self.actual[kind] = self.actual.get(kind, 0.0) + actual_s


# --- models, exports, measurement ---------------------------------------------------------------------------------


class Tiny(nn.Module):
    """The smoke run's model: a residual block and a concatenation, so that baseline gathers and upscale reorders."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))  # fmt: skip
        self.branch = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = torch.cat([x, self.branch(x)], 1)
        return self.head(x.mean((2, 3)))


def load_model(name: str, seed: int) -> tuple[nn.Module, int]:
    """The model ``name`` (seeded, eval mode) and its input side: :class:`Tiny` for ``"tiny"`` (side 16), else the
    torchvision model (``weights=None``) with the crop size of its default weights' transforms, as ``fx-upscale
    bench`` takes it (cli/models.py), or 224."""
    torch.manual_seed(seed)
    if name == "tiny":
        return Tiny().eval(), 16
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    side = 224
    try:
        side = torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    except Exception:  # no classification weights: keep 224
        pass
    return model, side


def build_exports(
    model: nn.Module, spec, inputs: torch.Tensor, cost_model: CostModel | None = None
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The variants of ``fx_upscale.latency.build_variants`` for a given spec (planned with ``cost_model``), each
    export made on its own so that one failing leaves the others: the modules by variant, and the errors by
    variant."""
    variants: dict[str, nn.Module] = {"unpruned": model}
    errors: dict[str, str] = {}
    for mode in EXPORT_MODES:
        try:
            variants[mode] = export(model, inputs, spec=spec, mode=mode, cost_model=cost_model).module
        except Exception as error:
            errors[mode] = f"export: {one_line(error)}"
    if "upscale" in variants:
        try:
            variants["oracle"] = copy_free_oracle(variants["upscale"])
        except Exception as error:
            errors["oracle"] = f"oracle: {one_line(error)}"
    else:
        errors["oracle"] = "oracle: no upscale export"
    return {v: variants[v] for v in VARIANTS if v in variants}, errors


def cast(variants: dict[str, nn.Module], dtype: torch.dtype) -> dict[str, nn.Module]:
    """``variants`` in ``dtype``: themselves if already, else copies (one deepcopy, so that the oracle still shares
    upscale's weights). Integer buffers (the gathers' indices) keep their dtype."""
    if all(p.dtype == dtype for m in variants.values() for p in m.parameters()):
        return variants
    copies = copy.deepcopy(variants)
    return {name: module.to(dtype=dtype) for name, module in copies.items()}


def prepare(module: nn.Module, backend: str, compile_backend: str = "inductor") -> Callable:
    """What is timed for ``backend``: the module itself, or ``torch.compile`` of it (static shapes)."""
    if backend == "eager":
        return module
    if backend == "compile":
        return torch.compile(module, backend=compile_backend, dynamic=False)
    if backend == "cudagraphs":
        compiled = torch.compile(module, backend=compile_backend, mode="reduce-overhead", dynamic=False)

        def replay(x: torch.Tensor) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()  # earlier outputs may be overwritten: none is kept
            return compiled(x)

        return replay
    raise ValueError(f"unknown backend {backend!r}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_forward(fn: Callable, inputs: torch.Tensor) -> tuple[float, int]:
    """Summed device time (ms) and number of device activities of one forward of ``fn`` under ``torch.profiler``,
    recording device activity only (cheap to read back); again with CPU activity too if that recorded nothing."""
    from torch.profiler import ProfilerActivity, profile

    device = inputs.device
    tries = [[ProfilerActivity.CUDA], [ProfilerActivity.CPU, ProfilerActivity.CUDA]]
    measured = (0.0, 0)
    for activities in tries if device.type == "cuda" else [[ProfilerActivity.CPU]]:
        synchronize(device)
        with torch.no_grad(), profile(activities=activities) as prof:
            fn(inputs)
            synchronize(device)
        measured = kernel_time_ms(prof.events(), device.type)
        if measured[1]:
            break
    return measured


def graph_nodes(module: nn.Module) -> int | None:
    return len(module.graph.nodes) if isinstance(module, fx.GraphModule) else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def cuda_unavailable() -> str | None:
    """Why there is no usable CUDA device, or None."""
    try:
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}): torch.cuda.is_available() is False"
        torch.cuda.get_device_name(0)
        torch.zeros(1, device="cuda")
    except Exception as error:
        return f"CUDA initialisation failed: {one_line(error)}"
    return None


class Bench:
    """The run: exports and eager cases model by model, then the compile cases, within the budget."""

    def __init__(
        self,
        config: Config,
        load: Callable[[str, int], tuple[nn.Module, int]] = load_model,
        prepare: Callable[[nn.Module, str, str], Callable] = prepare,
        clock: Callable[[], float] = time.monotonic,
        start: float = START,
    ) -> None:
        self.config = config
        self.load, self.prepare, self.clock, self.start = load, prepare, clock, start
        self.device = torch.device(config.device)
        self.device_name = device_name(self.device)
        self.log = CsvLog(Path(config.out_dir) / CSV_NAME)
        self.estimates = Estimates()
        self.compiled_before = False
        self.cost_model: CostModel | None = None  # calibrated when the run starts; the exports are planned with it

    # bookkeeping

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.config.budget_s - self.elapsed()

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", flush=True)

    def fits(self, what: str, estimate_s: float) -> bool:
        left = self.left()
        if estimate_s <= left:
            self.say(f"{what}: estimate {estimate_s:.1f} s ({left:.0f} s of the budget left)")
            return True
        self.say(f"{what}: skipped, estimate {estimate_s:.1f} s > {max(left, 0):.0f} s left")
        return False

    def _skip_reason(self, estimate_s: float) -> str:
        return f"skipped: time budget (estimate {estimate_s:.0f} s, {max(self.left(), 0):.0f} s left)"

    # estimates

    def eager_prior(self, model: str, batch: int) -> float:
        c = self.config
        calls = len(VARIANTS) * (c.warmup + c.repeats + c.profiled + 1)
        return calls * Estimates.prior_of(model, "call_ms") / 1000 + len(VARIANTS) * c.profiled * PROFILE_OVERHEAD_S

    def case_estimate(self, case: Case) -> float:
        timing = self.estimates.estimate("eager", self.eager_prior(case.model, case.batch)) + CASE_OVERHEAD_S
        if case.backend == "eager":
            return timing
        return timing + len(VARIANTS) * self.compile_estimate(case.model) + self.first_compile_s()

    def compile_estimate(self, model: str) -> float:
        """One variant's compilation, the first in the process excepted (:meth:`first_compile_s` adds to it)."""
        return self.estimates.estimate("compile", Estimates.prior_of(model, "compile"))

    def first_compile_s(self) -> float:
        return 0.0 if self.compiled_before else FIRST_COMPILE_S

    def print_plan(self) -> None:
        c = self.config
        compile_cases = self.compile_cases()
        export_s = sum(Estimates.prior_of(m, "export") for m in c.models) * len(c.batches)
        eager_s = sum(self.eager_prior(m, b) + CASE_OVERHEAD_S for m in c.models for b in c.batches) * len(c.dtypes)
        print(f"plan: {len(c.models)} models x batches {list(c.batches)} x {list(c.dtypes)}, {len(VARIANTS)} variants, "
              f"{c.warmup} warm-up calls + {c.repeats} interleaved rounds + {c.profiled} profiled forwards each; "
              f"budget {c.budget_s:.0f} s", flush=True)  # fmt: skip
        print(f"  estimates (priors; refined as steps finish): exports {export_s:.0f} s, eager cases {eager_s:.0f} s "
              f"(per case: " + ", ".join(f"{m} {self.eager_prior(m, 1) + CASE_OVERHEAD_S:.1f} s" for m in c.models)
              + ")", flush=True)  # fmt: skip
        total, fitting = self.elapsed() + export_s + eager_s, 0
        for i, case in enumerate(compile_cases):
            compile_s = len(VARIANTS) * Estimates.prior_of(case.model, "compile") + (FIRST_COMPILE_S if i == 0 else 0)
            cost = self.eager_prior(case.model, case.batch) + CASE_OVERHEAD_S + compile_s
            fits = total + cost <= c.budget_s
            total, fitting = (total + cost, fitting + 1) if fits else (total, fitting)
            late = "" if fits else " (past the budget by the priors)"
            print(f"  compile case {case}: {cost:.0f} s{late}", flush=True)
        print(
            f"  by the priors: {total:.0f} s in all, {fitting} of {len(compile_cases)} compile cases within the "
            "budget (the others run only if earlier steps beat their priors)",
            flush=True,
        )

    def compile_cases(self) -> list[Case]:
        c = self.config
        return [Case(m, b, d, backend) for d in c.compile_dtypes if d in c.dtypes for m in c.compile_models
                if m in c.models for b in c.batches for backend in c.compile_backends]  # fmt: skip

    # the run

    def run(self) -> list[Row]:
        c = self.config
        self.say(f"device {self.device_name}, torch {torch.__version__}, CUDA {torch.version.cuda}, cudnn.benchmark "
                 f"{torch.backends.cudnn.benchmark}, cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
                 f"matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}")  # fmt: skip
        self.print_plan()
        self.calibrate()
        kept: dict[tuple[str, int], tuple[dict[str, nn.Module], dict[str, str], torch.Tensor, dict]] = {}
        compile_models = {case.model for case in self.compile_cases()}
        for name in c.models:
            exports = self.export_model(name)
            for batch, (variants, errors, inputs) in exports.items():
                extra: dict = {}  # per model and batch: copies, params, nodes (the same in every dtype)
                for dtype in c.dtypes:
                    self.measure_case(Case(name, batch, dtype, "eager"), variants, errors, inputs, extra)
                if name in compile_models:
                    kept[name, batch] = (variants, errors, inputs, extra)
        for case in self.compile_cases():
            if (case.model, case.batch) in kept:
                self.measure_case(case, *kept[case.model, case.batch])
        return self.log.rows

    def calibrate(self) -> None:
        """Calibrate the latency cost model for float32 eager on the device (seconds); without it the exports are
        planned with the defaults and no latency is predicted."""
        started = self.clock()
        try:
            self.cost_model = calibrate(self.device, EXPORT_DTYPE, trials=3)
        except Exception as error:
            self.say(f"calibration failed ({one_line(error)}): exports planned with the default cost model")
            return
        self.say(f"calibrated the cost model in {self.clock() - started:.1f} s: {self.cost_model}")

    def export_model(self, name: str) -> dict[int, tuple[dict[str, nn.Module], dict[str, str], torch.Tensor]]:
        """Per batch: the variants (float32, on the device), their export errors, and the float32 input. The
        model is loaded and masked (on the CPU) with the first batch's export, and counts in its time."""
        c = self.config
        result = {}
        prior = Estimates.prior_of(name, "export")
        loaded: tuple[nn.Module, object, tuple[int, ...]] | None = None
        for batch in c.batches:
            estimate = self.estimates.estimate("export", prior)
            if not self.fits(f"export {name} batch {batch}", estimate):
                reason = self._skip_reason(estimate)
                result[batch] = ({}, {v: reason for v in VARIANTS}, torch.empty(0))
                continue
            started = self.clock()
            try:
                if loaded is None:
                    loaded = self.load_and_mask(name)
                model, spec, shape = loaded
                inputs = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(c.seed))
                inputs = inputs.to(device=self.device, dtype=EXPORT_DTYPE)
                variants, errors = build_exports(model, spec, inputs, self.cost_model)
            except Exception as error:
                variants, errors, inputs = {}, {v: f"model: {one_line(error)}" for v in VARIANTS}, torch.empty(0)
            result[batch] = (variants, errors, inputs)
            took = self.clock() - started
            self.estimates.record("export", prior, took)
            failed = f"; failed: {'; '.join(f'{v}: {e}' for v, e in errors.items())}" if errors else ""
            self.say(f"export {name} batch {batch}: {took:.1f} s{failed}")
        return result

    def load_and_mask(self, name: str) -> tuple[nn.Module, object, tuple[int, ...]]:
        """The model in float32 on the device, its mask (chosen on the CPU, as the CPU benchmark chooses it: L2
        norms of the float32 weights, whatever the input) and its input shape without the batch."""
        c = self.config
        model, side = self.load(name, c.seed)
        shape = (3, c.input_side or side, c.input_side or side)
        model = model.to(dtype=EXPORT_DTYPE)
        example = torch.randn(1, *shape, generator=torch.Generator().manual_seed(c.seed), dtype=EXPORT_DTYPE)
        spec = mask(model, example, amount=AMOUNT, heuristic=HEURISTIC, side=SIDE, method=METHOD)
        return model.to(self.device), spec, shape

    def measure_case(
        self,
        case: Case,
        variants: dict[str, nn.Module],
        errors: dict[str, str],
        inputs: torch.Tensor,
        extra: dict,
    ) -> list[Row]:
        c = self.config
        rows = {v: Row(case.model, v, case.dtype, case.batch, case.backend, repeats=c.repeats, warmup=c.warmup,
                       profiled=c.profiled, input_side=int(inputs.shape[-1]) if inputs.dim() else 0,
                       device=self.device_name) for v in VARIANTS}  # fmt: skip
        for variant, error in errors.items():
            rows[variant].error = error
        estimate = self.case_estimate(case)
        prior = self.eager_prior(case.model, case.batch)
        if variants and not self.fits(str(case), estimate):
            for row in rows.values():
                row.error = row.error or self._skip_reason(estimate)
            variants = {}
        started = self.clock()
        try:
            if variants:
                self._measure(case, variants, inputs, rows, extra)
        except Exception as error:  # anything the guards below let through: this case only
            for row in rows.values():
                row.error = row.error or f"case: {one_line(error)}"
        except Stopped:
            for row in rows.values():
                row.error = row.error or ("stopped" if row.median_ms is None else "stopped before profiling")
            raise
        finally:
            for variant in VARIANTS:
                for key, value in extra.get(variant, {}).items():
                    setattr(rows[variant], key, value)
                self.log.write(rows[variant])
        if variants:
            took = self.clock() - started
            compile_s = sum(r.compile_s or 0.0 for r in rows.values())
            self.estimates.record("eager", prior, took - compile_s)
            self.say(f"{case}: {took:.1f} s; " + ", ".join(_summary(r) for r in rows.values()))
        return list(rows.values())

    def _measure(self, case: Case, variants: dict[str, nn.Module], inputs: torch.Tensor, rows: dict[str, Row],
                 extra: dict) -> None:  # fmt: skip
        c = self.config
        modules = cast(variants, DTYPES[case.dtype])
        x = inputs.to(DTYPES[case.dtype])
        for variant, module in modules.items():
            info = extra.setdefault(variant, {})
            info.setdefault("params", sum(p.numel() for p in module.parameters()))
            info.setdefault("nodes", graph_nodes(module))
            if case.backend == "eager" and "copied_elements" not in info:
                try:
                    info["copied_elements"], info["conv_copied_elements"] = measure_copies(module, x)
                except Exception as error:
                    rows[variant].error = f"copies: {one_line(error)}"
            if case.backend == "eager" and x.dtype == EXPORT_DTYPE and self.cost_model is not None:
                try:
                    rows[variant].predicted_ms = predict_latency(module, x, self.cost_model).milliseconds
                except Exception as error:
                    rows[variant].error = f"prediction: {one_line(error)}"
        callables = {}
        for variant, module in modules.items():
            if case.backend != "eager":
                estimate = self.compile_estimate(case.model) + self.first_compile_s()
                if estimate > self.left():
                    rows[variant].error = self._skip_reason(estimate)
                    continue
            try:
                callables[variant] = self._warm_up(case, module, x, rows[variant])
            except Exception as error:
                rows[variant].error = f"{'compile' if case.backend != 'eager' else 'forward'}: {one_line(error)}"
        if not callables:
            return
        try:
            samples = time_round_robin(callables, x, repeats=c.repeats, warmup=0)
        except Exception as error:
            for variant in callables:
                rows[variant].error = f"timing: {one_line(error)}"
            return
        for variant, seconds in samples.items():
            row = rows[variant]
            row.median_ms, row.q1_ms, row.q3_ms, row.min_ms, row.max_ms = summarize(seconds)
        kernel: dict[str, list[tuple[float, int]]] = {v: [] for v in callables}
        for _ in range(c.profiled):
            for variant, fn in callables.items():
                try:
                    kernel[variant].append(profile_forward(fn, x))
                except Exception as error:
                    rows[variant].error = rows[variant].error or f"profile: {one_line(error)}"
        for variant, measured in kernel.items():
            if measured and any(n for _, n in measured):
                ms = sorted(m for m, _ in measured)
                row = rows[variant]
                row.kernel_ms, row.kernel_min_ms, row.kernel_max_ms = statistics.median(ms), ms[0], ms[-1]
                row.kernels = int(statistics.median(n for _, n in measured))
            elif measured:
                rows[variant].error = rows[variant].error or "profile: no device activity recorded"

    def _warm_up(self, case: Case, module: nn.Module, x: torch.Tensor, row: Row) -> Callable:
        """The callable for ``case.backend``, after ``warmup`` untimed calls; the first call's seconds (compilation
        included) go to ``row.compile_s`` for a compiled backend."""
        fn = self.prepare(module, case.backend, self.config.compile_backend)
        with torch.no_grad():
            for i in range(max(self.config.warmup, 1)):
                started = self.clock()
                fn(x)
                synchronize(x.device)
                if i == 0 and case.backend != "eager":
                    row.compile_s = self.clock() - started
                    prior = Estimates.prior_of(case.model, "compile")
                    prior += 0.0 if self.compiled_before else FIRST_COMPILE_S
                    self.estimates.record("compile", prior, row.compile_s)
                    self.compiled_before = True
        return fn


def _summary(row: Row) -> str:
    if row.median_ms is None:
        return f"{row.variant} {'skipped' if row.error.startswith('skipped') else 'error'}"
    kernel = "" if row.kernel_ms is None else f" / {row.kernel_ms:.2f}"
    return f"{row.variant} {row.median_ms:.2f}{kernel} ms"


def report(bench: Bench, rows: Sequence[Row], note: str = "") -> str:
    c = bench.config
    errors = [r for r in rows if r.error and not r.error.startswith("skipped")]
    skipped = [r for r in rows if r.error.startswith("skipped")]
    header = (f"GPU latency on {bench.device_name} (torch {torch.__version__}, CUDA {torch.version.cuda}): "
              f"{', '.join(c.models)}; {AMOUNT:.0%} {SIDE}-side {METHOD} {HEURISTIC.upper()} masks; {c.warmup} "
              f"warm-up calls, {c.repeats} interleaved rounds, {c.profiled} profiled forwards per variant; "
              f"{len(rows)} rows, {len(errors)} with errors, {len(skipped)} skipped; {bench.elapsed():.0f} s in all"
              f"{note}")  # fmt: skip
    lines = [header, "", latency_tables(rows)]
    if errors:
        lines += ["", "Errors:", *(f"- {r.model} batch {r.batch} {r.dtype} {r.backend} {r.variant}: {r.error}"
                                   for r in errors)]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where gpu_latency.csv and gpu_latency.md go")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--batch", nargs="+", type=int)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES))
    parser.add_argument("--compile-models", nargs="*", help="models also timed under torch.compile ('all': every one)")
    parser.add_argument("--compile-dtypes", nargs="*", choices=sorted(DTYPES))
    parser.add_argument("--cudagraphs", action="store_true", help="also torch.compile(mode='reduce-overhead')")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--profiled", type=int, help="profiled forwards per variant")
    parser.add_argument("--budget-s", type=float, help="stop starting steps that would end later (default 420)")
    parser.add_argument("--input-side", type=int, help="input height and width (default: the model's)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: with --smoke, for the tests
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    base = Config(args.out_dir)
    if args.smoke:  # one small model, every step, a few calls: the code path in seconds
        base = Config(args.out_dir, models=("tiny",), batches=(1, 2), dtypes=("float32", "float64"),
                      compile_models=("tiny",), compile_dtypes=("float32",), repeats=2, warmup=1, profiled=2,
                      compile_backend="eager")  # fmt: skip
    models = tuple(args.models or base.models)
    compile_models = base.compile_models if args.compile_models is None else tuple(args.compile_models)
    config = Config(
        args.out_dir,
        models=models,
        batches=tuple(args.batch or base.batches),
        dtypes=tuple(args.dtypes or base.dtypes),
        compile_models=models if compile_models == ("all",) else compile_models,
        compile_dtypes=base.compile_dtypes if args.compile_dtypes is None else tuple(args.compile_dtypes),
        compile_backend=args.compile_backend if args.compile_backend != "inductor" else base.compile_backend,
        cudagraphs=args.cudagraphs,
        repeats=args.repeats or base.repeats,
        warmup=base.warmup if args.warmup is None else args.warmup,
        profiled=base.profiled if args.profiled is None else args.profiled,
        budget_s=args.budget_s or base.budget_s,
        device=args.device,
        input_side=args.input_side or base.input_side,
        cudnn_benchmark=args.cudnn_benchmark,
    )
    return config, args


def raise_recompile_limit(limit: int) -> None:
    """Let dynamo keep ``limit`` compilations per code object: one model's forward is compiled per dtype, batch and
    backend, and past dynamo's limit (8) it would quietly run the rest eagerly."""
    try:
        import torch._dynamo.config as config
    except Exception:  # no dynamo: the compile cases record the error
        return
    for name in ("recompile_limit", "cache_size_limit"):  # the name since torch 2.6, and the one before
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))
            return


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_args(argv)
    if config.device.startswith("cuda"):
        reason = cuda_unavailable()
        if reason is not None:
            print(f"no CUDA device: {reason}; nothing measured", flush=True)
            return 0
    if config.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    raise_recompile_limit(64)

    def stop(signum, _frame):
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bench = Bench(config)
    note = ""
    try:
        bench.run()
    except Stopped as why:
        note = f"; stopped early ({why}): the rows missing were not measured"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    text = report(bench, bench.log.rows, note)
    print("\n" + text, flush=True)
    (Path(config.out_dir) / MARKDOWN_NAME).write_text(text + "\n")
    print(f"\nwrote {bench.log.path} and {Path(config.out_dir) / MARKDOWN_NAME}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
