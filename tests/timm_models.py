"""timm models, one per architecture family, as tests/test_timm.py and benchmarks/timm_families.py build them.

The rule (:func:`choose_families`, applied to the timm version pinned in ``constraints-dev.txt``): a family is a module
of ``timm.models`` (``timm.list_modules()``); its model is the one of ``timm.list_models(module=family)`` with the
fewest parameters (ties by name), leaving out timm's ``test_*`` models (tiny synthetic configurations for timm's own
unit tests); a family whose smallest model has more than 100 M parameters is left out (:data:`EXCLUDED`). Parameters
are counted on the meta device, nothing is downloaded. :data:`FAMILIES` is that rule's result, checked against it
for every family by ``python benchmarks/timm_families.py --check-list`` and for a sample by ``tests/test_timm.py``.

:func:`build` gives the model with ``pretrained=False`` (seed 0), made meaningful for an exactness check (BatchNorm
randomised and calibrated, near-zero parameters redrawn), in float64, eval mode, and one seeded input at the input
size of the model's pretrained configuration (:data:`INPUT_SIZE_OVERRIDES`: smaller for a model too slow at it).
"""

from __future__ import annotations

import warnings

import torch
from support import calibrate_batchnorm, randomize_batchnorm, randomize_small_parameters
from torch import nn

MAX_PARAMS = 100_000_000
CALIBRATION = 2  # samples beside the checked one that BatchNorm statistics are computed on

# family: (model, parameters, input size), by the rule above on timm 1.0.31
FAMILIES: dict[str, tuple[str, int, int]] = {
    "beit": ("beit_base_patch16_224", 86530984, 224),
    "byoanet": ("halonet_h1", 8100056, 256),
    "byobnet": ("mobileone_s1", 4825192, 224),
    "cait": ("cait_xxs24_224", 11956264, 224),
    "coat": ("coat_tiny", 5498540, 224),
    "convit": ("convit_tiny", 5710512, 224),
    "convmixer": ("convmixer_768_32", 21110248, 224),
    "convnext": ("convnext_zepto_rms", 2155656, 224),
    "cpubone": ("cpubone_nano", 6519700, 224),
    "crossvit": ("crossvit_tiny_240", 7014800, 240),
    "csatv2": ("csatv2", 11103444, 512),
    "cspnet": ("cs3darknet_focus_s", 3274728, 256),
    "cspnext": ("cspnext_tiny", 2733700, 224),
    "davit": ("davit_tiny", 28360168, 224),
    "deit": ("deit_tiny_patch16_224", 5717416, 224),
    "densenet": ("densenet121", 7978856, 224),
    "dla": ("dla46x_c", 1068440, 224),
    "dpn": ("dpn48b", 9126226, 224),
    "edgenext": ("edgenext_xx_small", 1327216, 256),
    "efficientformer": ("efficientformer_l1", 12289928, 224),
    "efficientformer_v2": ("efficientformerv2_s0", 3600256, 224),
    "efficientnet": ("mobilenetv2_035", 1677128, 224),
    "efficientvim": ("efficientvim_m1", 6679458, 224),
    "efficientvit_mit": ("efficientvit_b0", 3410008, 224),
    "efficientvit_msra": ("efficientvit_m0", 2349436, 224),
    "eva": ("vit_tiny_patch16_dinov3_qkvb", 5489664, 256),
    "fasternet": ("fasternet_t0", 3905500, 224),
    "fastvit": ("fastvit_t8", 4026232, 256),
    "focalnet": ("focalnet_tiny_srf", 28427116, 224),
    "gcvit": ("gcvit_xxtiny", 11995428, 224),
    "ghostnet": ("ghostnet_050", 2587292, 224),
    "hardcorenas": ("hardcorenas_b", 5176544, 224),
    "hgnet": ("hgnetv2_b0", 5996550, 224),
    "hiera": ("hiera_tiny_224", 27910216, 224),
    "hieradet_sam2": ("sam2_hiera_tiny", 26851008, 896),
    "hrnet": ("hrnet_w18_small", 13187464, 224),
    "iformer": ("iformer_t", 2886456, 224),
    "inception_next": ("inception_next_atto", 4156520, 224),
    "inception_resnet_v2": ("inception_resnet_v2", 55843464, 299),
    "inception_v3": ("inception_v3", 23834568, 299),
    "inception_v4": ("inception_v4", 42679816, 299),
    "lcnetv2": ("lcnetv2_small", 4128552, 224),
    "levit": ("levit_128s", 7777058, 224),
    "lowformer": ("lowformer_b0", 14100472, 224),
    "mambaout": ("mambaout_femto", 7304536, 224),
    "maxxvit": ("maxvit_pico_rw_256", 7457996, 256),
    "metaformer": ("poolformerv2_s12", 11891712, 224),
    "mlp_mixer": ("gmlp_ti16_224", 5867328, 224),
    "mobilenetv3": ("mobilenetv3_small_050", 1593224, 224),
    "mobilenetv5": ("mobilenetv5_base", 82647976, 256),
    "mobilevit": ("mobilevit_xxs", 1272024, 256),
    "mvitv2": ("mvitv2_tiny", 24173320, 224),
    "naflexvit": ("naflexvit_base_patch16_parfac_gap", 86461672, 384),
    "nasnet": ("nasnetalarge", 88753150, 331),
    "nest": ("nest_tiny", 17057608, 224),
    "nextvit": ("nextvit_small", 31763368, 224),
    "nfnet": ("nf_regnet_b0", 8764288, 192),
    "pit": ("pit_ti_224", 4847272, 224),
    "pnasnet": ("pnasnet5large", 86057668, 331),
    "pvt_v2": ("pvt_v2_b0", 3666760, 224),
    "qwen3_vit": ("qwen3_vit_88m", 87414528, 768),
    "rdnet": ("rdnet_tiny", 23863008, 224),
    "regnet": ("regnetx_002", 2684792, 224),
    "repghost": ("repghostnet_050", 2313968, 224),
    "repvit": ("repvit_m1", 5485248, 224),
    "res2net": ("res2next50", 24671464, 224),
    "resnest": ("resnest14d", 10611688, 224),
    "resnet": ("resnet10t", 5435488, 176),
    "resnetv2": ("resnetv2_18", 11687720, 224),
    "rexnet": ("rexnet_100", 4796873, 224),
    "selecsls": ("selecsls42", 30354952, 224),
    "senet": ("legacy_seresnet18", 11778592, 224),
    "sequencer": ("sequencer2d_s", 27651688, 224),
    "shvit": ("shvit_s1", 6330808, 224),
    "sknet": ("skresnet18", 11958056, 224),
    "starnet": ("starnet_s050", 542728, 224),
    "swiftformer": ("swiftformer_xs", 3475360, 224),
    "swin_transformer": ("swin_tiny_patch4_window7_224", 28288354, 224),
    "swin_transformer_v2": ("swinv2_tiny_window16_256", 28347154, 256),
    "swin_transformer_v2_cr": ("swinv2_cr_tiny_224", 28332124, 224),
    "tiny_vit": ("tiny_vit_5m_224", 12082725, 224),
    "tnt": ("tnt_s_legacy_patch16_224", 23755336, 224),
    "tresnet": ("tresnet_m", 31389032, 224),
    "twins": ("twins_svt_small", 24060776, 224),
    "visformer": ("visformer_tiny", 10321368, 224),
    "vision_transformer": ("vit_tiny_patch16_224", 5717416, 224),
    "vision_transformer_hybrid": ("vit_tiny_r_s16_p8_224", 6337704, 224),
    "vision_transformer_relpos": ("vit_srelpos_small_patch16_224", 21973486, 224),
    "vision_transformer_sam": ("samvit_base_patch16_224", 86457064, 224),
    "vitamin": ("vitamin_small_224", 22173376, 224),
    "volo": ("volo_d1_224", 26632040, 224),
    "vovnet": ("ese_vovnet19b_slim_dw", 1897752, 224),
    "xception": ("legacy_xception", 22855952, 299),
    "xception_aligned": ("xception41p", 26907752, 299),
    "xcit": ("xcit_nano_12_p8_224", 3049016, 224),
}
# family: the input size its model runs at instead of its pretrained configuration's (passed as ``img_size``), where
# that one makes a float64 forward of batch 2 take more than 30 s on one core (qwen3_vit_88m at 768x768: 41 s, and
# an export check runs dozens of forwards; 1.9 s at 224x224; its parameters do not depend on the size)
INPUT_SIZE_OVERRIDES: dict[str, int] = {"qwen3_vit": 224}


