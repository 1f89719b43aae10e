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


rows = {}
for build in (affine, tokens, image_positions, beit_bias, beit_no_cls, levit_bias, text, activations):
    model = seeded(build())
    src = os.path.join(out, model.name + ".h5")
    model.save(src)
    result = ktorch.convert(src, os.path.join(out, model.name + "_torch"), verify=False)
    checks = [check_keras_to_torch(src, result.out, manifest=result.manifest, keras_model=model, batch=b) for b in (2, 3)]
    code = (result.out / "model.py").read_text()
    rows[model.name] = {
        "passed": [c.passed for c in checks],
        "worst_rel": max(c.worst_rel for c in checks),
        "transposes": result.manifest["layout"]["transposes"],
        "forward": code[code.index("def forward") :],
        "init": code[code.index("def __init__") : code.index("def forward")],
    }
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
    "name", ["affine", "tokens", "image_positions", "beit_bias", "beit_no_cls", "levit_bias", "text", "activations"]
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
