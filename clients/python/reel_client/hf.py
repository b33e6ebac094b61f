"""Hugging Face transformers: Qwen2.5-VL ``generate`` on reel's video embeddings.

The model's own vision tower is not run: reel's embedding rows are scattered into the
video placeholder positions of the prompt's text embeddings, and ``generate`` gets
``inputs_embeds`` together with everything Qwen2.5-VL needs to build its 3D (M-RoPE)
position ids exactly as on the normal path: the expanded ``input_ids``,
``mm_token_type_ids`` (2 on video tokens), ``video_grid_thw`` and
``second_per_grid_ts``.

>>> from reel_client import Client
>>> from reel_client.hf import generate_with_video_embeds
>>> with Client() as client, client.embed("clip.mp4") as video:
...     messages = [{"role": "user", "content": [
...         {"type": "video"}, {"type": "text", "text": "Describe the video."}]}]
...     out = generate_with_video_embeds(model, processor, messages, video, max_new_tokens=64)
...     print(processor.batch_decode(out[:, -64:], skip_special_tokens=True))

Needs torch and transformers (tested with transformers 5.17).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch

VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"


def _cfg(model: Any) -> Any:
    return model.config


def _token_id(model: Any, name: str) -> int:
    cfg = _cfg(model)
    value = getattr(cfg, name, None)
    if value is None and hasattr(cfg, "text_config"):
        value = getattr(cfg.text_config, name, None)
    if value is None:
        raise ValueError(f"the model config has no {name}")
    return int(value)


def merge_size(model: Any) -> int:
    return int(_cfg(model).vision_config.spatial_merge_size)


def video_token_count(grid_thw: Sequence[int], spatial_merge_size: int = 2) -> int:
    """Placeholder tokens of one video: t*h*w / merge²."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // (spatial_merge_size * spatial_merge_size)


def _videos(result: Any) -> list:
    if isinstance(result, (list, tuple)):
        return list(result)
    return [result]


def _embeds_of(video: Any) -> torch.Tensor:
    t = video.tensor if hasattr(video, "tensor") else video["video_embeds"]
    return t


def _grid_of(video: Any) -> list:
    if hasattr(video, "grid_thw"):
        return [int(v) for v in video.grid_thw]
    g = video["video_grid_thw"]
    return [int(v) for v in torch.as_tensor(g).reshape(-1).tolist()]


def _seconds_of(video: Any) -> float:
    s = video.second_per_grid_ts if hasattr(video, "second_per_grid_ts") else video["second_per_grid_ts"]
    s = list(s) if isinstance(s, (list, tuple)) else torch.as_tensor(s).reshape(-1).tolist()
    if len(s) != 1:
        raise ValueError(f"expected one second_per_grid_ts per video, got {s}")
    return float(s[0])


def _expand_text(text: str, counts: list, video_token: str) -> str:
    """Replaces each video placeholder (one pad token) by its number of pad tokens."""
    parts = text.split(video_token)
    found = len(parts) - 1
    if found == sum(counts) and found > 0 and found != len(counts):
        return text  # already expanded
    if found != len(counts):
        raise ValueError(
            f"the prompt has {found} {video_token} placeholder(s) for {len(counts)} video(s); "
            f"put {VISION_START}{video_token}{VISION_END} (or a chat message item "
            '{"type": "video"}) where each video goes'
        )
    out = [parts[0]]
    for n, rest in zip(counts, parts[1:]):
        out.append(video_token * n)
        out.append(rest)
    return "".join(out)


def _expand_ids(ids: list, counts: list, video_id: int) -> list:
    found = sum(1 for i in ids if i == video_id)
    if found == sum(counts) and found > 0:
        # Already expanded (also the single-video case where n == 1).
        return ids
    if found != len(counts):
        raise ValueError(
            f"the prompt ids have {found} video token(s) ({video_id}) for {len(counts)} video(s) "
            f"needing {counts} tokens"
        )
    out: list = []
    k = 0
    for i in ids:
        if i == video_id:
            out.extend([video_id] * counts[k])
            k += 1
        else:
            out.append(i)
    return out


