"""efficientnet_v2_s at batch 8 (384x384): the upscale export against the copy-free oracle alone, alternating, 6
rounds each, with and without flushing denormals; and the denormal outputs of each module.

    OMP_NUM_THREADS=1 python benchmarks/upscale_oracle_ab.py
"""

import collections
import time

import torch

from fx_upscale.cli.models import load_model
from fx_upscale.cost_model import load_cost_model
from fx_upscale.latency import build_variants


def denormals(module: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """[denormal entries, all entries] of the outputs of ``module``'s submodules on ``x``."""
    counts = [0, 0]

    def hook(_module, _args, out):
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            size = out.abs()
            counts[0] += int(((size > 0) & (size < torch.finfo(torch.float32).tiny)).sum())
            counts[1] += out.numel()

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(x)
    for handle in handles:
        handle.remove()
    return counts


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, shape = load_model("efficientnet_v2_s")
    x = torch.randn(8, *shape[1:])
    variants = build_variants(model, x, amount=0.3, side="input", cost_models={"eager": load_cost_model()})["eager"]
    for name in ("upscale", "oracle"):
        print(name, "denormal outputs of modules", denormals(variants[name], x))
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        seconds = collections.defaultdict(list)
        with torch.no_grad():
            for name in ("upscale", "oracle"):
                variants[name](x)
            for rep in range(6):
                for name in ("upscale", "oracle") if rep % 2 == 0 else ("oracle", "upscale"):
                    start = time.perf_counter()
                    variants[name](x)
                    seconds[name].append(time.perf_counter() - start)
        print("flush_denormal", flush, {n: round(sorted(v)[3] * 1e3, 1) for n, v in seconds.items()})


if __name__ == "__main__":
    main()
