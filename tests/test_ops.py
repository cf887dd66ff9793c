"""Each op handler's rules, one parametrised test per aspect, so that a failure names the rule that broke.

Every case is a tiny float64 model (``conv -> op -> conv`` and the like) with some weights zeroed (masked), traced
with :func:`fx_upscale.trace` and analysed with :func:`~fx_upscale.channels.analyse_channels`. The aspects follow
the :class:`~fx_upscale.ops.OpHandler` contract:

- completeness: every role has a handler that overrides what the role needs, and the table routes only to
  handlers that recognise;
- recognition: the role a node gets (``analysis.roles``);
- channel rule: the node's layout (axis, ids: equal to / tied with / fresh against its inputs'), zeros and reads;
- rewrite: the parameter slices, attribute and argument updates a plan holds for the node;
- masking: what ``mask()`` may do at the node, its output weight and whether it creates channels;
- invariant: a module whose attribute disagrees with its tensor is reported, a consistent one is not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
import torchvision
from support import max_abs_diff
from torch import nn

import fx_upscale
from fx_upscale.channels import ChannelAnalysis, ChannelWalk, analyse_channels
from fx_upscale.ops import (
    Attention,
    BatchedMatmul,
    Carry,
    Concat,
    Elementwise,
    Flatten,
    GetAttr,
    Grouped,
    HandlerTable,
    LayerNorm,
    Masking,
    Metadata,
    Mismatch,
    Normalize,
    Operation,
    OpHandler,
    Output,
    PerChannel,
    PerChannelKind,
    Permute,
    Pointwise,
    PReLU,
    Reduce,
    Reshape,
    RewriteContext,
    Select,
    Slice,
    Softmax,
    Source,
    Split,
    SplitPiece,
    Unbind,
    Unknown,
    Updates,
    Weighted,
    default_handlers,
)
from fx_upscale.ops.channel_reduction import ChannelReduction
from fx_upscale.ops.frozen_batch_norm import FrozenBatchNorm
from fx_upscale.ops.group_norm import GroupNorm
from fx_upscale.ops.instance_norm import InstanceNorm
from fx_upscale.ops.pad import Pad
from fx_upscale.ops.pixel_shuffle import PixelShuffle
from fx_upscale.ops.resize import Resize
from fx_upscale.ops.split import Strided
from fx_upscale.ops.token_mixing import TokenMixing
from fx_upscale.plan_types import ArgUpdate, ChannelPlan, ParamSlice

# -- the tiny models ----------------------------------------------------------------------------------------------


class Net(nn.Module):
    """``forward(x) = body(self, x)`` over the given parts (modules, parameters; other tensors become buffers)."""

    def __init__(self, body: Callable[..., Any], **parts: Any) -> None:
        super().__init__()
        self.body = body
        for name, part in parts.items():
            if isinstance(part, (nn.Module, nn.Parameter)):
                setattr(self, name, part)
            else:
                self.register_buffer(name, part)

    def forward(self, x):
        return self.body(self, x)


class Scale(nn.Module):
    """A per-channel affine layer fx_upscale does not know until it is registered."""

    def __init__(self, channels: int, masked: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.channels = channels
        self.gain = nn.Parameter(torch.rand(channels) + 0.5)
        self.shift = nn.Parameter(torch.zeros(channels))
        with torch.no_grad():
            self.gain[list(masked)] = 0

    def forward(self, x):
        return x * self.gain.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def zero(layer: nn.Module, rows: tuple[int, ...] = (), columns: tuple[int, ...] = (), axis: int = 0) -> nn.Module:
    """Zero output channels ``rows`` (weight along ``axis`` and bias) and input ``columns`` (weight along the other
    of axes 0 and 1) of ``layer``, in place."""
    with torch.no_grad():
        weight = layer.weight.transpose(0, axis)
        weight[list(rows)] = 0
        weight.transpose(0, 1)[list(columns)] = 0
        if getattr(layer, "bias", None) is not None:
            layer.bias[list(rows)] = 0
    return layer


def param(*shape: int, zero_rows: tuple[int, ...] = (), axis: int = 0) -> nn.Parameter:
    tensor = torch.randn(*shape)
    tensor.transpose(0, axis)[list(zero_rows)] = 0
    return nn.Parameter(tensor)


def conv(cin: int, cout: int, rows: tuple[int, ...] = (), columns: tuple[int, ...] = (), **kwargs: Any) -> nn.Conv2d:
    return zero(nn.Conv2d(cin, cout, 1, **kwargs), rows, columns)


def linear(fin: int, fout: int, rows: tuple[int, ...] = (), columns: tuple[int, ...] = ()) -> nn.Linear:
    return zero(nn.Linear(fin, fout), rows, columns)


def batchnorm(channels: int, masked: tuple[int, ...] = (), **kwargs: Any) -> nn.BatchNorm2d:
    """A BatchNorm with running statistics and affine parameters far from the identity; ``masked`` channels have a
    zero weight and bias."""
    norm = nn.BatchNorm2d(channels, **kwargs)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(channels))
        norm.running_var.copy_(torch.rand(channels) + 0.5)
        if norm.weight is not None:
            norm.weight.copy_(torch.rand(channels) + 0.5)
            norm.bias.copy_(torch.randn(channels))
            norm.weight[list(masked)] = 0
            norm.bias[list(masked)] = 0
    return norm


def layernorm(features: int, masked: tuple[int, ...] = ()) -> nn.LayerNorm:
    norm = nn.LayerNorm(features)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(features) + 0.5)
        norm.bias.copy_(torch.randn(features))
        norm.weight[list(masked)] = 0
        norm.bias[list(masked)] = 0
    return norm


def image(channels: int = 3, size: int = 2) -> tuple[int, ...]:
    return (2, channels, size, size)


def _attention(s: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's attention: qkv split into (3, heads, head_dim), unbind, fused attention, heads merged back by a reshape
    whose channel size is a literal beside computed ones."""
    b, n, _ = x.shape
    q, k, v = s.qkv(x).reshape(b, n, 3, 2, 2).permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(q, k, v)
    return s.proj(y.transpose(1, 2).reshape(b, n, 4))


