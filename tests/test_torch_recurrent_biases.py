"""PyTorch nn.LSTM / nn.RNN -> Keras with torch's two biases kept apart (issue 14): the emitted
`layers.RNN(TorchLSTMCell(...))` / `layers.RNN(TorchSimpleRNNCell(...))` hold bias_ih as `bias` and
bias_hh as a trainable `recurrent_bias`, so inference, the trainable-parameter count, training
steps and the migrated optimizer state are torch's, on TensorFlow and on the torch backend, in
Bidirectional, through model.keras and back through the Keras reader. A stock layers.LSTM holds
b_ih + b_hh: exact for inference, not for training (shown below); a Keras-sourced LSTM (one bias)
stays a stock layer both ways."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_compile_to_keras import RTOL, run_parity

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import ktorch  # noqa: E402
from ktorch.graph import Graph  # noqa: E402
from ktorch.graph.errors import UnsupportedOpError  # noqa: E402
from ktorch.translate.keras_writer import recurrent as keras_recurrent  # noqa: E402
from ktorch.verify.runners import import_emitted  # noqa: E402

nn = torch.nn


def distinct_biases(module: nn.Module, seed: int) -> nn.Module:
    """Give every bias_ih / bias_hh of the module's RNNs its own random values (torch initialises
    both from the same uniform range; here they clearly differ, and neither is zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".bias_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (0.3 if "bias_hh" in name else -0.2))
    return module


class TextRNN(nn.Module):
    """Embedding -> bidirectional LSTM -> tanh RNN (two biases each) -> Linear on the last step;
    the embedding is the frozen group of the training tests."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
        self.rnn = nn.RNN(10, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)
        distinct_biases(self, seed=3)

    def forward(self, tokens):
        seq, _ = self.lstm(self.embed(tokens))
        out, _ = self.rnn(seq)
        return self.fc(out[:, -1])

    frozen = "embed"
    regularized = "fc.weight"

    @staticmethod
    def batch(rng, n=4):
        return rng.integers(0, 20, size=(n, 6)).astype("int64"), rng.integers(0, 3, size=(n,)).astype("int64")


class Stacked(nn.Module):
    """A 2-layer LSTM (its final states used), a relu nn.RNN, and a backward-only use of the
    bidirectional RNN's last state."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 6, num_layers=2, batch_first=True)
        self.rnn = nn.RNN(6, 3, batch_first=True, nonlinearity="relu", bidirectional=True)
        distinct_biases(self, seed=4)

    def forward(self, x):
        seq, (h, c) = self.lstm(x)
        out, hr = self.rnn(seq)
        return out, h[-1] + c[-1], hr[-1]


class Sequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def _keras_cells(model) -> list:
    cells = []
    for layer in model.layers:
        inner = (
            [layer.forward_layer, layer.backward_layer] if isinstance(layer, keras.layers.Bidirectional) else [layer]
        )
        cells += [getattr(lay, "cell", None) for lay in inner if getattr(lay, "cell", None) is not None]
    return cells


def test_two_biases_inference_and_parameter_count(tmp_path: Path) -> None:
    """Distinct nonzero biases, uni- and bidirectional, stacked, relu: parity at 1e-5, `bias` and
    `recurrent_bias` are torch's bias_ih and bias_hh, and the trainable-parameter count is torch's."""
    torch.manual_seed(0)
    module = Stacked().eval()
    x = torch.randn(3, 7, 5)
    result = ktorch.convert(module, tmp_path / "out", to="keras", example_inputs=(x,))
    assert result.parity.passed and result.parity.worst_rel <= 1e-5, result.parity
    code = (tmp_path / "out" / "model.py").read_text()
    assert "class TorchLSTMCell(layers.LSTMCell):" in code and "class TorchSimpleRNNCell(layers.SimpleRNNCell):" in code
    build = " ".join(code[code.index("def build") :].split())  # one line, as the formatter may wrap it
    assert build.count("layers.RNN( cell=TorchLSTMCell(units=6), return_sequences=True") == 2  # a layer each
    assert 'layers.Bidirectional( layer=layers.RNN( cell=TorchSimpleRNNCell(units=3, activation="relu")' in build
    assert "layers.LSTM(" not in code and "layers.SimpleRNN(" not in code

    source = sum(p.numel() for p in module.parameters())
    assert result.manifest["source"]["trainable_parameters"] == source
    assert result.manifest["model"]["trainable_parameters"] == source
    model = import_emitted(tmp_path / "out").load()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == source
    cells = _keras_cells(model)
    assert [type(c).__name__ for c in cells] == ["TorchLSTMCell"] * 2 + ["TorchSimpleRNNCell"] * 2
    torch_biases = [
        (module.lstm.bias_ih_l0, module.lstm.bias_hh_l0),
        (module.lstm.bias_ih_l1, module.lstm.bias_hh_l1),
        (module.rnn.bias_ih_l0, module.rnn.bias_hh_l0),
        (module.rnn.bias_ih_l0_reverse, module.rnn.bias_hh_l0_reverse),
    ]
    for cell, (b_ih, b_hh) in zip(cells, torch_biases):
        np.testing.assert_array_equal(np.asarray(cell.bias), b_ih.detach().numpy())
        np.testing.assert_array_equal(np.asarray(cell.recurrent_bias), b_hh.detach().numpy())

    # another batch size, through the emitted model
    x = torch.randn(5, 7, 5)
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    got = model(x.numpy(), training=False)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-5)


