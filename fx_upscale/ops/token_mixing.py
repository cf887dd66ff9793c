"""Linear layers over an axis that is not the channel axis: token mixing.

MLP-Mixer, ResMLP and gMLP mix tokens with a linear layer applied after ``x.transpose(1, 2)``: the channels are then
on the middle axis and the layer reads the token axis (the last). Each channel is transformed on its own, so for
the channels the layer is a per-channel op without per-channel parameters: channel ``c`` of its input is channel
``c`` of its output, its weight and bias (one entry per token) are never resliced, and a zero channel stays zero
only when the bias is zero (else it becomes the bias, and is kept).

:class:`~fx_upscale.ops.weighted.WeightedHandler` finds it: a linear layer whose input carries its channels on
another axis than the last is given the role :class:`TokenMixing` (``ChannelWalk.reassign``); its weight, one row and
one column per token, is never resliced. ``mask()`` chooses
nothing there: the layer's rows are tokens, not channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.fx as fx

from .base import OpHandler, shape

if TYPE_CHECKING:
    from ..channels import ChannelWalk
    from .table import HandlerTable


@dataclass(frozen=True, kw_only=True)
class TokenMixing:
    """A linear layer (or a LayerNorm: a per-head query/key norm) reading ``data`` along its last axis, which is not
    ``data``'s channel axis."""

    data: str
    bias: str | None  # qualified name of the bias (one entry per token), if any


class TokenMixingHandler(OpHandler[TokenMixing]):
    role = TokenMixing

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: TokenMixing) -> bool:
        source = walk.layouts.get(role.data)
        if source is None or len(shape(node)) != len(shape(walk.nodes[role.data])):
            return False
        zeros = walk.zeros[role.data]
        if role.bias is not None and walk.tensor(role.bias).ne(0).any():
            zeros = (False,) * len(zeros)  # a zero channel becomes the bias
        walk.set_output(node, source, zeros)
        return True


def mixes_tokens(walk: ChannelWalk, data: str) -> bool:
    """Whether a linear layer reading ``data`` (along its last axis) reads another axis than its channel axis."""
    layout = walk.layouts.get(data)
    return layout is not None and not layout.split and layout.axis != len(shape(walk.nodes[data])) - 1


def add_routes(table: HandlerTable) -> None:
    """Add the handler; no target routes here (the linear layer's handler reassigns its node)."""
    table.add_handler(TokenMixingHandler())
