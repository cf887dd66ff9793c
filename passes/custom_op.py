"""Recipe: teach fx_upscale a custom op, so the channels around it can be pruned.

    python passes/custom_op.py

fx_upscale refuses to prune channels that cross an op it does not know (``UnsupportedOpError``), because it cannot
tell whether the op keeps channel identity. Two declarations cover most custom layers:

- ``fx_upscale.register_pointwise(target, keeps_zero=...)``: an activation-like op (a module type, a function or
  a tensor method name) that maps channel ``c`` to channel ``c``;
- ``fx_upscale.register_per_channel(module_type, weight=..., bias=...)``: a module scaling and shifting each
  channel with its own parameters, which are resliced with the channels.

Registered module types are traced as leaves. The recipe prints the error first, then the exact export.
"""

import torch
from torch import nn

import fx_upscale


class SoftClip(nn.Module):
    """A custom activation: tanh of x clamped to [-3, 3] (zero at zero, so pruned channels stay zero)."""

    def forward(self, x):
        return torch.tanh(torch.clamp(x, -3.0, 3.0))


class ChannelAffine(nn.Module):
    """A custom per-channel layer: shift[c] + x * gain[c], with an op fx_upscale does not know (einsum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.rand(channels) + 0.5)
        self.shift = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return self.shift.view(1, -1, 1, 1) + torch.einsum("nchw,c->nchw", x, self.gain)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.affine = ChannelAffine(16)
        self.act = SoftClip()
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.act(self.affine(self.conv1(x))))


def main() -> None:
    torch.manual_seed(0)
    model = Net().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pruned = [1, 4, 9]  # filters of conv1, and the same channels of the affine layer (else its shift revives them)
    spec = fx_upscale.PruneSpec(outputs={"conv1.weight": pruned, "affine.gain": pruned, "affine.shift": pruned})
    try:
        fx_upscale.export(model, x, spec=spec)
    except fx_upscale.UnsupportedOpError as error:
        print(f"before registering: UnsupportedOpError: {str(error)[:90]}...")

    fx_upscale.register_per_channel(ChannelAffine, weight="gain", bias="shift")
    fx_upscale.register_pointwise(SoftClip, keeps_zero=True)
    try:
        result = fx_upscale.export(model, x, spec=spec)
    finally:  # registrations are global: a library would keep them, a script may undo them
        fx_upscale.unregister(ChannelAffine)
        fx_upscale.unregister(SoftClip)
    with torch.no_grad():
        diff = (result.module(x) - spec.apply(model)(x)).abs().max().item()
    print(
        f"after registering: conv1 keeps {result.module.conv1.out_channels} of 16 filters, "
        f"affine.gain has {result.module.affine.gain.numel()} entries, max |exported - masked| = {diff:.2e}"
    )


if __name__ == "__main__":
    main()