class Frozen(nn.Module):
    """A frozen bidirectional LSTM and a frozen bidirectional GRU before a trainable RNN."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(6, 3, batch_first=True, bidirectional=True)
        self.rnn = nn.RNN(6, 2, batch_first=True)
        for p in [*self.lstm.parameters(), *self.gru.parameters()]:
            p.requires_grad_(False)

    def forward(self, x):
        return self.rnn(self.gru(self.lstm(x)[0])[0])[0]


def test_frozen_recurrent_layers(tmp_path: Path) -> None:
    """Keras 3 does not pass a Bidirectional's trainable=False on to the layers it wraps (nor an
    RNN's to its cell): the inner layer / cell says it too, so the emitted model trains what torch
    trains (the trainable counts agree), and the Keras reader reads them back as frozen."""
    torch.manual_seed(5)
    module = Frozen().eval()
    result = ktorch.convert(module, tmp_path / "out", to="keras", example_inputs=(torch.randn(2, 5, 4),))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert result.manifest["source"]["trainable_parameters"] == trainable == 2 * (6 + 2 + 2)
    assert result.manifest["model"]["trainable_parameters"] == trainable
    build = " ".join((tmp_path / "out" / "model.py").read_text().split())
    assert "TorchLSTMCell(units=3, trainable=False)" in build and "layers.GRU(units=3, trainable=False" in build
    back = ktorch.convert(tmp_path / "out", tmp_path / "back")
    code = (back.out / "model.py").read_text()
    assert "self.lstm.requires_grad_(False)" in code and "self.gru.requires_grad_(False)" in code
    assert "self.rnn.requires_grad_(False)" not in code


def test_model_keras_and_torch_backend(tmp_path: Path) -> None:
    """model.keras saved from the emitted model reloads (the cells are registered) with the same
    weights and outputs; on KERAS_BACKEND=torch, where layers.LSTM would run the backend's fused
    lstm (bias alone), the emitted model matches torch too, and every bias takes a gradient."""
    torch.manual_seed(1)
    module = TextRNN().eval()
    tokens = torch.randint(0, 20, (3, 6))
    ktorch.convert(module, tmp_path / "out", to="keras", example_inputs=(tokens,))
    with torch.no_grad():
        expected = module(tokens).numpy()
    model = import_emitted(tmp_path / "out").load()
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    assert [type(c).__name__ for c in _keras_cells(again)] == ["TorchLSTMCell", "TorchLSTMCell", "TorchSimpleRNNCell"]
    assert len(again.trainable_weights) == len(model.trainable_weights) == 1 + 4 * 2 + 4 + 2
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(again(tokens.numpy())), expected, rtol=1e-5, atol=1e-5)

    np.save(tmp_path / "tokens.npy", tokens.numpy())
    np.save(tmp_path / "expected.npy", expected)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["KERAS_BACKEND"] = "torch"
        sys.path.insert(0, {str(tmp_path / "out")!r})
        import numpy as np, torch, keras, model
        assert keras.backend.backend() == "torch"
        net = model.load()
        tokens = np.load({str(tmp_path / "tokens.npy")!r})
        out = net(tokens, training=True)
        np.testing.assert_allclose(out.detach().cpu().numpy(), np.load({str(tmp_path / "expected.npy")!r}),
                                   rtol=1e-5, atol=1e-5)
        out.square().sum().backward()
        biases = [v for v in net.trainable_weights if v.path.endswith(("/bias", "/recurrent_bias")) and "fc" not in v.path]
        assert len(biases) == 6, [v.path for v in biases]
        assert all(v.value.grad is not None and v.value.grad.abs().sum() > 0 for v in biases)
        print("torch backend ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch backend ok" in done.stdout


TRAINING = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
}


@pytest.mark.slow  # ~30 s each; the fast suite trains an LSTM in test_verify_train_steps (text-adam)
@pytest.mark.parametrize("optimizer", list(TRAINING))
def test_five_training_steps_resume_from_torch_state(tmp_path: Path, optimizer: str) -> None:
    """Two torch steps, converted with the optimizer's state (bias_ih and bias_hh migrated slot by
    slot, each to its own Keras weight), then five more steps on both sides: the loss and every
    weight agree at 1e-4, with L2 on one weight and a frozen embedding."""
    out = run_parity(tmp_path, TextRNN, TRAINING[optimizer], pre_steps=2, steps=5)
    training = out["result"].manifest["training"]
    assert not any("no optimizer state" in w for w in training.get("warnings", []))
    migrated = training["optimizer_state"]["weights"]
    # the bidirectional LSTM's forward and backward bias / recurrent_bias, the RNN's two biases
    assert {"lstm/2", "lstm/3", "lstm/6", "lstm/7", "rnn/2", "rnn/3"} <= set(migrated)


def test_one_bias_emission_trains_differently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the two-bias cells fix: the previous emission (a stock layers.LSTM / SimpleRNN holding
    b_ih + b_hh) converts at inference parity, but has fewer trainable parameters than torch, and
    one SGD step already moves its bias half as far as torch moves b_ih + b_hh (each of torch's
    biases takes the whole gradient)."""
    monkeypatch.setattr(keras_recurrent, "two_biases", lambda node: False)
    torch.manual_seed(2)
    net = TextRNN()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    x, y = TextRNN.batch(rng)
    result = ktorch.convert(net.eval(), tmp_path / "old", to="keras", example_inputs=(torch.from_numpy(x),),
                            optimizer=opt, loss=nn.CrossEntropyLoss())  # fmt: skip
    assert result.parity.passed  # inference is exact
    code = (tmp_path / "old" / "model.py").read_text()
    assert "TorchLSTMCell" not in code and "layers.LSTM(units=5" in code
    source = sum(p.numel() for p in net.parameters())
    assert result.manifest["model"]["trainable_parameters"] == source - 2 * 4 * 5 - 4  # one bias per cell lost

    train = import_emitted(tmp_path / "old", "train.py")
    sys.path.insert(0, str(tmp_path / "old"))
    try:
        keras_model = train.load()
    finally:
        sys.path.remove(str(tmp_path / "old"))
    pairs = {"rnn": (net.rnn.bias_ih_l0, net.rnn.bias_hh_l0), "lstm": (net.lstm.bias_ih_l0, net.lstm.bias_hh_l0)}
    before = {k: (a + b).detach().numpy() for k, (a, b) in pairs.items()}
    net.train()
    opt.zero_grad()
    nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    opt.step()
    keras_model.train_on_batch(x, y)
    keras_biases = {
        "rnn": keras_model.get_layer("rnn").cell.bias,
        "lstm": keras_model.get_layer("lstm").forward_layer.cell.bias,
    }
    for k, (a, b) in pairs.items():
        summed = (a + b).detach().numpy()
        got = np.asarray(keras_biases[k])
        np.testing.assert_allclose(got - before[k], (summed - before[k]) / 2, rtol=1e-3, atol=1e-7)  # half torch's step
        assert np.abs(got - summed).max() / np.abs(summed).max() > 10 * RTOL  # so the old code fails training parity


