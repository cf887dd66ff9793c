"""Predicted latency: dispatched ops, bytes moved and multiply-adds, with constants measured on the machine.

A :class:`CostModel` holds a score of constants for one device, dtype, backend and thread count. :func:`calibrate`
measures them with short micro-benchmarks (about fifteen seconds); :func:`load_cost_model` returns the calibration
cached for the current machine (``fx-upscale calibrate`` writes it), or :func:`default_cost_model` without one. The
model:

- a view op (``narrow``) costs ``view_seconds``: dispatch only;
- any other op costs ``op_seconds`` + bytes it reads and writes x ``seconds_per_byte`` + multiply-adds x
  ``seconds_per_mac`` (``seconds_per_batched_mac`` for a convolution over 4 or more images, whose kernels run
  faster; multiply-adds counted as the kernel runs them, channels and output width padded to its blocks); a
  ``cat`` costs ``input_seconds`` more per input;
- a convolution costs ``conv_seconds`` instead of ``op_seconds``, and a grouped one (depthwise) costs
  ``grouped_conv_seconds`` (on a CPU its kernel is set up afresh on each call: tens of microseconds) and is priced
  by the bytes it moves, at ``seconds_per_grouped_byte`` (``seconds_per_unaligned_grouped_byte`` where its
  channel count is no multiple of ``channel_block``: a CPU kernel copies such tensors into and out of a padded
  layout by a slower path); a batch norm costs ``norm_seconds`` instead of ``op_seconds``;
- an element-wise op computing a transcendental function (SiLU, sigmoid, GELU, exp, softmax, ...) moves its bytes
  at ``seconds_per_special_byte``, a batch norm at ``seconds_per_norm_byte``; a max or average pooling costs
  ``seconds_per_pool_tap`` per output element and window tap;
- bytes an op moves beyond ``cache_bytes`` cost ``seconds_per_memory_byte`` instead (they do not fit the cache);
- an output larger than ``fresh_bytes`` costs ``seconds_per_fresh_byte`` per byte more: on a CPU such a buffer is
  mapped afresh on each call and every page faults in (glibc's allocator returns allocations above 32 MiB to the
  system); an in-place op (``relu_``, ``hardtanh_``, ``silu_``) allocates nothing and pays none of it;
- a module call costs ``module_seconds`` more (an ``nn.Module`` call in eager mode);
- every op (not a view) costs ``context_seconds`` more in a forward than in the tight loops that measure the other
  constants (its code, weights and output buffer no longer in the caches those loops keep warm): measured as what a
  small network of the blocks pruned CNNs are made of (:class:`CalibrationNetwork`) takes beyond the rest of the
  model's prediction for it, per op.

The planner prices each consumer's access with :meth:`CostModel.gather`, :meth:`CostModel.narrow`,
:meth:`CostModel.zero_columns` and :meth:`CostModel.cat` (``planning/access.py``); :func:`predict_latency`
prices a whole forward of any module by running it once under a dispatch mode that sees every aten op.
Under ``backend="compile"`` views fuse into their readers and a ``cat`` is one generated kernel: views and ``cat``
inputs cost nothing.
Start reading at :class:`CostModel`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .calibration_network import CalibrationNetwork

BACKENDS = ("eager", "compile")
BATCHED = 4
M = TypeVar("M", bound=nn.Module)
CACHE_ENV = "FX_UPSCALE_CACHE"


@dataclass(frozen=True)
class CostModel:
    """Seconds per dispatched view, per op (per convolution, per batch norm), per ``cat`` input, per module call,
    per byte moved (by a grouped convolution) and per multiply-add, on ``device`` for ``dtype`` under ``backend``
    with ``threads`` threads."""

    device: str
    dtype: str
    backend: str
    threads: int
    view_seconds: float
    op_seconds: float
    conv_seconds: float
    grouped_conv_seconds: float  # a grouped (depthwise) convolution's fixed cost
    norm_seconds: float
    input_seconds: float
    module_seconds: float
    context_seconds: float  # an op in a forward, beyond the same op timed alone
    seconds_per_byte: float
    seconds_per_memory_byte: float  # bytes an op moves beyond ``cache_bytes`` come from memory, not cache
    seconds_per_grouped_byte: float
    seconds_per_unaligned_grouped_byte: float  # channels no multiple of ``channel_block``
    seconds_per_special_byte: float
    seconds_per_norm_byte: float  # a batch norm moves its bytes at this rate at best
    seconds_per_pool_tap: float  # a max or average pooling: per output element and window tap
    seconds_per_fresh_byte: float
    seconds_per_mac: float
    seconds_per_batched_mac: float  # a convolution over a batch of BATCHED or more runs its multiply-adds faster
    fresh_bytes: int = 32 << 20  # outputs above this size are fresh memory on each call (CPU)
    cache_bytes: int = 8 << 20  # what one op can move at the cache's rate
    channel_block: int = 1  # convolution kernels pad channel counts to a multiple of this (the SIMD width)
    width_block: int = 1  # and the output's width (its last axis) to a multiple of this (register blocking)
    source: str = "default"  # "default" or "calibrated"
    torch_version: str = field(default_factory=lambda: torch.__version__)

    @property
    def key(self) -> str:
        return cache_key(self.device, self.dtype, self.backend, self.threads)

    def moving(self, moved: float) -> float:
        """Seconds one op spends moving ``moved`` bytes (read and written): from cache up to ``cache_bytes``,
        from memory beyond."""
        cached = min(moved, self.cache_bytes)
        return cached * self.seconds_per_byte + (moved - cached) * self.seconds_per_memory_byte

    def gather(self, bytes_out: float) -> float:
        """An ``index_select`` writing ``bytes_out`` (it reads as much)."""
        return self.op_seconds + self.context_seconds + self.moving(2 * bytes_out)

    def narrow(self, bytes_out: float, contiguous: bool) -> float:
        """A channel ``narrow``: a view; a strided one (batch > 1) is copied by the convolution reading it."""
        copy = 0.0 if contiguous else self.moving(2 * bytes_out)
        return self.view_seconds + copy

    def zero_columns(self, macs: float) -> float:
        """Multiply-adds spent on channels read through zero weight columns."""
        return macs * self.seconds_per_mac

    def cat(self, views: int, inputs: int, bytes_out: float) -> float:
        """A ``cat`` of ``inputs`` pieces, ``views`` of them ``narrow`` views, writing ``bytes_out``."""
        fixed = self.op_seconds + self.context_seconds + views * self.view_seconds + inputs * self.input_seconds
        return fixed + self.moving(2 * bytes_out)

    def pointwise(self, bytes_out: float) -> float:
        """A per-channel op (BatchNorm, an activation) writing ``bytes_out``."""
        return self.op_seconds + self.context_seconds + self.moving(2 * bytes_out)


def cache_key(device: str, dtype: str, backend: str, threads: int) -> str:
    return f"{device}/{dtype}/{backend}/threads={threads}/torch={torch.__version__}"


def device_name(device: torch.device | str) -> str:
    """``cpu`` or ``cuda:<name of the GPU>``: what a calibration is cached under."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def default_cost_model(device: str = "cpu", dtype: str = "float32", backend: str = "eager") -> CostModel:
    """Constants of the order a CPU core or a datacenter GPU shows, for when no calibration is cached."""
    check_backend(backend)
    if device.startswith("cuda"):
        model = CostModel(device, dtype, backend, 1, view_seconds=4e-6, op_seconds=8e-6, conv_seconds=2e-5,
                          grouped_conv_seconds=2e-5, norm_seconds=1e-5, input_seconds=2e-7, module_seconds=3e-6,
                          context_seconds=0.0, seconds_per_byte=1 / 2e12, seconds_per_memory_byte=1 / 2e12,
                          seconds_per_grouped_byte=1 / 1e12, seconds_per_unaligned_grouped_byte=1 / 1e12,
                          seconds_per_special_byte=1 / 2e12, seconds_per_norm_byte=1 / 2e12,
                          seconds_per_pool_tap=1e-12, seconds_per_fresh_byte=0.0, seconds_per_mac=1 / 2e13,
                          seconds_per_batched_mac=1 / 4e13, channel_block=8)  # fmt: skip
    else:
        threads = torch.get_num_threads()  # one x86 core, as calibrated, rates scaled by threads
        model = CostModel(
            device,
            dtype,
            backend,
            threads,
            view_seconds=2e-6,
            op_seconds=1.5e-6,
            conv_seconds=8e-6,
            grouped_conv_seconds=8e-5,
            norm_seconds=8e-6,
            input_seconds=1e-7,
            module_seconds=1.4e-6,
            context_seconds=1.5e-5,
            seconds_per_byte=1.1e-11 / threads,
            seconds_per_memory_byte=3.5e-11,
            seconds_per_grouped_byte=1.0e-10 / threads,
            seconds_per_unaligned_grouped_byte=1.4e-10 / threads,
            seconds_per_special_byte=5e-11 / threads,
            seconds_per_norm_byte=2.2e-11 / threads,
            seconds_per_pool_tap=3.3e-9 / threads,
            seconds_per_fresh_byte=4e-10,
            seconds_per_mac=2.3e-11 / threads,
            seconds_per_batched_mac=1.9e-11 / threads,
            channel_block=channel_block(torch.device("cpu")),
            width_block=width_block(torch.device("cpu")),
        )
        # fmt: skip
    return _for_backend(model, backend)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")


