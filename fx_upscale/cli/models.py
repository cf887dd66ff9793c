"""What the commands run on: :func:`load_model` (a torchvision model name or ``package.module:factory``, in eval
mode, with ``--weights`` loaded, and its default input shape), the ``--dtype`` choices, and the ``--calibration``
batches (:func:`load_calibration`). Start reading at :func:`load_model`."""

from __future__ import annotations

import difflib
import importlib
import os
import sys

import torch
from torch import nn

from .errors import CommandError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load_model(name: str, weights: str | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """The model called ``name`` (torchvision name or ``package.module:factory``) in eval mode, with ``weights``
    (a state_dict file) loaded, and its default input shape."""
    model, shape = _from_factory(name) if ":" in name else _from_torchvision(name)
    if not isinstance(model, nn.Module):
        raise CommandError(f"{name} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(model, weights)
    return model.eval(), shape


def _from_factory(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    module_name, _, attribute = name.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules in the current directory are found
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import {module_name!r} (from MODEL {name!r}): {error}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"{module_name!r} has no callable {attribute!r} (MODEL is package.module:factory)")
    return factory(), (1, 3, 224, 224)


def _torchvision():
    try:
        import torchvision
    except ImportError as error:
        raise CommandError("torchvision models need torchvision: pip install 'fx_upscale[models]'") from error
    return torchvision


def _from_torchvision(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    models = _torchvision().models
    known = models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; or give package.module:factory"
        raise CommandError(f"unknown torchvision model {name!r}{hint}")
    side = 224
    try:
        side = models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    except Exception:  # models without classification weights: keep 224
        pass
    return models.get_model(name, weights=None), (1, 3, side, side)


def _load_weights(model: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise CommandError(f"--weights {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CommandError(f"--weights {path} holds a {type(state).__name__}, not a state_dict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CommandError(
            f"--weights {path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def load_calibration(path: str | None, dtype: torch.dtype):
    """The ``--calibration`` batches (a tensor or a list of tensors in a .pt file) in ``dtype``; None without one."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise CommandError(f"--calibration {path}: no such file")
    data = torch.load(path, map_location="cpu", weights_only=True)
    batches = [data] if isinstance(data, torch.Tensor) else list(data)
    if not batches or not all(isinstance(b, torch.Tensor) for b in batches):
        raise CommandError(f"--calibration {path} must hold a tensor (one batch) or a list of tensors")
    return [b.to(dtype) for b in batches]
