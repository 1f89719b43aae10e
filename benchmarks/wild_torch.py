"""PyTorch -> Keras on models people have: timm and Hugging Face models built from tiny
configs with seeded random weights, passed to `ktorch.convert(..., to="keras")` as they
come (no wrapper), verified at batch 2 and again at batch 3. Not a test: a measurement.

    python benchmarks/wild_torch.py                  # every model, one line each, then the pass rate
    python benchmarks/wild_torch.py --only bert,vit  # some of them
    python benchmarks/wild_torch.py --dynamic        # also a sizes column: dynamic="auto", verified at 2 sizes

Each line: the worst relative error at batch 2 and 3, the Keras trainable-parameter count
against the source's, the transposes in the emitted model (and per attention layer: source
modules named *Attention/*Attn holding no other one), and the conversion time.

BatchNorm running statistics and layer-scale parameters (timm initialises them to 1e-6 or
1e-5) are randomised too, so that parity is not vacuous. Every failure prints as one line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch  # before tensorflow (torch.export needs Triton loaded first)

SEQ = 8
IMAGE = 32


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded noise on every parameter (layer scales start at 1e-6) and random BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def tokens(vocab: int = 99, batch: int = 2, mask: bool = False) -> Any:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, SEQ), generator=gen)
    if not mask:
        return (ids,)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, SEQ, dtype=torch.int64)}


def image(channels: int = 3, size: int = IMAGE, batch: int = 2) -> tuple:
    return (torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1)),)


# -- Hugging Face, tiny configs ---------------------------------------------------------------
TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


VISION = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=IMAGE, patch_size=8
)


def hf(name: str, **extra: Any) -> Callable[[], tuple[torch.nn.Module, Any]]:
    def build() -> tuple[torch.nn.Module, Any]:
        import transformers as tf

        torch.manual_seed(0)
        if name == "bert":
            return tf.BertModel(tf.BertConfig(**TEXT)), tokens(mask=True)
        if name == "roberta":
            return tf.RobertaModel(tf.RobertaConfig(**TEXT, pad_token_id=1)), tokens(mask=True)
        if name == "albert":
            return tf.AlbertModel(tf.AlbertConfig(**TEXT, embedding_size=16)), tokens()
        if name == "electra":
            return tf.ElectraModel(tf.ElectraConfig(**TEXT, embedding_size=16)), tokens()
        if name == "gpt2":
            return tf.GPT2LMHeadModel(
                tf.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
            ), tokens()
        if name == "gpt_neo":
            cfg = tf.GPTNeoConfig(
                vocab_size=99,
                hidden_size=32,
                num_layers=2,
                num_heads=4,
                attention_types=[[["global", "local"], 1]],
                window_size=4,
                max_position_embeddings=64,
            )
            return tf.GPTNeoModel(cfg), tokens()
        if name == "opt":
            cfg = tf.OPTConfig(
                vocab_size=99,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                ffn_dim=37,
                max_position_embeddings=64,
                word_embed_proj_dim=32,
            )
            return tf.OPTModel(cfg), tokens()
        if name in ("llama", "mistral", "qwen2"):
            cls = {
                "llama": (tf.LlamaConfig, tf.LlamaModel),
                "mistral": (tf.MistralConfig, tf.MistralModel),
                "qwen2": (tf.Qwen2Config, tf.Qwen2Model),
            }[name]
            cfg = cls[0](**TEXT, num_key_value_heads=2)
            return cls[1](cfg), tokens()
        if name == "phi":
            return tf.PhiModel(tf.PhiConfig(**TEXT)), tokens()
        if name == "t5_encoder":
            cfg = tf.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
            return tf.T5EncoderModel(cfg), tokens()
        if name == "bart":
            cfg = tf.BartConfig(
                vocab_size=99,
                d_model=32,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=37,
                decoder_ffn_dim=37,
                max_position_embeddings=64,
            )
            return tf.BartModel(cfg), tokens()
        if name == "whisper_encoder":
            cfg = tf.WhisperConfig(
                vocab_size=99,
                d_model=32,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=37,
                decoder_ffn_dim=37,
                num_mel_bins=8,
                max_source_positions=16,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                decoder_start_token_id=1,
            )
            return tf.WhisperModel(cfg).get_encoder(), (
                torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1)),
            )
        if name == "wav2vec2":
            cfg = tf.Wav2Vec2Config(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                conv_dim=(16, 16),
                conv_stride=(5, 2),
                conv_kernel=(10, 3),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4,
            )
            return tf.Wav2Vec2Model(cfg), (torch.randn(2, 400, generator=torch.Generator().manual_seed(1)),)
        if name == "clip_text":
            cfg = tf.CLIPTextConfig(
                vocab_size=99,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                max_position_embeddings=64,
            )
            return tf.CLIPTextModel(cfg), tokens()
        if name == "clip_vision":
            cfg = tf.CLIPVisionConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                image_size=IMAGE,
                patch_size=8,
            )
            return tf.CLIPVisionModel(cfg), image()
        if name == "vit":
            return tf.ViTModel(tf.ViTConfig(**VISION)), image()
        if name == "deit":
            return tf.DeiTModel(tf.DeiTConfig(**VISION)), image()
        if name == "mobilevit":
            cfg = tf.MobileViTConfig(
                image_size=64,
                hidden_sizes=[16, 24, 32],
                neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                num_attention_heads=2,
            )
            return tf.MobileViTModel(cfg), image(size=64)
        if name == "convnext":
            cfg = tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=IMAGE)
            return tf.ConvNextModel(cfg), image()
        if name == "swin":
            cfg = tf.SwinConfig(
                image_size=IMAGE, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4
            )
            return tf.SwinModel(cfg), image()
        if name == "distilbert":
            cfg = tf.DistilBertConfig(
                vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64
            )
            return tf.DistilBertModel(cfg), tokens(mask=True)
        if name == "mobilebert":
            cfg = tf.MobileBertConfig(**TEXT, embedding_size=16, intra_bottleneck_size=16, num_feedforward_networks=2)
            return tf.MobileBertModel(cfg), tokens(mask=True)
        if name == "falcon":
            cfg = tf.FalconConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
            return tf.FalconModel(cfg), tokens()
        if name == "gptj":
            cfg = tf.GPTJConfig(
                vocab_size=99,
                n_embd=32,
                n_layer=2,
                n_head=4,
                rotary_dim=4,
                n_positions=64,
                bos_token_id=1,
                eos_token_id=2,
            )
            return tf.GPTJModel(cfg), tokens()
        if name == "bloom":
            return tf.BloomModel(tf.BloomConfig(vocab_size=99, hidden_size=32, n_layer=2, n_head=4)), tokens()
        if name == "segformer":
            cfg = tf.SegformerConfig(
                num_encoder_blocks=2,
                depths=[1, 1],
                sr_ratios=[2, 1],
                hidden_sizes=[16, 32],
                num_attention_heads=[1, 2],
                decoder_hidden_size=32,
                patch_sizes=[7, 3],
                strides=[4, 2],
                mlp_ratios=[2, 2],
            )
            return tf.SegformerForSemanticSegmentation(cfg), image(size=64)
        raise KeyError(name)

    return build


def timm_model(name: str, size: int = IMAGE, **kwargs: Any) -> Callable[[], tuple[torch.nn.Module, Any]]:
    def build() -> tuple[torch.nn.Module, Any]:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, **kwargs), image(size=size)

    return build


def timm_class(path: str, size: int = IMAGE, **kwargs: Any) -> Callable[[], tuple[torch.nn.Module, Any]]:
    """A timm model built from its class (`module.Class`) where the registered names fix the depths."""

    def build() -> tuple[torch.nn.Module, Any]:
        import importlib

        module, cls = path.rsplit(".", 1)
        torch.manual_seed(0)
        return getattr(importlib.import_module(f"timm.models.{module}"), cls)(**kwargs), image(size=size)

    return build


def poolformer() -> tuple[torch.nn.Module, Any]:
    """timm's poolformer_s12 arguments with one block per stage and narrow stages."""
    from timm.models import metaformer

    torch.manual_seed(0)
    model = metaformer.MetaFormer(
        depths=(1, 1, 1, 1),
        dims=(16, 32, 48, 64),
        downsample_norm=None,
        mlp_act=torch.nn.GELU,
        mlp_bias=True,
        norm_layers=metaformer.GroupNorm1,
        res_scale_init_values=None,
        use_mlp_head=False,
        num_classes=10,
    )
    return model, image()


