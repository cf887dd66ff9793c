"""Is training reproducible across machines? The same training, one thread, under the CPU kernels of other machines.

``python -m benchmarks.accuracy.reproducibility`` trains the reduced model of ``tests/test_accuracy.py`` (resnet18,
16x16 digits, half the training images, one epoch, seed 0) in a fresh process per setting, twice each, and prints a
hash of the trained weights and the test accuracy. The settings are environment variables that choose which CPU
kernels the same torch build runs, as another machine would: ``ATEN_CPU_CAPABILITY`` (ATen's vectorised kernels:
``default``, ``avx2``, ``avx512``), ``ONEDNN_MAX_CPU_ISA`` (oneDNN's convolutions) and ``MKL_CBWR`` (MKL's code
path for matrix products). Writes ``benchmarks/results/accuracy-reproducibility.csv``.

Start reading at :func:`main`; :func:`train_once` is what each process runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from fx_upscale.tables import format_table

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
SETTINGS = {
    "this machine's default": {},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "MKL_CBWR=AVX2": {"MKL_CBWR": "AVX2"},
    "all three pinned to AVX2": PINNED,
}


def weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_once() -> dict:
    """Train the reduced model once (no cache) and describe the result."""
    from .data import DataConfig, load_digits_split
    from .train import TrainConfig, build_model, fit, predict

    torch.set_num_threads(1)
    data, train = DataConfig(size=16, train_fraction=0.5), TrainConfig(epochs=1)
    split = load_digits_split(data)
    model = build_model("resnet18", train)
    start = time.perf_counter()
    fit(model, split, train)
    accuracy = float((predict(model, split.test_x).argmax(1) == split.test_y).float().mean())
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "weights_sha256": weights_hash(model.to(memory_format=torch.contiguous_format)),
        "accuracy": round(accuracy, 6),
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_setting(name: str, variables: dict[str, str], repeat: int) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in PINNED}
    env.update(variables, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "benchmarks.accuracy.reproducibility", "--one"]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return {"setting": name, "repeat": repeat, **json.loads(output.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy.reproducibility")
    parser.add_argument("--one", action="store_true", help="train once in this process and print JSON")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(train_once()))
        return
    from .experiment import write_csv

    rows = [run_setting(name, env, r) for name, env in SETTINGS.items() for r in range(args.repeats)]
    write_csv(args.out / "accuracy-reproducibility.csv", rows)
    headers = ("setting", "repeat", "CPU capability", "weights sha256", "test accuracy", "s")
    cells = [(r["setting"], r["repeat"], r["cpu_capability"], r["weights_sha256"], f"{r['accuracy']:.1%}",
              r["seconds"]) for r in rows]  # fmt: skip
    print(format_table(cells, headers, markdown=True))


if __name__ == "__main__":
    main()
