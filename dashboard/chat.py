"""The chat page's state and behaviour: history turns, image attachments, streaming an answer with its story.

History lives in `st.session_state` as `Turn`s, which keep what the page shows (caption, attempts, errors)
next to what is sent back to the model, so a rerun redraws the conversation exactly as it happened.
"""

from __future__ import annotations

import base64
import io
import mimetypes
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import PIL.Image
import streamlit as st

from dashboard.text import answer_caption, exhausted_message, kind_word, md_escape, safe_markdown, skipped_text
from llms import (
    AllKeysExhaustedError,
    Attempt,
    LLMError,
    RequestRejectedError,
    SmartClient,
    StreamInterruptedError,
)

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]
HISTORY_KEY = "chat_history"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer concisely."


@dataclass(frozen=True)
class Image:
    """An attached picture, kept as bytes to redraw it and to send it as a data URL."""

    name: str
    mime: str
    data: bytes

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class Turn:
    """One chat bubble. An assistant turn with only an `error` is shown but never sent back to the model."""

    role: Literal["user", "assistant"]
    text: str = ""
    images: tuple[Image, ...] = ()
    caption: str = ""
    attempts: tuple[Attempt, ...] = ()
    error: str = ""
    warning: str = ""

    def message(self) -> dict[str, Any] | None:
        """The OpenAI-style message for this turn (None for error-only turns)."""
        if not self.text and not self.images:
            return None
        if not self.images:
            return {"role": self.role, "content": self.text}
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.text}] if self.text else []
        parts += [{"type": "image_url", "image_url": {"url": image.data_url}} for image in self.images]
        return {"role": self.role, "content": parts}


@dataclass(frozen=True)
class ChatOptions:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    temperature: float = 0.3
    max_tokens: int = 500


def history() -> list[Turn]:
    return st.session_state.setdefault(HISTORY_KEY, [])


def clear_history() -> None:
    st.session_state[HISTORY_KEY] = []


def build_messages(turns: Iterable[Turn], system_prompt: str) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": system_prompt.strip()}] if system_prompt.strip() else []
    return messages + [m for turn in turns if (m := turn.message()) is not None]


def image_from_upload(name: str, mime: str | None, data: bytes) -> Image:
    """Browsers sometimes send no or a generic type: fall back to the file name, then PNG."""
    if not mime or not mime.startswith("image/"):
        mime = mimetypes.guess_type(name)[0] or "image/png"
    return Image(name, mime, data)


def readable_image(data: bytes) -> bool:
    """The file type filter trusts the extension; a file that is not really an image would break the page."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as picture:
            picture.verify()
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError):
        return False
    return True


def user_turn(value: Any) -> tuple[Turn | None, list[str]]:
    """A user turn from `st.chat_input(accept_file=True)`'s value (or a plain string), and unreadable file names."""
    if value is None:
        return None, []
    if isinstance(value, str):
        return (Turn("user", value.strip()) if value.strip() else None), []
    text = (getattr(value, "text", "") or "").strip()
    images, rejected = [], []
    for upload in getattr(value, "files", None) or []:
        data = upload.getvalue()
        if readable_image(data):
            images.append(image_from_upload(upload.name, upload.type, data))
        else:
            rejected.append(upload.name)
    return (Turn("user", text, tuple(images)) if text or images else None), rejected


def stream_answer(
    client: SmartClient,
    messages: list[dict[str, Any]],
    options: ChatOptions,
    write_stream: Callable[[Iterator[str]], Any],
    keep: Callable[[Turn], None],
) -> Turn:
    """Stream an answer through `write_stream`, hand the assistant turn describing it to `keep`, and return it.

    Pieces are collected on the way through, so an answer that breaks mid-stream is kept and marked as
    interrupted rather than lost; every library error becomes a message, never a traceback. A message sent
    while an answer is still streaming makes Streamlit abandon this run by raising from inside `write_stream`:
    the partial answer is kept then too, which is why the turn is handed over rather than only returned.
    """
    pieces: list[str] = []

    def relay(stream: Iterator[str]) -> Iterator[str]:
        for piece in stream:
            pieces.append(piece)
            yield piece

    try:
        turn = _answer(client, messages, options, write_stream, relay, pieces)
    except BaseException:
        keep(Turn("assistant", text="".join(pieces), warning="Stopped early: a new message arrived first."))
        raise
    keep(turn)
    return turn


