"""Recipe: compose fx_upscale with another FX pass, conv-BatchNorm folding, in both orders.

    python passes/fuse_then_prune.py

1. fold BatchNorm into convolutions (torch.fx.experimental.optimization.fuse), then mask and export the folded graph;
2. export first, then fold BatchNorm into the already pruned convolutions;
3. one PassManager pipeline: fx_upscale's passes, then a folding pass, run for up to three steps (the second step
   changes nothing, so it stops there).
Each prints the largest difference from the masked model.
"""

import torch
import torchvision
from torch.fx.experimental.optimization import fuse
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.passes.infra.pass_manager import PassManager

import fx_upscale
from fx_upscale.passes import check_graph_module, upscale_passes


class FoldBatchNormPass(PassBase):
    """Fold Conv -> BatchNorm pairs into the convolutions; reports modified=False once none is left."""

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        if not any(isinstance(m, torch.nn.BatchNorm2d) for m in graph_module.modules()):
            return PassResult(graph_module, False)
        return PassResult(fuse(graph_module, inplace=True, no_trace=True), True)


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

    graph_module = fx_upscale.trace(spec.apply(model), (x,))  # a private, shape-annotated copy
    manager = PassManager([*upscale_passes(fx_upscale.plan(graph_module)), FoldBatchNormPass()], steps=3)
    manager.add_checks(check_graph_module)  # between passes: lint, module attributes agree with weights
    manager.run_checks_after_each_pass = True
    pipeline = manager(graph_module)
    diff = (pipeline.graph_module(x) - spec.apply(model)(x)).abs().max().item()
    rerun = manager(pipeline.graph_module).modified
    print(
        f"PassManager pipeline: modified={pipeline.modified}, rerun modified={rerun}; "
        f"max |exported - masked| = {diff:.1e}"
    )


if __name__ == "__main__":
    main()
