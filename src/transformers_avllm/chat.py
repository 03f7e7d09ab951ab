"""`avllm chat MODEL`: an interactive, streamed, multi-turn conversation about videos, audio and images in the
terminal (`ChatSession` in chat_avllm.py does the work)."""

import argparse
import sys

from .chat_avllm import MEDIA_KINDS, ChatSession

HELP = (
    "attach with /video PATH, /audio PATH, /image PATH (/mute: the last video without its audio); "
    "/reset forgets the conversation, /quit ends"
)


def _attach_all(session: ChatSession, args, out) -> bool:
    """Attaches the `--video/--audio/--image` files; False (after printing the error) when one fails."""
    for kind in MEDIA_KINDS:
        for path in getattr(args, kind) or []:
            try:
                attachment = session.attach(kind, path, use_audio=not args.mute)
            except session.input_errors as err:
                print(f"error: {type(err).__name__}: {err}", file=out)
                return False
            if args.prompt is None:
                print(f"attached {attachment.describe()}", file=out)
    return True


def _command(session: ChatSession, line: str) -> bool:
    """Runs a `/command`; False for `/quit`."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/reset":
        session.reset()
        print("conversation reset")
    elif name == "/mute":
        video = session.mute()
        print(f"muted: {video.describe()}" if video else "no video with audio attached since the last turn")
    elif name[1:] in MEDIA_KINDS and argument:
        try:
            print(f"attached {session.attach(name[1:], argument).describe()}")
        except session.input_errors as err:
            print(f"error: {type(err).__name__}: {err}")
    else:
        print(HELP)
    return True


def repl(session: ChatSession) -> None:
    """The interactive loop: questions and `/commands` typed at `you> `, answers streamed after `avllm> `."""
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C
            print()
            return
        if not line:
            continue
        if line.startswith("/"):
            if not _command(session, line):
                return
            continue
        print("avllm> ", end="", flush=True)
        try:
            for text in session.stream(line):
                print(text, end="", flush=True)
        except session.input_errors as err:
            print(f"\nerror: {type(err).__name__}: {err}")
            continue
        except KeyboardInterrupt:  # Ctrl-C stops the answer, not the session
            print(" [stopped]")
            continue
        print()


def run(args) -> None:
    session = ChatSession.from_pretrained(
        args.model, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens
    )
    if args.prompt is not None:  # one turn, only the answer on stdout (for scripts)
        if not _attach_all(session, args, sys.stderr):
            raise SystemExit(1)
        print(session.ask(args.prompt))
        return
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    print(f"avllm chat: {args.model}\n{HELP}")
    _attach_all(session, args, sys.stdout)
    repl(session)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`avllm chat MODEL`: adds the command to the `avllm` subparsers."""
    parser = subparsers.add_parser(
        "chat", help="talk to a model about videos, audio and images in the terminal (streamed, multi-turn)"
    )
    add_model_arguments(parser)
    parser.add_argument("--video", action="append", metavar="PATH", help="attach a video (repeatable)")
    parser.add_argument("--audio", action="append", metavar="PATH", help="attach an audio file (repeatable)")
    parser.add_argument("--image", action="append", metavar="PATH", help="attach an image (repeatable)")
    parser.add_argument("--mute", action="store_true", help="use the videos without their audio tracks (<VIS>)")
    parser.add_argument("--prompt", help="ask this one question, print only the answer and exit")
    parser.set_defaults(run=run)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, `--dtype`, `--device`, `--max-new-tokens` (shared with `avllm web`)."""
    parser.add_argument("model", help="folder or Hub id of a saved or exported AVLlm model")
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, bfloat16, float32, ...")
    parser.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
