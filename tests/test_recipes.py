"""Every recipe in passes/ runs, and says what it should."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "passes"


def test_every_recipe_is_tested():
    assert {p.name for p in RECIPES.glob("*.py")} == {
        "fuse_then_prune.py",
        "compile_pruned.py",
        "save_and_reload.py",
        "custom_op.py",
        "custom_handler.py",
    }


def test_fuse_then_prune(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(RECIPES / "fuse_then_prune.py"), run_name="__main__")
    output = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"max \|exported - masked\| = (\S+)", output)]
    assert len(diffs) == 3 and all(d <= 1e-9 for d in diffs), output
    assert "prune, then fold: 0 BatchNorm left" in output
    assert "PassManager pipeline: modified=True, rerun modified=False" in output


def test_compile_pruned(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr("sys.argv", ["compile_pruned.py", "aot_eager"])  # inductor: tests/test_compile.py
    runpy.run_path(str(RECIPES / "compile_pruned.py"), run_name="__main__")
    torch._dynamo.reset()
    output = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"max \|compiled - masked\| = (\S+)", output)]
    assert len(diffs) == 2 and all(d <= 1e-4 for d in diffs), output
    assert "export, then torch.compile(aot_eager)" in output and "delegate='aot_eager'" in output


def test_save_and_reload(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["save_and_reload.py"])
    runpy.run_path(str(RECIPES / "save_and_reload.py"), run_name="__main__")
    output = capsys.readouterr().out
    assert "torchvision imported: False" in output, output
    assert re.search(r"max \|reloaded - pruned\| = 0\.0e\+00", output), output


def test_custom_op(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(RECIPES / "custom_op.py"), run_name="__main__")
    output = capsys.readouterr().out
    assert "before registering: UnsupportedOpError: node 'einsum' (call_function torch.functional.einsum)" in output
    assert "conv1 keeps 13 of 16 filters, affine.gain has 13 entries" in output
    diffs = [float(d) for d in re.findall(r"max \|exported - masked\| = (\S+)", output)]
    assert len(diffs) == 1 and diffs[0] <= 1e-9, output


def test_custom_handler(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(RECIPES / "custom_handler.py"), run_name="__main__")
    output = capsys.readouterr().out
    assert "without the handler: UnsupportedOpError: node 'einsum' (call_function torch.functional.einsum)" in output
    assert "conv1 keeps 11 of 16 filters, gate.channels = 11, gate.logit has 11 entries" in output
    diffs = [float(d) for d in re.findall(r"max \|exported - masked\| = (\S+)", output)]
    assert len(diffs) == 1 and diffs[0] <= 1e-9, output
