"""The README's integration sections (PassManager, torch.compile, torch.export and save/load, ONNX) run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch._dynamo

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = ["In a PassManager pipeline", "With torch.compile", "torch.export, save and load", "ONNX"]


def python_blocks(title: str) -> list[str]:
    """The ```python blocks of the README section headed ``### {title}``, up to the next heading."""
    text = README.read_text()
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#{{1,3}} )", text, flags=re.M | re.S)
    assert match, f"README has no section '### {title}'"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), flags=re.M | re.S)


@pytest.mark.parametrize("title", SECTIONS)
def test_readme_section_runs(title, tmp_path, monkeypatch):
    if title == "ONNX":
        pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")
        pytest.importorskip("onnxscript", reason="onnxscript is in the test extra")
    blocks = python_blocks(title)
    assert blocks, f"README section '{title}' has no python example"
    monkeypatch.chdir(tmp_path)  # examples write pruned.pt2 / pruned.onnx
    torch._dynamo.reset()
    namespace = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, f"README.md ({title})", "exec"), namespace)
    torch._dynamo.reset()
    if title == "ONNX":
        import onnx

        ops = {node.op_type for node in onnx.load(tmp_path / "pruned.onnx").graph.node}
        assert {"Gather", "Slice"} <= ops, ops  # the inserted index_select and narrow nodes