@pytest.mark.slow  # ~30 s: four conversions
def test_round_trips_keep_the_layer_kinds(tmp_path: Path) -> None:
    """PyTorch -> Keras -> PyTorch -> Keras: the Keras reader reads both biases of the emitted
    cells back as trainable (nn.LSTM / nn.RNN with no frozen bias_hh), and they come out as the
    two-bias cells again; a Keras LSTM / SimpleRNN (one bias) stays a stock layer through PyTorch."""
    torch.manual_seed(3)
    module = TextRNN().eval()
    tokens = torch.randint(0, 20, (2, 6))
    there = ktorch.convert(module, tmp_path / "keras", to="keras", example_inputs=(tokens,))
    back = ktorch.convert(there.out, tmp_path / "torch")
    assert back.parity.passed and back.parity.worst_rel <= 1e-5
    code = (back.out / "model.py").read_text()
    assert "nn.LSTM(6, 5, batch_first=True, bidirectional=True)" in code and "nn.RNN(10, 4, batch_first=True)" in code
    assert "requires_grad_(False)" not in code.replace("self.embed.requires_grad_(False)", "")
    state = back.out / "model.safetensors"
    from safetensors.numpy import load_file

    weights = load_file(str(state))
    np.testing.assert_array_equal(weights["lstm.bias_hh_l0_reverse"], module.lstm.bias_hh_l0_reverse.detach().numpy())
    np.testing.assert_array_equal(weights["rnn.bias_hh_l0"], module.rnn.bias_hh_l0.detach().numpy())
    again = ktorch.convert(back.out, tmp_path / "keras2", to="keras")
    code = (again.out / "model.py").read_text()
    assert "layers.RNN(cell=TorchLSTMCell(units=5)" in code and "layers.RNN(cell=TorchSimpleRNNCell(units=4)" in code

    L = keras.layers
    inputs = keras.Input((6, 4))
    x = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bilstm")(inputs)
    outputs = L.SimpleRNN(3, name="rnn")(x)
    kmodel = keras.Model(inputs, outputs, name="one_bias")
    kmodel.set_weights(
        [np.random.default_rng(0).normal(0, 0.5, w.shape).astype("float32") for w in kmodel.get_weights()]
    )
    kmodel.save(tmp_path / "one_bias.keras")
    to_torch = ktorch.convert(tmp_path / "one_bias.keras", tmp_path / "one_bias_torch")
    assert "bias_hh" in (to_torch.out / "model.py").read_text()  # frozen at zero: the source has one bias
    to_keras = ktorch.convert(to_torch.out, tmp_path / "one_bias_keras", to="keras")
    code = (to_keras.out / "model.py").read_text()
    assert "layers.LSTM(units=5" in code and "layers.SimpleRNN(units=3" in code and "Torch" not in code
    assert to_keras.manifest["model"]["trainable_parameters"] == kmodel.count_params()


