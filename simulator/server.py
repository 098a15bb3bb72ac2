"""Loopback HTTP server that fakes OpenRouter, Groq and Gemini on the wire.

Why: the rotation client has to be tested, benchmarked and demoed against the providers' *real* answer
shapes (status codes, rate-limit headers, error bodies, SSE framing) without network access or real keys.
Every registered key follows a script of `Step`s plus an optional fixed-window request limit, so any failure
sequence is reproducible. Stdlib only, and never imported by the client path.

    with Simulator() as sim:
        sim.add_key("groq", "gsk_test", Step.RATE_LIMIT, then=Step.OK)
        requests.post(f"{sim.base_urls['groq']}/chat/completions", ...)

Run `python -m simulator --demo` for a foreground server with demo keys (prints the env exports).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import socket
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from simulator.agents import Answer, gemini_request, openai_request, unable
from simulator.compat import render_compat
from simulator.core import (
    DEFAULT_MODEL,
    DEMO_KEYS,
    GARBAGE,
    GROQ_DECOMMISSIONED,
    OKISH,
    PROVIDERS,
    STATUS,
    Call,
    Plan,
    Quota,
    Reply,
    ScriptedKey,
    SimRequest,
    Step,
    json_reply,
    render_wire,
    status_for,
    wire_examples,
)
from simulator.gemini import WIRE_STEPS as GEMINI_WIRE_STEPS
from simulator.gemini import refusal as gemini_refusal
from simulator.gemini import render_gemini, served_on
from simulator.groq import WIRE_STEPS as GROQ_WIRE_STEPS
from simulator.groq import render_groq
from simulator.openrouter import WIRE_STEPS as OPENROUTER_WIRE_STEPS
from simulator.openrouter import render_openrouter
from simulator.shapes import DAY, Limit, WindowKind, limit_of

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
_COMPAT_PREFIX = "/compat/v1/"
_GEMINI_RE = re.compile(
    r"/gemini/(v1|v1beta|v1alpha)/models(?:/([^/:]+))?"
    r"(?::(generateContent|streamGenerateContent|batchEmbedContents|embedContent))?"
)


def _texts(raw: Any) -> tuple[str, ...] | None:
    """OpenAI's embeddings `input` as texts: a string or a non-empty list of non-empty strings (None: invalid)."""
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return None
    return tuple(texts)


def _openai_embeddings(provider: str, data: Any) -> Call:
    data = data if isinstance(data, dict) else {}
    texts = _texts(data.get("input"))
    model = data.get("model") if isinstance(data.get("model"), str) else None
    dimensions = data.get("dimensions") if isinstance(data.get("dimensions"), int) else None
    words = sum(len(t.split()) for t in texts or ())
    return Call(provider, False, model, False, "", words, texts is not None, inputs=texts or (), dimensions=dimensions)


def _gemini_embeddings(model: str | None, version: str, action: str, data: Any) -> Call:
    """`:batchEmbedContents` ({"requests": [{"content": {"parts": [{"text"}]}, "outputDimensionality"}]}) or
    `:embedContent` (one such request as the body)."""
    data = data if isinstance(data, dict) else {}
    one = action == "embedContent"
    requests = [data] if one else data.get("requests")
    texts: list[str] = []
    dimensions = None
    for request in requests if isinstance(requests, list) else []:
        text = _gemini_parts(request.get("content") if isinstance(request, dict) else None)[0]
        texts.append(text)
        if isinstance(request, dict) and isinstance(request.get("outputDimensionality"), int):
            dimensions = request["outputDimensionality"]
    valid = bool(texts) and all(texts) and (not one or len(texts) == 1)
    words = sum(len(t.split()) for t in texts)
    return Call(
        "gemini",
        False,
        model,
        False,
        "",
        words,
        valid,
        version,
        inputs=tuple(texts),
        dimensions=dimensions,
        one_embedding=one,
    )


