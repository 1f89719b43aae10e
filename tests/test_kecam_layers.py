"""keras-cv-attention-models (kecam) layers in tf.keras 2 `.h5` files: each small model is built
from kecam's own layer classes with random weights, saved by tf_keras, converted by the direct
reader, and compared with the in-memory model at batch 2 and batch 3.

kecam picks tf_keras only when TF_USE_LEGACY_KERAS=1 is set before TensorFlow is imported, so
the models are built, converted and checked in one subprocess (the test process has Keras 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras_cv_attention_models")
pytest.importorskip("tf_keras")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import torch  # before tensorflow
import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras import layers
from keras_cv_attention_models import attention_layers as kl
from keras_cv_attention_models.common_layers import hard_swish, hard_sigmoid_torch, mish
from keras_cv_attention_models.convnext.convnext import global_response_normalize
from keras_cv_attention_models.gpt2.gpt2 import PositionalIndex, CausalMask
from keras_cv_attention_models.botnet.botnet import RelativePositionalEmbedding
from keras_cv_attention_models.nfnets.nfnets import ScaledStandardizedConv2D
from keras_cv_attention_models.common_layers import CompatibleExtractPatches
from keras_cv_attention_models.nat.nat import MultiHeadRelativePositionalKernelBias
from keras_cv_attention_models.swin_transformer_v2.swin_transformer_v2_timm import (
    DivideScale, PairWiseRelativePositionalEmbedding, WindowAttentionMask
)
import ktorch
from ktorch.verify.parity import check_keras_to_torch

out = sys.argv[1]
rng = np.random.default_rng(0)


def seeded(model):
    model.set_weights([rng.normal(0, 0.5, np.shape(w)).astype(np.asarray(w).dtype) for w in model.get_weights()])
    return model


def affine():
    inp = tf_keras.Input((6, 5, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = kl.ChannelAffine(use_bias=True, name="affine")(x)
    x = kl.ChannelAffine(use_bias=False, axis=3, name="scale")(x)
    x = kl.BiasLayer(name="bias")(x)
    x = kl.ZeroInitGain(use_bias=True, name="gain")(layers.Conv2D(8, 1)(x))
    x = global_response_normalize(x, name="grn")
    return tf_keras.Model(inp, layers.Conv2D(4, 1)(x), name="affine")


def tokens():
    inp = tf_keras.Input((8, 8, 3))
    x = kl.PatchConv2DWithResampleWeights(16, 4, strides=4, name="stem")(inp)
    x = tf.reshape(x, [-1, 4, 16])
    x = kl.ClassToken(name="cls")(x)
    x = kl.PositionalEmbedding(input_height=2, name="pos")(x)
    end = kl.ClassToken(num_tokens=2, is_at_end=True, name="end")(x)
    return tf_keras.Model(inp, [layers.Dense(4)(x[:, 0]), end], name="tokens")


def image_positions():
    inp = tf_keras.Input((6, 4, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = kl.PositionalEmbedding(name="pos")(x)
    x = kl.PositionalEncodingFourier(filters=4, name="fourier")(x)
    return tf_keras.Model(inp, layers.Conv2D(4, 1)(x), name="image_positions")


def beit_bias():
    inp = tf_keras.Input((2, 17, 17))  # attention scores: (batch, heads, 1 + 4 * 4, 1 + 4 * 4)
    x = kl.MultiHeadRelativePositionalEmbedding(name="rel")(inp)
    return tf_keras.Model(inp, layers.Softmax()(x), name="beit_bias")


def beit_no_cls():
    inp = tf_keras.Input((3, 6, 6))  # a 2 x 3 grid, no class token
    x = kl.MultiHeadRelativePositionalEmbedding(with_cls_token=False, attn_height=2, name="rel")(inp)
    return tf_keras.Model(inp, x, name="beit_no_cls")


def levit_bias():
    heads = tf_keras.Input((2, 16, 64))  # 4 x 4 queries over 8 x 8 keys: stride 2
    plain = tf_keras.Input((9, 9))
    a = kl.MultiHeadPositionalEmbedding(name="pos4")(heads)
    b = kl.MultiHeadPositionalEmbedding(query_height=3, name="pos3")(plain)
    return tf_keras.Model([heads, plain], [a, b], name="levit_bias")


def text():
    ids = tf_keras.Input((8,), dtype="int32")
    pos = PositionalIndex(block_size=16, name="pos_idx")(ids)
    x = layers.Embedding(20, 8)(ids) + layers.Embedding(16, 8)(pos)
    x = kl.RMSNorm(name="norm")(x)
    scores = tf.matmul(x[:, None], x[:, None], transpose_b=True)
    scores = CausalMask(block_size=16, name="causal")(scores)
    return tf_keras.Model(ids, layers.Softmax()(scores), name="text")


def activations():
    inp = tf_keras.Input((6, 5, 3))
    x = layers.Conv2D(8, 3, activation=hard_swish)(inp)
    x = layers.Activation(hard_sigmoid_torch)(x) + layers.Activation(mish)(x)
    return tf_keras.Model(inp, x, name="activations")


def botnet_positions():
    q = tf_keras.Input((2, 3, 4, 8))  # queries: (heads, height, width, key_dim)
    outs = [
        RelativePositionalEmbedding(name="rel")(q),
        RelativePositionalEmbedding(position_height=5, position_width=7, name="halo")(q),  # HaloNet: keys > queries
        RelativePositionalEmbedding(position_height=5, use_absolute_pos=True, name="abs")(q),
        RelativePositionalEmbedding(position_height=6, dynamic_shape=True, name="crop")(q),
        RelativePositionalEmbedding(position_height=3, name="row")(q[:, :, :1]),  # one query row
    ]
    return tf_keras.Model(q, outs, name="botnet_positions")


def std_conv():
    inp = tf_keras.Input((9, 8, 3))
    x = ScaledStandardizedConv2D(filters=8, kernel_size=3, strides=2, padding="same", name="stem")(inp)
    x = layers.Activation("gelu")(x)
    x = ScaledStandardizedConv2D(gamma=1.7, eps=1e-4, filters=6, kernel_size=1, use_bias=False, name="pw")(x)
    x = ScaledStandardizedConv2D(gamma=0.5, filters=6, kernel_size=3, groups=2, activation="relu", name="grouped")(x)
    return tf_keras.Model(inp, x, name="std_conv")


def patches():
    inp = tf_keras.Input((9, 11, 3))
    x = layers.Conv2D(4, 1, name="conv")(inp)
    outs = [
        CompatibleExtractPatches(sizes=4, strides=3, padding="valid", name="valid")(x),
        CompatibleExtractPatches(sizes=3, strides=2, name="same")(x),
        CompatibleExtractPatches(sizes=[1, 3, 3, 1], strides=1, rates=[1, 2, 1, 1], compressed=False, name="dil")(x),
        CompatibleExtractPatches(sizes=3, strides=2, force_conv=True, name="unfold")(x),
    ]
    model = tf_keras.Model(inp, outs, name="patches")
    unfold = model.get_layer("unfold")
    kept = unfold.get_weights()
    seeded(model)
    unfold.set_weights(kept)  # force_conv's fixed one-hot filters, not trained weights
    return model


def nat_bias():
    a = tf_keras.Input((16, 2, 1, 9))  # (4 x 4 queries, heads, 1, 3 x 3 keys)
    b = tf_keras.Input((2, 36, 9))  # heads first, a 6 x 6 grid
    c = tf_keras.Input((36, 3, 1, 9))  # DiNAT: dilation 2 on a 6 x 6 grid
    outs = [
        MultiHeadRelativePositionalKernelBias(input_height=4, name="nat")(a),
        MultiHeadRelativePositionalKernelBias(is_heads_first=True, name="first")(b),
        MultiHeadRelativePositionalKernelBias(input_height=6, dilation_rate=2, name="dilated")(c),
    ]
    return tf_keras.Model([a, b, c], outs, name="nat_bias")


def swin_layers():
    logits = tf_keras.Input((3, 4, 4))  # (heads, q, k) cosine-attention logits
    feats = tf_keras.Input((5, 6))
    img = tf_keras.Input((4, 6, 5))  # 6 windows of 2 x 2, partitioned into the batch as Swin does
    w = tf.reshape(img, [-1, 2, 2, 3, 2, 5])
    w = tf.reshape(tf.transpose(w, [0, 1, 3, 2, 4, 5]), [-1, 4, 5])  # (batch * 6, 4, 5)
    qk = tf.transpose(tf.reshape(layers.Dense(6, name="qk")(w), [-1, 4, 3, 2]), [0, 2, 1, 3])
    scores = tf.matmul(qk, qk, transpose_b=True)  # (batch * 6, 3 heads, 4, 4)
    pairs = PairWiseRelativePositionalEmbedding(name="pairs")(tf.reshape(w, [-1, 2, 2, 5]))  # (4, 4, 2), no batch
    scores = scores + tf.expand_dims(tf.transpose(layers.Dense(3, name="meta")(pairs), [2, 0, 1]), 0)
    masked = WindowAttentionMask(4, 6, 2, 2, shift_height=1, shift_width=1, name="mask")(scores)
    outs = [
        DivideScale(axis=1, min_value=0.3, name="per_head")(logits),  # some seeded scales fall below 0.3
        DivideScale(name="last")(feats),
        tf.reshape(masked, [-1, 6, 3, 4, 4]),
    ]
    return tf_keras.Model([logits, feats, img], outs, name="swin_layers")


def std_conv_gradients(model, out):
    # the worst relative difference between TF's and the emitted model's gradients of one loss
    # with respect to every standardized conv's kernel and gain: training must see the
    # standardization, not a frozen standardized kernel
    import importlib.util

    spec = importlib.util.spec_from_file_location("emitted_std_conv", out / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load(out / "model.safetensors")
    x = rng.normal(size=(2, 9, 8, 3)).astype("float32")
    r = rng.normal(size=(2, *model.output_shape[1:])).astype("float32")
    names = ("stem", "pw", "grouped")
    variables = [v for n in names for v in (model.get_layer(n).kernel, model.get_layer(n).gain)]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.constant(x)) * r)
    grads = tape.gradient(loss, variables)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    (net(nchw(x)) * nchw(r)).sum().backward()
    worst = 0.0
    for i, name in enumerate(names):
        layer = getattr(net, name)
        kernel, gain = grads[2 * i].numpy().transpose(3, 2, 0, 1), grads[2 * i + 1].numpy()
        for want, got in ((kernel, layer.weight.grad), (gain, layer.gain.grad)):
            worst = max(worst, float(np.abs(want - got.numpy()).max() / np.abs(want).max()))
    return worst


rows = {}
builds = (affine, tokens, image_positions, beit_bias, beit_no_cls, levit_bias, text, activations)
for build in (*builds, botnet_positions, std_conv, patches, nat_bias, swin_layers):
    model = build() if build is patches else seeded(build())
    src = os.path.join(out, model.name + ".h5")
    model.save(src)
    result = ktorch.convert(src, os.path.join(out, model.name + "_torch"), verify=False)
    checks = [check_keras_to_torch(src, result.out, manifest=result.manifest, keras_model=model, batch=b) for b in (2, 3)]
    code = (result.out / "model.py").read_text()
    rows[model.name] = {
        "passed": [c.passed for c in checks],
        "worst_rel": max(c.worst_rel for c in checks),
        "transposes": result.manifest["layout"]["transposes"],
        "forward": code[code.rindex("def forward(") :],  # the model's, after any helper class
        "init": code[code.rindex("def __init__(self) -> None:") : code.rindex("def forward(")],
        "code": code,
    }
    if build is std_conv:
        rows[model.name]["gradients_rel"] = std_conv_gradients(model, result.out)
print("ROWS " + json.dumps(rows))
"""