def _attention_manual(s: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unfused form: parts selected by index, batched matmuls and a softmax over the keys."""
    qkv = s.qkv(x).reshape(2, 3, 3, 2, 2).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * 0.5 @ k.transpose(-2, -1)).softmax(dim=-1)
    return s.proj((attn @ v).transpose(1, 2).reshape(2, 3, -1))


def _norm_tokens(s: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LeViT's BatchNorm over tokens: channels last, batch and pixels merged, then back with reshape_as."""
    y = s.conv1(x).permute(0, 2, 3, 1)
    return s.fc(s.norm(y.flatten(0, 2)).reshape_as(y))


@dataclass(frozen=True)
class Case:
    model: nn.Module
    shape: tuple[int, ...]
    handlers: HandlerTable | None = None


def registered_table() -> HandlerTable:
    table = default_handlers().copy()
    table.register_per_channel(Scale, weight="gain", bias="shift", count_attrs=("channels",))
    return table


# Each model: name -> a function building it (weights drawn after torch.manual_seed(0)). Node names in the cases
# are FX's: a module's qualified name, a function's or method's name (``relu``, ``cat``, ``narrow``).
MODELS: dict[str, Callable[[], Case]] = {
    # producers and consumers: conv1's rows 1 and 3 are masked, conv2's column 4
    "conv": lambda: Case(
        Net(lambda s, x: s.conv2(s.act(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), act=nn.ReLU(),
            conv2=conv(6, 4, columns=(4,))),
        image(),
    ),
    "sigmoid": lambda: Case(
        Net(lambda s, x: s.conv2(torch.sigmoid(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(6, 4, columns=(4,))),
        image(),
    ),
    "sigmoid_method": lambda: Case(
        Net(lambda s, x: s.conv2(s.conv1(x).sigmoid()), conv1=conv(3, 6, rows=(1, 3)), conv2=conv(6, 4)), image()
    ),
    "conv_transpose": lambda: Case(
        Net(lambda s, x: s.ct2(F.relu(s.ct1(x))), ct1=zero(nn.ConvTranspose2d(3, 6, 1), rows=(1, 3), axis=1),
            ct2=nn.ConvTranspose2d(6, 4, 1)),
        image(),
    ),
    "linear": lambda: Case(
        Net(lambda s, x: s.fc2(F.relu(s.fc1(x))), fc1=linear(3, 6, rows=(1, 3)), fc2=linear(6, 4)), (2, 3)
    ),
    "functional_conv": lambda: Case(
        Net(lambda s, x: F.conv2d(F.relu(F.conv2d(x, s.w1, s.b1)), s.w2), w1=param(6, 3, 1, 1, zero_rows=(1, 3)),
            b1=param(6, zero_rows=(1, 3)), w2=param(4, 6, 1, 1)),
        image(),
    ),
    "functional_linear": lambda: Case(
        Net(lambda s, x: F.linear(F.relu(F.linear(x, s.w1, s.b1)), s.w2), w1=param(6, 3, zero_rows=(1, 3)),
            b1=param(6, zero_rows=(1, 3)), w2=param(4, 6)),
        (2, 3),
    ),
    "computed_weight": lambda: Case(Net(lambda s, x: F.conv2d(x, s.w1 * 2), w1=param(4, 3, 1, 1)), image()),
    # a grouped conv (2 groups of 4) reading conv1, whose rows 1 and 6 are masked: one in each group
    "grouped": lambda: Case(
        Net(lambda s, x: s.grouped(s.conv1(x)), conv1=conv(3, 8, rows=(1, 6)), grouped=conv(8, 4, groups=2)),
        image(),
    ),
    "grouped_transpose": lambda: Case(
        Net(lambda s, x: s.up(s.conv1(x)), conv1=conv(3, 8), up=nn.ConvTranspose2d(8, 4, 1, groups=2)), image()
    ),
    # per-channel layers between conv1 (rows 1 and 3 masked) and conv2
    "batchnorm": lambda: Case(
        Net(lambda s, x: s.conv2(s.bn(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), bn=batchnorm(6, masked=(1, 4)),
            conv2=conv(6, 4)),
        image(),
    ),
    "batchnorm_identity": lambda: Case(
        Net(lambda s, x: s.conv2(s.bn(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), bn=nn.BatchNorm2d(6),
            conv2=conv(6, 4)),
        image(),
    ),
    "batchnorm_plain": lambda: Case(
        Net(lambda s, x: s.conv2(s.bn(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), bn=batchnorm(6, affine=False),
            conv2=conv(6, 4)),
        image(),
    ),
    "batchnorm_batch_statistics": lambda: Case(
        Net(lambda s, x: s.bn(s.conv1(x)), conv1=conv(3, 6), bn=nn.BatchNorm2d(6, track_running_stats=False)),
        image(),
    ),
    "functional_batchnorm": lambda: Case(
        Net(lambda s, x: s.conv2(F.batch_norm(s.conv1(x), s.mean, s.var, s.w, s.b, False)),
            conv1=conv(3, 6, rows=(1, 3)), mean=torch.randn(6), var=torch.rand(6) + 0.5,
            w=param(6, zero_rows=(1, 4)), b=param(6, zero_rows=(1, 4)), conv2=conv(6, 4)),
        image(),
    ),
    "functional_batchnorm_training": lambda: Case(
        Net(lambda s, x: F.batch_norm(s.conv1(x), s.mean, s.var, None, None, True), conv1=conv(3, 6),
            mean=torch.zeros(6), var=torch.ones(6)),
        image(),
    ),
    # a depthwise conv whose filter 4 is masked
    "depthwise": lambda: Case(
        Net(lambda s, x: s.conv2(s.dw(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)),
            dw=zero(nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), rows=(4,)), conv2=conv(6, 4)),
        image(),
    ),
    "depthwise_bias": lambda: Case(
        Net(lambda s, x: s.conv2(s.dw(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)),
            dw=zero(nn.Conv2d(6, 6, 3, padding=1, groups=6), rows=(4,)), conv2=conv(6, 4)),
        image(),
    ),
    "functional_depthwise": lambda: Case(
        Net(lambda s, x: s.conv2(F.conv2d(s.conv1(x), s.dw, None, 1, 1, 1, 6)), conv1=conv(3, 6, rows=(1, 3)),
            dw=param(6, 1, 3, 3, zero_rows=(4,)), conv2=conv(6, 4)),
        image(),
    ),
    "registered": lambda: Case(
        Net(lambda s, x: s.conv2(s.scale(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)),
            scale=Scale(6, masked=(4,)), conv2=conv(6, 4)),
        image(),
        registered_table(),
    ),
    # LayerNorm over fc1's features (its channel 2 masked); fc3 reads fc1 without its columns 1 and 3
    "layernorm": lambda: Case(
        Net(lambda s, x: (lambda y: (s.fc2(s.ln(y)), s.fc3(y)))(s.fc1(x)), fc1=linear(3, 6),
            ln=layernorm(6, masked=(2,)), fc2=linear(6, 4), fc3=linear(6, 4, columns=(1, 3))),
        (2, 3),
    ),
    "functional_layernorm": lambda: Case(
        Net(lambda s, x: (lambda y: (s.fc2(F.layer_norm(y, (6,), s.ln.weight, s.ln.bias)), s.fc3(y)))(s.fc1(x)),
            fc1=linear(3, 6), ln=layernorm(6, masked=(2,)), fc2=linear(6, 4), fc3=linear(6, 4, columns=(1, 3))),
        (2, 3),
    ),
    # the LayerNorm module is also called: its weights belong to a module of the graph
    "functional_layernorm_owned": lambda: Case(
        Net(lambda s, x: s.fc2(F.layer_norm(s.fc1(x), (6,), s.ln.weight, s.ln.bias)) + s.ln(x), fc1=linear(6, 6),
            ln=layernorm(6), fc2=linear(6, 6)),
        (2, 6),
    ),
    "functional_layernorm_params": lambda: Case(
        Net(lambda s, x: s.fc2(F.layer_norm(s.fc1(x), (6,), s.w, None)), fc1=linear(3, 6), w=param(6),
            fc2=linear(6, 4)),
        (2, 3),
    ),
    "layernorm_2d": lambda: Case(
        Net(lambda s, x: s.ln(s.conv1(x)), conv1=conv(3, 6), ln=nn.LayerNorm((2, 2))), image()
    ),
    # PReLU after conv1 (rows 1 and 3 masked): one weight per channel, or one shared
    "prelu": lambda: Case(
        Net(lambda s, x: s.conv2(s.act(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), act=nn.PReLU(6),
            conv2=conv(6, 4, columns=(4,))),
        image(),
    ),
    "prelu_shared": lambda: Case(
        Net(lambda s, x: s.conv2(s.act(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), act=nn.PReLU(),
            conv2=conv(6, 4)),
        image(),
    ),
    # resize, padding and pixel shuffle after conv1 (rows 1 and 3 masked; a shuffle's groups 4-7 masked)
    "resize": lambda: Case(
        Net(lambda s, x: s.conv2(F.interpolate(s.conv1(x), scale_factor=2, mode="bilinear")),
            conv1=conv(3, 6, rows=(1, 3)), conv2=conv(6, 4, columns=(4,))),
        image(),
    ),
    "pad": lambda: Case(
        Net(lambda s, x: s.conv2(F.pad(s.conv1(x), (1, 1, 1, 1), mode="reflect")), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(6, 4)),
        image(),
    ),
    "pad_constant": lambda: Case(
        Net(lambda s, x: s.conv2(s.pad(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), pad=nn.ConstantPad2d(1, 0.5),
            conv2=conv(6, 4)),
        image(),
    ),
    "pixel_shuffle": lambda: Case(
        Net(lambda s, x: s.conv2(F.pixel_shuffle(s.conv1(x), 2)), conv1=conv(3, 8, rows=(4, 5, 6, 7)),
            conv2=conv(2, 4)),
        image(),
    ),
    "pixel_unshuffle": lambda: Case(
        Net(lambda s, x: s.conv2(s.unshuffle(s.conv1(x))), conv1=conv(3, 2, rows=(1,)),
            unshuffle=nn.PixelUnshuffle(2), conv2=conv(8, 4)),
        image(),
    ),
    # InstanceNorm and GroupNorm (one channel per group, and two) after conv1 (rows 1 and 3 masked)
    "instance_norm": lambda: Case(
        Net(lambda s, x: s.conv2(s.norm(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)),
            norm=nn.InstanceNorm2d(6, affine=True), conv2=conv(6, 4)),
        image(),
    ),
    "group_norm": lambda: Case(
        Net(lambda s, x: s.conv2(s.norm(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), norm=nn.GroupNorm(3, 6),
            conv2=conv(6, 4)),
        image(),
    ),
    # torchvision's FrozenBatchNorm2d (what pretrained detection builders use) after conv1
    "frozen_batch_norm": lambda: Case(
        Net(lambda s, x: s.conv2(s.norm(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)),
            norm=torchvision.ops.misc.FrozenBatchNorm2d(6), conv2=conv(6, 4)),
        image(),
    ),
    "functional_prelu": lambda: Case(
        Net(lambda s, x: s.conv2(F.prelu(s.conv1(x), s.a)), conv1=conv(3, 6, rows=(1, 3)), a=param(6),
            conv2=conv(6, 4)),
        image(),
    ),
    # elementwise ops over conv1 (rows 1 and 3 masked) and conv2 (rows 3 and 4 masked)
    "add": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) + s.conv2(x)), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(3, 6, rows=(3, 4)), conv3=conv(6, 4)),
        image(),
    ),
    "sub": lambda: Case(
        Net(lambda s, x: s.conv3(torch.sub(s.conv1(x), s.conv2(x))), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(3, 6, rows=(3, 4)), conv3=conv(6, 4)),
        image(),
    ),
    "mul": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) * s.conv2(x)), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(3, 6, rows=(3, 4)), conv3=conv(6, 4)),
        image(),
    ),
    "div": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) / (torch.sigmoid(s.conv2(x)) + 1)), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(3, 6, rows=(3, 4)), conv3=conv(6, 4)),
        image(),
    ),
    "mul_zero": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) * 0), conv1=conv(3, 6, rows=(1, 3)), conv3=conv(6, 4)), image()
    ),
    "add_scalar": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) + 1), conv1=conv(3, 6, rows=(1, 3)), conv3=conv(6, 4)), image()
    ),
    # gate(x) has one channel: broadcast along conv1's six
    "broadcast": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) + s.gate(x)), conv1=conv(3, 6, rows=(1, 3)), gate=conv(3, 1),
            conv3=conv(6, 4)),
        image(),
    ),
    "broadcast_mul": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) * s.gate(x)), conv1=conv(3, 6, rows=(1, 3)), gate=conv(3, 1),
            conv3=conv(6, 4)),
        image(),
    ),
    # two heads of two features; the value's second head (qkv rows 10 and 11) is masked
    "attention": lambda: Case(Net(_attention, qkv=linear(4, 12, rows=(10, 11)), proj=linear(4, 4)), (2, 3, 4)),
    "attention_manual": lambda: Case(
        Net(_attention_manual, qkv=linear(4, 12, rows=(10, 11)), proj=linear(4, 4)), (2, 3, 4)
    ),
    # a linear layer over the flattened pixels (tokens) of conv1's channels: each channel on its own
    "token_mixing": lambda: Case(
        Net(lambda s, x: s.head(s.tokens(s.conv1(x).flatten(2)).mean(2)), conv1=conv(3, 6, rows=(1, 3)),
            tokens=linear(4, 4), head=linear(6, 4, columns=(1, 3))),
        image(),
    ),
    "token_mixing_no_bias": lambda: Case(
        Net(lambda s, x: s.head(F.linear(s.conv1(x).flatten(2), s.w)), conv1=conv(3, 6, rows=(1, 3)),
            w=param(4, 4), head=nn.Conv1d(6, 4, 1)),
        image(),
    ),
    # an attribute tied to conv1's channels, zero where conv1 is masked
    "add_attr": lambda: Case(
        Net(lambda s, x: s.conv3(s.conv1(x) + s.offset), conv1=conv(3, 6, rows=(1, 3)),
            offset=param(1, 6, 1, 1, zero_rows=(1, 3), axis=1), conv3=conv(6, 4, columns=(1, 3))),
        image(),
    ),
    # cat of conv1 (4 channels, row 1 masked) and conv2 (3 channels, row 2 masked)
    "cat": lambda: Case(
        Net(lambda s, x: s.conv3(torch.cat([s.conv1(x), s.conv2(x)], 1)), conv1=conv(3, 4, rows=(1,)),
            conv2=conv(3, 3, rows=(2,)), conv3=conv(7, 4)),
        image(),
    ),
    "cat_other_axis": lambda: Case(
        Net(lambda s, x: s.conv3(torch.cat([s.conv1(x), s.conv2(x)], dim=-1)), conv1=conv(3, 4, rows=(1, 3)),
            conv2=conv(3, 4, rows=(3,)), conv3=conv(4, 4)),
        image(),
    ),
    # cutting conv1's six channels (rows 1 and 4 masked)
    "split": lambda: Case(
        Net(lambda s, x: (lambda p: (s.conv2(p[0]), s.conv3(p[1])))(torch.split(s.conv1(x), [2, 4], 1)),
            conv1=conv(3, 6, rows=(1, 4)), conv2=conv(2, 3), conv3=conv(4, 3)),
        image(),
    ),
    "split_method": lambda: Case(
        Net(lambda s, x: (lambda p: (s.conv2(p[0]), s.conv3(p[1]), s.conv4(p[2])))(s.conv1(x).split(2, dim=1)),
            conv1=conv(3, 6, rows=(1, 4)), conv2=conv(2, 3), conv3=conv(2, 3), conv4=conv(2, 3)),
        image(),
    ),
    "split_other_axis": lambda: Case(
        Net(lambda s, x: (lambda p: s.conv2(p[0] * p[1]))(torch.split(s.conv1(x), 1, dim=2)),
            conv1=conv(3, 6, rows=(1, 4)), conv2=conv(6, 4)),
        image(),
    ),
    "chunk": lambda: Case(
        Net(lambda s, x: (lambda p: (s.conv2(p[0]), s.conv3(p[1])))(torch.chunk(s.conv1(x), 2, 1)),
            conv1=conv(3, 6, rows=(1, 4)), conv2=conv(3, 3), conv3=conv(3, 3)),
        image(),
    ),
    "chunk_uneven": lambda: Case(
        Net(lambda s, x: torch.chunk(s.conv1(x), 4, 1)[0], conv1=conv(3, 6)), image()
    ),
    # conv2 reads channels 1..3 of conv1 (row 2 masked), conv3 all but channel 2
    "narrow": lambda: Case(
        Net(lambda s, x: (lambda y: (s.conv2(torch.narrow(y, 1, 1, 3)), s.conv3(y)))(s.conv1(x)),
            conv1=conv(3, 6, rows=(2,)), conv2=conv(3, 4), conv3=conv(6, 4)),
        image(),
    ),
    "narrow_method": lambda: Case(
        Net(lambda s, x: s.conv2(s.conv1(x).narrow(-3, -4, 2)), conv1=conv(3, 6), conv2=conv(2, 4)), image()
    ),
    "getitem_slice": lambda: Case(
        Net(lambda s, x: (lambda y: (s.conv2(y[:, 1:4]), s.conv3(y)))(s.conv1(x)), conv1=conv(3, 6, rows=(2,)),
            conv2=conv(3, 4), conv3=conv(6, 4)),
        image(),
    ),
    "getitem_spatial": lambda: Case(
        Net(lambda s, x: s.conv2(s.conv1(x)[:, :, 1:]), conv1=conv(3, 6, rows=(2,)), conv2=conv(6, 4)), image()
    ),
    "getitem_whole": lambda: Case(
        Net(lambda s, x: s.conv2(s.conv1(x)[:, :]), conv1=conv(3, 6), conv2=conv(6, 4)), image()
    ),
    "getitem_step": lambda: Case(Net(lambda s, x: s.conv1(x)[:, ::2], conv1=conv(3, 6)), image()),
    # every other pixel of conv1's channels (rows 1 and 3 masked): the channels pass through
    "getitem_spatial_step": lambda: Case(
        Net(lambda s, x: s.conv2(s.conv1(x)[:, :, ::2, ::2]), conv1=conv(3, 6, rows=(1, 3)), conv2=conv(6, 4)),
        image(),
    ),
    # batch and pixels merged in front of the channels (channels last), and a BatchNorm1d read back with reshape_as
    "flatten_leading": lambda: Case(
        Net(lambda s, x: s.fc(s.conv1(x).permute(0, 2, 3, 1).flatten(0, 2)), conv1=conv(3, 6, rows=(1, 3)),
            fc=linear(6, 4)),
        image(),
    ),
    "reshape_as": lambda: Case(
        Net(_norm_tokens, conv1=conv(3, 6, rows=(1, 3)), norm=nn.BatchNorm1d(6), fc=linear(6, 4)),
        image(),
    ),
    # conv1 has 4 channels (row 1 masked) of 2 x 2 = 4 features each; fc's features of channel 3 are masked
    "flatten": lambda: Case(
        Net(lambda s, x: s.fc(torch.flatten(s.conv1(x), 1)), conv1=conv(3, 4, rows=(1,)),
            fc=linear(16, 3, columns=(12, 13, 14, 15))),
        image(),
    ),
    "flatten_module": lambda: Case(
        Net(lambda s, x: s.fc(s.flat(s.conv1(x))), conv1=conv(3, 4), flat=nn.Flatten(), fc=linear(16, 3)), image()
    ),
    "flatten_view": lambda: Case(
        Net(lambda s, x: s.fc(s.conv1(x).view(x.size(0), -1)), conv1=conv(3, 4), fc=linear(16, 3)), image()
    ),
    "view_constant": lambda: Case(
        Net(lambda s, x: s.fc(s.conv1(x).view(2, 16)), conv1=conv(3, 4, rows=(1,)), fc=linear(16, 3)), image()
    ),
    "flatten_partial": lambda: Case(
        Net(lambda s, x: torch.flatten(s.conv1(x), 1, 2), conv1=conv(3, 4)), image()
    ),
    # a channel shuffle of conv1's six channels (row 1 masked) in 2 groups
    "shuffle": lambda: Case(
        Net(lambda s, x: s.conv2(s.conv1(x).view(2, 2, -1, 2, 2).transpose(1, 2).reshape(2, -1, 2, 2)),
            conv1=conv(3, 6, rows=(1,)), conv2=conv(6, 4)),
        image(),
    ),
    "permute": lambda: Case(
        Net(lambda s, x: s.fc(s.conv1(x).permute(0, 2, 3, 1)), conv1=conv(3, 6, rows=(1, 3)),
            fc=linear(6, 4, columns=(4,))),
        image(),
    ),
    "transpose": lambda: Case(
        Net(lambda s, x: s.fc(torch.transpose(s.conv1(x), 1, -1)), conv1=conv(3, 6), fc=linear(6, 4)), image()
    ),
    "reduce": lambda: Case(
        Net(lambda s, x: s.fc(s.conv1(x).mean((2, 3))), conv1=conv(3, 6, rows=(1, 3)), fc=linear(6, 4, columns=(4,))),
        image(),
    ),
    "reduce_keepdim": lambda: Case(
        Net(lambda s, x: s.conv2(torch.sum(s.conv1(x), dim=-1, keepdim=True)), conv1=conv(3, 6, rows=(1, 3)),
            conv2=conv(6, 4)),
        image(),
    ),
    "reduce_channels": lambda: Case(
        Net(lambda s, x: s.conv1(x).mean(1), conv1=conv(3, 6, rows=(1, 3))), image()
    ),
    "normalize": lambda: Case(
        Net(lambda s, x: s.conv2(F.normalize(s.conv1(x))), conv1=conv(3, 6, rows=(1, 3)), conv2=conv(6, 4)), image()
    ),
    "amax_channels": lambda: Case(
        Net(lambda s, x: s.conv1(x).amax(1), conv1=conv(3, 6, rows=(1, 3))), image()
    ),
    "reduce_all": lambda: Case(Net(lambda s, x: s.conv1(x).mean(), conv1=conv(3, 6)), image()),
    "metadata": lambda: Case(
        Net(lambda s, x: (lambda y: s.fc(y.view(y.shape[0], -1)))(s.conv1(x)), conv1=conv(3, 4), fc=linear(16, 3)),
        image(),
    ),
    # torch.cumsum over the channels: no handler maps it
    "cumsum": lambda: Case(
        Net(lambda s, x: s.conv2(torch.cumsum(s.conv1(x), 1)), conv1=conv(3, 4, rows=(1,)), conv2=conv(4, 3)),
        image(),
    ),
}  # fmt: skip


