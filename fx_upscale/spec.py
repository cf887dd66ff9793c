"""PruneSpec: which channels are pruned, named by parameter.

A spec lists, per weight parameter name (``"layer1.0.conv1.weight"``), the pruned *input* channels (indices on the
weight's input axis: columns of a conv/linear weight, rows of a transposed conv's) and the pruned *output* channels
(indices on its output axis: a filter, with its bias — the parameter named like the weight with ``bias`` in place of
``weight``; for per-channel modules such as BatchNorm, the channel's weight and bias). A frozen norm's affine map
held in buffers (torchvision's ``FrozenBatchNorm2d``) is named like a parameter (``"body.bn1.weight"``):
:func:`nameable_tensors`.
``spec.apply(model)`` returns the masked model: a copy with those slices set to zero. Everything fx_upscale exports
is measured against that masked model.

Start reading at :class:`PruneSpec`.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import SpecError

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_TRANSPOSED_OPS = (
    F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, torch.ops.aten.conv_transpose1d.default,
    torch.ops.aten.conv_transpose2d.input, torch.ops.aten.conv_transpose3d.input,
)  # fmt: skip


def _frozen_channels(mapping: Mapping[str, Iterable[int]] | None) -> dict[str, frozenset[int]]:
    result = {}
    for name, channels in (mapping or {}).items():
        chosen = frozenset(int(c) for c in channels)
        if chosen:
            result[str(name)] = chosen
    return dict(sorted(result.items()))


@dataclass(frozen=True, eq=True)
class PruneSpec:
    """Pruned input and output channels per weight parameter name.

    >>> spec = PruneSpec(inputs={"fc.weight": [0, 2]})
    >>> spec.inputs["fc.weight"] == frozenset({0, 2})
    True
    >>> spec.is_empty()
    False
    """

    inputs: Mapping[str, frozenset[int]] = field(default_factory=dict)
    outputs: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _frozen_channels(self.inputs))
        object.__setattr__(self, "outputs", _frozen_channels(self.outputs))

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    def is_empty(self) -> bool:
        return not self.inputs and not self.outputs

    def merged(self, other: PruneSpec) -> PruneSpec:
        """The union of two specs."""

        def union(a: Mapping[str, frozenset[int]], b: Mapping[str, frozenset[int]]) -> dict:
            return {k: a.get(k, frozenset()) | b.get(k, frozenset()) for k in set(a) | set(b)}

        return PruneSpec(union(self.inputs, other.inputs), union(self.outputs, other.outputs))

    def count(self) -> int:
        """Number of (parameter, channel) entries."""
        return sum(map(len, self.inputs.values())) + sum(map(len, self.outputs.values()))

    @classmethod
    def from_zeros(cls, model: nn.Module) -> PruneSpec:
        """Infer the spec from all-zero weight slices.

        An output channel is pruned when its filter (``weight[c]``) and its bias entry are zero; an input channel
        when its weight column (``weight[:, c]``) is zero. A 1-D ``weight`` with a ``bias`` beside it (BatchNorm,
        LayerNorm) counts as pruned at ``c`` when both are zero there.
        """
        inputs, outputs = {}, {}
        params = nameable_tensors(model)
        for name, weight in params.items():
            if not name.endswith("weight") or weight.ndim == 0:
                continue
            in_axis, out_axis = weight_axes(model, name)
            bias = _sibling_bias(params, name)
            rows = _zero_slices(weight.detach(), out_axis, None if bias is None else bias.detach())
            if rows:
                outputs[name] = rows
            if weight.ndim >= 2 and weight.shape[in_axis] > 1:
                columns = _zero_slices(weight.detach(), in_axis)
                if columns:
                    inputs[name] = columns
        return cls(inputs, outputs)

    @classmethod
    def from_torch_prune(cls, model: nn.Module) -> PruneSpec:
        """Read the masks ``torch.nn.utils.prune`` left on ``model`` (a ``<name>_mask`` buffer beside a
        ``<name>_orig`` parameter, for weights): a channel is pruned where the whole mask slice is zero, on the
        weight's output axis (a filter) or its input axis (a column), as ``ln_structured`` / ``random_structured``
        leave them; unstructured zeros prune no channel.

        The spec names parameters as they are once the pruning is made permanent (``"conv.weight"``): call
        ``torch.nn.utils.prune.remove(module, "weight")`` on each pruned module before exporting. Like every spec,
        it prunes a filter together with its bias, which ``torch.nn.utils.prune`` leaves unmasked.
        """
        inputs, outputs = {}, {}
        for module_name, module in model.named_modules():
            for name, mask in _prune_masks(module):
                qualified = f"{module_name}.{name}" if module_name else name
                in_axis, out_axis = weight_axes(model, qualified)
                outputs[qualified] = _zero_slices(mask, out_axis)
                if mask.ndim >= 2 and mask.shape[in_axis] > 1:
                    inputs[qualified] = _zero_slices(mask, in_axis)
        if not inputs and not outputs:
            raise SpecError(
                "PruneSpec.from_torch_prune found no torch.nn.utils.prune weight mask (a 'weight_mask' buffer beside "
                "a 'weight_orig' parameter) in the model; after prune.remove() the zeros stay in the weights: read "
                "them with PruneSpec.from_zeros(model)"
            )
        return cls(inputs, outputs)

    def validate(self, model: nn.Module) -> None:
        """Raise :class:`SpecError` if a name is unknown or an index is out of range."""
        params = nameable_tensors(model)
        for side, mapping in (("inputs", self.inputs), ("outputs", self.outputs)):
            for name, channels in mapping.items():
                weight = params.get(name)
                if weight is None:
                    raise SpecError(_unknown_name_message(name, side, params))
                if name.endswith("bias") and (its_weight := name.removesuffix("bias") + "weight") in params:
                    raise SpecError(
                        f"PruneSpec.{side} names {name!r}, a bias; name its weight {its_weight!r} instead (a pruned "
                        "output channel takes its bias entry with it)"
                    )
                axis = weight_axes(model, name)[0 if side == "inputs" else 1]
                if side == "inputs" and weight.ndim < 2:
                    raise SpecError(
                        f"PruneSpec.inputs names {name!r}, a {weight.ndim}-D parameter with no input axis; "
                        f"prune it through 'outputs' instead"
                    )
                size = weight.shape[axis]
                bad = sorted(c for c in channels if not 0 <= c < size)
                if bad:
                    raise SpecError(
                        f"PruneSpec.{side}[{name!r}] has channel indices {bad[:5]} out of range: "
                        f"{name} has {size} channels on axis {axis} (shape {tuple(weight.shape)})"
                    )
                if len(channels) == size and size > 0:
                    raise SpecError(
                        f"PruneSpec.{side}[{name!r}] prunes all {size} channels of {name}; a layer must keep at "
                        "least one (remove the layer from the model instead)"
                    )

    def apply(self, model: nn.Module) -> nn.Module:
        """A masked copy of ``model``: the listed slices set to zero. ``model`` itself is not changed."""
        self.validate(model)
        masked = copy.deepcopy(model)
        params = nameable_tensors(masked)
        with torch.no_grad():
            for name, channels in self.outputs.items():
                index = torch.tensor(sorted(channels), device=params[name].device)
                params[name].index_fill_(weight_axes(masked, name)[1], index, 0)
                bias = _sibling_bias(params, name)
                if bias is not None:
                    bias.index_fill_(0, index, 0)
            for name, channels in self.inputs.items():
                index = torch.tensor(sorted(channels), device=params[name].device)
                params[name].index_fill_(weight_axes(masked, name)[0], index, 0)
        return masked


def nameable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a spec may name: every parameter, and the affine map of a frozen norm held in buffers (a 1-D
    ``weight`` buffer beside a 1-D ``bias`` buffer of its length, as torchvision's ``FrozenBatchNorm2d`` holds
    them: masking output channel ``c`` zeroes both, so the norm maps channel ``c`` to zero whatever its
    statistics)."""
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters())
    for module_name, module in model.named_modules():
        weight, bias = module._buffers.get("weight"), module._buffers.get("bias")
        if weight is None or bias is None or weight.ndim != 1 or bias.shape != weight.shape:
            continue
        prefix = f"{module_name}." if module_name else ""
        tensors[f"{prefix}weight"], tensors[f"{prefix}bias"] = weight, bias
    return tensors