@pytest.fixture(scope="module")
def kecam_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("kecam")
    env = dict(os.environ, KTORCH_ROOT=str(ROOT), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[5:])


@pytest.mark.parametrize(
    "name",
    [
        "affine",
        "tokens",
        "image_positions",
        "beit_bias",
        "beit_no_cls",
        "levit_bias",
        "text",
        "activations",
        "botnet_positions",
        "std_conv",
        "patches",
        "nat_bias",
        "swin_layers",
    ],
)
def test_kecam_layers_convert_at_parity(kecam_rows, name):
    row = kecam_rows[name]
    assert row["passed"] == [True, True] and row["worst_rel"] <= 1e-5, row


def test_kecam_image_layers_need_no_transpose(kecam_rows):
    """Per-channel affines, the GRN, learned and Fourier positions on images stay NCHW: their
    tables are permuted once at conversion, never in forward()."""
    for name in ("affine", "image_positions"):
        assert kecam_rows[name]["transposes"] == 0, kecam_rows[name]["forward"]


def test_kecam_tables_stay_parameters(kecam_rows):
    """Learned tables stay trainable parameters of their source shape, gathered at run time by
    fixed index buffers; scalar gains stay parameters too."""
    init = kecam_rows["beit_bias"]["init"]
    assert "self.rel_table = nn.Parameter(torch.zeros((2, 52)))" in init, init  # (2*4-1)**2 + 3
    assert "requires_grad=False" in init.split("self.rel_index")[1].split("\n")[0], init
    assert "torch.take_along_dim" in kecam_rows["levit_bias"]["forward"]
    assert "self.gain_gain = nn.Parameter(torch.zeros(()))" in kecam_rows["affine"]["init"]
    assert "self.nat_table = nn.Parameter(torch.zeros((2, 25)))" in kecam_rows["nat_bias"]["init"]


