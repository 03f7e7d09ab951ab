"""`avllm web MODEL`: a Gradio page to talk to an audio-visual LLM about a video, an audio clip or an image (uploaded
or recorded), with streamed answers and the modality token each input became.

This file is also the `app.py` of the Hugging Face Space that `avllm export --space` writes: there it runs beside the
model's files and `chat_avllm.py` without this package (the model's own remote code, `trust_remote_code=True`), so it
imports only gradio (when the page is built: the optional `web` extra), the standard library and `chat_avllm`.
"""

import argparse
import importlib.util
from pathlib import Path

try:
    from .chat_avllm import ChatSession
except ImportError:  # app.py of a Space, beside chat_avllm.py
    from chat_avllm import ChatSession

MEANING = {"<AUD_VIS>": "frames + its own audio track", "<VIS>": "frames only", "<AUD>": "sound only"}


def _describe(attachments) -> str:
    if not attachments:
        return "Nothing attached: upload or record a video, a sound or an image, then ask about it."
    return "\n".join(
        f"- {item.kind} `{Path(item.path).name}` → `{item.marker}` ({MEANING.get(item.marker, '')}"
        + (f"; {item.note}" if item.note else "")
        + ")"
        for item in attachments
    )


def build_app(
    model: str,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    max_new_tokens: int = 128,
):
    """The page for the model at `model` (a folder or a Hub id). Each browser session gets its own `ChatSession`
    (conversation, attachments, KV cache); the model is loaded once and shared."""
    import gradio as gr

    shared = ChatSession.from_pretrained(
        model, dtype=dtype, device=device, trust_remote_code=trust_remote_code, max_new_tokens=max_new_tokens
    )

    def new_session() -> ChatSession:
        return ChatSession(shared.model, shared.processor, max_new_tokens=max_new_tokens)

    def attach(session: ChatSession, kind: str, path: str | None, use_audio: bool = True) -> str:
        """Replaces the pending `kind` attachment by `path` (none when cleared); returns the error, if any."""
        session.pending = [item for item in session.pending if item.kind != kind]
        if path:
            try:
                session.attach(kind, path, use_audio=use_audio)
            except session.input_errors as err:
                gr.Warning(f"{type(err).__name__}: {err}")
                return f"\n\n**{type(err).__name__}**: {err}"
        return ""

    def on_media(kind: str):
        def handler(path, use_audio, session):
            error = attach(session, kind, path, use_audio)
            return _describe(session.pending) + error

        return handler

    def ask(question: str, history: list, video, use_audio: bool, audio, image, session: ChatSession):
        """Streams the answer into the chat; the media inputs are emptied for the next question."""
        question = question.strip()
        if not question:
            yield history, question, gr.skip(), gr.skip(), gr.skip(), _describe(session.pending)
            return
        for kind, path in (("video", video), ("audio", audio), ("image", image)):
            if path and not any(item.kind == kind for item in session.pending):  # its upload event is still on its way
                attach(session, kind, path, use_audio)
        markers = " ".join(item.marker for item in session.pending)
        history = history + [
            {"role": "user", "content": [{"path": item.path} for item in session.pending] + [f"{markers} {question}"]},
            {"role": "assistant", "content": ""},
        ]
        answer = ""
        try:
            for piece in session.stream(question):
                answer += piece
                history[-1] = {"role": "assistant", "content": answer}
                yield history, "", gr.skip(), gr.skip(), gr.skip(), _describe(session.pending)
        except session.input_errors as err:
            history[-1] = {"role": "assistant", "content": f"**{type(err).__name__}**: {err}"}
        yield history, "", None, None, None, _describe(session.pending)

    def reset(session: ChatSession):
        session.reset()
        return [], None, None, None, _describe(session.pending)

    title = Path(str(model).rstrip("/")).name or str(model)
    with gr.Blocks(title=f"{title} · avllm", analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\nAsk about a video (with or without its sound), a sound or an image.")
        session = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label="video", sources=["upload", "webcam"], elem_id="video-input")
                use_audio = gr.Checkbox(True, label="use the video's own audio track", elem_id="use-audio")
                audio = gr.Audio(
                    label="audio", sources=["upload", "microphone"], type="filepath", elem_id="audio-input"
                )
                image = gr.Image(
                    label="image",
                    sources=["upload", "webcam", "clipboard"],
                    type="filepath",
                    height=220,
                    elem_id="image-input",
                )
            with gr.Column(scale=3):
                inputs = gr.Markdown(_describe([]), elem_id="inputs")
                chatbot = gr.Chatbot(label="conversation", height=600, elem_id="chatbot")
                question = gr.Textbox(
                    label="question", placeholder="what colour is the square at the start ?", elem_id="question"
                )
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("New conversation", elem_id="reset")

        app.load(new_session, None, session)
        video.change(on_media("video"), [video, use_audio, session], inputs)
        use_audio.change(on_media("video"), [video, use_audio, session], inputs)
        audio.change(on_media("audio"), [audio, use_audio, session], inputs)
        image.change(on_media("image"), [image, use_audio, session], inputs)
        asking = [question, chatbot, video, use_audio, audio, image, session]
        answering = [chatbot, question, video, audio, image, inputs]
        send.click(ask, asking, answering)
        question.submit(ask, asking, answering)
        clear.click(reset, session, [chatbot, video, audio, image, inputs])
    return app


def main(argv: list[str] | None = None) -> None:
    """`python app.py [MODEL]` in a Space (the model: this file's folder, with its own remote code)."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description="a Gradio page to talk to an AVLlm model")
    parser.add_argument("model", nargs="?", default=str(here) if (here / "config.json").is_file() else None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("give the model folder or Hub id")
    build_app(args.model, trust_remote_code=True, max_new_tokens=args.max_new_tokens).launch()


def run(args) -> None:
    """`avllm web MODEL` (this package's classes)."""
    if importlib.util.find_spec("gradio") is None:
        raise SystemExit("avllm web needs Gradio: pip install 'transformers-avllm[web]'")
    app = build_app(args.model, args.dtype, args.device, max_new_tokens=args.max_new_tokens)
    app.launch(server_name=args.host, server_port=args.port, share=args.share)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """`avllm web MODEL`: adds the command to the `avllm` subparsers."""
    from .chat import add_model_arguments

    parser = subparsers.add_parser(
        "web", help="a Gradio page to talk to a model about uploaded or recorded media (extra: .[web])"
    )
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also a temporary public gradio.live link")
    parser.set_defaults(run=run)
    return parser


if __name__ == "__main__":
    main()
