"""The data: scikit-learn's bundled handwritten digits (1,797 8x8 grey images, 10 classes), offline.

:func:`load_digits_split` makes a stratified train/test split (fixed seed), upsamples every image to ``size`` x
``size`` (bilinear) with 3 identical channels, and standardises with the training mean and std. A ``noise`` above
zero adds Gaussian noise of that std (in standardised units, fixed seed) to the test images and, freshly drawn per
batch, to the training images; ``train_fraction`` keeps a stratified fraction of the training split: both make the
task harder. :func:`augment` is the light training augmentation (random shift, scale and rotation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DataConfig:
    size: int = 32
    test_fraction: float = 0.2
    train_fraction: float = 1.0
    noise: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor  # N x 3 x size x size, float32, standardised
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_split(config: DataConfig) -> Split:
    """The stratified split of ``config``, upsampled and standardised (noise added to the test images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=config.test_fraction, stratify=labels, random_state=config.seed
    )
    if config.train_fraction < 1.0:
        train_idx, _ = train_test_split(
            train_idx, train_size=config.train_fraction, stratify=labels[train_idx], random_state=config.seed
        )
    big = F.interpolate(images[:, None], size=(config.size, config.size), mode="bilinear", align_corners=False)
    big = big.expand(-1, 3, -1, -1)
    train_x, test_x = big[train_idx], big[test_idx]
    mean, std = train_x.mean(), train_x.std()
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    if config.noise > 0:
        generator = torch.Generator().manual_seed(config.seed + 1)
        test_x = test_x + config.noise * torch.randn(test_x.shape, generator=generator)
    return Split(train_x.contiguous(), labels[train_idx], test_x.contiguous(), labels[test_idx])


def augment(x: torch.Tensor, generator: torch.Generator, noise: float = 0.0) -> torch.Tensor:
    """A random affine warp per image (shift up to 1/8 of the side, scale 0.9-1.1, rotation up to 10 degrees),
    plus Gaussian noise of std ``noise``."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 0.25
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()
    out = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=generator)
    return out
