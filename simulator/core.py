"""What the simulator's parts share: the scripted `Step`s, a parsed call, a planned reply, wire helpers.

Each simulated provider (`simulator.provider`, listed in `simulator.registry`) turns a `Call` and a `Plan` into its
exact answer; `simulator.server` keeps per-key scripts and limit windows, `simulator.handler` serves them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import struct
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.shapes import Limit


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
    EMPTY_ANSWER = "empty_answer"  # 200 with no text: max_tokens spent (on thoughts), finish_reason length
    # Provider-specific steps, rendered from the recorded wire examples in simulator/wire/ (see WIRE_STEPS):
    UPSTREAM_RATE_LIMIT = "upstream_rate_limit"  # OpenRouter: the model is rate-limited upstream, for every key
    RATE_LIMIT_IN_200 = "rate_limit_in_200"  # OpenRouter: a 429 inside a 200 body (or SSE event)
    ERROR_IN_CHOICE = "error_in_choice"  # OpenRouter: partial text, finish_reason error
    NEEDS_FEWER_TOKENS = "needs_fewer_tokens"  # OpenRouter: 402 "…or fewer max_tokens… can only afford N"
    KEY_LIMIT = "key_limit"  # OpenRouter: 403 the key's own spend limit
    GUARDRAIL = "guardrail"  # OpenRouter: 403 request blocked by a guardrail
    PROVIDER_ERROR_429 = "provider_error_429"  # OpenRouter: 429 "Provider returned error" (the upstream's limit)
    NO_PROVIDER = "no_provider"  # OpenRouter: 503 no available model provider (the model, for every key)
    OVER_BUDGET = "over_budget"  # OpenRouter: 402 weight_exceeds_budget (this request is too expensive)
    IN_FLIGHT_BUDGET = "in_flight_budget"  # OpenRouter: 402 in-flight budget full, Retry-After (the account's)
    KEY_BUDGET = "key_budget"  # OpenRouter: 403 limit_source openrouter_key_limit (the key's own cap)
    FREE_DAILY_SPENT = "free_daily_spent"  # OpenRouter: GET /key reports no free requests left today; chat: 429
    SPEND_CAP = "spend_cap"  # Groq: 400 the organization's spend cap, until the 1st
    TOKENS_SPENT = "tokens_spent"  # Groq: a 200 whose x-ratelimit-remaining-tokens is 0
    FLEX_CAPACITY = "flex_capacity"  # Groq: 498 flex tier at capacity
    NETWORK_BLOCKED = "network_blocked"  # Groq: 403 "Access denied. Please check your network settings."
    OUTPUT_TOO_LARGE = "output_too_large"  # Groq: 429 "Request too large … reduce max_tokens"
    NO_QUOTA = "no_quota"  # Gemini: 429 limit 0, the project has no quota for the model
    NO_ACCESS = "no_access"  # Gemini: 400 FAILED_PRECONDITION, user location not supported
    QUOTA_NO_DETAILS = "quota_no_details"  # Gemini: 429 "check your plan and billing", no quota ids, no retry hint
    EXHAUSTED_BARE = "exhausted_bare"  # Gemini: 429 "Resource has been exhausted (e.g. check quota).", nothing else
    MALFORMED_CALL = "malformed_call"  # Gemini: a 200 whose candidate stopped at MALFORMED_FUNCTION_CALL, empty


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
    payload: Any = None  # the request's JSON body (keys travel in headers, never here)
    tokens: int = 0  # what a limit on tokens charged it (0: none counts tokens, or it was refused)


OKISH = frozenset({Step.OK, Step.TIMEOUT, Step.TOKENS_SPENT})
IDS = itertools.count(1)  # next() on itertools.count is atomic under the GIL


@dataclass(frozen=True, slots=True)
class Quota:
    """Snapshot of a limit window, taken under the lock, rendered outside it."""

    limit: int
    remaining: int
    reset_in: float
    """Seconds until the limit is back to its initial state (every slot free, the bucket full: what OpenAI's
    `x-ratelimit-reset-requests` says); on a 429, until the refused request would be admitted."""
    window: float


@dataclass(slots=True)
class ScriptedKey:
    """A registered key's script. The secret is only the dict key in `Simulator._keys`, never stored here."""

    provider: str
    name: str
    steps: deque[Step]
    then: Step
    window: Limit | None  # the key's request limit (`simulator.shapes`), shared by the keys of one group
    limit_hint: bool
    latency: float | None
    org: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to answer, decided under the lock."""

    step: Step
    status: int
    quota: Quota | None
    latency: float
    org: str
    at: float
    """The provider's wall clock when it decided (epoch seconds): epoch resets in the answer count from it."""
    tokens: Quota | None = None  # a limit on tokens, as an answer reports it (`token_headers`)


