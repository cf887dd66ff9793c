"""timm backbones, one per architecture family (tests/timm_models.py), through both front ends.

- A sample of the families (:data:`SAMPLE`, chosen to cover the op families timm adds beside torchvision's:
  LayerNorm over channels-last tensors, layer scale, "same" padding, squeeze-excite gates, windowed and plain
  attention, token-mixing MLPs): 30% input-side and output-side masks, modes upscale and baseline, exported equals
  masked within 1e-8 of the output's scale (float64), the graph holds exactly ``report.gathers`` gathers, and the
  input-side export keeps at most 95% of the parameters. The complete list runs in ``benchmarks/timm_families.py``,
  whose table the README shows.
- The family list follows its rule (slow: it builds every timm model on the meta device).
"""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm")

import timm_models  # noqa: E402
from support import checked_exports  # noqa: E402

CAPTURES = ("symbolic_trace", "torch.export")
FAST = ("resnet",)
SAMPLE = FAST + ("convnext", "efficientnet", "vision_transformer", "mobilevit", "regnet", "mlp_mixer", "levit")


def cases() -> list:
    return [
        pytest.param(family, capture, marks=() if family in FAST else (pytest.mark.slow,))
        for family in SAMPLE
        for capture in CAPTURES
    ]


@pytest.mark.parametrize("family, capture", cases())
def test_family_exports_exactly_and_shrinks(family: str, capture: str) -> None:
    model, x = timm_models.build(family)
    for side, mode, result in checked_exports(model, x, capture):
        kept = result.report.params_after / result.report.params_before
        assert kept <= (0.95 if side == "input" else 1.0) and kept < 1.0, f"side {side}, mode {mode}"


@pytest.mark.slow
def test_family_list_follows_the_rule() -> None:
    assert timm.__version__ == "1.0.31", "the list was chosen on timm 1.0.31: rerun choose_families() and update it"
    chosen, excluded = timm_models.choose_families()
    assert chosen == timm_models.FAMILIES
    assert excluded == timm_models.EXCLUDED
