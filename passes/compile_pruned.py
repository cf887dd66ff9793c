"""Recipe: fx_upscale with torch.compile, both ways.

    python passes/compile_pruned.py [backend]      # backend: inductor (default), aot_eager, eager

1. export, then compile: torch.compile(fx_upscale.export(...).module, backend=backend);
2. fx_upscale as the torch.compile backend: it prunes the graph Dynamo captures and hands it to `backend`. Dynamo
   must keep the weights in the graph as attributes (install_free_tensors=True); by default it lifts them to graph
   inputs, which cannot be resliced, and the backend says so.
Both print the largest difference from the masked model in eager mode.
"""

import sys

import torch
import torch._dynamo
import torchvision

import fx_upscale


def main(backend: str = "inductor") -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    spec = fx_upscale.mask(model, x, amount=0.3, side="input")
    masked = spec.apply(model)
    with torch.no_grad():
        expected = masked(x)

        result = fx_upscale.export(model, x, spec=spec)
        compiled = torch.compile(result.module, backend=backend)
        diff = (compiled(x) - expected).abs().max().item()
        print(f"export, then torch.compile({backend}): {result.report.summary()}; max |compiled - masked| = {diff:.1e}")

        torch._dynamo.reset()
        upscale = fx_upscale.compile_backend(delegate=backend)
        with torch._dynamo.config.patch(install_free_tensors=True):
            compiled = torch.compile(masked, backend=upscale, dynamic=False)
            diff = (compiled(x) - expected).abs().max().item()
        print(
            f"backend={upscale.__name__}: {upscale.results[0].report.summary()}; max |compiled - masked| = {diff:.1e}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:2])
