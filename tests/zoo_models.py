"""The torchvision classification zoo, as tests/test_torchvision_zoo.py and benchmarks/zoo.py use it.

- :func:`zoo`: every model of ``torchvision.models.list_models(module=torchvision.models)`` that
  ``torch.fx.symbolic_trace`` can trace and that has at most 100 M parameters, most expensive first. It builds and
  traces every model (seconds to a minute), so the tests take their parameters from :data:`ZOO`, the same list
  written out, and one test checks that :func:`zoo` still gives exactly :data:`ZOO`.
- :data:`LARGE` and :data:`UNTRACEABLE`: the models left out, named, so that a change in torchvision is noticed.
- :func:`build`: a model with ``weights=None`` (seeded), made meaningful for an exactness check, and its input.

Parameters are counted without allocating them: the model is built with every ``torch.empty`` on the meta device
(a plain ``with torch.device("meta")`` does not work for RegNet, whose constructor computes its widths with tensors).
"""

from __future__ import annotations

import functools

import torch
import torchvision
from support import calibrate_batchnorm, randomize_batchnorm, randomize_small_parameters
from torch import nn
from torch.overrides import TorchFunctionMode

MAX_PARAMS = 100_000_000
ZOO = (  # zoo() written out, most expensive first: the parameters of tests/test_torchvision_zoo.py
    "vit_b_32", "vit_b_16", "maxvit_t", "efficientnet_b7", "alexnet", "swin_v2_b", "convnext_base",
    "efficientnet_v2_m", "swin_b", "resnext101_32x8d", "regnet_y_16gf", "resnext101_64x4d", "efficientnet_b6",
    "resnet152", "inception_v3", "wide_resnet50_2", "swin_v2_s", "regnet_x_16gf", "efficientnet_b5", "convnext_small",
    "swin_s", "resnet101", "regnet_y_8gf", "densenet161", "efficientnet_v2_s", "regnet_x_8gf", "densenet201",
    "efficientnet_b4", "densenet169", "regnet_y_3_2gf", "swin_v2_t", "regnet_y_1_6gf", "efficientnet_b3",
    "convnext_tiny", "swin_t", "regnet_x_3_2gf", "resnet50", "efficientnet_b2", "resnext50_32x4d", "efficientnet_b1",
    "densenet121", "resnet34", "googlenet", "regnet_x_1_6gf", "efficientnet_b0", "regnet_x_400mf", "regnet_y_800mf",
    "regnet_y_400mf", "regnet_x_800mf", "mobilenet_v3_large", "shufflenet_v2_x2_0", "mnasnet1_3", "resnet18",
    "mobilenet_v2", "shufflenet_v2_x1_5", "mnasnet1_0", "mobilenet_v3_small", "shufflenet_v2_x1_0", "mnasnet0_75",
    "shufflenet_v2_x0_5", "mnasnet0_5", "squeezenet1_0", "squeezenet1_1",
)  # fmt: skip
LARGE = (  # more than MAX_PARAMS parameters: benchmarks/zoo.py --large
    "convnext_large", "efficientnet_v2_l", "regnet_x_32gf", "regnet_y_32gf", "regnet_y_128gf",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2",
)  # fmt: skip
UNTRACEABLE: tuple[str, ...] = ()  # torch.fx.symbolic_trace fails on them (none in torchvision 0.29)
IMAGE_SIZED = ("maxvit_t", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32")  # built for 224x224
SIZES = {  # input side length where 32 is too small: the smallest the model takes, or the size it was built for
    "alexnet": 63,
    "inception_v3": 75,
    **{name: 224 for name in IMAGE_SIZED},
}
CALIBRATION = 6  # samples beside the checked batch that BatchNorm statistics are computed on
SIZE = 32  # every other model (a few take less, but a forward at 32x32 costs next to nothing beside the export)


class _EmptyOnMeta(TorchFunctionMode):
    """Allocates what ``torch.empty`` creates (every layer's parameters) on the meta device, and skips in-place
    operations on meta tensors (initialisation: slow on the meta device, and without values to set)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        elif _is_in_place(func) and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **kwargs)


def _is_in_place(func) -> bool:
    name = getattr(func, "__name__", "")
    return name.endswith("_") and not name.startswith("_")


def names() -> list[str]:
    """Every classification model torchvision lists."""
    return torchvision.models.list_models(module=torchvision.models)


def build_on_meta(name: str) -> nn.Module:
    with _EmptyOnMeta():
        return torchvision.models.get_model(name, weights=None)


@functools.cache
def sizes_on_meta() -> dict[str, tuple[int, int]]:
    """Per model, its number of parameters and of modules."""
    sizes = {}
    for name in names():
        model = build_on_meta(name)
        sizes[name] = (sum(p.numel() for p in model.parameters()), sum(1 for _ in model.modules()))
    return sizes


def parameter_counts() -> dict[str, int]:
    return {name: params for name, (params, _) in sizes_on_meta().items()}


def is_traceable(name: str) -> bool:
    try:
        torch.fx.symbolic_trace(build_on_meta(name))
    except Exception:  # any failure to trace is what this filter is for
        return False
    return True


def input_size(name: str) -> int:
    return SIZES.get(name, SIZE)


def cost(name: str) -> float:
    """A rough relative cost of masking and exporting a model (to start the costly ones first): its parameters
    times the input's side length over 32 (copies, forwards), plus 50,000 per module (tracing, planning)."""
    params, modules = sizes_on_meta()[name]
    return params * input_size(name) / SIZE + 50_000 * modules


def zoo(large: bool = False) -> list[str]:
    """The models to export, most expensive first (so that parallel workers finish together)."""
    counts = parameter_counts()
    chosen = [n for n in names() if (large or counts[n] <= MAX_PARAMS) and is_traceable(n)]
    return sorted(chosen, key=cost, reverse=True)


def build(name: str, dtype: torch.dtype = torch.float64, batch: int = 2) -> tuple[nn.Module, torch.Tensor]:
    """``name`` with ``weights=None`` (seed 0) in eval mode and ``dtype``, and a seeded input batch.

    BatchNorm affine parameters are randomised and its statistics calibrated on the input with a few more samples
    (float32), so that every path carries the input; every parameter that is all (near) zero is redrawn: ViT's zero
    head would make the output zero, ConvNeXt's 1e-6 layer scale would hide every residual branch.
    """
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    model = randomize_small_parameters(randomize_batchnorm(model))
    size = input_size(name)
    calibration = torch.randn(batch + CALIBRATION, 3, size, size, generator=torch.Generator().manual_seed(1))
    model = calibrate_batchnorm(model, calibration).to(dtype)
    return model, calibration[:batch].to(dtype)
