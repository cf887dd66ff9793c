"""The op registry: what role each FX node plays for channels.

:func:`classify` maps a node to one frozen *role* value. The channel analysis (``channels.py``) interprets roles;
the registry never looks at channels itself. Roles:

- :class:`Source`      a graph input: its channels are fixed (never pruned, never reordered).
- :class:`Weighted`    conv / linear / conv-transpose with ``groups=1``: a *consumer* of its input channels (weight
                       columns) and a *producer* of new output channels (weight rows, bias).
- :class:`Grouped`     a grouped convolution (``1 < groups``, not depthwise): group ``g`` reads input block ``g`` and
                       writes output block ``g``; a consumer and a producer whose groups keep equal widths.
- :class:`PerChannel`  BatchNorm (module or ``F.batch_norm``) and depthwise conv: one parameter slice per channel,
                       channel identity kept.
- :class:`LayerNorm`   LayerNorm over the channel axis (the last): needs every channel (its statistics), then
                       scales each channel on its own; channels may be reordered, not removed before it.
- :class:`Pointwise`   activations, pooling, dropout, identity: channel identity kept, no parameters.
- :class:`Permute`     ``permute``/``transpose``/``swapaxes``: moves the channel axis, channels unchanged.
- :class:`Elementwise` add/sub/mul/div: channel ``i`` of every full-width operand is merged into channel ``i``.
- :class:`Concat`      ``cat``: concatenates channel spaces (or merges them when it concatenates another axis).
- :class:`Split`       ``split``/``chunk``: cuts the channel axis into pieces (or passes channels through to each piece
                       when it cuts another axis); :class:`Piece` is ``getitem`` of one piece.
- :class:`Slice`       ``narrow`` and ``x[:, a:b]``: one range of an axis.
- :class:`Flatten`     ``flatten``/``view``/``reshape`` that expand each channel into consecutive features.
- :class:`Reshape`     other ``view``/``reshape``: channels pass through if the channel axis survives as an axis.
- :class:`Reduce`      ``mean``/``sum``/``amax`` over axes other than the channel axis.
- :class:`Metadata`    ``size``/``dim``/``shape``: reads no channel values.
- :class:`Output`      the graph output: reads every channel, in order.
- :class:`Unknown`     anything else: a barrier that reads every channel of its inputs.

Custom ops and modules: :func:`register_pointwise` and :func:`register_per_channel` declare how channels cross
them (the recipe ``passes/custom_op.py`` shows both); registered module types are traced as leaves.

Start reading at :func:`classify`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Source:
    pass


@dataclass(frozen=True)
class Weighted:
    data: str  # the FX node feeding the input channels
    data_axis: int  # channel axis of input and output: 1 (conv) or -1 (linear: the last axis)
    weight: str  # qualified parameter name
    bias: str | None
    module: str | None  # qualified module name whose attributes describe the shape
    in_attr: str | None  # e.g. "in_channels", "in_features"
    out_attr: str | None
    weight_in_axis: int = 1
    weight_out_axis: int = 0


@dataclass(frozen=True)
class Grouped:
    """A convolution with ``groups`` groups: weight rows of group ``g`` read only input channels of block ``g``."""

    conv: Weighted  # the convolution's data, weight, bias and shape attributes, as for ``groups=1``
    groups: int


@dataclass(frozen=True)
class PerChannel:
    """One slice per channel along axis 0 of each named tensor (qualified names; ``None`` when absent)."""

    data: str
    kind: str  # "batchnorm" | "depthwise" | "depthwise_functional" | "affine" (a registered module)
    weight: str | None
    bias: str | None
    module: str | None
    count_attrs: tuple[str, ...]  # module attributes equal to the channel count
    running_mean: str | None = None
    running_var: str | None = None

    @property
    def params(self) -> tuple[str, ...]:
        """Every per-channel tensor, resliced together."""
        names = (self.weight, self.bias, self.running_mean, self.running_var)
        return tuple(name for name in names if name is not None)


@dataclass(frozen=True)
class LayerNorm:
    data: str
    weight: str | None
    bias: str | None
    module: str | None  # an nn.LayerNorm whose normalized_shape follows the channel count
    functional: bool = False  # F.layer_norm: its normalized_shape argument follows the channel count


@dataclass(frozen=True)
class Permute:
    data: str
    dims: tuple[int, ...]  # output axis ``i`` is input axis ``dims[i]`` (non-negative)


@dataclass(frozen=True)
class Pointwise:
    data: str
    keeps_zero: bool  # f(0) == 0, so an all-zero channel stays all-zero


@dataclass(frozen=True)
class Elementwise:
    operation: str  # "add" | "sub" | "mul" | "div"


@dataclass(frozen=True)
class Concat:
    inputs: tuple[str, ...]
    dim: int


@dataclass(frozen=True)
class Split:
    data: str
    dim: int  # non-negative
    sections: tuple[int, ...]  # piece sizes along ``dim`` at the example inputs
    chunks: bool  # ``chunk``: equal pieces, so every piece must keep the same number of channels


@dataclass(frozen=True)
class Piece:
    split: str
    index: int


@dataclass(frozen=True)
class Slice:
    data: str
    dim: int  # non-negative
    start: int
    length: int
    getitem: bool  # ``x[...]`` (rewrite the index) rather than ``narrow`` (rewrite start and length)


@dataclass(frozen=True)
class Flatten:
    data: str
    start_dim: int
    constant: bool = False  # a view/reshape whose flattened size is a literal: pruning what it merges breaks it


@dataclass(frozen=True)
class Reshape:
    data: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    constant_axes: frozenset[int] = frozenset()  # output axes whose size is a literal in the graph

    def channel_axis_after(self, axis: int) -> int | None:
        """Where input axis ``axis`` is in the output, if the reshape keeps it whole as one axis."""
        leading = math.prod(self.before[:axis])
        for k, size in enumerate(self.after):
            if math.prod(self.after[:k]) == leading and size == self.before[axis]:
                return None if k in self.constant_axes else k
        return None

    def split_axis(self, axis: int) -> int | None:
        """``k`` if input axis ``axis`` becomes output axes ``k`` (groups, a literal) and ``k + 1`` (computed)."""
        leading = math.prod(self.before[:axis])
        for k in range(len(self.after) - 1):
            if math.prod(self.after[:k]) == leading and self.after[k] * self.after[k + 1] == self.before[axis]:
                if self.after[k] > 1 and k + 1 not in self.constant_axes:
                    return k
        return None

    def merged_axis(self, axis: int) -> int | None:
        """``k`` if input axes ``axis`` and ``axis + 1`` become output axis ``k`` (of a computed size)."""
        leading, merged = math.prod(self.before[:axis]), self.before[axis] * self.before[axis + 1]
        for k, size in enumerate(self.after):
            if math.prod(self.after[:k]) == leading and size == merged and k not in self.constant_axes:
                return k
        return None


@dataclass(frozen=True)
class Reduce:
    data: str
    dims: tuple[int, ...]
    keepdim: bool


@dataclass(frozen=True)
class Metadata:
    pass


@dataclass(frozen=True)
class Output:
    pass


@dataclass(frozen=True)
class GetAttr:
    pass


@dataclass(frozen=True)
class Unknown:
    reason: str


Role = (
    Source
    | Weighted
    | Grouped
    | PerChannel
    | LayerNorm
    | Pointwise
    | Permute
    | Elementwise
    | Concat
    | Split
    | Piece
    | Slice
    | Flatten
    | Reshape
    | Reduce
    | Metadata
    | Output
    | GetAttr
    | Unknown
)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ZERO_TO_NONZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus)
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_ZERO_TO_NONZERO_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid, F.softplus}
_POINTWISE_FUNCTIONS = _ZERO_TO_NONZERO_FUNCTIONS | {
    F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.hardtanh, F.silu, F.gelu, torch.tanh, F.tanh,
    F.hardswish, F.leaky_relu, F.elu, F.selu, F.celu, F.mish,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}  # fmt: skip
_ZERO_TO_NONZERO_METHODS = {"sigmoid", "sigmoid_"}
_POINTWISE_METHODS = _ZERO_TO_NONZERO_METHODS | {
    "relu", "relu_", "tanh", "tanh_", "contiguous", "clone", "detach", "float", "double", "half", "to",
}  # fmt: skip
# Wrapped (leaf) functions known by qualified name, so the registry needs no optional import.
_POINTWISE_BY_NAME = {"torchvision.ops.stochastic_depth.stochastic_depth"}

# Handlers registered by users (register_pointwise / register_per_channel): target -> keeps_zero, or module type
# -> (weight attribute, bias attribute, attributes equal to the channel count).
_CUSTOM_POINTWISE: dict[Any, bool] = {}
_CUSTOM_PER_CHANNEL: dict[type[nn.Module], tuple[str | None, str | None, tuple[str, ...]]] = {}


def register_pointwise(target: Any, *, keeps_zero: bool) -> None:
    """Declare that ``target`` maps each channel of its one tensor input to the same channel of its output.

    ``target`` is an ``nn.Module`` subclass (then traced as a leaf), a function called in the graph (e.g. a
    ``torch.fx.wrap``-ed function or a ``torch.ops`` op), or a tensor method name. ``keeps_zero`` says whether
    ``f(0) == 0`` elementwise (ReLU: yes; sigmoid: no): it decides whether a pruned channel stays prunable after it.

    >>> import torch
    >>> register_pointwise(torch.special.expit, keeps_zero=False)
    >>> unregister(torch.special.expit)
    """
    _CUSTOM_POINTWISE[target] = keeps_zero


def register_per_channel(
    module_type: type[nn.Module], *, weight: str | None = "weight", bias: str | None = "bias",
    count_attrs: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """Declare that ``module_type`` computes ``y[:, c] = f(x[:, c]) * weight[c] + bias[c]`` along axis 1, with
    ``f(0) == 0``: its ``weight``/``bias`` attributes (either may be ``None``) hold one entry per channel along
    their first axis and are resliced with the channels; ``count_attrs`` name integer attributes set to the new
    channel count. The module is traced as a leaf."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_per_channel takes an nn.Module subclass, not {module_type!r}")
    _CUSTOM_PER_CHANNEL[module_type] = (weight, bias, tuple(count_attrs))


