"""mask(): choose channels to prune by weight magnitude, and return them as a PruneSpec.

- ``side="input"``: each consumer (conv/linear) masks its weakest input channels (weight columns);
  ``side="output"``: each producer masks its weakest filters, with the per-channel layers (BatchNorm, depthwise
  conv) that carry those channels on, so they stay zero;
  ``"both"``: the union of the two.
- ``method="unconstrained"``: every layer chooses alone. ``method="constrained"``: all layers of one coupled group
  (a segment, from the same analysis the export uses) share one choice, scored over all of them.
- Layers that read the graph's input are not masked on their input side, and layers that write its output are not
  masked on their output side (found from the graph). A layer never loses every channel.

Start reading at :func:`mask`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from . import registry as r
from .channels import ChannelAnalysis, Read, analyse_channels
from .errors import SpecError
from .segments import find_segments
from .spec import PruneSpec
from .tracing import normalize_inputs, trace

HEURISTICS = ("l1", "l2")
SIDES = ("input", "output", "both")
METHODS = ("unconstrained", "constrained")


def mask(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    amount: float,
    heuristic: str = "l2",
    side: str = "input",
    method: str = "unconstrained",
) -> PruneSpec:
    """A PruneSpec masking ``amount`` (a fraction in [0, 1)) of each layer's or group's channels."""
    _check_choice("heuristic", heuristic, HEURISTICS)
    _check_choice("side", side, SIDES)
    _check_choice("method", method, METHODS)
    if not 0 <= amount < 1:
        raise SpecError(f"amount must be a fraction in [0, 1), not {amount!r}")
    graph_module = trace(model, normalize_inputs(example_inputs))
    analysis = analyse_channels(graph_module)
    chooser = _Chooser(graph_module, analysis, amount, heuristic)
    spec = PruneSpec()
    if side in ("input", "both"):
        spec = spec.merged(chooser.inputs(method == "constrained"))
    if side in ("output", "both"):
        spec = spec.merged(chooser.outputs(method == "constrained"))
    return spec


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{name} must be one of {choices}, not {value!r}")


class _Chooser:
    def __init__(self, gm: fx.GraphModule, analysis: ChannelAnalysis, amount: float, heuristic: str) -> None:
        self.gm, self.analysis, self.amount, self.heuristic = gm, analysis, amount, heuristic
        self.segments = find_segments(analysis)
        self.pinned = {analysis.class_of[i] for i in analysis.frozen}
        for read in analysis.reads:
            if not read.consumer:
                self.pinned |= set(analysis.classes(read.source))

    def weight(self, role: r.Weighted) -> torch.Tensor:
        module_name, _, leaf = role.weight.rpartition(".")
        return getattr(self.gm.get_submodule(module_name), leaf).detach()

    def count(self, total: int) -> int:
        return min(int(self.amount * total), total - 1)

    def norms(self, slices: torch.Tensor) -> torch.Tensor:
        """Per-row norm of a (channels, -1) tensor, as the score the heuristic adds up over layers."""
        return slices.abs().sum(dim=1) if self.heuristic == "l1" else slices.pow(2).sum(dim=1)

    # -- input side ---------------------------------------------------------------------------------------------

    def prunable_reads(self) -> list[Read]:
        reads = [read for read in self.analysis.reads if read.consumer]
        return [read for read in reads if not set(self.analysis.classes(read.source)) & self.pinned]

    def column_scores(self, read: Read) -> tuple[r.Weighted, torch.Tensor]:
        role = self.analysis.roles[read.reader]
        assert isinstance(role, r.Weighted)
        weight = self.weight(role)
        columns = weight.transpose(0, role.weight_in_axis).reshape(len(read.needed), -1)
        return role, self.norms(columns)

    def inputs(self, constrained: bool) -> PruneSpec:
        """Unconstrained: every layer not reading graph-input channels masks its weakest columns. Constrained:
        every layer reading a chosen channel masks it, including one that also reads graph-input channels (those
        are never chosen), so that all readers of a channel agree."""
        chosen: dict[str, list[int]] = {}
        reads = self.prunable_reads()
        shared = None
        if constrained:
            reads = [read for read in self.analysis.reads if read.consumer]
            reads = [read for read in reads if set(self.analysis.classes(read.source)) - self.pinned]
            shared = self._shared_choice(reads, self.column_scores)
        for read in reads:
            role, scores = self.column_scores(read)
            classes = self.analysis.classes(read.source)
            if shared is None:
                channels = _lowest(scores, self.count(len(scores)))
            else:
                channels = [p for p, c in enumerate(classes) if c in shared][: len(classes) - 1]
            repeat = self.analysis.layouts[read.source].repeat
            chosen[role.weight] = [p * repeat + k for p in channels for k in range(repeat)]
        return PruneSpec(inputs=chosen)

    def _shared_choice(self, reads: list[Read], score_fn) -> set[int]:
        """Per segment, the classes with the lowest score summed over every layer scoring them."""
        totals: dict[int, float] = {}
        for read in reads:
            _, scores = score_fn(read)
            for c, score in zip(self.analysis.classes(read.source), scores.tolist()):
                if c not in self.pinned:
                    totals[c] = totals.get(c, 0.0) + score
        chosen: set[int] = set()
        for segment in self.segments:
            classes = [c for c in segment.classes if c in totals]
            classes.sort(key=lambda c: (totals[c], c))
            chosen |= set(classes[: self.count(len(classes))])
        return chosen

    # -- output side --------------------------------------------------------------------------------------------

    def prunable_producers(self) -> list[str]:
        names = []
        for name in self.analysis.order:
            role = self.analysis.roles[name]
            if isinstance(role, r.Weighted) and name in self.analysis.layouts:
                if not set(self.analysis.classes(name)) & self.pinned:
                    names.append(name)
        return names

    def row_scores(self, name: str) -> tuple[r.Weighted, torch.Tensor]:
        role = self.analysis.roles[name]
        assert isinstance(role, r.Weighted)
        weight = self.weight(role)
        rows = weight.transpose(0, role.weight_out_axis).reshape(weight.shape[role.weight_out_axis], -1)
        if role.bias is not None:
            module_name, _, leaf = role.bias.rpartition(".")
            bias = getattr(self.gm.get_submodule(module_name), leaf).detach().reshape(-1, 1)
            rows = torch.cat([rows, bias], dim=1)
        return role, self.norms(rows)

    def outputs(self, constrained: bool) -> PruneSpec:
        rows_of: dict[str, list[int]] = {}
        producers = self.prunable_producers()
        shared = None
        if constrained:
            shared = self._shared_choice([_OwnRows(name) for name in producers], lambda p: self.row_scores(p.source))
        for name in producers:
            _, scores = self.row_scores(name)
            if shared is None:
                rows_of[name] = _lowest(scores, self.count(len(scores)))
            else:
                classes = self.analysis.classes(name)
                rows_of[name] = [p for p, c in enumerate(classes) if c in shared][: len(scores) - 1]
        chosen: dict[str, set[int]] = {}
        for name, rows in rows_of.items():
            chosen[self.analysis.roles[name].weight] = set(rows)
            for weight in self._following_per_channel(name):
                chosen.setdefault(weight, set()).update(rows)
        for weight, positions in self._masked_downstream(rows_of).items():
            chosen.setdefault(weight, set()).update(positions)
        return PruneSpec(outputs=chosen)

    def _masked_downstream(self, rows_of: dict[str, list[int]]) -> dict[str, set[int]]:
        """Per-channel layers (BatchNorm, depthwise conv) further on to mask where they carry a channel masked in
        every producer feeding it (DenseNet: a BatchNorm per reader of a ``cat``; an SE gate tied by ``mul``), so
        that its shift or bias does not revive the channel.

        A per-channel layer right after a producer (through pass-through ops) is masked with the producer's rows by
        :meth:`_following_per_channel`, whatever feeds the channel elsewhere.
        """
        masked_ids = {self.analysis.layouts[name].ids[p] for name, rows in rows_of.items() for p in rows}
        ids_of: dict[int, set[int]] = {}
        for i, c in self.analysis.class_of.items():
            ids_of.setdefault(c, set()).add(i)
        dead = {c for c, ids in ids_of.items() if ids <= masked_ids}
        found: dict[str, set[int]] = {}
        for node, role in self.analysis.roles.items():
            if isinstance(role, r.PerChannel) and role.weight and node in self.analysis.layouts:
                positions = {p for p, c in enumerate(self.analysis.classes(node)) if c in dead}
                if positions:
                    found.setdefault(role.weight, set()).update(positions)
        return found

    def _following_per_channel(self, name: str) -> list[str]:
        """Weights of the per-channel layers on the single-user chain of pass-through ops after ``name``."""
        weights, node = [], self.analysis.nodes[name]
        while len(node.users) == 1:
            node = next(iter(node.users))
            role = self.analysis.roles[node.name]
            if isinstance(role, r.PerChannel) and role.weight is not None:
                weights.append(role.weight)
            elif not isinstance(role, r.Pointwise):
                break
        return weights


class _OwnRows:
    """Lets a producer's own output be scored like a read of it (for the shared choice)."""

    def __init__(self, name: str) -> None:
        self.source = name


def _lowest(scores: torch.Tensor, count: int) -> list[int]:
    if count <= 0:
        return []
    order = sorted(range(len(scores)), key=lambda i: (scores[i].item(), i))
    return sorted(order[:count])