def input_size(family: str) -> int:
    """The side of the square input ``family``'s model runs at: its pretrained configuration's, or its override."""
    return INPUT_SIZE_OVERRIDES.get(family, FAMILIES[family][2])


# family: (its smallest model, parameters): over the limit
EXCLUDED: dict[str, tuple[str, int]] = {
    "deepseek_vit": ("deepseek_vit_412m", 411842560),
    "gemma4_vit": ("gemma4_vit_167m", 167364608),
    "vgg": ("vgg11", 132863336),
}


def choose_families(
    families: list[str] | None = None,
) -> tuple[dict[str, tuple[str, int, int]], dict[str, tuple[str, int]]]:
    """Apply the rule to the installed timm (to every family, or to ``families``): (:data:`FAMILIES`,
    :data:`EXCLUDED`) as they should read."""
    import timm

    chosen, excluded = {}, {}
    for family in families if families is not None else timm.list_modules():
        sizes = []
        for name in timm.list_models(module=family):
            if not name.startswith("test_"):
                model = _meta_model(name)
                sizes.append((sum(p.numel() for p in model.parameters()), name, model.pretrained_cfg["input_size"][-1]))
        if not sizes:
            continue
        params, name, size = min(sizes)
        if params <= MAX_PARAMS:
            chosen[family] = (name, params, size)
        else:
            excluded[family] = (name, params)
    return chosen, excluded


def _meta_model(name: str) -> nn.Module:
    import timm

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model(name, pretrained=False)


def build(family: str, dtype: torch.dtype = torch.float64, batch: int = 2) -> tuple[nn.Module, torch.Tensor]:
    """The model of ``family`` in eval mode and ``dtype``, and a seeded input batch of its input size."""
    import timm

    name, size = FAMILIES[family][0], input_size(family)
    overrides = {"img_size": size} if family in INPUT_SIZE_OVERRIDES else {}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, **overrides)
    randomize_small_parameters(randomize_batchnorm(model))
    calibration = torch.randn(batch + CALIBRATION, 3, size, size, generator=torch.Generator().manual_seed(1))
    calibrate_batchnorm(model, calibration)
    return model.to(dtype).eval(), calibration[:batch].to(dtype)
