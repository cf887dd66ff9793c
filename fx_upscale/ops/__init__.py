"""Op handlers: what each op does to channels, in one place per op family.

- ``base.py``: the :class:`OpHandler` contract (recognise, propagate, rewrite, masking, invariant) and its values.
- ``table.py``: :class:`HandlerTable`, targets and roles to handlers; :func:`default_handlers`.
- the families: ``weighted.py`` (conv, linear, grouped conv), ``norm.py`` (BatchNorm, depthwise conv, registered
  per-channel modules, LayerNorm), ``pointwise.py``, ``prelu.py``, ``elementwise.py`` (add/sub/mul/div, cat),
  ``split.py`` (split, chunk, narrow, slicing, strided slicing, unbind, select), ``shape.py`` (flatten, reshape, a
  split into attention heads, permute, reductions), ``attention.py`` (scaled-dot-product attention, batched matmul,
  softmax: heads kept or removed whole),
  ``structural.py`` (graph inputs and output, attributes, shape queries, barriers); ``resize.py`` (interpolate,
  upsample), ``pad.py`` (F.pad and padding modules), ``pixel_shuffle.py`` (pixel shuffle and unshuffle),
  ``instance_norm.py``, ``group_norm.py`` (whole groups with ``GroupNormHandler(whole_groups=True)``),
  ``frozen_batch_norm.py`` (torchvision's FrozenBatchNorm2d), ``token_mixing.py`` (linear layers over tokens,
  a role the linear layer's handler reassigns), ``channel_reduction.py`` (sums, means and norms over the channel axis:
  RMS normalisation across channels, a role the reduction's handler reassigns), ``normalize.py`` (``F.normalize``);
  ``aten.py`` routes ``torch.export``'s aten overloads to the same handlers.

The channel rule (``propagate``) is written against :class:`fx_upscale.channels.ChannelWalk`. Adding an op
family is one module here holding its role, its handler and ``add_routes(table)`` (the default table calls every
such function: ``prelu.py`` is one), plus its tests; the recipe ``passes/custom_handler.py`` registers a full
handler for a custom module into a table of one's own.
"""

from __future__ import annotations

from .attention import Attention, BatchedMatmul, Softmax
from .base import (
    Carry,
    Context,
    Masking,
    Mismatch,
    OpHandler,
    RewriteContext,
    Updates,
    arg,
    axis_size,
    data_name,
    implied_mismatches,
    is_get_attr,
    shape,
)
from .channel_reduction import ChannelReduction
from .elementwise import Concat, Elementwise, Operation
from .frozen_batch_norm import FrozenBatchNorm
from .group_norm import GroupNorm
from .instance_norm import InstanceNorm
from .norm import LayerNorm, PerChannel, PerChannelKind
from .normalize import Normalize
from .pad import Pad
from .pixel_shuffle import PixelShuffle
from .pointwise import Pointwise
from .prelu import PReLU
from .resize import Resize
from .shape import Flatten, Permute, Reduce, Reshape
from .split import Select, Slice, Split, SplitPiece, Strided, Unbind
from .structural import GetAttr, Metadata, Output, Source, Unknown
from .table import HandlerTable, default_handlers
from .token_mixing import TokenMixing
from .weighted import Grouped, Weighted, producer_weights

__all__ = [
    "Attention",
    "BatchedMatmul",
    "Select",
    "Softmax",
    "Unbind",
    "Carry",
    "ChannelReduction",
    "Concat",
    "Context",
    "Elementwise",
    "Flatten",
    "FrozenBatchNorm",
    "GetAttr",
    "Grouped",
    "GroupNorm",
    "HandlerTable",
    "InstanceNorm",
    "LayerNorm",
    "Masking",
    "Metadata",
    "Mismatch",
    "Normalize",
    "OpHandler",
    "Operation",
    "Output",
    "PerChannel",
    "PerChannelKind",
    "Permute",
    "PReLU",
    "Pad",
    "PixelShuffle",
    "Pointwise",
    "Reduce",
    "Reshape",
    "Resize",
    "RewriteContext",
    "Slice",
    "Source",
    "Split",
    "SplitPiece",
    "Strided",
    "TokenMixing",
    "Unknown",
    "Updates",
    "Weighted",
    "arg",
    "axis_size",
    "data_name",
    "default_handlers",
    "implied_mismatches",
    "is_get_attr",
    "producer_weights",
    "shape",
]
