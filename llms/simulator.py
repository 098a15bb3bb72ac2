"""Loopback HTTP server that fakes OpenRouter, Groq and Gemini on the wire.

Why: the rotation client has to be tested, benchmarked and demoed against the providers' *real* answer
shapes (status codes, rate-limit headers, error bodies, SSE framing) without network access or real keys.
Every registered key follows a script of `Step`s plus an optional fixed-window request limit, so any failure
sequence is reproducible. Stdlib only, and never imported by the client path.

    with Simulator() as sim:
        sim.add_key("groq", "gsk_test", Step.RATE_LIMIT, then=Step.OK)
        requests.post(f"{sim.base_urls['groq']}/chat/completions", ...)

Run `python -m llms.simulator --demo` for a foreground server with demo keys (prints the env exports).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import re
import socket
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass
from email.utils import formatdate
from enum import StrEnum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["DEMO_KEYS", "PROVIDERS", "SimRequest", "Simulator", "Step", "main"]

PROVIDERS: tuple[str, ...] = ("openrouter", "groq", "gemini")


class Step(StrEnum):
    """What a key does for one request: each value is a wire-level situation the client must classify."""

    OK = "ok"
    RATE_LIMIT = "rate_limit"  # 429 with the provider's retry hint
    RATE_LIMIT_NOHINT = "rate_limit_nohint"  # 429 without any hint
    RATE_LIMIT_DAILY = "rate_limit_daily"  # 429 for a per-day quota
    INVALID_KEY = "invalid_key"
    PERMISSION_DENIED = "permission_denied"
    NO_CREDITS = "no_credits"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"  # hang `hang_seconds`, then answer ok
    GARBAGE = "garbage"  # 200 text/html from a gateway
    ERROR_200 = "error_200"  # 200 whose body is an error / has no answer
    BAD_REQUEST = "bad_request"
    CONTEXT_LENGTH = "context_length"
    TOO_LARGE = "too_large"
    MODEL_NOT_FOUND = "model_not_found"
    BLOCKED = "blocked"  # prompt refused by moderation / safety
    MID_STREAM_ERROR = "mid_stream_error"  # stream starts, then fails; non-stream: as server_error
    DROP = "drop"  # close the socket without answering


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One logged request; never holds a secret (tests assert `key_in_url` stays False for the client)."""

    provider: str
    key_name: str
    path: str
    stream: bool
    status: int  # 0 for a dropped connection
    step: str
    model: str | None
    key_in_url: bool
    at: float


def _demo_keys() -> dict[str, list[str]]:
    """Fake secrets shaped like real ones, so hints and validation look right, and obviously not real."""
    return {
        "openrouter": [f"sk-or-v1-{'0' * 54}dec0dea{i:03d}" for i in range(1, 5)],
        "groq": [f"gsk_demo{'0' * 44}b{i:03d}" for i in range(1, 4)],
        "gemini": [f"AIzaSyDEMO-not-a-real-key-c{i:012d}" for i in range(1, 2)],
    }


DEMO_KEYS: dict[str, list[str]] = _demo_keys()

_DEFAULT_MODEL = {"openrouter": "openrouter/auto", "groq": "openai/gpt-oss-20b", "gemini": "gemini-2.5-flash"}
_GROQ_MODELS = ("openai/gpt-oss-20b", "llama-3.1-8b-instant", "llama-3.3-70b-versatile")
_GEMINI_MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro")

# HTTP status per step: (openrouter, groq, gemini). One table so the log and the renderers agree.
_STATUS: dict[Step, tuple[int, int, int]] = {
    Step.OK: (200, 200, 200),
    Step.RATE_LIMIT: (429, 429, 429),
    Step.RATE_LIMIT_NOHINT: (429, 429, 429),
    Step.RATE_LIMIT_DAILY: (429, 429, 429),
    Step.INVALID_KEY: (401, 401, 400),
    Step.PERMISSION_DENIED: (403, 403, 403),
    Step.NO_CREDITS: (402, 402, 429),
    Step.SERVER_ERROR: (500, 500, 500),
    Step.OVERLOADED: (502, 503, 503),
    Step.TIMEOUT: (200, 200, 200),
    Step.GARBAGE: (200, 200, 200),
    Step.ERROR_200: (200, 200, 200),
    Step.BAD_REQUEST: (400, 400, 400),
    Step.CONTEXT_LENGTH: (400, 400, 400),
    Step.TOO_LARGE: (413, 413, 400),
    Step.MODEL_NOT_FOUND: (404, 404, 404),
    Step.BLOCKED: (403, 400, 200),
    Step.MID_STREAM_ERROR: (200, 200, 200),
    Step.DROP: (0, 0, 0),
}
_COLUMN = {p: i for i, p in enumerate(PROVIDERS)}
_OKISH = frozenset({Step.OK, Step.TIMEOUT})
_IDS = itertools.count(1)  # next() on itertools.count is atomic under the GIL


