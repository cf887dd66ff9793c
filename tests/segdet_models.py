"""torchvision segmentation models and detection backbones (with their FPN), as
tests/test_segmentation_detection.py and benchmarks/segmentation_detection.py build them.

- :data:`SEGMENTATION`: every model of ``torchvision.models.list_models(module=torchvision.models.segmentation)``.
- :data:`DETECTION`: every detection model; what is pruned is its ``.backbone`` (the body and, where it has one,
  the FeaturePyramidNetwork): the whole model fails capture in its box post-processing.
- :func:`build`: a model with ``weights=None, weights_backbone=None`` (seed 0), made meaningful for an exactness
  check (BatchNorm randomised and calibrated, near-zero parameters redrawn), in float64, and its input batch.

Norm ``"frozen"`` builds the model as the pretrained builders do: they use ``torchvision.ops.misc.FrozenBatchNorm2d``
(fixed statistics and affine parameters held as buffers) wherever they pass ``norm_layer=FrozenBatchNorm2d`` when
weights are given (``is_trained`` in ``faster_rcnn.py``, ``mask_rcnn.py``, ...): the ResNet or MobileNet body of
the detection backbones, not their FPN; the ``_v2`` and SSD models keep ``BatchNorm2d`` even when trained, so they
have no frozen variant (:data:`FROZEN_NORM_MODELS`). The segmentation builders never freeze their norms; their frozen
variant freezes every ``BatchNorm2d``, as fine-tuning recipes do. The model is built and calibrated with
``BatchNorm2d`` and each norm to freeze is then replaced by a ``FrozenBatchNorm2d`` with the same four tensors and
``eps``: the same function, the module type the pretrained builders give.
"""

from __future__ import annotations

import torch
import torchvision
from support import calibrate_batchnorm, randomize_batchnorm, randomize_small_parameters
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

SEGMENTATION = tuple(torchvision.models.list_models(module=torchvision.models.segmentation))
DETECTION = tuple(torchvision.models.list_models(module=torchvision.models.detection))
NORMS = ("batch_norm", "frozen")
FROZEN_NORM_MODELS = SEGMENTATION + tuple(
    name for name in DETECTION if not name.endswith("_v2") and not name.startswith("ssd")
)  # the models with a FrozenBatchNorm2d variant
SIZES = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}  # their extra layers need it; others: 64
SIZE = 64
CALIBRATION = 4  # samples beside the checked batch that BatchNorm statistics are computed on


def variants(names: tuple[str, ...] = SEGMENTATION + DETECTION) -> list[tuple[str, str]]:
    """Every (model, norm) pair that exists: a frozen variant only where the pretrained builder makes one."""
    return [(name, norm) for name in names for norm in NORMS if norm == "batch_norm" or name in FROZEN_NORM_MODELS]


def input_size(name: str) -> int:
    return SIZES.get(name, SIZE)


def build_whole(name: str) -> nn.Module:
    """The torchvision model itself (``weights=None, weights_backbone=None``, seed 0), in eval mode."""
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, weights_backbone=None).eval()


def prunable_part(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """What is pruned (a segmentation model whole, a detection model's backbone) and where norms are frozen."""
    if name in SEGMENTATION:
        return model, model
    backbone = model.backbone
    return backbone, getattr(backbone, "body", backbone)


def build(
    name: str, norm: str = "batch_norm", dtype: torch.dtype = torch.float64, batch: int = 2
) -> tuple[nn.Module, torch.Tensor]:
    """The segmentation model ``name`` or the backbone of the detection model ``name``, in eval mode and ``dtype``,
    with ``norm`` (``"batch_norm"`` or ``"frozen"``), and a seeded input batch."""
    _, part, x = build_with_whole(name, norm, dtype, batch)
    return part, x


def build_with_whole(
    name: str, norm: str = "batch_norm", dtype: torch.dtype = torch.float64, batch: int = 2
) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """:func:`build`, with the whole model the pruned part belongs to (the same for a segmentation model)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    if norm == "frozen" and name not in FROZEN_NORM_MODELS:
        raise ValueError(f"{name} keeps BatchNorm2d when trained: it has no FrozenBatchNorm2d variant")
    whole = build_whole(name)
    part, frozen_part = prunable_part(name, whole)
    randomize_small_parameters(randomize_batchnorm(part))
    size = input_size(name)
    calibration = torch.randn(batch + CALIBRATION, 3, size, size, generator=torch.Generator().manual_seed(1))
    calibrate_batchnorm(part, calibration)
    if norm == "frozen":
        freeze_batchnorm(frozen_part)
    return whole.to(dtype).eval(), part, calibration[:batch].to(dtype)


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every ``BatchNorm2d`` under ``module`` by a ``FrozenBatchNorm2d`` computing the same (in place);
    returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, child_name, frozen_copy(child))
                replaced += 1
    return replaced


def frozen_copy(norm: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
    with torch.no_grad():
        frozen.running_mean.copy_(norm.running_mean)
        frozen.running_var.copy_(norm.running_var)
        if norm.weight is not None:
            frozen.weight.copy_(norm.weight)
            frozen.bias.copy_(norm.bias)
    return frozen.to(norm.running_mean.dtype)
