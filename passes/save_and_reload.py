"""Recipe: torch.export a pruned model, save it as a .pt2 file, and reload it where its Python class does not exist.

    python passes/save_and_reload.py [path.pt2]

fx_upscale.save runs torch.export.export on the pruned module and torch.export.save; fx_upscale.load returns
torch.export.load(path).module(). The reload runs in a fresh Python process that imports neither torchvision nor
the model, and prints the largest difference from the pruned module.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import fx_upscale

RELOAD = """
import sys, torch, fx_upscale
module = fx_upscale.load(sys.argv[1])
saved = torch.load(sys.argv[2])
with torch.no_grad():
    print((module(saved["x"]) - saved["y"]).abs().max().item(), "torchvision" in sys.modules)
"""


def main(path: str | None = None) -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    result = fx_upscale.export(model, x, spec=fx_upscale.mask(model, x, amount=0.3))
    with tempfile.TemporaryDirectory() as tmp:
        path = path or str(Path(tmp) / "pruned.pt2")
        fx_upscale.save(result, path)
        with torch.no_grad():
            torch.save({"x": x, "y": result.module(x)}, Path(tmp) / "io.pt")
        done = subprocess.run(
            [sys.executable, "-c", RELOAD, path, str(Path(tmp) / "io.pt")], capture_output=True, text=True, check=True
        )
    diff, imported = done.stdout.split()
    print(
        f"saved {result.report.params_after:,} parameters to {Path(path).name}; reloaded in a fresh process "
        f"(torchvision imported: {imported}): max |reloaded - pruned| = {float(diff):.1e}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:2])
