"""PyTorch writer translators for op kinds no Keras layer produces (they come from the
PyTorch and ONNX readers): a hand-built graph is rendered, written, imported and run
against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def run_graph(graph, tmp_path, x: np.ndarray) -> np.ndarray:
    from ktorch.translate.torch_writer import writer
    from ktorch.verify.runners import import_emitted

    out = writer.render(graph, source="hand-built", version="test")
    writer.write(out, tmp_path)
    net = import_emitted(tmp_path).load()
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("axis, shift", [(1, 2), (2, -1), (2, 5)])
def test_roll(tmp_path, axis, shift):
    from ktorch.graph import Graph, validate

    g = Graph("rolled")
    x = g.add_input("x", (None, 4, 6))
    g.outputs = [g.add_node("roll", [x], {"axis": axis, "shift": shift}, source="roll").output]
    validate(g)
    data = np.arange(2 * 4 * 6, dtype="float32").reshape(2, 4, 6)
    np.testing.assert_array_equal(run_graph(g, tmp_path, data), np.roll(data, shift, axis=axis))
    assert "torch.roll(" in (tmp_path / "model.py").read_text()


def test_tile(tmp_path):
    from ktorch.graph import Graph, validate

    g = Graph("tiled")
    x = g.add_input("x", (None, 2, 3))
    g.outputs = [g.add_node("tile", [x], {"reps": (1, 3, 2)}, source="tile").output]
    validate(g)
    data = np.arange(2 * 2 * 3, dtype="float32").reshape(2, 2, 3)
    np.testing.assert_array_equal(run_graph(g, tmp_path, data), np.tile(data, (1, 3, 2)))
    assert "x.repeat(1, 3, 2)" in (tmp_path / "model.py").read_text()
