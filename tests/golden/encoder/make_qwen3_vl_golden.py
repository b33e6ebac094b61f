#!/usr/bin/env python3
"""Tiny Qwen3-VL and Qwen3.5 vision towers + golden outputs of HF transformers, for reel-encoder.

Builds transformers 5.17's ``Qwen3VLVisionModel`` (deepstack after blocks 0 and 1) and
``Qwen3_5VisionModel`` (no deepstack) with tiny configs, seeded random weights, and runs
them on seeded random ``pixel_values`` (the generator of make_encoder_golden.py, 1536
columns = 3*2*16*16) for several grids.

Outputs (see tests/golden/encoder/README.md):

* tests/data/tiny-qwen3-vl/{config.json, model.safetensors, video_preprocessor_config.json}
* tests/data/tiny-qwen3.5/{config.json, model.safetensors, video_preprocessor_config.json}
  (vision weights only, ``model.visual.`` prefix, bf16)
* tests/data/golden/qwen3_vl_encoder.safetensors: HF outputs in float32 and bfloat16,
  packed as vLLM takes them: [pooler_output | deepstack_features[0] | ...] on the last axis.

Usage (from the repository root; torch 2.11 CPU, transformers 5.17):

    python tests/golden/encoder/make_qwen3_vl_golden.py

Deterministic: seeded weights and inputs, single-threaded torch, one metadata key.
"""

import copy
import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5VisionModel
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel
from transformers.vision_utils import get_vision_interpolation_indices_and_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_encoder_golden import pixel_values  # noqa: E402  (the same seeded generator)

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "data" / "golden" / "qwen3_vl_encoder.safetensors"

ATTN = "sdpa"  # transformers' default; eager is checked to agree in float32 below
PATCH_DIM = 3 * 2 * 16 * 16

VISION_COMMON = {
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "num_position_embeddings": 256,  # a 16x16 table
    "out_hidden_size": 64,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}

# Laid out like the published Qwen3-VL config.json (legacy rope_scaling / rope_theta keys
# in text_config, vision_config.model_type "qwen3_vl"); tiny text part.
CONFIG_QWEN3_VL = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "image_token_id": 151655,
    "model_type": "qwen3_vl",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "dtype": "bfloat16",
        "eos_token_id": 151645,
        "head_dim": 32,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_vl_text",
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [6, 5, 5], "rope_type": "default"},
        "rope_theta": 5000000,
        "use_cache": True,
        "vocab_size": 151936,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "dtype": "bfloat16",
    "transformers_version": "5.17.0",
    "video_token_id": 151656,
    "vision_config": {
        **VISION_COMMON,
        "deepstack_visual_indexes": [0, 1],
        "depth": 2,
        "hidden_size": 64,
        "model_type": "qwen3_vl",
        "num_heads": 1,  # head_dim 64
    },
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
}

# Laid out like the published Qwen3.5 config.json (rope_parameters, hybrid layer_types,
# "deepstack_visual_indexes": [] although the 5.17 config class has no such field).
CONFIG_QWEN3_5 = {
    "architectures": ["Qwen3_5ForConditionalGeneration"],
    "image_token_id": 248056,
    "model_type": "qwen3_5",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 248044,
        "dtype": "bfloat16",
        "eos_token_id": 248044,
        "full_attention_interval": 1,
        "head_dim": 32,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "layer_types": ["full_attention"],
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 2,
        "linear_value_head_dim": 16,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_5_text",
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {
            "mrope_interleaved": True,
            "mrope_section": [2, 1, 1],
            "partial_rotary_factor": 0.25,
            "rope_theta": 10000000,
            "rope_type": "default",
        },
        "use_cache": True,
        "vocab_size": 248320,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "dtype": "bfloat16",
    "transformers_version": "5.17.0",
    "video_token_id": 248057,
    "vision_config": {
        **VISION_COMMON,
        "deepstack_visual_indexes": [],
        "depth": 2,
        "hidden_size": 144,
        "model_type": "qwen3_5",
        "num_heads": 2,  # head_dim 72
    },
    "vision_end_token_id": 248054,
    "vision_start_token_id": 248053,
}