@functools.cache
def traced(name: str) -> tuple[fx.GraphModule, ChannelAnalysis]:
    """Model ``name`` traced (float64) and analysed; cached, so tests must not change what they get."""
    torch.manual_seed(0)
    case = MODELS[name]()
    model = case.model.double().eval()
    graph_module = fx_upscale.trace(model, (torch.randn(case.shape, dtype=torch.float64),), handlers=case.handlers)
    return graph_module, analyse_channels(graph_module, case.handlers)


@functools.cache
def planned(name: str) -> ChannelPlan:
    graph_module, analysis = traced(name)
    return fx_upscale.plan(graph_module, mode="upscale", handlers=analysis.handlers)


def analysis_of(name: str) -> ChannelAnalysis:
    return traced(name)[1]


def bits(flags: str) -> tuple[bool, ...]:
    """``"0110"`` -> ``(False, True, True, False)``."""
    return tuple(flag == "1" for flag in flags)


def handler_of(role_type: type) -> OpHandler[Any]:
    return next(handler for handler in default_handlers().handlers() if handler.role is role_type)


def overrides(handler: OpHandler[Any], method: str) -> bool:
    return getattr(type(handler), method) is not getattr(OpHandler, method)


# -- completeness -------------------------------------------------------------------------------------------------

# What each role needs its handler to override (beyond ``recognise`` for those the table routes to).
NEEDS: dict[type, set[str]] = {
    Source: {"masking"},
    GetAttr: {"rewrite", "masking"},
    Metadata: set(),
    Output: {"propagate"},
    Unknown: {"propagate"},
    Weighted: {"propagate", "rewrite", "masking", "output_weight", "creates_channels", "invariant"},
    Grouped: {"propagate", "rewrite", "output_weight", "creates_channels"},
    PerChannel: {"propagate", "rewrite", "masking", "output_weight", "invariant"},
    LayerNorm: {"propagate", "rewrite", "masking", "output_weight", "invariant"},
    Pointwise: {"propagate", "masking"},
    PReLU: {"propagate", "rewrite", "masking", "invariant"},
    Elementwise: {"propagate"},
    Concat: {"propagate"},
    Split: {"propagate", "rewrite"},
    SplitPiece: {"propagate"},
    Slice: {"propagate", "rewrite"},
    Flatten: {"propagate", "rewrite"},
    Reshape: {"propagate", "rewrite"},
    Permute: {"propagate"},
    Reduce: {"propagate"},
    Resize: {"propagate", "masking"},
    Pad: {"propagate", "masking"},
    PixelShuffle: {"propagate"},
    InstanceNorm: {"propagate", "rewrite", "masking", "output_weight", "invariant"},
    GroupNorm: {"propagate", "rewrite", "masking", "output_weight", "invariant"},
    FrozenBatchNorm: {"propagate", "rewrite", "masking", "output_weight", "invariant"},
    TokenMixing: {"propagate"},
    ChannelReduction: {"propagate", "rewrite", "masking"},
    Strided: {"propagate", "masking"},
    Normalize: {"propagate", "masking"},
    Attention: {"propagate"},
    BatchedMatmul: {"propagate"},
    Softmax: {"propagate"},
    Unbind: {"propagate"},
    Select: {"propagate"},
}
# Roles no route produces: another handler's ``recognise`` returns them (getitem of a split, a grouped conv, a
# view that is not a flatten) or its ``propagate`` reassigns (a linear layer over tokens), so their handlers
# recognise nothing themselves (a reduction over the channel axis is reassigned too).
DERIVED = {SplitPiece, Grouped, Reshape, TokenMixing, Strided, ChannelReduction}
# Unknown is what the table and the walk produce themselves; its handler's ``recognise`` serves a table that routes a
# target to it.
ROUTED = set(NEEDS) - DERIVED - {Unknown}
ASPECTS = ("recognise", "propagate", "rewrite", "masking", "output_weight", "creates_channels", "invariant")


def routed_handlers(table: HandlerTable) -> set[type]:
    """Role types of the handlers some target of ``table`` is routed to (structural node kinds included)."""
    routes = [table._modules, table._functions, table._methods, table._qualnames, table._module_qualnames]
    return {entry.handler.role for route in routes for entry in route.values()} | {Source, Output, GetAttr}


def test_every_role_type_has_one_handler_whose_role_it_is() -> None:
    table = default_handlers()
    assert set(table.role_types()) == set(NEEDS)
    for role_type in table.role_types():
        assert handler_of(role_type).role is role_type
    assert len({id(handler) for handler in table.handlers()}) == len(NEEDS)


@pytest.mark.parametrize("role_type", list(NEEDS), ids=lambda t: t.__name__)
def test_each_handler_overrides_exactly_what_its_role_needs(role_type: type) -> None:
    handler = handler_of(role_type)
    needs = NEEDS[role_type] | ({"recognise"} if role_type not in DERIVED else set())
    assert {aspect for aspect in ASPECTS if overrides(handler, aspect)} == needs


def test_the_table_routes_only_to_handlers_that_recognise() -> None:
    routed = routed_handlers(default_handlers())
    assert routed == ROUTED
    for role_type in routed:
        assert overrides(handler_of(role_type), "recognise"), role_type.__name__


def test_every_role_carrying_channels_in_the_cases_has_a_channel_rule() -> None:
    """A node with a layout got it from its handler's ``propagate``, unless a reader gave it ids on demand (graph
    inputs, attributes, outputs of barriers)."""
    for name in MODELS:
        analysis = analysis_of(name)
        for node, layout in analysis.layouts.items():
            role = analysis.roles[node]
            on_demand = isinstance(role, (Source, GetAttr, Unknown)) and analysis.owner[layout.ids[0]] == node
            assert on_demand or overrides(analysis.handler(node), "propagate"), (name, node)