def _route(method: str, path: str, query: str, data: Any) -> Call | None:
    """Map a request (`data`: its body as JSON, None when it has none or is not JSON) to a provider call, or None
    for an unknown route."""
    for provider, prefix, probe in (
        ("openrouter", _OR_PREFIX, "key"),
        ("groq", _GROQ_PREFIX, "models"),
        ("compat", _COMPAT_PREFIX, "models"),
    ):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if method == "POST" and rest == "embeddings":
                return _openai_embeddings(provider, data)
            if method == "POST" and rest == "chat/completions":
                last, words, image, valid = _openai_parse(data)
                model = data.get("model") if isinstance(data, dict) else None
                stream = isinstance(data, dict) and data.get("stream") is True
                said = openai_request(data, _reply_text(provider, last, image)) if valid else Answer("")
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
                )
            if method == "GET" and rest == probe:
                return Call(provider, True, None, False, "", 0, True)
            return None
    match = _GEMINI_RE.fullmatch(path)
    if match is None:
        return None
    version, model, action = match.groups()
    if action in ("batchEmbedContents", "embedContent") and method == "POST":
        return _gemini_embeddings(model, version, action, data)
    if action and method == "POST":
        last, words, image, valid = _gemini_parse(data)
        stream = action == "streamGenerateContent"
        sse = "alt=sse" in query
        refused = None
        if valid:
            config = data.get("generationConfig") or {}
            schema = bool(config.get("responseJsonSchema") or config.get("responseSchema"))
            refused = unable("gemini", model, tools=bool(data.get("tools")), json_schema=schema)
            refused = refused or gemini_refusal(data, model or "")
        said = gemini_request(data, _reply_text("gemini", last, image)) if valid else Answer("")
        return Call(
            "gemini",
            False,
            model,
            stream,
            said.text,
            words,
            valid and refused is None,
            version,
            sse,
            said.tool_calls,
            said.finish,
            refused,
        )
    if not action and method == "GET":
        return Call("gemini", True, model, False, "", 0, True, version)
    return None


def loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


_RENDERERS = {"openrouter": render_openrouter, "groq": render_groq, "gemini": render_gemini, "compat": render_compat}
WIRE_STEPS = {"openrouter": OPENROUTER_WIRE_STEPS, "groq": GROQ_WIRE_STEPS, "gemini": GEMINI_WIRE_STEPS, "compat": {}}


def _supports(provider: str, step: Step) -> bool:
    return step in STATUS or step in WIRE_STEPS[provider] or (provider == "groq" and step is Step.TOKENS_SPENT)


def _status(call: Call, step: Step) -> int:
    """The status the answer will carry, logged before it is rendered."""
    if call.probe and step in (Step.NO_CREDITS, Step.FREE_DAILY_SPENT) and call.provider == "openrouter":
        return 200
    name = call.refusal[0] if step is Step.BAD_REQUEST and call.refusal else WIRE_STEPS[call.provider].get(step)
    if name is not None:
        return int(wire_examples(call.provider)[name]["status"])
    return 200 if step is Step.TOKENS_SPENT else status_for(call.provider, step, call.stream)


def render_reply(call: Call, plan: Plan, label: str) -> Reply:
    """The provider's answer for a planned step (the HTTP server writes it; `simulator.virtual_time` reads it)."""
    step = plan.step
    if step is Step.MID_STREAM_ERROR and not call.stream:
        step = Step.SERVER_ERROR
    if step is Step.GARBAGE:
        return Reply(200, {"Content-Type": "text/html"}, GARBAGE)
    if step is Step.BAD_REQUEST and call.refusal:  # refused for what it asked: the provider's recorded words
        return render_wire(call, *call.refusal, indent=2 if call.provider == "gemini" else None)
    return _RENDERERS[call.provider](call, plan, step, label)


def _label(secret: str | None) -> str:
    """OpenRouter's partial key label ("sk-or-v1-abc...xyz"); never the full secret."""
    return f"{secret[:12]}...{secret[-3:]}" if secret and len(secret) > 20 else "sk-or-v1-...."


# --------------------------------------------------------------------------------------------- HTTP server