def test_cell_regularizers_are_read(tmp_path: Path) -> None:
    """Regularizers inside an RNN's cell and a Bidirectional's layer are read (not silently
    dropped): TorchLSTMCell's bias_regularizer covers both biases, in both directions; a stock
    LSTMCell's bias_regularizer its one bias."""
    out = tmp_path / "cells"
    ktorch.convert(Sequence().eval(), out, to="keras", example_inputs=(torch.randn(2, 5, 4),))
    cell = import_emitted(out).TorchLSTMCell  # importing model.py registers it
    L = keras.layers
    l2 = keras.regularizers.L2(0.01)
    inputs = keras.Input((5, 4))
    x = L.Bidirectional(L.RNN(cell(3, bias_regularizer=l2), return_sequences=True), name="bi")(inputs)
    x = L.RNN(L.LSTMCell(2, kernel_regularizer=l2, bias_regularizer=l2), name="stock")(x)
    kmodel = keras.Model(inputs, x, name="regularized")
    kmodel.set_weights(
        [np.random.default_rng(1).normal(0, 0.5, w.shape).astype("float32") for w in kmodel.get_weights()]
    )
    kmodel.save(tmp_path / "regularized.keras")
    result = ktorch.convert(tmp_path / "regularized.keras", tmp_path / "regularized_torch")
    regularizers = result.manifest["training"]["regularizers"]
    expected = {f"bi:{b}" for b in ("bias_ih", "bias_hh", "bias_ih_reverse", "bias_hh_reverse")}
    expected |= {"stock:weight_ih", "stock:bias_ih"}
    assert set(regularizers) == expected, regularizers
    assert all(spec == {"l1": 0.0, "l2": 0.01} for spec in regularizers.values())
    assert not result.manifest["training"].get("dropped")


def test_gru_without_reset_after_refuses_a_recurrent_bias() -> None:
    """The graph's GRU with reset_after=False is Keras's, with one bias: its bias_hh is a zero
    (graph/ops/sequence.py). The Keras writer refuses a nonzero one rather than fold it anywhere,
    and takes the zero."""
    g = Graph("gru")
    x = g.add_input("x", (None, 4, 3))
    units = 2
    rng = np.random.default_rng(0)
    weights = {
        "weight_ih": rng.normal(size=(3 * units, 3)).astype("float32"),
        "weight_hh": rng.normal(size=(3 * units, units)).astype("float32"),
        "bias_ih": rng.normal(size=(3 * units,)).astype("float32"),
        "bias_hh": rng.normal(size=(3 * units,)).astype("float32"),
    }
    attrs = {
        "units": units, "activation": {"op": "tanh", "attrs": {}}, "recurrent_activation": {"op": "sigmoid", "attrs": {}},
        "use_bias": True, "reset_after": False, "direction": "forward", "return_sequences": False,
        "return_state": False, "zero_output_for_mask": False, "masked": False,
    }  # fmt: skip
    node = g.add_node("gru", [x], attrs, weights, name="gru")
    with pytest.raises(UnsupportedOpError, match="reset_after=False and a recurrent bias"):
        keras_recurrent.keras_cell_weights(node)
    node.weights["bias_hh"] = np.zeros_like(weights["bias_hh"])  # a fixed zero (a Keras source): one bias
    assert len(keras_recurrent.keras_cell_weights(node)) == 3