@dataclass(frozen=True, slots=True)
class Call:
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
    tool_calls: tuple[dict[str, Any], ...] = ()  # what the answer asks to call (`simulator.agents`)
    finish: str = "stop"
    refusal: tuple[str, dict[str, str]] | None = None  # (recorded example, its values): why the request is refused
    inputs: tuple[str, ...] | None = None  # an embeddings call: the texts to embed (None: a chat call)
    dimensions: int | None = None  # the vector length an embeddings call asked for
    one_embedding: bool = False  # Gemini's `:embedContent` (one text, answered `embedding`, not `embeddings`)
    default_model: str = ""  # the provider's, answered for when the call names none
    tokens: int = 0  # what a limit on tokens charges it as it is admitted (`simulator.shapes.admission_tokens`)

    @property
    def shown_model(self) -> str:
        return self.model or self.default_model

    @property
    def completion_tokens(self) -> int:
        return len(self.reply.split())


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[bytes] | None = None  # SSE frames, sent with chunked transfer encoding


GARBAGE = b"<html><body>502 Bad Gateway</body></html>"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def dumps(obj: Any, indent: int | None = None) -> bytes:
    if indent:
        return json.dumps(obj, indent=indent).encode()
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None, indent: int | None = None) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, dumps(obj, indent))


def sse_event(obj: Any, end: bytes = b"\n\n") -> bytes:
    return b"data: " + dumps(obj) + end


def split_pieces(text: str) -> list[str]:
    """~3-word chunks whose concatenation is exactly `text`."""
    words = text.split(" ")
    chunks = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
    return [c + " " for c in chunks[:-1]] + chunks[-1:]


def token_headers(quota: Quota) -> dict[str, str]:
    """A limit on tokens as OpenAI's and Groq's answers report it; the reset: until it is whole again."""
    return {
        "x-ratelimit-limit-tokens": str(quota.limit),
        "x-ratelimit-remaining-tokens": str(quota.remaining),
        "x-ratelimit-reset-tokens": go_duration(quota.reset_in),
    }


def go_duration(seconds: float) -> str:
    """Go's time.Duration text, as Groq's x-ratelimit-reset-* headers use ("2m59.56s", "7.66s", "840ms")."""
    if seconds < 1:
        ms = round(seconds * 1000)
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(round(seconds * 100), 360000)
    minutes, centis = divmod(rest, 6000)
    secs = f"{centis / 100:.2f}".rstrip("0").rstrip(".")
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"


def pb_duration(seconds: float) -> str:
    """google.protobuf.Duration JSON text ("36s", "1.25s")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def usage_of(call: Call) -> dict[str, int]:
    prompt, completion = call.prompt_tokens, call.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


EMBEDDING_DIMENSIONS = 16
"""The simulator's vector length unless a call asks for another: small, so tests read them at a glance."""


