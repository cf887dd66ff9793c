"""densenet121 (224x224, 30% input-side L2 masks, the cached calibration): selections absorbed into ``cat``,
``narrow`` nodes and gathers of the upscale export at batch 1 and 8.

    OMP_NUM_THREADS=1 python benchmarks/densenet_absorbed.py
"""

import torch

import fx_upscale
from fx_upscale.cli.models import load_model
from fx_upscale.cost_model import load_cost_model


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = load_model("densenet121")
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)
        spec = fx_upscale.mask(model, x, amount=0.3, side="input")
        result = fx_upscale.export(model, x, spec=spec, cost_model=load_cost_model())
        report = result.report
        narrows = sum(1 for n in result.module.graph.nodes if n.target is torch.narrow)
        print(batch, "absorbed", report.absorbed, "narrow nodes", narrows, "gathers", report.gathers, report.cost_model)


if __name__ == "__main__":
    main()