def unregister(target: Any) -> None:
    """Forget a handler registered for ``target`` (a no-op if there is none)."""
    _CUSTOM_POINTWISE.pop(target, None)
    _CUSTOM_PER_CHANNEL.pop(target, None)


def is_registered_module(module: nn.Module) -> bool:
    """Whether a handler is registered for ``module``'s type (the tracer keeps such modules whole)."""
    return type(module) in _CUSTOM_PER_CHANNEL or type(module) in _CUSTOM_POINTWISE


_ELEMENTWISE_FUNCTIONS = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div",
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul", "div": "div", "div_": "div"
}  # fmt: skip
_CONCAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_REDUCE_FUNCTIONS = {torch.mean: "mean", torch.sum: "sum", torch.amax: "amax"}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_METADATA_METHODS = {"size", "dim", "numel"}
_FUNCTIONAL_CONV = {F.conv1d, F.conv2d, F.conv3d}
_BATCH_NORM_TENSORS = ("running_mean", "running_var", "weight", "bias")  # F.batch_norm's arguments 1-4
_SPLITS = {
    ("call_function", torch.split),
    ("call_function", torch.chunk),
    ("call_method", "split"),
    ("call_method", "chunk"),
}


def classify(node: fx.Node, gm: fx.GraphModule, module_calls: dict[str, int]) -> Role:
    """The role of ``node``; ``module_calls`` counts call_module nodes per target (shared modules are barriers)."""
    if node.op == "placeholder":
        return Source()
    if node.op == "output":
        return Output()
    if node.op == "get_attr":
        return GetAttr()
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        calls = module_calls.get(str(node.target), 0)
        if calls > 1 and any(True for _ in module.parameters()) or calls > 1 and any(True for _ in module.buffers()):
            return Unknown(f"module {node.target!r} holds parameters and is called {calls} times")
        return _classify_module(node, module)
    if node.op == "call_method":
        return _classify_method(node)
    return _classify_function(node)


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _data_name(node: fx.Node) -> str | None:
    data = _arg(node, 0, "input")
    return data.name if isinstance(data, fx.Node) else None


