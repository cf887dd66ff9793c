"""The handler table: which handler recognises a node, and which handler owns a role.

A :class:`HandlerTable` maps *targets* — module types, functions (``F.relu``, ``torch.cat``, and in the same way
``torch.ops`` overloads), tensor method names, and qualified names of wrapped functions — to a handler and the
data that handler needs for that target (an elementwise op's :class:`~fx_upscale.ops.elementwise.Operation`, a
pointwise op's ``keeps_zero``). It also maps each role type to the handler that owns it, for the channel walk, the
planner, masking and the invariants. :func:`default_handlers` is the table fx_upscale uses unless a caller passes
its own (``export(..., handlers=table)``); :meth:`HandlerTable.copy` starts one from it.

Start reading at :meth:`HandlerTable.classify`.
"""

from __future__ import annotations

import importlib
import operator
import os
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .aten import add_aten_routes
from .base import Context, OpHandler, is_hashable
from .elementwise import CONCAT_FUNCTIONS, ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS, ConcatHandler, ElementwiseHandler
from .norm import BATCHNORM_MODULES, AffineModule, LayerNormHandler, PerChannelHandler
from .pointwise import (
    POINTWISE_FUNCTIONS,
    POINTWISE_METHODS,
    POINTWISE_MODULES,
    POINTWISE_QUALNAMES,
    ZERO_TO_NONZERO_FUNCTIONS,
    ZERO_TO_NONZERO_METHODS,
    ZERO_TO_NONZERO_MODULES,
    PointwiseHandler,
)
from .shape import (
    PERMUTE_FUNCTIONS,
    PERMUTE_METHODS,
    REDUCE_FUNCTIONS,
    REDUCE_METHODS,
    FlattenHandler,
    PermuteHandler,
    ReduceHandler,
    ReshapeHandler,
)
from .split import (
    SELECTS,
    SPLIT_FUNCTIONS,
    SPLIT_METHODS,
    UNBINDS,
    SelectHandler,
    SliceHandler,
    SplitHandler,
    SplitPieceHandler,
    StridedHandler,
    UnbindHandler,
)
from .structural import (
    GetAttrHandler,
    MetadataHandler,
    OutputHandler,
    SourceHandler,
    Unknown,
    UnknownHandler,
)
from .weighted import (
    CONV_FUNCTIONS,
    CONV_MODULES,
    CONV_TRANSPOSE_FUNCTIONS,
    CONV_TRANSPOSE_MODULES,
    TRANSPOSED,
    GroupedHandler,
    WeightedHandler,
)


@dataclass(frozen=True)
class Entry:
    """What the table holds for one target: its handler and that handler's data for it."""

    handler: OpHandler[Any]
    data: Any = None