def prompt_input_ids(
    model: Any,
    processor: Any,
    prompt: Union[str, list, Sequence[int], torch.Tensor],
    counts: list,
) -> torch.Tensor:
    """The prompt as ``[1, seq]`` token ids with each video's placeholder expanded.

    ``prompt``: chat messages (a list of dicts; rendered with the processor's chat
    template, where a ``{"type": "video"}`` item becomes
    ``<|vision_start|><|video_pad|><|vision_end|>``), a text with one ``<|video_pad|>``
    per video, or token ids with one video token per video (or already expanded).
    """
    video_id = _token_id(model, "video_token_id")
    if isinstance(prompt, torch.Tensor):
        ids = prompt.reshape(-1).tolist()
        return torch.tensor([_expand_ids(ids, counts, video_id)], dtype=torch.long)
    if isinstance(prompt, (list, tuple)) and (not prompt or isinstance(prompt[0], int)):
        return torch.tensor([_expand_ids(list(prompt), counts, video_id)], dtype=torch.long)
    if processor is None:
        raise ValueError("a text or chat prompt needs the processor (or pass token ids)")
    if isinstance(prompt, (list, tuple)):
        text = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    else:
        text = str(prompt)
    video_token = getattr(processor, "video_token", VIDEO_PAD)
    text = _expand_text(text, counts, video_token)
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    n_video = int((ids == video_id).sum())
    if n_video != sum(counts):
        raise ValueError(f"tokenized prompt has {n_video} video tokens, expected {sum(counts)}")
    return ids


def video_inputs(
    model: Any,
    processor: Any,
    prompt: Union[str, list, Sequence[int], torch.Tensor],
    result: Any,
) -> dict:
    """The keyword arguments for ``model.generate`` / ``model(...)``, built from reel's
    result(s) instead of ``pixel_values_videos``.

    ``result``: a :class:`reel_client.Result` of ``embed()`` (or a list of them, in the
    order of the prompt's videos; or dicts with ``video_embeds``, ``video_grid_thw``,
    ``second_per_grid_ts``).
    """
    videos = _videos(result)
    m = merge_size(model)
    grids = [_grid_of(v) for v in videos]
    counts = [video_token_count(g, m) for g in grids]
    embeds = [_embeds_of(v) for v in videos]
    for n, e, g in zip(counts, embeds, grids):
        if e.dim() != 2 or e.shape[0] != n:
            raise ValueError(f"video embeddings of shape {tuple(e.shape)} do not fit grid {g} ({n} tokens)")
    emb_layer = model.get_input_embeddings()
    device = emb_layer.weight.device
    dtype = emb_layer.weight.dtype
    if embeds[0].shape[1] != emb_layer.weight.shape[1]:
        raise ValueError(
            f"video embeddings have {embeds[0].shape[1]} features, the language model's hidden "
            f"size is {emb_layer.weight.shape[1]} (wrong model?)"
        )

    input_ids = prompt_input_ids(model, processor, prompt, counts).to(device)
    video_id = _token_id(model, "video_token_id")
    image_id = _token_id(model, "image_token_id")
    video_mask = input_ids == video_id
    mm_token_type_ids = torch.zeros_like(input_ids, dtype=torch.int32)
    mm_token_type_ids[input_ids == image_id] = 1
    mm_token_type_ids[video_mask] = 2

    with torch.no_grad():
        inputs_embeds = emb_layer(input_ids)
    rows = torch.cat([e.to(device=device, dtype=dtype) for e in embeds], dim=0)
    inputs_embeds = inputs_embeds.masked_scatter(video_mask.unsqueeze(-1).expand_as(inputs_embeds), rows)

    return dict(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=torch.ones_like(input_ids),
        mm_token_type_ids=mm_token_type_ids,
        video_grid_thw=torch.tensor(grids, dtype=torch.long, device=device),
        second_per_grid_ts=torch.tensor([_seconds_of(v) for v in videos], dtype=torch.float32, device=device),
    )


def generate_with_video_embeds(
    model: Any,
    processor: Any,
    prompt: Union[str, list, Sequence[int], torch.Tensor],
    result: Any,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Runs ``model.generate`` with reel's video embeddings in place of the vision tower.

    ``model``: a transformers ``Qwen2_5_VLForConditionalGeneration``. ``processor``: its
    processor (or tokenizer); may be None when ``prompt`` is token ids. ``prompt``: chat
    messages, text, or ids (see :func:`prompt_input_ids`). ``result``: reel
    ``embed()`` result(s). Returns what ``generate`` returns: the prompt ids followed
    by the new tokens, ``[1, prompt + new]``.
    """
    kwargs = video_inputs(model, processor, prompt, result)
    with torch.no_grad():
        out = model.generate(**kwargs, **generate_kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    prompt_ids = kwargs["input_ids"]
    # Generation from inputs_embeds may return only the new tokens, depending on the
    # transformers version; always hand back prompt + new tokens.
    if sequences.shape[1] < prompt_ids.shape[1] or not torch.equal(
        sequences[:, : prompt_ids.shape[1]], prompt_ids
    ):
        sequences = torch.cat([prompt_ids, sequences], dim=1)
        if hasattr(out, "sequences"):
            out.sequences = sequences
            return out
        return sequences
    return out