def _status(provider: str, step: Step, stream: bool) -> int:
    if step is Step.MID_STREAM_ERROR and not stream:
        step = Step.SERVER_ERROR
    return _STATUS[step][_COLUMN[provider]]


# --------------------------------------------------------------------------------------------- key state


@dataclass(frozen=True, slots=True)
class _Quota:
    """Snapshot of a limit window, taken under the lock, rendered outside it."""

    limit: int
    remaining: int
    reset_in: float  # seconds until the window resets
    window: float


@dataclass(slots=True)
class _Window:
    """Fixed request window; keys of one account (`group`) share one, as providers count per account."""

    limit: int
    seconds: float
    start: float | None = None
    used: int = 0

    def roll(self, now: float) -> None:
        if self.start is None or now - self.start >= self.seconds:
            self.start, self.used = now, 0

    def quota(self, now: float) -> _Quota:
        start = now if self.start is None else self.start
        reset_in = max(0.0, start + self.seconds - now)
        return _Quota(self.limit, max(0, self.limit - self.used), reset_in, self.seconds)


@dataclass(slots=True)
class _Key:
    """A registered key's script. The secret is only the dict key in `Simulator._keys`, never stored here."""

    provider: str
    name: str
    steps: deque[Step]
    then: Step
    window: _Window | None
    limit_hint: bool
    latency: float | None
    org: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to answer, decided under the lock."""

    step: Step
    status: int
    quota: _Quota | None
    latency: float
    org: str


@dataclass(frozen=True, slots=True)
class _Call:
    """A parsed provider request."""

    provider: str
    probe: bool  # GET /key, /models: cheap key checks
    model: str | None
    stream: bool
    reply: str
    prompt_tokens: int
    valid: bool
    version: str = "v1"
    sse: bool = True

    @property
    def shown_model(self) -> str:
        return self.model or _DEFAULT_MODEL[self.provider]

    @property
    def completion_tokens(self) -> int:
        return len(self.reply.split())


@dataclass(slots=True)
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[bytes] | None = None  # SSE frames, sent with chunked transfer encoding


# --------------------------------------------------------------------------------------------- parsing


def _openai_parse(data: Any) -> tuple[str, int, bool, bool]:
    """(last user text, prompt words, has image, valid) from an OpenAI-style body."""
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        return "", 0, False, False
    last, words, image = "", 0, False
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "text":
                        texts.append(str(part.get("text", "")))
                    elif part.get("type") == "image_url":
                        image = True
            text = " ".join(texts)
        else:
            text = content if isinstance(content, str) else ""
        words += len(text.split())
        if msg.get("role") == "user":
            last = text
    return last, words, image, True


def _gemini_parts(content: Any) -> tuple[str, bool]:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return "", False
    texts = [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]
    image = any(isinstance(p, dict) and ("inlineData" in p or "inline_data" in p) for p in parts)
    return " ".join(texts), image


def _gemini_parse(data: Any) -> tuple[str, int, bool, bool]:
    """(last user text, prompt words, has image, valid) from a generateContent body."""
    contents = data.get("contents") if isinstance(data, dict) else None
    if not isinstance(contents, list) or not contents:
        return "", 0, False, False
    system = data.get("systemInstruction") or data.get("system_instruction")
    words = len(_gemini_parts(system)[0].split()) if system else 0
    last, image = "", False
    for content in contents:
        text, has_image = _gemini_parts(content)
        words += len(text.split())
        image = image or has_image
        if isinstance(content, dict) and content.get("role", "user") == "user":
            last = text
    return last, words, image, True


def _reply_text(provider: str, last: str, image: bool) -> str:
    return f"Simulated {provider} reply to: {last[:200]}" + (" [image received]" if image else "")


_OR_PREFIX = "/openrouter/api/v1/"
_GROQ_PREFIX = "/groq/openai/v1/"
_GEMINI_RE = re.compile(
    r"/gemini/(v1|v1beta|v1alpha)/models(?:/([^/:]+))?(?::(generateContent|streamGenerateContent))?"
)


def _route(method: str, path: str, query: str, body: bytes) -> _Call | None:
    """Map a request to a provider call, or None for an unknown route."""
    for provider, prefix, probe in (("openrouter", _OR_PREFIX, "key"), ("groq", _GROQ_PREFIX, "models")):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if method == "POST" and rest == "chat/completions":
                data = _loads(body)
                last, words, image, valid = _openai_parse(data)
                model = data.get("model") if isinstance(data, dict) else None
                stream = isinstance(data, dict) and data.get("stream") is True
                reply = _reply_text(provider, last, image)
                return _Call(provider, False, model if isinstance(model, str) else None, stream, reply, words, valid)
            if method == "GET" and rest == probe:
                return _Call(provider, True, None, False, "", 0, True)
            return None
    match = _GEMINI_RE.fullmatch(path)
    if match is None:
        return None
    version, model, action = match.groups()
    if action and method == "POST":
        last, words, image, valid = _gemini_parse(_loads(body))
        stream = action == "streamGenerateContent"
        sse = "alt=sse" in query
        return _Call("gemini", False, model, stream, _reply_text("gemini", last, image), words, valid, version, sse)
    if not action and method == "GET":
        return _Call("gemini", True, model, False, "", 0, True, version)
    return None


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------- rendering

_GARBAGE = b"<html><body>502 Bad Gateway</body></html>"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _dumps(obj: Any, indent: int | None = None) -> bytes:
    if indent:
        return json.dumps(obj, indent=indent).encode()
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(status: int, obj: Any, headers: dict[str, str] | None = None, indent: int | None = None) -> _Reply:
    return _Reply(status, {"Content-Type": "application/json", **(headers or {})}, _dumps(obj, indent))


def _sse(obj: Any, end: bytes = b"\n\n") -> bytes:
    return b"data: " + _dumps(obj) + end


def _pieces(text: str) -> list[str]:
    """~3-word chunks whose concatenation is exactly `text`."""
    words = text.split(" ")
    chunks = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
    return [c + " " for c in chunks[:-1]] + chunks[-1:]


def _go_duration(seconds: float) -> str:
    """Go's time.Duration text, as Groq's x-ratelimit-reset-* headers use ("2m59.56s", "7.66s", "840ms")."""
    if seconds < 1:
        ms = round(seconds * 1000)
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(round(seconds * 100), 360000)
    minutes, centis = divmod(rest, 6000)
    secs = f"{centis / 100:.2f}".rstrip("0").rstrip(".")
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"


def _pb_duration(seconds: float) -> str:
    """google.protobuf.Duration JSON text ("36s", "1.25s")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _usage(call: _Call) -> dict[str, int]:
    prompt, completion = call.prompt_tokens, call.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openai_ok(call: _Call, step: Step) -> _Reply:
    """OpenRouter / Groq chat completion, plain or streamed (also the truncated mid-stream-error stream)."""
    openrouter = call.provider == "openrouter"
    n, created, model = next(_IDS), int(time.time()), call.shown_model
    cid = f"gen-{created}-sim{n:012d}" if openrouter else f"chatcmpl-sim{n:012d}"
    usage = _usage(call)
    extra: dict[str, Any] = (
        {"provider": "SimProvider"} if openrouter else {"system_fingerprint": "fp_sim", "service_tier": "on_demand"}
    )
    if not call.stream:
        message = {"role": "assistant", "content": call.reply}
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            **extra,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
        if not openrouter:
            body["x_groq"] = {"id": f"req_sim{n:012d}"}
        return _json(200, body)

    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, **extra}

    def chunk(delta: dict[str, str], finish: str | None, **more: Any) -> bytes:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more})

    pieces = _pieces(call.reply)
    if step is Step.MID_STREAM_ERROR:
        pieces = pieces[:2]
    events = [b": OPENROUTER PROCESSING\n\n"] if openrouter else []
    events += [chunk({"role": "assistant", "content": p}, None) for p in pieces]
    if step is Step.MID_STREAM_ERROR:
        error = {"code": 502, "message": "Upstream provider disconnected"}
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        events.append(_sse({**head, "error": error, "choices": [choice]}))
        return _Reply(200, dict(_SSE_HEADERS), events=events)
    if openrouter:
        events.append(chunk({}, "stop"))
        events.append(_sse({**head, "choices": [], "usage": usage}))
    else:
        events.append(chunk({}, "stop", x_groq={"id": f"req_sim{n:012d}", "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return _Reply(200, dict(_SSE_HEADERS), events=events)


_UPSTREAM = {"provider_name": "SimUpstream", "raw": "upstream overloaded"}
_OR_ERRORS: dict[Step, tuple[int, str, dict[str, Any]]] = {
    Step.INVALID_KEY: (401, "User not found.", {}),
    Step.PERMISSION_DENIED: (403, "This API key has been disabled.", {}),
    Step.NO_CREDITS: (402, "Insufficient credits. Add more using https://openrouter.ai/credits", {}),
    Step.SERVER_ERROR: (500, "Internal Server Error", {}),
    Step.OVERLOADED: (502, "Provider returned error", _UPSTREAM),
    Step.ERROR_200: (502, "Provider returned error", _UPSTREAM),
    Step.BAD_REQUEST: (400, 'Input required: specify "prompt" or "messages"', {}),
    Step.CONTEXT_LENGTH: (
        400,
        "This endpoint's maximum context length is 131072 tokens. However, you requested about 200000 tokens "
        '(200000 of text input). Please reduce the length of either one, or use the "middle-out" transform '
        "to compress your prompt automatically.",
        {"provider_name": None},
    ),
    Step.TOO_LARGE: (413, "Request too large: the payload exceeds the provider's size limit.", {}),
    Step.MODEL_NOT_FOUND: (404, "No endpoints found for {model}.", {}),
    Step.BLOCKED: (403, "Input was flagged by moderation", {"reasons": ["violence"]}),
}


def _next_utc_midnight_ms() -> int:
    return (int(time.time()) // 86400 + 1) * 86400 * 1000


def _openrouter(call: _Call, plan: _Plan, step: Step, label: str) -> _Reply:
    if step in _OKISH:
        if not call.probe:
            return _openai_ok(call, step)
        quota = plan.quota
        rate = {
            "requests": quota.limit if quota else 20,
            "interval": f"{quota.window:g}s" if quota else "10s",
        }
        data = {"label": label, "usage": 0, "limit": None, "limit_remaining": None, "is_free_tier": True}
        return _json(200, {"data": {**data, "rate_limit": rate}})
    if step is Step.MID_STREAM_ERROR:
        return _openai_ok(call, step)
    if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT):
        daily = step is Step.RATE_LIMIT_DAILY
        message = (
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
            if daily
            else "Rate limit exceeded: free-models-per-min. "
        )
        if step is Step.RATE_LIMIT_NOHINT:
            return _json(429, {"error": {"code": 429, "message": message, "metadata": {}}})
        quota = plan.quota
        if daily:
            limit, reset_ms = 50, _next_utc_midnight_ms()
        elif quota:
            limit, reset_ms = quota.limit, int((time.time() + quota.reset_in) * 1000)
        else:
            limit, reset_ms = 20, (int(time.time()) // 60 + 1) * 60_000
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_ms),
        }
        meta = {"headers": headers, "provider_name": None}
        return _json(429, {"error": {"code": 429, "message": message, "metadata": meta}}, headers)
    code, message, meta = _OR_ERRORS[step]
    error = {"code": code, "message": message.format(model=call.shown_model), "metadata": meta}
    return _json(plan.status, {"error": error})


_GROQ_ERRORS: dict[Step, dict[str, Any]] = {
    Step.INVALID_KEY: {
        "message": "Invalid API Key",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    },
    Step.PERMISSION_DENIED: {
        "message": "Organization has been restricted. Please reach out to support if you believe this was in error.",
        "type": "invalid_request_error",
        "code": "organization_restricted",
    },
    Step.NO_CREDITS: {
        "message": "Your organization has reached its spending limit. Please review your billing settings.",
        "type": "invalid_request_error",
        "code": "spend_limit_reached",
    },
    Step.SERVER_ERROR: {"message": "Internal Server Error", "type": "internal_server_error"},
    Step.OVERLOADED: {"message": "Service Unavailable", "type": "internal_server_error"},
    Step.ERROR_200: {"message": "Internal Server Error", "type": "internal_server_error"},
    Step.BAD_REQUEST: {
        "message": "'messages' must contain at least one message",
        "type": "invalid_request_error",
        "code": None,
    },
    Step.CONTEXT_LENGTH: {
        "message": "Please reduce the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    },
    Step.TOO_LARGE: {
        "message": "Request too large for model `{model}` in organization `{org}` on tokens per minute "
        "(TPM): Limit 6000, Requested 9000, please reduce your message size and try again.",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    },
    Step.MODEL_NOT_FOUND: {
        "message": "The model `{model}` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "code": "model_not_found",
    },
    Step.BLOCKED: {
        "message": "Input was flagged by moderation",
        "type": "invalid_request_error",
        "code": "content_filter",
    },
}
_GROQ_TOKENS_PER_MINUTE = 6000
_GROQ_RATE_TEXT = (
    "Rate limit reached for model `{model}` in organization `{org}` on {what}: Limit {limit}, Used {used}, "
    "Requested {requested}.{retry} Visit https://console.groq.com/docs/rate-limits for more information."
)


def _groq(call: _Call, plan: _Plan, step: Step, label: str) -> _Reply:
    quota, is429 = plan.quota, plan.status == 429
    limit, remaining, reset = (quota.limit, quota.remaining, quota.reset_in) if quota else (14400, 14399, 6.0)
    if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_NOHINT) and not quota:
        limit, reset = 30, 7.66  # Groq's free-tier RPM and a typical hint
    tokens = call.prompt_tokens + call.completion_tokens
    token_reset = tokens * 60.0 / _GROQ_TOKENS_PER_MINUTE
    token_remaining = max(0, _GROQ_TOKENS_PER_MINUTE - tokens)
    if step is Step.RATE_LIMIT_DAILY:
        token_remaining, token_reset = 0, 432.5
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(0 if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_NOHINT) else remaining),
        "x-ratelimit-reset-requests": _go_duration(reset),
        "x-ratelimit-limit-tokens": str(_GROQ_TOKENS_PER_MINUTE),
        "x-ratelimit-remaining-tokens": str(token_remaining),
        "x-ratelimit-reset-tokens": _go_duration(token_reset),
    }
    model = call.shown_model
    if is429:
        if step is Step.RATE_LIMIT_DAILY:
            what, nums, retry = "tokens per day (TPD)", (500000, 499990, 40), 432.5
        else:
            what, nums, retry = "requests per minute (RPM)", (limit, limit, 1), reset
        hint = step is not Step.RATE_LIMIT_NOHINT
        if hint:
            headers["retry-after"] = str(max(1, math.ceil(retry)))
        else:
            del headers["x-ratelimit-reset-requests"], headers["x-ratelimit-reset-tokens"]
        message = _GROQ_RATE_TEXT.format(
            model=model,
            org=plan.org,
            what=what,
            limit=nums[0],
            used=nums[1],
            requested=nums[2],
            retry=f" Please try again in {_go_duration(retry)}." if hint else "",
        )
        kind = "tokens" if step is Step.RATE_LIMIT_DAILY else "requests"
        return _json(429, {"error": {"message": message, "type": kind, "code": "rate_limit_exceeded"}}, headers)
    if step in _OKISH or step is Step.MID_STREAM_ERROR:
        if call.probe:
            data = [{"id": m, "object": "model", "owned_by": "Sim", "active": True} for m in _GROQ_MODELS]
            reply = _json(200, {"object": "list", "data": data})
        else:
            reply = _openai_ok(call, step)
        reply.headers.update(headers)
        return reply
    error = {k: v.format(model=model, org=plan.org) if isinstance(v, str) else v for k, v in _GROQ_ERRORS[step].items()}
    return _json(plan.status, {"error": error}, headers)