class HandlerTable:
    """Targets to handlers (for recognition) and role types to handlers (for everything after)."""

    def __init__(self, handlers: Iterable[OpHandler[Any]]) -> None:
        self._by_role: dict[type, OpHandler[Any]] = {handler.role: handler for handler in handlers}
        self._modules: dict[type, Entry] = {}
        self._functions: dict[Any, Entry] = {}
        self._methods: dict[str, Entry] = {}
        self._qualnames: dict[str, Entry] = {}
        self._module_qualnames: dict[str, Entry] = {}  # module types known by name (no optional import)
        self._registered_modules: set[type | str] = set()  # traced as leaves: types, or qualified type names

    # -- building ------------------------------------------------------------------------------------------------

    def add(self, handler_role: type, targets: Iterable[Any], data: Any = None) -> None:
        """Route ``targets`` (module types, functions or ops, method names) to the handler owning ``handler_role``."""
        entry = Entry(self._by_role[handler_role], data)
        for target in targets:
            if isinstance(target, type) and issubclass(target, nn.Module):
                self._modules[target] = entry
            elif isinstance(target, str):
                self._methods[target] = entry
            else:
                self._functions[target] = entry

    def add_qualname(self, handler_role: type, qualname: str, data: Any = None) -> None:
        """Route a function known by its qualified name (``module.function``), without importing it."""
        self._qualnames[qualname] = Entry(self._by_role[handler_role], data)

    def add_module_qualname(self, handler_role: type, qualname: str, data: Any = None, *, leaf: bool = False) -> None:
        """Route a module type known by its qualified name (``package.module.Class``), without importing it; with
        ``leaf``, symbolic tracing keeps its calls whole."""
        self._module_qualnames[qualname] = Entry(self._by_role[handler_role], data)
        if leaf:
            self._registered_modules.add(qualname)

    def add_handler(self, handler: OpHandler[Any]) -> None:
        """Make ``handler`` the owner of its role (route targets to it with :meth:`add`)."""
        self._by_role[handler.role] = handler

    def register_handler(self, handler: OpHandler[Any], targets: Iterable[Any], data: Any = None) -> None:
        """Add a full handler for a new role and route ``targets`` to it; module types among them are traced as
        leaves. Replaces any handler the table had for those targets."""
        self._by_role[handler.role] = handler
        targets = list(targets)
        self.add(handler.role, targets, data)
        self._registered_modules.update(t for t in targets if isinstance(t, type))

    def register_pointwise(self, target: Any, *, keeps_zero: bool) -> None:
        """Declare that ``target`` maps each channel of its one tensor input to the same channel of its output.

        ``target`` is an ``nn.Module`` subclass (then traced as a leaf), a function called in the graph (a
        ``torch.fx.wrap``-ed function, a ``torch.ops`` op), or a tensor method name. ``keeps_zero`` says whether
        ``f(0) == 0`` elementwise (ReLU: yes; sigmoid: no): whether a pruned channel stays prunable after it.
        """
        from .pointwise import Pointwise

        self.add(Pointwise, [target], keeps_zero)
        if isinstance(target, type):
            self._registered_modules.add(target)

    def register_per_channel(
        self, module_type: type[nn.Module], *, weight: str | None = "weight", bias: str | None = "bias",
        count_attrs: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """Declare that ``module_type`` computes ``y[:, c] = f(x[:, c]) * weight[c] + bias[c]`` along axis 1, with
        ``f(0) == 0``: its ``weight``/``bias`` attributes (either may be ``None``) hold one entry per channel along
        their first axis and are resliced with the channels; ``count_attrs`` name integer attributes set to the
        new channel count. The module is traced as a leaf."""
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise TypeError(f"register_per_channel takes an nn.Module subclass, not {module_type!r}")
        from .norm import PerChannel

        self.add(PerChannel, [module_type], AffineModule(weight, bias, tuple(count_attrs)))
        self._registered_modules.add(module_type)

    def unregister(self, target: Any) -> None:
        """Forget what was registered for ``target`` (a no-op if nothing was); built-in targets are restored."""
        for table in (self._modules, self._functions, self._methods):
            if is_hashable(target):
                table.pop(target, None)
        self._registered_modules.discard(target)
        default = _build_default()
        for name in ("_modules", "_functions", "_methods"):
            restored = getattr(default, name)
            if is_hashable(target) and target in restored:
                getattr(self, name)[target] = Entry(self._by_role[restored[target].handler.role], restored[target].data)

    def copy(self) -> HandlerTable:
        """An independent table holding the same routes (register into it without touching this one)."""
        table = HandlerTable(self._by_role.values())
        table._modules, table._functions = dict(self._modules), dict(self._functions)
        table._methods, table._qualnames = dict(self._methods), dict(self._qualnames)
        table._module_qualnames = dict(self._module_qualnames)
        table._registered_modules = set(self._registered_modules)
        return table

    # -- using ---------------------------------------------------------------------------------------------------

    def handler(self, role: object) -> OpHandler[Any]:
        """The handler owning ``role``'s type."""
        try:
            return self._by_role[type(role)]
        except KeyError:
            raise TypeError(f"no handler owns the role {type(role).__name__}; register one") from None

    def handlers(self) -> Iterator[OpHandler[Any]]:
        return iter(self._by_role.values())

    def role_types(self) -> tuple[type, ...]:
        return tuple(self._by_role)

    def is_leaf(self, module: nn.Module) -> bool:
        """Whether ``module``'s type was registered (the tracer keeps such modules whole)."""
        return type(module) in self._registered_modules or _qualname(type(module)) in self._registered_modules

    def classify(self, node: fx.Node, context: Context) -> Any:
        """The role of ``node``: an ``Unknown`` naming why when no handler maps it."""
        if node.op in _STRUCTURAL:
            return self._by_role[_STRUCTURAL[node.op]].recognise(node, context, None)
        if node.op == "call_module":
            return self._classify_module(node, context)
        if node.op == "call_method":
            entry = self._methods.get(str(node.target))
            return (
                entry.handler.recognise(node, context, entry.data)
                if entry
                else Unknown("no handler for this tensor method")
            )
        entry = self._functions.get(node.target) if is_hashable(node.target) else None
        if entry is None:
            qualname = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', '')}"
            entry = self._qualnames.get(qualname)
        if entry is None:
            return Unknown("no handler for this function")
        return entry.handler.recognise(node, context, entry.data)

    def _classify_module(self, node: fx.Node, context: Context) -> Any:
        module = context.graph_module.get_submodule(str(node.target))
        calls = context.module_calls.get(str(node.target), 0)
        if calls > 1 and (any(True for _ in module.parameters()) or any(True for _ in module.buffers())):
            return Unknown(f"module {node.target!r} holds parameters and is called {calls} times")
        reader = _other_reader(node)
        if reader is not None:
            return Unknown(f"node {reader!r} also reads the tensors of module {node.target!r} (get_attr)")
        entry = next((self._modules[t] for t in type(module).__mro__ if t in self._modules), None)
        if entry is None:
            mro_names = (_qualname(t) for t in type(module).__mro__)
            entry = next((self._module_qualnames[n] for n in mro_names if n in self._module_qualnames), None)
        if entry is None:
            return Unknown(f"no handler for module type {type(module).__name__}")
        one_input = isinstance(node.args[0] if node.args else None, fx.Node) and len(node.all_input_nodes) == 1
        if not one_input and entry.handler.role is not _metadata_role():
            return Unknown("module called with other than one tensor input")
        return entry.handler.recognise(node, context, entry.data)


def _other_reader(call: fx.Node) -> str | None:
    """A ``get_attr`` node reading a tensor of the module ``call`` calls: reslicing it for the call would change
    what that node reads."""
    prefix = f"{call.target}."
    return next((n.name for n in call.graph.nodes if n.op == "get_attr" and str(n.target).startswith(prefix)), None)


def _qualname(module_type: type) -> str:
    return f"{module_type.__module__}.{module_type.__qualname__}"


def _metadata_role() -> type:
    from .structural import Metadata

    return Metadata


def _structural_roles() -> dict[str, type]:
    from .structural import GetAttr, Output, Source

    return {"placeholder": Source, "output": Output, "get_attr": GetAttr}


_STRUCTURAL = _structural_roles()


def _build_default() -> HandlerTable:
    from .elementwise import Concat, Elementwise
    from .norm import LayerNorm, PerChannel
    from .pointwise import Pointwise
    from .shape import Flatten, Permute, Reduce
    from .split import Select, Slice, Split, Unbind
    from .structural import Metadata
    from .weighted import Weighted

    table = HandlerTable([
        SourceHandler(), GetAttrHandler(), MetadataHandler(), OutputHandler(), UnknownHandler(), WeightedHandler(),
        GroupedHandler(), PerChannelHandler(), LayerNormHandler(), PointwiseHandler(), ElementwiseHandler(),
        ConcatHandler(), SplitHandler(), SplitPieceHandler(), SliceHandler(), FlattenHandler(), ReshapeHandler(),
        PermuteHandler(), ReduceHandler(), StridedHandler(), UnbindHandler(), SelectHandler(),
    ])  # fmt: skip
    table.add(Weighted, CONV_MODULES + CONV_TRANSPOSE_MODULES + (nn.Linear,) + CONV_FUNCTIONS + (F.linear,))
    table.add(Weighted, CONV_TRANSPOSE_FUNCTIONS, TRANSPOSED)
    table.add(PerChannel, BATCHNORM_MODULES + (F.batch_norm,))
    table.add(LayerNorm, (nn.LayerNorm, F.layer_norm))
    table.add(Pointwise, [t for t in POINTWISE_MODULES if t not in ZERO_TO_NONZERO_MODULES], True)
    table.add(Pointwise, ZERO_TO_NONZERO_MODULES, False)
    table.add(Pointwise, [t for t in POINTWISE_FUNCTIONS if t not in ZERO_TO_NONZERO_FUNCTIONS], True)
    table.add(Pointwise, ZERO_TO_NONZERO_FUNCTIONS, False)
    table.add(Pointwise, [m for m in POINTWISE_METHODS if m not in ZERO_TO_NONZERO_METHODS], True)
    table.add(Pointwise, ZERO_TO_NONZERO_METHODS, False)
    for qualname in POINTWISE_QUALNAMES:
        table.add_qualname(Pointwise, qualname, True)
    for routes in (ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS):
        for target, operation in routes.items():
            table.add(Elementwise, [target], operation)
    table.add(Concat, CONCAT_FUNCTIONS)
    table.add(Flatten, (nn.Flatten, torch.flatten, "flatten", "view", "reshape", "view_as", "reshape_as"))
    table.add(Permute, PERMUTE_FUNCTIONS + PERMUTE_METHODS)
    table.add(Reduce, REDUCE_FUNCTIONS + REDUCE_METHODS)
    table.add(Split, SPLIT_FUNCTIONS + SPLIT_METHODS)
    table.add(Slice, (torch.narrow, "narrow", operator.getitem))
    table.add(Unbind, UNBINDS)
    table.add(Select, SELECTS)
    table.add(Metadata, (getattr, "size", "dim", "numel"))
    add_aten_routes(table)
    add_family_routes(table)
    return table


def add_family_routes(table: HandlerTable) -> None:
    """Let every family module of this package that defines ``add_routes(table)`` add its handler and routes, in
    module-name order: adding an op family is one module (its role, handler and routes) and its tests."""
    package = __name__.rpartition(".")[0]
    for info in sorted(pkgutil.iter_modules(_package_path()), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        add_routes = getattr(module, "add_routes", None)
        if callable(add_routes):
            add_routes(table)


def _package_path() -> list[str]:
    return [os.path.dirname(__file__)]


_DEFAULT = _build_default()


def default_handlers() -> HandlerTable:
    """The table fx_upscale uses when a caller passes none; ``register_pointwise`` and ``register_per_channel``
    (the package-level shortcuts) register into it."""
    return _DEFAULT
