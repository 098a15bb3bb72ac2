"""What a simulated provider is: one `SimProvider` per module (`simulator.openrouter`, `.groq`, `.gemini`,
`.compat`), listed once in `simulator.registry`.

A provider declares where it is served, how a request to it reads (`route`, `secret`), which statuses and recorded
wire examples its steps answer with, and how it renders an answer. The server and the virtual-time harness ask the
registry, never a provider by name, so a fifth simulated provider is its module and one registry line.
Also here: what every OpenAI-style provider shares (its request parsing, its Bearer key, its statuses).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simulator.agents import Answer, openai_request, unable
from simulator.core import Call, Plan, Reply, Step, wire_examples
from simulator.shapes import admission_tokens

OPENAI_STATUS: Mapping[Step, int] = {
    Step.OK: 200,
    Step.RATE_LIMIT: 429,
    Step.RATE_LIMIT_NOHINT: 429,
    Step.RATE_LIMIT_DAILY: 429,
    Step.INVALID_KEY: 401,
    Step.PERMISSION_DENIED: 403,
    Step.NO_CREDITS: 402,
    Step.SERVER_ERROR: 500,
    Step.OVERLOADED: 503,
    Step.TIMEOUT: 200,
    Step.GARBAGE: 200,
    Step.ERROR_200: 200,
    Step.BAD_REQUEST: 400,
    Step.CONTEXT_LENGTH: 400,
    Step.TOO_LARGE: 413,
    Step.MODEL_NOT_FOUND: 404,
    Step.BLOCKED: 400,
    Step.MID_STREAM_ERROR: 200,
    Step.DROP: 0,
    Step.EMPTY_ANSWER: 200,
}
"""The HTTP status of each step every provider can take, as an OpenAI-style server sends it (0: the connection is
dropped); a provider names only where it differs (`SimProvider.statuses`)."""

Route = Callable[[str, str, str, Any], "Call | None"]
"""(method, path below the provider's base path, query string, body as JSON) → the call, or None: not found."""
Render = Callable[[Call, Plan, Step, str], Reply]
"""(call, plan, the step as rendered, the key's partial label) → the provider's exact answer."""


def bearer_secret(headers: Mapping[str, str], query: str) -> str | None:
    """The key of an OpenAI-style request: `Authorization: Bearer <key>`."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class SimProvider:
    """One simulated provider, as the server serves it."""

    name: str
    base_path: str  # where it is served, below the server's URL: "/groq/openai/v1"
    default_model: str
    demo_keys: tuple[str, ...]  # fake secrets shaped like real ones, obviously not real
    route: Route
    render: Render
    secret: Callable[[Mapping[str, str], str], str | None] = bearer_secret
    statuses: Mapping[Step, int] = field(default_factory=dict)  # where it differs from OPENAI_STATUS
    wire_steps: Mapping[Step, str] = field(default_factory=dict)  # steps answered with a recorded example
    own_steps: frozenset[Step] = frozenset()  # steps only it renders, without a recorded example
    probe_succeeds: frozenset[Step] = frozenset()  # steps its key probe still answers 200 for (and says so inside)
    serves: Callable[[Call], bool] = lambda call: True  # whether the model asked for is served (else 404)
    json_indent: int | None = None  # how its JSON bodies are laid out

    def supports(self, step: Step) -> bool:
        return step in OPENAI_STATUS or step in self.wire_steps or step in self.own_steps

    def status_of(self, step: Step, stream: bool) -> int:
        """The status a step's answer carries (a recorded example's own status aside)."""
        if step is Step.MID_STREAM_ERROR and not stream:
            step = Step.SERVER_ERROR
        return self.statuses.get(step, OPENAI_STATUS.get(step, 200))

    def status(self, call: Call, step: Step) -> int:
        """The status the answer to `call` will carry, logged before it is rendered."""
        if call.probe and step in self.probe_succeeds:
            return 200
        name = call.refusal[0] if step is Step.BAD_REQUEST and call.refusal else self.wire_steps.get(step)
        if name is not None:
            return int(wire_examples(self.name)[name]["status"])
        return self.status_of(step, call.stream)


# --- OpenAI-style requests ------------------------------------------------------------------------------------------


def reply_text(provider: str, last: str, image: bool) -> str:
    return f"Simulated {provider} reply to: {last[:200]}" + (" [image received]" if image else "")


def _openai_parse(data: Any) -> tuple[str, int, bool, bool, int]:
    """(last user text, prompt words, has image, valid, what a limit on tokens charges it) from an OpenAI-style
    body."""
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        return "", 0, False, False, 0
    last, words, image, characters = "", 0, False, 0
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
        characters += len(text)
        if msg.get("role") == "user":
            last = text
    characters += sum(len(json.dumps(data[k])) for k in ("tools", "response_format") if k in data)  # (read too)
    most = data.get("max_completion_tokens") or data.get("max_tokens")
    return last, words, image, True, admission_tokens(characters, most if isinstance(most, int) else 0)


def _texts(raw: Any) -> tuple[str, ...] | None:
    """OpenAI's embeddings `input` as texts: a string or a non-empty list of non-empty strings (None: invalid)."""
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return None
    return tuple(texts)


def _openai_embeddings(provider: str, default_model: str, data: Any) -> Call:
    data = data if isinstance(data, dict) else {}
    texts = _texts(data.get("input"))
    model = data.get("model") if isinstance(data.get("model"), str) else None
    dimensions = data.get("dimensions") if isinstance(data.get("dimensions"), int) else None
    words = sum(len(t.split()) for t in texts or ())
    valid = texts is not None
    return Call(
        provider, False, model, False, "", words, valid, inputs=texts or (), dimensions=dimensions,
        default_model=default_model,
    )  # fmt: skip


def openai_route(provider: str, default_model: str, probe: str) -> Route:
    """The routes of an OpenAI-style provider: `POST chat/completions`, `POST embeddings`, and its key probe
    (`GET <probe>`: OpenRouter's `key`, everyone else's `models`)."""

    def route(method: str, rest: str, query: str, data: Any) -> Call | None:
        if method == "POST" and rest == "embeddings":
            return _openai_embeddings(provider, default_model, data)
        if method == "POST" and rest == "chat/completions":
            last, words, image, valid, tokens = _openai_parse(data)
            model = data.get("model") if isinstance(data, dict) else None
            stream = isinstance(data, dict) and data.get("stream") is True
            said = openai_request(data, reply_text(provider, last, image)) if valid else Answer("")
            model = model if isinstance(model, str) else None
            schema = isinstance(data, dict) and (data.get("response_format") or {}).get("type") == "json_schema"
            refused = unable(provider, model, tools=bool(data.get("tools")), json_schema=schema) if valid else None
            return Call(
                provider,
                False,
                model,
                stream,
                said.text,
                words,
                valid and refused is None,
                tool_calls=said.tool_calls,
                finish=said.finish,
                refusal=refused,
                default_model=default_model,
                tokens=tokens,
            )
        if method == "GET" and rest == probe:
            return Call(provider, True, None, False, "", 0, True, default_model=default_model)
        return None

    return route
