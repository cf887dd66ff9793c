"""recalibrate_batchnorm: statistics equal to those computed by hand on the calibration batches, exactness on a
pruned export, the caller's model untouched, and the edge cases (no BatchNorm, no batch, bad batches)."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from support import randomize_batchnorm
from torch import nn

import fx_upscale
from fx_upscale import recalibrate_batchnorm


def conv_bn_model(seed: int = 0) -> nn.Sequential:
    """conv -> BN -> relu -> conv -> BN, float64, with non-trivial statistics, affine parameters and momenta."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.BatchNorm2d(4))
    model = randomize_batchnorm(model.double(), seed)
    model[1].momentum = 0.3
    model[4].momentum = None
    return model.eval()


def channel_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel of ``h`` (axis 1): mean, biased variance, unbiased variance."""
    dims = [d for d in range(h.dim()) if d != 1]
    return h.mean(dims), h.var(dims, correction=0), h.var(dims, correction=1)


def hand_statistics(model: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (mean, var) each BN of ``conv_bn_model`` should hold after recalibration, composed by hand: per batch,
    BN1 normalises with the batch's own mean and biased variance (train mode), BN2 reads conv2(relu(that)); each
    running statistic is the plain average over batches of the per-batch mean and unbiased variance."""
    conv1, bn1, _, conv2, _ = model
    per_batch: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], []]
    with torch.no_grad():
        for x in batches:
            h1 = conv1(x)
            mean1, biased1, unbiased1 = channel_stats(h1)
            shape = (1, -1, 1, 1)
            y1 = (h1 - mean1.view(shape)) / torch.sqrt(biased1.view(shape) + bn1.eps)
            y1 = torch.relu(y1 * bn1.weight.view(shape) + bn1.bias.view(shape))
            mean2, _, unbiased2 = channel_stats(conv2(y1))
            per_batch[0].append((mean1, unbiased1))
            per_batch[1].append((mean2, unbiased2))
    return [
        (torch.stack([m for m, _ in stats]).mean(0), torch.stack([v for _, v in stats]).mean(0)) for stats in per_batch
    ]


def assert_statistics(result: nn.Module, expected: list[tuple[torch.Tensor, torch.Tensor]], count: int) -> None:
    norms = [m for m in result.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == len(expected)
    for norm, (mean, var) in zip(norms, expected):
        torch.testing.assert_close(norm.running_mean, mean, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(norm.running_var, var, rtol=1e-12, atol=1e-13)
        assert int(norm.num_batches_tracked) == count


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_statistics_equal_hand_computation_equal_batch_sizes() -> None:
    model = conv_bn_model()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 9, 9, generator=generator, dtype=torch.float64) for _ in range(3)]
    result = recalibrate_batchnorm(model, batches)
    assert_statistics(result, hand_statistics(model, batches), count=3)
    # equal batch sizes: BN1's running mean is the mean over every calibration value (BN1 reads conv1 alone) ...
    pooled = model[0](torch.cat(batches)).detach()
    torch.testing.assert_close(result[1].running_mean, channel_stats(pooled)[0], rtol=1e-12, atol=1e-13)
    # ... but its running variance is the average of per-batch variances, not the pooled variance
    assert not torch.allclose(result[1].running_var, channel_stats(pooled)[2], rtol=1e-6)
    assert result[1].momentum == 0.3 and result[4].momentum is None  # each layer's momentum restored


def test_statistics_unequal_batch_sizes_average_batches_unweighted() -> None:
    """With batches of 2, 7 and 3 samples, each running statistic is still the plain average of the three
    per-batch statistics (a small batch weighs as much as a large one), not the statistic of the pooled values."""
    model = conv_bn_model(seed=2)
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(n, 3, 8, 8, generator=generator, dtype=torch.float64) + n for n in (2, 7, 3)]
    result = recalibrate_batchnorm(model, iter(batches))  # any iterable, even a one-shot iterator
    assert_statistics(result, hand_statistics(model, batches), count=3)
    pooled_mean = channel_stats(model[0](torch.cat(batches)).detach())[0]
    assert not torch.allclose(result[1].running_mean, pooled_mean, rtol=1e-6)


