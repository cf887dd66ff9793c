"""The main demo: prune torchvision resnet18 with 30% input-side unconstrained L2 masks, export it in all
three modes, and print what each export costs and how exact it is.

    python -m fx_upscale.demo [--model resnet18] [--amount 0.3] [--side input] [--size 224]

Needs torchvision and tabulate (``pip install 'fx_upscale[models]'``); weights are random (``weights=None``, seeded),
so no download happens.
"""

from __future__ import annotations

import argparse

import torch

from . import export, mask
from .plan_types import MODES
from .tables import format_table


def _load(name: str) -> torch.nn.Module:
    try:
        import torchvision
    except ImportError as error:  # torchvision is an optional extra
        raise SystemExit("the demo needs torchvision: pip install 'fx_upscale[models]'") from error
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval().double()


def run(model_name: str, amount: float, side: str, size: int) -> list[dict]:
    model = _load(model_name)
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = mask(model, x, amount=amount, heuristic="l2", side=side, method="unconstrained")
    with torch.no_grad():
        expected = spec.apply(model)(x)
    rows = []
    for mode in MODES:
        result = export(model, x, spec=spec, mode=mode)
        with torch.no_grad():
            diff = (result.module(x) - expected).abs().max().item()
        report = result.report
        rows.append(
            {
                "mode": mode,
                "params kept": f"{report.params_after:,} ({100 * report.params_after / report.params_before:.1f}%)",
                "gathers": report.gathers,
                "narrows": report.narrows,
                "copied elements": f"{report.copied_elements:,}",
                "extra pruned": report.extra_pruned_channels,
                "max |exported - masked|": f"{diff:.2e}",
                "export s": f"{report.export_seconds:.2f}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="a torchvision classification model name")
    parser.add_argument("--amount", type=float, default=0.3, help="fraction of channels to mask per layer")
    parser.add_argument("--side", default="input", choices=("input", "output", "both"))
    parser.add_argument("--size", type=int, default=224, help="input image side (batch 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(
        f"{args.model} (weights=None, seed 0), {args.amount:.0%} {args.side}-side unconstrained L2 masks, "
        f"input 1x3x{args.size}x{args.size}, float64"
    )
    rows = run(args.model, args.amount, args.side, args.size)
    print(format_table([list(row.values()) for row in rows], headers=list(rows[0])))
    print("constrained drops 'extra pruned' channels beyond the masks, so it differs from the masked model.")


if __name__ == "__main__":
    main()
