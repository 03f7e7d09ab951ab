"""The `avllm` command line."""

import argparse


def _quickstart(args):
    from .quickstart import run_quickstart

    run_quickstart(args.output_dir, args.max_new_tokens)


def _export(args):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .export import export_pretrained

    model = AutoModelForImageTextToText.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.processor or args.model)
    folder = export_pretrained(model, processor, args.output, repo_id=args.repo_id, license=args.license)
    print(f"exported to {folder}")


def _push(args):
    from .export import push_to_hub

    print(push_to_hub(args.folder, args.repo_id, private=args.private))


def _train(args, extra: list[str]):
    from .training.train import train

    train(extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="avllm", description="Audio-visual LLMs, Transformers-native.")
    commands = parser.add_subparsers(dest="command", required=True)

    quickstart = commands.add_parser(
        "quickstart", help="build a tiny AV-LLM offline and ask it about a generated clip"
    )
    quickstart.add_argument("--output-dir", default="outputs/quickstart")
    quickstart.add_argument("--max-new-tokens", type=int, default=8)
    quickstart.set_defaults(run=_quickstart)

    export = commands.add_parser("export", help="write a self-contained Hub repo folder from a saved model")
    export.add_argument("--model", required=True, help="folder (or hub id) of a saved AVLlm model")
    export.add_argument("--processor", help="folder of its processor (default: the model folder)")
    export.add_argument("--output", required=True)
    export.add_argument("--repo-id", help="name used in the model card's usage snippet (default: the folder name)")
    export.add_argument("--license", default="apache-2.0")
    export.set_defaults(run=_export)

    push = commands.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    push.add_argument("folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.set_defaults(run=_push)

    train = commands.add_parser(
        "train",
        add_help=False,
        help="train with SFTTrainer from a TRL-style recipe: --config recipe.yaml [--key value]",
    )
    train.set_defaults(run=_train)

    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.run(args, extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    else:
        args.run(args)


if __name__ == "__main__":
    main()
