"""Property-based robustness: mutated model files never give a traceback, a hang or a
partial output. Each case either converts or raises a KtorchError (one clear line)."""

from __future__ import annotations

import json
import signal
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ktorch
from ktorch.graph.errors import KtorchError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@contextmanager
def time_limit(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"conversion hung for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_conversion(path: Path, out: Path) -> None:
    """Convert without verification: success gives a complete directory, failure a
    KtorchError and no directory at all."""
    try:
        with time_limit(60):
            ktorch.convert(path, out, verify=False, force=True)
    except KtorchError as exc:
        assert str(exc).strip(), "an error must say what went wrong"
        assert not out.exists() or (out / "ktorch.json").exists()
        return
    assert {p.name for p in out.iterdir()} == {"model.py", "model.safetensors", "ktorch.json"}


@pytest.mark.parametrize("name", ["small_cnn.h5", "multi_input.keras"])
@SETTINGS
@given(data=st.data())
def test_byte_mutations(tmp_path_factory, name, data):
    original = (SAMPLES / name).read_bytes()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(0, len(mutated) - 1), label="offset")
        mutated[i] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(mutated))), label="truncate")
    if cut is not None:
        mutated = mutated[:cut]
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / name
    path.write_bytes(bytes(mutated))
    check_conversion(path, tmp / "out")


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(-2, 5), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(obj, prefix=()):
    """Every (path, container) inside a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@SETTINGS
@given(data=st.data())
def test_config_edits(tmp_path_factory, data):
    src = SAMPLES / "multi_input.keras"
    with zipfile.ZipFile(src) as z:
        config = json.loads(z.read("config.json"))
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    paths = list(_paths(config))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path = data.draw(st.sampled_from(paths), label="path")
        parent = config
        try:
            for key in path[:-1]:
                parent = parent[key]
            if data.draw(st.booleans(), label="delete"):
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(JSON_VALUES, label="value")
        except (KeyError, IndexError, TypeError):
            continue
    tmp = tmp_path_factory.mktemp("cfg")
    path = tmp / "edited.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, json.dumps(config).encode() if name == "config.json" else blob)
    check_conversion(path, tmp / "out")
