"""The `avllm` command line: one `add_<command>_parser(commands)` per command, next to the function that runs it
(`set_defaults(run=...)`); `main` assembles them. A new command is one parser function and one line in `main`."""

import argparse

from .chat import add_parser as add_chat_parser
from .web import add_parser as add_web_parser


def add_quickstart_parser(commands) -> None:
    """`avllm quickstart`: a tiny AV-LLM built offline, asked about a generated clip."""
    quickstart = commands.add_parser(
        "quickstart", help="build a tiny AV-LLM offline and ask it about a generated clip"
    )
    quickstart.add_argument("--output-dir", default="outputs/quickstart")
    quickstart.add_argument("--max-new-tokens", type=int, default=8)
    quickstart.set_defaults(run=_quickstart)


def _quickstart(args):
    from .quickstart import run_quickstart

    run_quickstart(args.output_dir, args.max_new_tokens)


def add_demo_parser(commands) -> None:
    """`avllm demo`: train a tiny AV-LLM on the synthetic task, check it, export it and chat."""
    demo = commands.add_parser(
        "demo", help="train a tiny AV-LLM on a synthetic task, check it listens and watches, export and chat"
    )
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--quick", action="store_true", help="a reduced budget (about a minute)")
    demo.add_argument("--ablation", action="store_true", help="MAT vs PT1 vs PT2 at equal budget (AV-LLM Table 4)")
    for name in ("num-train", "num-test", "stage1-steps", "stage2-steps", "batch-size", "workers"):
        demo.add_argument(f"--{name}", type=int)
    demo.set_defaults(run=_demo)


def _demo(args):
    from .demo import DemoBudget, run_ablation, run_demo

    budget = (
        DemoBudget() if not args.quick else DemoBudget(num_train=64, num_test=24, stage1_steps=10, stage2_steps=450)
    )
    for name in ("num_train", "num_test", "stage1_steps", "stage2_steps", "batch_size", "workers"):
        if getattr(args, name) is not None:
            setattr(budget, name, getattr(args, name))
    if args.ablation:
        run_ablation(args.output_dir, budget)
    else:
        run_demo(args.output_dir, budget)


def add_data_parser(commands) -> None:
    """`avllm data synth`: the synthetic audio-visual dataset; `avllm data prepare`: a dataset decoded once."""
    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    add_prepare_parser(data)
    synth = data.add_parser("synth", help="write the synthetic audio-visual dataset (clips + train/test jsonl)")
    synth.add_argument("--output-dir", default="outputs/synth")
    synth.add_argument("--num-train", type=int, default=192)
    synth.add_argument("--num-test", type=int, default=48)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_synth)


def add_prepare_parser(data) -> None:
    """`avllm data prepare`: parquet shards of already-sampled frames and already-extracted audio features."""
    prepare = data.add_parser(
        "prepare",
        help="decode a dataset's media once into parquet shards the collator reads without decoding (resumable)",
    )
    prepare.add_argument("--data", required=True, help="json / jsonl / parquet file in the training format")
    prepare.add_argument("--processor", required=True, help="folder (or hub id) of the model or of its processor")
    prepare.add_argument("--output", required=True, help="folder of the shards; an existing one is resumed")
    prepare.add_argument("--media-root", help="folder that relative media paths start from")
    prepare.add_argument("--split", default="train")
    prepare.add_argument("--shard-size", type=int, default=256, help="rows per shard")
    prepare.add_argument("--workers", type=int, help="decoding processes (default: every core)")
    prepare.set_defaults(run=_prepare)


def _prepare(args):
    from transformers import AutoProcessor

    from .data.prepare import prepare_dataset

    counts = prepare_dataset(
        args.data,
        AutoProcessor.from_pretrained(args.processor),
        args.output,
        media_root=args.media_root,
        split=args.split,
        shard_size=args.shard_size,
        num_workers=args.workers,
    )
    print(
        f"{counts['rows']} rows in {counts['shards']} shards under {args.output}: {counts['prepared']} written, "
        f"{counts['kept']} kept from before, {counts['errors']} rows whose media could not be decoded"
    )


def _synth(args):
    from .data.synth import synthesize

    for split, path in synthesize(args.output_dir, args.num_train, args.num_test, args.seed).items():
        print(f"{split}: {path}")


