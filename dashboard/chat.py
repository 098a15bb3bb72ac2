"""The chat page's state and behaviour: history turns, image attachments, streaming an answer with its story.

History lives in `st.session_state` as `Turn`s, which keep what the page shows (caption, attempts, errors)
next to what is sent back to the model, so a rerun redraws the conversation exactly as it happened (how a turn
is drawn is `dashboard.chat_view`).
"""

from __future__ import annotations

import base64
import io
import itertools
import mimetypes
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import PIL.Image
import streamlit as st

from dashboard.fallback import Fallback, Trail, fallback_of
from dashboard.text import (
    answer_caption,
    countdown,
    exhausted_message,
    provider_title,
    skipped_text,
)
from dashboard.triage import causes
from llms import (
    AllKeysExhaustedError,
    Attempt,
    ChatStream,
    LLMError,
    RequestRejectedError,
    SmartClient,
    StreamInterruptedError,
    client_time,
)

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]
HISTORY_KEY = "chat_history"
RETRY_KEY = "chat_retry"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer concisely."
MAX_RETRY_WAIT = 120.0
"""Longest the "Retry when a key frees up" button waits: the page is blocked meanwhile."""
RETRY_MARGIN = 1.0
"""Seconds added to the first key's cooldown, so the retry does not arrive a hair early."""
TRAIL_POLL = 0.1
"""Seconds between looks at the request log while keys are being tried."""


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
    """One chat bubble. An assistant turn with only an `error` is shown but never sent back to the model.

    `retry_at`: when the first key frees up, on an "all keys cooling" error (None: no retry to offer).
    `warning` on a user turn notes attachments that were left out.
    """

    role: Literal["user", "assistant"]
    text: str = ""
    images: tuple[Image, ...] = ()
    caption: str = ""
    attempts: tuple[Attempt, ...] = ()
    error: str = ""
    warning: str = ""
    fallback: Fallback | None = None
    retry_at: float | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    answered_by: str = ""
    """Which key answered, `Groq · groq:2`, for the answer's badge: in the demo each answer comes from another
    key, and a badge shows that where a grey caption went unnoticed."""

    def message(self) -> dict[str, Any] | None:
        """The OpenAI-style message for this turn (None for error-only turns, and for an answer that only asked
        for tools: the page runs no tools, so the call is shown but not sent back unanswered)."""
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
    model: str = "auto"
    """A model selector (`llms.routing`): `auto`, an alias, a provider, `provider/model` or a model id."""
    tools: bool = False
    """Offer `DEMO_TOOLS` to the model, to show a tool call an answer asks for."""


DEMO_TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a time zone",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
        },
    },
)
"""Two functions a model may ask for when "Offer demo tools" is on: the page shows the call (name and arguments),
as an agent would receive it."""


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
    """A user turn from `st.chat_input(accept_file=True)`'s value (or a plain string), and unreadable file names.

    A file that is not a readable image is left out, and the turn says so under the message for good (the page
    also warns at once); a message of nothing but unreadable files is not sent at all."""
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
    if not text and not images:
        return None, rejected
    note = f"Left out, not a readable image: {', '.join(rejected)}" if rejected else ""
    return Turn("user", text, tuple(images), warning=note), rejected


