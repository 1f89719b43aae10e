"""PyTorch code for attention: Keras MultiHeadAttention as explicit Linear projections
around F.scaled_dot_product_attention (nn.MultiheadAttention cannot have key_dim or
value_dim other than features / heads), Attention / AdditiveAttention, EinsumDense."""

from __future__ import annotations

import numpy as np

from ...graph import Node
from ..registry import register
from .codegen import TorchEmitter, call

_MHA = '''class MultiHeadAttention(nn.Module):
    """Keras's MultiHeadAttention: project query, key and value to `num_heads` heads of
    key_dim / value_dim, attend over the time axis (scores scaled by 1/sqrt(key_dim)),
    and project the heads back. Masks are True where attention is allowed; Keras gives a
    masked score -0.7 * float32 max, so a query row with nothing to attend to averages
    every value uniformly, except on its explicit-softmax path (`zero_masked_rows`: a layer
    with dropout, or asked for its scores), where masked weights are 0."""

    def __init__(
        self,
        query_dim: int,
        key_dim_in: int,
        value_dim_in: int,
        num_heads: int,
        key_dim: int,
        value_dim: int,
        output_dim: int,
        bias: bool = True,
        zero_masked_rows: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.zero_masked_rows = zero_masked_rows
        self.query = nn.Linear(query_dim, num_heads * key_dim, bias=bias)
        self.key = nn.Linear(key_dim_in, num_heads * key_dim, bias=bias)
        self.value = nn.Linear(value_dim_in, num_heads * value_dim, bias=bias)
        self.output = nn.Linear(num_heads * value_dim, output_dim, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        key: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        value_mask: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        causal: bool = False,
        return_scores: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        key = value if key is None else key
        q = self.query(query).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        k = self.key(key).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        v = self.value(value).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        mask = attention_mask
        for m in (None if query_mask is None else query_mask[:, :, None], value_mask, key_mask):
            if m is not None:
                m = m if m.dim() == 3 else m[:, None, :]
                mask = m if mask is None else mask & m
        explicit = return_scores or self.zero_masked_rows
        if causal and (mask is not None or explicit):
            tril = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
            mask = tril if mask is None else mask & tril
        if explicit:  # attention written out: masked scores -1e9, masked weights 0
            scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
            if mask is not None:
                scores = torch.where(mask[:, None], scores, -1e9)
            weights = torch.softmax(scores, dim=-1)
            if mask is not None:
                weights = torch.where(mask[:, None], weights, 0.0)
            out = self.output((weights @ v).transpose(1, 2).flatten(2))
            return (out, weights) if return_scores else out
        bias = None if mask is None else torch.where(mask[:, None], 0.0, -0.7 * torch.finfo(torch.float32).max)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal and bias is None)
        return self.output(out.transpose(1, 2).flatten(2))
'''

_ATTENTION = '''class KerasAttention(nn.Module):
    """Keras's Attention (score_mode "dot" or "concat") and AdditiveAttention ("additive"):
    scores of every query step against every key step, softmax over the keys, weighted sum
    of the values. Masked value steps get 1e9 subtracted from their scores; masked query
    steps output zeros."""

    def __init__(self, score_mode: str, scale_shape: tuple[int, ...] | None = None, concat_score_weight: bool = False) -> None:
        super().__init__()
        self.score_mode = score_mode
        self.scale = None if scale_shape is None else nn.Parameter(torch.ones(scale_shape))
        self.concat_score_weight = nn.Parameter(torch.ones(())) if concat_score_weight else None

    def forward(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        key: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        value_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        key = value if key is None else key
        scale = 1.0 if self.scale is None else self.scale
        if self.score_mode == "dot":
            scores = query @ key.transpose(1, 2) * scale
        elif self.score_mode == "concat":
            scores = self.concat_score_weight * torch.tanh(scale * (query[:, :, None] + key[:, None])).sum(-1)
        else:
            scores = (scale * torch.tanh(query[:, :, None] + key[:, None])).sum(-1)
        mask = None if value_mask is None else value_mask[:, None, :]
        if causal:
            tril = torch.ones(scores.shape[1:], dtype=torch.bool, device=scores.device).tril()
            mask = tril if mask is None else mask & tril
        if mask is not None:
            scores = torch.where(mask, scores, scores - 1e9)
        out = torch.softmax(scores, dim=-1) @ value
        return out if query_mask is None else torch.where(query_mask[:, :, None], out, 0.0)
'''