_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_DATE: list[Any] = [0, ""]  # (epoch second, formatted): formatting a Date header per request is measurable


def _http_date(skew: float = 0.0) -> str:
    """The `Date` header: whole seconds on the provider's clock (`Simulator(skew=…)` ahead of this machine's)."""
    now = int(time.time() + skew)
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
            print(f"simulator: handler error: {type(exc).__name__}", file=sys.stderr)


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
            self._write(json_reply(400, {"error": {"message": "bad Content-Length"}}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if path.startswith("/_sim/"):
            self._write(self._control(path, body))
            return
        data = loads(body)  # once: what the route reads is what the log keeps (neither changes it)
        call = _route(self.command, path, query, data)
        if call is None:
            self._write(json_reply(404, {"error": {"code": 404, "message": f"Not found: {self.command} {path}"}}))
            return
        secret = self._secret(call.provider, query)
        plan = sim._admit(call, secret, raw, path, data)
        if plan.latency > 0:
            time.sleep(plan.latency)
        if plan.step is Step.DROP:
            self.close_connection = True
            return
        if plan.step is Step.TIMEOUT and sim._stopping.wait(sim.hang_seconds):
            self.close_connection = True  # stopped while hanging: die like a killed server
            return
        self._write(sim._dress(secret, plan, render_reply(call, plan, _label(secret))), plan.latency)

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

    def _control(self, path: str, body: bytes) -> Reply:
        """Control API for other processes (benchmarks, the dashboard demo)."""
        sim, method = self.server.sim, self.command
        try:
            data = loads(body) or {}
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
                    sliding=bool(data.get("sliding", False)),
                    window=data.get("window"),
                    quota_headers=bool(data.get("quota_headers", True)),
                    retry_after=bool(data.get("retry_after", False)),
                    day_count=data.get("day_count"),
                    jitter=float(data.get("jitter", 0.0)),
                )
                return json_reply(200, {"name": name})
            if path == "/_sim/steps" and method == "POST":
                sim.set_steps(data["secret"], *data.get("steps", ()), then=data.get("then", Step.OK))
                return json_reply(200, {"ok": True})
            if path == "/_sim/requests" and method == "GET":
                return json_reply(200, [asdict(r) for r in sim.requests])
            if path == "/_sim/clear" and method == "POST":
                sim.clear_log()
                return json_reply(200, {"ok": True})
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            return json_reply(400, {"error": f"{type(exc).__name__}: {exc}"})
        return json_reply(404, {"error": f"unknown control endpoint {method} {path}"})

    def _write(self, reply: Reply, latency: float = 0.0) -> None:
        """One write for a plain answer; chunked transfer encoding for SSE, so keep-alive survives streams."""
        lines = [
            f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, '')}",
            f"Server: {self.server_version}",
            f"Date: {_http_date(self.server.sim.skew)}",
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
            if not delay:  # nothing to wait for between events: the same bytes in one write (one system call)
                frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] if chunked else events
                self.wfile.write(b"".join([head, *frames, b"0\r\n\r\n" if chunked else b""]))
                return
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


class _OnTheClock:
    """A limit whose windows sit on the provider's wall clock (a minute from :00), read with the server's monotonic
    clock like every other limit: `offset` turns one into the other (the provider's epoch seconds − monotonic)."""

    def __init__(self, limit: Limit, offset: float) -> None:
        self.limit, self.offset = limit, offset

    @property
    def size(self) -> int:
        return self.limit.size

    @size.setter
    def size(self, value: int) -> None:
        self.limit.size = value

    @property
    def length(self) -> float:
        return self.limit.length

    @length.setter
    def length(self, value: float) -> None:
        self.limit.length = value

    def admit(self, now: float, cost: float = 1.0) -> bool:
        return self.limit.admit(now + self.offset, cost)

    def quota(self, now: float) -> Quota:
        return self.limit.quota(now + self.offset)

    def frees_at(self, now: float, cost: float = 1.0) -> float:
        frees = self.limit.frees_at(now + self.offset, cost)
        return now if frees <= now + self.offset else frees - self.offset  # (x + offset) - offset may not be x


