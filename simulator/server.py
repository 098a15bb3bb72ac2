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
import math
import random
import socket
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from simulator.core import OKISH, Call, Plan, Quota, Reply, ScriptedKey, SimRequest, Step, token_headers
from simulator.handler import SimServer
from simulator.registry import DEMO_KEYS, SIM_PROVIDERS, sim_provider
from simulator.shapes import DAY, REQUESTS_BESIDE_TOKENS, Limit, WindowKind, limit_of, refusal

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
    tokens: bool = False  # its limit counts tokens: a request costs what it asks (`Call.tokens`), answers say so


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
        self._counts = dict.fromkeys(SIM_PROVIDERS, 0)
        self._log: list[SimRequest] = []
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Bind 127.0.0.1 (a free port unless `port` was given) and serve in a daemon thread."""
        if self._server is None:
            self._stopping.clear()
            server = SimServer(("127.0.0.1", self._port), self)
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
        return {name: self.url + p.base_path for name, p in SIM_PROVIDERS.items()}

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
        `sliding`; `tokens`: n tokens refilled over `seconds`, each request costing what it asks, its text at four
        characters a token and its `max_tokens`, answers reporting them as OpenAI's and Groq's do beside a limit
        on requests far off). Keys sharing `group` (per provider) share one window. Probes (GET /key,
        /models) are subject to the limit but do not use it up. A scripted `ok` whose body is malformed
        answers `bad_request`, as the real API would.

        How the key's answers speak of its limit, beside its provider's own wire format: `quota_headers=False`
        drops every `x-ratelimit-*` header (a provider whose only hint is a 429's `Retry-After`, or none);
        `retry_after=True` adds a whole-second `Retry-After` to a 429 of the limit (OpenRouter sends one beside
        its epoch-ms `X-RateLimit-Reset`); `day_count=n` makes answers report requests left of n today, until
        midnight UTC, instead of the window's (Groq's request headers count the day). `jitter`: each answer's
        latency varies by ± that share of it, at random.
        """
        served = sim_provider(provider)
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string")
        if limit is not None and (int(limit[0]) < 0 or float(limit[1]) <= 0):
            raise ValueError("limit must be (n >= 0, window_seconds > 0)")
        script, final = deque(Step(s) for s in steps), Step(then)
        unsupported = sorted({s.value for s in (*script, final) if not served.supports(s)})
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
            tokens = kind is WindowKind.TOKENS
            self._wires[secret] = _Wire(quota_headers, retry_after, day_count, jitter, subject, tokens)
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
        env = {**self.env(), "COMPAT_CHAT_MODEL": SIM_PROVIDERS["compat"].default_model}  # once the order has compat
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
    def admit(self, call: Call, secret: str | None, raw_path: str, path: str, payload: Any = None) -> Plan:
        """Pick the step for one request (limit, then script), update the window and log it."""
        served = SIM_PROVIDERS[call.provider]
        at, now = time.time(), time.monotonic()
        charged, tokens = 0, None
        with self._lock:
            key = self._keys.get(secret) if secret else None
            wire = self._wires.get(secret or "")
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
                cost = call.tokens if wire is not None and wire.tokens else 1
                refused = window is not None and window.frees_at(now, cost) > now
                if refused:
                    step = Step.RATE_LIMIT if key.limit_hint else Step.RATE_LIMIT_NOHINT
                    latency = 0.0  # the provider's gateway refuses before any model runs: a 429 comes at once
                else:
                    step = key.steps.popleft() if key.steps else key.then
                    if step is Step.OK and not call.valid:
                        step = Step.BAD_REQUEST
                    if step is Step.OK and not served.serves(call):
                        step = Step.MODEL_NOT_FOUND
                    if window is not None and step in OKISH and not call.probe:
                        window.admit(now, cost)
                        charged = cost if wire is not None and wire.tokens else 0
                if window is not None:
                    quota = refusal(window, now, cost) if refused else window.quota(now)
                if refused and wire is not None and wire.tokens:  # its 429 says the limit is on tokens
                    tokens = quota
                if charged:  # the tokens on its own headers, the requests far off
                    tokens, quota = quota, Quota(REQUESTS_BESIDE_TOKENS, REQUESTS_BESIDE_TOKENS, 60.0, 60.0)
                if wire is not None and wire.jitter:
                    latency *= 1 + wire.jitter * self._random.uniform(-1, 1)
                if wire is not None and wire.day_count is not None and step in OKISH and not call.probe:
                    self._today[wire.subject] += 1
                    left = max(0, wire.day_count - self._today[wire.subject])
                    quota = Quota(wire.day_count, left, DAY - (at + self.skew) % DAY, DAY)
            status = served.status(call, step)
            shown_path = path.replace(secret, "<redacted>") if secret and secret in path else path
            self._log.append(
                SimRequest(
                    call.provider,
                    name,
                    shown_path,
                    call.stream,
                    status,
                    step.value,
                    call.model,
                    in_url,
                    at,
                    payload,
                    charged,
                )
            )
        return Plan(step, status, quota, latency, org, at + self.skew, tokens)

    def hang(self) -> bool:
        """Hang as a `timeout` step does (`hang_seconds`); True when the simulator stopped meanwhile."""
        return self._stopping.wait(self.hang_seconds)

    def dress(self, secret: str | None, plan: Plan, reply: Reply) -> Reply:
        """The rendered answer as this key's wire options say (`add_key`'s `quota_headers`, `retry_after`)."""
        wire = self._wires.get(secret or "")
        if wire is None or (wire.quota_headers and not wire.retry_after and plan.tokens is None):
            return reply
        headers = dict(reply.headers)
        if not wire.quota_headers:
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-ratelimit")}
        elif plan.tokens is not None:
            headers |= token_headers(plan.tokens)
        if wire.retry_after and plan.step is Step.RATE_LIMIT and plan.quota is not None and reply.status == 429:
            headers = {k: v for k, v in headers.items() if k.lower() != "retry-after"}  # (Groq's own: one, not two)
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
    parser.add_argument("--skew", type=float, default=0.0, help="seconds the provider's clock runs ahead of this one")
    args = parser.parse_args(argv)
    try:
        sim = Simulator(latency=args.latency, port=args.port, skew=args.skew).start()
    except OSError as exc:
        print(f"simulator: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:  # (Ctrl-C stops it cleanly at any moment, the exports still printing too: it serves as they print)
        env = sim.add_demo_keys(args.per_minute) if args.demo else sim.env()
        print(f"# LLM provider simulator on {sim.url} — paste these into the client's shell, Ctrl-C to stop")
        for var, value in env.items():
            print(f"export {var}={value}")
        sys.stdout.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