@pytest.mark.parametrize("role_type", [t for t in NEEDS if {"weight", "conv"} & set(t.__dataclass_fields__)])
def test_every_role_holding_a_weight_rewrites_it(role_type: type) -> None:
    assert overrides(handler_of(role_type), "rewrite")


def test_every_role_a_handler_recognises_in_the_cases_is_owned_by_the_table() -> None:
    seen: set[type] = set()
    for name in MODELS:
        analysis = analysis_of(name)
        for role in analysis.roles.values():
            analysis.handlers.handler(role)  # raises TypeError for a role no handler owns
            default_handlers().handler(role)
            seen.add(type(role))
    assert seen == set(NEEDS), "the cases no longer exercise every role type: add a case"


def test_an_unknown_role_type_has_no_handler() -> None:
    @dataclass(frozen=True)
    class Stranger:
        pass

    with pytest.raises(TypeError, match="no handler owns the role Stranger"):
        default_handlers().handler(Stranger())


class Gate(nn.Module):
    def forward(self, x):
        return x.clamp(min=0)


def roles_with(table: HandlerTable) -> dict[str, Any]:
    model = Net(lambda s, x: s.conv2(s.gate(s.conv1(x)).erfinv().sigmoid()), conv1=conv(3, 4), gate=Gate(),
                conv2=conv(4, 2)).double().eval()  # fmt: skip
    graph_module = fx_upscale.trace(model, (torch.rand(image(), dtype=torch.float64),), handlers=table)
    return dict(analyse_channels(graph_module, table).roles)


def test_a_copy_of_the_default_table_is_independent() -> None:
    copy = default_handlers().copy()
    copy.register_pointwise(Gate, keeps_zero=True)
    copy.register_pointwise("erfinv", keeps_zero=False)

    @dataclass(frozen=True)
    class Custom:
        data: str

    class CustomHandler(OpHandler[Custom]):
        role = Custom

    copy.register_handler(CustomHandler(), [torch.erf])
    assert copy.is_leaf(Gate()) and not default_handlers().is_leaf(Gate())
    assert isinstance(copy.handler(Custom("x")), CustomHandler)
    with pytest.raises(TypeError):
        default_handlers().handler(Custom("x"))
    in_copy, in_default = roles_with(copy), roles_with(default_handlers())
    assert in_copy["gate"] == Pointwise(data="conv1", keeps_zero=True)
    assert in_copy["erfinv"] == Pointwise(data="gate", keeps_zero=False)
    assert "gate" not in in_default  # traced through: Gate's clamp is a node of its own
    assert in_default["erfinv"] == Unknown("no handler for this tensor method")


def test_register_pointwise_and_unregister_round_trip() -> None:
    table = default_handlers().copy()
    before = roles_with(table)
    table.register_pointwise(Gate, keeps_zero=True)
    table.register_pointwise("erfinv", keeps_zero=True)
    table.register_pointwise("sigmoid", keeps_zero=True)  # overrides a built-in route
    registered = roles_with(table)
    assert registered["gate"] == Pointwise(data="conv1", keeps_zero=True)
    assert registered["erfinv"] == Pointwise(data="gate", keeps_zero=True)
    assert registered["sigmoid"] == Pointwise(data="erfinv", keeps_zero=True)
    for target in (Gate, "erfinv", "sigmoid"):
        table.unregister(target)
    assert roles_with(table) == before
    assert before["sigmoid"] == Pointwise(data="erfinv", keeps_zero=False)  # the built-in route is back
    assert not table.is_leaf(Gate())


def test_register_pointwise_and_unregister_round_trip_on_the_default_table() -> None:
    before = roles_with(default_handlers())
    fx_upscale.register_pointwise("erfinv", keeps_zero=True)
    try:
        assert roles_with(default_handlers())["erfinv"] == Pointwise(data="clamp", keeps_zero=True)
    finally:
        fx_upscale.unregister("erfinv")
    assert roles_with(default_handlers()) == before


# -- recognition --------------------------------------------------------------------------------------------------


def conv_role(name: str, data: str, **fields: Any) -> Weighted:
    return Weighted(
        data=data, data_axis=1, weight=f"{name}.weight", bias=f"{name}.bias", module=name, in_attr="in_channels",
        out_attr="out_channels", **fields,
    )  # fmt: skip


def functional_role(data: str, weight: str, bias: str | None, data_axis: int = 1) -> Weighted:
    return Weighted(
        data=data, data_axis=data_axis, weight=weight, bias=bias, module=None, in_attr=None, out_attr=None
    )  # fmt: skip


BATCHNORM = PerChannelKind.BATCHNORM
RECOGNITION = [
    pytest.param("conv", "conv1", conv_role("conv1", "x"), id="conv-module"),
    pytest.param(
        "conv_transpose", "ct1", conv_role("ct1", "x", weight_in_axis=0, weight_out_axis=1), id="conv-transpose-module"
    ),
    pytest.param(
        "linear", "fc1",
        Weighted(data="x", data_axis=-1, weight="fc1.weight", bias="fc1.bias", module="fc1", in_attr="in_features",
                 out_attr="out_features"),
        id="linear-module",
    ),
    pytest.param("functional_conv", "conv2d", functional_role("x", "w1", "b1"), id="F.conv2d"),
    pytest.param("functional_conv", "conv2d_1", functional_role("relu", "w2", None), id="F.conv2d-without-bias"),
    pytest.param("functional_linear", "linear", functional_role("x", "w1", "b1", data_axis=-1), id="F.linear"),
    pytest.param("computed_weight", "conv2d", Unknown("not plain attributes"), id="F.conv2d-computed-weight-unknown"),
    pytest.param("grouped", "grouped", Grouped(conv=conv_role("grouped", "conv1"), groups=2), id="grouped-conv"),
    pytest.param("grouped_transpose", "up", Unknown("grouped transposed"), id="grouped-conv-transpose-unknown"),
    pytest.param(
        "depthwise", "dw",
        PerChannel(data="conv1", kind=PerChannelKind.DEPTHWISE, weight="dw.weight", bias=None, module="dw",
                   count_attrs=("in_channels", "out_channels", "groups")),
        id="depthwise-conv",
    ),
    pytest.param(
        "functional_depthwise", "conv2d",
        PerChannel(data="conv1", kind=PerChannelKind.DEPTHWISE_FUNCTIONAL, weight="dw", bias=None, module=None,
                   count_attrs=()),
        id="F.conv2d-depthwise",
    ),
    pytest.param(
        "batchnorm", "bn",
        PerChannel(data="conv1", kind=BATCHNORM, weight="bn.weight", bias="bn.bias", module="bn",
                   count_attrs=("num_features",), running_mean="bn.running_mean", running_var="bn.running_var"),
        id="batchnorm-module",
    ),
    pytest.param(
        "batchnorm_plain", "bn",
        PerChannel(data="conv1", kind=BATCHNORM, weight=None, bias=None, module="bn", count_attrs=("num_features",),
                   running_mean="bn.running_mean", running_var="bn.running_var"),
        id="batchnorm-module-without-affine",
    ),
    pytest.param(
        "batchnorm_batch_statistics", "bn", Unknown("without running statistics"),
        id="batchnorm-batch-statistics-unknown",
    ),
    pytest.param(
        "functional_batchnorm", "batch_norm",
        PerChannel(data="conv1", kind=BATCHNORM, weight="w", bias="b", module=None, count_attrs=(),
                   running_mean="mean", running_var="var"),
        id="F.batch_norm-eval",
    ),
    pytest.param(
        "functional_batchnorm_training", "batch_norm", Unknown("training mode"), id="F.batch_norm-training-unknown"
    ),
    pytest.param(
        "registered", "scale",
        PerChannel(data="conv1", kind=PerChannelKind.AFFINE, weight="scale.gain", bias="scale.shift",
                   module="scale", count_attrs=("channels",)),
        id="registered-per-channel-module",
    ),
    pytest.param(
        "layernorm", "ln", LayerNorm(data="fc1", weight="ln.weight", bias="ln.bias", module="ln"), id="layernorm-module"
    ),
    pytest.param(
        "functional_layernorm", "layer_norm",
        LayerNorm(data="fc1", weight="ln.weight", bias="ln.bias", module=None, functional=True),
        id="F.layer_norm",  # the LayerNorm module itself is not in the graph: only its tensors are
    ),
    pytest.param(
        "functional_layernorm_owned", "layer_norm",
        Unknown(
            "layer_norm weights that are not plain attributes read by this node alone (get_attr) cannot be resliced"
        ),
        id="F.layer_norm-of-a-module-in-the-graph",
    ),
    pytest.param(
        "functional_layernorm_params", "layer_norm",
        LayerNorm(data="fc1", weight="w", bias=None, module=None, functional=True),
        id="F.layer_norm-of-plain-parameters",
    ),
    pytest.param("layernorm_2d", "ln", Unknown("more than the last axis"), id="layernorm-over-two-axes-unknown"),
    pytest.param("conv", "act", Pointwise(data="conv1", keeps_zero=True), id="relu-module-keeps-zero"),
    pytest.param("conv_transpose", "relu", Pointwise(data="ct1", keeps_zero=True), id="F.relu-keeps-zero"),
    pytest.param("sigmoid", "sigmoid", Pointwise(data="conv1", keeps_zero=False), id="torch.sigmoid-does-not"),
    pytest.param("sigmoid_method", "sigmoid", Pointwise(data="conv1", keeps_zero=False), id="sigmoid-method"),
    pytest.param("getitem_whole", "getitem", Pointwise(data="conv1", keeps_zero=True), id="getitem-whole-tensor"),
    pytest.param(
        "prelu", "act", PReLU(data="conv1", weight="act.weight", per_channel=True, module="act"), id="prelu-module"
    ),
    pytest.param(
        "prelu_shared", "act", PReLU(data="conv1", weight="act.weight", per_channel=False, module="act"),
        id="prelu-module-shared-weight",
    ),
    pytest.param(
        "functional_prelu", "prelu", PReLU(data="conv1", weight="a", per_channel=True, module=None), id="F.prelu"
    ),
    pytest.param("add", "add", Elementwise(Operation.ADD), id="add-operator"),
    pytest.param("sub", "sub", Elementwise(Operation.SUB), id="torch.sub"),
    pytest.param("mul", "mul", Elementwise(Operation.MUL), id="mul-operator"),
    pytest.param("div", "truediv", Elementwise(Operation.DIV), id="truediv-operator"),
    pytest.param("cat", "cat", Concat(("conv1", "conv2"), 1), id="torch.cat"),
    pytest.param("cat_other_axis", "cat", Concat(("conv1", "conv2"), 3), id="torch.cat-negative-dim"),
    pytest.param(
        "split", "split", Split(data="conv1", dim=1, sections=(2, 4), chunks=False), id="torch.split-sections"
    ),
    pytest.param(
        "split_method", "split", Split(data="conv1", dim=1, sections=(2, 2, 2), chunks=False), id="split-method-size"
    ),
    pytest.param("chunk", "chunk", Split(data="conv1", dim=1, sections=(3, 3), chunks=True), id="torch.chunk"),
    pytest.param("chunk_uneven", "chunk", Unknown("not equal pieces"), id="chunk-unequal-unknown"),
    pytest.param("split", "getitem_1", SplitPiece(split="split", index=1), id="split-piece"),
    pytest.param(
        "narrow", "narrow", Slice(data="conv1", dim=1, start=1, length=3, getitem=False), id="torch.narrow"
    ),
    pytest.param(
        "narrow_method", "narrow", Slice(data="conv1", dim=1, start=2, length=2, getitem=False),
        id="narrow-method-negative-dim-and-start",
    ),
    pytest.param(
        "getitem_slice", "getitem", Slice(data="conv1", dim=1, start=1, length=3, getitem=True),
        id="getitem-channel-slice",
    ),
    pytest.param(
        "getitem_spatial", "getitem", Slice(data="conv1", dim=2, start=1, length=1, getitem=True),
        id="getitem-spatial-slice",
    ),
    pytest.param("getitem_step", "getitem", Strided(data="conv1", dims=(1,)), id="getitem-step"),
    pytest.param("getitem_spatial_step", "getitem", Strided(data="conv1", dims=(2, 3)), id="getitem-spatial-steps"),
    pytest.param("flatten", "flatten", Flatten(data="conv1", start_dim=1), id="torch.flatten"),
    pytest.param("flatten_module", "flat", Flatten(data="conv1", start_dim=1), id="flatten-module"),
    pytest.param("flatten_view", "view", Flatten(data="conv1", start_dim=1), id="view-computed-size"),
    pytest.param(
        "view_constant", "view", Flatten(data="conv1", start_dim=1), id="view-literal-size"
    ),
    pytest.param(
        "flatten_partial", "flatten", Reshape(data="conv1", before=(2, 4, 2, 2), after=(2, 8, 2)),
        id="flatten-partial-is-a-reshape",
    ),
    pytest.param(
        "shuffle", "view",
        Reshape(data="conv1", before=(2, 6, 2, 2), after=(2, 2, 3, 2, 2), constant_axes=frozenset()),
        id="reshape-into-groups",
    ),
    pytest.param("shuffle", "transpose", Permute(data="view", dims=(0, 2, 1, 3, 4)), id="transpose-method"),
    pytest.param("permute", "permute", Permute(data="conv1", dims=(0, 2, 3, 1)), id="permute-method"),
    pytest.param("transpose", "transpose", Permute(data="conv1", dims=(0, 3, 2, 1)), id="torch.transpose"),
    pytest.param("reduce", "mean", Reduce(data="conv1", dims=(2, 3), keepdim=False), id="mean-method"),
    pytest.param("reduce_keepdim", "sum_1", Reduce(data="conv1", dims=(3,), keepdim=True), id="torch.sum-keepdim"),
    pytest.param("reduce_all", "mean", Unknown("over every axis"), id="mean-of-everything-unknown"),
    pytest.param("flatten_view", "size", Metadata(), id="size-method"),
    pytest.param("metadata", "getattr_1", Metadata(), id="shape-attribute"),
    pytest.param("conv", "x", Source(), id="placeholder"),
    pytest.param("add_attr", "offset", GetAttr(), id="get-attr"),
    pytest.param("conv", "output", Output(), id="output"),
    pytest.param("cumsum", "cumsum", Unknown("no handler for this function"), id="torch.cumsum-unknown"),
    pytest.param("attention", "unbind", Unbind(data="permute", dim=0), id="unbind-method"),
    pytest.param("attention_manual", "getitem_2", Select(data="permute", dim=0, index=2), id="getitem-one-index"),
    pytest.param(
        "attention", "scaled_dot_product_attention",
        Attention(query="getitem_3", key="getitem_4", value="getitem_5", mask=None, grouped=False),
        id="F.scaled_dot_product_attention",
    ),
    pytest.param("attention_manual", "matmul", BatchedMatmul(left="mul", right="transpose"), id="matmul-operator"),
    pytest.param("attention_manual", "softmax", Softmax(data="matmul", dim=3), id="softmax-method"),
]  # fmt: skip


