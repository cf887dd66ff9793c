"""Random DAG models and random prune specs for the property-based tests (``test_random_models.py``).

A *program* is plain data (so that hypothesis can shrink it): the input shape, a list of ops each naming earlier
values by index, and a head. :class:`RandomNet` turns a program into an ``nn.Module`` whose ``forward`` is a loop
over the ops (``torch.fx.symbolic_trace`` unrolls it). Values are 4-D ``(N, C, H, W)`` tensors with one spatial
size throughout (every op keeps H and W), so any two values of the same channel count can be added.

Ops (``Op.kind``):

- ``conv``    Conv2d(c, out, k in {1, 3}, padding=k//2, groups=1, bias or not)
- ``dw``      depthwise Conv2d(c, c, 3, padding=1, groups=c, bias or not)
- ``bn``      BatchNorm2d(c) with randomized running statistics and affine parameters, called as a module or
              through ``F.batch_norm`` on its tensors (how Dynamo's graphs hold BatchNorm)
- ``act``     ReLU / SiLU / Sigmoid / Hardswish, as a module or as a function
- ``pool``    MaxPool2d / AvgPool2d (3, stride 1, padding 1), keeping the shape
- ``add``     a + b of two values with the same channel count (now and then a + a)
- ``se``      v * sigmoid(conv1x1(v.mean((2, 3), keepdim=True)))   (``hidden``: conv1x1 -> relu -> conv1x1)
- ``cat``     torch.cat of 2-3 values on the channel axis (now and then one value twice)
- ``gconv``   grouped Conv2d(c, out, k, groups=g) with 1 < g dividing c and out (g = c: a channel multiplier)
- ``chunk``   one piece of v.chunk(n, 1);  ``split``: one piece of torch.split(v, [a, c - a], 1)
- ``slice``   v[:, a:b] or torch.narrow(v, 1, a, b - a)
- ``shuffle`` channel shuffle: view(b, g, c // g, h, w) -> transpose(1, 2) -> view(b, -1, h, w)
- ``ln``      LayerNorm over channels: permute to channels-last, nn.LayerNorm(c), permute back

Values that no op reads are concatenated (channel axis) before the head, so that every op is live. Heads:
``gap`` (AdaptiveAvgPool2d(1), flatten, Linear), ``mean`` (mean over H, W, Linear), ``flatten`` (flatten, Linear).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from support import randomize_batchnorm
from torch import nn

import fx_upscale

KINDS = ("conv", "dw", "bn", "act", "pool", "add", "se", "cat", "gconv", "chunk", "split", "slice", "shuffle", "ln")
ACTS = ("relu", "silu", "sigmoid", "hardswish")
HEADS = ("gap", "mean", "flatten")
MODES = ("baseline", "upscale", "constrained")
MAX_CAT_CHANNELS = 24

_ACT_MODULES = {"relu": nn.ReLU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "hardswish": nn.Hardswish}
_ACT_FUNCTIONS = {"relu": torch.relu, "silu": F.silu, "sigmoid": torch.sigmoid, "hardswish": F.hardswish}


@dataclass(frozen=True)
class Op:
    kind: str
    srcs: tuple[int, ...]  # indices of earlier values (0 is the graph input)
    out: int = 0  # conv: output channels; se: hidden channels (0: a single conv1x1)
    k: int = 1  # conv kernel size
    bias: bool = True  # conv / dw / se convs
    variant: str = ""  # act: its name; pool: "max" | "avg"
    functional: bool = False  # act, bn: a function call instead of a module call; slice: torch.narrow
    groups: int = 1  # gconv: groups; chunk: pieces; shuffle: groups
    piece: int = 0  # chunk / split: which piece
    span: tuple[int, int] = (0, 0)  # split: (first size, width); slice: (start, stop)

    def source(self, i: int) -> str:
        """One line of Python for value ``v{i}`` (for reports)."""
        a = [f"v{s}" for s in self.srcs]
        m = f"self.m{i}"
        if self.kind == "bn" and self.functional:
            tensors = ", ".join(f"{m}.{t}" for t in ("running_mean", "running_var", "weight", "bias"))
            return f"v{i} = F.batch_norm({a[0]}, {tensors}, False, 0.0, {m}.eps)"
        if self.kind in ("conv", "dw", "bn") or self.kind == "pool" or (self.kind == "act" and not self.functional):
            return f"v{i} = {m}({a[0]})"
        if self.kind == "act":
            return f"v{i} = {_ACT_FUNCTIONS[self.variant].__module__}.{_ACT_FUNCTIONS[self.variant].__name__}({a[0]})"
        if self.kind == "add":
            return f"v{i} = {a[0]} + {a[1]}"
        if self.kind == "cat":
            return f"v{i} = torch.cat([{', '.join(a)}], 1)"
        if self.kind == "gconv":
            return f"v{i} = {m}({a[0]})  # groups={self.groups}"
        if self.kind == "chunk":
            return f"v{i} = {a[0]}.chunk({self.groups}, 1)[{self.piece}]"
        if self.kind == "split":
            return f"v{i} = torch.split({a[0]}, [{self.span[0]}, {self.span[1] - self.span[0]}], 1)[{self.piece}]"
        if self.kind == "slice" and self.functional:
            return f"v{i} = torch.narrow({a[0]}, 1, {self.span[0]}, {self.span[1] - self.span[0]})"
        if self.kind == "slice":
            return f"v{i} = {a[0]}[:, {self.span[0]}:{self.span[1]}]"
        if self.kind == "shuffle":
            return f"v{i} = shuffle({a[0]}, {self.groups})"
        if self.kind == "ln":
            return f"v{i} = {m}({a[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"
        if self.kind == "se":
            inner = f"{m}_a({a[0]}.mean((2, 3), keepdim=True))"
            if self.out:
                inner = f"{m}_b(torch.relu({inner}))"
            return f"v{i} = {a[0]} * torch.sigmoid({inner})"
        raise AssertionError(self.kind)


@dataclass(frozen=True)
class Program:
    channels: int  # input channels
    size: int  # H = W
    ops: tuple[Op, ...]
    head: str
    classes: int  # Linear output features
    seed: int  # weights, BatchNorm statistics and the example input

    def widths(self) -> list[int]:
        """Channel count of every value (0: the input)."""
        widths = [self.channels]
        for op in self.ops:
            widths.append(_width(op, widths))
        return widths

    def dangling(self) -> list[int]:
        """Values no op reads, concatenated before the head (the last value always among them)."""
        read = {s for op in self.ops for s in op.srcs}
        values = range(len(self.ops) + 1)
        found = [v for v in values if v not in read and v != 0]
        return found or [len(self.ops)]

    def source(self) -> str:
        """The forward pass as Python (for reports and regression tests)."""
        lines = ["def forward(self, v0):"]
        lines += [f"    {op.source(i)}" for i, op in enumerate(self.ops, 1)]
        dangling = self.dangling()
        h = f"torch.cat([{', '.join(f'v{d}' for d in dangling)}], 1)" if len(dangling) > 1 else f"v{dangling[0]}"
        if self.head == "gap":
            h = f"torch.flatten(self.pool({h}), 1)"
        elif self.head == "mean":
            h = f"{h}.mean((2, 3))"
        else:
            h = f"torch.flatten({h}, 1)"
        lines.append(f"    return self.fc({h})")
        return "\n".join(lines)


def _width(op: Op, widths: list[int]) -> int:
    if op.kind in ("conv", "gconv"):
        return op.out
    if op.kind == "chunk":
        return widths[op.srcs[0]] // op.groups
    if op.kind == "split":
        return op.span[0] if op.piece == 0 else op.span[1] - op.span[0]
    if op.kind == "slice":
        return op.span[1] - op.span[0]
    if op.kind == "cat":
        return sum(widths[s] for s in op.srcs)
    return widths[op.srcs[0]]


class RandomNet(nn.Module):
    """The model of a :class:`Program`: submodule ``m{i}`` (``m{i}_a``, ``m{i}_b`` for SE) computes value ``i``."""

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.program = program
        widths = program.widths()
        torch.manual_seed(program.seed)
        for i, op in enumerate(program.ops, 1):
            c = widths[op.srcs[0]]
            name = f"m{i}"
            if op.kind == "conv":
                self.add_module(name, nn.Conv2d(c, op.out, op.k, padding=op.k // 2, bias=op.bias))
            elif op.kind == "dw":
                self.add_module(name, nn.Conv2d(c, c, 3, padding=1, groups=c, bias=op.bias))
            elif op.kind == "gconv":
                self.add_module(name, nn.Conv2d(c, op.out, op.k, padding=op.k // 2, groups=op.groups, bias=op.bias))
            elif op.kind == "ln":
                self.add_module(name, nn.LayerNorm(c))
                nn.init.normal_(getattr(self, name).weight, 1.0, 0.5)
                nn.init.normal_(getattr(self, name).bias, 0.0, 0.5)
            elif op.kind == "bn":
                self.add_module(name, nn.BatchNorm2d(c))
            elif op.kind == "act" and not op.functional:
                self.add_module(name, _ACT_MODULES[op.variant]())
            elif op.kind == "pool":
                pool = nn.MaxPool2d if op.variant == "max" else nn.AvgPool2d
                self.add_module(name, pool(3, stride=1, padding=1))
            elif op.kind == "se":
                if op.out:
                    self.add_module(f"{name}_a", nn.Conv2d(c, op.out, 1, bias=op.bias))
                    self.add_module(f"{name}_b", nn.Conv2d(op.out, c, 1, bias=op.bias))
                else:
                    self.add_module(f"{name}_a", nn.Conv2d(c, c, 1, bias=op.bias))
        features = sum(widths[d] for d in program.dangling())
        if program.head == "gap":
            self.pool = nn.AdaptiveAvgPool2d(1)
        elif program.head == "flatten":
            features *= program.size * program.size
        self.fc = nn.Linear(features, program.classes)
        randomize_batchnorm(self, seed=program.seed + 1)
        self.double().eval()

    def extra_repr(self) -> str:
        return repr(self.program)

    def forward(self, x):
        values = [x]
        for i, op in enumerate(self.program.ops, 1):
            args = [values[s] for s in op.srcs]
            if op.kind == "act" and op.functional:
                out = _ACT_FUNCTIONS[op.variant](args[0])
            elif op.kind == "bn" and op.functional:
                bn = getattr(self, f"m{i}")
                out = F.batch_norm(args[0], bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            elif op.kind == "add":
                out = args[0] + args[1]
            elif op.kind == "cat":
                out = torch.cat(args, 1)
            elif op.kind in ("chunk", "split", "slice", "shuffle", "ln"):
                out = self._reshuffle(i, op, args[0])
            elif op.kind == "se":
                gate = getattr(self, f"m{i}_a")(args[0].mean((2, 3), keepdim=True))
                if op.out:
                    gate = getattr(self, f"m{i}_b")(torch.relu(gate))
                out = args[0] * torch.sigmoid(gate)
            else:
                out = getattr(self, f"m{i}")(args[0])
            values.append(out)
        dangling = self.program.dangling()
        h = torch.cat([values[d] for d in dangling], 1) if len(dangling) > 1 else values[dangling[0]]
        if self.program.head == "gap":
            h = torch.flatten(self.pool(h), 1)
        elif self.program.head == "mean":
            h = h.mean((2, 3))
        else:
            h = torch.flatten(h, 1)
        return self.fc(h)

    def _reshuffle(self, i: int, op: Op, v):
        """The ops that cut, move or normalize the channel axis."""
        if op.kind == "chunk":
            return v.chunk(op.groups, 1)[op.piece]
        if op.kind == "split":
            return torch.split(v, [op.span[0], op.span[1] - op.span[0]], 1)[op.piece]
        if op.kind == "slice":
            start, stop = op.span
            return torch.narrow(v, 1, start, stop - start) if op.functional else v[:, start:stop]
        if op.kind == "shuffle":
            return shuffle(v, op.groups)
        return getattr(self, f"m{i}")(v.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def shuffle(v, groups: int):
    """ShuffleNet's channel shuffle."""
    b, c, h, w = v.size()
    return v.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


