"""mask(): each heuristic against hand-computed scores and choices, callables, scope, HRank against
torch.linalg.matrix_rank (sklearn digits and random data), and PruneSpec.from_torch_prune round trips."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as prune
from sklearn.datasets import load_digits
from support import assert_exact
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec, SpecError
from fx_upscale.masking import scores
from fx_upscale.masking.hrank import average_ranks

# -- scores on small tensors ------------------------------------------------------------------------------------------

# Four channels with L1 norms 5, 1, 2, 4 and squared L2 norms 9, 1, 4, 16.
COLUMNS = torch.tensor([[2.0, 2.0, 1.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [4.0, 0.0, 0.0]], dtype=torch.float64)


def test_l1_and_l2_scores():
    assert scores.l1(COLUMNS).tolist() == [5.0, 1.0, 2.0, 4.0]
    assert scores.l2(COLUMNS).tolist() == [9.0, 1.0, 4.0, 16.0]


def test_lamp_scores_where_the_sort_order_is_not_its_own_inverse():
    order = torch.argsort(scores.l2(COLUMNS))
    assert order.tolist() == [1, 2, 0, 3] and order[order].tolist() != [0, 1, 2, 3]
    expected = [9 / (9 + 16), 1 / (1 + 4 + 9 + 16), 4 / (4 + 9 + 16), 16 / 16]
    torch.testing.assert_close(scores.lamp(COLUMNS), torch.tensor(expected, dtype=torch.float64))


def test_lamp_ties_and_zeros():
    found = scores.lamp(torch.tensor([[2.0], [0.0], [2.0], [1.0]]))
    torch.testing.assert_close(found, torch.tensor([0.5, 0, 0.5, 1 / 9]))
    assert scores.lamp(torch.zeros(3, 2)).tolist() == [0.0, 0.0, 0.0]


def test_fpgm_scores_are_summed_distances():
    rows = torch.tensor([[1.0, 1.0], [4.0, 5.0], [1.0, 2.0]], dtype=torch.float64)
    expected = [5 + 1, 5 + math.sqrt(18), 1 + math.sqrt(18)]
    torch.testing.assert_close(scores.fpgm(rows), torch.tensor(expected, dtype=torch.float64))
    assert scores.fpgm(torch.ones(3, 4)).tolist() == [0.0, 0.0, 0.0]


# -- choices through mask() -------------------------------------------------------------------------------------------


@pytest.fixture
def x():
    return torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def chain():
    """conv 3->4, conv 4->3, conv 3->2 (1x1): input-side layers '2.weight' (4 columns) and '4.weight' (3 columns);
    output-side layers '0.weight' and '2.weight' ('4' writes the graph output)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    model = model.double().eval()
    with torch.no_grad():
        model[2].weight.copy_(COLUMNS.T.reshape(3, 4, 1, 1))
        # columns (30, 40), (0, 10), (60, 80): squared norms 2500, 100, 10000
        model[4].weight.copy_(torch.tensor([[30.0, 0.0, 60.0], [40.0, 10.0, 80.0]]).reshape(2, 3, 1, 1))
    return model


def test_l1_and_l2_choose_the_lowest_columns(chain, x):
    assert fx_upscale.mask(chain, x, amount=0.75, heuristic="l1").inputs["2.weight"] == {1, 2, 3}
    assert fx_upscale.mask(chain, x, amount=0.75, heuristic="l2").inputs["2.weight"] == {0, 1, 2}


def test_local_scope_masks_the_same_fraction_of_each_layer(chain, x):
    for heuristic in ("l2", "lamp"):  # LAMP keeps each layer's magnitude order
        spec = fx_upscale.mask(chain, x, amount=0.5, heuristic=heuristic)
        assert spec.inputs == {"2.weight": {1, 2}, "4.weight": {1}}