def embedding_vector(text: str, dimensions: int | None = None) -> list[float]:
    """A unit vector seeded by the text's hash: the same text always gets the same vector, others another."""
    size = dimensions or EMBEDDING_DIMENSIONS
    raw = b"".join(hashlib.sha256(f"{text}#{i}".encode()).digest() for i in range(math.ceil(size / 8)))
    values = [(n / 0xFFFFFFFF) * 2 - 1 for n in struct.unpack(f"<{size}I", raw[: size * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def openai_embeddings(call: Call) -> Reply:
    """OpenAI's embeddings answer (OpenRouter, Groq and compatible servers send this shape), floats."""
    texts = call.inputs or ()
    data = [
        {"object": "embedding", "index": i, "embedding": embedding_vector(t, call.dimensions)}
        for i, t in enumerate(texts)
    ]
    usage = {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens}
    return json_reply(200, {"object": "list", "data": data, "model": call.shown_model, "usage": usage})


def openai_answer(call: Call, step: Step) -> Reply:
    """OpenRouter / Groq chat completion, plain or streamed (also the truncated mid-stream-error stream); an
    embeddings call gets its vectors."""
    if call.inputs is not None:
        return openai_embeddings(call)
    openrouter = call.provider == "openrouter"
    n, created, model = next(IDS), int(time.time()), call.shown_model
    cid = f"gen-{created}-sim{n:012d}" if openrouter else f"chatcmpl-sim{n:012d}"
    usage = usage_of(call)
    extra: dict[str, Any] = (
        {"provider": "SimProvider"} if openrouter else {"system_fingerprint": "fp_sim", "service_tier": "on_demand"}
    )
    empty = step is Step.EMPTY_ANSWER
    finish = "length" if empty else call.finish
    if not call.stream:
        message: dict[str, Any] = {"role": "assistant", "content": "" if empty else call.reply}
        if call.tool_calls and not empty:
            message = {"role": "assistant", "content": None, "tool_calls": list(call.tool_calls)}
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            **extra,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        if not openrouter:
            body["x_groq"] = {"id": f"req_sim{n:012d}"}
        return json_reply(200, body)

    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, **extra}

    def chunk(delta: dict[str, str], finish: str | None, **more: Any) -> bytes:
        return sse_event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more})

    pieces = [] if empty or not call.reply else split_pieces(call.reply)
    if step is Step.MID_STREAM_ERROR:
        pieces = pieces[:2]
    events = [b": OPENROUTER PROCESSING\n\n"] if openrouter else []
    events += [chunk({"role": "assistant", "content": p}, None) for p in pieces]
    if call.tool_calls and not empty:  # OpenAI's shape: the id and name first, then the arguments in pieces
        for index, tool in enumerate(call.tool_calls):
            head_delta = {"index": index, "id": tool["id"], "type": "function"}
            events.append(chunk({"tool_calls": [{**head_delta, "function": {"name": tool["function"]["name"]}}]}, None))
            for part in split_pieces(tool["function"]["arguments"]):
                events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}, None))
    if step is Step.MID_STREAM_ERROR:
        error = {"code": 502, "message": "Upstream provider disconnected"}
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        events.append(sse_event({**head, "error": error, "choices": [choice]}))
        return Reply(200, dict(SSE_HEADERS), events=events)
    if openrouter:
        events.append(chunk({}, finish))
        events.append(sse_event({**head, "choices": [], "usage": usage}))
    else:
        events.append(chunk({}, finish, x_groq={"id": f"req_sim{n:012d}", "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return Reply(200, dict(SSE_HEADERS), events=events)


WIRE_DIR = Path(__file__).with_name("wire")
"""Recorded wire examples, one JSON file per provider: what the simulator sends and the classifier tests read."""


@functools.cache
def wire_examples(provider: str) -> dict[str, Any]:
    return json.loads((WIRE_DIR / f"{provider}.json").read_text(encoding="utf-8"))


def wire_example(provider: str, name: str, **values: Any) -> tuple[int, dict[str, str], Any]:
    """(status, headers, body) of a recorded example, with `${model}`-style placeholders filled in."""
    example = wire_examples(provider)[name]
    text = {k: str(v) for k, v in values.items()}

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return Template(node).safe_substitute(text)
        if isinstance(node, list):
            return [fill(item) for item in node]
        if isinstance(node, dict):
            return {key: fill(item) for key, item in node.items()}
        return node

    return int(example["status"]), fill(example.get("headers", {})), fill(example["body"])


def render_wire(call: Call, name: str, values: dict[str, Any], *, indent: int | None = None) -> Reply:
    """A recorded example as the provider sends it: a JSON answer, or one SSE event when a stream was asked
    for and the example is a 200 (errors that arrive after the stream started)."""
    status, headers, body = wire_example(call.provider, name, **values)
    if status == 200 and call.stream:
        if not call.sse:
            return json_reply(200, [body], headers, indent)
        end = b"\r\n\r\n" if call.provider == "gemini" else b"\n\n"
        return Reply(200, {**SSE_HEADERS, **headers}, events=[sse_event(body, end)])
    return json_reply(status, body, headers, indent)