def weight_axes(model: nn.Module, name: str) -> tuple[int, int]:
    """(input axis, output axis) of weight ``name``: (0, 1) for transposed convolutions (a ``ConvTranspose``
    module's weight, or in a ``GraphModule`` a weight a transposed convolution op reads: an ``ExportedProgram``'s
    module), else (1, 0)."""
    module_name, _, leaf = name.rpartition(".")
    if leaf == "weight" and isinstance(model.get_submodule(module_name), _TRANSPOSED):
        return 0, 1
    if isinstance(model, fx.GraphModule) and _read_as_transposed(model, name):
        return 0, 1
    return 1, 0


def _read_as_transposed(graph_module: fx.GraphModule, name: str) -> bool:
    return any(
        user.target in _TRANSPOSED_OPS and user.args[1:2] == (node,)
        for node in graph_module.graph.find_nodes(op="get_attr", target=name)
        for user in node.users
    )


def _sibling_bias(params: Mapping[str, torch.Tensor], weight_name: str) -> torch.Tensor | None:
    """The bias of weight ``x.weight`` is ``x.bias`` (a parameter named otherwise has none)."""
    if not weight_name.endswith("weight"):
        return None
    bias = params.get(weight_name[: -len("weight")] + "bias")
    return bias if bias is not None and bias.ndim == 1 else None


def _prune_masks(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(weight name, mask)`` for each weight of ``module`` that ``torch.nn.utils.prune`` masks."""
    found = []
    for buffer_name, mask in module.named_buffers(recurse=False):
        name = buffer_name.removesuffix("_mask")
        if name != buffer_name and name.endswith("weight") and hasattr(module, name + "_orig") and mask.ndim > 0:
            found.append((name, mask.detach()))
    return found


def _zero_slices(weight: torch.Tensor, axis: int, bias: torch.Tensor | None = None) -> frozenset[int]:
    """Indices along ``axis`` whose whole slice (and bias entry, if given) is zero."""
    zero = weight.transpose(0, axis).reshape(weight.shape[axis], -1).eq(0).all(dim=1)
    if bias is not None and bias.shape[0] == weight.shape[axis]:
        zero &= bias.eq(0)
    return frozenset(torch.nonzero(zero).flatten().tolist())


def _unknown_name_message(name: str, side: str, params: Mapping[str, torch.Tensor]) -> str:
    close = difflib.get_close_matches(name, list(params), n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see model.named_parameters()"
    return f"PruneSpec.{side} names parameter {name!r}, which the model does not have{hint}"
