"""Re-estimating the running statistics of BatchNorm layers on calibration batches, after pruning.

Pruning changes what each BatchNorm reads, so the statistics it learned in training no longer fit; recomputing
them on a few batches rescues much of the accuracy of post-training pruning. This module owns that one step:
start at :func:`recalibrate_batchnorm`. It works on a deep copy (the caller's model is never modified) of any
``nn.Module``, including the ``GraphModule`` that :func:`fx_upscale.export` returns, whose BatchNorm layers are
``nn.BatchNorm*d`` submodules.

Which layers: every ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d, their lazy forms once
initialised, SyncBatchNorm) that tracks running statistics. Layers with ``track_running_stats=False`` have none
and are skipped; other norms (InstanceNorm, GroupNorm, LayerNorm, torchvision's FrozenBatchNorm2d) are left alone
in eval mode. A layer that no batch reaches (a branch the forward skips in eval mode) keeps its statistics, with a
warning. SyncBatchNorm behaves like BatchNorm when no process group is initialised (or it holds one process);
under a multi-process group it synchronises the batch statistics, which torch supports on GPU only: every process
must then recalibrate with the same number of batches and gets the statistics of the global batches (on CPU torch
refuses, reported as a batch that could not run). The statistics are not synchronised otherwise.

What is computed: the layers are reset (mean 0, variance 1, ``num_batches_tracked`` 0), then each batch runs
forward under ``torch.no_grad()`` with those layers in train mode and everything else in eval mode (dropout off).
Each BatchNorm therefore reads its input as computed with the BatchNorms before it normalising by their batch
statistics, as in training (and as ``torch.optim.swa_utils.update_bn``, which however also turns dropout on).
With ``momentum=None`` (PyTorch's cumulative moving average) the statistics are exactly, up to floating-point
rounding, per channel over the K batches a layer saw:

- ``running_mean``: the average over batches of each batch's mean (over all of the batch's values of the channel:
  N·H·W of them for a 4-D input). With equal batch sizes this is the mean of all the calibration values.
- ``running_var``: the average over batches of each batch's *unbiased* variance (divided by n - 1, n the batch's
  values per channel, which must exceed 1). This is not the variance of all values pooled: it leaves out the
  spread of the batch means around each other. With unequal batch sizes neither statistic weights batches by size.
- ``num_batches_tracked``: K, the number of batches (a layer called twice per forward counts twice).

A float ``momentum`` in (0, 1] instead gives PyTorch's exponential moving average, starting from mean 0 and
variance 1: ``stat = (1 - momentum) * stat + momentum * batch_stat``. Either way each layer's own ``momentum`` is
restored on the returned copy, which is in eval mode.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from itertools import chain
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin

from .tracing import check_materialized

ModuleT = TypeVar("ModuleT", bound=nn.Module)
Batch = torch.Tensor | Sequence[torch.Tensor]
_SAVED = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]  # mean, var, count, momentum
_NO_BATCH = object()


def recalibrate_batchnorm(module: ModuleT, batches: Iterable[Batch], *, momentum: float | None = None) -> ModuleT:
    """A copy of ``module``, in eval mode, whose BatchNorm running statistics are re-estimated on ``batches``.

    ``batches``: input batches, each a tensor or a tuple of tensors (one per forward argument) like
    ``example_inputs``. Each BatchNorm that tracks statistics is reset, then the batches run under
    ``torch.no_grad()`` with BatchNorm layers (only) in train mode: dropout stays off. With ``momentum=None``
    (cumulative average) ``running_mean`` is the average of the per-batch means, ``running_var`` the average of
    the per-batch *unbiased* variances and ``num_batches_tracked`` the number of batches (exact semantics, the
    layers covered and SyncBatchNorm: the module docstring); a float in (0, 1] gives the exponential moving
    average from mean 0 and variance 1. Each layer's own momentum is restored on the copy.

    Raises ``ValueError`` for no batch at all, a ``momentum`` outside (0, 1], uninitialised lazy layers or a
    batch the model cannot run; ``TypeError`` for a batch that is not a tensor or a tuple of tensors (both name
    the batch's index); :class:`~fx_upscale.TracingError` for a model on the meta device. Without any BatchNorm
    that tracks statistics: a ``UserWarning`` and an equal copy (only the first batch is read).

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    >>> batches = [torch.randn(8, 3, 16, 16) for _ in range(4)]
    >>> calibrated = recalibrate_batchnorm(model, batches)
    >>> int(calibrated[1].num_batches_tracked), calibrated.training, model.training, int(model[1].num_batches_tracked)
    (4, False, True, 0)
    """
    _check_momentum(momentum)
    _check_lazy(module)
    iterator = iter(batches)
    first = next(iterator, _NO_BATCH)
    if first is _NO_BATCH:
        raise ValueError(
            "recalibrate_batchnorm needs at least one calibration batch: statistics from no data would leave every "
            "BatchNorm reset (mean 0, variance 1). Pass an iterable of input batches, each a tensor or a tuple of "
            "tensors like example_inputs"
        )
    check_materialized(module, _inputs(first, 0))
    copy = deepcopy(module)
    copy.eval()
    layers = [layer for layer in copy.modules() if isinstance(layer, _BatchNorm) and _tracks(layer)]
    if not layers:
        _warn_nothing_to_do(module)
        return copy
    saved = _start(layers, momentum)
    with torch.no_grad():
        _run(copy, chain([first], iterator))
    _finish(copy, layers, saved)
    return copy


def _warn_nothing_to_do(module: nn.Module) -> None:
    warnings.warn(
        f"{type(module).__name__} has no BatchNorm with running statistics (none, or all with "
        "track_running_stats=False): there is no BatchNorm to recalibrate; returning an unchanged copy",
        UserWarning,
        stacklevel=3,
    )


def _check_momentum(momentum: float | None) -> None:
    if momentum is None:
        return
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 < momentum <= 1:
        raise ValueError(
            f"momentum must be None (cumulative average over the batches, the default) or a number in (0, 1] "
            f"(exponential moving average), not {momentum!r}"
        )


def _check_lazy(module: nn.Module) -> None:
    lazy = [name for name, sub in module.named_modules() if _uninitialised(sub)]
    if lazy:
        raise ValueError(
            f"{type(module).__name__} has uninitialised lazy layers ({', '.join(repr(n) for n in lazy)}): they have "
            "no shape and cannot be copied. Run one forward on an input batch first to initialise them"
        )


def _uninitialised(module: nn.Module) -> bool:
    return isinstance(module, LazyModuleMixin) and bool(module.has_uninitialized_params())


def _tracks(layer: _BatchNorm) -> bool:
    return layer.track_running_stats and layer.running_mean is not None and layer.running_var is not None


def _inputs(batch: object, index: int) -> tuple[torch.Tensor, ...]:
    """The forward arguments of calibration batch ``index``, or a ``TypeError`` naming it."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if not isinstance(batch, (tuple, list)):
        raise TypeError(
            f"calibration batch {index} is a {type(batch).__name__}; each batch must be a tensor, or a tuple of "
            "tensors (one per forward argument) like example_inputs"
        )
    for position, value in enumerate(batch):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"calibration batch {index}: entry {position} is a {type(value).__name__}, not a tensor; each batch "
                "must be a tensor, or a tuple of tensors (one per forward argument) like example_inputs"
            )
    return tuple(batch)


