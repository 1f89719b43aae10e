"""ATen ops that models people have use (F.normalize, RoBERTa's position ids, GPT-Neo's
attention, CLIP's text pooler, LeViT's reshape_as, BLOOM's baddbmm, MobileBERT's pad): each in a tiny nn.Module, converted to
Keras with verification at batch 2 and checked again at batch 3. Inputs are scaled so that
comparisons, ties (argmax) and signs are all exercised."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def steps(x):
    """0, 1 or 2 per element: many ties, for argmax / argmin / comparisons."""
    return (x > 0.5).float() + (x > 1).float()


CASES = {
    "normalize": lambda x: F.normalize(x, dim=-1),
    "vector_norm_ord1_two_dims": lambda x: torch.linalg.vector_norm(x, ord=1, dim=(1, 2)),
    "vector_norm_inf_keepdim": lambda x: torch.linalg.vector_norm(x, ord=float("inf"), dim=-1, keepdim=True),
    "vector_norm_minus_inf": lambda x: torch.linalg.vector_norm(x, ord=float("-inf"), dim=1),
    "vector_norm_ord3": lambda x: torch.linalg.vector_norm(x, ord=3, dim=1),
    "vector_norm_ord0": lambda x: torch.linalg.vector_norm(torch.relu(x), ord=0, dim=2),
    "reshape_as": lambda x: x.reshape(x.shape[0], -1).reshape_as(x) * 2,
    "expand_as": lambda x: x[:, :, :1].expand_as(x) + x,
    "ne": lambda x: (steps(x) != 1).float(),
    "ne_scalar_int": lambda x: steps(x).long().ne(1).float(),
    "eq_tensors": lambda x: ((x > 0.1) == (x < 0.5)).float(),
    "lt_le_ge": lambda x: (x < 0.2).float() + (x <= 0.5).float() + (x >= -0.3).float(),
    "cumsum": lambda x: torch.cumsum(x, dim=1),
    "cumsum_int_to_int64": lambda x: torch.cumsum((x > 0).int(), dim=-1).float(),
    "cumsum_dtype": lambda x: torch.cumsum(x > 0, dim=2, dtype=torch.float32),
    "where_broadcast": lambda x: torch.where(x > 0, x, torch.linspace(-1, 1, 6).reshape(1, 1, 6)),
    "where_scalar": lambda x: torch.where(x[:, :1] > 0, x, torch.finfo(torch.float32).min),
    "argmax_first_of_ties": lambda x: torch.argmax(steps(x), dim=-1).float(),
    "argmin_keepdim": lambda x: torch.argmin(steps(x), dim=1, keepdim=True).float(),
    "gather": lambda x: torch.gather(x, 2, (x[:, :, :3] > 0).long() * 2),
    "gather_smaller_index": lambda x: torch.gather(x, 1, (x[:, :2, :4] > 0).long() * 3),
    # KerasHub Gemma: rows with nothing attended are wiped with zeros_like (some rows are all <= 0)
    "where_zeros_like": lambda x: torch.where(
        torch.all(x[..., :2] <= 0.5, dim=-1, keepdim=True), torch.zeros_like(x), x
    ),
    "ones_like_full_like": lambda x: x * torch.ones_like(x) + torch.full_like(x, 0.25),
    "baddbmm": lambda x: torch.baddbmm(x[:, :, :5], x, x.transpose(1, 2)),
    "baddbmm_alpha_beta": lambda x: torch.baddbmm(x[:, :, :5], x, x.transpose(1, 2), beta=0.5, alpha=0.25),
    # beta 0: torch ignores `self`, so NaN in it must not reach the result
    "baddbmm_beta0_ignores_nan": lambda x: torch.baddbmm(
        torch.log(x[:, :, :5] - 100.0), x, x.transpose(1, 2), beta=0.0, alpha=2.0
    ),
    # MobileBERT's trigram input: F.pad lists the batch and channel axes with zero padding
    "pad_sequence_axis": lambda x: F.pad(x, (0, 0, 0, 1, 0, 0)) + F.pad(x, (0, 0, 1, 0)),
    # KerasHub Qwen3: logical_and(int padding mask, bool sliding window); non-bool counts as != 0
    "logical_and_int_bool": lambda x: torch.logical_and(steps(x).int(), x[:, :1] < 1).float() * x,
    "logical_and_int_int": lambda x: torch.logical_and(steps(x).long(), (x > 0).int()).float(),
}


class Op(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return CASES[self.name](self.lin(x))


@pytest.mark.parametrize("name", list(CASES))
def test_op(name, tmp_path):
    import ktorch
    from ktorch.verify.torch_source import check_torch_to_keras

    torch.manual_seed(0)
    module = Op(name).eval()
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1)) * 2
    result = ktorch.convert(module, tmp_path / name, example_inputs=(x,), to="keras", force=True)
    assert result.parity.passed and result.parity.worst_rel <= 1e-5, result.parity
    more = np.random.default_rng(3).standard_normal((3, 5, 6)).astype("float32") * 2
    parity = check_torch_to_keras(
        module, tmp_path / name, inputs=[more], manifest=result.manifest, keras_model=result.keras_model
    )
    assert parity.passed and parity.worst_rel <= 1e-5, parity


def test_argmax_takes_the_first_of_equal_elements(tmp_path):
    """Every row all equal: torch answers 0, and so must the emitted model."""
    import ktorch

    module = Op("argmax_first_of_ties").eval()
    with torch.no_grad():
        module.lin.weight.zero_()
        module.lin.bias.fill_(2.0)
    result = ktorch.convert(module, tmp_path / "ties", example_inputs=(torch.randn(2, 5, 6),), to="keras", force=True)
    out = np.asarray(result.keras_model(np.zeros((2, 5, 6), "float32")))
    assert out.shape == (2, 5) and (out == 0).all()
    assert "arg_reduce(" in (tmp_path / "ties" / "model.py").read_text()


def test_a_tensor_repeated_by_the_batch_size_is_one_ktorch_line(tmp_path):
    """x.repeat(B, 1, 1) on data (not a constant): refused naming the op, not a raw TypeError."""
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    class Tiled(nn.Module):
        def forward(self, x):
            return x.repeat(x.shape[0], 1, 1)

    with pytest.raises(UnsupportedOpError) as err:
        ktorch.convert(Tiled(), tmp_path / "tiled", example_inputs=(torch.randn(2, 5, 6),), to="keras", force=True)
    assert "(aten.repeat): repeat (BATCH, 1, 1) of a rank-3 tensor (a repeat count that depends on the batch)" in str(
        err.value
    )
