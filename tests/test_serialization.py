"""torch.export and save/load: a pruned model reloads in a fresh process without its class, with identical outputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from support import randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec


class Residual(nn.Module):
    """Defined only here: the fresh process cannot import it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(self.a(y) + y)
        return self.head(self.b(y).mean((2, 3)))


SPEC = PruneSpec(inputs={"a.weight": [0, 2, 4], "b.weight": [1, 3, 5, 7]})


def _exported():
    model = randomize_batchnorm(Residual()).eval()
    x = torch.randn(2, 3, 8, 8)
    return fx_upscale.export(model, x, spec=SPEC), x


def test_torch_export_of_the_pruned_module_matches_it():
    result, x = _exported()
    program = torch.export.export(result.module, (x,))
    with torch.no_grad():
        assert torch.equal(program.module()(x), result.module(x))


def test_save_then_load_in_a_fresh_process_gives_identical_outputs(tmp_path):
    result, x = _exported()
    assert result.report.params_after < result.report.params_before
    fx_upscale.save(result, tmp_path / "pruned.pt2")
    with torch.no_grad():
        torch.save({"x": x, "expected": result.module(x)}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        import fx_upscale
        io = torch.load({str(tmp_path / "io.pt")!r})
        module = fx_upscale.load({str(tmp_path / "pruned.pt2")!r})
        assert "Residual" not in sys.modules and "test_serialization" not in sys.modules
        with torch.no_grad():
            assert torch.equal(module(io["x"]), io["expected"]), "outputs differ"
        report = fx_upscale.serialization.load_report({str(tmp_path / "pruned.pt2")!r})
        print("ok", report["params_after"], report["gathers"] + report["narrows"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "ok",
        str(result.report.params_after),
        str(result.report.gathers + result.report.narrows),
    ]


def test_save_with_a_dynamic_batch_accepts_other_batch_sizes(tmp_path):
    result, x = _exported()
    fx_upscale.save(result, tmp_path / "pruned.pt2", dynamic_shapes=({0: torch.export.Dim("batch")},))
    module = fx_upscale.load(tmp_path / "pruned.pt2")
    x5 = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module(x5), result.module(x5), rtol=1e-5, atol=1e-6)
