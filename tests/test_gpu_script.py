"""The GPU latency script (benchmarks/gpu.sh, benchmarks/gpu.py) without a GPU: the one-line exit where CUDA is
absent, the whole code path on the CPU (``--device cpu --smoke``) with tabulate, pandas and matplotlib unimportable,
the kernel-time sum on fake profiler events, the tables, the CSV written row by row, the time budget, a failing
variant recorded and passed over, and the float32 export cast to another dtype. The tests that need CUDA skip
without it."""

import csv
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.fx as fx
from torch.autograd import DeviceType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu  # noqa: E402
from fx_upscale import export, mask  # noqa: E402
from fx_upscale.cost_model import default_cost_model  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu.sh"
BLOCKED = ("tabulate", "pandas", "matplotlib")  # absent on the machine the script is written for
CUDA = torch.cuda.is_available()


def script_env(tmp_path: Path, *, block: bool = True) -> dict[str, str]:
    """The environment gpu.sh runs in: this interpreter as PYTHON, the repository on PYTHONPATH and, with ``block``,
    a sitecustomize that makes tabulate, pandas and matplotlib unimportable."""
    paths = [str(ROOT)]
    if block:
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED)
        )
        paths.insert(0, str(site))
    return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


def run_script(out: Path, *args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_usage_without_out_dir(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_blocked_modules_are_unimportable(tmp_path):
    """The sitecustomize the tests rely on does block (else the import test below would prove nothing)."""
    code = (
        "import importlib\n"
        f"for name in {BLOCKED!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(name + ' imported')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=script_env(tmp_path), capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_need_no_tabulate_pandas_matplotlib(tmp_path):
    code = f"import benchmarks.gpu, sys; assert not any(sys.modules.get(m) for m in {BLOCKED!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=script_env(tmp_path), capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(CUDA, reason="there is a CUDA device here")
def test_without_cuda_says_so_and_exits_0(tmp_path):
    out = tmp_path / "out"
    result = run_script(out, env=script_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("no CUDA device: ")]
    assert len(lines) == 1 and lines[0].endswith("nothing measured"), result.stdout
    assert not (out / gpu.CSV_NAME).exists() and not (out / gpu.MARKDOWN_NAME).exists()


def test_smoke_run_on_cpu(tmp_path):
    """Every step of the GPU run, on the CPU with a tiny model: the cost model's calibration, exports planned with
    it, eager cases in two dtypes and two batches (float32 ones predicted), the profiler, the compile cases
    (dynamo's eager backend standing in for inductor), the CSV and the tables."""
    out = tmp_path / "out"
    result = run_script(out, "--device", "cpu", "--smoke", env=script_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_rows(out / gpu.CSV_NAME)
    assert list(rows[0]) == gpu.FIELDS
    cases = {(r["batch"], r["dtype"], r["backend"]) for r in rows}
    assert cases == {(b, d, "eager") for b in "12" for d in ("float32", "float64")} | {
        (b, "float32", "compile") for b in "12"
    }
    assert len(rows) == len(cases) * len(gpu.VARIANTS)
    for row in rows:
        assert row["error"] == "", row
        assert 0 < float(row["q1_ms"]) <= float(row["median_ms"]) <= float(row["q3_ms"])
        assert float(row["kernel_ms"]) > 0 and int(row["kernels"]) > 0
        assert (row["compile_s"] != "") == (row["backend"] == "compile")
        assert int(row["params"]) > 0 and row["device"].startswith("cpu") and row["torch"] == torch.__version__
        assert (row["predicted_ms"] != "") == ((row["dtype"], row["backend"]) == ("float32", "eager"))
    by_variant = {r["variant"]: r for r in rows if (r["batch"], r["dtype"], r["backend"]) == ("2", "float32", "eager")}
    assert int(by_variant["baseline"]["copied_elements"]) > int(by_variant["upscale"]["copied_elements"])
    assert int(by_variant["unpruned"]["params"]) > int(by_variant["upscale"]["params"])
    markdown = (out / gpu.MARKDOWN_NAME).read_text()
    assert "| model | batch | dtype | backend | unpruned |" in markdown and markdown in result.stdout + "\n"
    assert "Predicted by the cost model calibrated on the device" in markdown
    assert (out / "gpu_latency.log").read_text().count("export tiny batch") >= 2


# --- helpers -------------------------------------------------------------------------------------------------------


def event(device_type, elapsed_us=0.0, activity=None, name="k", self_cpu=0.0):
    fields = dict(device_type=device_type, time_range=SimpleNamespace(elapsed_us=lambda: elapsed_us), name=name,
                  self_cpu_time_total=self_cpu)  # fmt: skip
    if activity is not None:
        fields["activity_type"] = activity
    return SimpleNamespace(**fields)


def test_kernel_time_sums_device_work_only():
    events = [
        event(DeviceType.CUDA, 120.0, "kernel"),
        event(DeviceType.CUDA, 30.0, "gpu_memcpy", "Memcpy DtoD"),
        event(DeviceType.CUDA, 5.0, "gpu_memset", "Memset"),
        event(DeviceType.CUDA, 500.0, "gpu_user_annotation", "## Call CompiledFxGraph ##"),
        event(DeviceType.CUDA, 900.0, "cuda_sync", "Context Sync"),
        event(DeviceType.CPU, 40.0, "cuda_runtime", "cudaLaunchKernel", self_cpu=40.0),
        event(DeviceType.CPU, 70.0, "cpu_op", "aten::conv2d", self_cpu=70.0),
    ]
    assert gpu.kernel_time_ms(events) == (pytest.approx(0.155), 3)
    assert gpu.kernel_time_ms(events, "cpu") == (pytest.approx(0.070), 1)
    assert gpu.kernel_time_ms([]) == (0.0, 0)


def test_kernel_time_without_activity_types():
    """Older torch: no activity type on events; the CUDA events not named as synchronisations count."""
    events = [event(DeviceType.CUDA, 100.0), event(DeviceType.CUDA, 900.0, name="Context Sync"),
              event(DeviceType.CPU, 50.0, self_cpu=50.0)]  # fmt: skip
    assert gpu.kernel_time_ms(events) == (pytest.approx(0.1), 1)
    assert gpu.kernel_time_ms(events, "cpu") == (pytest.approx(0.05), 1)


def test_markdown_table():
    text = gpu.markdown_table(["a", "b"], [[1, "x|y"], ["", 2.5]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "|  | 2.5 |"]


def row(variant, median, kernel=None, error="", backend="eager", batch=1):
    return gpu.Row("m", variant, "float16", batch, backend, median_ms=median, q1_ms=median and median * 0.9,
                   q3_ms=median and median * 1.1, kernel_ms=kernel, error=error)  # fmt: skip


def test_latency_tables():
    rows = [row("unpruned", 2.0, 1.0), row("constrained", 1.0, 0.5), row("baseline", 1.6, 0.9),
            row("upscale", 1.5, 0.8), row("oracle", 1.2, 0.8),
            row("unpruned", None, error="compile: boom", backend="compile"),
            row("upscale", None, error="skipped: time budget", backend="compile")]  # fmt: skip
    wall, kernel = gpu.latency_tables(rows).split("\n\nSummed kernel time")
    lines = wall.splitlines()
    header = ["model", "batch", "dtype", "backend", *gpu.VARIANTS, "upscale / oracle", "upscale / baseline"]
    assert lines[2] == "| " + " | ".join(header) + " |"
    cells = ["m", "1", "float16", "eager", "2.00 [1.80–2.20]", "1.00 [0.90–1.10]", "1.60 [1.44–1.76]",
             "1.50 [1.35–1.65]", "1.20 [1.08–1.32]", "+25.0%", "-6.2%"]  # fmt: skip
    assert lines[4] == "| " + " | ".join(cells) + " |"
    assert lines[5] == "| m | 1 | float16 | compile | error |  |  | skipped |  |  |  |"
    assert "| m | 1 | float16 | eager | 1.000 | 0.500 | 0.900 | 0.800 | 0.800 | +0.0% | -11.1% |" in kernel


def test_csv_is_written_row_by_row(tmp_path):
    log = gpu.CsvLog(tmp_path / "sub" / "x.csv")
    assert read_rows(log.path) == []
    log.write(row("upscale", 1.23456789, 0.5))
    first = read_rows(log.path)
    assert len(first) == 1 and first[0]["median_ms"] == "1.23457" and first[0]["copied_elements"] == ""
    log.write(row("baseline", None, error="compile: a, b"))
    assert [r["error"] for r in read_rows(log.path)] == ["", "compile: a, b"]


def test_estimates_scale_with_finished_steps():
    estimates = gpu.Estimates()
    assert estimates.estimate("compile", 30.0) == 30.0
    estimates.record("compile", 30.0, 15.0)
    estimates.record("compile", 10.0, 5.0)
    assert estimates.estimate("compile", 30.0) == pytest.approx(15.0)
    assert estimates.estimate("eager", 4.0) == 4.0


# --- the run, in process, on the CPU -------------------------------------------------------------------------------


def small_config(tmp_path: Path, **changes) -> gpu.Config:
    base = dict(models=("tiny",), batches=(2,), dtypes=("float32",), compile_models=("tiny",),
                compile_dtypes=("float32",), compile_backend="eager", repeats=2, warmup=1, profiled=1,
                device="cpu")  # fmt: skip
    return gpu.Config(str(tmp_path), **{**base, **changes})


def test_a_failing_variant_is_recorded_and_the_run_goes_on(tmp_path, capsys):
    def failing(module, backend, compile_backend):
        if backend == "compile" and type(module).__name__ == "CopyFreeOracle":
            raise RuntimeError("inductor says no")
        return gpu.prepare(module, backend, compile_backend)

    bench = gpu.Bench(small_config(tmp_path), prepare=failing, start=time.monotonic())
    rows = {(r.backend, r.variant): r for r in bench.run()}
    assert rows["compile", "oracle"].error == "compile: RuntimeError: inductor says no"
    assert rows["compile", "oracle"].median_ms is None
    for (backend, variant), r in rows.items():
        if (backend, variant) != ("compile", "oracle"):
            assert r.error == "" and r.median_ms > 0, r
    written = read_rows(tmp_path / gpu.CSV_NAME)
    assert [r["error"] for r in written].count("compile: RuntimeError: inductor says no") == 1
    assert "| tiny | 2 | float32 | compile |" in gpu.report(bench, bench.log.rows)
    assert "estimate" in capsys.readouterr().out


def test_a_stop_records_the_case_and_propagates(tmp_path):
    """SIGTERM (gpu.sh's time limit) raises Stopped: the case under way is written as stopped, and the run ends."""

    def stopping(module, backend, compile_backend):
        if backend == "compile":
            raise gpu.Stopped("SIGTERM")
        return gpu.prepare(module, backend, compile_backend)

    bench = gpu.Bench(small_config(tmp_path), prepare=stopping, start=time.monotonic())
    with pytest.raises(gpu.Stopped):
        bench.run()
    written = read_rows(tmp_path / gpu.CSV_NAME)
    assert [(r["backend"], r["error"]) for r in written] == [("eager", "")] * 5 + [("compile", "stopped")] * 5
    assert "stopped early" in gpu.report(bench, bench.log.rows, "; stopped early (SIGTERM)")


def test_a_failing_model_is_recorded(tmp_path):
    def load(name, seed):
        raise ValueError(f"no model {name}")

    bench = gpu.Bench(small_config(tmp_path, compile_models=()), load=load, start=time.monotonic())
    rows = bench.run()
    assert [r.variant for r in rows] == list(gpu.VARIANTS)
    assert all(r.error == "model: ValueError: no model tiny" and r.median_ms is None for r in rows)


def test_steps_past_the_budget_are_skipped(tmp_path):
    bench = gpu.Bench(small_config(tmp_path, budget_s=5.0), start=time.monotonic() - 10)
    rows = bench.run()
    assert len(rows) == 2 * len(gpu.VARIANTS)  # the eager case and the compile case, all skipped
    assert all(r.error.startswith("skipped: time budget") for r in rows)
    assert len(read_rows(tmp_path / gpu.CSV_NAME)) == len(rows)


def test_cast_export_equals_export_of_cast_model(monkeypatch):
    """The script exports in float32 and casts: an export only slices and reorders weights, so that is exactly the
    export of the cast model planned alike (a cost model blind to bytes, so that the dtype cannot change the
    plan); the cast copies keep the oracle's weights shared and the gathers' indices integer."""
    blind = replace(default_cost_model(), seconds_per_byte=0.0, seconds_per_grouped_byte=0.0)
    monkeypatch.setattr(sys.modules["fx_upscale.export"], "_cost_model_for", lambda inputs, backend: blind)
    torch.manual_seed(0)
    model, side = gpu.load_model("tiny", 0)
    x = torch.randn(2, 3, side, side)
    spec = mask(model, x, amount=0.3)
    variants, errors = gpu.build_exports(model, spec, x)
    assert not errors and list(variants) == list(gpu.VARIANTS)
    cast = gpu.cast(variants, torch.float64)
    assert gpu.cast(variants, torch.float32) is variants
    assert cast["oracle"].get_parameter(next(n for n, _ in cast["oracle"].named_parameters())) is cast[
        "upscale"
    ].get_parameter(next(n for n, _ in cast["oracle"].named_parameters()))
    assert next(variants["upscale"].parameters()).dtype == torch.float32  # the originals are left alone
    direct = export(model.double(), x.double(), spec=spec, mode="upscale").module
    assert isinstance(direct, fx.GraphModule)
    for (name, a), (_, b) in zip(cast["upscale"].state_dict().items(), direct.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert any(b.dtype == torch.long for b in cast["upscale"].buffers())
    with torch.no_grad():
        torch.testing.assert_close(cast["upscale"](x.double()), direct(x.double()), rtol=0, atol=0)


# --- on a GPU ------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_profile_forward_on_cuda_counts_kernels():
    conv = torch.nn.Conv2d(3, 8, 3).cuda().eval()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    conv(x)
    ms, count = gpu.profile_forward(conv, x)
    assert ms > 0 and count >= 1


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.slow
def test_smoke_run_on_cuda(tmp_path):
    out = tmp_path / "out"
    result = run_script(out, "--smoke", "--dtypes", "float16", "float32", env=script_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_rows(out / gpu.CSV_NAME)
    assert rows and all(r["error"] == "" for r in rows), [r["error"] for r in rows if r["error"]]
    assert all(float(r["kernel_ms"]) > 0 and r["device"] == torch.cuda.get_device_name() for r in rows)
