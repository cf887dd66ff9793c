"""The contract every op handler keeps, and the small values handlers share.

An :class:`OpHandler` owns one *role* (a frozen dataclass describing one recognised node: which input carries the
channels, which parameters it owns) and everything fx_upscale does with it:

- :meth:`OpHandler.recognise` turns a node the :class:`~fx_upscale.ops.table.HandlerTable` routed to it into its
  role (or an :class:`~fx_upscale.ops.structural.Unknown` saying why it cannot);
- :meth:`OpHandler.propagate` is its channel rule, written against :class:`~fx_upscale.channels.ChannelWalk`;
- :meth:`OpHandler.rewrite` says how its parameters, module attributes and node arguments change when its
  channels are removed or reordered (into an :class:`Updates`);
- :meth:`OpHandler.masking` says what ``mask()`` may choose at it (a :class:`Masking`);
- :meth:`OpHandler.invariant` checks a module it owns after pruning (attributes agree with tensor shapes).

Start reading at :class:`OpHandler`; the families are the other modules of this package.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch
import torch.fx as fx
from torch import nn
from torch.nn.parameter import UninitializedParameter

from ..plan_types import ArgUpdate, AttrUpdate, ConsumerAccess, ParamSlice

if TYPE_CHECKING:
    from ..channels import ChannelAnalysis, ChannelWalk

R = TypeVar("R")


class Carry(enum.Enum):
    """How an output-side mask travels past a node on a single-user chain after its producer."""

    STOP = "stop"  # the chain ends here
    THROUGH = "through"  # a pointwise op: the mask passes, nothing to mask here
    PER_CHANNEL = "per_channel"  # a per-channel layer: masked with the producer's rows, then the chain goes on


@dataclass(frozen=True, kw_only=True)
class Masking:
    """What ``mask()`` may do at a node of this role."""

    chooses: bool = False  # a layer mask() chooses channels of: its weight's columns (input) and rows (output);
    # mask() reads the weight's axes from the role, which must then be a ``Weighted``
    owns_free_channels: bool = False  # channels it creates may be masked (else they are pinned on the output side)
    reads_every_channel: bool = False  # its statistics read every channel: what it reads is never masked
    needs_only_nonzero: bool = False  # a reader choosing nothing that needs only non-zero channels (a sum over
    # them): other readers may still mask, on the input side, the channels it reads
    carry: Carry = Carry.STOP
    per_channel_weight: str | None = None  # with Carry.PER_CHANNEL: the weight masked with the producer's rows
    per_channel_input: str | None = None  # with Carry.PER_CHANNEL: the node whose channels it carries
    ranks_after: bool = False  # HRank ranks a producer's channels after this op (BatchNorm, activations)


@dataclass(frozen=True)
class Mismatch:
    """A module attribute that disagrees with the value its tensors imply."""

    attr: str
    actual: Any
    expected: Any


@dataclass
class Updates:
    """What a plan changes at one node, collected by :meth:`OpHandler.rewrite`."""

    slices: list[ParamSlice] = field(default_factory=list)
    attrs: list[AttrUpdate] = field(default_factory=list)
    args: list[ArgUpdate] = field(default_factory=list)

    def keep(self, name: str, axis: int, indices: tuple[int, ...], size: int, groups: int = 1) -> None:
        """Keep ``indices`` of tensor ``name`` along ``axis`` (nothing to do if that is all of it, in order)."""
        if indices != tuple(range(size)) * groups:
            self.slices.append(ParamSlice(name=name, axis=axis, indices=indices, size_before=size, groups=groups))

    def attr(self, module: str | None, attr: str, value: int | tuple[int, ...]) -> None:
        if module is not None:
            self.attrs.append(AttrUpdate(module=module, attr=attr, value=value))

    def arg(self, node: str, index: int, keyword: str, value: Any, target: Any = None) -> None:
        self.args.append(ArgUpdate(node=node, index=index, keyword=keyword, value=value, target=target))


@dataclass(frozen=True)
class RewriteContext:
    """What :meth:`OpHandler.rewrite` reads: the analysis, every node's kept channels in physical order (original
    positions), and each consumer's access."""

    analysis: ChannelAnalysis
    physical: Mapping[str, tuple[int, ...]]
    accesses: Mapping[str, ConsumerAccess]

    def size(self, name: str) -> int:
        """Channels of ``name``'s output before pruning (0 if it carries none)."""
        layout = self.analysis.layouts.get(name)
        return len(layout.ids) if layout is not None else 0


