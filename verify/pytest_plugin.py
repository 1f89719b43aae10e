"""pytest plugin: parity checks of ktorch conversions inside a project's own tests.

Registered as the `ktorch` pytest11 entry point (or load it with
`-p ktorch.verify.pytest_plugin`). It adds:

* `--ktorch-device cpu|cuda|all` (default cpu) and `--ktorch-tf32`;
* the `ktorch_device` fixture, parametrised over the chosen devices; a CUDA case skips
  cleanly where there is no GPU;
* the `ktorch_parity` fixture: `ktorch_parity(src, converted, **options)` runs
  `ktorch.verify.assert_parity` on the test's device and returns the report;
  `train_steps=K` (or `--ktorch-train-steps K` for every call) also checks training parity;
* the `ktorch_cuda` marker: the test is skipped where there is no GPU.

Importing this module imports neither torch, TensorFlow nor Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

DEVICES = ("cpu", "cuda", "all")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktorch", "ktorch parity checks")
    group.addoption(
        "--ktorch-device",
        choices=DEVICES,
        default="cpu",
        help="device(s) for the ktorch_device / ktorch_parity fixtures: cpu (default), cuda, or all (cuda cases skip without a GPU)",
    )
    group.addoption(
        "--ktorch-train-steps",
        type=int,
        default=0,
        metavar="K",
        help="also check training parity in ktorch_parity: K training steps on both sides (default 0: off)",
    )
    group.addoption(
        "--ktorch-tf32",
        action="store_true",
        default=False,
        help="allow TF32 on GPU in ktorch_parity (looser cuda-tf32 profile)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ktorch_cuda: the test needs a CUDA device; it is skipped cleanly without one")


def _cuda() -> bool:
    from .profiles import cuda_available

    return cuda_available()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ktorch_device" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("ktorch_device")
    devices = ["cpu", "cuda"] if chosen == "all" else [chosen]
    metafunc.parametrize("ktorch_device", devices, indirect=True, ids=[f"ktorch-{d}" for d in devices])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("ktorch_cuda") is not None]
    if marked and not _cuda():
        skip = pytest.mark.skip(reason="needs CUDA: no CUDA device here (torch.cuda.is_available() is False)")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture
def ktorch_device(request: pytest.FixtureRequest) -> str:
    """'cpu' or 'cuda' (skips the test when CUDA is asked for and absent)."""
    device = getattr(request, "param", None) or request.config.getoption("ktorch_device")
    if device == "all":
        device = "cpu"
    if device == "cuda" and not _cuda():
        pytest.skip("needs CUDA: no CUDA device here (torch.cuda.is_available() is False)")
    return device


@pytest.fixture
def ktorch_parity(ktorch_device: str, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """`ktorch_parity(src, converted, **options)`: assert that a converted directory
    computes what its source computes, on this test's device; returns the report."""
    from .verifier import assert_parity

    def check(src: Any, converted: Any, **options: Any) -> Any:
        options.setdefault("device", ktorch_device)
        options.setdefault("tf32", request.config.getoption("ktorch_tf32"))
        options.setdefault("train_steps", request.config.getoption("ktorch_train_steps"))
        return assert_parity(src, converted, **options)

    return check
