"""PyTorch -> Keras at parity for sequence models: nn.LSTM / nn.GRU / nn.RNN (layers,
directions, batch_first, final states used downstream, one RNN's states starting another),
nn.Embedding with padding_idx, nn.MultiheadAttention (batch_first either way, masks, the
attention weights), F.scaled_dot_product_attention, and nn.TransformerEncoder/Decoder
stacks (norm_first, relu/gelu)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def convert(module: nn.Module, example: tuple, out, **kwargs):
    """Convert with verification (raises ParityError above 1e-4) and return the result."""
    import ktorch

    result = ktorch.convert(
        module.eval() if isinstance(module, nn.Module) else module,
        out,
        example_inputs=example,
        to="keras",
        force=True,
        **kwargs,
    )
    assert result.parity is not None and result.parity.passed, result.parity
    assert result.parity.worst_rel <= 1e-4
    print(f"parity {out.name}: worst relative error {result.parity.worst_rel:.2e}")
    return result


def build_source(result) -> str:
    code = (result.out / "model.py").read_text()
    return code[code.index("\ndef build(") : code.index("\ndef load")]


def own_inputs_parity(result, module, arrays: list[np.ndarray]) -> float:
    """Worst relative error of the emitted Keras model against the module on given inputs."""
    with torch.no_grad():
        ref = module(*[torch.from_numpy(a) for a in arrays])
    ref = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else [ref])]
    got = result.keras_model(arrays if len(arrays) > 1 else arrays[0], training=False)
    got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
    return max(float(np.max(np.abs(r - g)) / max(1.0, float(np.max(np.abs(r))))) for r, g in zip(ref, got))


# -- recurrent ------------------------------------------------------------------------------
class Classifier(nn.Module):
    """Embedding(padding_idx) -> 2-layer bidirectional LSTM -> GRU -> Linear on the final
    states (h_n[-1] of the GRU, both directions of the LSTM's last layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3)
        self.gru = nn.GRU(12, 5, batch_first=True)
        self.head = nn.Linear(5 + 12, 4)

    def forward(self, ids):
        seq, (h, _) = self.lstm(self.embed(ids))
        _, hg = self.gru(seq)
        return self.head(torch.cat([hg[-1], h[-2], h[-1]], dim=1))


def test_lstm_gru_classifier(tmp_path):
    torch.manual_seed(0)
    module = Classifier()
    result = convert(module, (torch.randint(0, 30, (2, 9)),), tmp_path / "clf")
    code = build_source(result)
    # torch's LSTM (two biases) is layers.RNN(TorchLSTMCell(...)); its GRU a stock layers.GRU
    assert code.count("layers.Bidirectional(") == 2 and code.count("cell=TorchLSTMCell(units=6)") == 2
    assert "layers.GRU(units=5" in code and "layers.LSTM(" not in code
    assert 'name="lstm_l0"' in code and 'name="lstm_l1"' in code and 'name="gru"' in code
    assert result.manifest["inputs"][0]["range"] == [0, 30]
    # another batch size than the export's, with padding tokens: same numbers
    ids = np.random.default_rng(1).integers(0, 30, (5, 9)).astype("int64")
    ids[:, -3:] = 0  # padding tokens
    assert own_inputs_parity(result, module, [ids]) <= 1e-4


class Stack(nn.Module):
    def __init__(self, cls: type, layers: int, bidirectional: bool, batch_first: bool, **kwargs) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = cls(
            5,
            4,
            num_layers=layers,
            bidirectional=bidirectional,
            batch_first=batch_first,
            **kwargs,
        )

    def forward(self, x):
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        outs = [out, h.transpose(0, 1)]
        if isinstance(state, tuple):
            outs.append(state[1][-1])
        return tuple(outs)


@pytest.mark.parametrize(
    "cls, layers, bidirectional, batch_first, kwargs",
    [
        (nn.LSTM, 1, False, True, {}),
        (nn.LSTM, 2, True, False, {}),
        (nn.LSTM, 1, True, True, {"bias": False}),
        (nn.GRU, 2, False, True, {}),
        (nn.GRU, 1, True, False, {}),
        (nn.RNN, 2, True, True, {}),
        (nn.RNN, 1, False, True, {"nonlinearity": "relu"}),
    ],
    ids=[
        "lstm",
        "lstm2-bi-time-major",
        "bilstm-nobias",
        "gru2",
        "bigru-time-major",
        "rnn2-bi",
        "rnn-relu",
    ],
)
def test_recurrent_options(tmp_path, cls, layers, bidirectional, batch_first, kwargs):
    torch.manual_seed(1)
    module = Stack(cls, layers, bidirectional, batch_first, **kwargs).eval()
    example = (torch.randn(3, 6, 5),)
    if batch_first:
        result = convert(module, example, tmp_path / "rnn")
    else:
        # time-major: axis 0 is the time, the batch (axis 1) cannot stay symbolic, and the
        # conversion says so rather than writing a Keras Input that promises any batch
        import ktorch
        from ktorch.capture import BatchPinnedError

        with pytest.raises(BatchPinnedError, match=r"self\.rnn\(x\)"):
            ktorch.convert(module, tmp_path / "pinned", example_inputs=example, to="keras")
        assert not (tmp_path / "pinned").exists()
        # the way out the message names: a fixed-size program, whose Keras Input says its size
        program = torch.export.export(module, example)
        result = convert(program, None, tmp_path / "rnn")
        assert "batch_size=3" in (result.out / "model.py").read_text()
    code = build_source(result)
    # torch's two biases: LSTM and RNN are layers.RNN(TorchLSTMCell / TorchSimpleRNNCell), without
    # biases the stock layer; a GRU keeps both in its own (2, 3 * units) bias
    two_biases = cls is not nn.GRU and kwargs.get("bias", True)
    keras_cls = {nn.LSTM: "LSTM", nn.GRU: "GRU", nn.RNN: "SimpleRNN"}[cls]
    layer = f"cell=Torch{keras_cls}Cell(" if two_biases else f"layers.{keras_cls}("
    assert code.count(layer) == layers, code
    assert ("layers.Bidirectional(" in code) == bidirectional
    if kwargs.get("nonlinearity") == "relu":
        assert 'activation="relu"' in code


class Seq2Seq(nn.Module):
    """An encoder's final (h, c) starts the decoder; the decoder's states are returned
    batch-first."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.decoder = nn.LSTM(3, 6, num_layers=2, batch_first=True)
        self.gru_enc = nn.GRU(4, 5, batch_first=True, bidirectional=True)
        self.gru_dec = nn.GRU(3, 5, batch_first=True, bidirectional=True)

    def forward(self, src, tgt):
        _, state = self.encoder(src)
        out, (_h, c) = self.decoder(tgt, state)
        _, hg = self.gru_enc(src)
        out2, _ = self.gru_dec(tgt, hg)
        return out, c.permute(1, 0, 2), out2


def test_initial_states_from_another_rnn(tmp_path):
    torch.manual_seed(2)
    result = convert(Seq2Seq(), (torch.randn(2, 7, 4), torch.randn(2, 5, 3)), tmp_path / "s2s")
    code = build_source(result)
    assert "initial_state=[encoder_l0_h, encoder_l0_c]" in code
    assert "initial_state=[gru_enc_fw_h, gru_enc_bw_h]" in code


def test_raw_final_states_output_is_refused(tmp_path):
    from ktorch.graph.errors import UnsupportedOpError

    class Raw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(3, 4, batch_first=True)

        def forward(self, x):
            return self.gru(x)[1]

    with pytest.raises(UnsupportedOpError, match=r"h_n.transpose\(0, 1\)"):
        convert(Raw(), (torch.randn(2, 5, 3),), tmp_path / "raw")


# -- transformers ---------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, batch_first: bool, norm_first: bool, activation: str) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            16,
            4,
            32,
            dropout=0.1,
            activation=activation,
            batch_first=batch_first,
            norm_first=norm_first,
        )
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.encoder(x))


@pytest.mark.parametrize(
    "batch_first, norm_first, activation",
    [
        (True, False, "relu"),
        (True, True, "gelu"),
        (False, False, "gelu"),
        (False, True, "relu"),
    ],
    ids=["post-relu", "pre-gelu", "time-major-post-gelu", "time-major-pre-relu"],
)
def test_transformer_encoder(tmp_path, batch_first, norm_first, activation):
    torch.manual_seed(3)
    result = convert(
        Encoder(batch_first, norm_first, activation),
        (torch.randn(3, 5, 16),),
        tmp_path / "enc",
    )
    code = build_source(result)
    assert code.count("layers.MultiHeadAttention(") == 2 and "num_heads=4, key_dim=4" in code
    assert code.count("layers.LayerNormalization(") == 5
    assert 'name="encoder_layers_0_self_attn"' in code and 'name="encoder_layers_1_linear2"' in code


class Decoder(nn.Module):
    def __init__(self, norm_first: bool) -> None:
        super().__init__()
        layer = nn.TransformerDecoderLayer(
            16,
            2,
            24,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=norm_first,
        )
        self.decoder = nn.TransformerDecoder(layer, 2)

    def forward(self, tgt, memory):
        return self.decoder(tgt, memory)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post", "pre"])
def test_transformer_decoder(tmp_path, norm_first):
    torch.manual_seed(4)
    result = convert(
        Decoder(norm_first),
        (torch.randn(2, 4, 16), torch.randn(2, 6, 16)),
        tmp_path / "dec",
    )
    code = build_source(result)
    assert code.count("layers.MultiHeadAttention(") == 4


# -- attention ------------------------------------------------------------------------------
class SelfAttentionWeights(nn.Module):
    """Time-major self-attention that returns the head-averaged weights too."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4)

    def forward(self, x):
        return self.attn(x, x, x)


class PaddedCrossAttention(nn.Module):
    """Cross-attention over a memory with padding (a bool key_padding_mask input), kdim/vdim
    other than embed_dim, no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True, kdim=12, vdim=12, bias=False)

    def forward(self, x, memory, padding):
        return self.attn(x, memory, memory, key_padding_mask=padding, need_weights=False)[0]


class CausalAttention(nn.Module):
    """A causal attn_mask (nn.Transformer's -inf upper triangle), per-head weights returned."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(6))

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.mask, average_attn_weights=False)


def test_multihead_attention_time_major_with_weights(tmp_path):
    torch.manual_seed(5)
    result = convert(SelfAttentionWeights(), (torch.randn(6, 2, 16),), tmp_path / "mha_w")
    code = build_source(result)
    assert "return_attention_scores=True" in code and "keras.ops.mean(" in code
    assert result.parity.outputs[1].shape == (2, 6, 6)


def test_multihead_attention_key_padding_mask(tmp_path):
    torch.manual_seed(6)
    rng = np.random.default_rng(0)
    padding = np.zeros((3, 7), bool)
    padding[0, 5:] = True
    padding[2, 2:] = True
    inputs = [
        rng.normal(size=(3, 5, 16)).astype("float32"),
        rng.normal(size=(3, 7, 12)).astype("float32"),
        padding,
    ]
    example = tuple(torch.from_numpy(a) for a in inputs)
    result = convert(PaddedCrossAttention(), example, tmp_path / "mha_pad", inputs=inputs)
    code = build_source(result)
    assert "value_mask=" in code and "use_bias=False" in code
    # the mask matters: without it the numbers differ
    unmasked = result.keras_model([inputs[0], inputs[1], np.zeros_like(padding)], training=False)
    masked = result.keras_model(inputs, training=False)
    assert np.max(np.abs(np.asarray(masked) - np.asarray(unmasked))) > 1e-3


def test_multihead_attention_causal_mask(tmp_path):
    torch.manual_seed(7)
    result = convert(CausalAttention(), (torch.randn(2, 6, 16),), tmp_path / "mha_causal")
    code = build_source(result)
    assert "use_causal_mask=True" in code and "keras.ops.mean(" not in code
    assert result.parity.outputs[1].shape == (2, 4, 6, 6)


class Sdpa(nn.Module):
    def __init__(self, causal: bool, masked: bool) -> None:
        super().__init__()
        self.causal, self.masked = causal, masked
        self.qkv = nn.Linear(16, 48)

    def forward(self, x, keep):
        q, k, v = (t.unflatten(-1, (4, 4)).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        mask = keep[:, None, None, :] if self.masked else None
        return (
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal, scale=0.3)
            .transpose(1, 2)
            .flatten(2)
        )


@pytest.mark.parametrize("causal, masked", [(True, False), (False, True)], ids=["is_causal", "bool-mask"])
def test_scaled_dot_product_attention(tmp_path, causal, masked):
    torch.manual_seed(8)
    rng = np.random.default_rng(1)
    keep = np.ones((2, 5), bool)
    keep[1, 3:] = False
    inputs = [rng.normal(size=(2, 5, 16)).astype("float32"), keep]
    result = convert(
        Sdpa(causal, masked),
        tuple(torch.from_numpy(a) for a in inputs),
        tmp_path / "sdpa",
        inputs=inputs,
    )
    code = build_source(result)
    assert "layers.Softmax(" in code and "* 0.3" in code


# -- normalisation --------------------------------------------------------------------------
class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 12)
        self.rms = nn.RMSNorm(12, eps=1e-5)
        self.rms_default = nn.RMSNorm(12, elementwise_affine=False)
        self.ln = nn.LayerNorm(12, bias=False)

    def forward(self, x):
        h = self.proj(x)
        return self.rms(h), self.ln(self.rms_default(h * 3.0))