# The values published with the Qwen3-VL / Qwen3.5 checkpoints (not the class defaults).
VIDEO_PREPROCESSOR = {
    "processor_class": "Qwen3VLProcessor",
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "do_sample_frames": True,
    "fps": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "max_frames": 768,
    "merge_size": 2,
    "min_frames": 4,
    "patch_size": 16,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "return_metadata": False,
    "size": {"longest_edge": 25165824, "shortest_edge": 4096},
    "temporal_patch_size": 2,
    "video_processor_type": "Qwen3VLVideoProcessor",
}

# tower key prefix -> how to build and load it
TOWERS = {
    "qwen3_vl": {
        "dir": REPO / "tests" / "data" / "tiny-qwen3-vl",
        "config": CONFIG_QWEN3_VL,
        "config_cls": Qwen3VLConfig,
        "full_cls": Qwen3VLForConditionalGeneration,
        "tower_cls": Qwen3VLVisionModel,
        "weight_seed": 20251101,
    },
    "qwen3_5": {
        "dir": REPO / "tests" / "data" / "tiny-qwen3.5",
        "config": CONFIG_QWEN3_5,
        "config_cls": Qwen3_5Config,
        "full_cls": Qwen3_5ForConditionalGeneration,
        "tower_cls": Qwen3_5VisionModel,
        "weight_seed": 20251102,
    },
}

# (name, grids, input seed). Inputs: make_encoder_golden.pixel_values(seed, rows, 1536),
# which the Rust tests re-implement bit for bit.
CASES = [
    ("small", [[1, 4, 4]], 11),
    ("video", [[2, 6, 8]], 12),
    ("beyond_table", [[1, 20, 34]], 13),  # larger than the 16x16 position table
    ("two_by_two", [[3, 2, 2]], 14),  # one merge window per frame, three frames
    ("batch", [[1, 4, 6], [2, 8, 4]], 15),  # attention per item and per temporal group
    ("tall", [[1, 36, 10]], 16),
]
POS_EMBEDS_CASE = ("qwen3_vl", "beyond_table")


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """As make_encoder_golden.init_weights (with the seed as an argument): weights
    N(0, 1/fan_in), biases N(0, 0.1^2), norm weights 1 + N(0, 0.1^2), rounded to bf16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                v = torch.randn(p.shape, generator=g) * 0.1
            elif p.dim() == 1:
                v = 1.0 + torch.randn(p.shape, generator=g) * 0.1
            else:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=g) / fan_in**0.5
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def packed(out) -> torch.Tensor:
    """vLLM's layout: [pooler_output | deepstack_features[0] | ...] along the last axis."""
    parts = [out.pooler_output] + list(getattr(out, "deepstack_features", None) or [])
    return torch.cat(parts, dim=-1)


def run(model, pv: np.ndarray, grids) -> np.ndarray:
    # float32 pixel values in every case: HF casts them to the weight dtype in patch_embed.
    with torch.no_grad():
        out = model(torch.from_numpy(pv), grid_thw=torch.tensor(grids, dtype=torch.int64))
    return packed(out).to(torch.float32).numpy()


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max()) / float(np.abs(ref).max())


def load_tower(spec, dtype, attn):
    """The vision tower as users get it: the full model loaded from the committed folder
    (the text weights are absent and initialized randomly).

    With `from_pretrained(dtype=torch.bfloat16)` the rotary `inv_freq` buffer stays float32;
    `model.to(torch.bfloat16)` would round it to bf16 (measured separately below)."""
    full = spec["full_cls"].from_pretrained(spec["dir"], dtype=dtype, attn_implementation=attn)
    tower = full.model.visual.eval()
    assert type(tower) is spec["tower_cls"], type(tower)
    assert tower.rotary_pos_emb.inv_freq.dtype == torch.float32
    assert tower.config._attn_implementation == attn
    assert tower.patch_embed.proj.weight.dtype == dtype
    return tower