def recognised(model: str, node: str) -> Any:
    """What the table's recognition says of ``node``, before the channel walk (which may make it a barrier)."""
    graph_module, analysis = traced(model)
    nodes = {n.name: n for n in graph_module.graph.nodes}
    return analysis.handlers.classify(nodes[node], ChannelWalk(graph_module, analysis.handlers).context)


@pytest.mark.parametrize(("model", "node", "role"), RECOGNITION)
def test_recognition(model: str, node: str, role: Any) -> None:
    found = recognised(model, node)
    if isinstance(role, Unknown):
        assert isinstance(found, Unknown) and role.reason in found.reason, found
    else:
        assert found == role
    analysis = analysis_of(model)
    if node not in analysis.barriers:
        assert analysis.roles[node] == found  # the walk keeps the role it recognised


# -- channel rules ------------------------------------------------------------------------------------------------

Piece = str | tuple[str, Any]  # a node's classes, or some of them (a slice or a tuple of positions)


@dataclass(frozen=True)
class Rule:
    """What a node's channel rule leaves: its layout (``axis=None``: none), zeros, reads and ties.

    ``classes``: the node's channel classes are those of these pieces, concatenated; ``fresh``: its ids are new,
    created by it (``fixed``: never removed or reordered); ``tied`` / ``apart``: nodes whose classes equal
    / share nothing with the node's; ``reads``: source -> ``"consumer:0110"`` (a consumer needing positions 1 and 2;
    ``"consumer/2:..."`` a grouped one) or ``"whole:1111"`` (a barrier reading all, in order); ``barrier``: the walk
    made it a barrier, for a reason containing this.
    """

    axis: int | None
    zeros: str = ""
    classes: tuple[Piece, ...] = ()
    fresh: bool = False
    fixed: bool = False
    repeat: int = 1
    split: int = 0
    tied: tuple[str, ...] = ()
    apart: tuple[str, ...] = ()
    reads: dict[str, str] = field(default_factory=dict)
    barrier: str | None = None


def expected_classes(analysis: ChannelAnalysis, pieces: tuple[Piece, ...]) -> tuple[int, ...]:
    found: list[int] = []
    for piece in pieces:
        node, index = (piece, None) if isinstance(piece, str) else piece
        classes = analysis.classes(node)
        if index is None:
            found.extend(classes)
        elif isinstance(index, slice):
            found.extend(classes[index])
        else:
            found.extend(classes[i] for i in index)
    return tuple(found)


def describe_read(needed: tuple[bool, ...], consumer: bool, groups: int) -> str:
    kind = ("consumer" if consumer else "whole") + (f"/{groups}" if groups > 1 else "")
    return f"{kind}:{''.join('1' if n else '0' for n in needed)}"