def example_input(program: Program, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(program.seed + 2)
    shape = (batch, program.channels, program.size, program.size)
    return torch.randn(shape, dtype=torch.float64, generator=generator)


# ------------------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Relative weights of the op kinds, and the number of ops."""

    max_ops: int = 8
    weights: dict[str, int] = field(
        default_factory=lambda: {"conv": 4, "dw": 2, "bn": 2, "act": 2, "pool": 1, "add": 2, "se": 1, "cat": 2}
    )


PROFILES = {
    "mixed": Profile(),
    "structured": Profile(
        max_ops=9,
        weights={
            "conv": 3,
            "dw": 1,
            "bn": 1,
            "act": 1,
            "add": 2,
            "cat": 2,
            "gconv": 3,
            "chunk": 2,
            "split": 2,
            "slice": 2,
            "shuffle": 2,
            "ln": 1,
        },
    ),  # fmt: skip
    "branchy": Profile(
        max_ops=10, weights={"conv": 4, "dw": 1, "bn": 1, "act": 1, "pool": 1, "add": 3, "se": 1, "cat": 4}
    ),
    "per_channel": Profile(
        max_ops=8, weights={"conv": 3, "dw": 3, "bn": 3, "act": 2, "pool": 1, "add": 2, "se": 2, "cat": 1}
    ),
}


# Long runs (FX_UPSCALE_LONG_FUZZ) also draw larger graphs.
LONG_PROFILES = PROFILES | {
    "large": Profile(
        max_ops=16,
        weights={
            "conv": 4,
            "dw": 2,
            "bn": 2,
            "act": 2,
            "pool": 1,
            "add": 3,
            "se": 2,
            "cat": 3,
            "gconv": 1,
            "chunk": 1,
            "split": 1,
            "slice": 1,
            "shuffle": 1,
            "ln": 1,
        },
    ),  # fmt: skip
}


def _recent(draw, n: int) -> int:
    """An index of an earlier value, shrinking towards the most recent one."""
    return n - 1 - draw(st.integers(0, n - 1))


@st.composite
def programs(draw, profile: Profile = PROFILES["mixed"]) -> Program:
    channels = draw(st.integers(2, 4))
    size = draw(st.integers(3, 6))
    widths = [channels]
    ops = []
    # the first op is a conv reading the input most of the time (shrinks to it)
    for _ in range(draw(st.integers(1, profile.max_ops))):
        n = len(widths)
        kinds = [k for k in KINDS if _applicable(k, widths)]
        # a weighted choice that shrinks towards "conv"
        pool = [k for k in kinds for _ in range(profile.weights.get(k, 0))]
        kind = draw(st.sampled_from(pool))
        if kind == "conv":
            op = Op("conv", (_recent(draw, n),), draw(st.integers(2, 12)), draw(st.sampled_from((1, 3))),
                    draw(st.booleans()))  # fmt: skip
        elif kind == "dw":
            op = Op(kind, (_recent(draw, n),), bias=draw(st.booleans()))
        elif kind == "bn":
            op = Op(kind, (_recent(draw, n),), functional=draw(st.booleans()))
        elif kind == "act":
            op = Op("act", (_recent(draw, n),), variant=draw(st.sampled_from(ACTS)), functional=draw(st.booleans()))
        elif kind == "pool":
            op = Op("pool", (_recent(draw, n),), variant=draw(st.sampled_from(("max", "avg"))))
        elif kind == "se":
            src = _recent(draw, n)
            hidden = draw(st.sampled_from((0, 0, 2, 3, 4)))
            op = Op("se", (src,), hidden, bias=draw(st.booleans()))
        elif kind == "add":
            a = _recent(draw, n)
            partners = [j for j in range(n) if j != a and widths[j] == widths[a]]
            if not partners:
                a, partners = _add_pair(widths)
            if draw(st.integers(0, 9)) == 9:  # now and then a value added to itself
                partners = [a]
            op = Op("add", (a, draw(st.sampled_from(partners[::-1]))))
        elif kind in STRUCTURED:
            wide = [j for j in range(n) if widths[j] >= 2]
            op = STRUCTURED[kind](draw, wide[len(wide) - 1 - draw(st.integers(0, len(wide) - 1))], widths)
        else:  # cat
            count = draw(st.integers(2, 3))
            srcs = []
            for _ in range(count):
                duplicate = draw(st.integers(0, 9)) == 9  # now and then a value concatenated twice
                candidates = [j for j in range(n) if duplicate or j not in srcs]
                if not candidates:
                    break
                j = candidates[len(candidates) - 1 - draw(st.integers(0, len(candidates) - 1))]
                if sum(widths[s] for s in srcs) + widths[j] <= MAX_CAT_CHANNELS:
                    srcs.append(j)
            if len(srcs) < 2:  # too wide: fall back on a conv
                op = Op("conv", (n - 1,), draw(st.integers(2, 12)), 1, True)
            else:
                op = Op("cat", tuple(srcs))
        ops.append(op)
        widths.append(_width(op, widths))
    head = draw(st.sampled_from(HEADS))
    classes = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**16))
    return Program(channels, size, tuple(ops), head, classes, seed)


