"""Folding attribute-only subgraphs of an aten graph into constants, before channel analysis.

``torch.export`` records what a module computes from its buffers on every call. ``FrozenBatchNorm2d`` (torchvision's
norm of pretrained detection backbones) computes ``scale = w * (rv + eps).rsqrt()`` and ``shift = b - rm * scale``
from four buffers, then ``x * scale + shift``: in the aten graph a chain of ``reshape``, ``add``, ``rsqrt``, ``mul``
and ``sub`` whose inputs are all ``get_attr`` nodes. No channel rule maps ``rsqrt`` of a buffer, so without folding
every channel crossing such a chain is frozen. (That exact chain, FrozenBatchNorm2d's, is recomposed into
``batch_norm`` first by :mod:`fx_upscale.recompose`, so that a spec can name its buffers; folding serves every other
such chain, a norm written differently, say.) ``symbolic_trace`` never sees these chains: it evaluates what a
module computes from plain tensors (buffers) while tracing and records the results as constants.

:func:`fold_constant_subgraphs` does the same for an aten graph: each node computed from buffers and literals only
(:func:`constant_nodes`) whose result feeds an elementwise op (``add``, ``sub``, ``mul``, ``div``) with the
activation is evaluated once and replaced by a ``get_attr`` of a new buffer holding its value. The elementwise
handler then ties that buffer to the channels it scales or shifts, and the reorder pass reslices it with them
(as it does for ``x * self.gamma``).

What is never folded:

- a chain reading an ``nn.Parameter``: the exported module keeps its parameters (trainable, counted, named by
  specs) as the model had them;
- a tensor any other op reads (a conv or linear weight computed from buffers, a norm's statistics): the handlers of
  those ops read their tensors from ``get_attr`` nodes of the model's own attributes;
- random or in-place ops, buffers an in-place op of the graph writes to, and results that are not tensors.

Start reading at :func:`fold_constant_subgraphs`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

FOLDED_SOURCES = "fx_upscale.folded_sources"  # the GraphModule.meta key of the buffers folded away
FOLDED_PREFIX = "folded_"  # the name of a folded buffer: this prefix, then the name of the node it replaces

aten = torch.ops.aten
ELEMENTWISE_TARGETS = frozenset({
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor,
    aten.add_.Tensor, aten.sub_.Tensor, aten.mul_.Tensor, aten.div_.Tensor,
})  # fmt: skip


def fold_constant_subgraphs(gm: fx.GraphModule) -> list[str]:
    """Replace each attribute-only result that feeds an elementwise op with the activation by a new buffer (in
    place); remove the nodes and the buffers nothing reads any more. Returns the new buffers' qualified names."""
    constants = constant_nodes(gm)
    folded = [node for node in gm.graph.nodes if _is_foldable(node, constants)]
    if not folded:
        return []
    values = _evaluate(gm, constants)
    names = []
    for node in folded:
        name = _register_buffer(gm, node, values[node])
        with gm.graph.inserting_before(node):
            attr = gm.graph.get_attr(name)
        attr.meta.update({key: node.meta[key] for key in ("val", "tensor_meta") if key in node.meta})
        node.replace_all_uses_with(attr, delete_user_cb=lambda user: user not in constants)
        names.append(name)
    read_before = {str(node.target) for node in constants if node.op == "get_attr"}
    gm.graph.eliminate_dead_code()
    deleted = _delete_unread_buffers(gm, read_before)
    gm.meta[FOLDED_SOURCES] = frozenset(gm.meta.get(FOLDED_SOURCES, frozenset()) | deleted)
    gm.graph.lint()
    gm.recompile()
    return names


def constant_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value is fixed by the graph module's buffers and the graph's literals: ``get_attr`` of a
    buffer no op of the graph writes to, and aten ops that are neither random nor in place whose inputs are all
    such nodes (views included: a folded value is a copy)."""
    written = _written_buffers(gm)
    buffers = {name for name, _ in gm.named_buffers()} - written
    constants: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            if str(node.target) in buffers:
                constants.add(node)
        elif node.op == "call_function" and _is_pure(node.target):
            if all(source in constants for source in node.all_input_nodes):
                constants.add(node)
    return constants


def _written_buffers(gm: fx.GraphModule) -> set[str]:
    """Attributes some in-place op of the graph may write to (a running statistic updated in the graph)."""
    written: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if node.target._schema.is_mutable:
                written.update(str(n.target) for n in node.all_input_nodes if n.op == "get_attr")
    return written


def _is_pure(target: object) -> bool:
    if not isinstance(target, torch._ops.OpOverload):
        return False
    return not (target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags)


def _is_foldable(node: fx.Node, constants: set[fx.Node]) -> bool:
    """A computed constant whose users beside other constants are all elementwise ops that also read a value
    that is not constant (the activation)."""
    if node not in constants or node.op != "call_function":
        return False
    outside = [user for user in node.users if user not in constants]
    return bool(outside) and all(
        user.op == "call_function"
        and user.target in ELEMENTWISE_TARGETS
        and any(source not in constants for source in user.all_input_nodes)
        for user in outside
    )


def _evaluate(gm: fx.GraphModule, constants: set[fx.Node]) -> dict[fx.Node, Any]:
    """The value of every constant node (in graph order, without running the rest of the graph)."""
    values: dict[fx.Node, Any] = {}
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node not in constants:
                continue
            if node.op == "get_attr":
                values[node] = gm.get_buffer(str(node.target))
                continue
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
            assert callable(node.target)  # a call_function node's target (constant_nodes keeps only those)
            values[node] = node.target(*args, **kwargs)
    return values


def _register_buffer(gm: fx.GraphModule, node: fx.Node, value: Any) -> str:
    """Register ``value`` as a buffer of the deepest module owning every attribute it was computed from; return
    its qualified name."""
    assert isinstance(value, torch.Tensor)  # only tensors' producers are foldable (elementwise operands)
    owner = _common_owner(node)
    module = gm.get_submodule(owner)
    attr = f"{FOLDED_PREFIX}{node.name}"
    while hasattr(module, attr):
        attr += "_"
    module.register_buffer(attr, value.detach().clone().contiguous())
    return f"{owner}.{attr}" if owner else attr


def _common_owner(node: fx.Node) -> str:
    """The longest module path that owns every ``get_attr`` ``node`` was computed from."""
    owners, stack, seen = [], [node], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "get_attr":
            owners.append(str(current.target).rpartition(".")[0].split(".") if "." in str(current.target) else [])
        stack.extend(current.all_input_nodes)
    common: list[str] = []
    for parts in zip(*owners) if owners else ():
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common)


def _delete_unread_buffers(gm: fx.GraphModule, candidates: set[str]) -> set[str]:
    """Delete the buffers among ``candidates`` that no ``get_attr`` reads any more (folded away); return their
    names."""
    read = {str(node.target) for node in gm.graph.nodes if node.op == "get_attr"}
    deleted = set()
    for name in sorted(candidates - read):
        owner, _, attr = name.rpartition(".")
        module: nn.Module = gm.get_submodule(owner)
        if attr in module._buffers:
            del module._buffers[attr]
            deleted.add(name)
    return deleted


def folded_sources(gm: fx.GraphModule) -> frozenset[str]:
    """The buffers :func:`fold_constant_subgraphs` folded into constants of ``gm`` (a norm's affine buffers and
    statistics, written otherwise than FrozenBatchNorm2d, whose arithmetic :mod:`fx_upscale.recompose` turns into
    ``batch_norm`` first): what a spec named in them is in the folded values."""
    return frozenset(gm.meta.get(FOLDED_SOURCES, frozenset()))
