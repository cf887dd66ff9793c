"""timm backbones, one per architecture family (tests/timm_models.py), through both front ends.

- A sample of the families (:data:`FAST`, :data:`SAMPLE`, chosen to cover what timm adds beside torchvision's
  models: LayerNorm over channels-last tensors, layer scale, squeeze-excite gates, attention, MobileViT's unfold
  into patches, slice bounds computed from shapes (halo attention), LeViT's BatchNorm over tokens and strided token
  grids): 30% input-side and output-side masks, modes
  upscale and baseline, exported equals masked within 1e-8 of the output's scale (float64), the graph holds exactly
  ``report.gathers`` gathers, and the input-side export keeps at most 95% of the parameters. The complete list
  runs in ``benchmarks/timm_families.py``, whose table the README shows.
- The family list follows its rule (checked here for four families and the excluded ones).
"""

from __future__ import annotations

import pytest

timm = pytest.importorskip("timm")

import timm_models  # noqa: E402
import torch  # noqa: E402
from support import checked_exports, randomize_small_parameters  # noqa: E402

CAPTURES = ("symbolic_trace", "torch.export")
FAST = ("resnet",)  # both front ends, in make test-fast too
# one front end each (the one its graph differs most under), in make test; the rest in the benchmark
SAMPLE = {
    "convnext": "torch.export", "efficientnet": "symbolic_trace", "vision_transformer": "torch.export",
    "mobilevit": "torch.export", "regnet": "symbolic_trace", "byoanet": "symbolic_trace", "levit": "torch.export",
}  # fmt: skip


def cases() -> list:
    fast = [pytest.param(family, capture) for family in FAST for capture in CAPTURES]
    return fast + [pytest.param(family, capture, marks=pytest.mark.slow) for family, capture in SAMPLE.items()]


@pytest.mark.parametrize("family, capture", cases())
def test_family_exports_exactly_and_shrinks(family: str, capture: str) -> None:
    model, x = timm_models.build(family)
    for side, mode, result in checked_exports(model, x, capture):
        kept = result.report.params_after / result.report.params_before
        assert kept <= 0.95 or side == "output", f"side {side}, mode {mode}: {kept:.1%} of the parameters kept"


def test_family_list_follows_the_rule() -> None:
    """The rule, recomputed for four sampled families and the excluded ones (every family: ``python
    benchmarks/timm_families.py --check-list``, 3 minutes)."""
    if timm.__version__ != "1.0.31":
        pytest.skip(f"the list was chosen on timm 1.0.31, this is {timm.__version__}: see choose_families()")
    families = ["byoanet", "mobilevit", "regnet", "convnext", *timm_models.EXCLUDED]
    chosen, excluded = timm_models.choose_families(families)
    assert chosen == {f: timm_models.FAMILIES[f] for f in families if f in timm_models.FAMILIES}
    assert excluded == timm_models.EXCLUDED


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixer_s16_224", "resmlp_12_224"])
def test_token_mixing_models_export_exactly_and_shrink(name: str) -> None:
    """The mlp_mixer family's models beside gMLP (its smallest, in the benchmark): their token-mixing linear layers
    pass channels through, so the channel MLPs (and ResMLP's Affine-normalised residual stream) shrink; 64x64."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=64, num_classes=10).double().eval()
    randomize_small_parameters(model)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for side, mode, result in checked_exports(model, x, "torch.export"):
        kept = result.report.params_after / result.report.params_before
        assert kept <= 0.75, f"side {side}, mode {mode}: {kept:.1%} of the parameters kept"
