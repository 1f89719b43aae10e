"""The global layout pass: a standard CNN carries no runtime transpose, `layout="keep"`
keeps channels-last inputs and outputs, the manifest records each boundary's `perm`, and,
on hand-built IR graphs, transposes cancel or compose while the numbers stay the same."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import pytest
from conftest import convert_tf_keras, forward_source, randomize_batchnorm, randomize_weights

from ktorch.graph import Graph, validate
from ktorch.graph.ir import Value
from ktorch.graph.passes import assign_layout, count_transposes


# -- end to end: a small Keras CNN ----------------------------------------------------------
def small_cnn(keras):
    """conv/BN/relu/pool, a residual add, a channel concat, flatten -> dense; the concat is
    also an output, so that one output is an image and one a vector."""
    L = keras.layers
    x = keras.Input((9, 11, 3), name="image")
    y = L.Conv2D(4, 3, padding="same", name="conv1")(x)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.ReLU(name="relu1")(y)
    p = L.MaxPooling2D(2, padding="same", name="pool1")(y)
    r = L.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(p)
    a = L.Add(name="residual")([p, r])
    c = L.Conv2D(2, 1, name="conv3")(a)
    cat = L.Concatenate(name="concat")([a, c])
    q = L.AveragePooling2D(2, name="pool2")(cat)
    f = L.Flatten(name="flatten")(q)
    d = L.Dense(5, name="logits")(f)
    model = keras.Model(x, [d, cat], name="small_cnn")
    randomize_weights(model, scale=0.4)
    randomize_batchnorm(model)
    return model


def _import(directory):
    spec = importlib.util.spec_from_file_location(f"emitted_{directory.name}", directory / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cnn_default_layout_has_no_permute(keras, convert):
    result = convert(small_cnn(keras))
    forward = forward_source(result)
    assert "permute(" not in forward
    assert result.manifest["layout"]["transposes"] == 0
    assert "torch.cat([residual, conv3], dim=1)" in forward  # Keras's channel axis -1 is torch's 1
    assert "self.conv1 = nn.Conv2d(" in (result.out / "model.py").read_text()


@pytest.mark.parametrize("fmt", ["keras", "tf_keras_h5"])
def test_cnn_other_file_formats(keras, convert, tmp_path, fmt):
    """The same CNN from a .keras archive and from a tf.keras 2.x .h5 (Keras 2 config:
    batch_input_shape, nested-list inbound_nodes for Add and Concatenate)."""
    if fmt == "keras":
        result = convert(small_cnn(keras), fmt="keras")
        assert result.manifest["layout"]["transposes"] == 0
        return
    tf_keras = pytest.importorskip("tf_keras")
    model = small_cnn(tf_keras)
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity.to_dict()
    assert "permute(" not in forward_source_of(tmp_path / "small_cnn_torch")


def forward_source_of(directory) -> str:
    code = (directory / "model.py").read_text()
    return code[code.index("def forward") : code.index("\ndef load")]


def test_cnn_manifest_perms(keras, convert):
    manifest = convert(small_cnn(keras)).manifest
    (image,) = manifest["inputs"]
    assert image["name"] == "image"
    assert image["shape"] == [None, 9, 11, 3]  # the source's shape; the emitted one is shape[perm]
    assert image["perm"] == [0, 3, 1, 2] and image["layout"] == "NCHW"
    logits, concat = manifest["outputs"]
    assert logits["name"] == "logits" and "perm" not in logits
    assert concat["name"] == "concat" and concat["perm"] == [0, 3, 1, 2]
    assert concat["shape"] == [None, 5, 6, 6]


def test_cnn_layout_keep_takes_nhwc(keras, convert):
    model = small_cnn(keras)
    result = convert(model, layout="keep")
    manifest = result.manifest
    assert "perm" not in manifest["inputs"][0] and manifest["inputs"][0]["layout"] == "NHWC"
    assert all("perm" not in o for o in manifest["outputs"])
    # one transpose at the input, one for the image output; none inside
    assert manifest["layout"]["transposes"] == 2
    assert forward_source(result).count("permute(") == 2

    import torch

    x = np.random.default_rng(3).standard_normal((2, 9, 11, 3)).astype("float32")
    expected = [np.asarray(o) for o in model(x, training=False)]
    with torch.no_grad():
        got = _import(result.out).load()(torch.from_numpy(x))
    for ref, out in zip(expected, got):
        assert out.shape == ref.shape
        assert np.max(np.abs(out.numpy() - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_channels_first_keras_layers_under_both_layouts(keras, convert):
    """A Keras model built channels_first needs no transpose for torch either way."""
    L = keras.layers
    x = keras.Input((3, 7, 9), name="x")
    y = L.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first", name="conv")(x)
    y = L.MaxPooling2D(2, padding="same", data_format="channels_first", name="pool")(y)
    y = L.GlobalAveragePooling2D(data_format="channels_first", name="gap")(y)
    model = keras.Model(x, L.Dense(3, name="head")(y), name="cf")
    randomize_weights(model)
    for layout in ("torch", "keep"):
        result = convert(model, layout=layout, force=True)
        assert "permute(" not in forward_source(result)
        assert "perm" not in result.manifest["inputs"][0]


def test_conv_then_reshape_to_rows(keras, convert):
    """Conv2D -> Reshape mixing width and channels -> Dense (a tie between the conv and the
    reshape): the conv still runs channels-first and one transpose precedes the reshape."""
    L = keras.layers
    x = keras.Input((4, 5, 3), name="x")
    y = L.Conv2D(3, 1, name="conv")(x)
    y = L.Reshape((4, 15), name="rows")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y), name="rows_model")
    randomize_weights(model)
    result = convert(model)
    assert forward_source(result).count("permute(0, 2, 3, 1)") == 1
    assert result.manifest["layout"]["transposes"] == 1


def test_crnn_permute_reshape(keras, convert):
    """The CRNN pattern: conv features -> Permute to (width, height, channels) -> Reshape to
    a sequence -> Dense per time step."""
    L = keras.layers
    x = keras.Input((8, 12, 3), name="image")
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    y = L.MaxPooling2D(2, name="pool1")(y)
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(y)
    y = L.Permute((2, 1, 3), name="width_first")(y)
    y = L.Reshape((6, 16), name="sequence")(y)
    model = keras.Model(x, L.Dense(5, name="per_step")(y), name="crnn")
    randomize_weights(model)
    result = convert(model)
    assert result.manifest["inputs"][0]["perm"] == [0, 3, 1, 2]
    assert result.manifest["layout"]["transposes"] == 1  # the model's own Permute, composed
    assert forward_source(result).count("permute(") == 1


def test_flatten_channels_first_after_channels_first_conv(keras, convert):
    """Keras's Flatten(data_format="channels_first") permutes to NHWC before flattening; on a
    tensor that PyTorch holds channels-first anyway, the permute folds into the Dense rows."""
    L = keras.layers
    x = keras.Input((3, 4, 5), name="x")
    y = L.Conv2D(2, 1, data_format="channels_first", name="conv")(x)
    y = L.Flatten(data_format="channels_first", name="flatten")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y), name="cf_flatten")
    randomize_weights(model)
    result = convert(model)
    assert "permute(" not in forward_source(result)


# -- the pass on hand-built graphs ------------------------------------------------------------
N = 2


def _conv1x1(
    g: Graph, rng: np.random.Generator, x: Value, filters: int, name: str, data_format: str = "channels_last"
) -> Value:
    c = x.shape[-1 if data_format == "channels_last" else 1]
    attrs = {
        "rank": 2,
        "filters": filters,
        "kernel_size": (1, 1),
        "strides": (1, 1),
        "dilation": (1, 1),
        "padding": ((0, 0), (0, 0)),
        "data_format": data_format,
    }
    weights = {
        "weight": rng.standard_normal((filters, c, 1, 1)).astype("float32"),
        "bias": rng.standard_normal(filters).astype("float32"),
    }
    return g.add_node("conv", [x], attrs, weights, name=name).output


def _dense(g: Graph, rng: np.random.Generator, x: Value, units: int, name: str) -> Value:
    weights = {
        "weight": rng.standard_normal((units, x.shape[-1])).astype("float32"),
        "bias": rng.standard_normal(units).astype("float32"),
    }
    return g.add_node("dense", [x], {"units": units}, weights, name=name).output


def evaluate(graph: Graph, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """A tiny numpy interpreter for the op kinds these tests use."""
    env = {id(v): a for v, a in zip(graph.inputs, feeds)}
    for node in graph.nodes:
        xs = [env[id(v)] for v in node.inputs]
        a, w = node.attrs, node.weights
        if node.op == "conv":
            kernel = w["weight"][:, :, 0, 0]
            if a["data_format"] == "channels_last":
                y = np.einsum("nhwc,oc->nhwo", xs[0], kernel) + w["bias"]
            else:
                y = np.einsum("nchw,oc->nohw", xs[0], kernel) + w["bias"][:, None, None]
        elif node.op == "transpose":
            y = xs[0].transpose(a["perm"])
        elif node.op == "relu":
            y = np.maximum(xs[0], 0)
        elif node.op == "add":
            y = xs[0] + xs[1]
        elif node.op == "concat":
            y = np.concatenate(xs, axis=a["axis"])
        elif node.op == "flatten":
            y = xs[0].reshape(len(xs[0]), -1)
        elif node.op == "reshape":
            y = xs[0].reshape(len(xs[0]), *a["shape"])
        elif node.op == "dense":
            y = xs[0] @ w["weight"].T + w["bias"]
        elif node.op == "global_pool":
            axes = (1, 2) if a["data_format"] == "channels_last" else (2, 3)
            y = xs[0].mean(axis=axes, keepdims=a["keepdims"])
        else:
            raise NotImplementedError(node.op)
        env[id(node.output)] = y
    return [env[id(v)] for v in graph.outputs]


def _check_pass(build: Callable[[np.random.Generator], Graph], *, keep_io: bool = False) -> Graph:
    """Run the layout pass on a fresh copy of the graph (same seeded weights) and assert that
    the rewritten graph, fed inputs in its own order, computes the source's outputs (brought
    back via `perm`)."""
    source = build(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    feeds = [rng.standard_normal([N if d is None else d for d in v.shape]).astype("float32") for v in source.inputs]
    expected = evaluate(source, feeds)
    graph = build(np.random.default_rng(0))
    assign_layout(graph, "channels_first", keep_io=keep_io)
    validate(graph)
    emitted = [f.transpose(v.perm) if v.perm else f for f, v in zip(feeds, graph.inputs)]
    got = evaluate(graph, emitted)
    for ref, out, v in zip(expected, got, graph.outputs):
        back = out.transpose(np.argsort(v.perm)) if v.perm else out
        np.testing.assert_allclose(back, ref, rtol=1e-5, atol=1e-5)
    return graph


def _cancelling(rng: np.random.Generator) -> Graph:
    """conv -> (to NCHW) -> (back to NHWC) -> relu -> conv: the two transposes cancel."""
    g = Graph()
    x = g.add_input("x", (None, 5, 6, 3))
    y = _conv1x1(g, rng, x, 4, "c1")
    y = g.add_node("transpose", [y], {"perm": (0, 3, 1, 2)}, name="to_nchw").output
    y = g.add_node("transpose", [y], {"perm": (0, 2, 3, 1)}, name="to_nhwc").output
    y = g.add_node("relu", [y], name="relu").output
    g.outputs = [_conv1x1(g, rng, y, 2, "c2")]
    return g


def test_pass_cancels_transpose_pairs():
    graph = _check_pass(_cancelling)
    assert count_transposes(graph) == 0
    assert [n.op for n in graph.nodes] == ["conv", "relu", "conv"]
    assert all(n.attrs["data_format"] == "channels_first" for n in graph.nodes if n.op == "conv")
    assert graph.inputs[0].perm == (0, 3, 1, 2) and graph.inputs[0].shape == (None, 3, 5, 6)
    assert graph.outputs[0].perm == (0, 3, 1, 2)


def test_pass_keep_io_adds_only_boundary_transposes():
    graph = _check_pass(_cancelling, keep_io=True)
    assert count_transposes(graph) == 2
    assert graph.nodes[0].op == "transpose" and graph.nodes[-1].op == "transpose"
    assert graph.inputs[0].perm is None and graph.outputs[0].perm is None


def _user_transpose_then_flatten(rng: np.random.Generator) -> Graph:
    """A source that permutes to NCHW itself before Flatten (ported-from-torch models): in
    the channels-first layout that permute is already done and disappears."""
    g = Graph()
    x = g.add_input("x", (None, 4, 5, 3))
    y = _conv1x1(g, rng, x, 2, "c1")
    y = g.add_node("transpose", [y], {"perm": (0, 3, 1, 2)}, name="permute").output
    y = g.add_node("flatten", [y], name="flatten").output
    g.outputs = [_dense(g, rng, y, 3, "head")]
    return g


def test_pass_absorbs_a_source_permute():
    graph = _check_pass(_user_transpose_then_flatten)
    assert count_transposes(graph) == 0
    assert [n.op for n in graph.nodes] == ["conv", "flatten", "dense"]


def _residual_concat_pool(rng: np.random.Generator) -> Graph:
    """The graph input itself joins an add; two branches concatenate on the channel axis."""
    g = Graph()
    x = g.add_input("x", (None, 4, 5, 3))
    a = g.add_node("add", [x, _conv1x1(g, rng, x, 3, "c1")], name="res").output
    b = _conv1x1(g, rng, a, 2, "c2")
    cat = g.add_node("concat", [a, b], {"axis": 3}, name="cat").output
    pooled = g.add_node("global_pool", [cat], {"mode": "avg", "data_format": "channels_last"}, name="gap").output
    g.outputs = [_dense(g, rng, pooled, 2, "head"), cat]
    return g


def test_pass_remaps_concat_axis_and_moves_the_input():
    graph = _check_pass(_residual_concat_pool)
    assert count_transposes(graph) == 0
    assert graph.find_node("cat").attrs["axis"] == 1
    assert graph.inputs[0].perm == (0, 3, 1, 2)
    assert graph.outputs[0].perm is None and graph.outputs[1].perm == (0, 3, 1, 2)


def _reshape_mixing_channels(rng: np.random.Generator) -> Graph:
    """(N, 4, 5, 3) -> (N, 4, 15) mixes width and channels: no channels-first form exists."""
    g = Graph()
    x = g.add_input("x", (None, 4, 5, 3))
    y = _conv1x1(g, rng, x, 3, "c1")
    y = g.add_node("reshape", [y], {"shape": (4, 15)}, name="rows").output
    g.outputs = [_dense(g, rng, y, 2, "head")]
    return g


def test_pass_keeps_one_transpose_where_semantics_need_it():
    graph = _check_pass(_reshape_mixing_channels)
    assert count_transposes(graph) == 1
    (t,) = [n for n in graph.nodes if n.op == "transpose"]
    assert t.attrs["perm"] == (0, 2, 3, 1)  # back to NHWC right before the reshape
    assert graph.find_node("rows").inputs[0] is t.output


def _chained_transposes(rng: np.random.Generator) -> Graph:
    """Three transposes with nothing spatial around: they compose into one."""
    g = Graph()
    x = g.add_input("x", (None, 2, 3, 4))
    y = g.add_node("transpose", [x], {"perm": (0, 2, 1, 3)}, name="t1").output
    y = g.add_node("transpose", [y], {"perm": (0, 1, 3, 2)}, name="t2").output
    y = g.add_node("transpose", [y], {"perm": (0, 2, 1, 3)}, name="t3").output
    g.outputs = [g.add_node("relu", [y], name="relu").output]
    return g


def test_pass_composes_chained_transposes():
    graph = _check_pass(_chained_transposes)
    assert count_transposes(graph) == 1
    (t,) = [n for n in graph.nodes if n.op == "transpose"]
    assert t.attrs["perm"] == (0, 3, 2, 1)


def _inverse_pair_at_io(rng: np.random.Generator) -> Graph:
    g = Graph()
    x = g.add_input("x", (None, 2, 3, 4))
    y = g.add_node("transpose", [x], {"perm": (0, 2, 3, 1)}, name="t1").output
    y = g.add_node("transpose", [y], {"perm": (0, 3, 1, 2)}, name="t2").output
    g.outputs = [g.add_node("relu", [y], name="relu").output]
    return g


def test_pass_drops_an_inverse_pair():
    graph = _check_pass(_inverse_pair_at_io)
    assert count_transposes(graph) == 0
    assert [n.op for n in graph.nodes] == ["relu"]


@pytest.mark.parametrize("keep_io", [False, True])
def test_pass_results_have_consistent_perms(keep_io):
    """Every value's recorded shape is its source shape permuted by `perm`."""
    source = _residual_concat_pool(np.random.default_rng(0))
    shapes = {n.name: n.output.shape for n in source.nodes}
    graph = _residual_concat_pool(np.random.default_rng(0))
    assign_layout(graph, "channels_first", keep_io=keep_io)
    for node in graph.nodes:
        if node.name in shapes:
            perm = node.output.perm or tuple(range(node.output.rank))
            assert node.output.shape == tuple(shapes[node.name][p] for p in perm), node.name


