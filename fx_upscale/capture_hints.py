"""What to tell someone whose model a front end cannot capture: where ``torch.export`` failed, and the way around
for torchvision's detection models.

``torch.export`` raises many kinds of errors; the first line says what (``Could not guard on data-dependent
expression 4*u1 > 4000``), a later ``Caused by: (torchvision/ops/boxes.py:86 in batched_nms)`` line says where in
the user's code. :func:`export_failure` keeps both.

torchvision's detection models (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD) cannot be captured whole by
either front end: their transform loops over a list of images (``symbolic_trace`` cannot iterate a proxy) and their
box post-processing (non-maximum suppression of the region proposals and of the detections,
``torchvision.ops.batched_nms``) makes tensors whose shapes depend on the values computed (``torch.export`` cannot
guard on them). Their channels are in the backbone (the ResNet or MobileNet body and its FeaturePyramidNetwork),
which both front ends capture: prune ``model.backbone`` and put the result back (:data:`DETECTION_WAY`).

Start reading at :func:`export_failure`.
"""

from __future__ import annotations

from typing import Any

DETECTION_PACKAGE = "torchvision.models.detection"
FIRST_LINE = 300  # characters of the error's first line kept in the message
DETECTION_WAY = (
    "prune its backbone instead (the body and its FeaturePyramidNetwork, where its channels are): "
    "result = fx_upscale.export(model.backbone, images, spec=spec), images a batch tensor (N, 3, H, W); then "
    "model.backbone = result.module (the backbone's output channels are kept, so the heads read what they read)"
)


def export_failure(model: Any, error: BaseException) -> str:
    """The message of the ``TracingError`` for ``torch.export.export(model, ...)`` failing with ``error``: its
    type and first line (at most :data:`FIRST_LINE` characters), the user code it names, and for a torchvision
    detection model the way around."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > FIRST_LINE:  # a guard on a sum of one term per box level can run to thousands of characters
        first = f"{first[: FIRST_LINE - 3]}..."
    where = caused_by(error)
    return (
        f"torch.export.export could not capture {type(model).__name__}: {type(error).__name__}: {first}"
        f"{f' (in {where})' if where else ''}{detection_hint(model)}"
    )


def caused_by(error: BaseException) -> str | None:
    """The user code a ``torch.export`` error names (``torchvision/ops/boxes.py:86 in batched_nms``), if any."""
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith("Caused by:"):
            return line.removeprefix("Caused by:").strip().strip("()") or None
    return None


def detection_hint(model: Any) -> str:
    """For a torchvision detection model, why it cannot be captured whole and what to prune instead (with a
    leading ``". "``); ``""`` for any other model."""
    if not is_detection_model(model):
        return ""
    return (
        f". {type(model).__name__} is a torchvision detection model: its transform loops over a list of images and "
        "its box post-processing (non-maximum suppression, torchvision.ops.batched_nms) has shapes that depend on "
        f"the values computed, which no front end captures; {DETECTION_WAY}"
    )


def is_detection_model(model: Any) -> bool:
    """Whether ``model`` is one of torchvision's whole detection models: a class of
    ``torchvision.models.detection`` holding a ``transform`` (images in) and a ``backbone`` (not the backbone
    itself, ``BackboneWithFPN``, which both front ends capture)."""
    module = type(model).__module__ or ""
    in_package = module == DETECTION_PACKAGE or module.startswith(f"{DETECTION_PACKAGE}.")
    return in_package and hasattr(model, "transform") and hasattr(model, "backbone")
