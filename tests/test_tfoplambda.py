"""tf.keras 2 TFOpLambda / SlicingOpLambda layers (TensorFlow functions recorded by name:
tf.reduce_mean, tf.reshape, x[:, 0], tf.image.resize ...), read without --trust-code: each
model is saved as .h5 by tf_keras, converted, and compared with the in-memory model."""

from __future__ import annotations

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")


def _seeded(model):
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _conv_input(shape=(6, 5, 4)):
    inp = tf_keras.Input(shape)
    return inp, tf_keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)


def _shapes():
    import tensorflow as tf

    inp, x = _conv_input()
    seq = tf.reshape(x, (-1, 30, 4))
    a, b = tf.split(seq, [10, 20], axis=1)
    outs = [
        tf.reduce_mean(x, axis=[1, 2], keepdims=True),
        tf.reduce_sum(seq, axis=-1),
        tf.reduce_max(x, axis=3),
        seq[:, 0],
        seq[:, -1, 1:3],
        seq[:, 1:9:3, tf.newaxis, ...],
        x[..., ::2],
        tf.transpose(x, (0, 3, 1, 2)),
        tf.squeeze(tf.expand_dims(seq, 2), axis=2),
        tf.concat([a[:, :3], b[:, -2:]], axis=1),
        tf.stack([seq[:, 0], seq[:, 1]], axis=1),
        tf.matmul(seq, seq, transpose_b=True),
        tf.gather(seq, [0, 4, 2], axis=1),
        tf.math.add(*tf.unstack(tf.reshape(x, (-1, 6, 5, 2, 2)), axis=-1)),
        tf.unstack(seq, num=30, axis=1)[7],
        tf.repeat(x, 3, axis=2),
        tf.repeat(x[:, :1], 2, axis=1),
        tf.reshape(tf.repeat(x, 2, axis=0), (-1, 2, 6, 5, 4))[:, 1],  # each example twice in a row
    ]
    return tf_keras.Model(inp, outs, name="tf_shapes")


def _elementwise():
    import tensorflow as tf

    inp, x = _conv_input()
    outs = [
        tf.nn.gelu(x),
        tf.nn.gelu(x, approximate=True),
        tf.nn.softmax(tf.reshape(x, (-1, 30, 4)), axis=1),
        tf.nn.silu(x) * tf.math.tanh(x) + tf.math.erf(x),
        tf.clip_by_value(x, -0.5, 0.25),
        tf.where(x > 0.0, x, 0.1 * x),
        tf.math.pow(tf.abs(x), 1.5) - tf.math.rsqrt(tf.abs(x) + 1.0),
        tf.image.resize(x, (12, 7)),
        tf.image.resize(x, (3, 10), method="nearest"),
        tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]], mode="REFLECT"),
        tf.pad(x, [[0, 0], [1, 1], [0, 2], [0, 0]], constant_values=0.5),
        tf.nn.leaky_relu(x, alpha=0.1) + tf.nn.relu6(x * 4.0),
        tf.math.sin(x * 3.0) * tf.math.cos(x),
        tf.pad(tf.reduce_mean(x, axis=[1, 2]), [[0, 0], [2, 1]], constant_values=0.5),  # ECA's pooled channels
    ]
    return tf_keras.Model(inp, outs, name="tf_elementwise")


@pytest.mark.parametrize("build", [_shapes, _elementwise], ids=lambda f: f.__name__.strip("_"))
def test_tf_functions(tmp_path, build):
    from conftest import convert_tf_keras

    model = _seeded(build())
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


def test_tf_functions_need_no_trust_and_no_transpose(tmp_path):
    """A squeeze-and-excitation block written with tf.reduce_mean / tf.math.multiply: NCHW
    throughout, named after the TF functions."""
    import tensorflow as tf
    from conftest import convert_tf_keras

    inp, x = _conv_input()
    s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    s = tf_keras.layers.Conv2D(4, 1, name="squeeze")(s)
    y = tf.math.multiply(x, tf.nn.sigmoid(s))
    model = _seeded(tf_keras.Model(inp, tf.nn.softmax(y, axis=-1), name="tf_se"))
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
    code = (tmp_path / "tf_se_torch" / "model.py").read_text()
    forward = code[code.index("def forward") : code.index("\ndef load")]
    assert "permute(" not in forward and "reduce_mean" in forward, forward


def test_unsupported_tf_functions_are_listed_at_once(tmp_path):
    import tensorflow as tf

    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    inp = tf_keras.Input((5,))
    outs = [tf.math.cumsum(inp, axis=1), tf.sort(inp, axis=1), tf.math.argmax(inp, axis=1), tf.reduce_mean(inp, axis=1)]
    tf_keras.Model(inp, outs).save(tmp_path / "m.h5")
    with pytest.raises(UnsupportedOpError) as err:
        ktorch.convert(tmp_path / "m.h5", tmp_path / "out", verify=False)
    message = str(err.value)
    for name in ("tf.math.cumsum", "tf.math.argmax"):
        assert name in message, message
    assert "reduce_mean" not in message and "trust" not in message, message


