"""Values that cross module lines: the validated request, a provider's completion, the client's result."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llms import options as request_options
from llms.outcomes import Attempt, OutcomeKind, QuotaHint

Message = Mapping[str, Any]
_ROLES = ("system", "user", "assistant", "tool")
_PART_TYPES = ("text", "image_url")
CHARACTERS_PER_TOKEN = 4
"""How providers that count a request's tokens before running it estimate them from its text (OpenAI's heuristic)."""


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request. Built by `ChatRequest.build`, which fails before any network call."""

    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    model: str | None = None
    """The model this request asks the provider for; None: the adapter's default. Set per attempt by the failover
    loop from the route (`llms.routing`), never by the caller."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """OpenAI's fields beyond these (`llms.options`: tools, tool_choice, response_format, stop, top_p, seed,
    presence_penalty, frequency_penalty), validated, in OpenAI's shapes."""

    def for_model(self, model: str) -> ChatRequest:
        return self if model == self.model else replace(self, model=model)

    @functools.cached_property
    def tokens(self) -> int:
        """What a provider counts of this request against a limit on tokens as it admits it: its text (the messages',
        and the tools' and output schema's definitions, which the model reads too; images are priced apart) at four
        characters a token and all of `max_tokens` (OpenAI's reckoning, taken before the model runs:
        docs/providers.md). An estimate: the count each answer reports puts it right (`TokenBudget`)."""
        characters = sum(len(message_text(m.get("content") or "")) for m in self.messages)
        characters += sum(len(json.dumps(self.options[k])) for k in ("tools", "response_format") if k in self.options)
        return -(-characters // CHARACTERS_PER_TOKEN) + (self.max_tokens or 0)

    @classmethod
    def build(
        cls, messages: Any, temperature: float | None = None, max_tokens: int | None = None, **options: Any
    ) -> ChatRequest:
        """Validate `messages` (decoding images) and `options`, or pass a `ChatRequest` through: it was validated
        when it was built (the gateway builds one before it spends anything), and images are not decoded twice."""
        if isinstance(messages, ChatRequest):
            if temperature is not None or max_tokens is not None or any(v is not None for v in options.values()):
                raise ValueError(
                    "a ChatRequest carries its own temperature, max_tokens and options; give them when building it"
                )
            return messages
        checked = request_options.validate(options)
        return cls(validate_messages(messages), _temperature(temperature), _max_tokens(max_tokens), options=checked)


def validate_messages(messages: Any) -> tuple[Message, ...]:
    """OpenAI-style messages: a non-empty list of {"role", "content"}; content is text or a list of parts."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise ValueError("messages must contain at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {', '.join(_ROLES)}, got {role!r}")
        if role == "assistant" and message.get("tool_calls") is not None:
            _validate_tool_calls(i, message["tool_calls"])
            if message.get("content") in (None, ""):
                continue  # an answer that only called tools
        if role == "tool" and not (isinstance(message.get("tool_call_id"), str) and message["tool_call_id"]):
            raise ValueError(f"messages[{i}] (a tool result) needs the 'tool_call_id' of the call it answers")
        _validate_content(i, message.get("content"))
    if all(m["role"] == "system" for m in messages):
        raise ValueError("messages must contain at least one user or assistant message")
    copied = tuple(dict(m) for m in messages)
    try:
        _encode_checked(copied)  # the whole conversation at once; message by message only to say which one fails
    except (TypeError, ValueError, RecursionError):
        for i, message in enumerate(copied):
            _check_encodable(i, message)
    return copied


def _validate_tool_calls(i: int, calls: Any) -> None:
    """An assistant message's `tool_calls`: [{"id", "type": "function", "function": {"name", "arguments"}}]."""
    if not isinstance(calls, list) or not calls:
        raise ValueError(f"messages[{i}]['tool_calls'] must be a non-empty list")
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(call.get("id") if isinstance(call, Mapping) else None, str)
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
        ):
            raise ValueError(
                f"messages[{i}]['tool_calls'][{j}] must be {{'id': ..., 'type': 'function', 'function': "
                "{'name': ..., 'arguments': '<JSON text>'}}"
            )


def _check_encodable(i: int, message: Message) -> None:
    """The message must become UTF-8 JSON exactly as an adapter will send it. A lone surrogate ("\\ud800"), a value
    JSON has no form for (a set, NaN, an object), a cycle or nesting deeper than the encoder goes would otherwise fail
    inside the adapter, after a key was taken, and read as that key's transient error: one bad message would rest
    every key of the pool in turn."""
    try:
        _encode_checked(message)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise ValueError(
            f"messages[{i}] holds text that cannot be encoded as UTF-8 ({bad!r} is a lone surrogate, not a character)"
        ) from None
    except RecursionError:
        raise ValueError(f"messages[{i}] is nested too deeply to be sent as JSON") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"messages[{i}] cannot be sent as JSON ({exc})") from None


def _encode_checked(value: Any) -> None:
    """`json.dumps(value, ensure_ascii=False, allow_nan=False).encode()`, as an adapter sends it, with one encoder
    kept (`json.dumps` with options builds an encoder per call)."""
    _encode_strict(value).encode()


_encode_strict = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _validate_content(i: int, content: Any) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise ValueError(f"messages[{i}]['content'] must be a string or a non-empty list of parts")
    for j, part in enumerate(content):
        where = f"messages[{i}]['content'][{j}]"
        if not isinstance(part, Mapping) or part.get("type") not in _PART_TYPES:
            raise ValueError(f"{where} must be a dict with 'type' 'text' or 'image_url'")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise ValueError(f"{where}['text'] must be a string")
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else None
            if not isinstance(url, str) or not url.startswith(("data:image/", "http://", "https://")):
                raise ValueError(f"{where}['image_url']['url'] must be a data:image/… URL or an http(s) URL")
            if url.startswith("data:"):
                _validate_data_url(where, url)


_IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif", "image/heic", "image/heif")
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Gemini's limit for an inline request; the others are smaller or equal."""


def _validate_data_url(where: str, url: str) -> None:
    """Decoded here, so a broken image fails before any key is spent (and counts against no key)."""
    header, comma, payload = url.partition(",")
    mime, _, encoding = header[5:].partition(";")
    if not comma or encoding != "base64" or mime.lower() not in _IMAGE_TYPES:
        raise ValueError(
            f"{where}['image_url']['url'] must be data:<{'|'.join(t[6:] for t in _IMAGE_TYPES)}>;base64,<data>"
        )
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ValueError(f"{where}: the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the image is not valid base64") from None
    if not data:
        raise ValueError(f"{where}: the image is empty")


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise ValueError(f"temperature must be a number between 0 and 2, got {value!r}")
    return float(value)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_tokens must be a positive whole number, got {value!r}")
    return value


def message_text(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    """What an adapter returns for one successful call; `quota` is the key's remaining quota when reported."""

    text: str
    model: str
    usage: Usage = Usage()
    quota: QuotaHint | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True)
class ChatResult:
    """The answer plus who gave it and what it took to get it."""

    text: str
    provider: str
    model: str
    key_id: str
    key_hint: str
    latency_s: float
    usage: Usage
    attempts: tuple[Attempt, ...] = ()
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """The tools the answer asks to call, in OpenAI's shape: [{"id", "type": "function", "function": {"name",
    "arguments"}}]; empty for a text answer."""
    finish_reason: str | None = None
    """Why the answer ended: "stop", "length" (cut off at max_tokens), "tool_calls", "content_filter"."""

    @property
    def skipped(self) -> tuple[Attempt, ...]:
        """The failed attempts before the answering key."""
        return tuple(a for a in self.attempts if a.kind is not OutcomeKind.OK)


@dataclass
class StreamReply:
    """An open stream from one provider: text pieces, with usage known once the pieces run out.

    The adapter has already checked the HTTP status when it returns this, so errors that happen before the
    first piece surface from `open_stream`, and errors inside the stream surface while iterating. From
    `aopen_stream` (awaited calls), `pieces` is an async iterator.
    """

    pieces: Iterator[str] | AsyncIterator[str]
    model: str
    quota: QuotaHint | None = None
    usage: Usage = field(default_factory=Usage)
    close: Callable[[], None] = lambda: None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Tool calls assembled from the stream's deltas, complete once the pieces run out."""
    finish_reason: str | None = None


MAX_EMBED_TEXTS = 2048
"""OpenAI's own limit of inputs per embeddings request; a longer list is the caller's to split."""
MAX_EMBED_DIMENSIONS = 65536


@dataclass(frozen=True)
class EmbeddingRequest:
    """Validated texts to embed. Built by `EmbeddingRequest.build`, which fails before any network call, so a bad
    input burns no key."""

    texts: tuple[str, ...]
    dimensions: int | None = None
    """Ask for vectors this long (OpenAI's `dimensions`, Gemini's `output_dimensionality`); None: the model's own."""
    model: str | None = None
    """Set per attempt by the failover loop from the route, as for `ChatRequest`."""

    def for_model(self, model: str) -> EmbeddingRequest:
        return self if model == self.model else replace(self, model=model)

    @classmethod
    def build(cls, texts: Any, dimensions: Any = None) -> EmbeddingRequest:
        """Validate `texts` and `dimensions`, or pass an `EmbeddingRequest` through (the gateway builds one before
        it spends anything)."""
        if isinstance(texts, EmbeddingRequest):
            if dimensions is not None:
                raise ValueError("an EmbeddingRequest carries its own dimensions; give them when building it")
            return texts
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (bytes, Mapping)) or not isinstance(texts, Sequence):
            raise ValueError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if not texts:
            raise ValueError("texts must hold at least one string")
        if len(texts) > MAX_EMBED_TEXTS:
            raise ValueError(f"texts holds {len(texts)} strings; at most {MAX_EMBED_TEXTS} go in one call")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{i}] must be a string (send text, not tokens), got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty: there is nothing to embed")
            try:
                text.encode()
            except UnicodeEncodeError:
                raise ValueError(f"texts[{i}] holds a lone surrogate, which cannot be sent as UTF-8") from None
        whole = isinstance(dimensions, int) and not isinstance(dimensions, bool)
        if dimensions is not None and not (whole and 1 <= dimensions <= MAX_EMBED_DIMENSIONS):
            raise ValueError(f"dimensions must be a whole number from 1 to {MAX_EMBED_DIMENSIONS}, got {dimensions!r}")
        return cls(tuple(texts), dimensions)


@dataclass(frozen=True)
class Embedded:
    """What an adapter returns for one successful embeddings call: one vector per text, in order."""

    vectors: list[list[float]]
    model: str
    usage: Usage = Usage()
    quota: QuotaHint | None = None


@dataclass(frozen=True)
class EmbeddingResult:
    """The vectors plus who made them and what it took to get them."""

    vectors: list[list[float]]
    provider: str
    model: str
    key_id: str
    key_hint: str
    usage: Usage
    attempts: tuple[Attempt, ...] = ()
    latency_s: float = 0.0

    @property
    def skipped(self) -> tuple[Attempt, ...]:
        """The failed attempts before the answering key."""
        return tuple(a for a in self.attempts if a.kind is not OutcomeKind.OK)
