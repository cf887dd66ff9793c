"""HRank (Lin et al., CVPR 2020): a channel's score is the average rank of the feature maps it carries.

:func:`average_ranks` runs the traced model on every calibration batch with a :class:`torch.fx.Interpreter` that,
after computing each requested node, takes the rank of every (sample, channel) feature map of its output
(:func:`feature_map_ranks`) and adds it up; the average is over all samples of all batches. A channel whose maps
keep little rank carries little information and is masked first.

Which map scores which channel is decided by the caller (``layers.py``): an output channel is scored by its
producer's output after the BatchNorm and activations that follow it; an input channel by the tensor its consumer
reads (before a ``flatten``), i.e. the producer's output after its pass-through ops.

Start reading at :func:`average_ranks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.fx as fx

from ..errors import SpecError


def feature_map_ranks(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """Rank of each sample's feature map per channel: an (N, C) integer tensor for a tensor whose dim 0 is the
    batch and ``axis`` the channels. A map is the matrix of the last axis against all the others (H × W for a 2-D
    convolution, D·H × W in 3-D, 1 × L in 1-D); a map with no spatial axis is 1 × 1 (rank 1 unless zero).

    >>> x = torch.zeros(1, 2, 3, 3)
    >>> x[0, 0] = torch.eye(3)
    >>> x[0, 1, 0] = 1.0
    >>> feature_map_ranks(x, 1)
    tensor([[3, 1]])
    """
    maps = tensor.detach().movedim(axis, 1)
    if not maps.is_floating_point() or maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    columns = maps.shape[-1] if maps.ndim > 2 else 1
    return torch.linalg.matrix_rank(maps.reshape(maps.shape[0], maps.shape[1], -1, columns))


class _RankRecorder(fx.Interpreter):
    """Runs the graph and adds up the feature-map ranks of the requested nodes' outputs."""

    def __init__(self, gm: fx.GraphModule, axes: Mapping[str, int]) -> None:
        super().__init__(gm)
        self.axes = axes
        self.sums: dict[str, torch.Tensor] = {}
        self.samples: dict[str, int] = {}

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        axis = self.axes.get(n.name)
        if axis is not None:
            ranks = feature_map_ranks(result, axis)
            total = ranks.sum(dim=0).to(torch.float64)
            self.sums[n.name] = self.sums[n.name] + total if n.name in self.sums else total
            self.samples[n.name] = self.samples.get(n.name, 0) + ranks.shape[0]
        return result


def average_ranks(gm: fx.GraphModule, axes: Mapping[str, int], calibration: Iterable) -> dict[str, torch.Tensor]:
    """Per node named in ``axes`` (node name -> channel axis), the average feature-map rank of each channel over
    every sample of every calibration batch (a float64 vector). ``calibration`` yields input batches: a tensor, or
    a tuple of tensors for a model with several inputs."""
    recorder = _RankRecorder(gm, axes)
    batches = 0
    with torch.no_grad():
        for index, batch in enumerate(calibration):
            inputs = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
            try:
                recorder.run(*inputs)
            except Exception as error:  # a batch that does not fit the model: say which and why
                raise SpecError(
                    f"calibration batch {index} could not run through the model ({type(error).__name__}: {error}); "
                    "each batch must be what the model's forward takes, like example_inputs"
                ) from error
            batches += 1
    if batches == 0:
        raise SpecError("calibration yielded no batch; heuristic='hrank' needs at least one input batch")
    return {name: recorder.sums[name] / recorder.samples[name] for name in axes}
