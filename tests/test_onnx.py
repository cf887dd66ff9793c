"""ONNX: the pruned model exports with torch.onnx.export (the torch.export-based exporter) and runs in onnxruntime."""

from __future__ import annotations

import pytest
import torch
import torchvision
from support import randomize_batchnorm

import fx_upscale

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra: pip install -e '.[test]'")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (the test extra)")


def test_pruned_resnet18_in_onnxruntime_matches_pytorch(tmp_path):
    model = randomize_batchnorm(torchvision.models.resnet18(weights=None)).eval()
    x = torch.randn(1, 3, 64, 64)
    result = fx_upscale.export(model, x, spec=fx_upscale.mask(model, x, amount=0.3))
    assert result.report.gathers > 0 and result.report.narrows > 0  # index_select and narrow reach ONNX
    torch.onnx.export(result.module, (x,), tmp_path / "pruned.onnx", dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = result.module(x)
    torch.testing.assert_close(torch.from_numpy(actual), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
