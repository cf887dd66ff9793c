"""A zoo of small architectures, one graph pattern each, exported exactly (float64, tiny sizes).

Every zoo module × spec kind (``mask`` by magnitude, or a seeded random spec) × side × amount × mode
(baseline, upscale): the export equals the masked model within 1e-9, ``report.gathers`` counts the graph's
``index_select`` nodes, upscale never copies more than baseline, and the caller's model is left untouched.
Mode ``constrained`` never gathers and, with ``method="constrained"`` masks, is exact with no extra channels
dropped. The exported module re-traces, reloads its own state dict and has module attributes that match its
(pruned) weights.

Each zoo class names, for the random spec, the weights of the layers that read the graph input (``first``:
their input columns are not masked) and of the layers that write the graph output (``last``: their filters are
not masked).
"""

from __future__ import annotations

import functools
import operator
import random
import zlib

import pytest
import torch
import torch.nn.functional as F
from support import assert_exact, gathers_in_graph, randomize_batchnorm
from torch import nn

import fx_upscale

# ------------------------------------------------------------------------------------------------------------
# The zoo
# ------------------------------------------------------------------------------------------------------------


class Zoo(nn.Module):
    input_shape: tuple[int, ...] = (2, 3, 8, 8)
    first: tuple[str, ...] = ()  # weights of layers reading the graph input
    last: tuple[str, ...] = ()  # weights of layers writing the graph output
    functional: tuple[str, ...] = ()  # get_attr weights of F.conv*/F.linear with groups=1 (random spec)
    functional_depthwise: tuple[str, ...] = ()  # get_attr weights of depthwise F.conv2d (filters only)


