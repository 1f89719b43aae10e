"""Tolerance profiles per device and dtype, and the GPU precision settings they assume.

Errors are measured relative to the reference tensor's scale (max |reference|), see
`verify.compare`. A profile gives the largest relative error accepted for floating
tensors; integer and bool tensors must always match exactly.

| profile      | when                                   | rtol  |
| ------------ | -------------------------------------- | ----- |
| `cpu-fp32`   | float32 on CPU (the default)           | 1e-4  |
| `cuda-fp32`  | float32 on CUDA, TF32 pinned off       | 2e-4  |
| `cuda-tf32`  | float32 on CUDA with `--tf32`          | 2e-2  |
| `fp16`       | float16 models, any device             | 3e-2  |
| `bf16`       | bfloat16 models, any device            | 1e-1  |

`cuda-fp32` is looser than CPU because cuDNN picks its own (non-TF32) algorithms on each
side. TF32 keeps 10 mantissa bits, so each product carries about 5e-4 relative error, and
a few layers with gain amplify it: on an H100 a small CNN with random weights showed
4e-4 per layer in isolation and 1.3e-2 at its softmax output, hence 2e-2. float16 has
TF32's 10 mantissa bits but also stores every intermediate rounded (3e-2); bfloat16 has
7 (1e-1). Measured on CPU (tests/test_precision.py: a small CNN and a transformer block, Keras
on TensorFlow against the emitted PyTorch module): float16 and mixed_float16 up to 8.9e-4,
bfloat16 and mixed_bfloat16 up to 9.1e-3, so both profiles leave a margin of 10x or more for
deeper models.

A model is judged by the dtype it computes in as well as by its outputs' (`compute=`,
ktorch.json's model.compute_dtype): a Keras mixed_float16 model with a float32 softmax head
returns float32 yet computes in float16.

Training parity (`ktorch verify --train-steps K`) compares the loss, every weight and the
optimizer state after each of K training steps. Each step's rounding differences feed the
next step's gradients, so the tolerance grows with the step number:
`train_rtol(step) = rtol * train_growth ** (step - 1)` (step 1 is checked at `rtol`). With
`cpu-fp32` that is 1e-4 after step 1 and 5.1e-4 after step 5; `--tolerance` replaces `rtol`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Profile:
    """A named tolerance: max |a - b| <= rtol * max |reference| for floating tensors."""

    name: str
    rtol: float
    description: str
    train_growth: float = 1.5  # how much the training-parity tolerance may grow per step

    def train_rtol(self, step: int, base: float | None = None) -> float:
        """The relative tolerance after training step `step` (1-based): base * train_growth ** (step - 1)."""
        return (self.rtol if base is None else base) * self.train_growth ** max(step - 1, 0)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("cpu-fp32", 1e-4, "float32 on CPU"),
        Profile("cuda-fp32", 2e-4, "float32 on CUDA with TF32 off on both sides"),
        Profile("cuda-tf32", 2e-2, "float32 on CUDA with TF32 allowed (--tf32)"),
        Profile("fp16", 3e-2, "float16 computation"),
        Profile("bf16", 1e-1, "bfloat16 computation"),
    )
}


def select_profile(
    device: str,
    dtypes: list[str] | tuple[str, ...] = ("float32",),
    *,
    compute: str | None = None,
    tf32: bool = False,
) -> Profile:
    """The profile for a run on `device` ('cpu' or 'cuda') of a model whose outputs have
    `dtypes` and that computes in `compute` (ktorch.json's model.compute_dtype: a Keras
    mixed_float16 model computes in float16 whatever its outputs' dtype, and a float32 softmax
    head does not make it a float32 model): the loosest dtype wins (bf16 makes the run bf16)."""
    dtypes = [*dtypes, compute] if compute else list(dtypes)
    if "bfloat16" in dtypes:
        return PROFILES["bf16"]
    if "float16" in dtypes:
        return PROFILES["fp16"]
    if device.startswith("cuda"):
        return PROFILES["cuda-tf32" if tf32 else "cuda-fp32"]
    return PROFILES["cpu-fp32"]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _tensorflow_in_use() -> bool:
    if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is None:
        return False
    import os

    return os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"


@contextlib.contextmanager
def precision_settings(device: str, *, tf32: bool = False) -> Iterator[dict[str, Any]]:
    """Pin TF32 on (or off) for PyTorch and TensorFlow while verifying on `device`, and
    yield the settings as they were read back, for the report. Restores them afterwards."""
    settings: dict[str, Any] = {"device": device, "tf32": bool(tf32)}
    restore: list[Any] = []
    try:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the allow_tf32 flags are deprecated in favour of fp32_precision
            old = (
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision(),
            )
            restore.append(lambda: _set_torch(*old))
            _set_torch(tf32, tf32, "high" if tf32 else "highest")
            settings["torch.backends.cuda.matmul.allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
            settings["torch.backends.cudnn.allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
            settings["torch.float32_matmul_precision"] = torch.get_float32_matmul_precision()
        settings["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            settings["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if _tensorflow_in_use():
        from .runners import keras_backend

        keras_backend()  # imports TensorFlow quietly (and Triton first) if not done yet
        import tensorflow as tf

        old_tf = tf.config.experimental.tensor_float_32_execution_enabled()
        restore.append(lambda: tf.config.experimental.enable_tensor_float_32_execution(old_tf))
        tf.config.experimental.enable_tensor_float_32_execution(bool(tf32))
        settings["tensorflow.tensor_float_32_execution"] = bool(
            tf.config.experimental.tensor_float_32_execution_enabled()
        )
        settings["tensorflow"] = tf.__version__
    try:
        yield settings
    finally:
        for undo in reversed(restore):
            undo()


def _set_torch(matmul: bool, cudnn: bool, precision: str) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.set_float32_matmul_precision(precision)