def _classify_module(node: fx.Node, module: nn.Module) -> Role:
    data = _data_name(node)
    if data is None or len(node.all_input_nodes) != 1:
        return Unknown("module called with other than one tensor input")
    name = str(node.target)
    if type(module) in _CUSTOM_POINTWISE:
        return Pointwise(data, _CUSTOM_POINTWISE[type(module)])
    if type(module) in _CUSTOM_PER_CHANNEL:
        weight, bias, count_attrs = _CUSTOM_PER_CHANNEL[type(module)]
        names = [f"{name}.{a}" if a and getattr(module, a, None) is not None else None for a in (weight, bias)]
        return PerChannel(data, "affine", names[0], names[1], name, count_attrs)
    if isinstance(module, _CONV + _CONV_TRANSPOSE):
        return _classify_conv_module(node, module, name, data)
    if isinstance(module, nn.Linear):
        bias = f"{name}.bias" if module.bias is not None else None
        return Weighted(data, -1, f"{name}.weight", bias, name, "in_features", "out_features")
    if isinstance(module, _BATCHNORM):
        if not module.track_running_stats or module.running_mean is None:
            return Unknown("BatchNorm without running statistics normalizes with batch statistics")
        weight = f"{name}.weight" if module.weight is not None else None
        bias = f"{name}.bias" if module.bias is not None else None
        return PerChannel(
            data, "batchnorm", weight, bias, name, ("num_features",), f"{name}.running_mean", f"{name}.running_var"
        )
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            return Unknown("LayerNorm over more than the last axis")
        weight = f"{name}.weight" if module.weight is not None else None
        bias = f"{name}.bias" if module.bias is not None else None
        return LayerNorm(data, weight, bias, name)
    if isinstance(module, nn.Flatten):
        return Flatten(data, module.start_dim) if module.end_dim == -1 else Unknown("Flatten with end_dim != -1")
    if isinstance(module, _POINTWISE_MODULES):
        return Pointwise(data, not isinstance(module, _ZERO_TO_NONZERO_MODULES))
    return Unknown(f"no handler for module type {type(module).__name__}")