def _divisors(c: int) -> list[int]:
    return [g for g in range(2, c + 1) if c % g == 0]


def _gconv(draw, src: int, widths: list[int]) -> Op:
    c = widths[src]
    groups = draw(st.sampled_from(_divisors(c)))
    per_group = draw(st.integers(2, 3)) if groups == c else draw(st.integers(1, 3))  # groups == c: a multiplier
    return Op("gconv", (src,), groups * per_group, draw(st.sampled_from((1, 3))), draw(st.booleans()), groups=groups)


def _chunk(draw, src: int, widths: list[int]) -> Op:
    pieces = draw(st.sampled_from(_divisors(widths[src])))
    return Op("chunk", (src,), groups=pieces, piece=draw(st.integers(0, pieces - 1)))


def _split(draw, src: int, widths: list[int]) -> Op:
    c = widths[src]
    return Op("split", (src,), piece=draw(st.integers(0, 1)), span=(draw(st.integers(1, c - 1)), c))


def _slice(draw, src: int, widths: list[int]) -> Op:
    c = widths[src]
    start = draw(st.integers(0, c - 1))
    return Op("slice", (src,), functional=draw(st.booleans()), span=(start, draw(st.integers(start + 1, c))))


def _shuffle(draw, src: int, widths: list[int]) -> Op:
    return Op("shuffle", (src,), groups=draw(st.sampled_from(_divisors(widths[src]))))