VIT = dict(img_size=IMAGE, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
MODELS: dict[str, Callable[[], tuple[torch.nn.Module, Any]]] = {
    "timm/vit": timm_model("vit_tiny_patch16_224", **VIT),
    "timm/deit": timm_model("deit_tiny_distilled_patch16_224", **VIT),
    "timm/swin": timm_model(
        "swin_tiny_patch4_window7_224",
        size=64,
        img_size=64,
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 4),
        num_classes=10,
    ),
    "timm/mobilevit": timm_model("mobilevit_xxs", size=64, num_classes=10),
    "timm/levit": timm_model("levit_128s", size=64, img_size=64, num_classes=10),
    "timm/edgenext": timm_model("edgenext_xx_small", size=64, num_classes=10),
    "timm/resnet": timm_model("resnet18", num_classes=10),
    "timm/efficientnet": timm_model("efficientnet_b0", num_classes=10),
    "timm/convnext": timm_model("convnext_atto", num_classes=10),
    "timm/regnet": timm_model("regnetx_002", num_classes=10),
    "timm/densenet": timm_model("densenet121", growth_rate=8, block_config=(1, 1, 1, 1), num_classes=10),
    "timm/inception_v3": timm_model("inception_v3", size=75, num_classes=10),
    "timm/inception_next": timm_model("inception_next_atto", depths=(1, 1, 1, 1), num_classes=10),
    "timm/hrnet": timm_model("hrnet_w18_small", size=64, num_classes=10),
    "timm/maxvit": timm_model("maxvit_pico_rw_256", size=64, img_size=64, depths=(1, 1, 1, 1), num_classes=10),
    "timm/coatnet": timm_model("coatnet_nano_rw_224", size=64, img_size=64, depths=(1, 1, 1, 1), num_classes=10),
    "timm/poolformer": poolformer,
    "timm/mixer": timm_class(
        "mlp_mixer.MlpMixer", img_size=IMAGE, patch_size=8, num_blocks=2, embed_dim=32, num_classes=10
    ),
    "timm/eva": timm_model("eva02_tiny_patch14_224", **VIT),
    "timm/beit": timm_model("beit_base_patch16_224", **VIT),
    "timm/cait": timm_model("cait_xxs24_224", **VIT, depth_token_only=1),
    "timm/repvgg": timm_model("repvgg_a0", num_classes=10),
    "timm/ghostnet": timm_model("ghostnet_050", num_classes=10),
    "timm/mobilenetv3": timm_model("mobilenetv3_small_050", num_classes=10),
    "timm/dla": timm_model("dla46_c", num_classes=10),
    "timm/res2net": timm_model("res2net50_26w_4s", layers=[1, 1, 1, 1], num_classes=10),
    "timm/resnest": timm_model("resnest14d", num_classes=10),
    "timm/seresnext": timm_model("seresnext26d_32x4d", layers=[1, 1, 1, 1], num_classes=10),
    "timm/xception": timm_model("xception41", num_classes=10),
    **{
        f"hf/{n}": hf(n)
        for n in (
            "vit",
            "bert",
            "roberta",
            "albert",
            "electra",
            "gpt2",
            "gpt_neo",
            "opt",
            "llama",
            "mistral",
            "qwen2",
            "phi",
            "t5_encoder",
            "bart",
            "whisper_encoder",
            "wav2vec2",
            "clip_text",
            "clip_vision",
            "segformer",
            "deit",
            "mobilevit",
            "convnext",
            "swin",
            "distilbert",
            "mobilebert",
            "falcon",
            "gptj",
            "bloom",
        )
    },  # fmt: skip
}


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " | ")
    return text[:300] + (" ..." if len(text) > 300 else "")