def stream_answer(
    client: SmartClient,
    messages: list[dict[str, Any]],
    options: ChatOptions,
    write_stream: Callable[[Iterator[str]], Any],
    keep: Callable[[Turn], None],
    *,
    wait: float | None = None,
    trail: Trail | None = None,
) -> Turn:
    """Stream an answer through `write_stream`, hand the assistant turn describing it to `keep`, and return it.

    Pieces are collected on the way through, so an answer that breaks mid-stream is kept and marked as
    interrupted rather than lost; every library error becomes a message, never a traceback. A message sent
    while an answer is still streaming makes Streamlit abandon this run by raising from inside `write_stream`:
    the partial answer is kept then too, which is why the turn is handed over rather than only returned.
    `wait`: seconds the client may wait for a cooling key (the retry button); `trail`: the live `st.status`.
    """
    pieces: list[str] = []

    def relay(stream: Iterator[str]) -> Iterator[str]:
        for piece in stream:
            pieces.append(piece)
            yield piece

    try:
        turn = _answer(client, messages, options, write_stream, relay, pieces, wait, trail)
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
    wait: float | None,
    trail: Trail | None,
) -> Turn:
    finish = trail.finish if trail else (lambda attempts, ok: None)
    try:
        stream = client.chat_stream(
            messages,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            wait=wait,
            on_attempt=trail.record if trail else None,
            model=options.model,
            **({"tools": list(DEMO_TOOLS)} if options.tools else {}),
        )
        first = first_piece(stream, trail.poll if trail else None)
        write_stream(relay(itertools.chain([first] if first is not None else [], stream)))
    except AllKeysExhaustedError as exc:
        finish(exc.attempts, False)
        retry_at = client_time() + exc.retry_in if exc.retry_in is not None else None
        return Turn("assistant", error=exhausted_message(exc), attempts=exc.attempts, retry_at=retry_at)
    except StreamInterruptedError as exc:
        finish(exc.attempts, False)
        last = exc.attempts[-1].key_id if exc.attempts else "unknown key"
        return Turn(
            "assistant",
            text="".join(pieces),
            caption=f"interrupted · {last} · {skipped_text(exc.attempts[:-1]) or 'no keys skipped'}",
            attempts=exc.attempts,
            warning=f"The answer was interrupted and is incomplete: {exc}",
        )
    except RequestRejectedError as exc:
        finish(exc.attempts, False)
        return Turn("assistant", error=f"The request was refused: {exc}", attempts=exc.attempts)
    except LLMError as exc:
        attempts = getattr(exc, "attempts", ())
        finish(attempts, False)
        return Turn("assistant", error=f"The request failed: {exc}", attempts=attempts)
    except ValueError as exc:  # the request itself is malformed (validated before any call)
        finish((), False)
        return Turn("assistant", error=f"Invalid request: {exc}")
    result = stream.result
    if result is None:  # the iterator was not drained; cannot happen with write_safely
        finish((), False)
        return Turn("assistant", text="".join(pieces), warning="The answer ended without a result.")
    finish(result.attempts, True)
    return Turn(
        "assistant",
        text="".join(pieces),
        caption=answer_caption(result),
        answered_by=f"{provider_title(result.provider)} · {result.key_id}" if result.key_id else "",
        attempts=result.attempts,
        fallback=fallback_of(result, client.admin.provider_statuses(), client_time(), causes(client).failure),
        tool_calls=tuple(result.tool_calls),
    )


def first_piece(stream: ChatStream, poll: Callable[[], None] | None) -> str | None:
    """Wait for the stream's first piece, which is when the client stops failing over, calling `poll` meanwhile.

    The failover runs in a worker thread so this (the script's) thread stays free to redraw the trail. If the
    run is abandoned meanwhile (Streamlit raises from `poll` when a new message arrives), the worker closes the
    stream once the client is done with it, so no key's in-flight slot is left taken.
    """
    if poll is None:
        return next(stream, None)
    outcome: dict[str, Any] = {}
    lock = threading.Lock()
    done, abandoned = threading.Event(), threading.Event()

    def work() -> None:
        try:
            outcome["piece"] = next(stream, None)
        except BaseException as exc:  # handed to the script thread, which raises it
            outcome["error"] = exc
        with lock:
            done.set()
            if abandoned.is_set():
                stream.close()

    threading.Thread(target=work, name="chat-failover", daemon=True).start()
    try:
        while not done.wait(TRAIL_POLL):
            poll()
        poll()
    except BaseException:
        with lock:
            abandoned.set()
            if done.is_set():
                stream.close()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("piece")


# --- retry after exhaustion -------------------------------------------------------------------------------------


def retry_wait(turn: Turn, now: float) -> float | None:
    """Seconds a retry of `turn` should let the client wait: until the first key frees up, plus a margin."""
    if turn.role != "assistant" or turn.retry_at is None:
        return None
    return max(0.0, turn.retry_at - now) + RETRY_MARGIN


