"""Whole attention heads: pruned where a head's value rows or its output projection columns are, kept whole
otherwise.

timm's ``Attention`` (fused ``scaled_dot_product_attention`` and the unfused ``q @ k.T``, softmax, ``@ v``) through
both front ends: exported equals masked in float64, the qkv projection loses the query, key and value rows of every
removed head, the output projection its columns, the reshapes their head count, and no gather appears. A mask that
prunes part of a head keeps the head; a mask tensor with a heads axis, and grouped-query attention, keep every head;
``mask()`` chooses whole heads.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import assert_relatively_exact, gathers_in_graph
from torch import nn

import fx_upscale
from fx_upscale import PruneSpec
from fx_upscale.errors import UnsupportedOpError

timm = pytest.importorskip("timm")

HEADS, HEAD_DIM = 3, 16
DIM = HEADS * HEAD_DIM
CAPTURES = ("symbolic_trace", "torch.export")
X = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def vit(fused: bool) -> nn.Module:
    """A two-block timm ViT of three heads of 16 features, fused or unfused attention."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=DIM, num_heads=HEADS, depth=2
    )
    for block in model.blocks:
        block.attn.fused_attn = fused
    return model.double().eval()


def rows(head: int, parts: tuple[int, ...] = (0, 1, 2)) -> list[int]:
    """The qkv rows of ``head`` in ``parts`` (0 query, 1 key, 2 value)."""
    return [part * DIM + head * HEAD_DIM + d for part in parts for d in range(HEAD_DIM)]


def columns(head: int) -> list[int]:
    return list(range(head * HEAD_DIM, (head + 1) * HEAD_DIM))


def export_exactly(model: nn.Module, spec: PruneSpec, capture: str, mode: str = "upscale") -> fx_upscale.ExportResult:
    with torch.no_grad():
        expected = spec.apply(model)(X)
    result = fx_upscale.export(model, X, spec=spec, capture=capture, mode=mode)
    assert result.report.capture == capture
    assert_relatively_exact(result.module, expected, X, rtol=1e-10)
    assert gathers_in_graph(result.module) == 0
    return result


