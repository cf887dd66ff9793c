"""Aten graphs put in the form the handlers know, before channel analysis: core-ATen patterns recomposed into the
ops of ``torch.export``'s default IR, and broadcasts an elementwise op makes anyway dropped.

``ExportedProgram.run_decompositions()`` lowers a graph to the core-ATen opset (what AOTAutograd and inductor passes
see): ``F.conv2d`` becomes ``aten.convolution`` (groups at another position, a ``transposed`` flag), a BatchNorm in
eval mode ``aten._native_batch_norm_legit_no_training`` (a tuple: output, then two statistics), a LayerNorm
``aten.native_layer_norm`` (a tuple), max pooling ``aten.max_pool2d_with_indices`` (a tuple: values, indices), and a
linear layer ``aten.addmm(bias, x, aten.permute(weight, [1, 0]))`` (or ``aten.mm`` without a bias).

The handlers know the default IR's ops. :func:`recompose_core_aten` rewrites each of these patterns into its
default-IR twin (``aten.conv2d``, ``aten.batch_norm``, ``aten.layer_norm``, ``aten.max_pool2d``, ``aten.linear``),
which dispatches to the same kernel, so the same channel rules apply. The decomposed activations ``x * sigmoid(x)``,
``clamp(x + 3, 0, 6) / 6`` and ``x * clamp(x + 3, 0, 6) / 6`` become ``silu``, ``hardsigmoid`` and ``hardswish``
(equal up to rounding): one node, so that a filter's output mask travels past it to the depthwise convolution and
norm after it, as in the default IR. torchvision's ``FrozenBatchNorm2d`` (``x * scale + shift`` computed from four
buffers on each call) becomes ``batch_norm`` over those buffers (equal up to rounding), a per-channel node whose
buffers a spec names. An ``expand`` read only by elementwise ops that broadcast to its shape anyway
is dropped (``F.normalize``'s ``x / norm.expand_as(x)``: the expanded norm would hold a channel axis whose size no
rule rewrites), and so is an ``as_strided`` that views its input as itself.

A pattern is rewritten only where it is exactly that: a tuple-returning op whose only read output is the first, a
linear layer's weight that is an attribute the transpose alone reads, inner nodes of an activation read by it
alone. Everything else is left as it is (an op no handler maps stays a barrier, as in the default IR).

Start reading at :func:`recompose_core_aten`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard, cast

import torch
import torch.fx as fx

from .ops.base import owner_module

aten = torch.ops.aten

CONVOLUTION = {1: aten.conv1d.default, 2: aten.conv2d.default, 3: aten.conv3d.default}
CONV_TRANSPOSE = {1: aten.conv_transpose1d.default, 2: aten.conv_transpose2d.input, 3: aten.conv_transpose3d.input}
BROADCASTING = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor)
MAX_POOL = {
    aten.max_pool2d_with_indices.default: aten.max_pool2d.default,
    aten.max_pool3d_with_indices.default: aten.max_pool3d.default,
}


def recompose_core_aten(gm: fx.GraphModule) -> int:
    """Rewrite ``gm``'s core-ATen patterns into default-IR ops, in place; return how many were rewritten."""
    count = 0
    for node in list(gm.graph.nodes):
        rewrite = REWRITES.get(node.target) if node.op == "call_function" else None
        if rewrite is not None and rewrite(gm.graph, node):
            count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return count


def _convolution(graph: fx.Graph, node: fx.Node) -> bool:
    """``convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)``."""
    x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = _padded(node.args, 9)
    spatial = _rank(weight) - 2
    if transposed:
        target = CONV_TRANSPOSE.get(spatial)
        args: tuple = (x, weight, bias, stride, padding, output_padding, groups, dilation)
    else:
        target = CONVOLUTION.get(spatial)
        args = (x, weight, bias, stride, padding, dilation, groups)
    if target is None:
        return False
    _replace(graph, node, target, args)
    return True


def _batch_norm(graph: fx.Graph, node: fx.Node) -> bool:
    """``_native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)[0]``."""
    first = _only_first_output(node)
    if first is None:
        return False
    x, weight, bias, mean, var, momentum, eps = _padded(node.args, 7)
    _replace(graph, first, aten.batch_norm.default, (x, weight, bias, mean, var, False, momentum, eps, False))
    return True


def _layer_norm(graph: fx.Graph, node: fx.Node) -> bool:
    """``native_layer_norm(x, normalized_shape, w, b, eps)[0]``."""
    first = _only_first_output(node)
    if first is None:
        return False
    x, normalized_shape, weight, bias, eps = _padded(node.args, 5)
    _replace(graph, first, aten.layer_norm.default, (x, normalized_shape, weight, bias, eps, False))
    return True


def _max_pool(graph: fx.Graph, node: fx.Node) -> bool:
    """``max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil_mode)[0]`` (and 3-D)."""
    first = _only_first_output(node)
    if first is None:
        return False
    assert isinstance(node.target, torch._ops.OpOverload)  # a MAX_POOL key (REWRITES routes only those here)
    _replace(graph, first, MAX_POOL[node.target], node.args, node.kwargs)
    return True


