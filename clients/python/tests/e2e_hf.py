#!/usr/bin/env python3
"""End-to-end proof: HF transformers' Qwen2.5-VL generates the same tokens from reel's
video embeddings (through reel_client) as from its own vision tower.

A tiny, randomly initialized Qwen2_5_VLForConditionalGeneration is built whose vision
tower is the checkpoint the reel server serves (tests/data/tiny-qwen2.5-vl: same config,
same weights). For one video:

1. reel ``frames()``: the sampled frames' preprocessed pixel values (bit-identical to
   HF's Qwen2VLVideoProcessor on the same frames), ``video_grid_thw``,
   ``second_per_grid_ts``;
2. HF's own path: ``model.generate(input_ids, pixel_values_videos=..., video_grid_thw,
   second_per_grid_ts, mm_token_type_ids)``, greedy, which runs the model's vision tower;
3. reel's path: ``embed()`` through the plugin, then
   ``reel_client.hf.generate_with_video_embeds`` (no vision tower);
4. the generated token ids must be equal. Also reported: the largest absolute difference
   between reel's embeddings and ``model.visual`` on the same pixel values, the smallest
   top-1/top-2 logit margin along the greedy path, and a control (reel's embeddings in
   reverse row order must change the output, so the comparison is not vacuous).

No tokenizer is needed: the prompt is token ids around the config's
vision_start/video/vision_end ids.

As a script, against a running server or one it starts (``--spawn``):

    python tests/e2e_hf.py --spawn                                     # CPU
    python tests/e2e_hf.py --spawn --server-device cuda --device cuda --output cuda_ipc
    python tests/e2e_hf.py --server 127.0.0.1:50051 --video h264_main_bframes.mp4

Exit status 0 when the tokens are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
TINY_MODEL = REPO / "tests" / "data" / "tiny-qwen2.5-vl"
VIDEO_DIR = REPO / "tests" / "data" / "video"

if str(PACKAGE) not in sys.path:
    sys.path.insert(0, str(PACKAGE))

import torch  # noqa: E402

from reel_client import Client  # noqa: E402
from reel_client.hf import generate_with_video_embeds  # noqa: E402


def build_model(model_dir=TINY_MODEL, device="cpu", layers=2, seed=0):
    """A random Qwen2.5-VL (2 text layers, untied head) with the checkpoint's vision tower."""
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    model_dir = Path(model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    cfg_dict = dict(raw)
    cfg_dict.update(
        num_hidden_layers=layers,
        max_window_layers=layers,
        # An untied head and a wider init make the random LM's greedy output depend on
        # its input (tied 0.02 weights just repeat one token).
        tie_word_embeddings=False,
        initializer_range=0.1,
        torch_dtype="float32",
    )
    config = Qwen2_5_VLConfig.from_dict(cfg_dict)
    vc = config.vision_config
    for key, want in raw["vision_config"].items():
        if key in ("in_chans", "spatial_patch_size"):
            continue  # aliases HF does not keep
        got = getattr(vc, key, None)
        assert got == want, f"vision config {key}: HF has {got}, the checkpoint {want}"
    text_hidden = config.text_config.hidden_size
    assert vc.out_hidden_size == text_hidden, "vision out_hidden_size must equal the LM hidden size"

    if str(device).startswith("cuda"):
        # Full f32 on the GPU too (cuDNN's TF32 convolutions would perturb the patch
        # embedding by ~1e-3 and make the comparison about TF32, not the handoff).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    state = load_file(str(model_dir / "model.safetensors"))
    visual = {k[len("visual.") :]: v.to(torch.float32) for k, v in state.items() if k.startswith("visual.")}
    assert len(visual) == len(state), "the checkpoint should hold the vision tower only"
    model.model.visual.load_state_dict(visual, strict=True)
    return model.to(device).eval()


def prompt_ids(config, n_video_tokens=1):
    """A chat-like prompt as token ids: text, <vision_start> video <vision_end>, text."""
    text_before = [151644, 872, 198]  # <|im_start|>user\n in Qwen's vocabulary
    text_after = [74785, 419, 2766, 13, 151645, 198, 151644, 77091, 198]
    return (
        text_before
        + [config.vision_start_token_id]
        + [config.video_token_id] * n_video_tokens
        + [config.vision_end_token_id]
        + text_after
    )


def run(client, model, video="h264_main_bframes.mp4", output="shm", max_new_tokens=16, dtype="f32", fps=2.0):
    """Both paths on one video; returns a report dict (``equal`` is the verdict)."""
    device = model.device
    config = model.config
    frames = client.frames(video, output=output, fps=fps)
    embeds = client.embed(video, output=output, dtype=dtype, fps=fps)
    try:
        assert frames.grid_thw == embeds.grid_thw and frames.frame_indices == embeds.frame_indices
        pixel_values = frames.tensor.to(device)
        grid = frames.video_grid_thw.to(device)
        seconds = torch.tensor(frames.second_per_grid_ts, device=device)
        merge = config.vision_config.spatial_merge_size
        n = frames.grid_thw[0] * frames.grid_thw[1] * frames.grid_thw[2] // (merge * merge)
        assert embeds.shape[0] == n

        with torch.no_grad():
            out = model.model.visual(pixel_values, grid_thw=grid)
        hf_embeds = out.pooler_output if hasattr(out, "pooler_output") else out
        reel_embeds = embeds.tensor.to(device=device, dtype=torch.float32)
        max_abs_diff = (hf_embeds - reel_embeds).abs().max().item()

        # HF's own path, built the way Qwen2_5_VLProcessor builds its inputs.
        ids = torch.tensor([prompt_ids(config, n)], device=device)
        mm_token_type_ids = (ids == config.video_token_id).to(torch.int32) * 2
        gen = dict(do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
        with torch.no_grad():
            own = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values_videos=pixel_values,
                video_grid_thw=grid,
                second_per_grid_ts=seconds,
                mm_token_type_ids=mm_token_type_ids,
                output_scores=True,
                return_dict_in_generate=True,
                **gen,
            )
        own_tokens = own.sequences[0, ids.shape[1] :].tolist()
        margins = []
        for scores in own.scores:
            top = scores[0].float().topk(2).values
            margins.append((top[0] - top[1]).item())

        # reel's path: the plugin's embeddings, no vision tower.
        prompt = prompt_ids(config, 1)
        reel_seq = generate_with_video_embeds(model, None, prompt, embeds, **gen)
        assert torch.equal(reel_seq[0, : ids.shape[1]], ids[0]), "prompt expansion differs"
        reel_tokens = reel_seq[0, ids.shape[1] :].tolist()

        # Control: the same rows in another order must change the output.
        control = {
            "video_embeds": embeds.tensor.flip(0),
            "video_grid_thw": frames.video_grid_thw,
            "second_per_grid_ts": frames.second_per_grid_ts,
        }
        control_tokens = generate_with_video_embeds(model, None, prompt, control, **gen)[0, ids.shape[1] :].tolist()

        return {
            "equal": own_tokens == reel_tokens,
            "hf_tokens": own_tokens,
            "reel_tokens": reel_tokens,
            "control_tokens": control_tokens,
            "control_differs": control_tokens != own_tokens,
            "max_abs_diff_embeddings": max_abs_diff,
            "max_abs_embedding": hf_embeds.abs().max().item(),
            "min_top2_logit_margin": min(margins),
            "video": video,
            "fps": fps,
            "grid_thw": list(frames.grid_thw),
            "second_per_grid_ts": frames.second_per_grid_ts,
            "video_tokens": n,
            "output": embeds.mode,
            "dtype": embeds.dtype,
            "pixels_on": str(pixel_values.device),
            "embeds_on": str(embeds.tensor.device),
            "decoded_on": embeds.decoded_on,
            "model_device": str(device),
        }
    finally:
        frames.release()
        embeds.release()


def exact_server_flags(reel_bin):
    """Flags that make a GPU server's vision tower run in f32 like the HF model here
    (newer servers default to bf16 towers on a GPU); [] when the binary has no such flag."""
    try:
        help_text = subprocess.run(
            [str(reel_bin), "serve", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return ["--model-dtype", "f32"] if "--model-dtype" in help_text else []


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", help="a running reel serve (host:port or unix:/path)")
    p.add_argument("--spawn", action="store_true", help="start reel serve for the run")
    p.add_argument("--reel-bin", default=os.environ.get("REEL_BIN", str(REPO / "target/release/reel")))
    p.add_argument("--server-device", default="cpu", help="--device of the spawned server")
    p.add_argument("--server-arg", action="append", default=[], help="more flags for the spawned server")
    p.add_argument("--model-dir", default=str(TINY_MODEL), help="the checkpoint the server serves")
    p.add_argument("--video", default="h264_main_bframes.mp4", help="a video under the media root")
    p.add_argument("--device", default="cpu", help="where the HF model runs (cpu, cuda, cuda:N)")
    p.add_argument("--output", default="shm", help="shm, inline, cuda_ipc or auto")
    p.add_argument("--dtype", default="f32")
    p.add_argument("--token", default=os.environ.get("REEL_TOKEN"))
    p.add_argument("--shm-dir", default=None)
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args(argv)
    if not args.server and not args.spawn:
        p.error("give --server or --spawn")

    proc = None
    shm_dir = args.shm_dir
    target = args.server
    if args.spawn:
        tmp = tempfile.mkdtemp(prefix="reel-e2e-")
        shm_dir = shm_dir or os.path.join(tmp, "shm")
        os.makedirs(shm_dir, exist_ok=True)
        target = f"127.0.0.1:{_free_port()}"
        cmd = [
            args.reel_bin, "serve", "--listen", target,
            "--metrics-listen", f"127.0.0.1:{_free_port()}",
            "--media-root", str(VIDEO_DIR), "--model", args.model_dir,
            "--device", args.server_device, "--shm-dir", shm_dir,
            *exact_server_flags(args.reel_bin), *args.server_arg,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd)
    try:
        client = Client(target, token=args.token, shm_dir=shm_dir)
        for _ in range(300):
            try:
                client.info()
                break
            except Exception:
                if proc is not None and proc.poll() is not None:
                    sys.exit(f"reel serve exited with {proc.returncode}")
                time.sleep(0.1)
        model = build_model(args.model_dir, device=args.device)
        report = run(client, model, args.video, args.output, args.max_new_tokens, args.dtype)
        report["pool_opens"] = client.ipc_pools.opened
        client.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(json.dumps(report, indent=2))
    print("tokens equal:", report["equal"], "| max abs diff:", report["max_abs_diff_embeddings"])
    return 0 if report["equal"] and report["control_differs"] else 1


if __name__ == "__main__":
    sys.exit(main())
