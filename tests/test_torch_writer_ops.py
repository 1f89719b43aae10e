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


def test_gather_broadcasts_its_index(tmp_path):
    """numpy take_along_axis with an index broadcast over the other axes (a relative position
    table gathered by a fixed (1, n) index): torch.take_along_dim, which broadcasts like it."""
    from ktorch.graph import Graph, validate

    g = Graph("gathered")
    x = g.add_input("x", (None, 3, 5))
    index = np.array([[[4, 0, 0, 2]]], dtype=np.int64)  # (1, 1, 4) against (batch, 3, 5)
    idx = g.add_node("constant", [], {"trainable": False}, {"value": index}, source="index").output
    g.outputs = [g.add_node("gather", [x, idx], {"axis": 2}, source="gather").output]
    validate(g)
    data = np.arange(2 * 3 * 5, dtype="float32").reshape(2, 3, 5)
    np.testing.assert_array_equal(run_graph(g, tmp_path, data), np.take_along_axis(data, index, axis=2))
    assert "torch.take_along_dim(" in (tmp_path / "model.py").read_text()


def test_learned_scalar_stays_a_parameter(tmp_path):
    """A trained scalar (kecam's ZeroInitGain) is a parameter of the module, not a literal; a
    fixed scalar is written as its number."""
    from ktorch.graph import Graph, validate

    g = Graph("gained")
    x = g.add_input("x", (None, 4))
    gain = g.add_node("constant", [], {"trainable": True}, {"value": np.float32(0.75)}, source="gain").output
    half = g.add_node("constant", [], {"trainable": False}, {"value": np.float32(0.5)}, source="half").output
    y = g.add_node("mul", [x, gain], source="scaled").output
    g.outputs = [g.add_node("add", [y, half], source="shifted").output]
    validate(g)
    data = np.arange(8, dtype="float32").reshape(2, 4)
    np.testing.assert_allclose(run_graph(g, tmp_path, data), data * 0.75 + 0.5)
    code = (tmp_path / "model.py").read_text()
    assert "nn.Parameter(torch.zeros(()))" in code and "+ 0.5" in code, code


@pytest.mark.parametrize("op", ["all", "any"])
def test_all_any_read_from_torch(op):
    """torch.all / torch.any over an axis (Gemma's mask checks) read as min / max of booleans."""
    from ktorch.translate.torch_reader import read_program

    class M(torch.nn.Module):
        def forward(self, x):
            return getattr(torch, op)(x > 0, dim=1).float()

    program = torch.export.export(M(), (torch.randn(2, 3, 4),))
    graph = read_program(program)
    reduce = [n for n in graph.nodes if n.op == "reduce"]
    assert len(reduce) == 1 and reduce[0].attrs["mode"] == {"all": "min", "any": "max"}[op], graph.nodes
    assert reduce[0].attrs["axes"] == (1,) and reduce[0].inputs[0].dtype == "bool"
