"""Every recipe in passes/ runs, and says what it should."""
from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "passes"


def test_every_recipe_is_tested():
    assert {p.name for p in RECIPES.glob("*.py")} == {"fuse_then_prune.py"}


def test_fuse_then_prune(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(RECIPES / "fuse_then_prune.py"), run_name="__main__")
    output = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"max \|exported - masked\| = (\S+)", output)]
    assert len(diffs) == 2 and all(d <= 1e-9 for d in diffs), output
    assert "prune, then fold: 0 BatchNorm left" in output
