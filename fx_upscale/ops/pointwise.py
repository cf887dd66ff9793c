"""Pointwise ops: activations, pooling, dropout, identity, copies: channel ``c`` of the input becomes channel ``c``
of the output, nothing is resliced.

Whether ``f(0) == 0`` (ReLU: yes; sigmoid: no) decides whether a pruned, all-zero channel is still zero after it.
``x ** p`` with a constant exponent is pointwise too, and keeps zero when ``p > 0`` (MetaFormer's StarReLU squares);
``clamp`` with constant bounds keeps zero when they hold it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .base import Carry, Context, Masking, OpHandler, arg, data_name, is_tensor
from .structural import Unknown

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable

ZERO_TO_NONZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus)
POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
ZERO_TO_NONZERO_FUNCTIONS = (torch.sigmoid, F.sigmoid, F.hardsigmoid, F.softplus)
POINTWISE_FUNCTIONS = ZERO_TO_NONZERO_FUNCTIONS + (
    F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.hardtanh, F.silu, F.gelu, torch.tanh, F.tanh,
    F.hardswish, F.leaky_relu, F.elu, F.selu, F.celu, F.mish,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
)  # fmt: skip
ZERO_TO_NONZERO_METHODS = ("sigmoid", "sigmoid_")
POINTWISE_METHODS = ZERO_TO_NONZERO_METHODS + (
    "relu", "relu_", "tanh", "tanh_", "contiguous", "clone", "detach", "float", "double", "half", "to",
)  # fmt: skip
POWER = "power"  # the table's data for x ** p: keeps zero if the constant exponent p is positive
POWER_TARGETS = (operator.pow, torch.pow, "pow", torch.ops.aten.pow.Tensor_Scalar)
SQUARES = (torch.square, "square", torch.ops.aten.square.default)
CLAMP, CLAMP_MIN, CLAMP_MAX = "clamp", "clamp_min", "clamp_max"  # the table's data: which bounds the op takes
CLAMPS = {
    CLAMP: (torch.clamp, torch.clip, "clamp", "clamp_", "clip", "clip_", torch.ops.aten.clamp.default,
            torch.ops.aten.clamp_.default, torch.ops.aten.clip.default, torch.ops.aten.clip_.default),
    CLAMP_MIN: (torch.clamp_min, "clamp_min", "clamp_min_", torch.ops.aten.clamp_min.default,
                torch.ops.aten.clamp_min_.default),
    CLAMP_MAX: (torch.clamp_max, "clamp_max", "clamp_max_", torch.ops.aten.clamp_max.default,
                torch.ops.aten.clamp_max_.default),
}  # fmt: skip
# Wrapped (leaf) functions known by qualified name, so the table needs no optional import.
POINTWISE_QUALNAMES = ("torchvision.ops.stochastic_depth.stochastic_depth",)


@dataclass(frozen=True, kw_only=True)
class Pointwise:
    data: str
    keeps_zero: bool  # f(0) == 0, so an all-zero channel stays all-zero


class PointwiseHandler(OpHandler[Pointwise]):
    """The table's data for a pointwise target is its ``keeps_zero``."""

    role = Pointwise
    reads_split_layouts = True

    def recognise(self, node: fx.Node, context: Context, data: Any) -> Pointwise | Unknown:
        source = data_name(node)
        if node.op == "call_module":
            assert source is not None  # the table checked the module's one tensor input
            return Pointwise(data=source, keeps_zero=bool(data))
        tensor_inputs = [n for n in node.all_input_nodes if is_tensor(n)]
        if source is None or len(tensor_inputs) != 1:
            return Unknown("pointwise op with other than one tensor input")
        if data == POWER:
            exponent = arg(node, 1, "exponent")
            if not isinstance(exponent, (int, float)):
                return Unknown("power with an exponent that is not a constant")
            return Pointwise(data=source, keeps_zero=exponent > 0)
        if data in CLAMPS:
            return _clamp(node, source, data)
        return Pointwise(data=source, keeps_zero=bool(data))

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Pointwise) -> None:
        source = walk.layouts.get(role.data)
        if source is not None:
            zeros = walk.zeros[role.data] if role.keeps_zero else (False,) * len(source.ids)
            walk.set_output(node, source, zeros)

    def masking(self, role: Pointwise) -> Masking:
        return Masking(carry=Carry.THROUGH, ranks_after=True)


def _clamp(node: fx.Node, source: str, kind: str) -> Pointwise | Unknown:
    """``clamp(x, min, max)`` (or one bound): keeps zero when its constant bounds hold zero (``hardswish``'s
    ``clamp(x + 3, 0, 6)`` as ``run_decompositions()`` writes it)."""
    low = arg(node, 1, "min") if kind in (CLAMP, CLAMP_MIN) else None
    high = arg(node, 2 if kind == CLAMP else 1, "max") if kind in (CLAMP, CLAMP_MAX) else None
    if not all(bound is None or isinstance(bound, (int, float)) for bound in (low, high)):
        return Unknown("clamp with bounds that are not constants")
    return Pointwise(data=source, keeps_zero=(low is None or low <= 0) and (high is None or high >= 0))


def add_routes(table: HandlerTable) -> None:
    """Powers, squares and clamps, in both IRs (the other pointwise routes are in the table's defaults and
    ``aten.py``)."""
    table.add(Pointwise, POWER_TARGETS, POWER)
    table.add(Pointwise, SQUARES, True)
    for kind, targets in CLAMPS.items():
        table.add(Pointwise, targets, kind)