def test_registered_activation_kecam_style(tmp_path):
    """keras-cv-attention-models registers hard_swish as "kecamCommon>hard_swish"."""
    import tensorflow as tf
    from conftest import convert_tf_keras

    @tf_keras.utils.register_keras_serializable(package="ktorchTest2")
    def hard_swish(inputs):
        return inputs * tf.nn.relu6(inputs + 3) / 6

    inp = tf_keras.Input((6, 6, 3))
    out = tf_keras.layers.Conv2D(4, 3, activation=hard_swish, name="conv")(inp)
    model = tf_keras.Model(inp, out, name="k2_hswish")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 2.0, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


def test_static_shape_folded_into_resize_and_reshape(tmp_path):
    """kecam's GhostNetV2 resizes a gate back with tf.image.resize(g, tf.shape(x)[1:-1]):
    the static shape is folded at conversion time; reshaping by tf.shape(x)[0] (the batch) too."""
    import tensorflow as tf
    from conftest import convert_tf_keras

    inp, x = _conv_input((8, 6, 4))
    g = tf_keras.layers.AveragePooling2D(2, name="pool")(x)
    g = tf.image.resize(tf.nn.sigmoid(g), tf.shape(x)[1:-1], method="nearest")
    y = x * g
    flat = tf.reshape(y, [tf.shape(y)[0], -1, 4])
    model = _seeded(tf_keras.Model(inp, [y, flat], name="tf_shape_fold"))
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


def test_reshape_folding_rows_into_the_batch(tmp_path):
    """MobileViT's unfolding: tf.reshape(x, [-1, W / p, p, C]) moves rows of every image into the
    batch axis, attention runs on the (batch * p * p) patch grids, and the reverse reshapes bring
    them back; read as fold/unfold of the batch, checked at batch 2 and 3."""
    import tensorflow as tf

    import ktorch
    from ktorch.verify.parity import check_keras_to_torch

    p, c = 2, 4
    inp, x = _conv_input((8, 6, 4))  # 4 x 3 patches of 2 x 2
    y = tf.reshape(x, [-1, 3, p, c])  # (B * 8, 3, 2, C)
    y = tf.transpose(y, [0, 2, 1, 3])
    y = tf.reshape(y, [-1, 4, p * p, 3 * c])  # (B, 4, 4, 3 * C)
    y = tf.transpose(y, [0, 2, 1, 3])
    y = tf.reshape(y, [-1, 4 * 3, c])  # (B * 4, 12, C): one sequence per patch position
    y = tf_keras.layers.MultiHeadAttention(2, 2, name="mha")(y, y)
    y = tf.reshape(y, [-1, p * p, 4, 3 * c])  # back: (B, 4, 4, 3 * C)
    y = tf.transpose(y, [0, 2, 1, 3])
    y = tf.reshape(y, [-1, p, 3, c])
    y = tf.transpose(y, [0, 2, 1, 3])
    y = tf.reshape(y, [-1, 8, 6, c])
    model = _seeded(tf_keras.Model(inp, tf_keras.layers.Conv2D(3, 1, name="out")(y), name="tf_fold"))
    src = tmp_path / "tf_fold.h5"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "out", verify=False)
    for batch in (2, 3):
        parity = check_keras_to_torch(src, result.out, manifest=result.manifest, keras_model=model, batch=batch)
        assert parity.passed and parity.worst_rel <= 1e-4, parity
    code = (result.out / "model.py").read_text()
    forward = code[code.index("def forward") : code.index("\ndef load")]
    assert ".flatten(0, 1)" in forward and ".unflatten(0, (-1, " in forward, forward


def test_reshape_with_a_fractional_batch_factor_is_refused(tmp_path):
    import tensorflow as tf

    import ktorch
    from ktorch.graph.errors import KtorchError

    inp, x = _conv_input((6, 5, 4))
    tf_keras.Model(inp, tf.reshape(x, [-1, 7, 4])).save(tmp_path / "m.h5")
    with pytest.raises(KtorchError, match="not a whole number"):
        ktorch.convert(tmp_path / "m.h5", tmp_path / "out", verify=False)


def test_arithmetic_on_static_sizes_is_folded(tmp_path):
    """kecam's global response norm scales by tf.cast(shape[1] * shape[2], float) ** 0.5: the
    arithmetic on static sizes is done at conversion, the model keeps a number; a split into a
    single part is the tensor itself."""
    import tensorflow as tf
    from conftest import convert_tf_keras

    inp, x = _conv_input((6, 5, 4))
    scale = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype) ** 0.5
    (one,) = tf.split(x, 1, axis=-1)
    model = _seeded(tf_keras.Model(inp, tf.sqrt(tf.reduce_mean(one**2, axis=[1, 2])) * scale, name="tf_static"))
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-5, parity
    code = (tmp_path / "tf_static_torch" / "model.py").read_text()
    forward = code[code.index("def forward") : code.index("\ndef load")]
    assert "5.4772" in forward and ".to(" not in forward and ".split(" not in forward, forward