def test_rms_norm_and_layer_norm(tmp_path):
    torch.manual_seed(9)
    module = Norms()
    with torch.no_grad():
        module.rms.weight.normal_()
        module.ln.weight.normal_()
    result = convert(module, (torch.randn(2, 5, 8),), tmp_path / "norms")
    code = build_source(result)
    assert code.count("layers.RMSNormalization(") == 2 and "epsilon=1e-05" in code
    assert "epsilon=1.1920928955078125e-07" in code  # eps=None is float32's machine epsilon


class MaskedEncoder(nn.Module):
    """nn.TransformerEncoder with a causal mask and a bool src_key_padding_mask input."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(5))

    def forward(self, x, padding):
        return self.encoder(x, mask=self.causal, src_key_padding_mask=padding, is_causal=True)


def test_transformer_encoder_with_masks(tmp_path):
    torch.manual_seed(10)
    rng = np.random.default_rng(2)
    padding = np.zeros((3, 5), bool)
    padding[0, 3:] = True
    padding[2, 4:] = True
    inputs = [rng.normal(size=(3, 5, 16)).astype("float32"), padding]
    result = convert(
        MaskedEncoder(),
        tuple(torch.from_numpy(a) for a in inputs),
        tmp_path / "enc_mask",
        inputs=inputs,
    )
    code = build_source(result)
    assert code.count("use_causal_mask=True") == 2 and code.count("value_mask=") == 2


# -- other Keras backends -------------------------------------------------------------------
_RUN_ON_TORCH_BACKEND = """
import importlib.util, os, sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import keras
worst = 0.0
for directory in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("emitted", os.path.join(directory, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    io = np.load(os.path.join(directory, "io.npz"))
    ins = [io[k] for k in sorted(k for k in io if k.startswith("in"))]
    out = module.load()(ins if len(ins) > 1 else ins[0], training=False)
    ref = io["out0"]
    worst = max(worst, float(np.max(np.abs(keras.ops.convert_to_numpy(out) - ref)) / max(1.0, float(np.max(np.abs(ref))))))
print(keras.backend.backend(), worst)
"""


@pytest.mark.slow
def test_emitted_sequence_models_run_on_the_torch_backend(tmp_path):
    """The emitted LSTM/GRU classifier and masked transformer encoder use keras.ops only:
    the same files run on Keras's torch backend at parity."""
    import subprocess
    import sys

    rng = np.random.default_rng(3)
    padding = np.zeros((3, 5), bool)
    padding[1, 2:] = True
    cases = [
        (Classifier, [rng.integers(0, 30, (3, 9)).astype("int64")]),
        (MaskedEncoder, [rng.normal(size=(3, 5, 16)).astype("float32"), padding]),
    ]
    dirs = []
    for i, (cls, arrays) in enumerate(cases):
        torch.manual_seed(i)
        module = cls().eval()
        example = tuple(torch.from_numpy(a) for a in arrays)
        result = convert(module, example, tmp_path / cls.__name__, inputs=arrays)
        with torch.no_grad():
            ref = module(*example).numpy()
        np.savez(
            result.out / "io.npz",
            out0=ref,
            **{f"in{j}": a for j, a in enumerate(arrays)},
        )
        dirs.append(str(result.out))
    run = subprocess.run(
        [sys.executable, "-c", _RUN_ON_TORCH_BACKEND, *dirs],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    backend, worst = run.stdout.split()[-2:]
    assert backend == "torch" and float(worst) <= 1e-4, run.stdout


def test_decomposed_lstm_is_refused_with_the_way_out(tmp_path):
    from ktorch.graph.errors import UnsupportedOpError

    module = nn.LSTM(4, 3, batch_first=True).eval()
    program = torch.export.export(module, (torch.randn(2, 5, 4),)).run_decompositions()
    with pytest.raises(UnsupportedOpError, match="without decompositions"):
        convert(program, (), tmp_path / "decomposed")


class Seq2SeqTransformer(nn.Module):
    """nn.Transformer (encoder and decoder stacks, final norms) with a causal target mask."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.Transformer(16, 2, 1, 2, 24, dropout=0.1, batch_first=True, norm_first=True)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(4))

    def forward(self, src, tgt):
        return self.transformer(src, tgt, tgt_mask=self.causal, tgt_is_causal=True)


def test_nn_transformer(tmp_path):
    torch.manual_seed(11)
    result = convert(
        Seq2SeqTransformer(),
        (torch.randn(2, 6, 16), torch.randn(2, 4, 16)),
        tmp_path / "transformer",
    )
    code = build_source(result)
    assert code.count("layers.MultiHeadAttention(") == 5 and code.count("use_causal_mask=True") == 2


class ZeroStates(nn.Module):
    """The tutorial pattern: explicit zero initial states sized from the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 4, num_layers=2, batch_first=True)
        self.gru = nn.GRU(4, 3, batch_first=True)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        h0 = torch.zeros(2, x.size(0), 4)
        out, _ = self.lstm(x, (h0, torch.zeros(2, x.size(0), 4)))
        out, _ = self.gru(out, torch.zeros(1, x.size(0), 3))
        return self.fc(out[:, -1, :])


def test_zero_initial_states_made_in_forward(tmp_path):
    torch.manual_seed(12)
    result = convert(ZeroStates(), (torch.randn(3, 6, 5),), tmp_path / "zeros")
    assert "initial_state" not in build_source(result)


class DefaultCall(nn.Module):
    """mha(x, x, x) with its defaults (need_weights=True, weights unused) and a classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, ids):
        x = self.embed(ids)
        out, _ = self.attn(x, x, x)
        return self.fc(out.mean(dim=1))


def test_multihead_attention_default_call(tmp_path):
    torch.manual_seed(13)
    result = convert(DefaultCall(), (torch.randint(0, 40, (2, 6)),), tmp_path / "mha_default")
    code = build_source(result)
    assert "layers.MultiHeadAttention(" in code and "return_attention_scores" not in code