def _mixed_formats(rng: np.random.Generator) -> Graph:
    """A channels_last conv, the source's own permute to NCHW, then a channels_first conv."""
    g = Graph()
    x = g.add_input("x", (None, 4, 5, 3))
    y = _conv1x1(g, rng, x, 2, "c1")
    y = g.add_node("transpose", [y], {"perm": (0, 3, 1, 2)}, name="to_nchw").output
    g.outputs = [_conv1x1(g, rng, y, 3, "c2", data_format="channels_first")]
    return g


def test_pass_mixed_data_formats_need_no_transpose():
    graph = _check_pass(_mixed_formats)
    assert count_transposes(graph) == 0
    assert [n.attrs["data_format"] for n in graph.nodes] == ["channels_first", "channels_first"]
    assert graph.outputs[0].perm is None  # already channels-first in the source


def test_pass_forces_channels_first_convs_for_torch():
    """A conv outvoted by an opaque consumer still runs channels-first for PyTorch."""
    graph = _check_pass(_reshape_mixing_channels)
    assert graph.find_node("c1").attrs["data_format"] == "channels_first"


def _free_transpose_before_flatten(rng: np.random.Generator) -> Graph:
    """A channels_first conv, then a permute to NHWC that only a Flatten -> Dense reads."""
    g = Graph()
    x = g.add_input("x", (None, 3, 4, 5))
    y = _conv1x1(g, rng, x, 2, "c1", data_format="channels_first")
    y = g.add_node("transpose", [y], {"perm": (0, 2, 3, 1)}, name="to_nhwc").output
    y = g.add_node("flatten", [y], name="flatten").output
    g.outputs = [_dense(g, rng, y, 3, "head")]
    return g


def test_pass_free_transpose_becomes_a_no_op():
    graph = _check_pass(_free_transpose_before_flatten)
    assert count_transposes(graph) == 0
    assert [n.op for n in graph.nodes] == ["conv", "flatten", "dense"]
