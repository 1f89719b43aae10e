"""Tensors whose batch axis PyTorch merged with another axis (translate/torch_reader/merged.py):
split-like ops on them (timm ViT's qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0),
chunk / split / split_with_sizes on windows), BLOOM's ALiBi bias repeated per example and
baddbmm on merged heads, and the message for an op that has no
translation on such a tensor, which names the op and does not guess the cause."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class TimmAttention(nn.Module):
    """timm's Attention: one qkv Linear, unbind(0) after moving the 3 in front of the batch."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Windows(nn.Module):
    """(B, N, C) -> (B * 2, N / 2, C) windows, split along the channels three ways."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.lin = nn.Linear(12, 12)

    def forward(self, x):
        B, N, C = x.shape
        w = self.lin(x).reshape(B * 2, N // 2, C)
        if self.how == "chunk":
            a, b, c = w.chunk(3, dim=-1)
        elif self.how == "split":
            a, b, c = w.split(4, dim=2)
        elif self.how == "split_with_sizes":
            a, b, c = w.split([2, 6, 4], dim=-1)
            b = b[..., :2] + b[..., 2:4] - b[..., 4:]
            c = c[..., :2] * c[..., 2:]
        else:  # unbind a non-merged axis
            a, b, c = w.reshape(B * 2, N // 2, 3, 4).unbind(2)
        return (a * b + c).reshape(B, N, -1)


def convert_and_check(module, x, out):
    import ktorch
    from ktorch.verify.torch_source import check_torch_to_keras

    result = ktorch.convert(module, out, example_inputs=(x,), to="keras", force=True)
    assert result.parity.passed and result.parity.worst_rel <= 1e-5, result.parity
    more = np.random.default_rng(5).standard_normal((3, *x.shape[1:])).astype("float32")
    parity = check_torch_to_keras(module, out, inputs=[more], manifest=result.manifest, keras_model=result.keras_model)
    assert parity.passed and parity.worst_rel <= 1e-5, parity
    return result


def test_timm_attention_unbind(tmp_path):
    torch.manual_seed(0)
    convert_and_check(TimmAttention().eval(), torch.randn(2, 5, 16), tmp_path / "attn")


@pytest.mark.parametrize("how", ["chunk", "split", "split_with_sizes", "unbind"])
def test_split_like_ops_on_windows(how, tmp_path):
    torch.manual_seed(0)
    convert_and_check(Windows(how).eval(), torch.randn(2, 6, 12), tmp_path / how)


def test_untranslated_op_on_a_merged_batch_names_the_op(tmp_path):
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    class Cumulative(nn.Module):
        def forward(self, x):
            B, N, C = x.shape
            return x.reshape(B * 2, N // 2, C).cumsum(1).reshape(B, N, C)

    with pytest.raises(UnsupportedOpError) as err:
        ktorch.convert(Cumulative(), tmp_path / "cum", example_inputs=(torch.randn(2, 6, 4),), to="keras", force=True)
    message = str(err.value)
    assert "aten.cumsum is not translated on a tensor whose batch axis is merged" in message
    assert "window attention" not in message


class FlatTokens(nn.Module):
    """OPT's decoder layer: tokens flattened to (B * N, C) before a LayerNorm and Linears,
    and a matmul with a constant matrix; none of their weights is a broadcast operand."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 8)
        self.mix = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        B, N, C = x.shape
        h = x.reshape(-1, C)
        h = self.fc2(torch.relu(self.fc1(self.norm(h)))) + h @ self.mix
        return h.view(B, N, C)


def test_linear_on_flattened_tokens(tmp_path):
    torch.manual_seed(0)
    convert_and_check(FlatTokens().eval(), torch.randn(2, 5, 8), tmp_path / "flat")


class LeViTNorm(nn.Module):
    """LeViT's LinearNorm: tokens flattened into the batch for a BatchNorm1d, then reshape_as."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8, bias=False)
        self.bn = nn.BatchNorm1d(8)
        with torch.no_grad():
            self.bn.running_mean.normal_(0, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.normal_(1, 0.3)
            self.bn.bias.normal_(0, 0.3)

    def forward(self, x):
        x = self.lin(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def test_batch_norm_on_tokens_flattened_into_the_batch(tmp_path):
    torch.manual_seed(0)
    convert_and_check(LeViTNorm().eval(), torch.randn(2, 5, 8), tmp_path / "levit")


def test_batch_norm_decomposed_form_on_merged_tokens(tmp_path):
    """The same module captured as _native_batch_norm_legit_no_training (a .pt2 after run_decompositions)."""
    import ktorch

    torch.manual_seed(0)
    module = LeViTNorm().eval()
    x = torch.randn(2, 5, 8)
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).run_decompositions()
    result = ktorch.convert(program, tmp_path / "decomposed", to="keras", force=True)
    assert result.parity.passed and result.parity.worst_rel <= 1e-5, result.parity


class AlibiAttention(nn.Module):
    """BLOOM's attention scores: a constant (H, 1, N) bias repeated once per example to
    (B * H, 1, N) and cast, then baddbmm with queries and keys whose heads are merged into the
    batch; `tile` also repeats the bias along its last axis."""

    def __init__(self, heads: int = 2, tile: bool = False) -> None:
        super().__init__()
        self.heads, self.tile = heads, tile
        self.qk = nn.Linear(8, 8 * heads)

    def forward(self, x):
        B, N, C = x.shape
        q, k = self.qk(x).reshape(B, N, 2, self.heads, 4).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = q.reshape(B * self.heads, N, 4), k.reshape(B * self.heads, 4, N) * 0.5
        slopes = torch.tensor([0.5, 0.25][: self.heads])
        if self.tile:
            bias = (slopes[:, None, None] * torch.arange(N // 2)).repeat(B, 1, 2)
        else:
            bias = (slopes[:, None, None] * torch.arange(N)).repeat(B, 1, 1).to(x.dtype)
        scores = bias.baddbmm(batch1=q, batch2=k, beta=1.0, alpha=0.5)
        return scores.softmax(-1).reshape(B, self.heads, N, N)


@pytest.mark.parametrize("tile", [False, True])
def test_alibi_bias_repeated_per_example_and_baddbmm_on_merged_heads(tile, tmp_path):
    torch.manual_seed(0)
    convert_and_check(AlibiAttention(tile=tile).eval(), torch.randn(2, 6, 8), tmp_path / f"alibi{tile}")


def test_alibi_bias_for_one_head_is_a_plain_per_example_tensor(tmp_path):
    torch.manual_seed(0)
    convert_and_check(AlibiAttention(heads=1).eval(), torch.randn(2, 6, 8), tmp_path / "alibi1")