def _start(layers: list[_BatchNorm], momentum: float | None) -> dict[_BatchNorm, _SAVED]:
    """Save each layer's statistics and momentum, reset them and put the layer (only it) in train mode."""
    saved: dict[_BatchNorm, _SAVED] = {}
    for layer in layers:
        assert layer.running_mean is not None and layer.running_var is not None  # _tracks checked it
        assert layer.num_batches_tracked is not None  # track_running_stats=True registers it
        state = (layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone())
        saved[layer] = (*state, layer.momentum)
        layer.reset_running_stats()
        layer.momentum = momentum
        layer.train()
    return saved


def _run(module: nn.Module, batches: Iterator[object]) -> None:
    for index, batch in enumerate(batches):
        inputs = _inputs(batch, index)
        try:
            module(*inputs)
        except Exception as error:  # a batch that does not fit the model: say which and why
            shapes = ", ".join(f"{tuple(t.shape)} {t.dtype} on {t.device}" for t in inputs)
            raise ValueError(
                f"calibration batch {index} ({shapes}) could not run through {type(module).__name__} "
                f"({type(error).__name__}: {error}); each batch must be what the model's forward takes, like "
                "example_inputs, with more than one value per channel"
            ) from error


def _finish(module: nn.Module, layers: list[_BatchNorm], saved: dict[_BatchNorm, _SAVED]) -> None:
    """Restore each layer's momentum, and the statistics of layers no batch reached; eval mode throughout."""
    names = {layer: name for name, layer in module.named_modules()}
    unreached = []
    for layer in layers:
        mean, var, count, momentum = saved[layer]
        layer.momentum = momentum
        assert layer.num_batches_tracked is not None and layer.running_mean is not None
        assert layer.running_var is not None
        if int(layer.num_batches_tracked) == 0:
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(count)
            unreached.append(names[layer])
    module.eval()
    if unreached:
        warnings.warn(
            f"no calibration batch reached the BatchNorm layers {', '.join(map(repr, unreached))} (the forward in "
            "eval mode does not call them); they keep their running statistics",
            UserWarning,
            stacklevel=3,
        )