def test_global_scope_uses_one_threshold(chain, x):
    # l2 over all 7 columns: 1, 4, 9 (all in '2.weight') are below 16, 100, 2500, 10000
    assert fx_upscale.mask(chain, x, amount=0.5, heuristic="l2", scope="global").inputs == {"2.weight": {0, 1, 2}}
    # LAMP: 9/25, 1/30, 4/29, 1 and 100/12600, 2500/12500, 1: the three lowest are 1/126, 1/30, 4/29
    spec = fx_upscale.mask(chain, x, amount=0.5, heuristic="lamp", scope="global")
    assert spec.inputs == {"2.weight": {1, 2}, "4.weight": {1}}


def test_global_scope_never_empties_a_layer(chain, x):
    spec = fx_upscale.mask(chain, x, amount=0.9, heuristic="l2", scope="global", side="both")
    assert spec.inputs == {"2.weight": {0, 1, 2}, "4.weight": {0, 1}}
    assert len(spec.outputs["0.weight"]) == 3 and len(spec.outputs["2.weight"]) == 2


def test_fpgm_chooses_the_column_nearest_the_others(chain, x):
    with torch.no_grad():
        chain[4].weight.copy_(torch.tensor([[1.0, 4.0, 1.0], [1.0, 5.0, 2.0]]).reshape(2, 3, 1, 1))
    # distance sums 6, 5 + sqrt(18), 1 + sqrt(18): column 2 is nearest; the smallest norm is column 0
    assert fx_upscale.mask(chain, x, amount=0.34, heuristic="fpgm").inputs["4.weight"] == {2}
    assert fx_upscale.mask(chain, x, amount=0.34, heuristic="l2").inputs["4.weight"] == {0}


def test_a_callable_heuristic_gets_one_row_per_channel(chain, x):
    shapes = []

    def largest_first(slices: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(slices.shape))
        return -scores.l2(slices)

    spec = fx_upscale.mask(chain, x, amount=0.5, heuristic=largest_first, side="both")
    # input side: 4 columns of 3 weights, 3 columns of 2; output side: filters with their bias
    assert shapes == [(4, 3), (3, 2), (4, 3 + 1), (3, 4 + 1)]
    assert spec.inputs == {"2.weight": {0, 3}, "4.weight": {2}}


def test_a_flattened_channel_is_scored_over_all_its_columns():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    model = model.double().eval()
    shapes = []

    def l2(slices):
        shapes.append(tuple(slices.shape))
        return scores.l2(slices)

    spec = fx_upscale.mask(model, torch.randn(1, 3, 4, 4, dtype=torch.float64), amount=0.5, heuristic=l2)
    assert shapes == [(4, 3), (3, 2 * 16)]
    (channel,) = {c // 16 for c in spec.inputs["4.weight"]}
    assert spec.inputs["4.weight"] == set(range(16 * channel, 16 * channel + 16))


@pytest.mark.parametrize(
    "returned, message",
    [
        (lambda s: torch.ones(len(s), 2), r"shape \(4, 2\) for the 4 input channels of '2.weight'.*shape \(4,\)"),
        (lambda s: [1.0] * len(s), r"returned a list for the 4 input channels of '2.weight'; it must return a torch"),
        (lambda s: torch.full((len(s),), float("nan")), r"NaN scores for the 4 input channels of '2.weight'"),
    ],
)
def test_a_callable_with_bad_scores_is_named(chain, x, returned, message):
    with pytest.raises(SpecError, match=message):
        fx_upscale.mask(chain, x, amount=0.5, heuristic=returned)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"heuristic": "l0"}, r"heuristic must be one of \('l1', 'l2', 'lamp', 'fpgm', 'hrank'\) or a callable"),
        ({"scope": "everywhere"}, r"scope must be one of \('local', 'global'\), not 'everywhere'"),
        ({"amount": "0.3"}, r"amount must be a fraction in \[0, 1\), not '0.3'"),
        ({"heuristic": "hrank"}, r"heuristic='hrank' ranks the feature maps of calibration data: pass calibration="),
    ],
)
def test_bad_arguments_name_the_value_and_the_fix(chain, x, kwargs, message):
    with pytest.raises(SpecError, match=message):
        fx_upscale.mask(chain, x, **{"amount": 0.3, **kwargs})


