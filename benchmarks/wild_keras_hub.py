"""KerasHub backbones from small explicit configs through the export route (not a test).

For each backbone: build it from a tiny config (no preset, nothing downloaded), save it as
.keras, convert it with `ktorch.convert(route="auto")` (the direct reader refuses a Backbone,
so the export route takes it), verify at batch 2 and again at batch 3, and record the route, the worst relative
error, the conversion time and the transposes left in the emitted code.

    python benchmarks/wild_keras_hub.py [--only NAME ...] [--json results.json]

Each model runs in its own process (one failure or crash cannot stop the rest).

Measured on 2026-12-07 (CPU, heavily shared machine, 36 configs, branch hub): 32 pass at
batch 2 (the conversion's check) and batch 3 (`verify_conversion` of the output directory), with
tokenizer-like padding masks (a left-padded and a right-padded row), at max rel error <= 7.7e-7
(Gemma at batch 3): ResNet, EfficientNet, MobileNet, DenseNet, CSPNet, Xception (config fixed),
VGG, DeiT, DINOv2, ViT, MiT, BERT, RoBERTa, DistilBERT, ALBERT, GPT-2, Llama, Mistral, Gemma, Qwen,
Qwen3, Phi-3, T5, Whisper, ELECTRA, XLM-RoBERTa, OPT, GPT-NeoX, Bloom, Falcon, CLIP text and
vision (0 to 25 transposes, 44-176 s each under load). SigLIP vision passes at batch 2 but is
exported at that batch only (`ops.repeat(probe, batch_size)`: torch.export cannot keep the batch
symbolic). F-Net (aten.complex, fft_fft2), Mixtral (aten.topk, one_hot) and DeBERTa-v3
(aten.take_along_dim) stop on one line naming the ops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = dict(vocabulary_size=100, num_layers=2, hidden_dim=16, intermediate_dim=32)
IMAGE = (32, 32, 3)

CONFIGS: dict[str, tuple[str, dict]] = {
    "resnet": (
        "ResNetBackbone",
        dict(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 16],
            stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 2],
            block_type="basic_block",
            use_pre_activation=False,
            image_shape=IMAGE,
        ),
    ),
    "efficientnet": (
        "EfficientNetBackbone",
        dict(
            stackwise_kernel_sizes=[3, 3],
            stackwise_num_repeats=[1, 1],
            stackwise_input_filters=[8, 8],
            stackwise_output_filters=[8, 16],
            stackwise_expansion_ratios=[1, 4],
            stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
            stackwise_strides=[1, 2],
            stackwise_block_types=["v1", "v1"],
            stackwise_width_coefficients=[1.0, 1.0],
            stackwise_depth_coefficients=[1.0, 1.0],
            stackwise_force_input_filters=[0, 0],
            stackwise_nores_option=[False, False],
            # num_features stays at its default (1280): KerasHub 0.2x does not save it in the
            # config, so a backbone built with another value cannot be loaded back by Keras
            input_shape=IMAGE,
        ),
    ),
    "mobilenet": (
        "MobileNetBackbone",
        dict(
            stackwise_expansion=[[1], [4]],
            stackwise_num_blocks=[1, 1],
            stackwise_num_filters=[[8], [16]],
            stackwise_kernel_size=[[3], [3]],
            stackwise_num_strides=[[2], [2]],
            stackwise_se_ratio=[[0.25], [None]],
            stackwise_activation=[["relu"], ["hard_swish"]],
            stackwise_padding=[[1], [1]],
            output_num_filters=32,
            depthwise_filters=8,
            depthwise_stride=1,
            depthwise_residual=False,
            last_layer_filter=32,
            image_shape=IMAGE,
        ),
    ),
    "densenet": ("DenseNetBackbone", dict(stackwise_num_repeats=[1, 1], growth_rate=8, image_shape=IMAGE)),
    "cspnet": (
        "CSPNetBackbone",
        dict(
            stem_filters=8,
            stem_kernel_size=3,
            stem_strides=2,
            stackwise_depth=[1, 1],
            stackwise_strides=[1, 2],
            stackwise_num_filters=[16, 32],
            block_type="bottleneck_block",
            stage_type="csp",
            # CSPResNet's ratios (timm cspresnet50, keras_hub's csp_resnet_50 presets): with the
            # defaults (all 1.0) the csp stage's shortcut and its blocks disagree in width
            bottle_ratio=[0.5],
            block_ratio=[1.0],
            expand_ratio=[2.0],
            cross_linear=True,
            image_shape=IMAGE,
        ),
    ),
    "xception": (
        "XceptionBackbone",
        dict(
            # a middle block adds its input back: it pools (stride 2) exactly when its width changes
            # (then a stride-2 pointwise conv matches the residual), as in the presets
            stackwise_conv_filters=[[8, 16], [32, 32], [32, 32]],
            stackwise_pooling=[False, True, False],
            image_shape=IMAGE,
        ),
    ),
    "vgg": ("VGGBackbone", dict(stackwise_num_repeats=[1, 2], stackwise_num_filters=[8, 16], image_shape=IMAGE)),
    "deit": (
        "DeiTBackbone",
        dict(image_shape=IMAGE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32),
    ),
    "dinov2": (
        "DINOV2Backbone",
        dict(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, image_shape=IMAGE),
    ),
    "vit": ("ViTBackbone", dict(image_shape=IMAGE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)),
    "mit": (
        "MiTBackbone",
        dict(
            layerwise_depths=[1, 1],
            num_layers=2,
            layerwise_num_heads=[1, 2],
            layerwise_sr_ratios=[2, 1],
            max_drop_path_rate=0.0,
            layerwise_patch_sizes=[7, 3],
            layerwise_strides=[4, 2],
            hidden_dims=[8, 16],
            image_shape=IMAGE,
        ),
    ),
    "bert": ("BertBackbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "roberta": ("RobertaBackbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "distilbert": ("DistilBertBackbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "albert": (
        "AlbertBackbone",
        dict(**TEXT, num_heads=2, embedding_dim=8, num_groups=1, num_inner_repetitions=1, max_sequence_length=16),
    ),
    "gpt2": ("GPT2Backbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "llama": ("LlamaBackbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1)),
    "mistral": ("MistralBackbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1)),
    "gemma": ("GemmaBackbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1, head_dim=8)),
    "qwen": ("QwenBackbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1)),
    "t5": ("T5Backbone", dict(**TEXT, num_heads=2)),
    "whisper": (
        "WhisperBackbone",
        dict(**TEXT, num_heads=2, max_encoder_sequence_length=16, max_decoder_sequence_length=16),
    ),
    "electra": (
        "ElectraBackbone",
        dict(vocab_size=100, num_layers=2, num_heads=2, hidden_dim=16, embedding_dim=8, intermediate_dim=32),
    ),
    "f_net": ("FNetBackbone", dict(**TEXT, max_sequence_length=16)),
    "xlm_roberta": ("XLMRobertaBackbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "deberta_v3": ("DebertaV3Backbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "opt": ("OPTBackbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "gpt_neox": ("GPTNeoXBackbone", dict(**TEXT, num_heads=2, max_sequence_length=16)),
    "bloom": ("BloomBackbone", dict(**TEXT, num_heads=2)),
    "falcon": ("FalconBackbone", dict(**TEXT, num_attention_heads=2)),
    "phi3": ("Phi3Backbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1)),
    "qwen3": ("Qwen3Backbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1, head_dim=8)),
    "mixtral": ("MixtralBackbone", dict(**TEXT, num_query_heads=2, num_key_value_heads=1, num_experts=2)),
    "clip_text": (
        "CLIPTextEncoder",
        dict(vocabulary_size=100, embedding_dim=16, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32),
    ),
    "siglip_vision": (
        "SigLIPVisionEncoder",
        dict(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, image_shape=IMAGE),
    ),
    "clip_vision": (
        "CLIPVisionEncoder",
        dict(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, image_shape=IMAGE),
    ),
}


def run_one(name: str, workdir: Path) -> dict:
    """Build, save, convert and verify one backbone (in this process)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from ktorch.verify.runners import preload_before_tensorflow

    preload_before_tensorflow()
    import keras
    import keras_hub

    import ktorch
    from ktorch.verify import verify_conversion

    cls, config = CONFIGS[name]
    row: dict = {"model": name, "class": cls}
    try:
        keras.utils.set_random_seed(0)
        model = getattr(keras_hub.models, cls)(**config)
        src = workdir / f"{name}.keras"
        model.save(src)
    except Exception as exc:  # noqa: BLE001 - a config this script got wrong is reported, not raised
        row.update(status="build error", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        return row
    t0 = time.perf_counter()
    try:
        result = ktorch.convert(src, workdir / f"{name}_torch", route="auto")
    except Exception as exc:  # noqa: BLE001
        lines = str(exc).splitlines()
        detail = (
            "; ".join(line.strip(" -") for line in lines[1:4])
            if isinstance(exc, ktorch.graph.errors.UnsupportedOpError)
            else ""
        )
        error = f"{type(exc).__name__}: {(detail or lines[0])[:200]}"
        row.update(status="fail", seconds=round(time.perf_counter() - t0, 1), error=error)
        return row
    m = result.manifest
    worst = max((c.max_rel for c in result.parity.outputs), default=0.0) if result.parity else None
    # the same output directory at another batch size than the conversion's (batch 2)
    again = verify_conversion(src, result.out, batches=(3,), mode="outputs")
    worst_b3 = max((c.max_rel for run in again.runs for c in run.outputs), default=None)
    passed = bool(result.parity and result.parity.passed and again.exit_code == 0)
    fixed = m.get("source", {}).get("batch")
    if passed and fixed:  # the program runs one batch size only (verify checks that one again)
        row.update(
            status="fixed batch", error=f"exported at batch {fixed} only: {m['source'].get('batch_reason', '')}"[:240]
        )
    elif not passed:  # one line: what differs at batch 3 (batch 2 failures raise above)
        worst_output = max((c for run in again.runs for c in run.outputs), key=lambda c: c.max_rel, default=None)
        where = f" at output {worst_output.name}" if worst_output is not None else ""
        row["error"] = (
            f"batch 3: {again.error or again.status}, max rel {worst_b3 if worst_b3 is not None else '?'}{where}"
        )
    row.update(
        status=row.get("status") or ("pass" if passed else "mismatch"),
        worst_rel_b3=worst_b3,
        batch3=again.error or again.status,
        route=m.get("route", {}).get("name"),
        worst_rel=worst,
        seconds=round(time.perf_counter() - t0, 1),
        transposes=m["layout"]["transposes"],
        parameters=m["model"]["parameters"],
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model names (default: all)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print("ROW " + json.dumps(run_one(args.one, Path(tmp))), flush=True)
        return 0
    rows = []
    for name in args.only or list(CONFIGS):
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", name], capture_output=True, text=True, timeout=args.timeout
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
            row = (
                json.loads(line[4:])
                if line
                else {
                    "model": name,
                    "status": "crash",
                    "error": ((proc.stderr or "").strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200],
                }
            )
        except subprocess.TimeoutExpired:
            row = {"model": name, "status": "timeout", "error": f"no result within {args.timeout:.0f} s"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    passed = sum(r["status"] == "pass" for r in rows)
    print(f"\n{passed}/{len(rows)} pass")
    print("| model | status | route | worst rel err (batch 2) | batch 3 | seconds | transposes | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        err = "" if r.get("worst_rel") is None else f"{r['worst_rel']:.2g}"
        err3 = "" if r.get("worst_rel_b3") is None else f"{r['worst_rel_b3']:.2g}"
        cells = [r["model"], r["status"], r.get("route", ""), err, err3, r.get("seconds", ""), r.get("transposes", "")]
        cells.append(r.get("error", ""))
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