def add_export_parser(commands) -> None:
    """`avllm export`: a self-contained Hub repo folder from a saved model."""
    export = commands.add_parser("export", help="write a self-contained Hub repo folder from a saved model")
    export.add_argument("--model", required=True, help="folder (or hub id) of a saved AVLlm model")
    export.add_argument("--processor", help="folder of its processor (default: the model folder)")
    export.add_argument("--output", required=True)
    export.add_argument("--repo-id", help="name used in the model card's usage snippet (default: the folder name)")
    export.add_argument("--license", default="apache-2.0")
    export.add_argument(
        "--eval-report",
        nargs="+",
        metavar="REPORT",
        help="avllm eval reports (*.report.json) for the card's model-index",
    )
    export.add_argument("--space", action="store_true", help="also a Gradio Space: app.py (avllm web), requirements")
    export.set_defaults(run=_export)


def _export(args):
    import json
    from pathlib import Path

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .evaluation import report_to_eval_results
    from .export import export_pretrained

    model = AutoModelForImageTextToText.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.processor or args.model)
    reports = [json.loads(Path(path).read_text()) for path in args.eval_report or []]
    folder = export_pretrained(
        model,
        processor,
        args.output,
        repo_id=args.repo_id,
        license=args.license,
        eval_results=report_to_eval_results(reports) if reports else None,
        space=args.space,
    )
    print(f"exported to {folder}")