def _addmm(graph: fx.Graph, node: fx.Node) -> bool:
    """``addmm(b, x, permute(w, [1, 0]))`` with a 1-D bias, no scaling: ``linear(x, w, b)``."""
    bias, x, transposed = node.args[:3]
    weight = _transposed_weight(transposed)
    if weight is None or node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1 or _rank(bias) != 1:
        return False
    _replace(graph, node, aten.linear.default, (x, weight, bias))
    return True


def _mm(graph: fx.Graph, node: fx.Node) -> bool:
    """``mm(x, permute(w, [1, 0]))``: ``linear(x, w)``."""
    x, transposed = node.args[:2]
    weight = _transposed_weight(transposed)
    if weight is None:
        return False
    _replace(graph, node, aten.linear.default, (x, weight))
    return True


def _expand(graph: fx.Graph, node: fx.Node) -> bool:
    """``expand(t, sizes)`` or ``expand_as(t, other)`` that only broadcasting elementwise ops read, each beside an
    operand of the expanded shape: each op broadcasts ``t`` to the same values itself (``F.normalize``'s
    ``x / norm.expand_as(x)``), so it reads ``t``."""
    expanded = _shape(node)
    if expanded is None or not node.users:
        return False
    for user in node.users:
        others = [a for a in user.args if isinstance(a, fx.Node) and a is not node]
        if user.target not in BROADCASTING or len(user.args) != 2 or user.kwargs or len(others) != 1:
            return False
        if _shape(others[0]) != expanded:
            return False
    source = node.args[0]
    assert isinstance(source, fx.Node)  # expand's input is a tensor
    node.replace_all_uses_with(source)
    return True


def _as_strided(graph: fx.Graph, node: fx.Node) -> bool:
    """``as_strided(x, x.shape, strides)`` whose strides are ``x``'s on every axis longer than one, at ``x``'s own
    offset: a view of ``x`` as itself (``run_decompositions()`` restrides a pooled ``(N, C, 1, 1)`` mean so)."""
    args: tuple[Any, ...] = tuple(node.args)
    x, size, stride = args[:3]
    offset = args[3] if len(args) > 3 else node.kwargs.get("storage_offset")
    recorded = x.meta.get("val") if isinstance(x, fx.Node) else None
    if not isinstance(recorded, torch.Tensor) or offset not in (None, recorded.storage_offset()):
        return False
    if tuple(size) != tuple(recorded.shape):
        return False
    if any(n > 1 and a != b for n, a, b in zip(recorded.shape, stride, recorded.stride())):
        return False
    node.replace_all_uses_with(x)
    return True


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    recorded = node.meta.get("val")
    return tuple(recorded.shape) if isinstance(recorded, torch.Tensor) else None


def _frozen_batch_norm(graph: fx.Graph, node: fx.Node) -> bool:
    """``x * scale + (b - rm * scale)`` with ``scale = w * rsqrt(rv + eps)``, each of ``w``, ``b``, ``rm``, ``rv`` an
    attribute viewed as ``(1, -1, 1, ...)``: what torchvision's ``FrozenBatchNorm2d`` computes, as
    ``batch_norm(x, w, b, rm, rv, training=False, eps=eps)`` (equal up to rounding; one per-channel node whose
    buffers a spec names and the rewrite reslices)."""
    product, shift = node.args[:2]
    if not (_single_use(product, aten.mul.Tensor) and _single_use(shift, aten.sub.Tensor)):
        return False
    x, scale = product.args[:2]
    bias, scaled_mean = (_channel_attribute(shift.args[0]), shift.args[1])
    if not (_is_node(x) and _is_node(scale) and scale.target is aten.mul.Tensor and len(scale.users) == 2):
        return False
    if not _single_use(scaled_mean, aten.mul.Tensor) or scaled_mean.args[1] is not scale:
        return False
    mean, weight = _channel_attribute(scaled_mean.args[0]), _channel_attribute(scale.args[0])
    root = scale.args[1]
    if not _single_use(root, aten.rsqrt.default) or not _single_use(root.args[0], aten.add.Tensor):
        return False
    var, eps = _channel_attribute(root.args[0].args[0]), root.args[0].args[1]
    if None in (weight, bias, mean, var) or not isinstance(eps, float):
        return False
    _replace(graph, node, aten.batch_norm.default, (x, weight, bias, mean, var, False, 0.0, eps, False))
    return True


def _channel_attribute(value: object) -> fx.Node | None:
    """``a`` if ``value`` is ``a.reshape(1, -1, 1, ...)`` (or a view) of a 1-D attribute ``a``, read by it alone."""
    if not _single_use(value, aten.reshape.default, aten.view.default):
        return None
    attribute, sizes = value.args[0], list(cast(Sequence[Any], value.args[1]))
    if not _is_node(attribute) or attribute.op != "get_attr" or _rank(attribute) != 1:
        return None
    if sizes[:2] != [1, -1] or any(size != 1 for size in sizes[2:]):
        return None
    return attribute


