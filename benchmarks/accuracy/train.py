"""Training from scratch, with fixed seeds, and the checkpoint cache.

:func:`trained_model` returns a torchvision model (``weights=None``, ``num_classes=10``) trained on the digits split,
loading it from ``${XDG_CACHE_HOME:-~/.cache}/fx_upscale/accuracy/`` when a checkpoint with the same model, seed and
configuration hash exists (so reruns skip training). Training: AdamW with a one-cycle learning rate, optional gradient
clipping, light augmentation (``data.augment``), channels-last tensors (faster convolutions on CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .data import DataConfig, Split, augment


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    clip_grad_norm: float | None = None  # clip the gradient's global L2 norm to this before each step
    seed: int = 0
    floor: float = 0.0  # the one-cycle schedule anneals to this fraction of lr (0: to lr / 250,000, near zero)
    tail_epochs: int = 0  # epochs at that final learning rate after the cycle (the last ``tail_epochs`` of ``epochs``)

    def __post_init__(self) -> None:
        if not 0 <= self.tail_epochs < self.epochs:
            raise ValueError(f"tail_epochs={self.tail_epochs} must be in [0, epochs={self.epochs})")
        if not 0 <= self.floor < 1:
            raise ValueError(f"floor={self.floor} must be in [0, 1)")

    def hashed(self) -> dict:
        """The fields that name a checkpoint: those at their default are left out, so that a field added later
        keeps the checkpoints trained before it."""
        defaults = TrainConfig.__dataclass_fields__
        return {key: value for key, value in asdict(self).items() if value != defaults[key].default}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "fx_upscale" / "accuracy"


def checkpoint_path(name: str, train: TrainConfig, data: DataConfig, directory: Path | None = None) -> Path:
    """``<model>-seed<seed>-<hash of the training and data configuration>.pt`` in the cache directory."""
    blob = json.dumps({"model": name, "train": train.hashed(), "data": asdict(data)}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return (directory or cache_dir()) / f"{name}-seed{train.seed}-{digest}.pt"


def build_model(name: str, train: TrainConfig) -> nn.Module:
    torch.manual_seed(train.seed)
    return getattr(torchvision.models, name)(weights=None, num_classes=10)


def trained_model(
    name: str,
    split: Split,
    train: TrainConfig,
    data: DataConfig,
    *,
    directory: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[nn.Module, dict]:
    """The trained model in eval mode and what its training recorded (``seconds``, ``load_before``,
    ``load_after``, ``threads``, ``cached``), read from the JSON beside the checkpoint when it comes from the cache."""
    path = checkpoint_path(name, train, data, directory)
    model = build_model(name, train)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        info = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
        return model.eval(), {**info, "cached": True}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    history = fit(model, split, train, data.noise, progress)
    info = {
        "seconds": round(time.perf_counter() - start, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    temporary = path.with_suffix(".tmp")
    torch.save(model.state_dict(), temporary)
    temporary.replace(path)
    path.with_suffix(".json").write_text(json.dumps(info))
    return model.eval(), {**info, "cached": False}


def fit(
    model: nn.Module,
    split: Split,
    train: TrainConfig,
    noise: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place (cross-entropy, AdamW, one-cycle schedule then ``train.tail_epochs`` at its final
    learning rate, gradient clipping if configured); per epoch, the mean training loss and the test accuracy."""
    generator = torch.Generator().manual_seed(train.seed)
    n = len(split.train_y)
    optimizer, schedule = optimizer_and_schedule(model.parameters(), train, n)
    model.to(memory_format=torch.channels_last).train()
    history, step = [], 0
    for epoch in range(train.epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for first in range(0, n - train.batch_size + 1, train.batch_size):
            index = order[first : first + train.batch_size]
            x = augment(split.train_x[index], generator, noise).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), split.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), train.clip_grad_norm)
            optimizer.step()
            step += 1
            advance(schedule, step)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, train.epochs * (n // train.batch_size))
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "test_accuracy": accuracy(model, split)})
        model.train()
    model.eval()
    return history


def optimizer_and_schedule(
    parameters, train: TrainConfig, examples: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW with ``train``'s decoupled weight decay and its one-cycle schedule over the first ``train.epochs -
    train.tail_epochs`` epochs of ``examples`` training examples (the last incomplete batch of each epoch dropped),
    annealing to ``train.floor * train.lr`` (to ``train.lr / 250,000``, torch's default, with no floor)."""
    optimizer = torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay)
    steps = (train.epochs - train.tail_epochs) * (examples // train.batch_size)
    # OneCycleLR starts at max_lr / div_factor (25) and ends at that / final_div_factor.
    final_div_factor = 1e4 if train.floor == 0 else 1 / (25 * train.floor)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train.lr, total_steps=steps, final_div_factor=final_div_factor
    )
    return optimizer, schedule


def learning_rate_sum(train: TrainConfig, examples: int) -> float:
    """The sum of :func:`fit`'s learning rates over every step: AdamW's decoupled weight decay shrinks each weight by
    ``exp(-train.weight_decay * learning_rate_sum(...))`` over the training, gradients aside."""
    optimizer, schedule = optimizer_and_schedule([nn.Parameter(torch.zeros(1))], train, examples)
    total = 0.0
    for step in range(1, train.epochs * (examples // train.batch_size) + 1):
        total += optimizer.param_groups[0]["lr"]
        optimizer.step()
        advance(schedule, step)
    return total


def advance(schedule: torch.optim.lr_scheduler.OneCycleLR, step: int) -> None:
    """Step the one-cycle schedule after optimizer step ``step`` (counted from 1); past the cycle the learning rate
    stays at its last value."""
    if step < schedule.total_steps:
        schedule.step()


def accuracy(model: nn.Module, split: Split) -> float:
    """Test accuracy of ``model`` (left in eval mode)."""
    model.eval()
    return round(float((predict(model, split.test_x).argmax(1) == split.test_y).float().mean()), 6)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (eval mode, no grad): channels-last batches through channels-last copies of its
    4-d parameters and buffers (the fast CPU convolutions; ``model`` itself is left as it is)."""
    tensors = {name: t.to(memory_format=torch.channels_last) if t.dim() == 4 else t  # 1x1 kernels restrided too
               for name, t in (*model.named_parameters(), *model.named_buffers())}  # fmt: skip
    outputs = []
    with torch.inference_mode():
        for first in range(0, len(x), batch_size):
            batch = x[first : first + batch_size].contiguous(memory_format=torch.channels_last)
            outputs.append(torch.func.functional_call(model, tensors, (batch,)))
    return torch.cat(outputs)
