"""mask(): choose channels to prune with a pruning heuristic, and return them as a PruneSpec.

- ``heuristic``: ``"l1"``, ``"l2"``, ``"lamp"``, ``"fpgm"`` (weight scores, ``scores.py``), ``"hrank"`` (feature-map
  ranks over calibration batches, ``hrank.py``), or a callable ``(slices) -> scores``: ``slices`` is a 2-D tensor
  with one row per channel of a layer holding every parameter that channel owns there, and the result is a tensor
  of one score per row; the lowest scores are masked first.
- ``side="input"``: consumers (conv/linear) mask input channels (weight columns); ``side="output"``: producers
  mask filters, with the per-channel layers (BatchNorm, depthwise conv) that carry those channels on, so they stay
  zero; ``"both"``: the union of the two, each side choosing ``amount`` on its own.
- ``method="unconstrained"``: every layer chooses alone. ``method="constrained"``: all layers of one coupled group
  (a segment, from the same analysis the export uses) share one choice: a channel scores its mean over the layers
  of the group that hold it.
- ``scope="local"``: ``amount`` of each layer (or group); ``scope="global"``: ``amount`` of all the channels of a
  side, under one threshold.
- Layers that read the graph's input are not masked on their input side, and layers that write its output are not
  masked on their output side (found from the graph). A layer never loses every channel.

Start reading at :func:`mask`; ``layers.py`` says which layers take part, ``choosing.py`` how the choice is made.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from ..capture import module_of
from ..channels import ChannelAnalysis, analyse_channels
from ..errors import MaskWarning, SpecError
from ..ops import HandlerTable
from ..segments import find_segments
from ..spec import PruneSpec, nameable_tensors
from ..tracing import normalize_inputs, trace
from . import layers as lay
from .choosing import choose
from .hrank import average_ranks
from .scores import BUILTIN, REDUCING, check_scores

HEURISTICS = (*BUILTIN, "hrank")
SIDES = ("input", "output", "both")
METHODS = ("unconstrained", "constrained")
SCOPES = ("local", "global")


def mask(
    model: nn.Module | torch.export.ExportedProgram,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    amount: float,
    heuristic: str | Callable[[torch.Tensor], torch.Tensor] = "l2",
    side: str = "input",
    method: str = "unconstrained",
    scope: str = "local",
    calibration: Iterable | None = None,
    handlers: HandlerTable | None = None,
    capture: str = "auto",
) -> PruneSpec:
    """A PruneSpec masking ``amount`` (a fraction in [0, 1)) of the channels of each layer or group (local scope)
    or of the model (global scope). ``calibration`` (for ``heuristic="hrank"``): input batches, each a tensor or a
    tuple of tensors like ``example_inputs``. ``handlers``: the handler table (default
    ``fx_upscale.default_handlers()``); pass the one you export with. ``capture``: the front end, as for
    :func:`fx_upscale.export`; ``model`` may be an ``ExportedProgram`` too."""
    _check_arguments(amount, heuristic, side, method, scope, calibration)
    if isinstance(model, torch.export.ExportedProgram):
        model = module_of(model)
    graph_module = trace(model, normalize_inputs(example_inputs), handlers=handlers, capture=capture)
    analysis = analyse_channels(graph_module, handlers)
    constrained = method == "constrained"
    groups = [segment.classes for segment in find_segments(analysis)] if constrained else None
    sides = ("input", "output") if side == "both" else (side,)
    unmaskable = {s: lay.unmaskable_classes(analysis, s) for s in sides}
    parameters = set(nameable_tensors(graph_module))
    layers_of = {s: _layers(analysis, s, unmaskable[s], constrained, parameters) for s in sides}
    score = _scorer(graph_module, analysis, heuristic, [layer for s in sides for layer in layers_of[s]], calibration)
    spec = PruneSpec()
    for s in sides:
        layers = layers_of[s]
        pick = functools.partial(choose, [layer.classes for layer in layers], [score(layer) for layer in layers],
                                 amount, groups=groups, scope=scope)  # fmt: skip
        if s == "input":
            spec = spec.merged(lay.input_spec(layers, pick(unmaskable=unmaskable[s])))
        else:
            spec = spec.merged(_output_spec(graph_module, analysis, layers, pick, unmaskable[s], constrained))
    blocked = {k: v for s in sides for k, v in lay.blocked_layers(analysis, s, layers_of[s]).items()}
    _warn_if_blocked(blocked, spec)
    return spec


def _warn_if_blocked(blocked: dict[str, str], spec: PruneSpec) -> None:
    """A :class:`MaskWarning` naming the layers barriers kept from being masked, and the ops that block them."""
    if not blocked and not spec.is_empty():
        return
    if not blocked:
        warnings.warn(
            MaskWarning("mask() chose no channel: no layer has channels it may mask (graph inputs and outputs, "
                        "grouped convolutions and what LayerNorm reads are never masked)", {}),
            stacklevel=3,
        )  # fmt: skip
        return
    causes = sorted(set(blocked.values()))
    lead = "mask() chose no channel" if spec.is_empty() else f"mask() left {len(blocked)} layer(s) unmasked"
    warnings.warn(
        MaskWarning(
            f"{lead} because their channels cross ops fx_upscale cannot map: {'; '.join(causes[:3])}"
            f"{' ...' if len(causes) > 3 else ''}. Skipped: {', '.join(sorted(blocked)[:6])}"
            f"{' ...' if len(blocked) > 6 else ''}. Give those ops a handler (fx_upscale.register_pointwise, "
            "register_per_channel, HandlerTable.register_handler) to mask these layers too",
            blocked,
        ),
        stacklevel=3,
    )


def _output_spec(
    gm: fx.GraphModule,
    analysis: ChannelAnalysis,
    layers: list[lay.Layer],
    pick: Callable[..., list[list[int]]],
    unmaskable: frozenset[int],
    constrained: bool,
) -> PruneSpec:
    """The output-side spec of the filters ``pick(unmaskable=...)`` chooses. With ``constrained``, chosen classes that a
    consumer of the masked model still needs (revived on their way to it) become unmaskable and the choice is
    made again: masking them would remove nothing. Each round makes chosen, so maskable, classes unmaskable: the
    loop ends."""
    while True:
        chosen = pick(unmaskable=unmaskable)
        spec, masked_analysis = lay.output_spec(gm, analysis, layers, chosen)
        revived = lay.revived_classes(analysis, masked_analysis, layers, chosen) if constrained else frozenset()
        if not revived:
            return spec
        unmaskable = unmaskable | revived


def _layers(
    analysis: ChannelAnalysis, side: str, unmaskable: frozenset[int], constrained: bool, parameters: set[str]
) -> list[lay.Layer]:
    """The layers of ``side`` that may be masked: a layer whose weight is a buffer (a fixed blur filter read by
    ``F.conv2d``) is not a parameter a spec can name."""
    found = (lay.input_layers if side == "input" else lay.output_layers)(analysis, unmaskable, constrained)
    return [layer for layer in found if layer.weight in parameters]


def _scorer(
    gm: fx.GraphModule,
    analysis: ChannelAnalysis,
    heuristic: str | Callable[[torch.Tensor], torch.Tensor],
    layers: list[lay.Layer],
    calibration: Iterable | None,
) -> Callable[[lay.Layer], torch.Tensor]:
    """``layer -> float64 scores per position`` for the heuristic (HRank: ranks collected once, up front)."""
    if heuristic == "hrank":
        assert calibration is not None, "_check_arguments requires calibration for hrank"
        axes = {layer.feature_map: analysis.layouts[layer.feature_map].axis for layer in layers}
        ranks = average_ranks(gm, axes, calibration) if axes else {}
        return lambda layer: ranks[layer.feature_map]
    function = BUILTIN[heuristic] if isinstance(heuristic, str) else heuristic

    def score(layer: lay.Layer) -> torch.Tensor:
        where = f"the {len(layer.classes)} {layer.side} channels of {layer.weight!r}"
        slices = lay.slices(gm, analysis, layer, flatten=function not in REDUCING)
        return check_scores(function(slices), len(layer.classes), where)

    return score


def _check_arguments(
    amount: float,
    heuristic: str | Callable[[torch.Tensor], torch.Tensor],
    side: str,
    method: str,
    scope: str,
    calibration: Iterable | None,
) -> None:
    if not callable(heuristic) and heuristic not in HEURISTICS:
        raise SpecError(f"heuristic must be one of {HEURISTICS} or a callable (slices) -> scores, not {heuristic!r}")
    _check_choice("side", side, SIDES)
    _check_choice("method", method, METHODS)
    _check_choice("scope", scope, SCOPES)
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 <= amount < 1:
        raise SpecError(f"amount must be a fraction in [0, 1), not {amount!r}")
    if heuristic == "hrank" and calibration is None:
        raise SpecError(
            "heuristic='hrank' ranks the feature maps of calibration data: pass calibration=[batch, ...], input "
            "batches shaped like example_inputs (a tensor, or a tuple of tensors, per batch)"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{name} must be one of {choices}, not {value!r}")


__all__ = ["HEURISTICS", "METHODS", "SCOPES", "SIDES", "mask"]