def test_botnet_positions_gather_learned_tables(kecam_rows):
    """BotNet's relative tables stay (key_dim, 2 * positions - 1) parameters; rel_to_abs becomes a
    fixed index gathered at run time, with no reshape-and-slice and no transpose."""
    row = kecam_rows["botnet_positions"]
    assert "self.rel_width_table = nn.Parameter(torch.zeros((8, 7)))" in row["init"], row["init"]
    assert "self.halo_height_table = nn.Parameter(torch.zeros((8, 9)))" in row["init"], row["init"]
    assert "self.abs_height_table = nn.Parameter(torch.zeros((8, 5)))" in row["init"], row["init"]
    assert "requires_grad=False" in row["init"].split("self.halo_width_index")[1].split("self.")[0], row["init"]
    assert "torch.take_along_dim(halo_width, self.halo_width_index, dim=4)" in row["forward"], row["forward"]
    assert "abs_height_index" not in row["init"] and row["transposes"] == 0


def test_std_conv_stays_trainable(kecam_rows):
    """The standardization runs in the emitted forward from the trained kernel and gain, so the
    gradients match TF's; the model declares readable ScaledStdConv2d layers."""
    row = kecam_rows["std_conv"]
    assert "class ScaledStdConv2d(nn.Conv2d):" in row["code"]
    assert "self.pw = ScaledStdConv2d(8, 6, kernel_size=1, bias=False, gamma=1.7, eps=0.0001)" in row["init"], row
    assert row["gradients_rel"] <= 1e-5, row["gradients_rel"]


def test_extract_patches_unfold(kecam_rows):
    row = kecam_rows["patches"]
    assert "extract_patches(conv, (4, 4), (3, 3), (1, 1))" in row["forward"], row["forward"]
    assert "F.unfold" in row["code"]