def test_exponential_momentum() -> None:
    model = conv_bn_model()
    batches = [torch.randn(4, 3, 9, 9, dtype=torch.float64) for _ in range(3)]
    result = recalibrate_batchnorm(model, batches, momentum=0.25)
    mean = torch.zeros(5, dtype=torch.float64)
    for x in batches:
        mean = 0.75 * mean + 0.25 * channel_stats(model[0](x).detach())[0]
    torch.testing.assert_close(result[1].running_mean, mean, rtol=1e-12, atol=1e-13)
    assert result[1].momentum == 0.3 and int(result[1].num_batches_tracked) == 3


@pytest.mark.parametrize(
    ("norm", "shape"),
    [
        (nn.BatchNorm1d(4), (6, 4)),
        (nn.BatchNorm1d(4), (6, 4, 5)),
        (nn.BatchNorm2d(4), (3, 4, 5, 5)),
        (nn.BatchNorm3d(4), (2, 4, 3, 3, 3)),
        (nn.SyncBatchNorm(4), (3, 4, 5, 5)),  # no process group: local statistics, like BatchNorm
        (nn.LazyBatchNorm2d(), (3, 4, 5, 5)),  # initialised by a first forward
    ],
    ids=["bn1d", "bn1d-seq", "bn2d", "bn3d", "sync", "lazy"],
)
def test_every_batchnorm_kind(norm: nn.Module, shape: tuple[int, ...]) -> None:
    model = nn.Sequential(norm).double().eval()
    if isinstance(norm, nn.LazyBatchNorm2d):
        model(torch.randn(shape, dtype=torch.float64))
    batches = [torch.randn(shape, dtype=torch.float64) * (i + 1) + i for i in range(3)]
    result = recalibrate_batchnorm(model, batches)
    stats = [channel_stats(x) for x in batches]
    torch.testing.assert_close(result[0].running_mean, torch.stack([s[0] for s in stats]).mean(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(result[0].running_var, torch.stack([s[2] for s in stats]).mean(0), rtol=1e-12, atol=0)
    assert int(result[0].num_batches_tracked) == 3 and not result.training


def test_uninitialised_lazy_batchnorm_is_refused() -> None:
    with pytest.raises(ValueError, match="lazy layers.*'0'.*Run one forward"):
        recalibrate_batchnorm(nn.Sequential(nn.LazyBatchNorm2d()), [torch.randn(2, 3, 4, 4)])


def test_graph_module_recalibrates_like_the_module() -> None:
    model = conv_bn_model()
    batches = [torch.randn(4, 3, 9, 9, dtype=torch.float64) for _ in range(2)]
    traced = fx.symbolic_trace(model)
    result = recalibrate_batchnorm(traced, batches)
    assert isinstance(result, fx.GraphModule) and result is not traced
    assert_statistics(result, hand_statistics(model, batches), count=2)


def test_pruned_export_recalibrates_like_the_masked_model() -> None:
    """The export computes what the masked model computes, so after recalibrating both on the same batches their
    BatchNorms hold the same statistics on the kept channels, and their outputs agree in float64."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.resnet18(weights=None).double().eval())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    spec = fx_upscale.mask(model, x, amount=0.3)
    exported = fx_upscale.export(model, x, spec=spec).module
    masked = spec.apply(model)
    generator = torch.Generator().manual_seed(4)
    batches = [torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(3)]
    exported_recalibrated = recalibrate_batchnorm(exported, batches)
    masked_recalibrated = recalibrate_batchnorm(masked, batches)
    with torch.no_grad():
        expected = masked_recalibrated(x)
        torch.testing.assert_close(exported_recalibrated(x), expected, rtol=1e-9, atol=1e-9)
        assert not torch.allclose(exported(x), expected, rtol=1e-3)  # the recalibration changed the output
    assert int(exported_recalibrated.get_submodule("bn1").num_batches_tracked) == 3


def test_callers_model_untouched_and_dropout_off() -> None:
    """The caller's parameters, buffers and training flags are unchanged (a model left in training mode, with
    one submodule in eval mode); the result is in eval mode; dropout stays off during calibration, so the
    statistics are deterministic and equal those of the same model without dropout."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.Dropout(0.5), nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4)]
    model = randomize_batchnorm(nn.Sequential(*layers).double()).train()
    model[3].eval()
    flags = [m.training for m in model.modules()]
    before = state_copy(model)
    batches = [torch.randn(3, 3, 8, 8, dtype=torch.float64) for _ in range(2)]
    first = recalibrate_batchnorm(model, batches)
    second = recalibrate_batchnorm(model, batches)
    assert_same_state(state_copy(model), before)
    assert [m.training for m in model.modules()] == flags
    assert not any(m.training for m in first.modules())
    assert_same_state(state_copy(first), state_copy(second))
    without_dropout = nn.Sequential(*[nn.Identity() if isinstance(m, nn.Dropout) else m for m in model])
    reference = recalibrate_batchnorm(without_dropout, batches)
    assert_same_state(state_copy(first), state_copy(reference))


def test_model_without_batchnorm_warns_and_returns_an_equal_copy() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).double()
    with pytest.warns(UserWarning, match="no BatchNorm to recalibrate"):
        result = recalibrate_batchnorm(model, [torch.randn(2, 3, 6, 6, dtype=torch.float64)])
    assert result is not model and not result.training and model.training
    assert_same_state(state_copy(result), state_copy(model))
    assert result[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_batchnorm_without_running_stats_is_skipped() -> None:
    untracked = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.warns(UserWarning, match="no BatchNorm to recalibrate"):
        recalibrate_batchnorm(untracked, [torch.randn(2, 3, 4, 4)])
    mixed = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False), nn.BatchNorm2d(3))
    result = recalibrate_batchnorm(mixed, [torch.randn(2, 3, 4, 4)])
    assert result[0].running_mean is None and int(result[1].num_batches_tracked) == 1


