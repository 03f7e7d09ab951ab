"""AVLlmProcessor: chat template, modality tokens, placeholder expansion, batches, save/load, model end to end."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from media_fixtures import write_audio, write_video
from PIL import Image
from transformers import AutoProcessor

from transformers_avllm import AVLlmForConditionalGeneration, AVLlmProcessor, MediaNotFoundError, MissingStreamError
from transformers_avllm.models.avllm import tower_family
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config

WORDS = ["what", "is", "it", "?", "a", "dog", "barks", "red", "square"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return {
        "av": write_video(folder / "av.mp4", seconds=2, fps=10, audio=("aac", 440.0)),
        "silent": write_video(folder / "silent.mkv", seconds=2, fps=10),
        "audio": write_audio(folder / "tone.wav", seconds=1.5, tone_hz=660.0, rate=16000),
    }


def make(connector="avllm", vision="clip", audio="clap", **kwargs):
    config = tiny_config(vision=vision, audio=audio, connector_type=connector, **kwargs)
    return config, build_processor(config, build_tokenizer([" ".join(WORDS)]))


def user(*content):
    return [{"role": "user", "content": list(content)}]


def text(value):
    return {"type": "text", "text": value}


def count(ids, token_id):
    return int((torch.as_tensor(ids) == token_id).sum())


def test_video_with_audio_renders_aud_vis_and_expands_in_paper_order(media):
    config, processor = make()
    messages = user({"type": "video", "path": str(media["av"])}, text("what is it ?"))
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == (
        "USER: <AUD_VIS>\nwhat is it ? ASSISTANT:"
    )
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = inputs["input_ids"][0].tolist()
    video_positions = [i for i, t in enumerate(ids) if t == config.video_token_id]
    audio_positions = [i for i, t in enumerate(ids) if t == config.audio_token_id]
    assert len(video_positions) == config.num_video_tokens and len(audio_positions) == config.num_audio_tokens
    # one contiguous run: [T temporal][N spatial] video placeholders, then [K] audio placeholders
    assert video_positions == list(range(video_positions[0], video_positions[0] + config.num_video_tokens))
    assert audio_positions[0] == video_positions[-1] + 1
    assert inputs["pixel_values_videos"].shape == (1, config.num_frames, 3, 32, 32)
    assert inputs["input_features"].shape[:2] == (1, config.num_audio_segments)
    assert inputs["mm_token_type_ids"][0].tolist() == [
        2 if t == config.video_token_id else 3 if t == config.audio_token_id else 0 for t in ids
    ]


def test_use_audio_false_and_images_render_vis(media):
    config, processor = make()
    messages = user({"type": "video", "path": str(media["av"]), "use_audio": False}, text("what is it ?"))
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert "<VIS>" in processor.apply_chat_template(messages) and "input_features" not in inputs
    assert count(inputs["input_ids"], config.video_token_id) == config.num_video_tokens
    image = Image.fromarray(np.full((40, 50, 3), 200, dtype=np.uint8))
    inputs = processor.apply_chat_template(
        user({"type": "image", "image": image}, text("what ?")), tokenize=True, return_dict=True
    )
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert count(inputs["input_ids"], config.image_token_id) == config.num_image_tokens


def test_audio_file_renders_aud(media):
    config, processor = make()
    messages = user({"type": "audio", "path": str(media["audio"])}, text("what is it ?"))
    assert processor.apply_chat_template(messages).startswith("USER: <AUD>\n")
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert "pixel_values_videos" not in inputs
    assert count(inputs["input_ids"], config.audio_token_id) == config.num_audio_tokens


def test_silent_video_needs_explicit_choice(media):
    config, processor = make()
    messages = user({"type": "video", "path": str(media["silent"])}, text("what ?"))
    with pytest.raises(MissingStreamError, match="silent.mkv"):
        processor.apply_chat_template(messages, tokenize=True)
    visual = processor.apply_chat_template(messages, tokenize=True, return_dict=True, missing_audio="visual_only")
    assert "input_features" not in visual and "<VIS>" in processor.apply_chat_template(
        messages, missing_audio="visual_only"
    )
    silence = processor.apply_chat_template(messages, tokenize=True, return_dict=True, missing_audio="silence")
    assert count(silence["input_ids"], config.audio_token_id) == config.num_audio_tokens
    assert silence["input_features"].shape[:2] == (1, config.num_audio_segments)


@pytest.mark.parametrize(
    "connector,vision,audio", [("avllm", "clip", "clap"), ("stc", "siglip", "whisper"), ("pool", "clip", "ast")]
)
def test_processor_and_model_answer_end_to_end(media, connector, vision, audio):
    config, processor = make(connector, vision, audio, stc_depth=1)
    torch.manual_seed(0)
    model = AVLlmForConditionalGeneration(config).eval()
    conversations = [
        user({"type": "video", "path": str(media["av"])}, text("what is it ?")),
        user({"type": "audio", "path": str(media["audio"])}, text("what barks ?")),
        user({"type": "video", "path": str(media["av"]), "use_audio": False}, text("a red square ?")),
        user(text("what is it ?")),
    ]
    inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)
    expected_shape = tower_family(config.audio_config).input_shape(config.audio_config)
    assert inputs["input_features"].ndim == 2 + len(expected_shape)
    assert (inputs["attention_mask"][:, -1] == 1).all(), "left padding for generation"
    rows = [sorted(set(r.tolist()) - {0}) for r in inputs["mm_token_type_ids"]]
    assert rows == [[2, 3], [3], [2], []]
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    assert generated.shape == (4, inputs["input_ids"].shape[1] + 4)
    # each row alone gives the same answer as in the mixed batch
    for index, conversation in enumerate(conversations):
        alone = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        answer = model.generate(**alone, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
        assert answer[0, -4:].tolist() == generated[index, -4:].tolist()


def test_right_padding_for_training(media):
    _, processor = make()
    conversations = [user(text("what ?")), user({"type": "audio", "path": str(media["audio"])}, text("what is it ?"))]
    inputs = processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, processor_kwargs={"padding_side": "right"}
    )
    assert inputs["attention_mask"][0, 0] == 1 and inputs["attention_mask"][0, -1] == 0


def test_direct_call_matches_chat_template(media):
    config, processor = make()
    messages = user({"type": "video", "path": str(media["av"])}, text("what is it ?"))
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    from_chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(text=prompt, videos=str(media["av"]))
    assert direct.keys() == from_chat.keys()
    for key in direct:
        torch.testing.assert_close(direct[key], from_chat[key])
    with pytest.raises(ValueError, match="media left without a modality token"):
        processor(text="what is it ?", videos=str(media["av"]))
    with pytest.raises(ValueError, match="has no audio left"):
        processor(text="<AUD> what is it ?")


def test_decoded_arrays_are_accepted(media):
    config, processor = make()
    frames = np.random.default_rng(0).integers(0, 255, (9, 24, 30, 3), dtype=np.uint8)
    waveform = {"array": np.sin(np.arange(24000) / 10).astype(np.float32), "sampling_rate": 24000}
    inputs = processor(text=["<VIS> what ?", "<AUD> what ?"], videos=[frames], audio=[waveform])
    assert inputs["pixel_values_videos"].shape == (1, config.num_frames, 3, 32, 32)
    assert inputs["input_features"].shape[:2] == (1, config.num_audio_segments)
    with pytest.raises(MissingStreamError, match="decoded frames carry no audio"):
        processor(text="<AUD_VIS> what ?", videos=[frames])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_url_sources_match_local_files(media):
    """A video and an audio file served over HTTP on loopback give the same inputs as the files themselves."""
    folder = media["av"].parent
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _, processor = make()
    try:
        by_url = processor.apply_chat_template(
            user(
                {"type": "video", "url": f"{base}/av.mp4"},
                {"type": "audio", "url": f"{base}/tone.wav"},
                text("what ?"),
            ),
            tokenize=True,
            return_dict=True,
        )
        with pytest.raises(MediaNotFoundError, match="missing.mp4"):
            processor.apply_chat_template(user({"type": "video", "url": f"{base}/missing.mp4"}), tokenize=True)
    finally:
        server.shutdown()
        server.server_close()
    by_path = processor.apply_chat_template(
        user(
            {"type": "video", "path": str(media["av"])}, {"type": "audio", "path": str(media["audio"])}, text("what ?")
        ),
        tokenize=True,
        return_dict=True,
    )
    assert by_url.keys() == by_path.keys()
    for key in by_path:
        torch.testing.assert_close(by_url[key], by_path[key])


def test_multi_turn_template_marks_assistant_turns(media):
    _, processor = make()
    messages = [
        {"role": "system", "content": "a dog"},
        {"role": "user", "content": [{"type": "audio", "path": str(media["audio"])}, text("what is it ?")]},
        {"role": "assistant", "content": "a dog barks"},
        {"role": "user", "content": "red ?"},
    ]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == "a dog USER: <AUD>\nwhat is it ? ASSISTANT: a dog barks</s>USER: red ? ASSISTANT:"
    assert "{% generation %}" in processor.chat_template.replace("{%- generation -%}", "{% generation %}")


def test_one_tower_models_reject_the_other_modality(media):
    _, audio_only = make(vision=None)
    messages = user({"type": "video", "path": str(media["av"])}, text("what ?"))
    # an audio-only model hears a video's own track
    assert audio_only.apply_chat_template(messages).startswith("USER: <AUD>\n")
    with pytest.raises(ValueError, match="no audio tower"):
        make(audio=None)[1].apply_chat_template(user({"type": "audio", "path": str(media["audio"])}), tokenize=True)


def test_save_and_load_round_trip(tmp_path, media):
    config, processor = make()
    processor.save_pretrained(tmp_path)
    config.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, AVLlmProcessor)
    assert (reloaded.num_video_tokens, reloaded.num_audio_tokens) == (config.num_video_tokens, config.num_audio_tokens)
    assert reloaded.chat_template == processor.chat_template
    messages = user({"type": "video", "path": str(media["av"])}, text("what is it ?"))
    expected = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    actual = reloaded.apply_chat_template(messages, tokenize=True, return_dict=True)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])


def test_frame_timestamps_are_returned_on_request(media):
    config, processor = make()
    messages = user({"type": "video", "path": str(media["av"])}, text("what ?"))
    inputs = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, processor_kwargs={"return_video_metadata": True}
    )
    (timestamps,) = inputs.pop("video_timestamps")
    # 2 s clip, 4 frames at segment midpoints 0.25, 0.75, 1.25, 1.75 s (10 fps: the first frame at or after each)
    assert timestamps == pytest.approx([0.3, 0.8, 1.3, 1.8], abs=0.051)
    assert "video_timestamps" not in processor.apply_chat_template(messages, tokenize=True, return_dict=True)


def test_invalid_missing_audio_is_an_error(media):
    config, processor = make()
    messages = user({"type": "video", "path": str(media["av"])}, text("what ?"))
    with pytest.raises(ValueError, match=r"missing_audio must be one of \('error', 'visual_only', 'silence'\)"):
        processor.apply_chat_template(messages, tokenize=True, missing_audio="mute")
    with pytest.raises(ValueError, match="missing_audio must be one of"):
        processor(text="<AUD> what ?", audio=[np.zeros(1600, dtype=np.float32)], missing_audio="visual-only")
    with pytest.raises(ValueError, match="missing_audio must be one of"):
        AVLlmProcessor.for_model(config, processor.tokenizer, missing_audio="none")


def test_inherited_decode_methods_are_the_tokenizers(media):
    _, processor = make()
    inputs = processor.apply_chat_template(
        [user({"type": "audio", "path": str(media["audio"])}, text("what is it ?")), user(text("a dog barks"))],
        tokenize=True,
        return_dict=True,
    )
    ids = inputs["input_ids"]
    for skip in (True, False):
        assert processor.batch_decode(ids, skip_special_tokens=skip) == processor.tokenizer.batch_decode(
            ids, skip_special_tokens=skip
        )
        assert processor.decode(ids[1], skip_special_tokens=skip) == processor.tokenizer.decode(
            ids[1], skip_special_tokens=skip
        )
    assert processor.batch_decode(ids, skip_special_tokens=True)[1].endswith("a dog barks")


@pytest.mark.parametrize("connector", ["avllm", "stc"])
def test_num_multimodal_tokens_match_the_expanded_placeholders(media, connector):
    config, processor = make(connector, stc_depth=1)
    counts = processor._get_num_multimodal_tokens(
        image_sizes=[(40, 50), (300, 200)], video_sizes=[(9, 24, 30)], audio_lengths=[24000, 100]
    )
    assert type(counts).__name__ == "MultiModalData"
    image = Image.fromarray(np.full((40, 50, 3), 200, dtype=np.uint8))
    frames = np.zeros((9, 24, 30, 3), dtype=np.uint8)
    inputs = processor.apply_chat_template(
        user(
            {"type": "image", "image": image},
            {"type": "video", "video": frames, "use_audio": False},
            {"type": "audio", "path": str(media["audio"])},
        ),
        tokenize=True,
        return_dict=True,
    )
    assert counts.num_image_tokens == [count(inputs["input_ids"], config.image_token_id)] * 2
    assert counts.num_image_patches == [1, 1]
    assert counts.num_video_tokens == [count(inputs["input_ids"], config.video_token_id)]
    assert counts.num_audio_tokens == [count(inputs["input_ids"], config.audio_token_id)] * 2
    assert counts.num_image_tokens[0] == config.num_image_tokens
    assert counts.num_video_tokens[0] == config.num_video_tokens