class Branches(nn.Module):
    """A stem read by two convolutions whose outputs are added: two coupled groups."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 1)
        self.a = nn.Conv2d(10, 6, 1)
        self.b = nn.Conv2d(10, 6, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.head(torch.relu(self.a(y) + self.b(y)))


@pytest.mark.parametrize("heuristic", ["l1", "lamp", "fpgm"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_constrained_choices_agree_inside_a_group(x, heuristic, scope):
    torch.manual_seed(0)
    model = Branches().double().eval()
    spec = fx_upscale.mask(model, x, amount=0.4, heuristic=heuristic, method="constrained", scope=scope, side="both")
    assert spec.inputs.get("a.weight") == spec.inputs.get("b.weight")
    assert spec.outputs.get("a.weight") == spec.outputs.get("b.weight")
    if scope == "local":  # 40% of the 10 stem channels and of the 6 channels a and b write together
        assert len(spec.inputs["a.weight"]) == 4 and len(spec.outputs["a.weight"]) == 2
    free = fx_upscale.mask(model, x, amount=0.4, heuristic=heuristic, scope=scope)
    assert free.inputs.get("a.weight") != free.inputs.get("b.weight")
    result = fx_upscale.export(model, x, spec=spec, mode="constrained")
    assert result.report.gathers == 0 and result.report.extra_pruned_channels == 0
    assert_exact(result, spec.apply(model), x)


# -- HRank ------------------------------------------------------------------------------------------------------------


def digit_batches(count: int, size: int) -> list[torch.Tensor]:
    """``count`` batches of ``size`` sklearn digits (8x8, one channel, scaled to [0, 1])."""
    images = torch.tensor(load_digits().images[: count * size], dtype=torch.float64) / 16
    return list(images.unsqueeze(1).split(size))


def random_batches(count: int, size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(size, 1, 8, 8, dtype=torch.float64, generator=generator) for _ in range(count)]


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        y = self.relu2(self.bn(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc(torch.flatten(y, 1))


@pytest.fixture
def digits_net():
    torch.manual_seed(0)
    model = DigitsNet().double().eval()
    with torch.no_grad():
        model.conv1.weight[:3] *= torch.tensor([0.0, 0.0, 1e-3]).reshape(3, 1, 1, 1)  # maps of rank 1, 0 or low
        model.conv1.bias[:3] = torch.tensor([0.5, -1.0, 0.0])
    return model


def hooked_ranks(model: nn.Module, modules: list[str], batches) -> dict[str, torch.Tensor]:
    """Average torch.linalg.matrix_rank of each module's output maps per channel, from forward hooks."""
    ranks: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, out, name=name: ranks[name].append(torch.linalg.matrix_rank(out))
        )
        for name in modules
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(found).double().mean(dim=0) for name, found in ranks.items()}


@pytest.mark.parametrize("batches", [digit_batches(3, 16), random_batches(2, 5)], ids=["digits", "random"])
def test_hrank_ranks_match_matrix_rank(digits_net, batches):
    gm = fx_upscale.trace(digits_net, (batches[0],))
    found = average_ranks(gm, {"relu1": 1, "relu2": 1, "conv1": 1}, batches)
    expected = hooked_ranks(digits_net, ["relu1", "relu2", "conv1"], batches)
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)
    assert found["relu1"][:2].tolist() == [1.0, 0.0]  # a constant map, an all-zero map
    assert found["relu1"].max() > 2


def lowest(values: torch.Tensor, count: int) -> set[int]:
    return set(sorted(range(len(values)), key=lambda i: (values[i].item(), i))[:count])