def shapes(result: fx_upscale.ExportResult, block: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    parameters = dict(result.module.named_parameters())
    prefix = f"blocks.{block}.attn"
    return tuple(parameters[f"{prefix}.qkv.weight"].shape), tuple(parameters[f"{prefix}.proj.weight"].shape)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("mode", ["upscale", "baseline"])
def test_a_head_goes_whole_where_its_rows_its_values_or_its_columns_are_pruned(
    fused: bool, capture: str, mode: str
) -> None:
    """Block 0: head 1's query, key and value rows and head 2's value rows; block 1: head 0's projection columns."""
    spec = PruneSpec(
        outputs={"blocks.0.attn.qkv.weight": rows(1) + rows(2, parts=(2,))},
        inputs={"blocks.1.attn.proj.weight": columns(0)},
    )
    result = export_exactly(vit(fused), spec, capture, mode)
    assert shapes(result, 0) == ((3 * HEAD_DIM, DIM), (DIM, HEAD_DIM))  # one head of three left
    assert shapes(result, 1) == ((3 * 2 * HEAD_DIM, DIM), (DIM, 2 * HEAD_DIM))
    assert head_counts(result) == [1, 2]


def head_counts(result: fx_upscale.ExportResult) -> list[int]:
    """The head count of every reshape into (B, N, 3, heads, head_dim), in graph order."""
    counts = []
    for node in result.module.graph.nodes:
        if node.target in ("reshape", torch.ops.aten.reshape.default, torch.ops.aten.view.default):
            sizes = node.args[1] if isinstance(node.args[1], (list, tuple)) else node.args[1:]
            if len(sizes) == 5 and sizes[-1] == HEAD_DIM:
                counts.append(sizes[-2])
    return counts


@pytest.mark.parametrize("capture", CAPTURES)
def test_part_of_a_head_keeps_the_head(capture: str) -> None:
    """Half of head 1's query rows and half of head 0's projection columns: every head is kept, exactly."""
    spec = PruneSpec(
        outputs={"blocks.0.attn.qkv.weight": rows(1, parts=(0,))[: HEAD_DIM // 2]},
        inputs={"blocks.0.attn.proj.weight": columns(0)[: HEAD_DIM // 2]},
    )
    result = export_exactly(vit(True), spec, capture)
    assert shapes(result, 0) == ((3 * DIM, DIM), (DIM, DIM))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("method", ["unconstrained", "constrained"])
def test_mask_chooses_whole_heads(capture: str, side: str, method: str) -> None:
    """40% of three heads: one whole head per block, which the export removes."""
    model = vit(False)
    spec = fx_upscale.mask(model, X, amount=0.4, side=side, method=method, capture=capture)
    chosen = (
        spec.outputs.get("blocks.0.attn.qkv.weight") if side == "output" else spec.inputs["blocks.0.attn.proj.weight"]
    )
    assert chosen is not None and len(chosen) == (3 if side == "output" else 1) * HEAD_DIM
    result = export_exactly(model, spec, capture, "upscale" if method == "unconstrained" else "constrained")
    for block in (0, 1):
        assert shapes(result, block) == ((3 * 2 * HEAD_DIM, DIM), (DIM, 2 * HEAD_DIM))


def test_an_exported_program_with_pruned_heads_saves_and_reloads(tmp_path) -> None:
    model = vit(True)
    spec = PruneSpec(outputs={"blocks.1.attn.qkv.weight": rows(0)})
    program = torch.export.export(spec.apply(model), (X,))
    result = fx_upscale.export(program, X)  # the spec read from the program's zeros
    assert shapes(result, 1) == ((3 * 2 * HEAD_DIM, DIM), (DIM, 2 * HEAD_DIM))
    path = tmp_path / "vit.pt2"
    torch.export.save(torch.export.export(result.module, (X,)), path)
    reloaded = torch.export.load(path).module()
    torch.testing.assert_close(reloaded(X), program.module()(X), rtol=0, atol=1e-12)


class MaskedAttention(nn.Module):
    """Two heads of four features and a mask with a heads axis (one bias per head), or grouped-query attention:
    four query heads of two features sharing two key/value heads."""

    def __init__(self, grouped: bool = False) -> None:
        super().__init__()
        self.grouped = grouped
        self.q, self.kv, self.proj = nn.Linear(8, 8), nn.Linear(8, 8 if grouped else 16), nn.Linear(8, 8)
        self.register_buffer("bias", torch.randn(1, 2, 3, 3))

    def forward(self, x):
        b, n, _ = x.shape
        head_dim = 2 if self.grouped else 4
        q = self.q(x).reshape(b, n, -1, head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, -1, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.grouped:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        return self.proj(y.transpose(1, 2).reshape(b, n, 8))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_mask_with_a_heads_axis_keeps_every_head(capture: str) -> None:
    torch.manual_seed(0)
    model = MaskedAttention().double().eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    spec = PruneSpec(inputs={"proj.weight": [4, 5, 6, 7]})  # head 1's columns: the mask's head 1 keeps the head
    with torch.no_grad():
        expected = spec.apply(model)(x)
    result = fx_upscale.export(model, x, spec=spec, capture=capture)
    assert_relatively_exact(result.module, expected, x, rtol=1e-10)
    shapes = {name: tuple(p.shape) for name, p in result.module.named_parameters() if name.endswith("weight")}
    assert shapes == {"q.weight": (8, 8), "kv.weight": (16, 8), "proj.weight": (8, 4)}  # heads kept, proj narrows
    assert result.report.narrows == 1


@pytest.mark.parametrize("capture", CAPTURES)
def test_grouped_query_attention_is_a_barrier_naming_itself(capture: str) -> None:
    torch.manual_seed(0)
    model = MaskedAttention(grouped=True).double().eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    spec = PruneSpec(outputs={"q.weight": [0, 1]})  # query head 0
    with pytest.raises(UnsupportedOpError, match="grouped-query attention"):
        fx_upscale.export(model, x, spec=spec, capture=capture)
    with torch.no_grad():
        expected = spec.apply(model)(x)
    result = fx_upscale.export(model, x, spec=spec, capture=capture, on_unsupported="freeze")
    assert_relatively_exact(result.module, expected, x, rtol=1e-10)
    assert dict(result.module.named_parameters())["q.weight"].shape == (8, 8)  # every query head kept


class ChannelAxisOp(nn.Module):
    """``op`` applied to a convolution's output along its channel axis, then read by another convolution."""

    def __init__(self, op) -> None:
        super().__init__()
        self.op, self.conv1, self.conv2 = op, nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv2(self.op(self.conv1(x)))


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        (lambda y: y.softmax(dim=1), "softmax along the channel axis"),
        (lambda y: torch.stack(y.unbind(1), 1), "unbind of the channel axis"),
        (lambda y: y * y[:, 0].unsqueeze(1), "select of one channel"),
    ],
    ids=["softmax", "unbind", "select"],
)
@pytest.mark.parametrize("capture", CAPTURES)
def test_ops_across_the_channel_axis_are_barriers_saying_why(op, reason: str, capture: str) -> None:
    model = ChannelAxisOp(op).eval()
    spec = PruneSpec(outputs={"conv1.weight": [1]})
    with pytest.raises(UnsupportedOpError, match=reason):
        fx_upscale.export(model, torch.randn(2, 3, 4, 4), spec=spec, capture=capture)


class ComputedWidthAttention(nn.Module):
    """Heads merged back to ``C``, the block input's width read from its shape (timm before ``attn_dim``), and
    split with a head count computed from it: both sizes are rewritten as constants for the kept heads."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj, self.heads = nn.Linear(8, 24), nn.Linear(8, 8), 2

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c // 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("capture", CAPTURES)
def test_sizes_computed_from_another_tensor_are_rewritten(capture: str) -> None:
    torch.manual_seed(0)
    model = ComputedWidthAttention().double().eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    spec = PruneSpec(outputs={"qkv.weight": [16, 17, 18, 19]})  # head 0's value rows
    with torch.no_grad():
        expected = spec.apply(model)(x)
    result = fx_upscale.export(model, x, spec=spec, capture=capture)
    assert_relatively_exact(result.module, expected, x, rtol=1e-10)
    parameters = dict(result.module.named_parameters())
    assert parameters["qkv.weight"].shape == (12, 8) and parameters["proj.weight"].shape == (8, 4)
    if capture == "symbolic_trace":  # (torch.export's graph is specialised to the example's shapes)
        assert result.module(torch.randn(5, 3, 8, dtype=torch.float64)).shape == (5, 3, 8)  # another batch runs