@dataclass(frozen=True)
class Context:
    """What recognition may look at beside the node: its module and how often each module is called."""

    graph_module: fx.GraphModule
    module_calls: Mapping[str, int]

    def tensor(self, qualname: str) -> torch.Tensor:
        """The parameter or buffer ``qualname`` of the graph module."""
        module_name, _, leaf = qualname.rpartition(".")
        return getattr(self.graph_module.get_submodule(module_name), leaf)


class OpHandler(Generic[R]):
    """One op family's rules. Subclasses set :attr:`role` and override what their role needs; the defaults are
    those of an op with no parameters that masking stops at."""

    role: ClassVar[type]
    reads_split_layouts: ClassVar[bool] = False  # may read channels split across two axes (a shuffle)

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Any:
        """The role of ``node`` (or an ``Unknown`` role saying why not); ``data`` is what the table holds for the
        node's target (e.g. an elementwise op's name)."""
        raise NotImplementedError(f"{type(self).__name__} recognises no node")

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: R) -> bool | None:
        """Apply the channel rule: set the node's layout and zeros, record reads. ``False``: the layouts do not
        fit this rule (the walk then makes the node a barrier)."""
        return None

    def rewrite(self, name: str, role: R, context: RewriteContext, updates: Updates) -> None:
        """Add what pruning changes at node ``name`` to ``updates``."""

    def masking(self, role: R) -> Masking:
        return Masking()

    def output_weight(self, role: R) -> str | None:
        """The parameter a spec names to prune this node's output channels, if any."""
        return None

    def creates_channels(self, role: R) -> bool:
        """Whether it makes new channels from all its input channels (conv, linear): a producer."""
        return False

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        """Attributes of ``module`` (one this handler's roles rewrite) that disagree with its tensors."""
        return []


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of ``node``, or keyword ``name``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def traced_int(value: Any) -> int | None:
    """``value`` as an int: a constant, or a node computing one (shape arithmetic such as ``x.size(1) // 2``,
    evaluated at the example inputs); ``None`` for anything else."""
    if isinstance(value, fx.Node):
        value = value.meta.get("traced_value")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def data_name(node: fx.Node) -> str | None:
    """The name of the node feeding ``node``'s first argument, if it is a node."""
    data = arg(node, 0, "input")
    return data.name if isinstance(data, fx.Node) else None


def shape(node: Any) -> tuple[int, ...]:
    """The traced shape of ``node``'s output (``()`` if it is not a node holding a tensor)."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def tensor_name(module: nn.Module, name: str, attr: str) -> str | None:
    """The qualified name ``name.attr`` of a module's tensor attribute, or ``None`` if the module has none (a
    BatchNorm without affine parameters)."""
    return f"{name}.{attr}" if getattr(module, attr, None) is not None else None


def is_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


def is_get_attr(value: Any) -> bool:
    """A ``get_attr`` node whose tensor only the one node using it reads: no other ``get_attr`` of the same tensor,
    and no module call owning it (``F.conv2d(x, self.conv.weight)`` beside ``self.conv(y)``), so its slices can be
    resliced for that node alone."""
    if not (isinstance(value, fx.Node) and value.op == "get_attr" and len(value.users) == 1):
        return False
    target = str(value.target)
    for node in value.graph.nodes:
        if node.op == "get_attr" and node is not value and str(node.target) == target:
            return False
        if node.op == "call_module" and target.startswith(f"{node.target}."):
            return False
    return True


def is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def owner_module(node: fx.Node, qualname: str) -> nn.Module | None:
    try:
        return node.graph.owning_module.get_submodule(qualname)  # type: ignore[union-attr]
    except AttributeError:
        return None


def implied_mismatches(module: nn.Module, implied: Mapping[str, int | None]) -> list[Mismatch]:
    """Attributes of ``module`` that differ from the sizes its tensors imply (``None``: nothing implied)."""
    return [
        Mismatch(attr, getattr(module, attr), size)
        for attr, size in implied.items()
        if size is not None and getattr(module, attr) != size
    ]


def axis_size(tensor: torch.Tensor | None, axis: int) -> int | None:
    """``tensor``'s size along ``axis``, or ``None`` if it has no such axis (or no data yet)."""
    if tensor is None or isinstance(tensor, UninitializedParameter) or tensor.dim() <= axis:
        return None
    return tensor.shape[axis]