def _ask_retry() -> None:
    st.session_state[RETRY_KEY] = True


def retry_button(turns: Sequence[Turn]) -> None:
    """Under an "all keys cooling" answer (the last turn only): re-send the last message once a key frees up.
    Disabled when that is further off than `MAX_RETRY_WAIT`, since the page is blocked while it waits."""
    wait = retry_wait(turns[-1], client_time()) if turns else None
    if wait is None:
        return
    too_long = wait > MAX_RETRY_WAIT
    st.button(
        "Retry when a key frees up",
        icon=":material/schedule_send:",
        key="chat_retry_button",
        on_click=_ask_retry,
        disabled=too_long,
        help=(
            f"The first key frees up in {countdown(wait)}: too long to wait here. Reset keys on the Status page."
            if too_long
            else f"Sends your last message again, waiting up to {countdown(wait)} for the first key to free up."
        ),
    )


def take_retry(turns: Sequence[Turn]) -> float | None:
    """The wait for a retry the button asked for in this run (None when not asked, or nothing to retry)."""
    if not st.session_state.pop(RETRY_KEY, False) or not turns:
        return None
    wait = retry_wait(turns[-1], client_time())
    return min(wait, MAX_RETRY_WAIT) if wait is not None else None


# --- sidebar options ------------------------------------------------------------------------------------------
# Streamlit drops a widget's state when a run does not draw it (another page is open), so each option lives
# under its own key and is copied into the widget's key before drawing and back on change.

_DEFAULTS = ChatOptions()
_OPTION_KEYS = {
    "system_prompt": _DEFAULTS.system_prompt,
    "temperature": _DEFAULTS.temperature,
    "max_tokens": _DEFAULTS.max_tokens,
    "model": _DEFAULTS.model,
    "tools": _DEFAULTS.tools,
}


def _store(name: str) -> None:
    st.session_state[f"chat_{name}"] = st.session_state[f"_chat_{name}"]


def _load(name: str) -> None:
    st.session_state.setdefault(f"chat_{name}", _OPTION_KEYS[name])
    st.session_state[f"_chat_{name}"] = st.session_state[f"chat_{name}"]


def options_sidebar(models: Sequence[str] = ("auto",)) -> ChatOptions:
    """Model, system prompt, temperature, max tokens and "Clear chat" in the sidebar. `models`: the selectors to
    offer (the client's `models()`); any other `provider/model` may be typed in."""
    for name in _OPTION_KEYS:
        _load(name)
    with st.sidebar:
        st.subheader("Chat options")
        offered = list(dict.fromkeys([*models, st.session_state._chat_model]))
        st.selectbox(
            "Model",
            offered,
            key="_chat_model",
            on_change=_store,
            args=("model",),
            accept_new_options=True,
            help="auto: every provider in order. Or an alias, a provider, provider/model, or a model id.",
        )
        st.text_area("System prompt", key="_chat_system_prompt", on_change=_store, args=("system_prompt",))
        st.slider("Temperature", 0.0, 2.0, step=0.1, key="_chat_temperature", on_change=_store, args=("temperature",))
        st.number_input(
            "Max tokens", 1, 32_000, step=100, key="_chat_max_tokens", on_change=_store, args=("max_tokens",)
        )
        st.toggle(
            "Offer demo tools",
            key="_chat_tools",
            on_change=_store,
            args=("tools",),
            help="Offer get_weather and get_time: an answer may ask to call one; the page shows the call.",
        )
        st.button("Clear chat", icon=":material/delete_sweep:", on_click=clear_history, width="stretch")
    return ChatOptions(
        system_prompt=st.session_state.chat_system_prompt,
        temperature=float(st.session_state.chat_temperature),
        max_tokens=int(st.session_state.chat_max_tokens),
        model=str(st.session_state.chat_model or "auto"),
        tools=bool(st.session_state.chat_tools),
    )
