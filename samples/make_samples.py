"""Build the small Keras models bundled in samples/ (seeded random weights).

    python samples/make_samples.py        # rewrites samples/*.h5 and samples/*.keras

The files are committed, so trying ktorch needs no download and no training.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

HERE = Path(__file__).resolve().parent


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Random moving statistics, so that epsilon or ordering mistakes show."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers() if hasattr(model, "_flatten_layers") else model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = layer.get_weights()
            c = weights[-1].shape
            weights[-2] = rng.normal(0.0, 0.5, c).astype("float32")
            weights[-1] = rng.uniform(0.5, 2.0, c).astype("float32")
            if layer.scale:
                weights[0] = rng.uniform(0.5, 1.5, c).astype("float32")
            layer.set_weights(weights)


def small_cnn() -> keras.Model:
    """A classifier in the style of keras.applications: conv/BN/ReLU blocks, a residual add,
    a "same" strided conv (TensorFlow's asymmetric padding), pooling, Flatten -> Dense."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="block_dw")(y)
    x = keras.layers.Add(name="block_add")([x, y])
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def multi_input() -> keras.Model:
    """Two inputs (an image and a feature vector), two outputs."""
    image = keras.Input((16, 16, 1), name="image")
    features = keras.Input((5,), name="features")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    f = keras.layers.Dense(8, activation="tanh", name="feature_dense")(features)
    joined = keras.layers.Concatenate(name="concat")([x, f])
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(joined)
    embedding = keras.layers.Dense(4, name="embedding")(joined)
    return keras.Model([image, features], [score, embedding], name="multi_input")


def main() -> None:
    keras.utils.set_random_seed(0)
    cnn = small_cnn()
    randomize_batchnorm(cnn)
    cnn.save(HERE / "small_cnn.h5")
    multi_input().save(HERE / "multi_input.keras")
    print("wrote", HERE / "small_cnn.h5", HERE / "multi_input.keras")


if __name__ == "__main__":
    main()