def _classify_conv_module(node: fx.Node, module: nn.Module, name: str, data: str) -> Role:
    bias = f"{name}.bias" if module.bias is not None else None
    transposed = isinstance(module, _CONV_TRANSPOSE)
    if module.groups == 1:
        in_axis, out_axis = (0, 1) if transposed else (1, 0)
        return Weighted(data, 1, f"{name}.weight", bias, name, "in_channels", "out_channels", in_axis, out_axis)
    if not transposed and module.groups == module.in_channels == module.out_channels:
        return PerChannel(data, "depthwise", f"{name}.weight", bias, name, ("in_channels", "out_channels", "groups"))
    if not transposed:
        conv = Weighted(data, 1, f"{name}.weight", bias, name, "in_channels", "out_channels")
        return Grouped(conv, module.groups)
    return Unknown(f"grouped transposed convolution (groups={module.groups}) is not supported")


def _classify_function(node: fx.Node) -> Role:
    target = node.target
    qualname = f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"
    if _is_hashable(target) and target in _CUSTOM_POINTWISE:
        return _classify_pointwise_call(node, _CUSTOM_POINTWISE[target])
    if target in _ELEMENTWISE_FUNCTIONS:
        return Elementwise(_ELEMENTWISE_FUNCTIONS[target])
    if target in _CONCAT_FUNCTIONS:
        return _classify_concat(node)
    if target is torch.flatten:
        return _classify_flatten(node, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
    if target in _REDUCE_FUNCTIONS:
        return _classify_reduce(node, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
    if target is getattr and len(node.args) > 1 and node.args[1] in ("shape", "dtype", "device", "ndim"):
        return Metadata()
    if target in (torch.split, torch.chunk):
        return _classify_split(node, "chunk" if target is torch.chunk else "split")
    if target is torch.narrow:
        return _classify_narrow(node)
    if target is operator.getitem:
        return _classify_getitem(node)
    if target in (torch.permute, torch.transpose, torch.swapaxes, torch.swapdims):
        return _classify_permute(node, target.__name__)
    if target in _FUNCTIONAL_CONV or target is F.linear:
        return _classify_functional_weighted(node)
    if target is F.layer_norm:
        return _classify_functional_layer_norm(node)
    if target is F.batch_norm:
        return _classify_functional_batch_norm(node)
    if target in _POINTWISE_FUNCTIONS or qualname in _POINTWISE_BY_NAME:
        return _classify_pointwise_call(node, target not in _ZERO_TO_NONZERO_FUNCTIONS)
    return Unknown("no handler for this function")


def _classify_method(node: fx.Node) -> Role:
    method = str(node.target)
    if method in _CUSTOM_POINTWISE:
        return _classify_pointwise_call(node, _CUSTOM_POINTWISE[method])
    if method in _ELEMENTWISE_METHODS:
        return Elementwise(_ELEMENTWISE_METHODS[method])
    if method in _METADATA_METHODS:
        return Metadata()
    if method == "flatten":
        return _classify_flatten(node, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
    if method in ("view", "reshape"):
        return _classify_reshape(node)
    if method in ("permute", "transpose", "swapaxes", "swapdims"):
        return _classify_permute(node, method)
    if method in ("split", "chunk"):
        return _classify_split(node, method)
    if method == "narrow":
        return _classify_narrow(node)
    if method in _REDUCE_METHODS:
        return _classify_reduce(node, _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
    if method in _POINTWISE_METHODS:
        return _classify_pointwise_call(node, method not in _ZERO_TO_NONZERO_METHODS)
    return Unknown("no handler for this tensor method")


def _classify_pointwise_call(node: fx.Node, keeps_zero: bool) -> Role:
    data = _data_name(node)
    tensor_inputs = [n for n in node.all_input_nodes if _is_tensor(n)]
    if data is None or len(tensor_inputs) != 1:
        return Unknown("pointwise op with other than one tensor input")
    return Pointwise(data, keeps_zero)


def _classify_concat(node: fx.Node) -> Role:
    tensors = _arg(node, 0, "tensors")
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
        return Unknown("cat of something other than a list of tensors")
    ndim = len(_shape(node))
    dim = _arg(node, 1, "dim", 0)
    return Concat(tuple(t.name for t in tensors), dim % ndim)


def _classify_flatten(node: fx.Node, start_dim: int, end_dim: int) -> Role:
    data = _data_name(node)
    ndim = len(_shape(node.args[0])) if isinstance(node.args[0], fx.Node) else 0
    if data is None or ndim == 0 or end_dim % ndim != ndim - 1:
        return Unknown("flatten that does not run to the last axis")
    return Flatten(data, start_dim % ndim)


def _classify_reshape(node: fx.Node) -> Role:
    """``view``/``reshape`` that equals ``flatten(start_dim)`` for some start_dim is a flatten."""
    data = node.args[0]
    if not isinstance(data, fx.Node):
        return Unknown("reshape of a non-tensor")
    before, after = _shape(data), _shape(node)
    constant = _constant_sizes(node, len(after))
    start = len(after) - 1
    if before[:start] == after[:start] and math.prod(before[start:]) == after[-1]:
        return Flatten(data.name, start, start in constant)
    return Reshape(data.name, tuple(before), tuple(after), constant)


def _constant_sizes(node: fx.Node, ndim: int) -> frozenset[int]:
    """Output axes of a view/reshape whose size is a literal int (not -1, not computed in the graph)."""
    sizes = list(node.args[1:]) or [node.kwargs.get("shape", node.kwargs.get("size", ()))]
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    if len(sizes) != ndim:
        return frozenset(range(ndim))
    return frozenset(k for k, size in enumerate(sizes) if isinstance(size, int) and size != -1)


def _classify_permute(node: fx.Node, name: str) -> Role:
    data = _data_name(node)
    ndim = len(_shape(node))
    if data is None or ndim == 0:
        return Unknown("permute of a non-tensor")
    arguments = list(node.args[1:]) + list(node.kwargs.values())
    if name == "permute":
        dims = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], (list, tuple)) else arguments
    elif len(arguments) == 2:
        a, b = (d % ndim for d in arguments)
        dims = list(range(ndim))
        dims[a], dims[b] = b, a
    else:
        return Unknown(f"{name} with arguments {arguments}")
    if not all(isinstance(d, int) for d in dims) or len(dims) != ndim:
        return Unknown(f"{name} with dimensions that are not constants: {dims}")
    return Permute(data, tuple(d % ndim for d in dims))


def _classify_split(node: fx.Node, kind: str) -> Role:
    data = _data_name(node)
    shape = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else ()
    if data is None or not shape:
        return Unknown(f"{kind} of a non-tensor")
    size = _arg(node, 1, "chunks" if kind == "chunk" else "split_size_or_sections")
    size = node.kwargs.get("split_size", size)
    dim = _arg(node, 2, "dim", 0) % len(shape)
    length = shape[dim]
    if kind == "chunk":
        if not isinstance(size, int) or length % size:
            return Unknown(f"chunk into {size} pieces of an axis of {length}: not equal pieces")
        return Split(data, dim, (length // size,) * size, chunks=True)
    if isinstance(size, int):
        sections = (size,) * (length // size) + ((length % size,) if length % size else ())
    elif isinstance(size, (list, tuple)) and all(isinstance(s, int) for s in size):
        sections = tuple(size)
    else:
        return Unknown(f"split with sizes that are not constants: {size}")
    return Split(data, dim, sections, chunks=False)


def _classify_narrow(node: fx.Node) -> Role:
    data = _data_name(node)
    dim, start, length = _arg(node, 1, "dim"), _arg(node, 2, "start"), _arg(node, 3, "length")
    shape = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else ()
    if data is None or not shape or not all(isinstance(v, int) for v in (dim, start, length)):
        return Unknown("narrow with arguments that are not constants")
    dim %= len(shape)
    return Slice(data, dim, start % shape[dim], length, getitem=False)


def _classify_getitem(node: fx.Node) -> Role:
    """``getitem`` of a split's piece, or basic slicing of one axis (``x[:, a:b]``); anything else is unknown."""
    source, index = node.args[0], node.args[1]
    if not isinstance(source, fx.Node):
        return Unknown("getitem of a non-node")
    if isinstance(index, int) and (source.op, source.target) in _SPLITS:
        return Piece(source.name, index)
    shape = _shape(source)
    index = index if isinstance(index, tuple) else (index,)
    if not shape or len(index) > len(shape) or not all(isinstance(i, slice) for i in index):
        return Unknown("indexing other than basic slices of a tensor")
    ranges = [(dim, i.indices(shape[dim])) for dim, i in enumerate(index) if i != slice(None)]
    if len(ranges) > 1 or any(step != 1 for _, (_, _, step) in ranges):
        return Unknown("slicing of more than one axis, or with a step")
    if not ranges:
        return Pointwise(source.name, True)
    dim, (start, stop, _) = ranges[0]
    return Slice(source.name, dim, start, max(0, stop - start), getitem=True)


def _classify_reduce(node: fx.Node, dims: Any, keepdim: bool) -> Role:
    data = _data_name(node)
    if data is None or dims is None:
        return Unknown("reduction over every axis")
    ndim = len(_shape(node.args[0]))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return Reduce(data, tuple(sorted(d % ndim for d in dims)), bool(keepdim))


def _classify_functional_weighted(node: fx.Node) -> Role:
    data, weight = _data_name(node), _arg(node, 1, "weight")
    bias = _arg(node, 2, "bias")
    if data is None or not _is_get_attr(weight) or not (bias is None or _is_get_attr(bias)):
        return Unknown("weights that are not plain attributes (get_attr) cannot be resliced")
    bias_name = str(bias.target) if bias is not None else None
    if node.target is F.linear:
        return Weighted(data, -1, str(weight.target), bias_name, None, None, None)
    groups = _arg(node, 6, "groups", 1)
    if groups == 1:
        return Weighted(data, 1, str(weight.target), bias_name, None, None, None)
    channels = _shape(node)[1]
    if groups == channels == _shape(node.args[0])[1]:
        return PerChannel(data, "depthwise_functional", str(weight.target), bias_name, None, ())
    return Grouped(Weighted(data, 1, str(weight.target), bias_name, None, None, None), groups)


def producer_conv(role: Role) -> Weighted | None:
    """The weights of a role that creates channels (conv, linear, grouped conv), else ``None``."""
    if isinstance(role, Weighted):
        return role
    return role.conv if isinstance(role, Grouped) else None


def _classify_functional_layer_norm(node: fx.Node) -> Role:
    data, shape = _data_name(node), _arg(node, 1, "normalized_shape")
    weight, bias = _arg(node, 2, "weight"), _arg(node, 3, "bias")
    if data is None or not isinstance(shape, (list, tuple)) or len(shape) != 1:
        return Unknown("layer_norm over more than the last axis")
    if not all(p is None or _is_get_attr(p) for p in (weight, bias)):
        return Unknown("layer_norm weights that are not plain attributes (get_attr) cannot be resliced")
    names = [str(p.target) if p is not None else None for p in (weight, bias)]
    owner = next((name.rpartition(".")[0] for name in names if name is not None), None)
    module = owner if owner is not None and isinstance(_owner(node, owner), nn.LayerNorm) else None
    return LayerNorm(data, names[0], names[1], module, functional=True)


def _classify_functional_batch_norm(node: fx.Node) -> Role:
    """``F.batch_norm`` in inference mode with running statistics (how Dynamo's graphs hold BatchNorm)."""
    data = _data_name(node)
    tensors = [_arg(node, index, name) for index, name in enumerate(_BATCH_NORM_TENSORS, start=1)]
    if data is None:
        return Unknown("batch_norm of something other than a tensor")
    if _arg(node, 5, "training", False) is not False or tensors[0] is None or tensors[1] is None:
        return Unknown("batch_norm in training mode or without running statistics normalizes with batch statistics")
    if not all(t is None or _is_get_attr(t) for t in tensors):
        return Unknown("batch_norm tensors that are not plain attributes (get_attr) cannot be resliced")
    mean, var, weight, bias = (str(t.target) if t is not None else None for t in tensors)
    return PerChannel(data, "batchnorm", weight, bias, None, (), mean, var)


def _owner(node: fx.Node, qualname: str) -> nn.Module | None:
    try:
        return node.graph.owning_module.get_submodule(qualname)
    except AttributeError:
        return None


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _is_get_attr(value: Any) -> bool:
    return isinstance(value, fx.Node) and value.op == "get_attr" and len(value.users) == 1


def _is_tensor(node: fx.Node) -> bool:
    return "tensor_meta" in node.meta and hasattr(node.meta["tensor_meta"], "shape")


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