def _for_backend(model: CostModel, backend: str) -> CostModel:
    """Under ``torch.compile`` views fuse into their readers, a ``cat`` of them is one generated kernel, and module
    calls are gone."""
    if backend == "compile":
        return replace(model, backend="compile", view_seconds=0.0, input_seconds=0.0, module_seconds=0.0)
    return model


def cache_path() -> Path:
    """``$FX_UPSCALE_CACHE/cost_models.json`` (default ``~/.cache/fx_upscale``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "fx_upscale")
    return Path(root) / "cost_models.json"


def load_cost_model(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    backend: str = "eager") -> CostModel:  # fmt: skip
    """The calibration cached for this device, dtype, backend, thread count and torch version, else the
    defaults (:func:`default_cost_model`)."""
    check_backend(backend)
    name, dtype_name = device_name(device), _dtype_name(dtype)
    key = cache_key(name, dtype_name, backend, torch.get_num_threads())
    entry = _read_cache().get(key)
    try:
        return CostModel(**entry) if entry is not None else default_cost_model(name, dtype_name, backend)
    except TypeError:  # cached by a version with other constants: calibrate again
        return default_cost_model(name, dtype_name, backend)


def save_cost_model(model: CostModel) -> Path:
    """Cache ``model`` under its key; returns the cache file."""
    path = cache_path()
    entries = _read_cache()
    entries[model.key] = asdict(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1, sort_keys=True))
    return path


def _read_cache() -> dict:
    path = cache_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def calibrate(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, backend: str = "eager",
              *, trials: int = 4, passes: int = 3) -> CostModel:  # fmt: skip
    """Measure the constants of a :class:`CostModel` on ``device`` (about fifteen seconds on a CPU core): the fastest
    of ``trials`` timings of narrow views, tiny ops, convolutions and batch norms, ``cat`` of many inputs, module
    calls, element-wise and transcendental ops, a 64 MiB output, depthwise convolutions, and a sequence of
    ResNet-like convolutions. Every constant is measured in ``passes`` passes over all of them and the median
    kept: on a shared machine a burst of other work lasting a second or two slows one pass, not the median."""
    check_backend(backend)
    device = torch.device(device)
    bench = _Bench(device, dtype, trials)
    with torch.random.fork_rng(devices=[]):  # the modules it builds draw their weights; the caller's state is kept
        torch.manual_seed(0)
        measured = [_measure(bench) for _ in range(passes)]
    constants = {name: statistics.median(getattr(m, name) for m in measured)
                 for name, value in asdict(measured[0]).items() if isinstance(value, float)}  # fmt: skip
    return _for_backend(replace(measured[0], **constants), backend)


def _measure(bench: _Bench) -> CostModel:
    """One pass of every micro-benchmark of :func:`calibrate`: the eager constants."""
    device, dtype = bench.device, bench.dtype
    tiny = bench.tensor(1, 16, 4, 4)
    op = bench.per_call(lambda: torch.relu(tiny))
    relu, conv, norm = nn.ReLU(), bench.module(nn.Conv2d(16, 16, 1)), bench.module(nn.BatchNorm2d(16).eval())
    module = max(0.0, bench.per_call(lambda: relu(tiny)) - op)
    pieces = [bench.tensor(1, 2, 4, 4) for _ in range(64)]
    inputs = (bench.per_call(lambda: torch.cat(pieces, 1)) - bench.per_call(lambda: torch.cat(pieces[:4], 1))) / 60
    per_byte = statistics.median(bench.seconds_per_byte(op))
    conv_seconds = bench.per_call(lambda: conv(tiny)) - module
    grouped_conv_seconds = bench.grouped_conv_seconds()
    model = CostModel(
        device_name(device), _dtype_name(dtype), "eager", torch.get_num_threads(),
        view_seconds=bench.per_call(lambda: torch.narrow(tiny, 1, 2, 8)), op_seconds=op,
        conv_seconds=conv_seconds, grouped_conv_seconds=grouped_conv_seconds,
        norm_seconds=bench.per_call(lambda: norm(tiny)) - module,
        input_seconds=max(0.0, inputs), module_seconds=module, context_seconds=0.0, seconds_per_byte=per_byte,
        seconds_per_memory_byte=per_byte,
        seconds_per_grouped_byte=bench.seconds_per_grouped_byte(grouped_conv_seconds),
        seconds_per_unaligned_grouped_byte=bench.seconds_per_grouped_byte(grouped_conv_seconds, unaligned=True),
        seconds_per_special_byte=bench.seconds_per_special_byte(op),
        seconds_per_norm_byte=bench.seconds_per_norm_byte(norm, module),
        seconds_per_pool_tap=bench.seconds_per_pool_tap(op),
        seconds_per_fresh_byte=bench.seconds_per_fresh_byte(op, per_byte) if device.type == "cpu" else 0.0,
        seconds_per_mac=bench.seconds_per_mac(per_byte, conv_seconds),
        seconds_per_batched_mac=bench.seconds_per_mac(per_byte, conv_seconds, batch=8),
        channel_block=channel_block(device),
        width_block=width_block(device),
        source="calibrated",
    )  # fmt: skip
    model = replace(model, seconds_per_memory_byte=bench.seconds_per_memory_byte(op, model))
    return replace(model, context_seconds=bench.context_seconds(model))


class _Bench:
    """Timed micro-benchmarks on one device and dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype, trials: int) -> None:
        self.device, self.dtype, self.trials = device, dtype, trials
        self.generator = torch.Generator().manual_seed(0)

    def tensor(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator).to(self.device, self.dtype)

    def module(self, module: M) -> M:
        return module.to(self.device, self.dtype)

    def per_call(self, call: Callable[[], object], budget: float = 0.02) -> float:
        """Seconds per call: the fastest of ``trials`` timed loops of about ``budget`` seconds each (the least
        disturbed by other work on the machine)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        with torch.no_grad():
            for _ in range(3):
                call()
            sync()
            start = time.perf_counter()
            call()
            sync()
            loops = max(1, min(2000, int(budget / max(time.perf_counter() - start, 1e-7))))
            samples = []
            for _ in range(self.trials):
                start = time.perf_counter()
                for _ in range(loops):
                    call()
                sync()
                samples.append((time.perf_counter() - start) / loops)
        return min(samples)

    def seconds_per_byte(self, op: float) -> list[float]:
        """Element-wise ops (ReLU, add) on tensors of 0.4, 1.6 and 6.4 MB: seconds per byte read and written."""
        rates = []
        for channels, side in ((128, 28), (128, 56), (512, 56)):
            x = self.tensor(1, channels, side, side)
            rates.append(max(self.per_call(partial(torch.relu, x)) - op, 0.0) / (2 * x.nbytes))
            rates.append(max(self.per_call(partial(torch.add, x, x)) - op, 0.0) / (3 * x.nbytes))
        return rates

    def seconds_per_norm_byte(self, tiny: nn.Module, module: float) -> float:
        """An inference BatchNorm over 6.4 MB: seconds per byte read and written, its fixed cost taken out."""
        x, norm = self.tensor(1, 256, 56, 56), self.module(nn.BatchNorm2d(256).eval())
        small = self.tensor(1, 16, 4, 4)
        return max(self.per_call(partial(norm, x)) - self.per_call(partial(tiny, small)), 0.0) / (2 * x.nbytes)

    def seconds_per_pool_tap(self, op: float) -> float:
        """A 3x3 max pooling of stride 2 over 64 x 112 x 112 (a ResNet stem): seconds per output element and tap."""
        x = self.tensor(1, 64, 112, 112)
        return max(self.per_call(partial(F.max_pool2d, x, 3, 2, 1)) - op, 0.0) / (64 * 56 * 56 * 9)

    def seconds_per_special_byte(self, op: float) -> float:
        """SiLU over 1.6 MB: seconds per byte read and written by a transcendental element-wise op."""
        x = self.tensor(1, 128, 56, 56)
        return max(self.per_call(partial(F.silu, x)) - op, 0.0) / (2 * x.nbytes)

    def seconds_per_memory_byte(self, op: float, model: CostModel) -> float:
        """ReLU over 25.6 MB (below the fresh-allocation size): seconds per byte moved beyond the cache."""
        x = self.tensor(1, 512, 112, 112)
        seconds = self.per_call(partial(torch.relu, x)) - op - model.cache_bytes * model.seconds_per_byte
        return max(seconds, 0.0) / max(1, 2 * x.nbytes - model.cache_bytes)

    def seconds_per_fresh_byte(self, op: float, per_byte: float) -> float:
        """ReLU writing 64 MiB (fresh memory on each call): seconds per output byte beyond the bytes moved."""
        x = self.tensor(16 << 20)
        return max(self.per_call(partial(torch.relu, x)) - op - 2 * x.nbytes * per_byte, 0.0) / x.nbytes

    def grouped_conv_seconds(self) -> float:
        """The fixed cost of a depthwise convolution: a sequence of 16 on tiny inputs, each with its own channel
        count and weights, as a forward runs them, per convolution."""
        calls = []
        for channels in range(16, 80, 4):
            x, weight = self.tensor(1, channels, 4, 4), self.tensor(channels, 1, 3, 3)
            calls.append(partial(F.conv2d, x, weight, None, 1, 1, 1, channels))
        return self.per_call(lambda: [call() for call in calls], budget=0.05) / len(calls)

    def seconds_per_grouped_byte(self, fixed: float, unaligned: bool = False) -> float:
        """Seconds per byte read and written by a sequence of depthwise convolutions, each with its own weights and
        input, as a forward runs them: :data:`DEPTHWISE_SEQUENCE` (``unaligned``: with 3 channels more each, no
        multiple of the channel block), fixed costs taken out."""
        calls, moved = [], 0
        for channels, side, kernel, stride in DEPTHWISE_SEQUENCE:
            channels += 3 if unaligned else 0
            x, weight = self.tensor(1, channels, side, side), self.tensor(channels, 1, kernel, kernel)
            calls.append(partial(F.conv2d, x, weight, None, stride, kernel // 2, 1, channels))
            out = (side + 2 * (kernel // 2) - kernel) // stride + 1
            moved += x.nbytes + weight.nbytes + channels * out * out * x.element_size()
        seconds = self.per_call(lambda: [call() for call in calls], budget=0.05)
        return max(seconds - len(calls) * fixed, 0.0) / moved

    def context_seconds(self, model: CostModel) -> float:
        """Seconds per op that a forward of :class:`CalibrationNetwork` takes beyond ``model``'s prediction."""
        network, x = self.module(CalibrationNetwork().eval()), self.tensor(1, 3, 128, 128)
        prediction = predict_latency(network, x, model)
        return max(self.per_call(lambda: network(x)) - prediction.seconds, 0.0) / prediction.ops

    def seconds_per_mac(self, per_byte: float, conv: float, batch: int = 1) -> float:
        """Seconds per multiply-add (as the kernel runs them: the output width padded to the width block) of a
        sequence of CNN convolutions over ``batch`` images, each with its own weights and input, as a forward runs
        them (caches cold between layers): :data:`CONV_SEQUENCE`, fixed costs and bytes moved taken out."""
        block = width_block(self.device)
        calls, total_macs, fixed = [], 0, 0.0
        for c_in, c_out, side, kernel, stride in CONV_SEQUENCE:
            x, weight = self.tensor(batch, c_in, side, side), self.tensor(c_out, c_in, kernel, kernel)
            calls.append(partial(F.conv2d, x, weight, None, stride, kernel // 2))
            out = (side + 2 * (kernel // 2) - kernel) // stride + 1
            total_macs += batch * c_out * out * _padded(out, block) * c_in * kernel * kernel
            fixed += conv + (x.nbytes + weight.nbytes + batch * c_out * out * out * x.element_size()) * per_byte
        seconds = self.per_call(lambda: [call() for call in calls], budget=0.1)
        return max(seconds - fixed, 0.0) / total_macs


# (channels, input side, kernel, stride): the depthwise convolutions of MobileNet- and EfficientNet-like networks
DEPTHWISE_SEQUENCE = (
    (32, 112, 3, 1),
    (96, 112, 3, 2),
    (144, 56, 3, 1),
    (144, 56, 5, 2),
    (240, 28, 5, 1),
    (240, 28, 3, 2),
    (480, 14, 3, 1),
    (672, 14, 5, 1),
    (672, 14, 5, 2),
    (1152, 7, 5, 1),
    (960, 7, 3, 1),
)

# (in channels, out channels, input side, kernel, stride): the convolutions of a ResNet-like network, one of each
CONV_SEQUENCE = (
    (3, 64, 224, 7, 2),
    (64, 64, 56, 3, 1),
    (64, 256, 56, 1, 1),
    (256, 128, 56, 1, 1),
    (128, 128, 56, 3, 2),
    (128, 512, 28, 1, 1),
    (512, 256, 28, 1, 1),
    (256, 256, 28, 3, 2),
    (256, 1024, 14, 1, 1),
    (1024, 512, 14, 1, 1),
    (512, 512, 14, 3, 2),
    (512, 2048, 7, 1, 1),
    (2048, 512, 7, 1, 1),
    (512, 512, 7, 3, 1),
)


@dataclass(frozen=True)
class Prediction:
    """Predicted seconds of one forward, in total and by part."""

    seconds: float
    ops: int
    views: int
    module_calls: int
    bytes_moved: int
    macs: int
    by_op: dict[str, float]  # seconds per aten op name
    by_kind: dict[str, float]  # seconds per pricing rule (one of KINDS)

    @property
    def milliseconds(self) -> float:
        return 1000 * self.seconds


def predict_latency(module: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor],
                    cost_model: CostModel | None = None) -> Prediction:  # fmt: skip
    """The :class:`Prediction` of ``cost_model`` (default: :func:`load_cost_model` for the inputs' device and
    dtype) for one forward of ``module`` on ``inputs``: runs it once, seeing every dispatched aten op."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if cost_model is None:
        cost_model = load_cost_model(inputs[0].device, inputs[0].dtype)
    recorder = _OpRecorder(cost_model)
    calls = [0]

    def count_call(_module, _args):
        calls[0] += 1

    handle = nn.modules.module.register_module_forward_pre_hook(count_call)
    try:
        with torch.no_grad(), recorder:
            module(*inputs)
    finally:
        handle.remove()
    calls[0] -= 1  # the top-level call
    by_kind = dict(recorder.by_kind)
    if calls[0]:
        by_kind["module call"] = calls[0] * cost_model.module_seconds
    if recorder.ops and cost_model.context_seconds:
        by_kind["context"] = recorder.ops * cost_model.context_seconds
    return Prediction(seconds=sum(by_kind.values()), ops=recorder.ops, views=recorder.views, module_calls=calls[0],
                      bytes_moved=recorder.bytes_moved, macs=recorder.macs, by_op=dict(recorder.seconds),
                      by_kind=by_kind)  # fmt: skip


class _OpRecorder(TorchDispatchMode):
    def __init__(self, cost_model: CostModel) -> None:
        super().__init__()
        self.model = cost_model
        self.seconds: dict[str, float] = {}
        self.by_kind: dict[str, float] = {}
        self.ops = self.views = self.bytes_moved = self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if is_view(func):
            self.views += 1
            cost, kind = self.model.view_seconds, "view"
        else:
            self.ops += 1
            written = sum(t.nbytes for t in _tensors(out))
            moved = sum(t.nbytes for t in _tensors((args, kwargs))) + written
            macs = _macs(func, args, kwargs, out, self.model.channel_block, self.model.width_block)
            self.bytes_moved += moved
            self.macs += macs
            kind = op_kind(name, _groups(func, args))
            cost = _op_cost(self.model, kind, args, out, moved, macs)
            if written > self.model.fresh_bytes and not _in_place(func):
                cost += written * self.model.seconds_per_fresh_byte
        self.seconds[name] = self.seconds.get(name, 0.0) + cost
        self.by_kind[kind] = self.by_kind.get(kind, 0.0) + cost
        return out


_NORMS = {"_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm", "batch_norm"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
          "avg_pool1d", "avg_pool2d", "avg_pool3d"}  # fmt: skip
_SPECIAL = {"silu", "silu_", "sigmoid", "sigmoid_", "gelu", "tanh", "tanh_", "exp", "erf", "mish", "elu", "softplus",
            "_softmax", "softmax", "_log_softmax", "log_softmax", "log", "pow"}  # fmt: skip


KINDS = ("conv", "grouped conv", "norm", "pool", "special", "cat", "op", "view", "module call", "context")
"""The pricing rules a prediction is broken down by (:attr:`Prediction.by_kind`)."""


def op_kind(name: str, groups: int = 1) -> str:
    """The pricing rule of a non-view aten op named ``name`` (its overload packet's name, e.g. ``convolution``);
    ``groups`` of a convolution."""
    if name == "convolution":
        return "grouped conv" if groups > 1 else "conv"
    for kind, names in (("norm", _NORMS), ("pool", _POOLS), ("special", _SPECIAL), ("cat", {"cat"})):
        if name in names:
            return kind
    return "op"


def _groups(func, args) -> int:
    """The ``groups`` argument of an ``aten.convolution`` call; 1 for any other op."""
    if func.overloadpacket is torch.ops.aten.convolution and len(args) > 8:
        return args[8]
    return 1


def _op_cost(model: CostModel, kind: str, args, out, moved: int, macs: int) -> float:
    """One non-view op of pricing rule ``kind`` (:func:`op_kind`): its fixed cost, bytes and multiply-adds (a grouped
    convolution: bytes at its own rate; a pooling: its window taps)."""
    if kind == "pool":
        kernel = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        return model.op_seconds + _tensors(out)[0].numel() * math.prod(kernel) * model.seconds_per_pool_tap
    if kind == "grouped conv":
        aligned = args[1].shape[0] % model.channel_block == 0
        per_byte = model.seconds_per_grouped_byte if aligned else model.seconds_per_unaligned_grouped_byte
        return model.grouped_conv_seconds + moved * per_byte
    if kind == "conv":
        per_mac = model.seconds_per_batched_mac if args[0].shape[0] >= BATCHED else model.seconds_per_mac
        return model.conv_seconds + model.moving(moved) + macs * per_mac
    fixed = model.norm_seconds if kind == "norm" else model.op_seconds
    if kind == "cat":
        fixed += len(_tensors(args[0])) * model.input_seconds
    moving = model.moving(moved)
    if kind == "special":  # computing the function, not moving the bytes, bounds it
        moving = max(moving, moved * model.seconds_per_special_byte)
    elif kind == "norm":
        moving = max(moving, moved * model.seconds_per_norm_byte)
    return fixed + moving + macs * model.seconds_per_mac


def _in_place(func) -> bool:
    """An op that writes into one of its inputs (``relu_``, an ``out=`` variant): its output is no new buffer."""
    return _writes(func) is True


def is_view(func) -> bool:
    """Whether the aten op ``func`` returns a view of an input (``narrow``, ``view``, ``t``): dispatch, no kernel."""
    return _writes(func) is False


def _writes(func) -> bool | None:
    """Whether the first output of ``func`` aliases an input it writes (in place) or only reads (a view); ``None``
    for a fresh output."""
    returns = func._schema.returns
    if not returns or returns[0].alias_info is None:
        return None
    return returns[0].alias_info.is_write


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _macs(func, args, kwargs, out, block: int = 1, width_block: int = 1) -> int:
    """Multiply-adds of ``func`` (``torch.utils.flop_counter``'s formulas); a convolution's as its kernel runs
    them, with input and output channels padded to a multiple of ``block`` and the output's width to a multiple
    of ``width_block``."""
    formula = flop_registry.get(func.overloadpacket)
    if formula is None:
        return 0
    macs = int(formula(*args, **kwargs, out_val=out)) // 2
    if func.overloadpacket is torch.ops.aten.convolution:
        c_out, c_in = args[1].shape[:2]
        width = out.shape[-1] if out.dim() > 2 else 1
        padded = _padded(c_out, block) * _padded(c_in, block) * _padded(width, width_block)
        macs = macs * padded // (c_out * c_in * width)
    return macs


def _padded(channels: int, block: int) -> int:
    return -(-channels // block) * block


def width_block(device: torch.device) -> int:
    """The output width CPU convolution kernels block over (16 columns); 1 on a GPU."""
    return 16 if device.type == "cpu" else 1


def channel_block(device: torch.device) -> int:
    """The channel multiple convolution kernels vectorise over: 16 floats with AVX-512, 8 with AVX2 (CPU), 8 on
    a GPU (tensor-core tiles)."""
    if device.type != "cpu":
        return 8
    capability = torch.backends.cpu.get_cpu_capability()
    return 16 if "512" in capability else 8 if "AVX2" in capability else 4