class ConvBias(Zoo):
    """1. Conv2d with bias."""

    first, last = ("conv1.weight",), ("conv3.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.conv3 = nn.Conv2d(12, 6, 3, padding=1)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


class ConvNoBias(Zoo):
    """2. Conv2d without bias, BatchNorm2d after each."""

    first, last = ("conv1.weight",), ("conv3.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 10, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(10)
        self.relu = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(10, 6, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class Conv1dNet(Zoo):
    """3a. Conv1d with BatchNorm1d."""

    input_shape = (2, 4, 12)
    first, last = ("conv1.weight",), ("conv3.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 12, 3)
        self.bn2 = nn.BatchNorm1d(12)
        self.conv3 = nn.Conv1d(12, 5, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class Conv3dNet(Zoo):
    """3b. Conv3d with BatchNorm3d."""

    input_shape = (2, 3, 4, 6, 6)
    first, last = ("conv1.weight",), ("conv3.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(8)
        self.conv2 = nn.Conv3d(8, 10, 3, stride=(1, 2, 2), padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(10)
        self.conv3 = nn.Conv3d(10, 6, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class DepthwiseBranch(Zoo):
    """4. Depthwise convs (groups=channels, with and without bias) in two branches, concatenated."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(12)
        self.dw1 = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.pw = nn.Conv2d(12, 10, 1)
        self.dw2 = nn.Conv2d(12, 12, 5, padding=2, groups=12)
        self.head = nn.Conv2d(22, 6, 1)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        a = self.pw(F.relu6(self.bn1(self.dw1(h))))
        b = F.relu(self.dw2(h))
        return self.head(torch.cat([a, b], 1))


class LinearChain(Zoo):
    """5. Linear chain on a 2-D input, with BatchNorm1d, Tanh and Dropout."""

    input_shape = (2, 10)
    first, last = ("fc1.weight",), ("fc4.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.fc2 = nn.Linear(16, 12)
        self.bn = nn.BatchNorm1d(12)
        self.fc3 = nn.Linear(12, 8)
        self.drop = nn.Dropout(0.5)
        self.fc4 = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = torch.tanh(self.bn(self.fc2(x)))
        x = self.drop(F.relu(self.fc3(x)))
        return self.fc4(x)


class ActivationsA(Zoo):
    """6a. BatchNorm2d with ReLU, ReLU6, SiLU, GELU."""

    input_shape = (2, 3, 6, 6)
    first, last = ("conv1.weight",), ("conv5.weight",)

    def __init__(self) -> None:
        super().__init__()
        widths = [3, 8, 10, 8, 12]
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(widths, widths[1:])
        )
        self.bn1, self.bn2, self.bn3, self.bn4 = (nn.BatchNorm2d(b) for b in widths[1:])
        self.acts = nn.ModuleList([nn.ReLU(), nn.ReLU6(), nn.SiLU(), nn.GELU()])
        self.conv5 = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        convs = [self.conv1, self.conv2, self.conv3, self.conv4]
        norms = [self.bn1, self.bn2, self.bn3, self.bn4]
        for conv, norm, act in zip(convs, norms, self.acts):
            x = act(norm(conv(x)))
        return self.conv5(x)


class ActivationsB(Zoo):
    """6b. BatchNorm2d with Hardswish, Sigmoid (f(0) != 0), Tanh, LeakyReLU."""

    input_shape = (2, 3, 6, 6)
    first, last = ("conv1.weight",), ("conv5.weight",)

    def __init__(self) -> None:
        super().__init__()
        widths = [3, 10, 8, 12, 8]
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:])
        )
        self.bn1, self.bn2, self.bn3, self.bn4 = (nn.BatchNorm2d(b) for b in widths[1:])
        self.acts = nn.ModuleList([nn.Hardswish(), nn.Sigmoid(), nn.Tanh(), nn.LeakyReLU(0.1)])
        self.conv5 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        convs = [self.conv1, self.conv2, self.conv3, self.conv4]
        norms = [self.bn1, self.bn2, self.bn3, self.bn4]
        for conv, norm, act in zip(convs, norms, self.acts):
            x = act(norm(conv(x)))
        return self.conv5(x)


class Pooling(Zoo):
    """7. Max/avg/adaptive pooling (module and functional), Dropout, Dropout2d, Identity."""

    first, last = ("conv1.weight",), ("conv5.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 10, 3, padding=1)
        self.pool2 = nn.AvgPool2d(3, stride=1, padding=1)
        self.drop = nn.Dropout(0.3)
        self.drop2d = nn.Dropout2d(0.3)
        self.ident = nn.Identity()
        self.conv3 = nn.Conv2d(10, 12, 3, padding=1)
        self.pool3 = nn.AdaptiveMaxPool2d(3)
        self.conv4 = nn.Conv2d(12, 8, 1)
        self.pool4 = nn.AdaptiveAvgPool2d(2)
        self.conv5 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.ident(self.drop(self.pool2(F.relu(self.conv2(x)))))
        x = self.drop2d(F.max_pool2d(x, 3, stride=1, padding=1))
        x = self.pool3(F.relu(self.conv3(x)))
        x = F.avg_pool2d(self.pool4(F.relu(self.conv4(x))), 1)
        return self.conv5(x)


class FlattenLinear(Zoo):
    """8. Four flatten forms -> Linear, each channel expanding to 9 features (3x3 maps)."""

    first = ("stem.weight",)
    last = ("fc_a.weight", "fc_b.weight", "fc_c.weight", "fc_d.weight")

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        widths = (6, 7, 8, 6)
        self.conv_a, self.conv_b, self.conv_c, self.conv_d = (nn.Conv2d(10, c, 3, padding=1) for c in widths)
        self.pool = nn.MaxPool2d(3, stride=2)  # 8x8 -> 3x3
        self.flatten = nn.Flatten()
        self.fc_a, self.fc_b, self.fc_c, self.fc_d = (nn.Linear(c * 9, 5) for c in widths)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        a = self.pool(F.relu(self.conv_a(h)))
        b = self.pool(F.relu(self.conv_b(h)))
        c = self.pool(F.relu(self.conv_c(h)))
        d = self.pool(F.relu(self.conv_d(h)))
        a = self.fc_a(torch.flatten(a, 1))
        b = self.fc_b(b.flatten(1))
        c = self.fc_c(c.view(c.size(0), -1))
        d = self.fc_d(self.flatten(d))
        return torch.cat([a, b, c, d], 1)


class FlattenChain(Zoo):
    """8b. conv -> view -> Linear -> BatchNorm1d -> Linear (flatten feeding a linear chain)."""

    input_shape = (2, 3, 6, 6)
    first, last = ("conv1.weight",), ("fc2.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)  # 6x6 -> 3x3
        self.fc1 = nn.Linear(6 * 9, 12)
        self.bn = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(F.relu(self.bn(self.fc1(x))))


class Residual(Zoo):
    """9. Residual adds: ``out += identity``, ``operator.add``, ``torch.add``."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        for i in range(3):
            setattr(self, f"conv{i}a", nn.Conv2d(8, 10, 3, padding=1, bias=False))
            setattr(self, f"bn{i}a", nn.BatchNorm2d(10))
            setattr(self, f"conv{i}b", nn.Conv2d(10, 8, 3, padding=1, bias=False))
            setattr(self, f"bn{i}b", nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 6, 1)

    def branch(self, i: int, x):
        x = F.relu(getattr(self, f"bn{i}a")(getattr(self, f"conv{i}a")(x)))
        return getattr(self, f"bn{i}b")(getattr(self, f"conv{i}b")(x))

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        identity = x
        out = self.branch(0, x)
        out += identity
        x = F.relu(out)
        x = F.relu(operator.add(self.branch(1, x), x))
        x = F.relu(torch.add(x, self.branch(2, x)))
        return self.head(x)


class FanOutCat(Zoo):
    """10a. One activation read by four convs; three outputs concatenated, one added on."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.conv_a = nn.Conv2d(12, 6, 1)
        self.conv_b = nn.Conv2d(12, 6, 3, padding=1)
        self.conv_c = nn.Conv2d(12, 6, 3, padding=1)
        self.conv_d = nn.Conv2d(12, 18, 1)
        self.head = nn.Conv2d(18, 6, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        y = torch.cat([self.conv_a(h), self.conv_b(h), self.conv_c(h)], dim=1) + self.conv_d(h)
        return self.head(F.relu(y))


class FanOutSum(Zoo):
    """10b. One activation read by three convs whose outputs are summed."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.conv_a = nn.Conv2d(12, 8, 1)
        self.conv_b = nn.Conv2d(12, 8, 3, padding=1)
        self.conv_c = nn.Conv2d(12, 8, 3, padding=2, dilation=2)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        return self.head(F.relu(self.conv_a(h) + self.conv_b(h) + self.conv_c(h)))


class TwoConsumers(Zoo):
    """10c. One activation read by exactly two convs: a reordering always makes both reads contiguous."""

    first, last = ("stem.weight",), ("conv_a.weight", "conv_b.weight")

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_a = nn.Conv2d(16, 6, 3, padding=1)
        self.conv_b = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        return torch.cat([self.conv_a(h), self.conv_b(h)], 1)


class CatOneConsumer(Zoo):
    """11. cat of three producers on the channel axis -> BatchNorm -> one consumer."""

    first = ("conv1.weight", "conv2.weight", "conv3.weight")
    last = ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(3, 7, 1)
        self.bn = nn.BatchNorm2d(21)
        self.mid = nn.Conv2d(21, 10, 3, padding=1)
        self.head = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        y = torch.cat([F.relu(self.conv1(x)), F.relu(self.conv2(x)), F.relu(self.conv3(x))], dim=1)
        return self.head(F.relu(self.mid(F.relu(self.bn(y)))))


class CatManyConsumers(Zoo):
    """12. A cat read by three consumers (one through a ReLU)."""

    first, last = ("stem.weight",), ("conv_a.weight", "conv_b.weight", "conv_c.weight")

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.p1 = nn.Conv2d(10, 6, 3, padding=1)
        self.p2 = nn.Conv2d(10, 8, 1)
        self.conv_a = nn.Conv2d(14, 4, 1)
        self.conv_b = nn.Conv2d(14, 5, 3, padding=1)
        self.conv_c = nn.Conv2d(14, 3, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        c = torch.cat([self.p1(h), self.p2(h)], 1)
        return torch.cat([self.conv_a(c), self.conv_b(F.relu(c)), self.conv_c(c)], 1)


class NestedCat(Zoo):
    """13. cat(cat(p1, p2), p3), the inner cat also read on its own."""

    first, last = ("stem.weight",), ("head.weight", "side.weight")

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.p1 = nn.Conv2d(8, 6, 3, padding=1)
        self.p2 = nn.Conv2d(8, 5, 1)
        self.p3 = nn.Conv2d(8, 7, 3, padding=1)
        self.head = nn.Conv2d(18, 6, 1)
        self.side = nn.Conv2d(11, 4, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        inner = torch.cat([F.relu(self.p1(h)), F.relu(self.p2(h))], 1)
        outer = torch.cat([inner, F.relu(self.p3(h))], 1)
        return torch.cat([self.head(outer), self.side(inner)], 1)


class SqueezeExcite(Zoo):
    """14a. SE gating ``x * sigmoid(fc2(relu(fc1(pool(x)))))``: mean-reduce and AdaptiveAvgPool2d versions."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.fc1 = nn.Conv2d(12, 4, 1)
        self.fc2 = nn.Conv2d(4, 12, 1)
        self.conv = nn.Conv2d(12, 10, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc3 = nn.Conv2d(10, 3, 1)
        self.fc4 = nn.Conv2d(3, 10, 1)
        self.head = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        h = F.relu(self.conv(h * s))
        s = self.fc4(F.relu(self.fc3(self.pool(h)))).sigmoid()
        return self.head(h * s)


class SpatialAttention(Zoo):
    """14b. Spatial gating ``x * s`` with ``s`` of shape N x 1 x H x W (broadcast over channels)."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.mid = nn.Conv2d(12, 10, 3, padding=1)
        self.attn = nn.Conv2d(10, 1, 3, padding=1)
        self.head = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        h = F.relu(self.mid(F.relu(self.stem(x))))
        s = torch.sigmoid(self.attn(h))
        return self.head(h * s)


class Arithmetic(Zoo):
    """15. sub / mul / div between tensors, and tensor-scalar ops."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.p1 = nn.Conv2d(10, 8, 3, padding=1)
        self.p2 = nn.Conv2d(10, 8, 1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        p1, p2 = self.p1(h), self.p2(h)
        a = p1 - p2
        b = torch.mul(p1, p2)
        c = torch.div(p1, torch.sigmoid(p2) + 0.5)  # denominator > 0.5: no division by a pruned zero
        d = (p1 * 2) + (p2 - 1) + (p1 / 3) + (2 * p2)
        return self.head(a + b + c - d)


class Functional(Zoo):
    """16a. F.conv2d / F.linear on nn.Parameter attributes (get_attr weights), F.relu, adaptive pooling."""

    first, last = ("weight",), ("fc_weight",)
    functional = ("weight", "conv2_weight", "fc_weight")

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(8) * 0.1)
        self.conv2_weight = nn.Parameter(torch.randn(10, 8, 3, 3) * 0.2)
        self.conv2_bias = nn.Parameter(torch.randn(10) * 0.1)
        self.fc_weight = nn.Parameter(torch.randn(5, 10 * 4) * 0.2)
        self.fc_bias = nn.Parameter(torch.randn(5) * 0.1)

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))
        h = F.relu(F.conv2d(h, self.conv2_weight, self.conv2_bias, stride=2, padding=1))
        h = torch.flatten(F.adaptive_avg_pool2d(h, 2), 1)
        return F.linear(h, self.fc_weight, self.fc_bias)


class FunctionalDepthwise(Zoo):
    """16b. A depthwise ``F.conv2d(x, self.dw_weight, None, groups=C)`` between functional convs."""

    first, last = ("weight",), ("head_weight",)
    functional = ("weight", "head_weight")
    functional_depthwise = ("dw_weight",)

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 3, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(10) * 0.1)
        self.dw_weight = nn.Parameter(torch.randn(10, 1, 3, 3) * 0.3)
        self.head_weight = nn.Parameter(torch.randn(6, 10, 1, 1) * 0.3)
        self.head_bias = nn.Parameter(torch.randn(6) * 0.1)

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))
        h = F.relu(F.conv2d(h, self.dw_weight, None, padding=1, groups=10))
        return F.conv2d(h, self.head_weight, self.head_bias)


class _DepthwiseShift(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, 1, 3, 3) * 0.3)
        self.shift = nn.Parameter(torch.randn(channels) * 0.5)  # the bias, under another name
        self.channels = channels

    def forward(self, x):
        return F.conv2d(x, self.weight, self.shift, padding=1, groups=self.channels)


class FunctionalDepthwiseBias(Zoo):
    """16c. A functional depthwise conv with a bias attribute that is not called ``bias``."""

    first, last = ("conv1.weight",), ("head.weight",)
    functional_depthwise = ("dw.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3, padding=1)
        self.dw = _DepthwiseShift(10)
        self.head = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        return self.head(F.relu(self.dw(F.relu(self.conv1(x)))))


class FunctionalBatchNorm(Zoo):
    """16d. ``F.batch_norm`` in inference mode (how Dynamo's graphs hold BatchNorm), on attribute tensors: the
    model's own, and those of an ``nn.BatchNorm2d`` it calls functionally."""

    first, last = ("conv1.weight",), ("conv3.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm_weight = nn.Parameter(torch.rand(8) + 0.5)
        self.norm_bias = nn.Parameter(torch.randn(8) * 0.1)
        self.register_buffer("norm_mean", torch.randn(8) * 0.1)
        self.register_buffer("norm_var", torch.rand(8) + 0.5)
        self.conv2 = nn.Conv2d(8, 10, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(10)
        self.conv3 = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        h = self.conv1(x)
        h = F.batch_norm(h, self.norm_mean, self.norm_var, self.norm_weight, self.norm_bias, False, 0.0, 1e-5)
        h = self.conv2(F.relu(h))
        bn = self.bn
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.conv3(F.relu(h))


class DiamondPointwise(Zoo):
    """17a. producer -> (max pool | avg pool) -> add -> consumer: one consumer reached through two paths."""

    first, last = ("conv1.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(10)
        self.conv2 = nn.Conv2d(10, 12, 3, padding=1)
        self.head = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        p = F.relu(self.conv2(F.relu(self.bn(self.conv1(x)))))
        y = F.max_pool2d(p, 3, stride=1, padding=1) + F.avg_pool2d(p, 3, stride=1, padding=1)
        return self.head(y)


class DiamondConv(Zoo):
    """17b. producer -> two conv branches (with BN) that add back together -> consumer; plus a skip."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.conv_a = nn.Conv2d(10, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(10, 8, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(18, 6, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        s = F.relu(self.bn_a(self.conv_a(h)) + self.bn_b(self.conv_b(h)))
        return self.head(torch.cat([s, h], 1))


class DenseBlock(Zoo):
    """18. DenseNet-like block: three layers, each BN-ReLU-conv reading the whole growing cat."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        width, growth = 8, 4
        for i in range(3):
            setattr(self, f"norm{i}", nn.BatchNorm2d(width))
            setattr(self, f"conv{i}", nn.Conv2d(width, growth, 3, padding=1, bias=False))
            width += growth
        self.norm_out = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 6, 1)

    def forward(self, x):
        features = [self.stem(x)]
        for i in range(3):
            h = torch.cat(features, 1)
            features.append(getattr(self, f"conv{i}")(F.relu(getattr(self, f"norm{i}")(h))))
        return self.head(F.relu(self.norm_out(torch.cat(features, 1))))


class ChannelScale(Zoo):
    """19. Per-channel learnable scale and shift ``x * self.gamma + self.beta`` (get_attr, C x 1 x 1)."""

    first, last = ("conv1.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(10, 1, 1) + 0.5)
        self.beta = nn.Parameter(torch.randn(10, 1, 1) * 0.1)
        self.conv2 = nn.Conv2d(10, 12, 3, padding=1)
        self.gamma2 = nn.Parameter(torch.rand(12, 1, 1) + 0.5)
        self.head = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        h = F.relu(self.conv1(x) * self.gamma + self.beta)
        h = F.relu(self.gamma2 * self.conv2(h))
        return self.head(h)


class TransposedConv(Zoo):
    """20. ConvTranspose2d (groups=1) between convs, with BatchNorm."""

    first, last = ("conv1.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.up = nn.ConvTranspose2d(12, 10, 2, stride=2)
        self.bn2 = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 6, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        x = F.relu(self.bn2(self.up(x)))
        return self.head(x)


class ConvNeXtBlock(Zoo):
    """21. ConvNeXt: depthwise conv, permute to channels-last, LayerNorm, MLP, layer scale, permute back, residual;
    a functional channels-first LayerNorm (as torchvision's LayerNorm2d) before the head."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.layer_scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.norm2d = nn.LayerNorm(8)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        x = x + self.layer_scale * torch.permute(y, (0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.norm2d.normalized_shape, self.norm2d.weight, self.norm2d.bias)
        return self.head(x.permute(0, 3, 1, 2))


class TokenMLP(Zoo):
    """22. ViT-style tokens: patchify, flatten + transpose to (B, N, C), pre-norm MLP with residual, mean pool."""

    first, last = ("patch.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, stride=2)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 20)
        self.fc2 = nn.Linear(20, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.fc2(F.gelu(self.fc1(self.norm(tokens))))
        return self.head(tokens.mean(dim=1))


class WindowReshape(Zoo):
    """23. MaxViT-style windows: reshapes and permutes that split spatial axes and keep the channel axis whole."""

    first, last = ("conv1.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 10)
        self.head = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        b, c, h, w = x.shape
        windows = x.reshape(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1)  # (b, h/4, w/4, 4, 4, c)
        windows = self.fc(windows.reshape(b, (h // 4) * (w // 4), 16, c))
        d = windows.shape[-1]
        y = windows.reshape(b, h // 4, w // 4, 4, 4, d).permute(0, 5, 1, 3, 2, 4).reshape(b, d, h, w)
        return self.head(y)


class ChunkBranches(Zoo):
    """24. ShuffleNet-style split: chunk(2) on channels, one half passed on, the other through a branch, then cat;
    a second block splits with explicit sizes (method and function forms)."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1)
        self.bn = nn.BatchNorm2d(12)
        self.branch1 = nn.Conv2d(6, 6, 1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.branch2 = nn.Conv2d(6, 6, 1)
        self.left = nn.Conv2d(5, 4, 1)
        self.right = nn.Conv2d(7, 4, 1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        kept, branch = x.chunk(2, dim=1)
        x = torch.cat([kept, self.branch2(self.dw(F.relu(self.branch1(branch))))], dim=1)
        a, b = torch.split(x, [5, 7], dim=1)
        return self.head(torch.cat([self.left(a), self.right(F.relu(b))], 1))


class SlicedChannels(Zoo):
    """25. Channel ranges taken by slicing and narrow (Inception's input transform, feature taps)."""

    first, last = ("conv1.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 1)
        self.low = nn.Conv2d(4, 5, 1)
        self.high = nn.Conv2d(6, 5, 1)
        self.head = nn.Conv2d(10, 6, 1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        low = self.low(x[:, 0:4])
        high = self.high(torch.narrow(x, 1, 6, 6) + x[:, :, :, :][:, 6:12])
        return self.head(torch.cat([low, high], dim=1))


class ChannelShuffle(Zoo):
    """26. ShuffleNet V2 unit: chunk, branch, cat, then channel shuffle (view to groups, transpose, view back)."""

    first, last = ("stem.weight",), ("head.weight",)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1)
        self.branch1 = nn.Conv2d(6, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.branch2 = nn.Conv2d(6, 6, 1)
        self.branch3 = nn.Conv2d(6, 6, 1)
        self.head = nn.Conv2d(12, 6, 1)

    @staticmethod
    def shuffle(x, groups: int):
        b, c, h, w = x.size()
        x = x.view(b, groups, c // groups, h, w)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(b, -1, h, w)

    def forward(self, x):
        x = F.relu(self.stem(x))
        kept, branch = x.chunk(2, dim=1)
        x = torch.cat([kept, F.relu(self.branch2(F.relu(self.bn(self.branch1(branch)))))], dim=1)
        x = self.shuffle(x, 2)
        kept, branch = x.chunk(2, dim=1)
        x = self.shuffle(torch.cat([kept, F.relu(self.branch3(branch))], dim=1), 3)
        return self.head(x)


ZOO: dict[str, type[Zoo]] = {
    cls.__name__: cls
    for cls in (
        ConvBias, ConvNoBias, Conv1dNet, Conv3dNet, DepthwiseBranch, LinearChain, ActivationsA, ActivationsB,
        Pooling, FlattenLinear, FlattenChain, Residual, FanOutCat, FanOutSum, TwoConsumers,
        CatOneConsumer, CatManyConsumers,
        NestedCat, SqueezeExcite, SpatialAttention, Arithmetic, Functional, FunctionalDepthwise,
        FunctionalDepthwiseBias, FunctionalBatchNorm, DiamondPointwise, DiamondConv,
        DenseBlock, ChannelScale, TransposedConv, ConvNeXtBlock, TokenMLP, WindowReshape, ChunkBranches,
        SlicedChannels, ChannelShuffle,
    )
}  # fmt: skip

# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def build(name: str) -> tuple[Zoo, torch.Tensor]:
    torch.manual_seed(_seed(name))
    model = randomize_batchnorm(ZOO[name](), seed=_seed(name, "bn")).double().eval()
    generator = torch.Generator().manual_seed(_seed(name, "input"))
    x = torch.randn(model.input_shape, dtype=torch.float64, generator=generator)
    return model, x


def weighted_params(model: Zoo) -> list[tuple[str, int, int]]:
    """(weight name, input channels, output channels) of every conv/linear-like layer of ``model``; 0 input
    channels for a depthwise conv (per-channel: only its filters are masked)."""
    params = dict(model.named_parameters())
    found = []
    for qualname, module in model.named_modules():
        name = f"{qualname}.weight"
        if isinstance(module, _CONV + (nn.Linear,)) and getattr(module, "groups", 1) == 1:
            found.append((name, params[name].shape[1], params[name].shape[0]))
        elif isinstance(module, _CONV_T) and module.groups == 1:
            found.append((name, module.in_channels, module.out_channels))  # weight: (in, out, *kernel)
        elif isinstance(module, _CONV) and module.groups == module.in_channels == module.out_channels:
            found.append((name, 0, module.out_channels))
    found += [(name, params[name].shape[1], params[name].shape[0]) for name in model.functional]
    found += [(name, 0, params[name].shape[0]) for name in model.functional_depthwise]
    return found


def random_spec(model: Zoo, side: str, amount: float, seed: int) -> fx_upscale.PruneSpec:
    """A seeded random spec: ``int(amount * n)`` random input channels / filters per conv/linear layer,
    never all of them, never the input channels of a layer reading the graph input nor the filters of a layer
    writing its output; on the output side also ``int(amount * n)`` random channels of every BatchNorm."""
    rng = random.Random(seed)
    inputs, outputs = {}, {}
    for name, n_in, n_out in weighted_params(model):
        if side in ("input", "both") and n_in > 1 and name not in model.first:
            inputs[name] = rng.sample(range(n_in), min(int(amount * n_in), n_in - 1))
        if side in ("output", "both") and name not in model.last:
            outputs[name] = rng.sample(range(n_out), min(int(amount * n_out), n_out - 1))
    if side in ("output", "both"):  # BatchNorm channels too (weight and bias), independently of the filters
        for qualname, module in model.named_modules():
            if isinstance(module, _NORM):
                n = module.num_features
                outputs[f"{qualname}.weight"] = rng.sample(range(n), int(amount * n))
    spec = fx_upscale.PruneSpec(inputs, outputs)
    assert not spec.is_empty()
    return spec


def make_spec(kind: str, model: Zoo, x: torch.Tensor, side: str, amount: float, name: str):
    if kind == "mask":
        return fx_upscale.mask(model, x, amount=amount, side=side)
    return random_spec(model, side, amount, _seed(name, side, amount))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"export or mask changed the caller's model: {changed}"


def export_checked(model, x, spec, mode) -> fx_upscale.ExportResult:
    result = fx_upscale.export(model, x, spec=spec, mode=mode)
    assert result.report.mode == mode
    assert result.report.gathers == gathers_in_graph(result.module)
    inserted = [node for node in result.module.graph.nodes if "upscale" in node.meta]  # not the model's own
    assert result.report.narrows == sum(node.target is torch.narrow for node in inserted)
    return result


# Per-worker caches, so that the baseline and upscale cases of one spec share the model, the spec and the
# baseline export. Nothing cached is mutated: every test checks the model against its snapshot taken at build.


@functools.cache
def built(name: str) -> tuple[Zoo, torch.Tensor, dict[str, torch.Tensor]]:
    model, x = build(name)
    return model, x, state(model)


@functools.cache
def case(name: str, kind: str, side: str, amount: float) -> tuple[fx_upscale.PruneSpec, nn.Module]:
    model, x, _ = built(name)
    spec = make_spec(kind, model, x, side, amount, name)
    assert not spec.is_empty()
    return spec, spec.apply(model)


@functools.cache
def exported(name: str, kind: str, side: str, amount: float, mode: str) -> fx_upscale.ExportResult:
    model, x, _ = built(name)
    return export_checked(model, x, case(name, kind, side, amount)[0], mode)


# Cases where an export need not remove any parameter, each with its reason. Everywhere else a non-trivial
# spec must shrink the model: every zoo module has a conv/linear whose input tensor (or filter) is read only
# by layers the spec masks.
NOTHING_PRUNED_OK: dict[tuple[str, str, str], str] = {
    # PruneSpec masks a weight's bias only when it is named like the weight ("x.weight" -> "x.bias"); a functional
    # bias named otherwise keeps the masked channel non-zero, so it is (exactly) kept.
    ("FunctionalDepthwiseBias", "mask", "output"): "its bias is not named like its weight, so it is not masked",
    ("FunctionalDepthwiseBias", "random", "output"): "its bias is not named like its weight, so it is not masked",
}

# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------

NAMES = list(ZOO)


@pytest.mark.parametrize("amount", [0.3, 0.5])
@pytest.mark.parametrize("side", ["input", "output", "both"])
@pytest.mark.parametrize("kind", ["mask", "random"])
@pytest.mark.parametrize("mode", ["baseline", "upscale"])
@pytest.mark.parametrize("name", NAMES)
def test_export_is_exact(name: str, mode: str, kind: str, side: str, amount: float) -> None:
    model, x, before = built(name)
    spec, masked = case(name, kind, side, amount)
    result = exported(name, kind, side, amount, mode)
    assert_exact(result, masked, x)
    report = result.report
    if (name, kind, side) not in NOTHING_PRUNED_OK:
        assert report.params_after < report.params_before, report.summary()
    if mode == "baseline":
        assert report.narrows == 0  # baseline never reorders nor narrows: a gather for every partial read
    else:
        base = exported(name, kind, side, amount, "baseline").report
        assert report.gathers <= base.gathers, (report.summary(), base.summary())
        assert report.copied_elements <= base.copied_elements, (report.summary(), base.summary())
        # same channels kept; absorbing a selection into a cat also shrinks the per-channel layers after it
        assert report.params_after <= base.params_after
    assert_unchanged(model, before)


@pytest.mark.parametrize("side", ["input", "output", "both"])
@pytest.mark.parametrize("name", NAMES)
def test_constrained_masks_export_without_copies(name: str, side: str) -> None:
    model, x, before = built(name)
    spec = fx_upscale.mask(model, x, amount=0.5, side=side, method="constrained")
    if (name, side) == ("FunctionalDepthwiseBias", "output"):
        # its depthwise bias is called ``shift``, which a spec does not zero with the weight: every masked filter's
        # channel would be revived by it on its way to the head, so mask() chooses nothing there
        assert spec.is_empty()
        return
    assert not spec.is_empty()
    result = export_checked(model, x, spec, "constrained")
    assert gathers_in_graph(result.module) == 0 == result.report.gathers
    assert result.report.extra_pruned_channels == 0, result.report.summary()
    assert_exact(result, spec.apply(model), x)
    assert_unchanged(model, before)


@pytest.mark.parametrize("kind", ["mask", "random"])
@pytest.mark.parametrize("name", NAMES)
def test_constrained_mode_never_gathers(name: str, kind: str) -> None:
    """Unconstrained specs exported constrained: no copies; upscale keeps what constrained keeps + extra."""
    model, x, before = built(name)
    for side in ("input", "output", "both"):
        spec, masked = case(name, kind, side, 0.5)
        result = export_checked(model, x, spec, "constrained")
        assert gathers_in_graph(result.module) == 0 == result.report.gathers
        loose = exported(name, kind, side, 0.5, "upscale").report
        kept = sum(segment.kept for segment in result.report.segments)
        assert kept + result.report.extra_pruned_channels == sum(segment.kept for segment in loose.segments)
        if result.report.extra_pruned_channels == 0:  # nothing dropped beyond the spec: still exact
            assert_exact(result, masked, x)
    assert_unchanged(model, before)


@pytest.mark.parametrize("mode", ["baseline", "upscale"])
@pytest.mark.parametrize("name", NAMES)
def test_exported_module_is_consistent(name: str, mode: str) -> None:
    model, x, _ = built(name)
    spec = make_spec("random", model, x, "both", 0.5, name)
    spec = spec.merged(fx_upscale.mask(model, x, amount=0.3, side="both"))
    result = export_checked(model, x, spec, mode)
    exported_module = result.module
    for qualname, module in exported_module.named_modules():
        if isinstance(module, _CONV):
            assert module.weight.shape[0] == module.out_channels, qualname
            assert module.weight.shape[1] * module.groups == module.in_channels, qualname
            if module.bias is not None:
                assert module.bias.shape == (module.out_channels,), qualname
        elif isinstance(module, _CONV_T):
            assert module.weight.shape[0] == module.in_channels, qualname
            assert module.weight.shape[1] * module.groups == module.out_channels, qualname
            if module.bias is not None:
                assert module.bias.shape == (module.out_channels,), qualname
        elif isinstance(module, nn.Linear):
            assert tuple(module.weight.shape) == (module.out_features, module.in_features), qualname
            if module.bias is not None:
                assert module.bias.shape == (module.out_features,), qualname
        elif isinstance(module, nn.LayerNorm):
            assert module.weight.shape == module.bias.shape == module.normalized_shape, qualname
        elif isinstance(module, _NORM):
            n = module.num_features
            assert module.weight.numel() == module.bias.numel() == n, qualname
            assert module.running_mean.numel() == module.running_var.numel() == n, qualname
    original = dict(model.named_parameters())
    exported_params = dict(exported_module.named_parameters())
    assert set(exported_params) <= set(original)
    assert any(p.numel() < original[n].numel() for n, p in exported_params.items())
    retraced = torch.fx.symbolic_trace(exported_module)
    with torch.no_grad():
        assert torch.equal(retraced(x), exported_module(x))
    exported_module.load_state_dict(exported_module.state_dict(), strict=True)
    assert_exact(result, spec.apply(model), x)


@pytest.mark.parametrize("amount", [0.3, 0.5])
@pytest.mark.parametrize("kind", ["mask", "random"])
def test_upscale_needs_no_copy_for_two_readers(kind: str, amount: float) -> None:
    """Two consumers of one free tensor: the Gray order (ordering.py) makes both needed sets contiguous."""
    upscale = exported("TwoConsumers", kind, "input", amount, "upscale").report
    baseline = exported("TwoConsumers", kind, "input", amount, "baseline").report
    assert baseline.gathers > 0 and baseline.copied_elements > 0  # the masks do need a reordering
    assert upscale.gathers == upscale.copied_elements == 0
    assert upscale.narrows >= 1


def test_transposed_conv_spec_names_its_own_channels() -> None:
    """A ConvTranspose2d weight is (in_channels, out_channels, kH, kW): a spec's input channels of it are rows
    of that weight (axis 0), its output channels columns (axis 1) with the bias, as ``mask`` chooses them."""
    model, x, _ = built("TransposedConv")  # up: ConvTranspose2d(12, 10)
    spec = fx_upscale.PruneSpec(inputs={"up.weight": [1, 4, 11]}, outputs={"up.weight": [2]})
    masked = spec.apply(model)
    assert masked.up.weight[[1, 4, 11]].eq(0).all()
    assert masked.up.weight[:, 2].eq(0).all() and masked.up.bias[2] == 0
    assert masked.up.weight[[0, 2, 3, 5, 6, 7, 8, 9, 10]][:, [0, 1, 3, 4, 5, 6, 7, 8, 9]].ne(0).all()
    result = fx_upscale.export(model, x, spec=spec)
    assert_exact(result, masked, x)
    up = result.module.up
    assert (up.in_channels, up.out_channels) == (9, 10)  # output channel 2 is kept: bn2 shifts it off zero
    assert tuple(up.weight.shape[:2]) == (9, 10)
