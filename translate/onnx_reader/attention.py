"""nn.MultiheadAttention as torch.onnx.export writes it, read back as one attention op.

The exporter writes a batch_first nn.MultiheadAttention out op by op, time first, with
the batch folded into the heads ((time, batch * heads, head_dim) reshapes): no value in
it has the batch on axis 0, so the reader could not translate it node by node. Every
node of it is named under the module's scope ("/attn/...", "/layer/self_attn/...").

`fuse_attention` takes each scope that holds a Softmax, has one input and one output and
reads a packed in-projection (features, 3 * features) and an output projection, and
replaces it by one `ktorch::MultiHeadAttention` node. It does not trust the pattern: it
runs the scope's nodes with ONNX's reference implementation on random inputs (two batch
sizes) and keeps the rewrite only if a multi-head attention with those weights, some
head count and with or without the causal mask computes the same numbers. Anything else
is left as it was (and refused further on, naming its first node).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import OnnxCall
from .patterns import DOMAIN, drop_dead

MHA = "MultiHeadAttention"  # inputs x, q/k/v/out weights (torch Linear layout) and biases; attrs num_heads, causal


def _attention(x: np.ndarray, w: dict[str, np.ndarray], heads: int, causal: bool) -> np.ndarray:
    """Reference multi-head self-attention over (batch, time, features), in float64."""
    x = x.astype(np.float64)
    n, t, e = x.shape
    d = w["q_w"].shape[0] // heads

    def project(name: str) -> np.ndarray:
        y = x @ w[f"{name}_w"].T.astype(np.float64) + w[f"{name}_b"].astype(np.float64)
        return y.reshape(n, t, heads, d).transpose(0, 2, 1, 3)

    q, k, v = project("q"), project("k"), project("v")
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    out = (scores @ v).transpose(0, 2, 1, 3).reshape(n, t, heads * d)
    return out @ w["o_w"].T.astype(np.float64) + w["o_b"].astype(np.float64)


def _run(
    nodes: list[Any], inits: dict[str, np.ndarray], x_name: str, out_name: str, x: np.ndarray, opset: int
) -> np.ndarray | None:
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        nodes,
        "scope",
        [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        return np.asarray(ReferenceEvaluator(model).run(None, {x_name: x})[0])
    except Exception:  # noqa: BLE001 - a scope the reference cannot run is not fused
        return None


def _weights(index: Any, region: list[Any], features: int) -> dict[str, np.ndarray] | None:
    """q/k/v/o weights (out, in) and biases from a packed in-projection and an out-projection."""
    e = features
    found: dict[str, np.ndarray] = {}
    for node in region:
        for name in node.input:
            a = index.const(name)
            if a is None:
                continue
            if a.shape == (e, 3 * e) and node.op_type == "MatMul":
                found["in_w"] = a.T
            elif a.shape == (3 * e, e) and node.op_type == "Gemm":
                found["in_w"] = a if _attr(node, "transB", 0) else a.T
            elif a.shape == (3 * e,):
                found["in_b"] = a
            elif a.shape == (e, e) and node.op_type in ("Gemm", "MatMul"):
                found["o_w"] = a if node.op_type == "Gemm" and _attr(node, "transB", 0) else a.T
            elif a.shape == (e,) and node.op_type in ("Gemm", "Add"):
                found["o_b"] = a
    if "in_w" not in found or "o_w" not in found:
        return None
    w, b = found["in_w"], found.get("in_b", np.zeros(3 * e, np.float32))
    return {
        "q_w": w[:e], "k_w": w[e : 2 * e], "v_w": w[2 * e :], "q_b": b[:e], "k_b": b[e : 2 * e], "v_b": b[2 * e :],
        "o_w": found["o_w"], "o_b": found.get("o_b", np.zeros(e, np.float32)),
    }  # fmt: skip


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fuse_attention(model: Any, shapes: dict[str, tuple], opset: int) -> int:
    """Replace each torch-exported self-attention scope by ktorch::MultiHeadAttention
    (after checking its numbers); returns the count."""
    from onnx import helper, numpy_helper

    from .patterns import ModelIndex

    index = ModelIndex(model)
    graph = model.graph
    scopes = dict.fromkeys(
        n.name.rsplit("/", 1)[0]
        for n in graph.node
        if n.op_type == "Softmax" and n.name.startswith("/") and n.name.count("/") >= 2
    )
    fused = 0
    graph_outputs = {o.name for o in graph.output}
    for scope in scopes:
        region = [n for n in graph.node if n.name.startswith(scope + "/")]
        members = {id(n) for n in region}
        produced = {o for n in region for o in n.output}
        # constants without a scope ("Constant_81") that only this scope reads
        for n in graph.node:
            if (
                n.op_type == "Constant"
                and id(n) not in members
                and all(id(u) in members for u in index.consumers.get(n.output[0], []))
                and index.consumers.get(n.output[0])
            ):
                region.append(n)
                members.add(id(n))
                produced.update(n.output)
        outside = [i for n in region for i in n.input if i and i not in produced and index.const(i) is None]
        inputs = list(dict.fromkeys(outside))
        outputs = [
            o for o in produced if o in graph_outputs or any(id(u) not in members for u in index.consumers.get(o, []))
        ]
        if len(inputs) != 1 or len(outputs) != 1:
            continue
        x_name, out_name = inputs[0], outputs[0]
        shape = shapes.get(x_name)
        if shape is None or len(shape) != 3 or shape[2] is None:
            continue
        steps, features = shape[1] or 5, int(shape[2])
        w = _weights(index, region, features)
        if w is None:
            continue
        ordered = [n for n in graph.node if id(n) in members]
        inits = {i: index.const(i) for n in ordered for i in n.input if i and index.const(i) is not None}
        rng = np.random.default_rng(0)
        probes = [rng.standard_normal((b, steps, features)).astype(np.float32) for b in (2, 3)]
        got = [_run(ordered, inits, x_name, out_name, p, opset) for p in probes]
        if any(g is None for g in got):
            continue
        match = None
        for heads in [h for h in range(1, features + 1) if features % h == 0]:
            for causal in (False, True):
                ok = True
                for p, g in zip(probes, got):
                    ref = _attention(p, w, heads, causal)
                    if g.shape != ref.shape or np.max(np.abs(g - ref)) > 1e-4 * max(1.0, float(np.max(np.abs(ref)))):
                        ok = False
                        break
                if ok:
                    match = (heads, causal)
                    break
            if match:
                break
        if match is None:
            continue
        base = scope.strip("/").replace("/", "_")
        names = []
        for key in ("q_w", "k_w", "v_w", "o_w", "q_b", "k_b", "v_b", "o_b"):
            name = f"{base}.{key}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[key], dtype=np.float32), name))
            names.append(name)
        node = helper.make_node(
            MHA,
            [x_name, *names],
            [out_name],
            name=f"{scope}/{MHA}",
            domain=DOMAIN,
            num_heads=match[0],
            causal=int(match[1]),
        )
        position = max(i for i, n in enumerate(graph.node) if out_name in n.output)
        graph.node.insert(position + 1, node)
        for n in ordered:
            graph.node.remove(n)
        index = ModelIndex(model)
        fused += 1
    if fused:
        drop_dead(model)
    return fused


@register("onnx->ir", f"{DOMAIN}::{MHA}")
def multi_head_attention_to_ir(call: OnnxCall) -> Value:
    """One `multi_head_attention` node (self-attention: query, value and key are x)."""
    x = call.value(0)
    q_w, k_w, v_w, o_w, q_b, k_b, v_b, o_b = (call.const(i) for i in range(1, 9))
    heads = int(call.attr("num_heads"))
    embed = int(q_w.shape[0])
    weights = {
        "query_weight": q_w, "key_weight": k_w, "value_weight": v_w, "output_weight": o_w,
        "query_bias": q_b, "key_bias": k_b, "value_bias": v_b, "output_bias": o_b,
    }  # fmt: skip
    attrs = {
        "num_heads": heads, "key_dim": embed // heads, "value_dim": embed // heads, "output_dim": int(o_w.shape[0]),
        "use_bias": True, "causal": bool(call.attr("causal", 0)),
    }  # fmt: skip
    return call.emit(
        "multi_head_attention",
        [x, x, x],
        attrs,
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
    )
