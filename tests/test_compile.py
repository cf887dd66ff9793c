"""torch.compile: the exported module compiles and matches eager; the fx_upscale backend prunes inside torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
import torchvision
from support import randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec, SpecError, UnsupportedGraphError


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _masked(name: str):
    """A torchvision model, an example input and a 30% L2 input-side mask of it."""
    model = randomize_batchnorm(getattr(torchvision.models, name)(weights=None)).eval()
    x = torch.randn(1, 3, 64, 64)
    return model, x, fx_upscale.mask(model, x, amount=0.3)


def _exported(name: str):
    model, x, spec = _masked(name)
    return fx_upscale.export(model, x, spec=spec), x


def _assert_compiled_matches_eager(name: str, backend: str) -> None:
    result, x = _exported(name)
    assert result.report.narrows + result.report.gathers > 0
    with torch.no_grad():
        expected = result.module(x)
        actual = torch.compile(result.module, backend=backend)(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_exported_module_under_torch_compile_aot_eager_matches_eager(name):
    _assert_compiled_matches_eager(name, "aot_eager")


@pytest.mark.slow
def test_exported_resnet18_under_inductor_matches_eager():
    _assert_compiled_matches_eager("resnet18", "inductor")


class Fan(nn.Module):
    """One activation read by three convolutions, each keeping its own channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b, self.c = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.a(y) + self.b(y) * self.c(y)


SPEC = PruneSpec(inputs={"a.weight": [0, 1, 2], "b.weight": [5, 6, 7], "c.weight": [1, 3, 5, 7]})


def _compile_with_attribute_weights(model, backend, x):
    with torch._dynamo.config.patch(install_free_tensors=True), torch.no_grad():
        return torch.compile(model, backend=backend, dynamic=False)(x)


def test_backend_prunes_a_graph_whose_weights_are_attributes():
    model, x = Fan().eval(), torch.randn(2, 3, 6, 6)
    masked = SPEC.apply(model)
    backend = fx_upscale.compile_backend(delegate="aot_eager")
    actual = _compile_with_attribute_weights(masked, backend, x)
    (result,) = backend.results
    assert result.report.params_after < result.report.params_before and result.report.narrows >= 2
    torch.testing.assert_close(actual, masked(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_backend_prunes_resnet18_as_much_as_exporting_first():
    """Dynamo's graph holds BatchNorm as ``F.batch_norm`` on attribute tensors; the registry maps it like the module,
    so the backend plans what export-first plans (unmapped, it was a barrier: 17 gathers, 8.2 M parameters)."""
    model, x, spec = _masked("resnet18")
    masked = spec.apply(model)
    first = fx_upscale.export(masked, x).report
    backend = fx_upscale.compile_backend(delegate="eager")
    actual = _compile_with_attribute_weights(masked, backend, x)
    (result,) = backend.results
    assert any(node.target is F.batch_norm for node in result.module.graph.nodes)
    compiled = result.report
    assert compiled.params_after == first.params_after < first.params_before
    assert (compiled.gathers, compiled.narrows, compiled.copied_elements) == (
        first.gathers,
        first.narrows,
        first.copied_elements,
    )
    torch.testing.assert_close(actual, masked(x), rtol=1e-4, atol=1e-4)


def test_backend_takes_a_spec_in_the_model_s_parameter_names():
    model, x = Fan().eval(), torch.randn(2, 3, 6, 6)
    backend = fx_upscale.compile_backend(SPEC, delegate="eager")
    actual = _compile_with_attribute_weights(model, backend, x)
    assert backend.results[0].report.params_after < backend.results[0].report.params_before
    torch.testing.assert_close(actual, SPEC.apply(model)(x), rtol=1e-4, atol=1e-5)


def test_backend_refuses_a_spec_naming_a_parameter_outside_the_graph():
    backend = fx_upscale.compile_backend(PruneSpec(inputs={"d.weight": [0]}), delegate="eager")
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as caught:
        _compile_with_attribute_weights(Fan().eval(), backend, torch.randn(1, 3, 6, 6))
    assert isinstance(caught.value.inner_exception, SpecError)
    assert "spec.apply(model)" in str(caught.value.inner_exception)


def test_backend_raises_a_clear_error_when_dynamo_lifts_weights_to_graph_inputs():
    backend = fx_upscale.compile_backend(delegate="eager")
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as caught, torch.no_grad():
        torch.compile(SPEC.apply(Fan().eval()), backend=backend)(torch.randn(1, 3, 6, 6))
    error = caught.value.inner_exception
    assert isinstance(error, UnsupportedGraphError) and isinstance(error, fx_upscale.UpscaleError)
    assert "weights are graph inputs" in str(error) and "fx_upscale.export(model, x).module" in str(error)
    assert "install_free_tensors=True" in str(error)
    assert not backend.results