_GEMINI_ERRORS: dict[Step, tuple[str, str]] = {
    Step.INVALID_KEY: ("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    Step.PERMISSION_DENIED: (
        "PERMISSION_DENIED",
        "Your API key was reported as leaked. Please use another API key.",
    ),
    Step.NO_CREDITS: (
        "RESOURCE_EXHAUSTED",
        "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects "
        "to manage your project and billing.",
    ),
    Step.SERVER_ERROR: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    Step.OVERLOADED: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    Step.BAD_REQUEST: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    Step.CONTEXT_LENGTH: (
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ),
    Step.TOO_LARGE: ("INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes."),
    Step.MODEL_NOT_FOUND: (
        "NOT_FOUND",
        "models/{model} is not found for API version {version}, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
    ),
}
_API_KEY_INVALID = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key.",
    },
]
_GEMINI_HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}


def _gemini_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> _Reply:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return _json(code, {"error": error}, indent=2)  # Google pretty-prints JSON bodies


def _gemini_rate_limit(call: _Call, plan: _Plan, step: Step) -> _Reply:
    daily, quota = step is Step.RATE_LIMIT_DAILY, plan.quota
    value = "250" if daily else str(quota.limit if quota else 10)
    period = "Day" if daily else "Minute"
    metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
        "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n"
        f"* Quota exceeded for metric: {metric}, limit: {value}, model: {call.shown_model}"
    )
    violation = {
        "quotaMetric": metric,
        "quotaId": f"GenerateRequestsPer{period}PerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": call.shown_model},
        "quotaValue": value,
    }
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        _GEMINI_HELP,
    ]
    if step is Step.RATE_LIMIT:
        delay = _pb_duration(quota.reset_in if quota else 36.0)
        message += f"\nPlease retry in {delay}."
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return _gemini_error(429, "RESOURCE_EXHAUSTED", message, details)


