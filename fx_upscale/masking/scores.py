"""Channel scores from weights: pure torch, one score per channel, the lowest masked first.

Every heuristic takes the *slices* of one layer: a 2-D tensor with one row per channel holding every parameter that
channel owns there (an output channel: its filter and its bias entry; an input channel: its weight column, or all
the columns one channel feeds when a ``flatten`` spreads it over several features of a linear layer), and returns a
1-D tensor of ``len(slices)`` scores.

- :func:`l1`, :func:`l2`: the channel's L1 norm and squared L2 norm (the square keeps the order of the norm, and
  adds up over the layers of a coupled group to the squared norm of all the parameters the channel owns there);
- :func:`lamp`: layer-adaptive magnitude (Lee et al., ICLR 2021), comparable across layers for a global threshold;
- :func:`fpgm`: the distance to the layer's other channels (He et al., CVPR 2019: channels near the geometric
  median are the most replaceable).

A user-supplied callable with the same signature is checked by :func:`check_scores`.
HRank, which scores feature maps rather than weights, lives in ``hrank.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import SpecError

Heuristic = Callable[[torch.Tensor], torch.Tensor]


def l1(slices: torch.Tensor) -> torch.Tensor:
    """L1 norm of each row (of each slice along dimension 0 of a tensor of more dimensions).

    >>> l1(torch.tensor([[3.0, -1.0], [0.5, 0.5]]))
    tensor([4., 1.])
    """
    return torch.linalg.vector_norm(slices, 1, dim=tuple(range(1, slices.ndim)))


def l2(slices: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row (of each slice along dimension 0 of a tensor of more dimensions).

    >>> l2(torch.tensor([[3.0, -1.0], [0.5, 0.5]]))
    tensor([10.0000,  0.5000])
    """
    return torch.linalg.vector_norm(slices, 2, dim=tuple(range(1, slices.ndim))).square()


def lamp(slices: torch.Tensor) -> torch.Tensor:
    """LAMP score: a channel's squared norm over the sum of the squared norms of the layer's channels at least as
    large (itself and its ties included). The largest channel scores 1; a zero channel 0.

    The denominator is a suffix sum of the sorted squared norms, read at each channel's own value with
    ``searchsorted``, so no sort permutation has to be inverted (squared norms 9, 1, 4 sort by the permutation
    (1, 2, 0), which is not its own inverse):

    >>> lamp(torch.tensor([[3.0], [1.0], [2.0]]))  # 9/9, 1/(1+4+9), 4/(4+9)
    tensor([1.0000, 0.0714, 0.3077])
    >>> lamp(torch.tensor([[1.0], [1.0], [0.0]]))  # ties share one denominator
    tensor([0.5000, 0.5000, 0.0000])
    """
    magnitudes = l2(slices)
    ascending = torch.sort(magnitudes).values
    suffix = ascending.flip(0).cumsum(0).flip(0)
    denominators = suffix[torch.searchsorted(ascending, magnitudes, side="left")]
    return torch.where(denominators > 0, magnitudes / denominators.clamp_min(torch.finfo(magnitudes.dtype).tiny), 0)


def fpgm(slices: torch.Tensor) -> torch.Tensor:
    """Sum of Euclidean distances from each row to every other row (the geometric-median criterion: the channels
    closest to all the others are the easiest to replace, so they score lowest). Distances come from the rows'
    Gram matrix in float64.

    >>> fpgm(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]))  # 5+1, 5+sqrt(18), 1+sqrt(18)
    tensor([6.0000, 9.2426, 5.2426])
    """
    rows = slices.reshape(len(slices), -1).to(torch.float64)
    gram = rows @ rows.T
    norms = gram.diagonal()
    squared = (norms.unsqueeze(0) + norms.unsqueeze(1) - 2 * gram).clamp_min(0)
    squared.fill_diagonal_(0)
    return squared.sqrt().sum(dim=1).to(slices.dtype)


BUILTIN: dict[str, Heuristic] = {"l1": l1, "l2": l2, "lamp": lamp, "fpgm": fpgm}
REDUCING = (l1, l2, lamp)  # reduce each slice along dimension 0 whatever its shape: no need to flatten (copy) it


def check_scores(scores: object, channels: int, where: str) -> torch.Tensor:
    """``scores`` from a user heuristic as a float64 vector of ``channels`` entries, or a :class:`SpecError`.

    >>> check_scores(torch.tensor([1, 2]), 2, "the input channels of 'fc.weight'")
    tensor([1., 2.], dtype=torch.float64)
    >>> check_scores(torch.ones(2, 1), 2, "the input channels of 'fc.weight'")
    Traceback (most recent call last):
    ...
    fx_upscale.errors.SpecError: the heuristic returned a tensor of shape (2, 1) for the input channels of \
'fc.weight'; it must return one score per channel: a tensor of shape (2,)
    """
    if not isinstance(scores, torch.Tensor):
        raise SpecError(
            f"the heuristic returned a {type(scores).__name__} for {where}; it must return a torch.Tensor of "
            f"shape ({channels},), one score per channel"
        )
    if tuple(scores.shape) != (channels,):
        raise SpecError(
            f"the heuristic returned a tensor of shape {tuple(scores.shape)} for {where}; it must return one score "
            f"per channel: a tensor of shape ({channels},)"
        )
    if scores.is_complex() or scores.dtype == torch.bool:
        raise SpecError(f"the heuristic returned {scores.dtype} scores for {where}; return real numbers")
    scores = scores.detach().to(device="cpu", dtype=torch.float64)
    if torch.isnan(scores).any():
        raise SpecError(f"the heuristic returned NaN scores for {where}; every channel needs a comparable score")
    return scores