@dataclass(frozen=True)
class _Wire:
    """How a key's answers speak of its limit, where that differs from its provider's default rendering."""

    quota_headers: bool = True  # False: no `x-ratelimit-*` header on any answer or 429
    retry_after: bool = False  # a 429 of the limit also carries `Retry-After` in whole seconds
    day_count: int | None = None  # answers report requests left of this many today, not the window's
    jitter: float = 0.0  # the latency varies by ± this share of it, at random
    subject: str = ""  # who the day's count belongs to: the key, or its group


class Simulator:
    """Fake OpenRouter / Groq / Gemini endpoints on 127.0.0.1 with scripted per-key behaviour.

    `latency`: seconds before each answer (streams also spread that much again across their chunks);
    `hang_seconds`: how long a `timeout` step hangs; `port`: 0 picks a free one; `skew`: seconds the provider's
    clock runs ahead of this machine's (the epoch times its answers carry, and its windows on the clock, read it;
    the request log keeps this machine's time).
    Thread-safe: one lock guards scripts, limit windows and the log; rendering and sleeping happen outside it.
    """

    def __init__(self, latency: float = 0.0, hang_seconds: float = 5.0, port: int = 0, skew: float = 0.0) -> None:
        self.latency = latency
        self.hang_seconds = hang_seconds
        self.skew = skew
        self._port = port
        self._lock = threading.Lock()
        self._keys: dict[str, ScriptedKey] = {}
        self._wires: dict[str, _Wire] = {}
        self._today: Counter[str] = Counter()
        self._random = random.Random()
        self._groups: dict[tuple[str, str], Limit] = {}
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
            "compat": f"{url}/compat/v1",
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
        sliding: bool = False,
        window: WindowKind | str | None = None,
        quota_headers: bool = True,
        retry_after: bool = False,
        day_count: int | None = None,
        jitter: float = 0.0,
    ) -> str:
        """Register (or re-script) a key; returns its display name.

        `steps` run one per request, then `then` forever. `limit=(n, seconds)` allows n successful requests
        per fixed window (started by the first request; `sliding=True`: in any `seconds`, each slot freeing
        `seconds` after it was taken); over it the key answers 429 whatever its steps,
        without consuming a step. `window` names another of `simulator.shapes`' limit shapes for it (`clock`:
        windows on the provider's clock, `bucket`: n tokens refilled over `seconds`, `day`: n a day; it overrides
        `sliding`). Keys sharing `group` (per provider) share one window. Probes (GET /key,
        /models) are subject to the limit but do not use it up. A scripted `ok` whose body is malformed
        answers `bad_request`, as the real API would.

        How the key's answers speak of its limit, beside its provider's own wire format: `quota_headers=False`
        drops every `x-ratelimit-*` header (a provider whose only hint is a 429's `Retry-After`, or none);
        `retry_after=True` adds a whole-second `Retry-After` to a 429 of the limit (OpenRouter sends one beside
        its epoch-ms `X-RateLimit-Reset`); `day_count=n` makes answers report requests left of n today, until
        midnight UTC, instead of the window's (Groq's request headers count the day). `jitter`: each answer's
        latency varies by ± that share of it, at random.
        """
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string")
        if limit is not None and (int(limit[0]) < 0 or float(limit[1]) <= 0):
            raise ValueError("limit must be (n >= 0, window_seconds > 0)")
        script, final = deque(Step(s) for s in steps), Step(then)
        unsupported = sorted({s.value for s in (*script, final) if not _supports(provider, s)})
        if unsupported:
            raise ValueError(f"{provider} has no step {', '.join(unsupported)}")
        with self._lock:
            old = self._keys.get(secret)
            if name is None:
                if old is not None and old.provider == provider:
                    name = old.name
                else:
                    self._counts[provider] += 1
                    name = f"{provider}#{self._counts[provider]}"
            kind = WindowKind(window) if window else WindowKind.SLIDING if sliding else WindowKind.FIXED_FIRST
            limiter = self._window(provider, limit, group, kind)
            org = f"org_01sim{zlib.crc32((group or name).encode()):08x}"
            self._keys[secret] = ScriptedKey(provider, name, script, final, limiter, limit_hint, latency, org)
            subject = f"{provider}/group/{group}" if group else f"{provider}/key/{name}"
            self._wires[secret] = _Wire(quota_headers, retry_after, day_count, jitter, subject)
        return name

    def _window(
        self,
        provider: str,
        limit: tuple[int, float] | None,
        group: str | None,
        kind: WindowKind = WindowKind.FIXED_FIRST,
    ) -> Limit | None:
        if group is None:
            return self._limit(kind, limit) if limit else None
        window = self._groups.get((provider, group))
        if window is None and limit:
            window = self._groups[(provider, group)] = self._limit(kind, limit)
        elif window is not None and limit:
            window.size, window.length = int(limit[0]), float(limit[1])
        return window

    def _limit(self, kind: WindowKind, limit: tuple[int, float]) -> Limit:
        model = limit_of(kind, int(limit[0]), float(limit[1]))
        if kind in (WindowKind.FIXED_CLOCK, WindowKind.PER_DAY):  # windows on the provider's epoch clock
            return _OnTheClock(model, time.time() + self.skew - time.monotonic())
        return model

    def set_steps(self, secret: str, *steps: Step | str, then: Step | str = Step.OK) -> None:
        """Re-script an existing key (its limit window is kept)."""
        script, final = deque(Step(s) for s in steps), Step(then)
        with self._lock:
            key = self._keys.get(secret)
            if key is None:
                raise KeyError("no key registered with that secret")
            key.steps, key.then = script, final

    def add_demo_keys(
        self, per_minute: int = 3, limits: Mapping[str, tuple[int, float]] | None = None
    ) -> dict[str, str]:
        """Register DEMO_KEYS (each `per_minute` requests per minute, or `limits[provider]` = (n, seconds) per
        key); returns the env a client needs. Calling it again puts every demo key back to normal: plain `ok`
        steps and a fresh window."""
        env = {**self.env(), "COMPAT_CHAT_MODEL": DEFAULT_MODEL["compat"]}  # used once LLM_PROVIDER_ORDER has compat
        for provider, secrets in DEMO_KEYS.items():
            limit = (limits or {}).get(provider, (per_minute, 60.0))
            for i, secret in enumerate(secrets, 1):
                self.add_key(provider, secret, limit=limit)
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
    def _admit(self, call: Call, secret: str | None, raw_path: str, path: str, payload: Any = None) -> Plan:
        """Pick the step for one request (limit, then script), update the window and log it."""
        at, now = time.time(), time.monotonic()
        with self._lock:
            key = self._keys.get(secret) if secret else None
            if key is not None and key.provider != call.provider:
                key = None  # a Groq key sent to OpenRouter is as unknown there as a typo
            in_url = any(s in raw_path for s in self._keys) or bool(secret and secret in raw_path)
            quota: Quota | None = None
            if key is None:
                step, name, latency, org = Step.INVALID_KEY, "unknown", self.latency, "org_unknown"
            else:
                name, org = key.name, key.org
                latency = self.latency if key.latency is None else key.latency
                window = key.window
                if window is not None and window.frees_at(now) > now:
                    step = Step.RATE_LIMIT if key.limit_hint else Step.RATE_LIMIT_NOHINT
                    latency = 0.0  # the provider's gateway refuses before any model runs: a 429 comes at once
                else:
                    step = key.steps.popleft() if key.steps else key.then
                    if step is Step.OK and not call.valid:
                        step = Step.BAD_REQUEST
                    if step is Step.OK and call.provider == "gemini" and not served_on(call.version, call.model):
                        step = Step.MODEL_NOT_FOUND
                    if step is Step.OK and call.provider == "groq" and call.model in GROQ_DECOMMISSIONED:
                        step = Step.MODEL_NOT_FOUND
                    if window is not None and step in OKISH and not call.probe:
                        window.admit(now)
                if window is not None:
                    quota = window.quota(now)
                wire = self._wires.get(secret or "")
                if wire is not None and wire.jitter:
                    latency *= 1 + wire.jitter * self._random.uniform(-1, 1)
                if wire is not None and wire.day_count is not None and step in OKISH and not call.probe:
                    self._today[wire.subject] += 1
                    left = max(0, wire.day_count - self._today[wire.subject])
                    quota = Quota(wire.day_count, left, DAY - (at + self.skew) % DAY, DAY)
            status = _status(call, step)
            shown_path = path.replace(secret, "<redacted>") if secret and secret in path else path
            self._log.append(
                SimRequest(
                    call.provider, name, shown_path, call.stream, status, step.value, call.model, in_url, at, payload
                )
            )
        return Plan(step, status, quota, latency, org, at + self.skew)

    def _dress(self, secret: str | None, plan: Plan, reply: Reply) -> Reply:
        """The rendered answer as this key's wire options say (`add_key`'s `quota_headers`, `retry_after`)."""
        wire = self._wires.get(secret or "")
        if wire is None or (wire.quota_headers and not wire.retry_after):
            return reply
        headers = dict(reply.headers)
        if not wire.quota_headers:
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-ratelimit")}
        if wire.retry_after and plan.step is Step.RATE_LIMIT and plan.quota is not None and reply.status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(plan.quota.reset_in)))
        return replace(reply, headers=headers)


