"""OpenAI's wire format: parse a chat request, shape answers, SSE chunks and errors.

Pure functions over bytes and dicts (no web framework), so the shapes can be read and tested on their own.
Validation happens here, before any provider call: a malformed request costs no key.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llms import options as request_options
from llms.types import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, Usage

FORWARDED_FIELDS = request_options.NAMES
"""Passed to the provider (OpenAI-format providers as given; Gemini translated): tools, tool_choice,
response_format, stop, top_p, seed, presence_penalty, frequency_penalty."""

IGNORED_FIELDS = (
    "logit_bias",
    "metadata",
    "parallel_tool_calls",
    "prompt_cache_key",
    "reasoning_effort",
    "safety_identifier",
    "service_tier",
    "store",
    "user",
    "verbosity",
)
"""Accepted and ignored: bookkeeping, or tuning the answer keeps its shape without. Any other unknown field is
ignored too (new SDK versions add fields); these are the ones OpenAI documents."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
"""`developer` is OpenAI's newer name for `system` (the SDK sends it for reasoning models)."""


class ApiError(Exception):
    """An answer in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return dumps({"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}})


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ParsedChat:
    """A validated `/v1/chat/completions` body."""

    model: str
    request: ChatRequest
    stream: bool
    include_usage: bool


def parse_chat(body: bytes) -> ParsedChat:
    """The request, validated exactly as the client will validate it, or `ApiError(400)` saying what is wrong."""
    data = load_object(body)
    model = required_model(data)
    _refuse_unsupported(data)
    stream = flag(data, "stream")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    include_usage = bool(options) and flag(options, "include_usage", "stream_options.include_usage")
    max_tokens = data.get("max_completion_tokens")
    which = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, which = data.get("max_tokens"), "max_tokens"
    messages = _messages(data.get("messages"))
    forwarded = {name: data.get(name) for name in FORWARDED_FIELDS}
    try:
        request = ChatRequest.build(messages, data.get("temperature"), max_tokens, **forwarded)
    except ValueError as exc:
        text = str(exc)
        param = next((n for n in ("temperature", *FORWARDED_FIELDS) if text.startswith(n)), None)
        param = param or (which if text.startswith("max_tokens") else None)
        raise bad_request(text.replace("max_tokens", which), param or "messages") from None
    return ParsedChat(model, request, stream, include_usage)


def load_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or `ApiError(400)` saying why it is not one."""
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("The body is not UTF-8 JSON.", code="invalid_json") from None
    except ValueError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise bad_request("The body's JSON is nested too deeply.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    return data


ENCODINGS = ("float", "base64")


@dataclass(frozen=True)
class ParsedEmbeddings:
    """A validated `/v1/embeddings` body."""

    model: str
    request: EmbeddingRequest
    encoding_format: str


def parse_embeddings(body: bytes) -> ParsedEmbeddings:
    """OpenAI's embeddings request (`input` text or a list of texts, `model`, `encoding_format`, `dimensions`;
    `user` ignored), validated as the client will validate it, or `ApiError(400)`. Token arrays are refused: which
    tokenizer made them is not known here, and the providers behind the pool take text."""
    data = load_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required: 'auto', a provider name, or an embedding model id.", "model")
    given = data.get("input")
    if (
        isinstance(given, list)
        and given
        and all(isinstance(x, int) or (isinstance(x, list) and all(isinstance(y, int) for y in x)) for x in given)
    ):
        raise bad_request(
            "'input' as token ids is not supported: send the text (a string or a list of strings); LangChain's "
            "OpenAIEmbeddings sends text with check_embedding_ctx_length=False.",
            "input",
            "unsupported_parameter",
        )
    encoding = data.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise bad_request(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}.", "encoding_format")
    try:
        request = EmbeddingRequest.build(given, data.get("dimensions"))
    except ValueError as exc:
        text = str(exc)
        param = "dimensions" if text.startswith("dimensions") else "input"
        raise bad_request(text.replace("texts", "input", 1), param) from None
    return ParsedEmbeddings(model.strip(), request, str(encoding))


def embedding_id() -> str:
    return f"embd-{random_hex()}"


def embeddings_body(model: str, result: EmbeddingResult, encoding_format: str) -> bytes:
    """OpenAI's answer: `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
    "usage"}`; base64 is the little-endian float32 bytes the OpenAI SDKs decode (and ask for by default)."""
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(vector, encoding_format)}
        for i, vector in enumerate(result.vectors)
    ]
    prompt = result.usage.prompt_tokens
    usage = {"prompt_tokens": prompt, "total_tokens": result.usage.total_tokens or prompt}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def required_model(data: Mapping[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required: 'auto', a provider name, or 'provider/model'.", "model")
    return model.strip()


def flag(data: Mapping[str, Any], name: str, shown: str | None = None) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"'{shown or name}' must be true or false.", shown or name)
    return value


def _refuse_unsupported(data: Mapping[str, Any]) -> None:
    """Fields that would change the answer's shape are refused, not ignored: a program asking for tool calls, JSON
    mode or several choices must learn it will not get them, instead of receiving plain text it cannot parse."""
    for name in ("functions", "function_call"):
        if data.get(name):
            raise bad_request(
                f"'{name}' is OpenAI's deprecated form of tool calling: send 'tools' (and 'tool_choice').",
                name,
                "unsupported_parameter",
            )
    n = data.get("n")
    if n is not None and n != 1:
        raise bad_request("Only one choice ('n': 1) is supported.", "n", "unsupported_parameter")
    if data.get("logprobs"):
        raise bad_request("'logprobs' is not supported.", "logprobs", "unsupported_parameter")
    modalities = data.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise bad_request(
            "Only text output ('modalities': ['text']) is supported.", "modalities", "unsupported_parameter"
        )


_KEPT = {"tool": ("tool_call_id",), "assistant": ("tool_calls",)}
"""Fields besides role and content that the pool forwards, per role."""


def _messages(messages: Any) -> Any:
    """OpenAI's message list reduced to what the pool forwards (role, content, and a tool result's `tool_call_id`
    or an assistant's `tool_calls`); other shapes go to the client's own validation unchanged, so its error messages
    (naming the index) reach the caller."""
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(message)
            continue
        role = message.get("role")
        if role == "function":
            raise bad_request(f"messages[{i}]: role 'function' is deprecated: send role 'tool'.", "messages")
        role = _ROLES.get(role, role) if isinstance(role, str) else role
        kept = {"role": role, "content": message.get("content")}
        for name in _KEPT.get(role, ()) if isinstance(role, str) else ():
            if message.get(name) is not None:
                kept[name] = message[name]
        out.append(kept)
    return out


# --- answers --------------------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{random_hex()}"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


def completion_body(cid: str, created: int, model: str, result: ChatResult) -> bytes:
    """A `chat.completion` of one answer: its text (null when it only calls tools, as OpenAI sends it), its
    `tool_calls`, and `finish_reason` as the provider said it."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text or None, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    elif message["content"] is None:
        message["content"] = ""
    return dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason_of(result)}],
            "usage": usage_dict(result.usage),
            "system_fingerprint": None,
        }
    )


def finish_reason_of(result: ChatResult | None) -> str:
    if result is None:
        return "stop"
    return result.finish_reason or ("tool_calls" if result.tool_calls else "stop")


class ChunkWriter:
    """`chat.completion.chunk` SSE events of one streamed answer, all sharing id, created time and model.

    The fields every event repeats are encoded once, and a text piece's event is the piece's JSON string between
    fixed bytes: the same bytes `dumps` writes for the whole chunk, for a fraction of its time."""

    def __init__(self, cid: str, model: str, include_usage: bool) -> None:
        self.cid = cid
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    @property
    def model(self) -> str:
        return self._model

    @model.setter
    def model(self, model: str) -> None:
        self._model = model
        self._head = (
            f'{{"id":{_encode(self.cid)},"object":"chat.completion.chunk","created":{self.created},'
            f'"model":{_encode(model)},"choices":'
        )

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.cid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "system_fingerprint": None,
        }
        if self.include_usage:
            chunk["usage"] = usage  # null on every chunk but the last, as OpenAI sends it
        return chunk

    def _event(
        self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None, encoded: str | None = None
    ) -> bytes:
        """`data: <chunk>` (`encoded`: the choices' JSON, when the caller has it)."""
        text = self._head + (_encode(choices) if encoded is None else encoded) + ',"system_fingerprint":null'
        if self.include_usage:
            text += ',"usage":' + _encode(usage)
        try:
            return b"data: " + text.encode() + b"}\n\n"
        except UnicodeEncodeError:  # a lone surrogate somewhere: as `dumps` writes such a chunk
            return b"data: " + dumps(self._chunk(choices, usage)) + b"\n\n"

    def first(self, text: str) -> bytes:
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}])

    def piece(self, text: str) -> bytes:
        encoded = f'[{{"index":0,"delta":{{"content":{_encode(text)}}},"finish_reason":null}}]'
        return self._event([{"index": 0, "delta": {"content": text}, "finish_reason": None}], encoded=encoded)

    def finish(self, result: ChatResult | None) -> bytes:
        """The closing events: the tool calls the answer asked for (one delta each, whole), the finish reason, the
        usage chunk when asked for, and `[DONE]`."""
        out = b""
        for index, call in enumerate(result.tool_calls if result else ()):
            out += self._event(
                [{"index": 0, "delta": {"tool_calls": [{"index": index, **call}]}, "finish_reason": None}]
            )
        out += self._event([{"index": 0, "delta": {}, "finish_reason": finish_reason_of(result)}])
        if self.include_usage:
            out += self._event([], usage_dict(result.usage if result else Usage()))
        return out + b"data: [DONE]\n\n"

    def error(self, error: ApiError) -> bytes:
        """An error after the answer began: an SSE event the OpenAI SDKs raise as `APIError` (never `[DONE]` after
        it, so a truncated answer is never mistaken for a whole one)."""
        return b"data: " + error.body() + b"\n\n"


def retry_headers(seconds: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (HTTP's unit, rounded up) and `retry-after-ms`, which the OpenAI SDKs read
    first, with a little margin so the retry does not arrive a hair before the key frees."""
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(math.ceil(seconds * 1000) + 20)}


def model_list(ids: Sequence[tuple[str, str]]) -> bytes:
    """`GET /v1/models`: (id, owned_by) pairs."""
    return dumps({"object": "list", "data": [model_entry(i, owner) for i, owner in ids]})


def model_entry(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""`json.dumps(data, ensure_ascii=False, separators=(",", ":"))`, without building an encoder per call."""
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON. Text that has no UTF-8 form (a lone surrogate a caller sent as a model name, or a provider
    escaped into its answer) is written as a JSON escape instead of failing the answer."""
    text = _encode(data)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _encode_ascii(data).encode()


def random_hex() -> str:
    """32 hex digits, as `uuid.uuid4().hex` (the version and variant bits set alike), for a third of its time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()
