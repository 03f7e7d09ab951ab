"""Instruction-data curation (`avllm curate`): contexts from tiny local perception models, prompt templates, a real
HTTP LLM (the local OpenAI-compatible stub), validation, de-duplication, the mix, resuming, and training on the
output with the project's collator unchanged."""

import hashlib
import json
import re
import shutil

import pytest
import torch
from datasets import load_dataset
from huggingface_hub import HfApi
from media_fixtures import write_audio, write_video
from openai_stub import OpenAIStub, StubResponse
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    CLIPImageProcessor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    RobertaTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
    pipeline,
)
from trl import SFTConfig

from transformers_avllm import AVLlmForConditionalGeneration
from transformers_avllm.cli import main
from transformers_avllm.curation import (
    TABLE10_MIX,
    AudioCaptioner,
    AudioTagger,
    CurationError,
    FrameCaptioner,
    MediaContext,
    Perception,
    SpeechTranscriber,
    TemplateError,
    curate,
    describe_media,
    load_templates,
    parse_conversation,
    parse_mix,
    plan_jobs,
    push_dataset,
)
from transformers_avllm.curation.context import AUDIO_CAPTION_PROMPT, AUDIO_LABELS_FILE, read_labels
from transformers_avllm.curation.templates import SAMPLE_TYPES, TASKS, TEMPLATE_DIR
from transformers_avllm.export import HubAuthError
from transformers_avllm.llm_client import MalformedReply, OpenAIChatBackend
from transformers_avllm.models.avllm import load_audio, load_video, split_audio_segments
from transformers_avllm.tiny import build_processor, build_tokenizer, tiny_config, tiny_text_config, tiny_vision_config
from transformers_avllm.training import AVLlmSFTTrainer, load_av_dataset

SOUND_LABELS = ["dog barking", "speech", "music", "siren"]
CAPTION_WORDS = "a picture of red blue square on grey background with".split()
MODALITY_TOKEN = {"audio": "<AUD>", "visual": "<VIS>", "audio_visual": "<AUD_VIS>"}


# ---- tiny perception models saved as local checkpoints -----------------------------------------------------------


def _word_tokenizer(words, specials, unk):
    tokenizer = Tokenizer(models.WordLevel(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=specials))
    return tokenizer