DEMO_LATENCY = 0.3
"""Seconds the demo's fake providers take per answer: long enough to see streaming, short enough not to bore."""
DEMO_LIMITS: dict[str, tuple[int, float]] = {
    "openrouter": (1, 600.0),
    "groq": (3, 60.0),
    "gemini": (3, 60.0),
}
"""(requests, window seconds) per demo key. OpenRouter's window is counted in requests over ten minutes, not per
minute, so its four keys are spent by the fifth message at any typing pace (a per-minute window refills while a
presenter talks); Groq's and Gemini's keys then carry the demo."""
FREE_TIER_LIMITS: dict[str, tuple[int, float]] = {
    "openrouter": (20, 60.0),
    "groq": (30, 60.0),
    "gemini": (10, 60.0),
}
"""(requests, window seconds) per demo key as the providers' free tiers document them (docs/providers.md):
the gateway's demo serves programs, and an agent's tool loop sends a burst no presenter's typing would."""


def start_demo(
    env: Mapping[str, str], limits: Mapping[str, tuple[int, float]] = DEMO_LIMITS
) -> tuple[Simulator, dict[str, str]]:
    """Demo mode for any front end (the dashboard, the gateway): the fake providers, started, with the demo keys,
    and the environment a client needs for them. The operator's `LLM_*` tuning in `env` (cooldowns, order,
    timeouts) carries over; the state store and the keys file do not: demo keys live in memory, never in the
    operator's SQLite file or Redis, and no real key joins the demo."""
    simulator = Simulator(latency=DEMO_LATENCY).start()
    tuning = {k: v for k, v in env.items() if k.startswith("LLM_") and k not in ("LLM_STATE_URL", "LLM_KEYS_FILE")}
    return simulator, {**tuning, "LLM_STATE_URL": "memory://", **simulator.add_demo_keys(limits=limits)}


def main(argv: list[str] | None = None) -> int:
    """`python -m simulator`: a foreground simulator for manual runs and the dashboard demo."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Fake OpenRouter/Groq/Gemini server.")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--demo", action="store_true", help="register the demo keys and print their env vars")
    parser.add_argument("--per-minute", type=int, default=3, help="requests per minute per demo key")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds of simulated latency per answer")
    args = parser.parse_args(argv)
    try:
        sim = Simulator(latency=args.latency, port=args.port).start()
    except OSError as exc:
        print(f"simulator: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
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