def test_unreached_batchnorm_keeps_its_statistics() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.aux = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.aux(x) if self.training else self.used(x)

    model = randomize_batchnorm(Branchy()).eval()
    before = state_copy(model.aux)
    with pytest.warns(UserWarning, match="'aux'"):
        result = recalibrate_batchnorm(model, [torch.randn(2, 3, 4, 4)])
    assert_same_state(state_copy(result.aux), before)
    assert int(result.used.num_batches_tracked) == 1


def test_no_batch_is_refused() -> None:
    model = conv_bn_model()
    with pytest.raises(ValueError, match="at least one calibration batch"):
        recalibrate_batchnorm(model, [])
    with pytest.raises(ValueError, match="at least one calibration batch"):
        recalibrate_batchnorm(model, (x for x in []))


def test_bad_batches_name_their_index() -> None:
    model = conv_bn_model()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    with pytest.raises(TypeError, match="calibration batch 1: entry 0 is a str"):
        recalibrate_batchnorm(model, [x, ("image",)])
    with pytest.raises(TypeError, match="calibration batch 2 is a dict"):
        recalibrate_batchnorm(model, [x, (x,), {"x": x}])
    with pytest.raises(TypeError, match="calibration batch 0 is a NoneType"):
        recalibrate_batchnorm(model, [None])
    with pytest.raises(ValueError, match=r"calibration batch 1 \(\(2, 5, 9, 9\).*could not run"):
        recalibrate_batchnorm(model, [x, torch.randn(2, 5, 9, 9, dtype=torch.float64)])
    with pytest.raises(ValueError, match="momentum must be None"):
        recalibrate_batchnorm(model, [x], momentum=0.0)


def test_tuple_batches_for_a_two_input_model() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right, self.norm = nn.Conv2d(3, 4, 1), nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.norm(self.left(a) + self.right(b))

    model = TwoInputs().double().eval()
    batches = [(torch.randn(3, 3, 5, 5, dtype=torch.float64), torch.randn(3, 2, 5, 5, dtype=torch.float64))] * 2
    batches[1] = (batches[1][0] * 2, batches[1][1] + 1)
    result = recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        stats = [channel_stats(model.left(a) + model.right(b)) for a, b in batches]
    torch.testing.assert_close(result.norm.running_mean, (stats[0][0] + stats[1][0]) / 2, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(result.norm.running_var, (stats[0][2] + stats[1][2]) / 2, rtol=1e-12, atol=1e-13)
    eval_output = F.batch_norm(
        model.left(batches[0][0]) + model.right(batches[0][1]),
        result.norm.running_mean,
        result.norm.running_var,
        result.norm.weight,
        result.norm.bias,
        eps=result.norm.eps,
    )
    with torch.no_grad():
        torch.testing.assert_close(result(*batches[0]), eval_output.detach(), rtol=1e-12, atol=1e-12)