def save_blip(folder):
    """A random BLIP captioner that always writes at least 3 words."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizerFast(
        tokenizer_object=_word_tokenizer(CAPTION_WORDS, specials, "[UNK]"),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            encoder_hidden_size=32,
            max_position_embeddings=64,
            **text,
            pad_token_id=0,
            bos_token_id=2,
            sep_token_id=3,
        ),
        vision_config=dict(image_size=32, patch_size=8, **text),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 3
    model.save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return str(folder)


def save_clap(folder):
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    words = sorted({word for label in SOUND_LABELS for word in label.split()} | {"a", "sound", "of"})
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=_word_tokenizer(words, specials, "<unk>"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        ),
        audio_config=dict(
            hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, spec_size=64,
            window_size=4, num_mel_bins=16, patch_size=4, patch_stride=[4, 4], enable_fusion=False,
        ),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(folder)
    extractor = ClapFeatureExtractor(
        feature_size=16, sampling_rate=16000, max_length_s=1, hop_length=160, fft_window_size=400,
        truncation="rand_trunc",
    )  # fmt: skip
    ClapProcessor(extractor, tokenizer).save_pretrained(folder)
    return str(folder)


def save_ast(folder):
    config = ASTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_mel_bins=16,
        max_length=100, id2label=dict(enumerate(SOUND_LABELS)),
    )  # fmt: skip
    torch.manual_seed(0)
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=16, max_length=100, sampling_rate=16000).save_pretrained(folder)
    return str(folder)


def save_whisper(folder):
    """A random Whisper ASR model that always says at least 2 words. As in Whisper's own vocabulary, nothing but
    timestamps follows `<|notimestamps|>`: the pipeline reads every id after it as a timestamp."""
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
    tokenizer = WhisperTokenizerFast(
        tokenizer_object=_word_tokenizer("hello world the dog is barking".split(), specials, "<|endoftext|>"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"extra_special_tokens": specials[1:] + ["<|notimestamps|>"]})
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=50,
        max_target_positions=448, pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.no_timestamps_token_id = len(tokenizer) - 1
    model.generation_config.min_new_tokens, model.generation_config.max_new_tokens = 2, 4
    model.generation_config.suppress_tokens = [1, 2, 3, len(tokenizer) - 1]  # words only
    model.save_pretrained(folder)
    extractor = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, chunk_length=1, hop_length=160)
    WhisperProcessor(extractor, tokenizer).save_pretrained(folder)
    return str(folder)


def save_llava(folder):
    """A random chat captioner (LLaVA: CLIP + Llama, with a chat template)."""
    tokenizer = build_tokenizer([" ".join(CAPTION_WORDS) + " describe this image in one sentence ."])
    template = (
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor, tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=template, image_token="<image>",
    ).save_pretrained(folder)  # fmt: skip
    config = LlavaConfig(
        vision_config=tiny_vision_config("clip"), text_config=tiny_text_config(), vision_feature_layer=-1,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 3
    model.save_pretrained(folder)
    return str(folder)


def save_llm(folder):
    """A random local text-generation model: its replies are never valid conversations."""
    tokenizer = build_tokenizer(["question answer conversation the a dog"], vocab_size=64, media_tokens=False)
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    ).save_pretrained(folder)  # fmt: skip
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_qwen2_audio(folder):
    """A random Qwen2-Audio (Whisper-style encoder + Qwen2 LLM, with its processor's chat template): an
    audio-text-to-text model of transformers' any-to-any pipeline. Writes at least 3 words."""
    tokenizer = build_tokenizer(
        ["a dog is barking loudly in the rain describe the audio in one sentence . system you are helpful assistant"],
        vocab_size=96,
        media_tokens=False,
    )
    audio_tokens = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    tokenizer.add_special_tokens({"extra_special_tokens": ["<|im_start|>", "<|im_end|>", *audio_tokens]})
    extractor = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, chunk_length=1, hop_length=160)
    config = Qwen2AudioConfig(
        audio_config=dict(
            d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=16,
            max_source_positions=50,
        ),
        text_config=tiny_text_config("qwen2", vocab_size=len(tokenizer)).to_dict(),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 3
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(folder)
    Qwen2AudioProcessor(extractor, tokenizer).save_pretrained(folder)  # with Qwen2-Audio's default chat template
    return str(folder)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("perception")
    return {
        "blip": save_blip(root / "blip"),
        "clap": save_clap(root / "clap"),
        "ast": save_ast(root / "ast"),
        "whisper": save_whisper(root / "whisper"),
        "llava": save_llava(root / "llava"),
        "llm": save_llm(root / "llm"),
        "qwen2_audio": save_qwen2_audio(root / "qwen2_audio"),
    }


@pytest.fixture(scope="module")
def perception(checkpoints):
    return Perception(
        FrameCaptioner(checkpoints["blip"], max_new_tokens=5), AudioTagger(checkpoints["clap"], SOUND_LABELS)
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Two videos with sound (different lengths), a silent video, a sound file and a file that is not a video."""
    folder = tmp_path_factory.mktemp("media")
    write_video(folder / "street.mp4", seconds=1.0, fps=8, audio=("aac", 440.0))
    (folder / "park").mkdir()
    write_video(folder / "park" / "birds.mp4", seconds=1.5, fps=8, audio=("aac", 880.0), start_index=20)
    write_video(folder / "silent.mkv", seconds=1.0, fps=8)
    write_audio(folder / "tone.wav", seconds=1.2, tone_hz=660.0, rate=16000)
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    return folder


# ---- a scripted LLM --------------------------------------------------------------------------------------------


def task_of(request) -> str:
    prompt = request.prompt
    if "Design a conversation" in prompt:
        return "conversation"
    return "description" if "detailed description" in prompt else "reasoning"


def good_reply(request) -> str:
    """A valid conversation for the prompt's task, different for every prompt."""
    tag = hashlib.sha256(request.prompt.encode()).hexdigest()[:8]
    turns = [{"question": f"What happens in {tag}?", "answer": f"Something happens, {tag}."}]
    if task_of(request) == "conversation":
        turns.append({"question": f"And after {tag}?", "answer": "It goes on a little longer."})
    return json.dumps({"conversation": turns})


# ---- templates ---------------------------------------------------------------------------------------------------


def test_templates_give_the_four_parts_for_every_task_and_sample_type():
    templates = load_templates()
    for task in TASKS:
        for sample_type in SAMPLE_TYPES:
            system, user = templates[task].messages(sample_type, "[0.5s] a red square", "[0.0-1.0s] siren (0.90)")
            assert system["role"] == "system" and "You are an AI" in system["content"]
            assert user["content"].index("EXAMPLE:") < user["content"].index("CONTEXT:")
            assert '{"conversation": [' in user["content"]  # the reply format the parser expects
            assert ("a red square" in user["content"]) == (sample_type != "audio")
            assert ("siren (0.90)" in user["content"]) == (sample_type != "visual")
            assert "<VC>" not in user["content"] and "<AC>" not in user["content"]
    av = templates["conversation"].messages("audio_visual")[1]["content"]
    assert "both what is seen and what is heard" in av and "both" not in templates["conversation"].part(
        "REQUIREMENT", "visual"
    )


def test_edited_templates_are_used_and_broken_ones_are_refused(tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, folder)
    reasoning = folder / "reasoning.md"
    reasoning.write_text(reasoning.read_text().replace("Ask 1 or 2 questions", "Ask ONE sharp question"))
    assert "Ask ONE sharp question" in load_templates(folder)["reasoning"].messages("visual")[1]["content"]
    # a task file's own ROLE replaces the shared one
    reasoning.write_text(reasoning.read_text() + "\n## ROLE\nYou are a detective.\n")
    assert load_templates(folder)["reasoning"].messages("audio")[0]["content"] == "You are a detective."
    shared = (folder / "shared.md").read_text()
    (folder / "shared.md").write_text(
        shared.replace("Audio segments:\n<AC>\n\n## CONTEXT [audio_visual]", "x\n\n## CONTEXT [audio_visual]")
    )
    with pytest.raises(TemplateError, match=r"CONTEXT for audio samples needs <AC>"):
        load_templates(folder)
    (folder / "shared.md").write_text(shared + "\n## EXAMPEL\ntypo\n")
    with pytest.raises(TemplateError, match="unknown section"):
        load_templates(folder)
    (folder / "shared.md").unlink()
    with pytest.raises(TemplateError, match="not found"):
        load_templates(folder)


# ---- parsing the LLM's reply -------------------------------------------------------------------------------------

VALID = {
    "conversation": [
        {"question": "What barks?", "answer": "A small dog."},
        {"question": "Where?", "answer": "In a park."},
    ]
}


def test_parse_conversation_takes_json_out_of_prose_and_fences():
    reply = "Sure! Here it is:\n```json\n" + json.dumps(VALID) + "\n```\nHope this helps {not json}."
    assert parse_conversation(reply, "conversation") == VALID["conversation"]
    assert parse_conversation(json.dumps(VALID["conversation"]), "conversation") == VALID["conversation"]
    one = {"conversation": [{"question": " Describe it. ", "answer": " A dog barks. "}]}
    assert parse_conversation(json.dumps(one), "description") == [
        {"question": "Describe it.", "answer": "A dog barks."}
    ]


def turns(*pairs) -> str:
    return json.dumps({"conversation": [{"question": q, "answer": a} for q, a in pairs]})


@pytest.mark.parametrize(
    "reply,task,kind",
    [
        ("I cannot help with that.", "conversation", "no_conversation"),
        (turns(("What barks?", "A dog."), ("Where?", "Here."))[:-2], "conversation", "no_conversation"),
        ('{"conversation": []}', "reasoning", "no_conversation"),
        (turns(("What?", ""), ("Why?", "B")), "conversation", "bad_turn"),
        ('{"conversation": [{"question": "What?", "answer": 4}]}', "reasoning", "bad_turn"),
        (json.dumps(VALID), "description", "turn_count"),
        (turns(("What?", "A dog.")), "conversation", "turn_count"),
        (turns(("What?", "a" * 5000)), "reasoning", "too_long"),
        (turns(("What?", "According to the captions, a dog.")), "reasoning", "context_leak"),
        (turns(("Sound?", "The audio tags say siren.")), "description", "context_leak"),
        (turns(("What is it?", "A."), ("what is it", "B.")), "conversation", "repeated_question"),
    ],
)
def test_parse_conversation_rejects_malformed_replies(reply, task, kind):
    with pytest.raises(MalformedReply) as caught:
        parse_conversation(reply, task)
    assert caught.value.kind == kind


# ---- the mix -----------------------------------------------------------------------------------------------------


def test_mix_from_string_file_and_table10(tmp_path):
    assert parse_mix("conversation/visual=3, reasoning/audio_visual=1") == {
        ("conversation", "visual"): 3.0,
        ("reasoning", "audio_visual"): 1.0,
    }
    (tmp_path / "mix.yaml").write_text("description:\n  audio: 2\n  visual: 0\n")
    assert parse_mix(str(tmp_path / "mix.yaml")) == {("description", "audio"): 2.0}
    table10 = parse_mix(None)
    assert sum(table10.values()) == 260 and table10[("conversation", "visual")] == 60  # AV-LLM Table 10, thousands
    for bad in ("conversation/sound=1", "conversation=1", "reasoning/audio=0"):
        with pytest.raises(CurationError):
            parse_mix(bad)


def context(path, video, audio):
    return MediaContext(path, has_video=video, has_audio=audio, duration=1.0)


def test_plan_follows_the_mix_and_what_each_file_can_give():
    contexts = [context(f"v{i}.mp4", True, True) for i in range(6)] + [
        context("silent.mkv", True, False),
        context("a.wav", False, True),
    ]
    mix = parse_mix("conversation/visual=2,description/audio=1,reasoning/audio_visual=1")
    jobs, quotas = plan_jobs(contexts, mix, num_samples=8, seed=1)
    assert quotas == {("conversation", "visual"): 4, ("description", "audio"): 2, ("reasoning", "audio_visual"): 2}
    cells = [(job.task, job.sample_type) for job in jobs]
    assert {cell: cells.count(cell) for cell in set(cells)} == quotas
    assert len({job.id for job in jobs}) == len(jobs)
    by_media = {job.media: job.sample_type for job in jobs}
    assert by_media.get("a.wav") in (None, "audio") and by_media.get("silent.mkv") in (None, "visual")
    assert jobs == plan_jobs(contexts, mix, num_samples=8, seed=1)[0]  # seeded
    # a cell with fewer eligible files than its quota gets what there is
    jobs, quotas = plan_jobs(contexts, parse_mix("description/audio=1"), num_samples=20)
    assert quotas[("description", "audio")] == 20 and len(jobs) == 7  # 6 videos with sound + the wav


# ---- contexts ----------------------------------------------------------------------------------------------------


def test_contexts_from_tiny_perception_models(media, checkpoints, perception):
    street = describe_media(media / "street.mp4", media, perception, num_frames=4, num_segments=2)
    assert street.path == "street.mp4" and street.sample_types == ("audio", "visual", "audio_visual")
    clip = load_video(media / "street.mp4", 4)
    assert [frame["time"] for frame in street.frames] == [round(t, 2) for t in clip.timestamps]
    assert all(len(frame["caption"].split()) >= 3 for frame in street.frames)
    assert [(s["start"], s["end"]) for s in street.segments] == [(0.0, 0.5), (0.5, 1.0)]
    for segment in street.segments:
        assert len(segment["tags"]) == 3 and {label for label, _ in segment["tags"]} <= set(SOUND_LABELS)
        scores = [score for _, score in segment["tags"]]
        assert scores == sorted(scores, reverse=True)
    assert street.visual_text().splitlines()[0].startswith(f"[{street.frames[0]['time']:.1f}s] ")
    assert street.audio_text().splitlines()[1].startswith("[0.5-1.0s] ")

    silent = describe_media(media / "silent.mkv", media, perception)
    assert silent.sample_types == ("visual",) and silent.segments == []
    tone = describe_media(media / "tone.wav", media, perception, num_segments=3)
    assert tone.sample_types == ("audio",) and tone.frames == [] and len(tone.segments) == 3

    # an audio classifier (AST, handed over as a ready pipeline) instead of zero-shot CLAP, and what is said (Whisper)
    classifier = pipeline("audio-classification", model=checkpoints["ast"])
    listening = Perception(
        tagger=AudioTagger(classifier, top_k=2), transcriber=SpeechTranscriber(checkpoints["whisper"])
    )
    assert not listening.tagger.zero_shot and listening.tagger.pipe is classifier
    heard = describe_media(media / "park" / "birds.mp4", media, listening, num_segments=2)
    assert heard.sample_types == ("audio",)  # no captioner: the frames are not described
    said = "hello|world|the|dog|is|barking"
    assert all(len(s["tags"]) == 2 and re.fullmatch(rf"( ?({said}))+", s["speech"]) for s in heard.segments)
    assert f'speech: "{heard.segments[0]["speech"]}"' in heard.audio_text()


def test_chat_captioners_are_asked_the_caption_prompt(media, checkpoints, monkeypatch):
    captioner = FrameCaptioner(checkpoints["llava"], max_new_tokens=4, batch_size=2)
    asked = []
    render = captioner.pipe.processor.apply_chat_template
    monkeypatch.setattr(
        captioner.pipe.processor,
        "apply_chat_template",
        lambda messages, **kw: asked.append(messages) or render(messages, **kw),
    )
    captions = captioner(load_video(media / "street.mp4", 3).frames)
    assert captioner.chat and len(captions) == 3 and all(len(caption.split()) >= 3 for caption in captions)
    assert [[message["content"][1]["text"] for message in chat] for chat in asked] == [
        ["Describe this image in one sentence."]
    ] * 3


def test_audio_captioner_asks_the_caption_prompt_as_transformers_would(media, checkpoints):
    """Audio captions (AV-LLM section 3.3's <AC>) from an audio-text-to-text model through transformers' pipeline:
    the same text as the model's processor + generate, asked the caption prompt."""
    captioner = AudioCaptioner(checkpoints["qwen2_audio"], max_new_tokens=6)
    assert captioner.sampling_rate == 16000 and captioner.prompt == AUDIO_CAPTION_PROMPT
    segments = split_audio_segments(load_audio(media / "street.mp4", 16000), 2)
    captions = captioner(segments)

    processor = Qwen2AudioProcessor.from_pretrained(checkpoints["qwen2_audio"])
    model = Qwen2AudioForConditionalGeneration.from_pretrained(checkpoints["qwen2_audio"]).eval()
    for segment, caption in zip(segments, captions, strict=True):
        asked = processor.apply_chat_template(captioner.messages(segment), tokenize=False, add_generation_prompt=True)
        assert asked.endswith(f"<|audio_eos|>\n{AUDIO_CAPTION_PROMPT}<|im_end|>\n<|im_start|>assistant\n")
        inputs = processor(text=[asked], audio=[segment], return_tensors="pt")
        generated = model.generate(**inputs, max_new_tokens=6)
        expected = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        assert caption == expected.strip() and len(caption.split()) >= 3

    without_template = pipeline("any-to-any", model=checkpoints["qwen2_audio"])
    without_template.processor.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        AudioCaptioner(without_template)


def test_audio_context_is_captions_with_the_tags_as_fallback(media, checkpoints, perception):
    captioner = AudioCaptioner(checkpoints["qwen2_audio"], max_new_tokens=5)
    captions = Perception(perception.captioner, audio_captioner=captioner)
    street = describe_media(media / "street.mp4", media, captions, num_frames=2, num_segments=2)
    assert street.sample_types == ("audio", "visual", "audio_visual")
    expected = captioner(split_audio_segments(load_audio(media / "street.mp4", 16000), 2))
    assert [segment["caption"] for segment in street.segments] == expected
    assert all("tags" not in segment for segment in street.segments)
    assert [(s["start"], s["end"]) for s in street.segments] == [(0.0, 0.5), (0.5, 1.0)]
    assert street.audio_text().splitlines() == [f"[0.0-0.5s] {expected[0]}", f"[0.5-1.0s] {expected[1]}"]
    # both: the caption, then the sound events; the tagger alone: its tags, as before
    both = describe_media(media / "tone.wav", media, Perception(tagger=perception.tagger, audio_captioner=captioner))
    line = both.audio_text().splitlines()[0]
    assert line.startswith(f"[0.0-0.3s] {both.segments[0]['caption']}; sound events: ")
    assert re.search(r"; sound events: [a-z ]+ \(\d\.\d\d\)", line)
    tags_only = describe_media(media / "tone.wav", media, Perception(tagger=perception.tagger))
    assert all("caption" not in segment for segment in tags_only.segments)
    assert tags_only.audio_text().splitlines()[0].startswith("[0.0-0.3s] ")


# ---- the pipeline over HTTP --------------------------------------------------------------------------------------

MIX = "conversation/audio_visual=2,conversation/visual=1,description/audio=2,reasoning/visual=1,reasoning/audio=1"


def scripted(request):
    """Valid conversations, except: reasoning about sounds is always prose (malformed), and the first request fails
    with a server error (retried)."""
    if request.index == 0:
        return StubResponse(status=500)
    if task_of(request) == "reasoning" and "Audio segments:" in request.prompt:
        return "The sound is probably a siren, I think."
    return good_reply(request)


@pytest.fixture(scope="module")
def curated(media, perception, tmp_path_factory):
    output = tmp_path_factory.mktemp("curated")
    with OpenAIStub(scripted) as stub, pytest.MonkeyPatch.context() as patch:
        patch.setenv("CURATE_KEY", "sk-curate")
        backend = OpenAIChatBackend(stub.base_url, "stub-gpt", api_key_env="CURATE_KEY", max_tokens=512)
        summary = curate(
            media, output, backend, perception, mix=MIX, num_samples=7, num_frames=4, workers=2, retry_delay=0.01
        )
        requests = list(stub.requests)
    return output, summary, requests


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_curation_writes_valid_samples_with_the_right_modality(media, curated):
    output, summary, _ = curated
    rows = read_jsonl(output / "train.jsonl")
    assert summary["samples"] == len(rows) == 6 and summary["rejected"] == 1
    processor = build_processor(tiny_config(), build_tokenizer(["what happens"]))
    for row in rows:
        item = row["messages"][0]["content"][0]
        assert (media / item["path"]).is_file() and row["media"] == item["path"]
        item["path"] = str(media / item["path"])
        prompt = processor.apply_chat_template(row["messages"])
        assert prompt.count(MODALITY_TOKEN[row["sample_type"]]) == 1
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * (len(row["messages"]) // 2)
        assert len(row["messages"]) == (4 if row["task"] == "conversation" else 2)
        if row["media"] == "tone.wav":
            assert row["sample_type"] == "audio"
        if row["media"] == "silent.mkv":
            assert row["sample_type"] == "visual"
    assert "broken.mp4" in summary["media_errors"] and "broken.mp4" in summary["media_errors"]["broken.mp4"]
    assert not any(row["media"] == "broken.mp4" for row in rows)


def test_malformed_replies_are_rejected_counted_and_never_written(curated):
    output, summary, requests = curated
    rejected = read_jsonl(output / "rejected.jsonl")
    assert [(row["task"], row["sample_type"], row["kind"]) for row in rejected] == [
        ("reasoning", "audio", "no_conversation")
    ]
    assert rejected[0]["reply"] == "The sound is probably a siren, I think."
    assert rejected[0]["id"] not in {row["id"] for row in read_jsonl(output / "train.jsonl")}
    assert summary["rejection_kinds"] == {"no_conversation": 1}
    assert summary["llm"]["malformed"] == 3  # asked max_attempts=3 times
    assert summary["llm"]["errors"] == 1 and summary["llm"]["failures"] == 1 and summary["to_retry"] == []
    assert len(requests) == 6 + 3 + 1


def test_summary_reports_the_mix_per_task_and_sample_type(curated):
    _, summary, _ = curated
    cells = summary["cells"]
    assert set(cells) == set(MIX.replace("=", ",").split(",")[::2])
    assert sum(cell["quota"] for cell in cells.values()) == 7
    assert cells["conversation/audio_visual"] == {"weight": 2, "quota": 2, "planned": 2, "accepted": 2, "rejected": 0}
    assert cells["description/audio"]["quota"] == 2 and cells["description/audio"]["accepted"] == 2
    for cell in cells.values():
        assert cell["planned"] == cell["accepted"] + cell["rejected"]
    summary_file = json.loads((curated[0] / "summary.json").read_text())
    assert summary_file["cells"] == cells
    assert "conversation/audio_visual" in (curated[0] / "README.md").read_text()


def test_prompts_carry_the_contexts_and_the_api_key(curated):
    output, _, requests = curated
    rows = read_jsonl(output / "contexts.jsonl")
    contexts = {row["path"]: MediaContext(**row) for row in rows if "error" not in row}
    assert set(contexts) == {"street.mp4", "park/birds.mp4", "silent.mkv", "tone.wav"}
    assert [row["path"] for row in rows if "error" in row] == ["broken.mp4"]
    asked = [request.messages for request in requests]
    templates = load_templates()
    for row in read_jsonl(output / "train.jsonl") + read_jsonl(output / "rejected.jsonl"):
        context = contexts[row["id"].split("#")[0]]
        expected = templates[row["task"]].messages(row["sample_type"], context.visual_text(), context.audio_text())
        assert expected in asked
        user = expected[1]["content"]
        assert ("Frame captions:" in user) == (row["sample_type"] != "audio")
        assert ("Audio segments:" in user) == (row["sample_type"] != "visual")
        shown = [context.visual_text()] * (row["sample_type"] != "audio") + [context.audio_text()] * (
            row["sample_type"] != "visual"
        )
        assert all(text and text in user for text in shown)
    assert {request.authorization for request in requests} == {"Bearer sk-curate"}
    assert {request.model for request in requests} == {"stub-gpt"} and requests[0].body["max_tokens"] == 512


def test_output_trains_with_the_training_collator_unchanged(media, curated, tmp_path):
    output, _, _ = curated
    dataset = load_av_dataset(str(output / "train.jsonl"), media_root=str(media))
    assert len(dataset) == 6 and load_dataset("json", data_files=str(output / "train.jsonl"))["train"].num_rows == 6
    torch.manual_seed(0)
    config = tiny_config()
    processor = build_processor(config, build_tokenizer(["what happens in and after ? something it goes on a little"]))
    model = AVLlmForConditionalGeneration(config)
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=6, learning_rate=1e-2, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    trainer = AVLlmSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and losses[-1] < losses[0]
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"loss_audio", "loss_visual", "loss_audio_visual"} <= logged


# ---- resuming, retrying, de-duplicating --------------------------------------------------------------------------


def never(*_):
    raise AssertionError("contexts should have been read back from contexts.jsonl")


def test_an_interrupted_run_resumes_and_retries_only_unanswered_samples(media, perception, tmp_path):
    output = tmp_path / "out"

    def down_for_descriptions(request):
        return StubResponse(status=503) if task_of(request) == "description" else good_reply(request)

    with OpenAIStub(down_for_descriptions) as stub:
        backend = OpenAIChatBackend(stub.base_url, "stub-gpt")
        first = curate(media, output, backend, perception, mix=MIX, num_samples=7, num_frames=2, retry_delay=0.01)
        assert len(first["to_retry"]) == 2 and first["samples"] == 5
        assert first["llm"]["errors"] == 2 * 3 and len(stub.requests) == 5 + 2 * 3
        answered = (output / "train.jsonl").read_text()

        stub.handler, stub.requests[:] = good_reply, []
        second = curate(media, output, backend, never, mix=MIX, num_samples=7, num_frames=2)
        assert len(stub.requests) == 2 and all(task_of(request) == "description" for request in stub.requests)
        assert second["samples"] == 7 and second["to_retry"] == []
        assert (output / "train.jsonl").read_text().startswith(answered)

        stub.requests[:] = []
        third = curate(media, output, backend, never, mix=MIX, num_samples=7, num_frames=2)
        assert stub.requests == [] and third["samples"] == 7 and third["cells"] == second["cells"]
    assert len(read_jsonl(output / "train.jsonl")) == 7


def test_duplicate_conversations_are_dropped(media, perception, tmp_path):
    same = json.dumps({"conversation": [{"question": "What is it?", "answer": "A short clip."}]})
    with OpenAIStub(lambda request: same) as stub:
        summary = curate(
            media, tmp_path, OpenAIChatBackend(stub.base_url, "m"), perception, mix="description/visual=1",
            num_samples=3, num_frames=2,
        )  # fmt: skip
    assert summary["samples"] == 1 and summary["rejection_kinds"] == {"duplicate": 2}
    assert len(read_jsonl(tmp_path / "train.jsonl")) == 1


# ---- the command line, a local LLM, the Hub ----------------------------------------------------------------------


def test_cli_with_a_local_llm_and_an_audio_classifier(media, checkpoints, tmp_path, capsys):
    argv = ["curate", "--videos", str(media), "--out", str(tmp_path), "--llm", checkpoints["llm"]]
    argv += ["--captioner", checkpoints["blip"], "--audio-captioner", "none", "--audio-tagger", checkpoints["ast"]]
    argv += ["--num-frames", "2"]
    argv += ["--mix", "description/audio=1,conversation/visual=1", "--num-samples", "4", "--max-tokens", "6"]
    main(argv)
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    # a random LLM never writes a valid conversation: every reply is rejected, none written
    assert summary["samples"] == 0 and summary["rejected"] == 4
    assert summary["llm"]["name"] == f"local:{checkpoints['llm']}" and summary["llm"]["calls"] == 4 * 3
    assert "description/audio" in printed and "4 media files" not in printed and "5 media files" in printed
    contexts = read_jsonl(tmp_path / "contexts.jsonl")
    tags = {label for row in contexts for s in row.get("segments", []) for label, _ in s["tags"]}
    assert tags and tags <= set(SOUND_LABELS)
    with pytest.raises(SystemExit, match="needs an LLM"):
        main(["curate", "--videos", str(media), "--out", str(tmp_path)])


def test_cli_asks_an_audio_captioner_and_falls_back_to_clap_tags(media, checkpoints, tmp_path, monkeypatch):
    def curate_cli(output, *options):
        argv = ["curate", "--videos", str(media), "--out", str(output), "--llm-endpoint", stub.base_url]
        argv += ["--llm-model", "m", "--captioner", "none", "--mix", "description/audio=1", "--num-samples", "2"]
        main([*argv, "--num-audio-segments", "2", *options])
        return [row for row in read_jsonl(output / "contexts.jsonl") if row.get("has_audio")]

    made = []

    class Recorded(AudioCaptioner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("transformers_avllm.curation.AudioCaptioner", Recorded)
    monkeypatch.setattr("transformers_avllm.curation.context.DEFAULT_AUDIO_TAGGER", checkpoints["clap"])
    with OpenAIStub(good_reply) as stub:
        options = ["--audio-captioner", checkpoints["qwen2_audio"], "--audio-caption-prompt", "What do you hear?"]
        captioned = curate_cli(tmp_path / "captions", *options)
        prompts = [request.prompt for request in stub.requests]
        tagged = curate_cli(tmp_path / "tags", "--audio-captioner", "none")  # the default tagger then: CLAP
    assert len(made) == 1 and made[0].prompt == "What do you hear?"
    segments = [segment for row in captioned for segment in row["segments"]]
    assert len(captioned) == 3 and all(segment["caption"] and "tags" not in segment for segment in segments)
    assert any(f"] {segments[0]['caption']}" in text for text in prompts)  # what the LLM was shown
    shipped = set(read_labels(AUDIO_LABELS_FILE))  # CLAP, zero-shot against the shipped labels
    tags = [segment for row in tagged for segment in row["segments"]]
    assert len(tags) == 6 and all("caption" not in s and {label for label, _ in s["tags"]} <= shipped for s in tags)


def test_push_dataset_uploads_with_the_hub_api(curated, monkeypatch):
    output = curated[0]
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "commit-url")
    assert push_dataset(output, "org/av-instructions", private=True, token="hf_test") == "commit-url"
    assert calls[0] == ("create", "org/av-instructions", {"private": True, "exist_ok": True, "repo_type": "dataset"})
    upload = calls[1][1]
    assert upload["repo_type"] == "dataset" and upload["folder_path"] == str(output)
    assert set(upload["allow_patterns"]) == {"train.jsonl", "README.md", "summary.json"}
    monkeypatch.setattr("transformers_avllm.export.get_token", lambda: None)
    with pytest.raises(HubAuthError):
        push_dataset(output, "org/av-instructions")


def test_table10_is_the_default_mix():
    assert parse_mix(None) == {(task, t): w for task, weights in TABLE10_MIX.items() for t, w in weights.items()}
