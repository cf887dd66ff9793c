"""The fx-upscale command line: prune, explain and bench write what they promise, the pruned model reloads and
equals the masked model, every option is documented, and errors are one line (a traceback only with --debug)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import tqdm
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

import fx_upscale
from fx_upscale import cli, latency

TESTS = Path(__file__).parent
FACTORY = "test_cli:small_net"  # importable: the tests directory is on the path (pytest pythonpath, PYTHONPATH)
SHAPE = "2,3,12,12"


class SmallNet(nn.Module):
    """A stem read by two residual blocks and a 1x1 conv: the masks force at least one gather."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(self.a(y) + y)
        y = torch.relu(self.b(y) + y)
        return self.head(self.c(y).mean((2, 3)))


def small_net() -> nn.Module:
    return SmallNet()


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*argv: str, module: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    script = Path(sys.executable).parent / "fx-upscale"
    command = [sys.executable, "-m", "fx_upscale", *argv] if module else [str(script), *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def markdown_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the Markdown table rows of ``text`` that start with ``first_cell``."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()]
    return [row for row in rows if row[0] == first_cell]


def rebuild_masked(out: Path, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    spec = fx_upscale.PruneSpec(**json.loads((out / "spec.json").read_text()))
    return spec.apply(small_net().double()).eval()


def test_prune_writes_a_model_that_reloads_and_equals_the_masked_model(tmp_path, capsys):
    out = tmp_path / "pruned"
    try:
        code, stdout, _ = run_main(capsys, "prune", FACTORY, "--input-shape", SHAPE, "--amount", "0.4", "--dtype",
                                   "float64", "--heuristic", "l1", "--threads", "2", "--out", str(out))  # fmt: skip
    finally:
        torch.set_num_threads(1)
    assert code == 0 and "wrote" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.pt2", "report.json", "spec.json", "summary.md"]
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        diff = (fx_upscale.load(out / "model.pt2")(x) - rebuild_masked(out)(x)).abs().max().item()
    assert diff <= 1e-9

    document = json.loads((out / "report.json").read_text())
    report = document["report"]
    assert document["input_shape"] == [2, 3, 12, 12] and document["mode"] == report["mode"] == "upscale"
    assert document["mask"] == {"amount": 0.4, "heuristic": "l1", "side": "input", "method": "unconstrained",
                                "scope": "local"}  # fmt: skip
    assert document["max_abs_diff"] <= 1e-9 and report["params_after"] < report["params_before"]
    assert report["gathers"] >= 1 and report["copied_elements"] > 0
    assert report["cost_model"].startswith("cpu/float64/eager/threads=2/")  # planned for the threads it runs with
    consumers = [c for s in report["segments"] for c in s["consumers"]]
    assert {"full", "narrow", "gather"} >= {c["access"] for c in consumers} and all(c["reason"] for c in consumers)

    summary = (out / "summary.md").read_text()
    assert f"{report['params_before']:,} → {report['params_after']:,}" in summary
    assert "## Consumers that copy" in summary and "needs" in summary


def test_prune_reads_weights_and_the_same_options_give_the_same_spec(tmp_path, capsys):
    torch.manual_seed(7)
    weights = tmp_path / "weights.pt"
    torch.save(small_net().state_dict(), weights)
    out = tmp_path / "pruned"
    code, *_ = run_main(capsys, "prune", FACTORY, "--weights", str(weights), "--input-shape", SHAPE, "--out",
                        str(out), "--mode", "baseline", "--quiet")  # fmt: skip
    assert code == 0
    model = small_net()
    model.load_state_dict(torch.load(weights))
    x = torch.randn(2, 3, 12, 12)
    spec = fx_upscale.mask(model.eval(), x, amount=0.3)
    assert spec == fx_upscale.PruneSpec(**json.loads((out / "spec.json").read_text()))
    with torch.no_grad():
        torch.testing.assert_close(fx_upscale.load(out / "model.pt2")(x), spec.apply(model)(x), rtol=1e-4, atol=1e-5)
    assert json.loads((out / "report.json").read_text())["report"]["mode"] == "baseline"


@pytest.mark.slow
def test_console_script_prunes_a_torchvision_model(tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "r18"
    done = run_process("prune", "resnet18", "--input-shape", "1,3,32,32", "--out", str(out), module=False)
    assert done.returncode == 0, done.stderr
    assert "upscale: params" in done.stdout and done.stderr == ""  # no progress bar off a terminal
    report = json.loads((out / "report.json").read_text())["report"]
    assert (report["gathers"], report["narrows"]) == (3, 10)  # the README's resnet18 numbers, at 32x32
    assert fx_upscale.load(out / "model.pt2")(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_explain_prints_every_consumer_with_its_access_and_reason(capsys):
    code, stdout, _ = run_main(capsys, "explain", FACTORY, "--input-shape", SHAPE, "--amount", "0.4")
    assert code == 0
    torch.manual_seed(0)  # what the command does: the seed, then the model
    model, x = small_net().eval(), torch.randn(2, 3, 12, 12)
    result = fx_upscale.export(model, x, spec=fx_upscale.mask(model, x, amount=0.4))
    for segment in result.report.segments:
        assert f"segment {segment.index}: {segment.kept} of {segment.channels} channels kept" in stdout
        for consumer in segment.consumers:
            assert consumer.reason in stdout
    assert " gather " in stdout and " narrow " in stdout


def test_explain_filters_segments_and_writes_the_segment_graph(tmp_path, capsys):
    dot = tmp_path / "segments.dot"
    code, stdout, _ = run_main(capsys, "explain", FACTORY, "--input-shape", SHAPE, "--amount", "0.4", "--gathers-only",
                               "--graph", str(dot))  # fmt: skip
    assert code == 0
    shown = [line for line in stdout.splitlines() if line.startswith("segment ")]
    assert shown and all("gather" in block for block in stdout.split("\n\n"))
    text = dot.read_text()
    assert text.startswith("digraph segments {") and text.rstrip().endswith("}")
    assert "color=red" in text and text.count("->") >= 3
    code, _, err = run_main(capsys, "explain", FACTORY, "--input-shape", SHAPE, "--segment", "99")
    assert code == 1 and "--segment [99]" in err


def test_bench_calibrates_again_before_each_case(capsys, monkeypatch):
    """With --calibrate, every model and batch is planned and predicted with a calibration made just before it."""
    calls = []

    def calibrate(device, dtype, backend):
        calls.append(backend)
        return fx_upscale.cost_model.default_cost_model()

    monkeypatch.setattr(cli.bench, "calibrate", calibrate)
    monkeypatch.setattr(cli.bench, "save_cost_model", lambda model: "nowhere")
    code, *_ = run_main(capsys, "bench", FACTORY, "--input-shape", SHAPE, "--batch", "1", "2", "3", "--repeats", "1",
                        "--warmup", "0", "--calibrate")  # fmt: skip
    assert code == 0 and calls == ["eager"] * 3  # once first, then before the second and the third case


def test_explain_draws_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "segments.png"
    code, *_ = run_main(capsys, "explain", FACTORY, "--input-shape", SHAPE, "--graph", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_writes_a_row_per_model_batch_backend_and_variant(tmp_path, capsys):
    table, png = tmp_path / "latency.csv", tmp_path / "latency.png"
    code, stdout, _ = run_main(capsys, "bench", FACTORY, "--input-shape", SHAPE, "--batch", "1", "3", "--repeats",
                               "3", "--warmup", "1", "--csv", str(table), "--plot", str(png))  # fmt: skip
    assert code == 0 and "threads 1" in stdout and "load average" in stdout
    rows = list(csv.DictReader(table.open()))
    assert [(r["batch"], r["variant"]) for r in rows] == [(b, v) for b in "13" for v in latency.VARIANTS]
    for row in rows:
        assert float(row["min_ms"]) <= float(row["q1_ms"]) <= float(row["median_ms"]) <= float(row["q3_ms"])
        assert float(row["q3_ms"]) <= float(row["max_ms"]) and row["repeats"] == "3"
        assert float(row["predicted_ms"]) > 0 and row["cost_model"] in ("calibrated", "default")
    cells = markdown_rows(stdout, FACTORY)  # the latency table's rows, the predicted ones, then the copies table's
    assert [row[:3] for row in cells[:4]] == [[FACTORY, b, "eager"] for b in "1313"]
    assert [row[:2] for row in cells[4:]] == [[FACTORY, "1"], [FACTORY, "3"]]
    assert all(re.fullmatch(r"\d+\.\d \[\d+\.\d–\d+\.\d\]", cell) for cell in cells[0][3:8])
    assert all(re.fullmatch(r"\d+\.\d \([+-]\d+%\)", cell) for cell in cells[2][3:8]) and cells[2][8] in ("yes", "no")
    assert int(rows[-1]["conv_copied_elements"]) > 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_copy_free_oracle_replaces_each_gather_by_a_view_of_the_same_shape():
    model, x = small_net().eval(), torch.randn(2, 3, 12, 12)
    variants = latency.build_variants(model, x, amount=0.4)["eager"]
    upscale, oracle = variants["upscale"], variants["oracle"]
    gathers = [n for n in upscale.graph.nodes if n.target is torch.index_select]
    assert gathers and not any(n.target is torch.index_select for n in oracle.graph.nodes)
    views = [n for n in oracle.graph.nodes if n.meta.get("upscale", {}).get("access") == "oracle"]
    assert len(views) == len(gathers)
    assert not any(name.startswith("_upscale_index") for name, _ in oracle.named_buffers())
    ShapeProp(upscale).propagate(x)
    ShapeProp(oracle).propagate(x)
    shape = lambda n: (n.meta["upscale"]["consumer"], n.meta["tensor_meta"].shape)  # noqa: E731
    assert sorted(map(shape, gathers)) == sorted(map(shape, views))
    assert set(variants) == set(latency.VARIANTS)


def test_narrow_views_are_free_at_batch_one_and_copied_by_convolutions_above():
    model = small_net().eval()
    variants = latency.build_variants(model, torch.randn(1, 3, 12, 12), amount=0.4)["eager"]
    narrows = [n for n in variants["upscale"].graph.nodes if n.target is torch.narrow]
    assert narrows
    one = latency.measure_copies(variants["upscale"], torch.randn(1, 3, 12, 12))
    two = latency.measure_copies(variants["upscale"], torch.randn(2, 3, 12, 12))
    assert one[1] == 0 and two[1] > 0  # a channel narrow of an N>1 NCHW tensor is strided
    assert two[0] == 2 * one[0] == 2 * fx_upscale.export(model, torch.randn(1, 3, 12, 12), spec=fx_upscale.mask(
        model, torch.randn(1, 3, 12, 12), amount=0.4)).report.copied_elements  # fmt: skip
    assert latency.measure_copies(variants["unpruned"], torch.randn(2, 3, 12, 12)) == (0, 0)


def test_summarize_reports_median_quartiles_and_range():
    assert latency.summarize([0.005, 0.001, 0.003, 0.002, 0.004]) == pytest.approx((3.0, 2.0, 4.0, 1.0, 5.0))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("on_terminal, quiet", [(True, False), (True, True), (False, False)])
def test_progress_goes_through_tqdm_on_a_terminal_only_and_never_with_quiet(monkeypatch, capsys, on_terminal, quiet):
    bars = []

    class RecordedBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.drawn_at_start = not self.disable  # close() sets disable
            bars.append(self)

    monkeypatch.setattr(tqdm, "tqdm", RecordedBar)
    terminal = Terminal()
    if on_terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["explain", FACTORY, "--input-shape", SHAPE, *(["--quiet"] if quiet else [])]) == 0
    (bar,) = bars
    steps = len(cli.PRUNE_STEPS)
    drawn = terminal.getvalue() + capsys.readouterr().err
    assert bar.total == steps
    if on_terminal and not quiet:  # the whole bar, its line ended before the command's output
        assert bar.drawn_at_start and bar.n == steps and f"{steps}/{steps}" in drawn and drawn.endswith("\n")
    else:
        assert not bar.drawn_at_start and drawn == ""


@pytest.mark.parametrize("package", cli.CLI_EXTRA)
def test_a_missing_cli_extra_fails_in_one_line(monkeypatch, capsys, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    code, stdout, err = run_main(capsys, "explain", FACTORY, "--input-shape", SHAPE)
    assert code == 1 and stdout == "" and err.count("\n") == 1
    assert f"error: the command line needs {package}: pip install 'fx_upscale[cli]'" in err


def test_help_explains_every_option(capsys):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert all(o in text for a in sub._actions for o in a.option_strings)


def test_errors_are_one_line_without_a_traceback(capsys):
    pytest.importorskip("torchvision")
    code, _, err = run_main(capsys, "prune", "resnet19", "--quiet")
    assert code == 1 and err.count("\n") == 1 and "did you mean resnet18" in err and "Traceback" not in err
    code, _, err = run_main(capsys, "explain", "test_cli:missing")
    assert code == 1 and err.count("\n") == 1 and "no callable 'missing'" in err
    code, _, err = run_main(capsys, "prune", FACTORY, "--input-shape", "1,4,12,12")  # wrong channel count
    assert code == 1 and err.count("\n") == 1 and err.startswith("fx-upscale prune: error: TracingError")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prune", FACTORY, "--amount", "1.5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "not a fraction" in err


def test_debug_shows_the_traceback(capsys):
    code, _, err = run_main(capsys, "prune", "test_cli:missing", "--debug")
    assert code == 1 and "Traceback (most recent call last)" in err and "CommandError" in err


def test_python_dash_m_runs_the_command_line_with_one_line_errors():
    done = run_process("prune", "test_cli:missing")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("fx-upscale prune: error: 'test_cli' has no callable 'missing'")


def test_readme_command_line_section_names_only_real_options():
    text = (TESTS.parent / "README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    known = {o for sub in commands.values() for a in sub._actions for o in a.option_strings}
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", section))
    assert mentioned and mentioned <= known, mentioned - known