def batch3(example: Any) -> Any:
    """The example inputs at batch 3 (the first row repeated)."""
    if isinstance(example, dict):
        return {k: torch.cat([v, v[:1]]) for k, v in example.items()}
    return tuple(torch.cat([v, v[:1]]) for v in example)


def attention_layers(module: torch.nn.Module) -> int:
    """The source's attention modules: class names with `Attention`/`Attn` holding no other such module."""

    def is_attention(m: torch.nn.Module) -> bool:
        return any(w in type(m).__name__ for w in ("Attention", "Attn"))

    return sum(
        is_attention(m) and not any(is_attention(c) for c in m.modules() if c is not m) for m in module.modules()
    )


def run_one(name: str, build: Callable, root: Path, dynamic: bool = False) -> dict[str, Any]:
    import ktorch
    from ktorch.verify.torch_source import check_torch_to_keras

    t0 = time.perf_counter()
    row: dict[str, Any] = {"model": name}
    try:
        module, example = build()
        randomize(module)
        out = root / name.replace("/", "_")
        result = ktorch.convert(
            module,
            out,
            example_inputs=example,
            to="keras",
            force=True,
            verify=True,
            dynamic="auto" if dynamic else None,
        )
        row["worst_rel_b2"] = result.parity.worst_rel  # with --dynamic: also at a second length / image size
        row["dynamic"] = sorted(result.manifest["source"].get("dynamic", {}))
        row["static"] = result.manifest["source"].get("static", {})
        more = batch3(example)
        arrays = [v.numpy() for v in (more.values() if isinstance(more, dict) else more)]
        parity3 = check_torch_to_keras(
            module, out, inputs=arrays, manifest=result.manifest, keras_model=result.keras_model
        )
        row["worst_rel_b3"] = parity3.worst_rel
        import numpy as np

        row["params"] = sum(p.numel() for p in module.parameters() if p.requires_grad)  # tied ones once
        # parameters forward never reads (Wav2Vec2's masked_spec_embed outside training) have no Keras weight
        named = dict(module.named_parameters())
        row["unused"] = sum(named[n].numel() for n in result.manifest["model"].get("unused_parameters", []))
        row["keras_trainable"] = sum(int(np.prod(w.shape)) for w in result.keras_model.trainable_weights)
        row["transposes"] = result.manifest["layout"]["transposes"]
        row["attention"] = attention_layers(module)
        row["convert_s"] = result.timings["total"]
        row["ok"] = bool(parity3.passed)
        if not parity3.passed:
            row["error"] = f"parity at batch 3: worst relative error {parity3.worst_rel:.2e}"
    except Exception as exc:  # noqa: BLE001 - one line per failure is the point
        row["ok"] = False
        row["error"] = one_line(exc)
        row["trace"] = traceback.format_exc()
    row["seconds"] = time.perf_counter() - t0
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated model names (or substrings)")
    parser.add_argument("--traces", action="store_true", help="print the traceback of each failure")
    parser.add_argument(
        "--dynamic", action="store_true", help='convert with dynamic="auto" and report which sizes stay dynamic'
    )
    args = parser.parse_args()
    names = list(MODELS)
    if args.only:
        wanted = args.only.split(",")
        names = [n for n in names if any(w == n or w in n for w in wanted)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = run_one(name, MODELS[name], Path(tmp), dynamic=args.dynamic)
            rows.append(row)
            if row["ok"]:
                same = "=" if row["params"] - row["unused"] == row["keras_trainable"] else "!="
                errors = f"b2 {row['worst_rel_b2']:.1e}  b3 {row['worst_rel_b3']:.1e}"
                unused = f" - {row['unused']} unused" if row["unused"] else ""
                status = (
                    f"ok    {errors}  trainable {row['keras_trainable']} {same} {row['params']}{unused}  "
                    f"transposes {row['transposes']}"
                )
                if row["attention"]:
                    status += f" ({row['transposes'] / row['attention']:.1f} per attention layer of {row['attention']})"
                status += f"  convert {row['convert_s']:.1f}s"
                if args.dynamic:
                    fixed = "; ".join(f"{k} fixed: {v[:120]}" for k, v in row["static"].items())
                    status += f"  sizes: {','.join(row['dynamic']) or 'static'}" + (f" ({fixed})" if fixed else "")
            else:
                status = f"FAIL  {row['error']}"
            print(f"{name:20s} {row['seconds']:6.1f}s  {status}", flush=True)
            if args.traces and "trace" in row:
                print(row["trace"])
    passed = [r for r in rows if r["ok"]]
    worst = max((max(r["worst_rel_b2"], r["worst_rel_b3"]) for r in passed), default=float("nan"))
    same = sum(r["params"] - r["unused"] == r["keras_trainable"] for r in passed)
    print(
        f"\npassed {len(passed)}/{len(rows)}; worst relative error among the passes {worst:.2e}; "
        f"trainable parameter count equal to the source's in {same}/{len(passed)}"
    )
    if args.dynamic:
        text = [r for r in passed if r["model"].startswith("hf/") and "seq" in r["dynamic"] + list(r["static"])]
        vision = [r for r in passed if {"height", "width"} & set(r["dynamic"] + list(r["static"]))]
        print(
            f"dynamic sequence length: {sum('seq' in r['dynamic'] for r in text)}/{len(text)} text models; "
            f"dynamic image size: {sum('height' in r['dynamic'] for r in vision)}/{len(vision)} vision models"
        )


if __name__ == "__main__":
    main()