def pos_embeds(tower, grids) -> torch.Tensor:
    """HF's interpolated position embeddings, exactly as the forward computes them, before
    the cast to the hidden dtype: (pos_embed(indices) * weights[:, :, None]).sum(1)."""
    idx, w = get_vision_interpolation_indices_and_weights(
        torch.tensor(grids, dtype=torch.int64),
        num_grid_per_side=tower.num_grid_per_side,
        mode=tower.interpolation_mode,
        align_corners=tower.interpolation_align_corners,
        spatial_merge_size=tower.config.spatial_merge_size,
    )
    with torch.no_grad():
        return (tower.pos_embed(idx) * w[:, :, None]).sum(1)


def write_folder(spec, model) -> int:
    d = spec["dir"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(spec["config"], indent=2) + "\n")
    (d / "video_preprocessor_config.json").write_text(json.dumps(VIDEO_PREPROCESSOR, indent=2) + "\n")
    state = {f"model.visual.{k}": v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(dict(sorted(state.items())), d / "model.safetensors", metadata={"format": "pt"})
    for f in ("config.json", "video_preprocessor_config.json", "model.safetensors"):
        os.chmod(d / f, 0o644)
    return len(state)


def main() -> None:
    torch.set_num_threads(1)
    tensors, tower_meta = {}, {}
    per_case = {name: {} for name, _, _ in CASES}
    for key, spec in TOWERS.items():
        # transformers mutates nested dicts in place: give it a copy.
        config = spec["config_cls"](**copy.deepcopy(spec["config"]))
        vcfg = config.vision_config
        n_ds = len(getattr(vcfg, "deepstack_visual_indexes", None) or [])
        width = vcfg.out_hidden_size * (1 + n_ds)
        model = spec["tower_cls"]._from_config(vcfg, attn_implementation=ATTN, dtype=torch.float32).eval()
        init_weights(model, spec["weight_seed"])
        n_tensors = write_folder(spec, model)

        # The way users load it: full model from the folder, in f32 (sdpa, eager) and bf16.
        tower32 = load_tower(spec, torch.float32, ATTN)
        for k, v in model.state_dict().items():
            assert torch.equal(tower32.state_dict()[k], v), k
        eager32 = load_tower(spec, torch.float32, "eager")
        tower16 = load_tower(spec, torch.bfloat16, ATTN)
        # `model.to(torch.bfloat16)` also rounds the rotary inv_freq buffer: measured only.
        naive16 = copy.deepcopy(tower32).to(torch.bfloat16)
        assert naive16.rotary_pos_emb.inv_freq.dtype == torch.bfloat16

        for name, grids, seed in CASES:
            rows = sum(t * h * w for t, h, w in grids)
            pv = pixel_values(seed, rows, PATCH_DIM)
            out32 = run(tower32, pv, grids)
            out_eager = run(eager32, pv, grids)
            out16 = run(tower16, pv, grids)
            out_naive = run(naive16, pv, grids)
            assert out32.shape == (rows // 4, width), out32.shape
            assert np.isfinite(out16).all()
            eager_err = rel(out_eager, out32)
            bf16_err = rel(out16, out32)
            assert eager_err < 1e-5, (key, name, eager_err)
            o = vcfg.out_hidden_size
            parts = [rel(out16[:, i * o:(i + 1) * o], out32[:, i * o:(i + 1) * o]) for i in range(1 + n_ds)]
            tensors[f"{key}.{name}.f32"] = torch.from_numpy(out32)
            tensors[f"{key}.{name}.bf16"] = torch.from_numpy(out16)
            per_case[name][key] = {
                "tokens": rows // 4,
                "width": width,
                "max_abs_ref_f32": float(np.abs(out32).max()),
                "eager_vs_sdpa_f32_rel": eager_err,
                "hf_bf16_rel_err": bf16_err,
                "hf_bf16_rel_err_parts": parts,
                "hf_bf16_bf16_inv_freq_rel_err": rel(out_naive, out32),
            }
            print(f"{key:9s} {name:13s} tokens {rows // 4:4d}  max|ref| {np.abs(out32).max():7.3f}  "
                  f"eager/sdpa {eager_err:.2e}  bf16/f32 {bf16_err:.2e} (parts "
                  f"{', '.join(f'{p:.2e}' for p in parts)})  .to(bf16) {rel(out_naive, out32):.2e}")
            if (key, name) == POS_EMBEDS_CASE:
                pe16, pe32 = pos_embeds(tower16, grids), pos_embeds(tower32, grids)
                assert pe16.dtype == torch.float32 and torch.equal(pe16, pe32)
                # It is what the forward computes: capture the pos_embed lookup.
                seen = []
                hook = tower16.pos_embed.register_forward_hook(lambda m, i, o: seen.append(i[0]))
                run(tower16, pv, grids)
                hook.remove()
                idx, _ = get_vision_interpolation_indices_and_weights(
                    torch.tensor(grids), tower16.num_grid_per_side, "bilinear", True, 2)
                assert len(seen) == 1 and torch.equal(seen[0], idx)
                tensors[f"{key}.{name}.pos_embeds.f32"] = pe32.contiguous()

        tower_meta[key] = {
            "model_dir": str(spec["dir"].relative_to(REPO)),
            "architecture": spec["config"]["architectures"][0],
            "tower_class": spec["tower_cls"].__name__,
            "vision_model_type": vcfg.model_type,
            "checkpoint_prefix": "model.visual.",
            "weight_seed": spec["weight_seed"],
            "weight_tensors": n_tensors,
            "weight_params": sum(v.numel() for v in model.state_dict().values()),
            "depth": vcfg.depth,
            "hidden_size": vcfg.hidden_size,
            "num_heads": vcfg.num_heads,
            "head_dim": vcfg.hidden_size // vcfg.num_heads,
            "out_hidden_size": vcfg.out_hidden_size,
            "deepstack_visual_indexes": list(getattr(vcfg, "deepstack_visual_indexes", None) or []),
            "packed_width": width,
            "rope_theta": vcfg.rope_parameters["rope_theta"],
        }
        del tower32, eager32, tower16, naive16

    meta_cases = []
    for name, grids, seed in CASES:
        rows = sum(t * h * w for t, h, w in grids)
        pv = pixel_values(seed, rows, PATCH_DIM)
        meta_cases.append({
            "name": name,
            "grids": grids,
            "input_seed": seed,
            "input_rows": rows,
            "input_cols": PATCH_DIM,
            "input_sha256": hashlib.sha256(pv.astype("<f4").tobytes()).hexdigest(),
            "towers": per_case[name],
        })
        tensors[f"{name}.grids"] = torch.tensor(grids, dtype=torch.int64)

    versions = {p: importlib.metadata.version(p) for p in ("torch", "transformers", "numpy", "safetensors")}
    meta = {
        "attn_implementation": ATTN,
        "eager_check": "eager agrees with sdpa in float32 to < 1e-5 (max|d|/max|ref|) in every case: "
                       "see cases[].towers[].eager_vs_sdpa_f32_rel",
        "layout": "<tower>.<case>.{f32,bf16}: float32 [tokens, out_hidden*(1+n_deepstack)] = "
                  "[pooler_output | deepstack_features[0] | ...] along the last axis (vLLM's packing)",
        "f32": "model from_pretrained(dtype=float32), float32 pixel_values",
        "bf16": "model from_pretrained(dtype=bfloat16) (weights bf16, rotary inv_freq float32), float32 "
                "pixel_values (cast to bf16 by patch_embed), output widened to float32",
        "pos_embeds": "qwen3_vl.beyond_table.pos_embeds.f32 = (pos_embed(indices) * weights[:, :, None]).sum(1) "
                      "in float32 before the cast, indices/weights from "
                      "transformers.vision_utils.get_vision_interpolation_indices_and_weights",
        "input_generator": "value(i) = (splitmix64_mix(seed * 0x9E3779B97F4A7C15 + i) >> 40) * 2^-22 - 2, "
                           "i = row * 1536 + col",
        "towers": tower_meta,
        "cases": meta_cases,
        "versions": versions,
        "python": sys.version.split()[0],
    }
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(sorted(tensors.items())), GOLDEN, metadata={"golden": json.dumps(meta, sort_keys=True)})
    os.chmod(GOLDEN, 0o644)
    assert set(load_file(GOLDEN)) == set(tensors)
    print(f"wrote {', '.join(str(s['dir'].relative_to(REPO)) for s in TOWERS.values())} and "
          f"{GOLDEN.relative_to(REPO)} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