STRUCTURED = {
    "gconv": _gconv, "chunk": _chunk, "split": _split, "slice": _slice, "shuffle": _shuffle,
    "ln": lambda draw, src, widths: Op("ln", (src,)),
}  # fmt: skip


def _applicable(kind: str, widths: list[int]) -> bool:
    if kind in ("gconv", "chunk", "split", "slice", "shuffle"):
        return max(widths) >= 2
    if kind == "add":
        return _add_pair(widths) is not None
    if kind == "cat":
        return len(widths) >= 2 and sorted(widths)[0] + sorted(widths)[1] <= MAX_CAT_CHANNELS
    return True


def _add_pair(widths: list[int]):
    for a in range(len(widths) - 1, -1, -1):
        partners = [j for j in range(len(widths)) if j != a and widths[j] == widths[a]]
        if partners:
            return a, partners
    return None


# ------------------------------------------------------------------------------------------------------------
# Random specs
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecRecipe:
    kind: str  # "random": seeded random channels; "mask": fx_upscale.mask by magnitude; "both": their union;
    # "cmask": fx_upscale.mask(method="constrained"), which mode "constrained" exports with no extra channel dropped
    side: str  # "input" | "output" | "both"
    amount: float  # upper bound of the fraction masked per layer
    seed: int
    aligned: bool  # Linear input columns masked a whole channel (all its flattened features) at a time


