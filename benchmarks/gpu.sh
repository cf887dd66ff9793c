#!/usr/bin/env bash
# GPU latency benchmark, run once on a machine with a CUDA GPU, from the repository root:
#
#   PYTHONPATH=. bash benchmarks/gpu.sh OUT_DIR [benchmarks/gpu.py options, e.g. --cudagraphs]
#
# benchmarks/gpu.py does the work (its docstring says what it measures): the README's latency models with 30%
# input-side unconstrained L2 masks; unpruned, constrained, baseline, upscale and the copy-free oracle; float16 and
# float32; batch 1 and 8; eager, then torch.compile (inductor) as the time budget allows. Exports are made once per
# model and batch in float32 on the GPU (masks chosen on the CPU) and cast to float16: an export only slices and
# reorders weights, so the cast is exact.
#
# Writes OUT_DIR/gpu_latency.csv (flushed row by row), OUT_DIR/gpu_latency.md (the tables) and
# OUT_DIR/gpu_latency.log (everything printed). Needs python3 with torch, torchvision and networkx; nothing is
# downloaded (weights=None). Time: gpu.py stops starting steps that would end after --budget-s (420 s) and prints
# an estimate before each; this script stops it at GPU_BENCH_LIMIT_S (460 s) in any case, leaving the rows measured
# so far. Without a CUDA device it prints "no CUDA device: ...; nothing measured" and exits 0.
#
# Environment: PYTHON (default python3), GPU_BENCH_LIMIT_S (default 460).
set -uo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: PYTHONPATH=. bash benchmarks/gpu.sh OUT_DIR [benchmarks/gpu.py options]" >&2
    exit 2
fi
out=$1
shift
python=${PYTHON:-python3}
limit=${GPU_BENCH_LIMIT_S:-460}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out" || exit 1

command=("$python" -u "$here/gpu.py" "$out" "$@")
if command -v timeout >/dev/null 2>&1; then
    # SIGTERM first: gpu.py prints the tables of what it measured; SIGKILL 10 s later if it has not ended.
    command=(timeout -s TERM -k 10 "$limit" "${command[@]}")
fi

echo "gpu.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $("$python" --version 2>&1), limit ${limit} s" | tee "$out/gpu_latency.log"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 |
        sed 's/^/gpu.sh: /' | tee -a "$out/gpu_latency.log"
fi
"${command[@]}" 2>&1 | tee -a "$out/gpu_latency.log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 124 ]; then
    echo "gpu.sh: stopped after ${limit} s; the rows measured so far are in $out/gpu_latency.csv" | tee -a "$out/gpu_latency.log"
fi
exit "$status"