def _gemini(call: _Call, plan: _Plan, step: Step, label: str) -> _Reply:
    model, rid = call.shown_model, f"sim{next(_IDS):012d}"
    prompt = {"promptTokenCount": call.prompt_tokens, "totalTokenCount": call.prompt_tokens}
    if step in (Step.RATE_LIMIT, Step.RATE_LIMIT_DAILY, Step.RATE_LIMIT_NOHINT):
        return _gemini_rate_limit(call, plan, step)
    if step in _OKISH and call.probe:

        def describe(name: str) -> dict[str, Any]:
            methods = ["generateContent", "countTokens"]
            return {"name": f"models/{name}", "displayName": name, "supportedGenerationMethods": methods}

        listing = describe(call.model) if call.model else {"models": [describe(m) for m in _GEMINI_MODELS]}
        return _json(200, listing, indent=2)
    if step in (Step.BLOCKED, Step.ERROR_200):
        body: dict[str, Any] = {"usageMetadata": prompt, "modelVersion": model, "responseId": rid}
        if step is Step.BLOCKED:
            body = {"promptFeedback": {"blockReason": "SAFETY"}, **body}
        if call.stream and call.sse:
            return _Reply(200, dict(_SSE_HEADERS), events=[_sse(body, b"\r\n\r\n")])
        return _json(200, body, indent=2)
    if step not in _OKISH and step is not Step.MID_STREAM_ERROR:
        status, message = _GEMINI_ERRORS[step]
        details = _API_KEY_INVALID if step is Step.INVALID_KEY else None
        return _gemini_error(plan.status, status, message.format(model=model, version=call.version), details)

    usage = {**prompt, "candidatesTokenCount": call.completion_tokens}
    usage["totalTokenCount"] = call.prompt_tokens + call.completion_tokens

    def answer(text: str, final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = "STOP"
        meta = usage if final else prompt
        return {"candidates": [candidate], "usageMetadata": meta, "modelVersion": model, "responseId": rid}

    if not call.stream:
        return _json(200, answer(call.reply, True), indent=2)
    pieces = _pieces(call.reply)
    if step is Step.MID_STREAM_ERROR:
        chunks = [answer(p, False) for p in pieces[:2]]
        status, message = _GEMINI_ERRORS[Step.OVERLOADED]
        chunks.append({"error": {"code": 503, "message": message, "status": status}})
    else:
        chunks = [answer(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    if not call.sse:  # without alt=sse Gemini streams one JSON array
        return _json(200, chunks, indent=2)
    return _Reply(200, dict(_SSE_HEADERS), events=[_sse(c, b"\r\n\r\n") for c in chunks])


_RENDERERS = {"openrouter": _openrouter, "groq": _groq, "gemini": _gemini}


def _render(call: _Call, plan: _Plan, label: str) -> _Reply:
    step = plan.step
    if step is Step.MID_STREAM_ERROR and not call.stream:
        step = Step.SERVER_ERROR
    if step is Step.GARBAGE:
        return _Reply(200, {"Content-Type": "text/html"}, _GARBAGE)
    return _RENDERERS[call.provider](call, plan, step, label)


def _label(secret: str | None) -> str:
    """OpenRouter's partial key label ("sk-or-v1-abc...xyz"); never the full secret."""
    return f"{secret[:12]}...{secret[-3:]}" if secret and len(secret) > 20 else "sk-or-v1-...."


# --------------------------------------------------------------------------------------------- HTTP server

_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_DATE: list[Any] = [0, ""]  # (epoch second, formatted): formatting a Date header per request is measurable


def _http_date() -> str:
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[:] = [now, formatdate(now, usegmt=True)]
    return str(_DATE[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for hung (timeout step) or idle keep-alive connections
    request_queue_size = 1024
    sim: Simulator

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, drops) are normal here; anything else gets one quiet line."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"llms.simulator: handler error: {type(exc).__name__}", file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LLMSimulator/1.0"
    disable_nagle_algorithm = True  # small header + body writes must not wait for delayed ACKs
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines could carry a key (`?key=`), and tests want quiet output."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        sim = self.server.sim
        raw = self.path
        path, _, query = raw.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._write(_json(400, {"error": {"message": "bad Content-Length"}}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if path.startswith("/_sim/"):
            self._write(self._control(path, body))
            return
        call = _route(self.command, path, query, body)
        if call is None:
            self._write(_json(404, {"error": {"code": 404, "message": f"Not found: {self.command} {path}"}}))
            return
        secret = self._secret(call.provider, query)
        plan = sim._admit(call, secret, raw, path)
        if plan.latency > 0:
            time.sleep(plan.latency)
        if plan.step is Step.DROP:
            self.close_connection = True
            return
        if plan.step is Step.TIMEOUT and sim._stopping.wait(sim.hang_seconds):
            self.close_connection = True  # stopped while hanging: die like a killed server
            return
        self._write(_render(call, plan, _label(secret)), plan.latency)

    def _secret(self, provider: str, query: str) -> str | None:
        if provider == "gemini":
            key = self.headers.get("x-goog-api-key")
            if not key and "key=" in query:  # Google also accepts ?key=; the log flags it as key_in_url
                key = parse_qs(query).get("key", [""])[0]
            return key or None
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def _control(self, path: str, body: bytes) -> _Reply:
        """Control API for other processes (benchmarks, the dashboard demo)."""
        sim, method = self.server.sim, self.command
        try:
            data = _loads(body) or {}
            if path == "/_sim/keys" and method == "POST":
                limit = data.get("limit")
                name = sim.add_key(
                    data["provider"],
                    data["secret"],
                    *data.get("steps", ()),
                    then=data.get("then", Step.OK),
                    limit=(int(limit[0]), float(limit[1])) if limit else None,
                    limit_hint=bool(data.get("limit_hint", True)),
                    group=data.get("group"),
                    latency=data.get("latency"),
                    name=data.get("name"),
                )
                return _json(200, {"name": name})
            if path == "/_sim/steps" and method == "POST":
                sim.set_steps(data["secret"], *data.get("steps", ()), then=data.get("then", Step.OK))
                return _json(200, {"ok": True})
            if path == "/_sim/requests" and method == "GET":
                return _json(200, [asdict(r) for r in sim.requests])
            if path == "/_sim/clear" and method == "POST":
                sim.clear_log()
                return _json(200, {"ok": True})
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})
        return _json(404, {"error": f"unknown control endpoint {method} {path}"})

    def _write(self, reply: _Reply, latency: float = 0.0) -> None:
        """One write for a plain answer; chunked transfer encoding for SSE, so keep-alive survives streams."""
        lines = [
            f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, '')}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        events = reply.events
        chunked = events is not None and self.request_version != "HTTP/1.0"
        if events is None:
            lines.append(f"Content-Length: {len(reply.body)}")
        elif chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if events is None:
                self.wfile.write(head + reply.body)
                return
            delay = latency / len(events) if latency > 0 else 0.0
            for i, event in enumerate(events):
                frame = b"%x\r\n%s\r\n" % (len(event), event) if chunked else event
                self.wfile.write(head + frame if i == 0 else frame)
                if delay:
                    time.sleep(delay)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


# --------------------------------------------------------------------------------------------- public API


class Simulator:
    """Fake OpenRouter / Groq / Gemini endpoints on 127.0.0.1 with scripted per-key behaviour.

    `latency`: seconds before each answer (streams also spread that much again across their chunks);
    `hang_seconds`: how long a `timeout` step hangs; `port`: 0 picks a free one.
    Thread-safe: one lock guards scripts, limit windows and the log; rendering and sleeping happen outside it.
    """

    def __init__(self, latency: float = 0.0, hang_seconds: float = 5.0, port: int = 0) -> None:
        self.latency = latency
        self.hang_seconds = hang_seconds
        self._port = port
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._groups: dict[tuple[str, str], _Window] = {}
        self._counts = dict.fromkeys(PROVIDERS, 0)
        self._log: list[SimRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Bind 127.0.0.1 (a free port unless `port` was given) and serve in a daemon thread."""
        if self._server is None:
            self._stopping.clear()
            server = _Server(("127.0.0.1", self._port), self)
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="llm-simulator", daemon=True
            )
            self._server = server
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open connections (so pooled clients see a dead server); idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with server.conn_lock:
            conns = list(server.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"Simulator({where}, keys={len(self._keys)}, requests={len(self._log)})"

    # addresses ---------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("Simulator not started: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_urls(self) -> dict[str, str]:
        url = self.url
        return {
            "openrouter": f"{url}/openrouter/api/v1",
            "groq": f"{url}/groq/openai/v1",
            "gemini": f"{url}/gemini",
        }

    def env(self) -> dict[str, str]:
        """Base-URL env vars that point a client at this simulator."""
        return {f"{p.upper()}_BASE_URL": u for p, u in self.base_urls.items()}

    # scripting ---------------------------------------------------------------------------------------
    def add_key(
        self,
        provider: str,
        secret: str,
        *steps: Step | str,
        then: Step | str = Step.OK,
        limit: tuple[int, float] | None = None,
        limit_hint: bool = True,
        group: str | None = None,
        latency: float | None = None,
        name: str | None = None,
    ) -> str:
        """Register (or re-script) a key; returns its display name.

        `steps` run one per request, then `then` forever. `limit=(n, seconds)` allows n successful requests
        per fixed window (started by the first request); over it the key answers 429 whatever its steps,
        without consuming a step. Keys sharing `group` (per provider) share one window. Probes (GET /key,
        /models) are subject to the limit but do not use it up. A scripted `ok` whose body is malformed
        answers `bad_request`, as the real API would.
        """
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string")
        if limit is not None and (int(limit[0]) < 0 or float(limit[1]) <= 0):
            raise ValueError("limit must be (n >= 0, window_seconds > 0)")
        script, final = deque(Step(s) for s in steps), Step(then)
        with self._lock:
            old = self._keys.get(secret)
            if name is None:
                if old is not None and old.provider == provider:
                    name = old.name
                else:
                    self._counts[provider] += 1
                    name = f"{provider}#{self._counts[provider]}"
            window = self._window(provider, limit, group)
            org = f"org_01sim{zlib.crc32((group or name).encode()):08x}"
            self._keys[secret] = _Key(provider, name, script, final, window, limit_hint, latency, org)
        return name

    def _window(self, provider: str, limit: tuple[int, float] | None, group: str | None) -> _Window | None:
        if group is None:
            return _Window(int(limit[0]), float(limit[1])) if limit else None
        window = self._groups.get((provider, group))
        if window is None and limit:
            window = self._groups[(provider, group)] = _Window(int(limit[0]), float(limit[1]))
        elif window is not None and limit:
            window.limit, window.seconds = int(limit[0]), float(limit[1])
        return window

    def set_steps(self, secret: str, *steps: Step | str, then: Step | str = Step.OK) -> None:
        """Re-script an existing key (its limit window is kept)."""
        script, final = deque(Step(s) for s in steps), Step(then)
        with self._lock:
            key = self._keys.get(secret)
            if key is None:
                raise KeyError("no key registered with that secret")
            key.steps, key.then = script, final

    def add_demo_keys(self, per_minute: int = 3) -> dict[str, str]:
        """Register DEMO_KEYS (each `per_minute` requests per minute); returns the env a client needs."""
        env = self.env()
        for provider, secrets in DEMO_KEYS.items():
            for i, secret in enumerate(secrets, 1):
                self.add_key(provider, secret, limit=(per_minute, 60.0))
                env[f"{provider.upper()}_API_KEY_{i}"] = secret
        return env

    # log ---------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[SimRequest]:
        with self._lock:
            return list(self._log)

    def calls(self, name: str | None = None) -> int:
        """Requests that reached the key called `name` (all requests when None)."""
        with self._lock:
            if name is None:
                return len(self._log)
            return sum(1 for r in self._log if r.key_name == name)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # request path ------------------------------------------------------------------------------------
    def _admit(self, call: _Call, secret: str | None, raw_path: str, path: str) -> _Plan:
        """Pick the step for one request (limit, then script), update the window and log it."""
        at, now = time.time(), time.monotonic()
        with self._lock:
            key = self._keys.get(secret) if secret else None
            if key is not None and key.provider != call.provider:
                key = None  # a Groq key sent to OpenRouter is as unknown there as a typo
            in_url = any(s in raw_path for s in self._keys) or bool(secret and secret in raw_path)
            quota: _Quota | None = None
            if key is None:
                step, name, latency, org = Step.INVALID_KEY, "unknown", self.latency, "org_unknown"
            else:
                name, org = key.name, key.org
                latency = self.latency if key.latency is None else key.latency
                window = key.window
                if window is not None:
                    window.roll(now)
                if window is not None and window.used >= window.limit:
                    step = Step.RATE_LIMIT if key.limit_hint else Step.RATE_LIMIT_NOHINT
                else:
                    step = key.steps.popleft() if key.steps else key.then
                    if step is Step.OK and not call.valid:
                        step = Step.BAD_REQUEST
                    if window is not None and step in _OKISH and not call.probe:
                        window.used += 1
                if window is not None:
                    quota = window.quota(now)
            status = _status(call.provider, step, call.stream)
            shown_path = path.replace(secret, "<redacted>") if secret and secret in path else path
            self._log.append(
                SimRequest(call.provider, name, shown_path, call.stream, status, step.value, call.model, in_url, at)
            )
        return _Plan(step, status, quota, latency, org)


def main(argv: list[str] | None = None) -> int:
    """`python -m llms.simulator`: a foreground simulator for manual runs and the dashboard demo."""
    parser = argparse.ArgumentParser(prog="python -m llms.simulator", description="Fake OpenRouter/Groq/Gemini server.")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--demo", action="store_true", help="register the demo keys and print their env vars")
    parser.add_argument("--per-minute", type=int, default=3, help="requests per minute per demo key")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds of simulated latency per answer")
    args = parser.parse_args(argv)
    try:
        sim = Simulator(latency=args.latency, port=args.port).start()
    except OSError as exc:
        print(f"llms.simulator: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    env = sim.add_demo_keys(args.per_minute) if args.demo else sim.env()
    print(f"# LLM provider simulator on {sim.url} — paste these into the client's shell, Ctrl-C to stop")
    for var, value in env.items():
        print(f"export {var}={value}")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
