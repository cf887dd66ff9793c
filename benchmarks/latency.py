"""Latency benchmark: the unpruned model against the constrained, baseline and upscale exports and the copy-free
oracle, for the README's models, in one process with interleaved repetitions (``fx_upscale/latency.py``).

Defaults: resnet50, mobilenet_v2, efficientnet_b0, efficientnet_v2_s, densenet121 (weights=None, seed 0, 224x224,
float32), 30% input-side unconstrained L2 masks, batch 1 and 8, eager, one thread. ``--compile`` adds
``torch.compile`` (inductor) for the ``--compile-models`` (default resnet50, mobilenet_v2), whose upscale export is
planned for the compiled backend. The cost model is calibrated first (``fx-upscale calibrate``, cached), the
exports are planned with it, and every variant's predicted latency is printed beside the measured one. Writes
``benchmarks/results/latency.csv`` (``latency-compile.csv`` with ``--compile``, ``latency-cuda.csv`` on CUDA) and a
bar plot (``benchmarks/latency[-compile][-cuda].png``), and prints the README table.

    python benchmarks/latency.py [--repeats 15] [--threads 1] [--batch 1 8] [--compile] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys

from fx_upscale.cli import main as cli_main

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s", "densenet121"]
COMPILE_MODELS = ["resnet50", "mobilenet_v2"]


def bench_arguments(args: argparse.Namespace) -> list[str]:
    """The ``fx-upscale bench`` command line this benchmark runs."""
    suffix = ("-compile" if args.compile else "") + ("-cuda" if args.device == "cuda" else "")
    argv = ["bench", *args.models, "--calibrate", "--amount", "0.3", "--side", "input", "--method", "unconstrained",
            "--batch", *map(str, args.batch), "--threads", str(args.threads), "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--device", args.device,
            "--csv", args.csv or f"benchmarks/results/latency{suffix}.csv",
            "--plot", args.plot or f"benchmarks/latency{suffix}.png"]  # fmt: skip
    if args.compile:
        argv += ["--backend", "eager", "compile", "--compile-models", *args.compile_models]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also torch.compile the --compile-models")
    parser.add_argument("--compile-models", nargs="+", default=COMPILE_MODELS)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--plot", help="plot path (default benchmarks/latency[-compile][-cuda].png)")
    parser.add_argument("--csv", help="CSV path (default benchmarks/results/latency[-compile][-cuda].csv)")
    args = parser.parse_args(argv)
    command = bench_arguments(args)
    print("fx-upscale " + " ".join(command), flush=True)
    return cli_main(command)


if __name__ == "__main__":
    sys.exit(main())