def add_push_parser(commands) -> None:
    """`avllm push`: upload an exported folder to the Hub."""
    push = commands.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    push.add_argument("folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.set_defaults(run=_push)


def _push(args):
    from .export import push_to_hub

    print(push_to_hub(args.folder, args.repo_id, private=args.private))


def add_convert_parser(commands) -> None:
    """`avllm convert videollama2`: a published checkpoint of another code base as an AVLlm folder."""
    convert = commands.add_parser("convert", help="convert a published checkpoint of another code base to AVLlm")
    sources = convert.add_subparsers(dest="convert_command", required=True)
    videollama2 = sources.add_parser(
        "videollama2", help="a VideoLLaMA 2 / 2.1 (audio-visual) checkpoint folder (see docs/models.md)"
    )
    videollama2.add_argument("--checkpoint", required=True, help="checkpoint folder: config.json, weights, tokenizer")
    videollama2.add_argument("--output", required=True, help="AVLlm folder to write (new or empty)")
    videollama2.add_argument("--vision-tower", help="folder or hub id of the vision tower (default: mm_vision_tower)")
    videollama2.add_argument("--beats-config", help="JSON of the BEATs config, for a tower other than VideoLLaMA 2's")
    videollama2.add_argument(
        "--audio-tower", help="Microsoft BEATs .pt to add to a video-only checkpoint (VideoLLaMA 2's A1 start)"
    )
    videollama2.add_argument("--audio-seconds", type=float, default=30.0, help="audio window (VideoLLaMA 2: 30)")
    videollama2.add_argument("--dtype", help="dtype of the weights (default: the checkpoint's torch_dtype)")
    videollama2.add_argument("--chat-template", help="Jinja file replacing the LLM family's built-in template")
    videollama2.add_argument(
        "--pad-to-square", action="store_true", help="pad frames to squares, as VideoLLaMA 2 trains (not infers)"
    )
    videollama2.add_argument("--base-model", help="hub id of the source, for the model card")
    videollama2.add_argument("--repo-id", help="name used in the model card (default: the output folder's name)")
    videollama2.add_argument("--license", default="apache-2.0")
    videollama2.set_defaults(run=_convert_videollama2)


def _convert_videollama2(args):
    from pathlib import Path

    from .conversion.videollama2 import convert_videollama2

    folder = convert_videollama2(
        args.checkpoint,
        args.output,
        vision_tower=args.vision_tower,
        beats_config=args.beats_config,
        audio_tower=args.audio_tower,
        audio_seconds=args.audio_seconds,
        dtype=args.dtype,
        chat_template=Path(args.chat_template).read_text() if args.chat_template else None,
        pad_to_square=args.pad_to_square,
        base_model=args.base_model,
        repo_id=args.repo_id,
        license=args.license,
    )
    print(f"converted to {folder}")


def add_eval_parser(commands) -> None:
    """`avllm eval`: a benchmark from local files."""
    from .evaluation.tasks import TASKS

    evaluation = commands.add_parser(
        "eval", help="evaluate on a benchmark from local files (resumable; `accelerate launch` for data parallel)"
    )
    evaluation.add_argument("--model", required=True, help="folder (or hub id) of a saved AVLlm model")
    evaluation.add_argument("--task", required=True, choices=sorted(TASKS))
    evaluation.add_argument("--data", required=True, help="the benchmark's annotation file (see docs/evaluation.md)")
    evaluation.add_argument("--media-root", help="folder of the videos / audio (default: the annotation's folder)")
    evaluation.add_argument("--output", help="results jsonl, resumed when it exists (default: eval/<task>.jsonl)")
    evaluation.add_argument("--judge-endpoint", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    evaluation.add_argument("--judge-model", help="judge model name at the endpoint, e.g. gpt-3.5-turbo")
    evaluation.add_argument("--judge-local", help="folder (or hub id) of a local text-generation judge model")
    evaluation.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    evaluation.add_argument("--judge-cache", help="judgement cache jsonl (default: judge_cache.jsonl beside output)")
    evaluation.add_argument("--batch-size", type=int, default=8)
    evaluation.add_argument("--grounding", action="store_true", help="also answer with audio muted / frames blanked")
    evaluation.add_argument("--limit", type=int, help="evaluate only the first N samples")
    evaluation.add_argument(
        "--subset", help="the part of the benchmark a paper evaluates on, e.g. one_eighth (avsd, avssd: VideoLLaMA 2)"
    )
    evaluation.add_argument("--max-new-tokens", type=int, help="override the task's default")
    evaluation.add_argument("--dtype", default="auto", help="model dtype: auto, bfloat16, float32, ...")
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument("--print-json", action="store_true", help="also print the full report as json")
    evaluation.set_defaults(run=_eval)


def _eval(args):
    import json
    from pathlib import Path

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .evaluation import build_judge, distributed_state, evaluate, format_report, get_task

    if args.subset is not None:
        try:
            get_task(args.task).subset(args.subset)
        except KeyError as err:
            raise SystemExit(f"avllm eval: {err.args[0]}") from None
    state = distributed_state()
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=args.dtype).to(state.device)
    processor = AutoProcessor.from_pretrained(args.model)
    output = Path(args.output or f"eval/{args.task}.jsonl")
    judge = build_judge(
        endpoint=args.judge_endpoint,
        model=args.judge_model,
        local=args.judge_local,
        cache_path=args.judge_cache or output.with_name("judge_cache.jsonl"),
        api_key_env=args.judge_api_key_env,
    )
    report = evaluate(
        model,
        processor,
        args.task,
        args.data,
        media_root=args.media_root,
        output=output,
        judge=judge,
        batch_size=args.batch_size,
        grounding=args.grounding,
        limit=args.limit,
        subset=args.subset,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    if report is not None:
        print(format_report(report))
        print(f"report: {output.with_suffix('.report.json')}, figure: {report['figure']}")
        if args.print_json:
            print(json.dumps(report, indent=2))


def add_curate_parser(commands) -> None:
    """`avllm curate`: instruction data from your own media."""
    from .curation.context import AUDIO_CAPTION_PROMPT, DEFAULT_AUDIO_CAPTIONER, DEFAULT_CAPTIONER

    curation = commands.add_parser(
        "curate", help="make instruction data from your videos / audio with captioners and an LLM (AV-LLM pipeline)"
    )
    curation.add_argument("--videos", required=True, help="folder of video and audio files (searched recursively)")
    curation.add_argument("--out", required=True, help="output folder (train.jsonl ...); an existing one is resumed")
    curation.add_argument("--llm-endpoint", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    curation.add_argument("--llm-model", help="model name at the endpoint, e.g. gpt-4o")
    curation.add_argument("--llm", help="folder (or hub id) of a local transformers text-generation model instead")
    curation.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the endpoint's API key")
    curation.add_argument("--max-tokens", type=int, default=1024, help="longest LLM reply")
    curation.add_argument("--temperature", type=float, default=0.7)
    curation.add_argument("--captioner", default=DEFAULT_CAPTIONER, help="image-text-to-text model, or none")
    curation.add_argument("--caption-prompt", help="prompt (chat models) or caption prefix (BLIP: 'a picture of')")
    curation.add_argument(
        "--audio-captioner", default=DEFAULT_AUDIO_CAPTIONER, help="audio-text-to-text model (Qwen2-Audio), or none"
    )
    curation.add_argument("--audio-caption-prompt", default=AUDIO_CAPTION_PROMPT, help="what it is asked per segment")
    curation.add_argument(
        "--audio-tagger", help="CLAP or audio classifier for sound tags (default: CLAP if --audio-captioner none)"
    )
    curation.add_argument("--audio-labels", help="candidate labels file for CLAP, one per line (default: shipped)")
    curation.add_argument("--asr", help="speech-recognition model for what is said, e.g. openai/whisper-small")
    curation.add_argument("--templates", help="folder of prompt templates (default: the shipped ones)")
    curation.add_argument("--mix", help="task/sample_type=weight,... or a YAML/JSON file (default: AV-LLM Table 10)")
    curation.add_argument("--num-samples", type=int, help="samples to make (default: one per media file)")
    curation.add_argument("--num-frames", type=int, default=8, help="frames captioned per video")
    curation.add_argument("--num-audio-segments", type=int, default=4, help="audio segments tagged per file")
    curation.add_argument("--workers", type=int, default=4, help="concurrent LLM requests")
    curation.add_argument("--requests-per-minute", type=float, help="LLM rate limit")
    curation.add_argument("--device", help="device of the perception models, e.g. cuda:0")
    curation.add_argument("--seed", type=int, default=0)
    curation.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the dataset to this Hub dataset repo")
    curation.add_argument("--private", action="store_true")
    curation.set_defaults(run=_curate)


def _curate(args):
    from .curation import (
        AudioCaptioner,
        AudioTagger,
        FrameCaptioner,
        Perception,
        SpeechTranscriber,
        curate,
        format_summary,
        push_dataset,
    )
    from .curation.context import DEFAULT_AUDIO_TAGGER, read_labels
    from .llm_client import build_backend

    if not args.llm_endpoint and not args.llm:
        raise SystemExit("avllm curate needs an LLM: --llm-endpoint URL --llm-model NAME, or --llm LOCAL_MODEL")
    generation = {"temperature": args.temperature}
    generation["max_tokens" if args.llm_endpoint else "max_new_tokens"] = args.max_tokens
    backend = build_backend(args.llm_endpoint, args.llm_model, args.llm, args.api_key_env, **generation)

    # <AC> is audio captions (AV-LLM section 3.3); CLAP tags are the light fallback without an audio captioner
    audio_captioner = None if args.audio_captioner == "none" else args.audio_captioner
    tagger = args.audio_tagger or (None if audio_captioner else DEFAULT_AUDIO_TAGGER)

    def perception():
        return Perception(
            FrameCaptioner(args.captioner, args.caption_prompt, device=args.device)
            if args.captioner != "none"
            else None,
            AudioTagger(tagger, read_labels(args.audio_labels) if args.audio_labels else None, device=args.device)
            if tagger not in (None, "none")
            else None,
            SpeechTranscriber(args.asr, device=args.device) if args.asr else None,
            AudioCaptioner(audio_captioner, args.audio_caption_prompt, device=args.device)
            if audio_captioner
            else None,
        )

    summary = curate(
        args.videos,
        args.out,
        backend,
        perception,
        mix=args.mix,
        num_samples=args.num_samples,
        templates_dir=args.templates,
        num_frames=args.num_frames,
        num_audio_segments=args.num_audio_segments,
        workers=args.workers,
        requests_per_minute=args.requests_per_minute,
        seed=args.seed,
    )
    print(format_summary(summary))
    if args.push_to_hub:
        print(push_dataset(args.out, args.push_to_hub, private=args.private))


def add_train_parser(commands) -> None:
    """`avllm train`: SFTTrainer from a recipe; its options are the recipe's, parsed by `train` itself."""
    train = commands.add_parser(
        "train",
        add_help=False,
        help="train with SFTTrainer from a TRL-style recipe: --config recipe.yaml [--key value]",
    )
    train.set_defaults(run=_train, passes_unknown_args=True)


def _train(args, extra: list[str]):
    from .training.train import train

    train(extra)


def main(argv: list[str] | None = None) -> None:
    """Runs `avllm ARGS` (`argv`, default: the command line)."""
    parser = argparse.ArgumentParser(prog="avllm", description="Audio-visual LLMs, Transformers-native.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_quickstart_parser(commands)
    add_demo_parser(commands)
    add_data_parser(commands)
    add_export_parser(commands)
    add_push_parser(commands)
    add_convert_parser(commands)
    add_eval_parser(commands)
    add_curate_parser(commands)
    add_chat_parser(commands)
    add_web_parser(commands)
    add_train_parser(commands)

    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passes_unknown_args", False):
        args.run(args, extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    else:
        args.run(args)


if __name__ == "__main__":
    main()