def _answer(
    client: SmartClient,
    messages: list[dict[str, Any]],
    options: ChatOptions,
    write_stream: Callable[[Iterator[str]], Any],
    relay: Callable[[Iterator[str]], Iterator[str]],
    pieces: list[str],
) -> Turn:
    try:
        stream = client.chat_stream(messages, temperature=options.temperature, max_tokens=options.max_tokens)
        write_stream(relay(stream))
    except AllKeysExhaustedError as exc:
        return Turn("assistant", error=exhausted_message(exc), attempts=exc.attempts)
    except StreamInterruptedError as exc:
        last = exc.attempts[-1].key_id if exc.attempts else "unknown key"
        return Turn(
            "assistant",
            text="".join(pieces),
            caption=f"interrupted · {last} · {skipped_text(exc.attempts[:-1]) or 'no keys skipped'}",
            attempts=exc.attempts,
            warning=f"The answer was interrupted and is incomplete: {exc}",
        )
    except RequestRejectedError as exc:
        return Turn("assistant", error=f"The request was refused: {exc}", attempts=exc.attempts)
    except LLMError as exc:
        return Turn("assistant", error=f"The request failed: {exc}", attempts=getattr(exc, "attempts", ()))
    except ValueError as exc:  # the request itself is malformed (validated before any call)
        return Turn("assistant", error=f"Invalid request: {exc}")
    result = stream.result
    if result is None:  # the iterator was not drained; cannot happen with write_safely
        return Turn("assistant", text="".join(pieces), warning="The answer ended without a result.")
    return Turn("assistant", text="".join(pieces), caption=answer_caption(result), attempts=result.attempts)


def write_safely(pieces: Iterator[str]) -> str:
    """Like `st.write_stream`, but the text so far is made safe (`safe_markdown`) each time it is redrawn, so an
    image or link split across pieces is caught as well."""
    placeholder = st.empty()
    text = ""
    for piece in pieces:
        text += piece
        placeholder.markdown(safe_markdown(text) + " ▌")
    placeholder.markdown(safe_markdown(text))
    return text


def attempts_frame(attempts: Iterable[Attempt]) -> pd.DataFrame:
    rows = [
        {"Key": a.key_id, "Outcome": kind_word(a.kind, a.status), "HTTP": a.status, "Message": a.message}
        for a in attempts
    ]
    frame = pd.DataFrame(rows, columns=["Key", "Outcome", "HTTP", "Message"])
    return frame.astype({"HTTP": "Int64"})


def render_details(turn: Turn) -> None:
    """Caption, warnings and the attempts expander under an assistant answer."""
    if turn.error:
        icon = ":material/hourglass_top:" if "cooling" in turn.error else ":material/error:"
        st.error(safe_markdown(turn.error), icon=icon)
    if turn.warning:
        st.warning(safe_markdown(turn.warning), icon=":material/warning:")
    if turn.caption:
        st.caption(md_escape(turn.caption))
    if turn.attempts:
        label = f"{len(turn.attempts)} attempt{'s' if len(turn.attempts) != 1 else ''}"
        with st.expander(label, icon=":material/route:"):
            st.dataframe(attempts_frame(turn.attempts), hide_index=True, width="stretch")


def render_turn(turn: Turn) -> None:
    with st.chat_message(turn.role):
        if turn.images:
            st.image([image.data for image in turn.images], width=240)
        if turn.text:
            st.markdown(safe_markdown(turn.text))
        if turn.role == "assistant":
            render_details(turn)


# --- sidebar options ------------------------------------------------------------------------------------------
# Streamlit drops a widget's state when a run does not draw it (another page is open), so each option lives
# under its own key and is copied into the widget's key before drawing and back on change.

_DEFAULTS = ChatOptions()
_OPTION_KEYS = {
    "system_prompt": _DEFAULTS.system_prompt,
    "temperature": _DEFAULTS.temperature,
    "max_tokens": _DEFAULTS.max_tokens,
}


def _store(name: str) -> None:
    st.session_state[f"chat_{name}"] = st.session_state[f"_chat_{name}"]


def _load(name: str) -> None:
    st.session_state.setdefault(f"chat_{name}", _OPTION_KEYS[name])
    st.session_state[f"_chat_{name}"] = st.session_state[f"chat_{name}"]


def options_sidebar() -> ChatOptions:
    """System prompt, temperature, max tokens and "Clear chat" in the sidebar."""
    for name in _OPTION_KEYS:
        _load(name)
    with st.sidebar:
        st.subheader("Chat options")
        st.text_area("System prompt", key="_chat_system_prompt", on_change=_store, args=("system_prompt",))
        st.slider("Temperature", 0.0, 2.0, step=0.1, key="_chat_temperature", on_change=_store, args=("temperature",))
        st.number_input(
            "Max tokens", 1, 32_000, step=100, key="_chat_max_tokens", on_change=_store, args=("max_tokens",)
        )
        st.button("Clear chat", icon=":material/delete_sweep:", on_click=clear_history, width="stretch")
    return ChatOptions(
        system_prompt=st.session_state.chat_system_prompt,
        temperature=float(st.session_state.chat_temperature),
        max_tokens=int(st.session_state.chat_max_tokens),
    )