@register("ir->torch", "multi_head_attention")
def multi_head_attention_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    query, value, key = node.inputs[:3]
    em.functional()
    em.helper("MultiHeadAttention", _MHA)
    state = {}
    for part in ("query", "key", "value", "output"):
        state[f"{part}.weight"] = node.weights[f"{part}_weight"]
        if a["use_bias"]:
            state[f"{part}.bias"] = node.weights[f"{part}_bias"]
    kwargs: dict = {} if a["use_bias"] else {"bias": False}
    if a["zero_masked_rows"]:
        kwargs["zero_masked_rows"] = True
    expr = call(
        "MultiHeadAttention",
        int(query.shape[-1]),
        int(key.shape[-1]),
        int(value.shape[-1]),
        num_heads=a["num_heads"],
        key_dim=a["key_dim"],
        value_dim=a["value_dim"],
        output_dim=a["output_dim"],
        **kwargs,
    )
    mod = em.module(node, expr, state)
    args = [em.var(query), em.var(value)]
    if key is not value:
        args.append(f"key={em.var(key)}")
    for name, m in zip(a["mask_inputs"], node.inputs[3:]):
        args.append(f"{name}={em.var(m)}")
    if a["causal"]:
        args.append("causal=True")
    expr = f"{mod}({', '.join(args)})"
    if a["return_scores"] != "none":
        expr = expr[:-1] + ", return_scores=True)"
    if a["return_scores"] == "mean":  # averaged over the heads (torch's need_weights convention)
        out, scores = (em.bind(v) for v in node.outputs)
        em.lines.append(f"{out}, {scores} = {expr}")
        em.lines.append(f"{scores} = {scores}.mean(1)")
        return
    em.assign(node, expr)


@register("ir->torch", "dot_attention")
def dot_attention_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    query, value, key = node.inputs[:3]
    em.helper("KerasAttention", _ATTENTION)
    state: dict[str, np.ndarray] = {}
    kwargs: dict = {}
    if "scale" in node.weights:
        scale = np.asarray(node.weights["scale"], np.float32)
        state["scale"] = scale
        kwargs["scale_shape"] = tuple(int(d) for d in scale.shape)
    if "concat_score_weight" in node.weights:
        state["concat_score_weight"] = np.asarray(node.weights["concat_score_weight"], np.float32)
        kwargs["concat_score_weight"] = True
    mod = em.module(node, call("KerasAttention", a["score"], **kwargs), state)
    args = [em.var(query), em.var(value)]
    if key is not value:
        args.append(f"key={em.var(key)}")
    for name, m in zip(a["mask_inputs"], node.inputs[3:]):
        args.append(f"{name}={em.var(m)}")
    if a["causal"]:
        args.append("causal=True")
    em.assign(node, f"{mod}({', '.join(args)})")


@register("ir->torch", "einsum_dense")
def einsum_dense_to_torch(node: Node, em: TorchEmitter) -> None:
    kernel = node.weights["kernel"]
    shape = tuple(int(d) for d in kernel.shape)
    weight = em.module(node, f"nn.Parameter(torch.zeros({shape!r}))", {"": kernel}, suffix="kernel")
    expr = f'torch.einsum("{node.attrs["equation"]}", {em.var(node.inputs[0])}, {weight})'
    if "bias" in node.weights:
        bias = node.weights["bias"]
        bshape = tuple(int(d) for d in bias.shape)
        expr += " + " + em.module(node, f"nn.Parameter(torch.zeros({bshape!r}))", {"": bias}, suffix="bias")
    em.assign(node, expr)