PRODUCER = {"fresh": True, "axis": 1}
CHANNEL_RULES = [
    # Weighted: fresh ids, zero where the weight row and bias are; a column is needed unless it or its channel is 0
    pytest.param("conv", "conv1", Rule(**PRODUCER, zeros="010100", reads={"x": "consumer:111"}), id="conv-rows"),
    pytest.param("conv", "conv2", Rule(**PRODUCER, zeros="0000", reads={"act": "consumer:101001"}), id="conv-columns"),
    pytest.param(
        "conv_transpose", "ct1", Rule(**PRODUCER, zeros="010100", reads={"x": "consumer:111"}), id="conv-transpose-rows"
    ),
    pytest.param(
        "conv_transpose", "ct2", Rule(**PRODUCER, zeros="0000", reads={"relu": "consumer:101011"}),
        id="conv-transpose-columns",
    ),
    pytest.param("linear", "fc1", Rule(**PRODUCER, zeros="010100", reads={"x": "consumer:111"}), id="linear-rows"),
    pytest.param(
        "linear", "fc2", Rule(**PRODUCER, zeros="0000", reads={"relu": "consumer:101011"}), id="linear-columns"
    ),
    pytest.param(
        "functional_conv", "conv2d", Rule(**PRODUCER, zeros="010100", reads={"x": "consumer:111"}),
        id="F.conv2d-rows",
    ),
    pytest.param(
        "functional_conv", "conv2d_1", Rule(**PRODUCER, zeros="0000", reads={"relu": "consumer:101011"}),
        id="F.conv2d-columns",
    ),
    pytest.param(
        "functional_linear", "linear", Rule(**PRODUCER, zeros="010100", reads={"x": "consumer:111"}), id="F.linear-rows"
    ),
    # Grouped: a grouped read, one block per group
    pytest.param(
        "grouped", "grouped", Rule(**PRODUCER, zeros="0000", reads={"conv1": "consumer/2:10111101"}),
        id="grouped-conv-reads-by-group",
    ),
    # PerChannel: ids kept; zero where its weight and bias are, or where its input is and it maps 0 to 0
    pytest.param(
        "batchnorm", "bn", Rule(axis=1, classes=("conv1",), zeros="010010"),
        id="batchnorm-module-masked-channels",  # channel 3 is 0 in, but not out: its bias is not 0
    ),
    pytest.param(
        "batchnorm_identity", "bn", Rule(axis=1, classes=("conv1",), zeros="010100"),
        id="batchnorm-with-zero-mean-and-bias-keeps-zero",
    ),
    pytest.param(
        "batchnorm_plain", "bn", Rule(axis=1, classes=("conv1",), zeros="000000"),
        id="batchnorm-running-mean-makes-zero-nonzero",
    ),
    pytest.param(
        "functional_batchnorm", "batch_norm", Rule(axis=1, classes=("conv1",), zeros="010010"), id="F.batch_norm-eval"
    ),
    pytest.param(
        "depthwise", "dw", Rule(axis=1, classes=("conv1",), zeros="010110"), id="depthwise-conv-without-bias"
    ),
    pytest.param(
        "depthwise_bias", "dw", Rule(axis=1, classes=("conv1",), zeros="000010"), id="depthwise-conv-with-bias"
    ),
    pytest.param(
        "functional_depthwise", "conv2d", Rule(axis=1, classes=("conv1",), zeros="010110"), id="F.conv2d-depthwise"
    ),
    pytest.param(
        "registered", "scale", Rule(axis=1, classes=("conv1",), zeros="010110"), id="registered-per-channel-module"
    ),
    # LayerNorm: its statistics read every channel; zero only where its weight and bias are
    pytest.param(
        "layernorm", "ln", Rule(axis=1, classes=("fc1",), zeros="001000", reads={"fc1": "consumer:111111"}),
        id="layernorm-module",
    ),
    pytest.param(
        "functional_layernorm", "layer_norm",
        Rule(axis=1, classes=("fc1",), zeros="001000", reads={"fc1": "consumer:111111"}), id="F.layer_norm",
    ),
    # attention: every channel of a head (query, key and value parts) tied into one class, one channel per head on
    # the heads axis; the value's head 1 is zero (qkv rows 10, 11), so is the attention's, not the query's
    pytest.param(
        "attention", "reshape", Rule(axis=3, classes=(("qkv", (0, 2)),), tied=("getitem_3",), zeros="00"),
        id="reshape-into-heads",
    ),
    pytest.param("attention", "getitem_5", Rule(axis=1, classes=(("qkv", (8, 10)),), zeros="01"), id="unbind-value"),
    pytest.param("attention", "getitem_3", Rule(axis=1, classes=(("qkv", (0, 2)),), zeros="00"), id="unbind-query"),
    pytest.param(
        "attention", "scaled_dot_product_attention", Rule(axis=1, classes=(("qkv", (4, 6)),), zeros="01"),
        id="attention-zero-where-the-value-is",
    ),
    pytest.param(
        "attention", "reshape_1", Rule(axis=2, classes=(("qkv", (8, 10)),), repeat=2, zeros="01"),
        id="heads-merged-back",
    ),
    pytest.param("attention", "proj", Rule(fresh=True, axis=2, zeros="0000", reads={"reshape_1": "consumer:10"}),
                 id="projection-needs-the-nonzero-head"),
    pytest.param("attention_manual", "getitem_2", Rule(axis=1, classes=(("qkv", (0, 2)),), zeros="01"),
                 id="select-value"),
    pytest.param("attention_manual", "matmul", Rule(axis=1, classes=(("qkv", (0, 2)),), zeros="00"),
                 id="matmul-batch-channels"),
    pytest.param("attention_manual", "softmax", Rule(axis=1, classes=(("qkv", (0, 2)),), zeros="00"),
                 id="softmax-over-keys"),
    pytest.param("attention_manual", "matmul_1", Rule(axis=1, classes=(("qkv", (0, 2)),), zeros="01"),
                 id="matmul-zero-where-an-operand-is"),
    # Pointwise: ids kept; zeros kept only if f(0) == 0
    pytest.param("conv", "act", Rule(axis=1, classes=("conv1",), zeros="010100"), id="relu-keeps-zero"),
    pytest.param("sigmoid", "sigmoid", Rule(axis=1, classes=("conv1",), zeros="000000"), id="sigmoid-does-not"),
    pytest.param("getitem_whole", "getitem", Rule(axis=1, classes=("conv1",), zeros="000000"), id="getitem-whole"),
    # PReLU: ids kept, and zeros (PReLU(0) == 0)
    pytest.param("prelu", "act", Rule(axis=1, classes=("conv1",), zeros="010100"), id="prelu-keeps-zero"),
    # Strided: slicing other axes with steps passes channels; slicing the channel axis with a step is a barrier
    pytest.param("getitem_spatial_step", "getitem", Rule(axis=1, classes=("conv1",), zeros="010100"), id="strided"),
    pytest.param(
        "getitem_step", "getitem", Rule(axis=None, reads={"conv1": "whole:111111"}, barrier="does not match"),
        id="strided-channels",
    ),
    # Reshape: flatten of leading axes and reshape_as keep the channel axis whole
    pytest.param("flatten_leading", "flatten", Rule(axis=1, classes=("conv1",), zeros="010100"), id="flatten-leading"),
    pytest.param("reshape_as", "reshape_as", Rule(axis=3, classes=("conv1",), zeros="010100"), id="reshape-as"),
    pytest.param(
        "flatten_partial", "flatten", Rule(axis=None, reads={"conv1": "whole:1111"}, barrier="merges the channel axis"),
        id="flatten-merge",
    ),
    # TokenMixing: a linear layer over another axis than the channels': channel identity, the bias revives zeros
    pytest.param("token_mixing", "tokens", Rule(axis=1, classes=("conv1",), zeros="000000"), id="token-mixing-bias"),
    pytest.param(
        "token_mixing_no_bias", "linear", Rule(axis=1, classes=("conv1",), zeros="010100"),
        id="token-mixing-keeps-zero",
    ),
    pytest.param(
        "functional_prelu", "prelu", Rule(axis=1, classes=("conv1",), zeros="010100"), id="F.prelu-keeps-zero"
    ),
    # Elementwise: channel i of each full operand tied; a broadcast operand read whole
    pytest.param(
        "add", "add", Rule(axis=1, classes=("conv1",), tied=("conv2",), zeros="000100"), id="add-ties-zero-if-both"
    ),
    pytest.param(
        "sub", "sub", Rule(axis=1, classes=("conv1",), tied=("conv2",), zeros="000100"), id="sub-ties-zero-if-both"
    ),
    pytest.param(
        "mul", "mul", Rule(axis=1, classes=("conv1",), tied=("conv2",), zeros="010110"), id="mul-zero-if-either"
    ),
    pytest.param(
        "div", "truediv", Rule(axis=1, classes=("conv1",), tied=("conv2", "add"), zeros="010100"),
        id="div-zero-where-the-numerator-is",
    ),
    pytest.param("mul_zero", "mul", Rule(axis=1, classes=("conv1",), zeros="111111"), id="mul-by-zero-is-zero"),
    pytest.param("add_scalar", "add", Rule(axis=1, classes=("conv1",), zeros="000000"), id="add-scalar-is-not-zero"),
    pytest.param(
        "broadcast", "add",
        Rule(axis=1, classes=("conv1",), apart=("gate",), zeros="000000", reads={"gate": "whole:1"}),
        id="add-broadcast-operand-read-whole",
    ),
    pytest.param(
        "broadcast_mul", "mul",
        Rule(axis=1, classes=("conv1",), apart=("gate",), zeros="010100", reads={"gate": "whole:1"}),
        id="mul-broadcast-operand-read-whole",
    ),
    pytest.param(
        "add_attr", "offset", Rule(axis=1, fresh=True, tied=("conv1",), zeros="010100"), id="attribute-tied-by-add"
    ),
    # Concat: along the channel axis ids concatenate; along another axis they are tied
    pytest.param(
        "cat", "cat", Rule(axis=1, classes=("conv1", "conv2"), apart=("x",), zeros="0100001"),
        id="cat-concatenates-channels",
    ),
    pytest.param(
        "cat_other_axis", "cat", Rule(axis=1, classes=("conv1",), tied=("conv2",), zeros="0001"),
        id="cat-other-axis-ties",
    ),
    # Split / SplitPiece: a piece along the channel axis holds its range; along another axis, every channel
    pytest.param("split", "split", Rule(axis=None), id="split-itself-carries-no-layout"),
    pytest.param(
        "split", "getitem", Rule(axis=1, classes=(("conv1", slice(0, 2)),), zeros="01"), id="split-first-piece"
    ),
    pytest.param(
        "split", "getitem_1", Rule(axis=1, classes=(("conv1", slice(2, 6)),), zeros="0010"), id="split-second-piece"
    ),
    pytest.param(
        "split_method", "getitem_2", Rule(axis=1, classes=(("conv1", slice(4, 6)),), zeros="10"),
        id="split-method-last-piece",
    ),
    pytest.param(
        "chunk", "getitem_1", Rule(axis=1, classes=(("conv1", slice(3, 6)),), zeros="010"), id="chunk-second-piece"
    ),
    pytest.param(
        "split_other_axis", "getitem_1", Rule(axis=1, classes=("conv1",), zeros="010010"), id="split-other-axis-piece"
    ),
    # Slice
    pytest.param("narrow", "narrow", Rule(axis=1, classes=(("conv1", slice(1, 4)),), zeros="010"), id="narrow"),
    pytest.param(
        "narrow_method", "narrow", Rule(axis=1, classes=(("conv1", slice(2, 4)),), zeros="00"),
        id="narrow-method-negative-start",
    ),
    pytest.param(
        "getitem_slice", "getitem", Rule(axis=1, classes=(("conv1", slice(1, 4)),), zeros="010"),
        id="getitem-channel-slice",
    ),
    pytest.param(
        "getitem_spatial", "getitem", Rule(axis=1, classes=("conv1",), zeros="001000"), id="getitem-spatial-slice"
    ),
    # Flatten: each channel becomes `repeat` consecutive features; a linear layer reads them per channel
    pytest.param(
        "flatten", "flatten", Rule(axis=1, classes=("conv1",), repeat=4, zeros="0100"), id="flatten-repeats-channels"
    ),
    pytest.param(
        "flatten", "fc", Rule(**PRODUCER, zeros="000", reads={"flatten": "consumer:1010"}),
        id="linear-reads-flattened-channels",
    ),
    pytest.param(
        "flatten_module", "flat", Rule(axis=1, classes=("conv1",), repeat=4, zeros="0000"), id="flatten-module"
    ),
    pytest.param(
        "view_constant", "view", Rule(axis=1, classes=("conv1",), repeat=4, zeros="0100"),
        id="view-literal-size-flattens",  # its literal size is rewritten (below)
    ),
    # Reshape + Permute: a channel shuffle ties channel k of every group and interleaves the groups
    pytest.param(
        "shuffle", "view", Rule(axis=1, classes=(("conv1", (0, 1, 2, 0, 1, 2)),), split=2, zeros="010000"),
        id="shuffle-reshape-into-groups-ties-ranks",
    ),
    pytest.param(
        "shuffle", "transpose", Rule(axis=1, classes=(("conv1", (0, 0, 1, 1, 2, 2)),), split=3, zeros="001000"),
        id="shuffle-transpose-interleaves",
    ),
    pytest.param(
        "shuffle", "reshape", Rule(axis=1, classes=(("conv1", (0, 3, 1, 4, 2, 5)),), zeros="001000"),
        id="shuffle-reshape-back-merges",
    ),
    pytest.param("permute", "permute", Rule(axis=3, classes=("conv1",), zeros="010100"), id="permute-moves-the-axis"),
    pytest.param(
        "permute", "fc", Rule(axis=3, fresh=True, zeros="0000", reads={"permute": "consumer:101001"}),
        id="linear-reads-permuted-channels",
    ),
    pytest.param("transpose", "transpose", Rule(axis=3, classes=("conv1",), zeros="000000"), id="torch.transpose"),
    # Reduce: over other axes, ids kept (the channel axis moves down past reduced axes unless keepdim)
    pytest.param("reduce", "mean", Rule(axis=1, classes=("conv1",), zeros="010100"), id="mean-over-space"),
    pytest.param("reduce_keepdim", "sum_1", Rule(axis=1, classes=("conv1",), zeros="010100"), id="sum-keepdim"),
    pytest.param(
        "reduce_channels", "mean", Rule(axis=None, reads={"conv1": "consumer:101011"}),
        id="mean-over-channels-reads-non-zero-channels",
    ),
    pytest.param(
        "normalize", "normalize",
        Rule(axis=1, classes=("conv1",), zeros="010100", reads={"conv1": "consumer:101011"}),
        id="normalize-over-channels-reads-non-zero-channels-keeps-zeros",
    ),
    pytest.param(
        "amax_channels", "amax", Rule(axis=None, reads={"conv1": "whole:111111"}, barrier="does not match"),
        id="amax-over-channels-is-a-barrier",
    ),
    # Metadata, Output, Source, Unknown
    pytest.param("flatten_view", "size", Rule(axis=None), id="size-reads-no-channel"),
    pytest.param("conv", "output", Rule(axis=None, reads={"conv2": "whole:1111"}), id="output-reads-everything"),
    pytest.param("conv", "x", Rule(axis=1, fresh=True, fixed=True, zeros="000"), id="input-channels-are-fixed"),
    pytest.param(
        "cumsum", "cumsum",
        Rule(axis=1, fresh=True, fixed=True, zeros="0000", reads={"conv1": "whole:1111"}, barrier="no handler"),
        id="cumsum-over-channels-is-a-barrier",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("model", "node", "rule"), CHANNEL_RULES)
def test_channel_rule(model: str, node: str, rule: Rule) -> None:
    analysis = analysis_of(model)
    reads = {r.source: describe_read(r.needed, r.consumer, r.groups) for r in analysis.reads if r.reader == node}
    assert reads == rule.reads
    if rule.barrier is None:
        assert node not in analysis.barriers
    else:
        assert rule.barrier in analysis.barriers[node] and isinstance(analysis.roles[node], Unknown)
    if rule.axis is None:
        assert node not in analysis.layouts
        return
    layout = analysis.layouts[node]
    assert (layout.axis, layout.repeat, layout.split) == (rule.axis, rule.repeat, rule.split)
    assert len(layout.ids) == len(rule.zeros)
    assert analysis.zeros[node] == bits(rule.zeros)
    if rule.fresh:
        assert [analysis.owner[i] for i in layout.ids] == [node] * len(layout.ids)
        assert [i in analysis.fixed for i in layout.ids] == [rule.fixed] * len(layout.ids)
    if rule.classes:
        assert analysis.classes(node) == expected_classes(analysis, rule.classes)
    for other in rule.tied:
        assert analysis.classes(other) == analysis.classes(node), f"not tied to {other}"
    for other in rule.apart:
        assert not set(analysis.classes(other)) & set(analysis.classes(node)), f"tied to {other}"


# -- rewrite ------------------------------------------------------------------------------------------------------

PHYSICAL = None  # a slice's indices: the node's kept channels in the plan's physical order


def rewritten(model: str, node: str) -> tuple[ChannelPlan, Any]:
    """The plan for ``model`` and what ``node``'s handler alone adds to it."""
    plan = planned(model)
    analysis = analysis_of(model)
    context = RewriteContext(analysis, plan.physical, {access.node: access for access in plan.accesses})
    updates = Updates()
    analysis.handler(node).rewrite(node, analysis.roles[node], context, updates)
    return plan, updates


def kept(name: str, axis: int, indices: tuple[int, ...] | None, size: int, groups: int = 1) -> tuple:
    return (name, axis, indices, size, groups)


REWRITES = [
    # Weighted: rows (and bias) in physical order with the output-size attribute; columns with the input-size one
    pytest.param(
        "conv", "conv1",
        [kept("conv1.weight", 0, (0, 2, 5), 6), kept("conv1.bias", 0, (0, 2, 5), 6)],
        {("conv1", "out_channels"): 3, ("conv1", "in_channels"): 3}, [],
        id="conv-keeps-unmasked-rows",  # row 4 is needed by nobody: conv2's column 4 is zero
    ),
    pytest.param(
        "conv", "conv2", [kept("conv2.weight", 1, (0, 2, 5), 6)],
        {("conv2", "out_channels"): 4, ("conv2", "in_channels"): 3}, [], id="conv-keeps-needed-columns",
    ),
    pytest.param(
        "conv_transpose", "ct1",
        [kept("ct1.weight", 1, (0, 2, 4, 5), 6), kept("ct1.bias", 0, (0, 2, 4, 5), 6)],
        {("ct1", "out_channels"): 4, ("ct1", "in_channels"): 3}, [], id="conv-transpose-rows-on-axis-1",
    ),
    pytest.param(
        "conv_transpose", "ct2", [kept("ct2.weight", 0, (0, 2, 4, 5), 6)],
        {("ct2", "out_channels"): 4, ("ct2", "in_channels"): 4}, [], id="conv-transpose-columns-on-axis-0",
    ),
    pytest.param(
        "linear", "fc1", [kept("fc1.weight", 0, (0, 2, 4, 5), 6), kept("fc1.bias", 0, (0, 2, 4, 5), 6)],
        {("fc1", "out_features"): 4, ("fc1", "in_features"): 3}, [], id="linear-rows",
    ),
    pytest.param(
        "linear", "fc2", [kept("fc2.weight", 1, (0, 2, 4, 5), 6)],
        {("fc2", "out_features"): 4, ("fc2", "in_features"): 4}, [], id="linear-columns",
    ),
    pytest.param(
        "functional_conv", "conv2d", [kept("w1", 0, (0, 2, 4, 5), 6), kept("b1", 0, (0, 2, 4, 5), 6)], {}, [],
        id="F.conv2d-rows-of-attributes",
    ),
    pytest.param(
        "functional_conv", "conv2d_1", [kept("w2", 1, (0, 2, 4, 5), 6)], {}, [], id="F.conv2d-columns-of-attributes"
    ),
    pytest.param(
        "functional_linear", "linear", [kept("w1", 0, (0, 2, 4, 5), 6), kept("b1", 0, (0, 2, 4, 5), 6)], {}, [],
        id="F.linear-rows",
    ),
    pytest.param("functional_linear", "linear_1", [kept("w2", 1, (0, 2, 4, 5), 6)], {}, [], id="F.linear-columns"),
    # Grouped: each group keeps its own columns (positions within the group)
    pytest.param(
        "grouped", "grouped", [kept("grouped.weight", 1, (0, 2, 3, 0, 1, 3), 4, groups=2)],
        {("grouped", "out_channels"): 4, ("grouped", "in_channels"): 6}, [], id="grouped-conv-columns-per-group",
    ),
    # PerChannel: every per-channel tensor, and the count attributes (or F.conv2d's groups argument)
    pytest.param(
        "batchnorm", "bn",
        [kept(f"bn.{t}", 0, (0, 2, 3, 5), 6) for t in ("weight", "bias", "running_mean", "running_var")],
        {("bn", "num_features"): 4}, [], id="batchnorm-module",
    ),
    pytest.param(
        "functional_batchnorm", "batch_norm", [kept(t, 0, (0, 2, 3, 5), 6) for t in ("w", "b", "mean", "var")], {}, [],
        id="F.batch_norm",
    ),
    pytest.param(
        "depthwise", "dw", [kept("dw.weight", 0, (0, 2, 5), 6)],
        {("dw", "in_channels"): 3, ("dw", "out_channels"): 3, ("dw", "groups"): 3}, [], id="depthwise-conv",
    ),
    pytest.param(
        "functional_depthwise", "conv2d", [kept("dw", 0, (0, 2, 5), 6)], {},
        [ArgUpdate(node="conv2d", index=6, keyword="groups", value=3)], id="F.conv2d-depthwise-groups-argument",
    ),
    pytest.param(
        "registered", "scale", [kept("scale.gain", 0, (0, 2, 5), 6), kept("scale.shift", 0, (0, 2, 5), 6)],
        {("scale", "channels"): 3}, [], id="registered-per-channel-module",
    ),
    # LayerNorm: reordered with the channels it normalises (never narrowed: it reads them all)
    pytest.param(
        "layernorm", "ln", [kept("ln.weight", 0, PHYSICAL, 6), kept("ln.bias", 0, PHYSICAL, 6)],
        {("ln", "normalized_shape"): (6,)}, [], id="layernorm-module-reordered",
    ),
    pytest.param(
        "functional_layernorm", "layer_norm", [kept("ln.weight", 0, PHYSICAL, 6), kept("ln.bias", 0, PHYSICAL, 6)], {},
        [ArgUpdate(node="layer_norm", index=1, keyword="normalized_shape", value=(6,))],
        id="F.layer_norm-normalized-shape-argument",
    ),
    # PReLU: a per-channel weight is resliced with num_parameters; a shared one is left alone
    pytest.param(
        "prelu", "act", [kept("act.weight", 0, (0, 2, 5), 6)], {("act", "num_parameters"): 3}, [],
        id="prelu-module-per-channel-weight",
    ),
    pytest.param("prelu_shared", "act", [], {}, [], id="prelu-module-shared-weight"),
    pytest.param("functional_prelu", "prelu", [kept("a", 0, (0, 2, 4, 5), 6)], {}, [], id="F.prelu-weight"),
    # GetAttr: an attribute tied to channels is resliced with them
    pytest.param("add_attr", "offset", [kept("offset", 1, (0, 2, 4, 5), 6)], {}, [], id="attribute-tied-by-add"),
    # Split / Slice: sizes and bounds count the kept channels of each range
    pytest.param(
        "split", "split", [], {}, [ArgUpdate(node="split", index=1, keyword="split_size_or_sections", value=(1, 3))],
        id="torch.split-sizes-recounted",
    ),
    pytest.param(
        "split_method", "split", [], {}, [ArgUpdate(node="split", index=1, keyword="split_size", value=(1, 2, 1))],
        id="split-method-size-becomes-sizes",
    ),
    pytest.param("chunk", "chunk", [], {}, [], id="chunk-keeps-its-count"),
    pytest.param("split_other_axis", "split", [], {}, [], id="split-other-axis-unchanged"),
    pytest.param(
        "narrow", "narrow", [], {},
        [ArgUpdate(node="narrow", index=2, keyword="start", value=1),
         ArgUpdate(node="narrow", index=3, keyword="length", value=2)],
        id="narrow-bounds-recounted",
    ),
    pytest.param(
        "getitem_slice", "getitem", [], {},
        [ArgUpdate(node="getitem", index=1, keyword="", value=(slice(None), slice(1, 3)))],
        id="getitem-slice-bounds-recounted",
    ),
    pytest.param("getitem_spatial", "getitem", [], {}, [], id="getitem-spatial-slice-unchanged"),
    # a view's literal size for the channels: 4 features per kept channel (conv1's row 1 is removed)
    pytest.param(
        "view_constant", "view", [], {}, [ArgUpdate(node="view", index=2, keyword="", value=12)],
        id="view-literal-size-recounted",
    ),
    pytest.param("flatten_view", "view", [], {}, [], id="view-computed-size-unchanged"),
    # the value's head 1 is zero: head 1 goes, so the head count and the merged width (a literal beside computed
    # sizes) shrink
    pytest.param(
        "attention", "reshape", [], {}, [ArgUpdate(node="reshape", index=4, keyword="", value=1)],
        id="heads-count-recounted",
    ),
    pytest.param(
        "attention", "reshape_1", [], {}, [ArgUpdate(node="reshape_1", index=3, keyword="", value=2)],
        id="merged-heads-literal-recounted",
    ),
    pytest.param(
        "attention_manual", "reshape_1", [], {}, [], id="merged-heads-minus-one-unchanged",
    ),
    # Flatten: a linear layer after it keeps `repeat` columns per kept channel
    pytest.param(
        "flatten", "fc", [kept("fc.weight", 1, (0, 1, 2, 3, 8, 9, 10, 11), 16)],
        {("fc", "out_features"): 3, ("fc", "in_features"): 8}, [], id="linear-after-flatten-keeps-feature-blocks",
    ),
    pytest.param(
        "permute", "fc", [kept("fc.weight", 1, (0, 2, 5), 6)], {("fc", "out_features"): 4, ("fc", "in_features"): 3},
        [], id="linear-after-permute",
    ),
    # no parameters: nothing to rewrite
    pytest.param("conv", "act", [], {}, [], id="pointwise-nothing"),
    pytest.param("add_attr", "add", [], {}, [], id="elementwise-nothing"),
    pytest.param("cat", "cat", [], {}, [], id="cat-nothing"),
    pytest.param("flatten", "flatten", [], {}, [], id="flatten-nothing"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "node", "slices", "attrs", "args"), REWRITES)
def test_rewrite(model: str, node: str, slices: list[tuple], attrs: dict, args: list[ArgUpdate]) -> None:
    plan, updates = rewritten(model, node)
    physical = plan.physical.get(node)
    expected = [
        ParamSlice(name=name, axis=axis, indices=physical if indices is PHYSICAL else indices, size_before=size,
                   groups=groups)
        for name, axis, indices, size, groups in slices
    ]  # fmt: skip
    assert updates.slices == expected
    assert {(u.module, u.attr): u.value for u in updates.attrs} == attrs
    assert updates.args == args
    # the plan holds what the handler says
    assert all(s in plan.param_slices for s in updates.slices)
    assert all(a in plan.attr_updates for a in updates.attrs)
    assert all(a in plan.arg_updates for a in updates.args)


def test_the_layernorm_case_reorders_its_channels() -> None:
    """The LayerNorm rewrite cases mean something only if the plan reorders (fc3 reads a range of fc1)."""
    for model, node in (("layernorm", "ln"), ("functional_layernorm", "layer_norm")):
        order = planned(model).physical[node]
        assert sorted(order) == list(range(6)) and order != tuple(range(6))


def shared_parameter_models() -> list[Any]:
    layer_norm = Net(
        lambda s, x: (lambda y: (s.fc2(F.layer_norm(y, (6,), s.ln.weight, s.ln.bias)), s.fc3(y), s.ln(x)))(s.fc1(x)),
        fc1=linear(6, 6), ln=layernorm(6), fc2=linear(6, 4), fc3=linear(6, 4, columns=(1, 3)),
    )  # fmt: skip
    conv2d = Net(
        lambda s, x: (s.conv2(s.conv1(x)), s.conv3(F.conv2d(x, s.conv1.weight))),
        conv1=conv(3, 6, rows=(1,)), conv2=conv(6, 4), conv3=conv(6, 4, columns=(3,)),
    )  # fmt: skip
    return [
        pytest.param(layer_norm, (3, 6), "layer_norm", id="F.layer_norm-and-its-LayerNorm-module"),
        pytest.param(conv2d, image(), None, id="F.conv2d-and-the-conv-module-owning-its-weight"),
    ]


@pytest.mark.parametrize(("model", "shape", "refused"), shared_parameter_models())
def test_a_parameter_shared_by_a_module_and_a_functional_op_is_never_resliced_for_one_of_them(
    model: nn.Module, shape: tuple, refused: str | None
) -> None:
    """Neither reader may reslice a tensor the other reads: both become barriers, so the export is exact, or it
    refuses the segment with an error naming the node that reads the shared tensor."""
    torch.manual_seed(0)
    model = model.double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    if refused is not None:
        with pytest.raises(fx_upscale.UnsupportedOpError, match=f"node '{refused}'.*read by this node alone"):
            fx_upscale.export(model, x)
        return
    result = fx_upscale.export(model, x)
    with torch.no_grad():
        expected = model(x)
    assert max_abs_diff(result.module(x), expected) <= 1e-9


# -- masking rule, output weight, creates channels -----------------------------------------------------------------

CHOOSES = Masking(chooses=True, owns_free_channels=True)
THROUGH = Masking(carry=Carry.THROUGH, ranks_after=True)
MASKING = [
    pytest.param("conv", "conv1", CHOOSES, "conv1.weight", True, id="conv-chooses"),
    pytest.param("conv_transpose", "ct1", CHOOSES, "ct1.weight", True, id="conv-transpose-chooses"),
    pytest.param("linear", "fc1", CHOOSES, "fc1.weight", True, id="linear-chooses"),
    pytest.param("functional_conv", "conv2d", CHOOSES, "w1", True, id="F.conv2d-chooses"),
    pytest.param("grouped", "grouped", Masking(), "grouped.weight", True, id="grouped-conv-is-not-chosen"),
    pytest.param(
        "batchnorm", "bn",
        Masking(carry=Carry.PER_CHANNEL, per_channel_weight="bn.weight", per_channel_input="conv1", ranks_after=True),
        "bn.weight", False, id="batchnorm-carries-per-channel-with-its-weight",
    ),
    pytest.param("batchnorm_plain", "bn", Masking(ranks_after=True), None, False, id="batchnorm-without-affine"),
    pytest.param(
        "functional_batchnorm", "batch_norm",
        Masking(carry=Carry.PER_CHANNEL, per_channel_weight="w", per_channel_input="conv1", ranks_after=True),
        "w", False, id="F.batch_norm-carries-per-channel",
    ),
    pytest.param(
        "depthwise", "dw", Masking(carry=Carry.PER_CHANNEL, per_channel_weight="dw.weight", per_channel_input="conv1"),
        "dw.weight", False, id="depthwise-conv-carries-per-channel",
    ),
    pytest.param(
        "registered", "scale",
        Masking(carry=Carry.PER_CHANNEL, per_channel_weight="scale.gain", per_channel_input="conv1"),
        "scale.gain", False, id="registered-module-carries-per-channel",
    ),
    pytest.param(
        "layernorm", "ln", Masking(reads_every_channel=True), "ln.weight", False, id="layernorm-reads-every-channel"
    ),
    pytest.param(
        "functional_layernorm", "layer_norm", Masking(reads_every_channel=True), "ln.weight", False,
        id="F.layer_norm-reads-every-channel",
    ),
    pytest.param("conv", "act", THROUGH, None, False, id="relu-through"),
    pytest.param("sigmoid", "sigmoid", THROUGH, None, False, id="sigmoid-through"),
    pytest.param("prelu", "act", THROUGH, None, False, id="prelu-through"),
    pytest.param("add", "add", Masking(), None, False, id="add-stops"),
    pytest.param("cat", "cat", Masking(), None, False, id="cat-stops"),
    pytest.param("split", "getitem", Masking(), None, False, id="split-piece-stops"),
    pytest.param("narrow", "narrow", Masking(), None, False, id="narrow-stops"),
    pytest.param("flatten", "flatten", Masking(), None, False, id="flatten-stops"),
    pytest.param("shuffle", "transpose", Masking(), None, False, id="permute-stops"),
    pytest.param("reduce", "mean", Masking(), None, False, id="reduce-stops"),
    pytest.param("flatten_view", "size", Masking(), None, False, id="metadata-stops"),
    pytest.param("conv", "x", Masking(owns_free_channels=True), None, False, id="input-owns-its-channels"),
    pytest.param("add_attr", "offset", Masking(owns_free_channels=True), None, False, id="attribute-owns-its-channels"),
    pytest.param("conv", "output", Masking(), None, False, id="output-stops"),
    pytest.param("cumsum", "cumsum", Masking(), None, False, id="unknown-stops"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "node", "masking", "weight", "creates"), MASKING)
def test_masking_rule(model: str, node: str, masking: Masking, weight: str | None, creates: bool) -> None:
    analysis = analysis_of(model)
    handler, role = analysis.handler(node), analysis.roles[node]
    assert handler.masking(role) == masking
    assert handler.output_weight(role) == weight
    assert handler.creates_channels(role) is creates


# -- invariants ---------------------------------------------------------------------------------------------------


def resliced(module: nn.Module, **views: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """``module`` with tensors replaced by a view of themselves (its attributes left as they were)."""
    for name, view in views.items():
        tensor = view(getattr(module, name).detach()).clone()
        setattr(module, name, nn.Parameter(tensor) if isinstance(getattr(module, name), nn.Parameter) else tensor)
    return module


def with_attrs(module: nn.Module, **attrs: Any) -> nn.Module:
    for name, value in attrs.items():
        setattr(module, name, value)
    return module


def rows(n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t[:n]


def columns(n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t[:, :n]


INVARIANTS = [
    pytest.param(Weighted, lambda: nn.Conv2d(3, 4, 1), [], id="conv-consistent"),
    pytest.param(
        Weighted, lambda: resliced(nn.Conv2d(3, 4, 1), weight=rows(2), bias=rows(2)),
        [Mismatch("out_channels", 4, 2)], id="conv-out_channels-not-updated",
    ),
    pytest.param(
        Weighted, lambda: resliced(nn.Conv2d(3, 4, 1), weight=columns(2)), [Mismatch("in_channels", 3, 2)],
        id="conv-in_channels-not-updated",
    ),
    pytest.param(
        Weighted, lambda: with_attrs(resliced(nn.Conv2d(3, 4, 1), weight=rows(2)), out_channels=2),
        [Mismatch("bias length", 4, 2)], id="conv-bias-not-sliced",
    ),
    pytest.param(Weighted, lambda: nn.Conv2d(4, 6, 1, groups=2), [], id="grouped-conv-consistent"),
    pytest.param(
        Weighted, lambda: resliced(nn.Conv2d(4, 6, 1, groups=2), weight=columns(1)), [Mismatch("in_channels", 4, 2)],
        id="grouped-conv-in_channels-counts-every-group",
    ),
    pytest.param(
        Weighted,
        lambda: with_attrs(resliced(nn.Conv2d(4, 4, 3, groups=4, bias=False), weight=rows(3)), in_channels=3,
                           out_channels=3),
        [Mismatch("in_channels", 3, 4)], id="depthwise-conv-groups-not-updated",
    ),
    pytest.param(Weighted, lambda: nn.ConvTranspose2d(3, 6, 1), [], id="conv-transpose-consistent"),
    pytest.param(
        Weighted, lambda: resliced(nn.ConvTranspose2d(3, 6, 1), weight=rows(2)), [Mismatch("in_channels", 3, 2)],
        id="conv-transpose-in_channels-is-axis-0",
    ),
    pytest.param(
        Weighted, lambda: resliced(nn.ConvTranspose2d(3, 6, 1), weight=columns(4), bias=rows(4)),
        [Mismatch("out_channels", 6, 4)], id="conv-transpose-out_channels-is-axis-1",
    ),
    pytest.param(Weighted, lambda: nn.Linear(3, 4), [], id="linear-consistent"),
    pytest.param(
        Weighted, lambda: resliced(nn.Linear(3, 4), weight=columns(2)), [Mismatch("in_features", 3, 2)],
        id="linear-in_features-not-updated",
    ),
    pytest.param(
        Weighted, lambda: resliced(nn.Linear(3, 4), weight=rows(2), bias=rows(2)), [Mismatch("out_features", 4, 2)],
        id="linear-out_features-not-updated",
    ),
    pytest.param(
        Weighted, lambda: with_attrs(resliced(nn.Linear(3, 4), weight=rows(2)), out_features=2),
        [Mismatch("bias length", 4, 2)], id="linear-bias-not-sliced",
    ),
    pytest.param(PerChannel, lambda: nn.BatchNorm2d(4), [], id="batchnorm-consistent"),
    pytest.param(
        PerChannel,
        lambda: resliced(nn.BatchNorm2d(4), weight=rows(3), bias=rows(3), running_mean=rows(3), running_var=rows(3)),
        [Mismatch("num_features", 4, 3)], id="batchnorm-num_features-not-updated",
    ),
    pytest.param(
        PerChannel, lambda: resliced(nn.BatchNorm2d(4, affine=False), running_mean=rows(3), running_var=rows(3)),
        [Mismatch("num_features", 4, 3)], id="batchnorm-without-affine-num_features-not-updated",
    ),
    pytest.param(PReLU, lambda: nn.PReLU(4), [], id="prelu-consistent"),
    pytest.param(PReLU, lambda: nn.PReLU(), [], id="prelu-shared-consistent"),
    pytest.param(
        PReLU, lambda: resliced(nn.PReLU(4), weight=rows(3)), [Mismatch("num_parameters", 4, 3)],
        id="prelu-num_parameters-not-updated",
    ),
    pytest.param(LayerNorm, lambda: nn.LayerNorm(4), [], id="layernorm-consistent"),
    pytest.param(
        LayerNorm, lambda: resliced(nn.LayerNorm(4), weight=rows(3), bias=rows(3)),
        [Mismatch("normalized_shape", (4,), (3,))], id="layernorm-normalized_shape-not-updated",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("owner", "build", "mismatches"), INVARIANTS)
def test_invariant(owner: type, build: Callable[[], nn.Module], mismatches: list[Mismatch]) -> None:
    module = build()
    assert handler_of(owner).invariant(module) == mismatches
    for handler in default_handlers().handlers():  # no other handler reports on a module it does not own
        if handler.role is not owner:
            assert handler.invariant(module) == [], type(handler).__name__