def _is_node(value: object) -> TypeGuard[fx.Node]:
    return isinstance(value, fx.Node)


def _silu(graph: fx.Graph, node: fx.Node) -> bool:
    """``mul(x, sigmoid(x))``: ``silu(x)``."""
    args: tuple[Any, ...] = tuple(node.args)
    for x, gate in (args[:2], args[1::-1]):
        if _single_use(gate, aten.sigmoid.default) and gate.args[0] is x:
            _replace(graph, node, aten.silu.default, (x,))
            return True
    return False


def _hard_activation(graph: fx.Graph, node: fx.Node) -> bool:
    """``div(gate, 6)``: ``hardsigmoid(x)``, and ``div(mul(x, gate), 6)``: ``hardswish(x)``, where ``gate`` is
    ``clamp(x + 3, 0, 6)`` (as one clamp or two)."""
    numerator, divisor = node.args[:2]
    if divisor != 6 or not isinstance(numerator, fx.Node):
        return False
    x = _hard_gate(numerator)
    if x is not None:
        _replace(graph, node, aten.hardsigmoid.default, (x,))
        return True
    if not _single_use(numerator, aten.mul.Tensor):
        return False
    factors: tuple[Any, ...] = tuple(numerator.args)
    for x, gate in (factors[:2], factors[1::-1]):
        if isinstance(gate, fx.Node) and len(gate.users) == 1 and _hard_gate(gate) is x:
            _replace(graph, node, aten.hardswish.default, (x,))
            return True
    return False


def _hard_gate(node: fx.Node) -> fx.Node | None:
    """``x`` if ``node`` is ``clamp(x + 3, 0, 6)`` or ``clamp(clamp(x + 3, 0), None, 6)``, its inner nodes read by
    it alone."""
    bounds = []
    while node.op == "call_function" and node.target is aten.clamp.default:
        bounds.append(_padded(tuple(node.args[1:]), 2))
        inner = node.args[0]
        if not _single_use(inner, aten.clamp.default, aten.add.Tensor):
            return None
        node = inner
    if sorted(bounds, key=str) not in ([(0, 6)], [(0, None), (None, 6)]) or node.target is not aten.add.Tensor:
        return None
    x, three = node.args[:2]
    return x if three == 3 and isinstance(x, fx.Node) else None


def _single_use(value: object, *targets: object) -> TypeGuard[fx.Node]:
    return isinstance(value, fx.Node) and value.target in targets and len(value.users) == 1


def _transposed_weight(node: object) -> fx.Node | None:
    """``w`` if ``node`` is ``permute(w, [1, 0])`` or ``t(w)`` of an attribute ``w`` that nothing else reads."""
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return None
    args: tuple[Any, ...] = tuple(node.args)
    if not (node.target is aten.t.default or (node.target is aten.permute.default and list(args[1]) == [1, 0])):
        return None
    weight = node.args[0]
    if not isinstance(weight, fx.Node) or weight.op != "get_attr" or len(weight.users) != 1 or len(node.users) != 1:
        return None
    return weight


def _only_first_output(node: fx.Node) -> fx.Node | None:
    """The ``getitem(node, 0)`` that is the only read of a tuple-returning ``node`` (``None`` otherwise)."""
    users = list(node.users)
    if len(users) != 1 or users[0].target is not operator.getitem or users[0].args[1] != 0:
        return None
    return users[0]


def _replace(graph: fx.Graph, old: fx.Node, target: Callable, args: tuple, kwargs: dict | None = None) -> None:
    with graph.inserting_before(old):
        new = graph.call_function(target, tuple(args), dict(kwargs or {}))
    kept = ("val", "tensor_meta", "stack_trace", "nn_module_stack")
    new.meta.update({key: old.meta[key] for key in kept if key in old.meta})
    old.replace_all_uses_with(new)


def _rank(value: object) -> int:
    """The number of axes of a node's value: as ``torch.export`` recorded it, or the attribute's own (``-1`` when
    unknown)."""
    if not isinstance(value, fx.Node):
        return -1
    recorded = value.meta.get("val")
    if not isinstance(recorded, torch.Tensor) and value.op == "get_attr":
        owner, _, leaf = str(value.target).rpartition(".")
        recorded = getattr(owner_module(value, owner), leaf, None)
    return recorded.dim() if isinstance(recorded, torch.Tensor) else -1


def _padded(args: tuple, length: int) -> tuple:
    return tuple(args) + (None,) * (length - len(args))


REWRITES: dict[object, Callable[[fx.Graph, fx.Node], bool]] = {
    aten.convolution.default: _convolution,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.native_layer_norm.default: _layer_norm,
    aten.addmm.default: _addmm,
    aten.mm.default: _mm,
    **{target: _max_pool for target in MAX_POOL},
    aten.add.Tensor: _frozen_batch_norm,
    aten.mul.Tensor: _silu,
    aten.div.Tensor: _hard_activation,
    aten.as_strided.default: _as_strided,
    aten.expand.default: _expand,
    aten.expand_as.default: _expand,
}
