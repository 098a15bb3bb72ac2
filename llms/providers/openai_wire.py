"""The OpenAI chat-completions wire format as data: the request bodies written and the answer's parts read.

Apart from the sockets (`openai_compat.py` sends these bodies and hands back what came, blocking or awaited), so
what a body holds is one place for every OpenAI-compatible provider, and a provider module takes what it needs
(`classify_answer`, `QuotaHeaders`) without the adapter. Written: a chat or embeddings request (tool call ids
shortened to what OpenAI accepts). Read: an answer's text, its tool calls (whole, or as stream deltas), usage,
vectors and quota headers; a malformed part is dropped or refused here, never passed on half-formed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llms.outcomes import OK, Outcome, QuotaHint, TokensLeft, rejected, transient
from llms.types import ChatRequest, EmbeddingRequest, Usage
from llms.wire import parse_duration, snippet


def chat_body(request: ChatRequest, model: str, least: Mapping[str, Any], allowance: int, stream: bool) -> bytes:
    """A chat request's JSON body: `least` and `allowance` are the reasoning fields and extra output tokens the
    provider asks for (`OpenAICompatAdapter.reasoning`); the agent options go in OpenAI's shapes, as is."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": _short_call_ids(request.messages),
        **least,
        **request.options,  # tools, response_format, stop, …: OpenAI's shapes, which these providers take as is
    }
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens + allowance
    if stream:
        payload["stream"] = True
    return _encode_payload(payload).encode()


def embedding_body(request: EmbeddingRequest) -> bytes:
    """An embeddings request's JSON body, floats asked for (`decode_vector` also reads base64)."""
    payload: dict[str, Any] = {"model": request.model, "input": list(request.texts), "encoding_format": "float"}
    if request.dimensions is not None:
        payload["dimensions"] = request.dimensions
    return json.dumps(payload, ensure_ascii=False).encode()


_encode_payload = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
"""`json.dumps(payload, ensure_ascii=False, allow_nan=False)`, without building an encoder per request."""


@dataclass(frozen=True)
class QuotaHeaders:
    """Which of a provider's success headers say how many requests are left in its window and when it resets,
    and how many tokens are left this minute and when those reset (resets as Go durations or seconds)."""

    requests: str
    requests_reset: str
    tokens: str
    tokens_reset: str
    default_reset: float | None = None  # when the provider sends no reset header for its requests
    per_day: bool = False  # the request headers count a day, not a minute (see QuotaHint.per_day)
    requests_limit: str | None = None  # the header that says the window's size, where one does
    tokens_limit: str | None = None  # the header that says the window of tokens' size, where one does

    def read(self, headers: Mapping[str, str]) -> QuotaHint | None:
        """Requests left and tokens left."""
        requests = headers.get(self.requests, "").strip()
        tokens = headers.get(self.tokens, "").strip()
        if not requests.isdigit() and not tokens.isdigit():
            return None
        tokens_left = None
        if tokens.isdigit():
            tokens_reset = parse_duration(headers.get(self.tokens_reset, "")) or self.default_reset
            tokens_left = TokensLeft(int(tokens), tokens_reset, _count(headers, self.tokens_limit))
        return QuotaHint(
            remaining=int(requests) if requests.isdigit() else None,
            reset_after=parse_duration(headers.get(self.requests_reset, "")) or self.default_reset,
            limit=_count(headers, self.requests_limit),
            per_day=self.per_day,
            tokens=tokens_left,
        )


def _count(headers: Mapping[str, str], name: str | None) -> int | None:
    """A whole count a header says (None: no such header, or not a count)."""
    value = headers.get(name, "").strip() if name else ""
    return int(value) if value.isdigit() else None


def classify_answer(body: Any) -> Outcome:
    """A 200 whose body has no error object: an answer only if it has a choice to read."""
    if not isinstance(body, dict):
        return transient(f"answer was not JSON: {snippet(body)}", 200)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
        if choices[0].get("finish_reason") == "error":
            return transient("answer ended with finish_reason 'error'", 200)
        return OK
    return transient("answer had no choices", 200)


