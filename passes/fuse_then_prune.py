"""Recipe: compose fx_upscale with another FX pass, conv-BatchNorm folding, in both orders.

    python passes/fuse_then_prune.py

1. fold BatchNorm into convolutions (torch.fx.experimental.optimization.fuse), then mask and export the folded graph;
2. export first, then fold BatchNorm into the already pruned convolutions.
Both print the parameter counts and the largest difference from the masked model.
"""
import torch
import torchvision
from torch.fx.experimental.optimization import fuse

import fx_upscale


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)

    folded = fuse(model)  # a GraphModule without BatchNorm; the model itself is untouched
    spec = fx_upscale.mask(folded, x, amount=0.3, side="input")
    result = fx_upscale.export(folded, x, spec=spec)
    diff = (result.module(x) - spec.apply(folded)(x)).abs().max().item()
    print(f"fold, then prune: {result.report.summary()}; max |exported - masked| = {diff:.1e}")

    spec = fx_upscale.mask(model, x, amount=0.3, side="input")
    pruned_then_folded = fuse(fx_upscale.export(model, x, spec=spec).module)
    diff = (pruned_then_folded(x) - spec.apply(model)(x)).abs().max().item()
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in pruned_then_folded.modules())
    print(f"prune, then fold: {batchnorms} BatchNorm left; max |exported - masked| = {diff:.1e}")


if __name__ == "__main__":
    main()
