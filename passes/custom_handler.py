"""Recipe: register a full op handler for a custom module, so the channels around it can be pruned.

    python passes/custom_handler.py

``register_per_channel`` covers a layer computing ``f(x[:, c]) * weight[c] + bias[c]`` with ``f(0) == 0``: it reads
a zero ``weight[c]`` as a removed channel. ``ChannelGate`` below scales by ``sigmoid(logit[c])``, which is never zero
(a zero logit opens the gate halfway), so that rule would remove channels the masked model still uses. A full
:class:`fx_upscale.OpHandler` states the module's own rule:

- a frozen *role* dataclass: what ``recognise`` found at one node (its input node, its module, its tensors);
- ``propagate``: the channel rule on the walk (output channel ``c`` is input channel ``c``; it is zero when the
  input channel is zero and ``offset[c] == 0``);
- ``rewrite``: which tensors and attributes follow the kept channels (into ``Updates``, nothing is changed here);
- ``masking`` / ``output_weight``: what ``mask()`` and a ``PruneSpec`` name for its channels (the offset);
- ``invariant``: its attributes agree with its tensors after pruning.

The handler goes into a copy of the default table, passed to ``export(..., handlers=table)``; registered module
types are traced as leaves. The recipe prints the error without the handler first, then the exact export.
"""

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

import fx_upscale
from fx_upscale.channels import ChannelWalk
from fx_upscale.ops import Carry, Context, Masking, Mismatch, RewriteContext, Updates
from fx_upscale.passes import graph_module_check


class ChannelGate(nn.Module):
    """A learned soft gate per channel: ``offset[c] + x[:, c] * sigmoid(logit[c])``, the product written with einsum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.logit = nn.Parameter(torch.randn(channels))
        self.offset = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        shape = (1, self.channels, 1, 1)
        return self.offset.view(shape) + torch.einsum("nchw,c->nchw", x, torch.sigmoid(self.logit))


@dataclass(frozen=True, kw_only=True)
class Gate:
    """The role of one ChannelGate call: its input node, its module and its tensors (qualified names)."""

    data: str
    module: str
    logit: str
    offset: str


class GateHandler(fx_upscale.OpHandler[Gate]):
    role = Gate

    def recognise(self, node: fx.Node, context: Context, data: object) -> Gate:
        # The table routes a module only when it is called once with one tensor input.
        name = str(node.target)
        source = node.args[0]
        assert isinstance(source, fx.Node)
        return Gate(data=source.name, module=name, logit=f"{name}.logit", offset=f"{name}.offset")

    def propagate(self, walk: ChannelWalk, node: fx.Node, role: Gate) -> bool | None:
        source = walk.layouts.get(role.data)
        if source is None:
            return None  # its input carries no tracked channels: neither does its output
        if source.axis != 1 or source.repeat != 1 or source.split:
            return False  # not channels on axis 1: the walk makes this node a barrier
        offset_zero = walk.tensor(role.offset).eq(0).tolist()
        if len(offset_zero) != len(source.ids):
            return False
        zeros = tuple(z and o for z, o in zip(walk.zeros[role.data], offset_zero))
        walk.set_output(node, source, zeros)  # the same channel ids: channel c stays channel c
        return True

    def rewrite(self, name: str, role: Gate, context: RewriteContext, updates: Updates) -> None:
        rows = context.physical.get(name)  # kept channels of its output, original positions, in physical order
        if rows is None:
            return
        updates.keep(role.logit, 0, rows, context.size(name))
        updates.keep(role.offset, 0, rows, context.size(name))
        updates.attr(role.module, "channels", len(rows))

    def masking(self, role: Gate) -> Masking:
        # Masking a producer's filters masks the offset too, else the offset revives the channel.
        return Masking(carry=Carry.PER_CHANNEL, per_channel_weight=role.offset, per_channel_input=role.data)

    def output_weight(self, role: Gate) -> str:
        return role.offset

    def invariant(self, module: nn.Module) -> list[Mismatch]:
        if not isinstance(module, ChannelGate):
            return []
        sizes = {"logit": module.logit.shape[0], "offset": module.offset.shape[0]}
        return [Mismatch("channels", module.channels, n) for n in sizes.values() if n != module.channels]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = ChannelGate(16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.gate(self.conv1(x))))


def main() -> None:
    torch.manual_seed(0)
    model = Net().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pruned = [1, 4, 9]  # filters of conv1, and the same offsets (else the offset revives the channel)
    columns = [2, 7]  # and two input channels of conv2 only: conv1 and the gate keep them for nobody
    spec = fx_upscale.PruneSpec(
        outputs={"conv1.weight": pruned, "gate.offset": pruned}, inputs={"conv2.weight": columns}
    )
    try:
        fx_upscale.export(model, x, spec=spec)
        raise AssertionError("the default table cannot map channels through ChannelGate's einsum")
    except fx_upscale.UnsupportedOpError as error:
        print(f"without the handler: UnsupportedOpError: {str(error)[:90]}...")

    table = fx_upscale.default_handlers().copy()  # the default table itself stays as it was
    table.register_handler(GateHandler(), [ChannelGate])
    result = fx_upscale.export(model, x, spec=spec, handlers=table)  # the export checks GateHandler.invariant too
    gate = result.module.gate
    assert isinstance(gate, ChannelGate)  # traced as a leaf: still the user's module, now with fewer channels
    assert gate.channels == gate.logit.numel() == gate.offset.numel() == result.module.conv1.out_channels == 11

    # mask() with the same table: masking conv1's filters masks the gate's offsets with them (Carry.PER_CHANNEL)
    masked = fx_upscale.mask(model, x, amount=0.25, side="output", handlers=table)
    assert masked.outputs["gate.offset"] == masked.outputs["conv1.weight"] and len(masked.outputs["conv1.weight"]) == 4
    masked_result = fx_upscale.export(model, x, spec=masked, handlers=table)
    assert masked_result.module.gate.channels == 12
    graph_module_check(table)(result.module)  # every handler's invariant, GateHandler's included
    with torch.no_grad():
        diff = (result.module(x) - spec.apply(model)(x)).abs().max().item()
        masked_diff = (masked_result.module(x) - masked.apply(model)(x)).abs().max().item()
    assert diff <= 1e-9 and masked_diff <= 1e-9, (diff, masked_diff)
    print(
        f"with the handler: conv1 keeps {result.module.conv1.out_channels} of 16 filters, gate.channels = "
        f"{gate.channels}, gate.logit has {gate.logit.numel()} entries, max |exported - masked| = {diff:.2e}"
    )


if __name__ == "__main__":
    main()
