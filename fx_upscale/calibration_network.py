"""The network :func:`fx_upscale.cost_model.calibrate` measures an op's in-forward cost on (``context_seconds``):
inverted-residual, bottleneck and concatenating blocks with squeeze-and-excitation gates, at the channel counts a
pruning leaves. Start reading at :class:`CalibrationNetwork`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CalibrationBlock(nn.Module):
    """A block of :class:`CalibrationNetwork`: a 1x1 convolution widening to ``hidden`` channels, a 3x3 one
    (depthwise if ``depthwise``), a squeeze-and-excitation gate if ``gate``, a 1x1 convolution to ``out``
    channels, each followed by a BatchNorm (and a ReLU6 but the last); the input is added back where the shape
    allows, or concatenated if ``concat``."""

    def __init__(self, channels: int, hidden: int, out: int, *, stride: int = 1, depthwise: bool = True,
                 gate: bool = False, concat: bool = False) -> None:  # fmt: skip
        super().__init__()
        groups = hidden if depthwise else 1
        self.body = nn.Sequential(
            *_conv_bn(channels, hidden, 1), *_conv_bn(hidden, hidden, 3, stride, groups),
            *([_Gate(hidden)] if gate else []), *_conv_bn(hidden, out, 1, act=False),
        )  # fmt: skip
        self.residual = stride == 1 and channels == out and not concat
        self.concat = concat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.concat:
            return torch.cat([x, y], 1)
        return x + y if self.residual else y


class _Gate(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> list:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out), *([nn.ReLU6(inplace=True)] if act else [])]


class CalibrationNetwork(nn.Sequential):
    """What :func:`calibrate` measures the in-forward cost of an op on (``context_seconds``): inverted-residual,
    bottleneck and concatenating blocks, with gates, at the channel counts a pruning leaves (not multiples of 8),
    for a 128x128 image; none of the models the README measures."""

    def __init__(self) -> None:
        super().__init__(
            *_conv_bn(3, 27, 3, 2),
            CalibrationBlock(27, 83, 29, stride=2),
            CalibrationBlock(29, 101, 29, gate=True),
            CalibrationBlock(29, 61, 29, depthwise=False),
            CalibrationBlock(29, 139, 43, stride=2, gate=True),
            CalibrationBlock(43, 259, 43, gate=True),
            CalibrationBlock(43, 117, 21, depthwise=False, concat=True),
            CalibrationBlock(64, 259, 86, stride=2),
            CalibrationBlock(86, 339, 86, gate=True),
            CalibrationBlock(86, 173, 86, depthwise=False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(86, 10),
        )  # fmt: skip
