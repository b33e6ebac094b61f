"""HF transformers end to end: a tiny random Qwen2.5-VL generates the same tokens from
reel's embeddings (via the plugin) as from its own vision tower. See e2e_hf.py."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import e2e_hf  # noqa: E402
from conftest import VIDEO  # noqa: E402
from reel_client import hf  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return e2e_hf.build_model()


def _report(request, report):
    """Shows the report in pytest's output (even when it passes)."""
    line = "HF e2e: " + json.dumps(report)
    print(line)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line("")
            tr.write_line(line)


@pytest.mark.parametrize("output,dtype", [("shm", "f32"), ("inline", "f32")])
def test_generate_same_tokens(request, server, model, output, dtype):
    with server.client() as client:
        report = e2e_hf.run(client, model, output=output, dtype=dtype)
    _report(request, report)
    assert report["max_abs_diff_embeddings"] < 1e-4, report
    assert report["control_differs"], "the output does not depend on the video: vacuous test"
    assert report["equal"], report
    assert len(report["hf_tokens"]) == 16


@pytest.mark.parametrize("video,fps", [("hevc_main.mp4", 2.0), ("h264_longgop.mp4", 0.5)])
def test_other_videos(request, server, model, video, fps):
    # fps 0.5 on a 12 s video: second_per_grid_ts 4.0, temporal position ids step by 2*4.
    with server.client() as client:
        report = e2e_hf.run(client, model, video=video, output="shm", fps=fps)
    _report(request, report)
    assert report["second_per_grid_ts"] == [2.0 / fps]
    assert report["equal"] and report["control_differs"], report


def test_helper_matches_own_forward(server, model):
    """With the model's own vision output as the "embeddings", the helper's inputs give
    exactly the logits of the normal pixel path (positions included)."""
    with server.client() as client, client.frames(VIDEO, output="inline") as fr:
        grid = fr.video_grid_thw
        with torch.no_grad():
            own_embeds = model.model.visual(fr.tensor, grid_thw=grid).pooler_output
        video = {
            "video_embeds": own_embeds,
            "video_grid_thw": grid,
            "second_per_grid_ts": fr.second_per_grid_ts,
        }
        n = own_embeds.shape[0]
        kwargs = hf.video_inputs(model, None, e2e_hf.prompt_ids(model.config), video)
        ids = kwargs["input_ids"]
        assert ids.shape[1] == len(e2e_hf.prompt_ids(model.config, n))
        assert int((kwargs["mm_token_type_ids"] == 2).sum()) == n
        with torch.no_grad():
            model.model.rope_deltas = None
            a = model(
                input_ids=ids,
                pixel_values_videos=fr.tensor,
                video_grid_thw=grid,
                second_per_grid_ts=torch.tensor(fr.second_per_grid_ts),
                mm_token_type_ids=kwargs["mm_token_type_ids"],
            ).logits
            model.model.rope_deltas = None
            b = model(**kwargs).logits
            model.model.rope_deltas = None
            no_types = {k: v for k, v in kwargs.items() if k != "mm_token_type_ids"}
            c = model(**no_types).logits
            model.model.rope_deltas = None
        assert torch.equal(a, b)
        # Without mm_token_type_ids transformers falls back to 1D positions: different.
        assert not torch.allclose(a, c)


def _tiny_processor():
    """A Qwen2_5_VLProcessor with a made-up word-level tokenizer (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = {
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<|vision_start|>": 151652,
        "<|vision_end|>": 151653,
        "<|image_pad|>": 151655,
        "<|video_pad|>": 151656,
    }
    words = ["user", "assistant", "describe", "the", "video", ".", "\n", "[UNK]"]
    vocab = {w: i + 10 for i, w in enumerate(words)}
    vocab.update(specials)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.add_special_tokens({"additional_special_tokens": list(specials)})
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=fast,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=template,
    )


def test_prompt_forms(model):
    try:
        processor = _tiny_processor()
    except Exception as e:  # pragma: no cover - depends on the transformers version
        pytest.skip(f"cannot build an offline processor: {e}")
    grid = [2, 4, 6]
    n = hf.video_token_count(grid, 2)
    messages = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": "describe the video ."}],
        }
    ]
    from_messages = hf.prompt_input_ids(model, processor, messages, [n])
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.count("<|video_pad|>") == 1
    from_text = hf.prompt_input_ids(model, processor, text, [n])
    video_id = model.config.video_token_id
    assert int((from_messages == video_id).sum()) == n
    assert torch.equal(from_messages, from_text)
    ids = from_messages[0].tolist()
    collapsed = [i for k, i in enumerate(ids) if i != video_id or ids[k - 1] != video_id]
    assert torch.equal(hf.prompt_input_ids(model, None, collapsed, [n]), from_messages)
    assert torch.equal(hf.prompt_input_ids(model, None, torch.tensor(ids), [n]), from_messages)
    with pytest.raises(ValueError, match="placeholder"):
        hf.prompt_input_ids(model, processor, "no video here", [n])
    with pytest.raises(ValueError):
        hf.prompt_input_ids(model, None, [1, 2, 3], [n])
    # Two videos, in order.
    two = hf.prompt_input_ids(model, None, [5, video_id, 6, video_id, 7], [3, 2])
    assert two[0].tolist() == [5] + [video_id] * 3 + [6] + [video_id] * 2 + [7]
