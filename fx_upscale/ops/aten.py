"""The aten-level IR (``torch.export``'s graphs, as ``ExportedProgram.module()`` gives them) routed to the same
handlers as the torch-level graph of ``symbolic_trace``.

One table of overloads per handler: ``aten.conv2d.default`` goes where ``F.conv2d`` goes, ``aten.relu_.default``
where ``F.relu_`` goes. Where an overload's arguments sit elsewhere than the torch-level function's
(``aten.batch_norm`` orders its tensors differently from ``F.batch_norm``; ``aten.slice.Tensor`` has an end where
``narrow`` has a length) the route carries that layout as the handler's data. ``torch.export``'s ``_guards_fn``
submodule (a shape check on the inputs) reads no channel values.

Start reading at :func:`add_aten_routes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .elementwise import Operation
from .norm import BatchNormArguments
from .weighted import LINEAR, TRANSPOSED

if TYPE_CHECKING:
    from .table import HandlerTable

aten = torch.ops.aten

CONVOLUTIONS = (
    aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
    aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding,  # padding="same" / "valid"
)  # fmt: skip
CONV_TRANSPOSES = (aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input)
BATCH_NORM = BatchNormArguments(weight=1, bias=2, running_mean=3, running_var=4, training=5)
KEEPS_ZERO = (
    aten.relu.default, aten.relu_.default, aten.gelu.default, aten.gelu_.default, aten.silu.default,
    aten.silu_.default, aten.hardswish.default, aten.hardswish_.default, aten.hardtanh.default,
    aten.hardtanh_.default, aten.leaky_relu.default, aten.leaky_relu_.default, aten.elu.default, aten.elu_.default,
    aten.mish.default, aten.mish_.default, aten.tanh.default, aten.tanh_.default, aten.dropout.default,
    aten.dropout_.default, aten.feature_dropout.default, aten.feature_dropout_.default, aten.contiguous.default,
    aten.alias.default, aten.clone.default, aten.detach.default, aten.max_pool1d.default, aten.max_pool2d.default,
    aten.max_pool3d.default, aten.avg_pool1d.default, aten.avg_pool2d.default, aten.avg_pool3d.default,
    aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool3d.default,
)  # fmt: skip
ZERO_TO_NONZERO = (aten.sigmoid.default, aten.sigmoid_.default, aten.hardsigmoid.default, aten.hardsigmoid_.default)
ELEMENTWISE = {
    aten.add.Tensor: Operation.ADD, aten.add_.Tensor: Operation.ADD, aten.sub.Tensor: Operation.SUB,
    aten.sub_.Tensor: Operation.SUB, aten.mul.Tensor: Operation.MUL, aten.mul_.Tensor: Operation.MUL,
    aten.div.Tensor: Operation.DIV, aten.div_.Tensor: Operation.DIV, aten.addcmul.default: Operation.ADDCMUL,
    aten.addcmul_.default: Operation.ADDCMUL,
}  # fmt: skip
SPLITS = {aten.chunk.default: "chunk", aten.split_with_sizes.default: "split", aten.split.Tensor: "split"}
PERMUTES = {aten.permute.default: "permute", aten.transpose.int: "transpose", aten.swapaxes.default: "swapaxes"}
REDUCES = (aten.mean.dim, aten.sum.dim_IntList, aten.amax.default)


def add_aten_routes(table: HandlerTable) -> None:
    """Route the aten overloads of ``torch.export``'s default IR to the handlers of their torch-level twins."""
    from torch.export._unlift import GuardsFn

    from .elementwise import Concat, Elementwise
    from .norm import LayerNorm, PerChannel
    from .pointwise import Pointwise
    from .shape import Flatten, Permute, Reduce
    from .split import Slice, SliceArguments, Split
    from .structural import Metadata
    from .weighted import Weighted

    table.add(Weighted, CONVOLUTIONS)
    table.add(Weighted, [aten.linear.default], LINEAR)
    table.add(Weighted, CONV_TRANSPOSES, TRANSPOSED)
    table.add(PerChannel, [aten.batch_norm.default], BATCH_NORM)
    table.add(LayerNorm, [aten.layer_norm.default])
    table.add(Pointwise, KEEPS_ZERO, True)
    table.add(Pointwise, ZERO_TO_NONZERO, False)
    for target, operation in ELEMENTWISE.items():
        table.add(Elementwise, [target], operation)
    table.add(Concat, [aten.cat.default])
    for target, kind in SPLITS.items():
        table.add(Split, [target], kind)
    table.add(Slice, [aten.narrow.default])
    table.add(Slice, [aten.slice.Tensor], SliceArguments.START_END)
    table.add(Flatten, [aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
                        aten.view_as.default, aten.reshape_as.default])  # fmt: skip
    for target, name in PERMUTES.items():
        table.add(Permute, [target], name)
    table.add(Reduce, REDUCES)
    table.add(Metadata, [GuardsFn])