@pytest.mark.parametrize("batches", [digit_batches(2, 16), random_batches(2, 5)], ids=["digits", "random"])
def test_hrank_masks_the_channels_of_lowest_rank(digits_net, batches):
    ranks = hooked_ranks(digits_net, ["relu1", "relu2"], batches)
    spec = fx_upscale.mask(digits_net, batches[0], amount=0.5, heuristic="hrank", side="both", calibration=batches)
    # output side: a filter is scored by its map after BatchNorm and activation
    assert spec.outputs["conv1.weight"] == lowest(ranks["relu1"], 3)
    assert spec.outputs["conv2.weight"] == spec.outputs["bn.weight"] == lowest(ranks["relu2"], 4)
    # input side: a column by the map the consumer reads, before the flatten for the linear layer
    assert spec.inputs["conv2.weight"] == lowest(ranks["relu1"], 3)
    assert spec.inputs["fc.weight"] == {64 * c + k for c in lowest(ranks["relu2"], 4) for k in range(64)}
    result = fx_upscale.export(digits_net, batches[0], spec=spec)
    assert_exact(result, spec.apply(digits_net), batches[0])


def test_hrank_takes_tuples_and_a_one_shot_iterator(digits_net):
    batches = digit_batches(2, 4)
    expected = fx_upscale.mask(digits_net, batches[0], amount=0.5, heuristic="hrank", calibration=batches)
    once = iter([(batch,) for batch in batches])
    assert fx_upscale.mask(digits_net, batches[0], amount=0.5, heuristic="hrank", calibration=once) == expected


@pytest.mark.parametrize(
    "calibration, message",
    [([], r"calibration yielded no batch"), ([torch.zeros(1, 3, 8, 8)], r"calibration batch 0 could not run")],
)
def test_hrank_rejects_unusable_calibration(digits_net, calibration, message):
    with pytest.raises(SpecError, match=message):
        fx_upscale.mask(digits_net, digit_batches(1, 2)[0], amount=0.5, heuristic="hrank", calibration=calibration)


# -- PruneSpec.from_torch_prune ---------------------------------------------------------------------------------------


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc(y.mean(dim=(2, 3)))


def zero_slices(mask: torch.Tensor, axis: int) -> set[int]:
    return set(torch.nonzero(mask.transpose(0, axis).reshape(mask.shape[axis], -1).eq(0).all(dim=1)).flatten().tolist())


def test_from_torch_prune_reads_structured_masks_and_exports_exactly(x):
    torch.manual_seed(0)
    model = Small().double().eval()
    prune.ln_structured(model.conv1, "weight", amount=0.5, n=2, dim=0)
    prune.ln_structured(model.conv2, "weight", amount=0.25, n=1, dim=1)
    prune.ln_structured(model.fc, "weight", amount=0.5, n=2, dim=1)
    spec = PruneSpec.from_torch_prune(model)
    assert spec.outputs == {"conv1.weight": zero_slices(model.conv1.weight_mask, 0)}
    assert spec.inputs == {
        "conv2.weight": zero_slices(model.conv2.weight_mask, 1),
        "fc.weight": zero_slices(model.fc.weight_mask, 1),
    }
    assert [len(spec.outputs["conv1.weight"]), len(spec.inputs["conv2.weight"]), len(spec.inputs["fc.weight"])] == [
        4,
        2,
        4,
    ]
    for module in (model.conv1, model.conv2, model.fc):
        prune.remove(module, "weight")
    result = fx_upscale.export(model, x, spec=spec)
    assert_exact(result, spec.apply(model), x)
    assert result.report.params_after < result.report.params_before
    assert result.module.fc.in_features == 4


def test_from_torch_prune_ignores_unstructured_zeros_and_needs_masks():
    model = Small()
    with pytest.raises(SpecError, match=r"found no torch.nn.utils.prune weight mask.*PruneSpec.from_zeros"):
        PruneSpec.from_torch_prune(model)
    prune.l1_unstructured(model.conv2, "weight", amount=0.3)
    assert PruneSpec.from_torch_prune(model).is_empty()


def test_the_readme_example_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.search(r"^### Choosing channels\n\n```python\n(.*?)^```", text, flags=re.M | re.S)
    assert example, "README has no python example right under '### Choosing channels'"
    exec(compile(example.group(1), "README.md (Choosing channels)", "exec"), {"__name__": "__readme__"})
