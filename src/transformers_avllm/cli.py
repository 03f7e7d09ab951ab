"""The `avllm` command line."""

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="avllm", description="Audio-visual LLMs, Transformers-native.")
    commands = parser.add_subparsers(dest="command", required=True)
    quickstart = commands.add_parser(
        "quickstart", help="build a tiny AV-LLM offline and ask it about a generated clip"
    )
    quickstart.add_argument("--output-dir", default="outputs/quickstart")
    quickstart.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        from .quickstart import run_quickstart

        run_quickstart(args.output_dir, args.max_new_tokens)


if __name__ == "__main__":
    main()