spec_recipes = st.builds(
    SpecRecipe,
    kind=st.sampled_from(("random", "random", "random", "mask", "both", "cmask")),
    side=st.sampled_from(("both", "input", "output")),
    amount=st.sampled_from((0.5, 0.3, 0.75)),
    seed=st.integers(0, 2**16),
    aligned=st.booleans(),
)


def reads_input(program: Program) -> list[bool]:
    """Per value: whether it carries channels of the graph input (through channel-preserving ops)."""
    touches = [True]
    for op in program.ops:
        touches.append(op.kind not in ("conv", "gconv") and any(touches[s] for s in op.srcs))
    return touches


def weighted_layers(program: Program) -> list[tuple[str, str, int, int, bool]]:
    """(weight name, kind, input channels, output channels, reads the input) of every conv/linear/per-channel
    layer; kind "weighted" (groups=1 conv, linear), "dw" or "bn" (per-channel: output side only)."""
    widths, touches = program.widths(), reads_input(program)
    layers = []
    for i, op in enumerate(program.ops, 1):
        c, t = widths[op.srcs[0]], touches[op.srcs[0]]
        if op.kind == "conv":
            layers.append((f"m{i}.weight", "weighted", c, op.out, t))
        elif op.kind == "gconv":  # input columns: its weight's axis 1, one column per group
            layers.append((f"m{i}.weight", "weighted", c // op.groups, op.out, t))
        elif op.kind in ("dw", "bn", "ln"):
            layers.append((f"m{i}.weight", op.kind, 0, c, t))
        elif op.kind == "se":
            hidden = op.out or c
            layers.append((f"m{i}_a.weight", "weighted", c, hidden, t))
            if op.out:
                layers.append((f"m{i}_b.weight", "weighted", hidden, c, False))
    return layers


def random_spec(model: RandomNet, recipe: SpecRecipe) -> fx_upscale.PruneSpec:
    """A seeded random spec: per layer a random number (up to ``amount`` of its channels, never all) of random
    input columns / filters; never the input columns of a layer reading the graph input, never the filters of the
    head (the layer writing the output). Per-channel layers (BatchNorm, depthwise conv) on the output side."""
    program = model.program
    rng = random.Random(recipe.seed)
    inputs: dict[str, list[int]] = {}
    outputs: dict[str, list[int]] = {}

    def pick(n: int) -> list[int]:
        most = min(int(round(recipe.amount * n)), n - 1)
        count = rng.randint(0 if rng.random() < 0.2 else min(1, most), most)
        return rng.sample(range(n), count)

    for name, kind, n_in, n_out, touches in weighted_layers(program):
        if recipe.side in ("input", "both") and kind == "weighted" and not touches and n_in > 1:
            inputs[name] = pick(n_in)
        if recipe.side in ("output", "both"):
            outputs[name] = pick(n_out)
    head_touches = any(reads_input(program)[d] for d in program.dangling())
    if recipe.side in ("input", "both") and not head_touches:
        features = model.fc.in_features
        if recipe.aligned and program.head == "flatten":
            per = program.size * program.size
            channels = pick(features // per)
            inputs["fc.weight"] = [c * per + k for c in channels for k in range(per)]
        else:
            inputs["fc.weight"] = pick(features)
    return fx_upscale.PruneSpec(inputs, outputs)


def make_spec(model: RandomNet, x: torch.Tensor, recipe: SpecRecipe) -> fx_upscale.PruneSpec:
    spec = fx_upscale.PruneSpec()
    if recipe.kind in ("random", "both"):
        spec = spec.merged(random_spec(model, recipe))
    if recipe.kind == "cmask":
        return fx_upscale.mask(model, x, amount=recipe.amount, side=recipe.side, method="constrained")
    if recipe.kind in ("mask", "both"):
        spec = spec.merged(fx_upscale.mask(model, x, amount=recipe.amount * 0.7, side=recipe.side))
    return _keep_one(model, spec)


def _keep_one(model: nn.Module, spec: fx_upscale.PruneSpec) -> fx_upscale.PruneSpec:
    """``spec`` with, where a union masks every channel of a weight, its highest channel kept."""
    params = dict(model.named_parameters())
    fixed = []
    for side, mapping in ((1, spec.inputs), (0, spec.outputs)):
        fixed.append({})
        for name, channels in mapping.items():
            n = params[name].shape[side if params[name].ndim > 1 else 0]
            fixed[-1][name] = sorted(channels)[:-1] if len(channels) >= n else sorted(channels)
    return fx_upscale.PruneSpec(*fixed)