def empty_answer(finish_reason: Any) -> Outcome:
    """An answer with no text is never returned as `""`: the request may fit another provider (a reasoning
    model spent `max_tokens` on thoughts, a filter removed the text); no key is at fault."""
    why = {"length": "max_tokens ran out before any text", "content_filter": "the provider's filter removed it"}
    reason = why.get(str(finish_reason), f"finish_reason {finish_reason!r}")
    return rejected(f"answer had no text ({reason})", 200)


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def tool_calls_of(raw: Any) -> tuple[dict[str, Any], ...]:
    """An answer's `tool_calls`, in OpenAI's shape (`arguments` as JSON text); entries of another shape are
    dropped rather than passed on half-formed."""
    if not isinstance(raw, list):
        return ()
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        calls.append(
            {
                "id": str(call.get("id") or f"call_{len(calls)}"),
                "type": "function",
                "function": {
                    "name": function["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                },
            }
        )
    return tuple(calls)


def merge_tool_call_deltas(calls: list[dict[str, Any]], deltas: Any) -> None:
    """Fold a stream's tool-call deltas into whole calls: each delta names its call by `index`; the first brings
    the id and the name, later ones append to `arguments`."""
    for delta in deltas if isinstance(deltas, list) else []:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", len(calls))
        if not isinstance(index, int) or index < 0 or index > len(calls) or index > 127:
            continue
        if index == len(calls):
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if delta.get("id"):
            call["id"] = str(delta["id"])
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        if function.get("name") and not call["function"]["name"]:
            call["function"]["name"] = str(function["name"])
        if function.get("arguments"):
            call["function"]["arguments"] += str(function["arguments"])


def vectors_of(data: Any, count: int) -> list[list[float]] | None:
    """`data` of an embeddings answer as `count` vectors in input order (by `index`; floats, or OpenAI's base64 of
    little-endian float32); None when it holds anything else."""
    if not isinstance(data, list) or len(data) != count:
        return None
    found: dict[int, list[float]] = {}
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            return None
        index = item.get("index", position)
        vector = decode_vector(item.get("embedding"))
        if not isinstance(index, int) or not 0 <= index < count or index in found or vector is None:
            return None
        found[index] = vector
    return [found[i] for i in range(count)]


def decode_vector(raw: Any) -> list[float] | None:
    if isinstance(raw, str):
        try:
            packed = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
        if not packed or len(packed) % 4:
            return None
        return list(struct.unpack(f"<{len(packed) // 4}f", packed))
    if not isinstance(raw, list) or not raw:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in raw):
        return None
    return [float(x) for x in raw]


def usage_of(raw: Any) -> Usage:
    """Token counts; a malformed `usage` block costs the counts, never the answer."""
    if not isinstance(raw, dict):
        return Usage()
    try:
        prompt = max(0, int(raw.get("prompt_tokens") or 0))
        completion = max(0, int(raw.get("completion_tokens") or 0))
        return Usage(prompt, completion, max(0, int(raw.get("total_tokens") or prompt + completion)))
    except (TypeError, ValueError, OverflowError):
        return Usage()


MAX_CALL_ID = 40
"""OpenAI refuses a tool call id longer than 40 characters ("string too long. Expected a string with maximum
length 40", also through OpenRouter: openclaw#875); Gemini's ids carry its thought signature and run longer."""


def _short_call_ids(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The messages, with every tool call id over `MAX_CALL_ID` replaced by a stable hash of it, the same in the
    assistant's `tool_calls` and in the `tool` message that answers it."""

    def short(call_id: str) -> str:
        if len(call_id) <= MAX_CALL_ID:
            return call_id
        return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]

    out: list[Mapping[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            calls = [{**call, "id": short(call["id"])} for call in calls]
            message = {**message, "tool_calls": calls}
        if message.get("role") == "tool":
            message = {**message, "tool_call_id": short(message["tool_call_id"])}
        out.append(message)
    return out
