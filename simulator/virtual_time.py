"""The virtual-time harness: the real client against modelled providers on a virtual clock.

It runs the smart client's own failover loop (`client.failover.steps`, the loop `serve` and `aserve` drive),
its key manager, what it learns, and a real store (memory, or a SQLite file), while the providers are the limit
shapes of `simulator.shapes` answering in the simulator's own wire formats (`simulator.server.render_reply`),
read by each provider's own classifier and quota reader. Time is an event queue: a caller's sleep, a request's
trip and the provider's windows cost nothing, so a shape that takes ten minutes of wall time runs in a second,
and thousands of shapes can be explored (tests/test_quota_shapes.py; `python bench/bench_shapes.py`).

What it measures is what a user would: with default settings, how much of the keys' quota became answers
(`share`, against what a client that knew every limit exactly could have had admitted) and how many 429s it cost.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from enum import StrEnum
from pathlib import Path
from typing import Any

from config.settings import load_settings
from llms.exceptions import AllKeysExhaustedError
from llms.failover import SlotWait
from llms.learned_limits import learned_documents
from llms.leases import LEASE_TTL
from llms.outcomes import Outcome
from llms.smart_client import SmartClient
from llms.state import StateStore, store_from_url
from llms.state.base import Document
from llms.state.memory import MemoryStore
from llms.streams import Run
from llms.types import ChatRequest, Completion, Usage
from simulator.core import Call, Plan, Quota, Step, token_headers
from simulator.registry import render_reply, status_for
from simulator.shapes import DAY, REQUESTS_BESIDE_TOKENS, Limit, WindowKind, admission_tokens, limit_of, refusal, served

EPOCH = 1_800_000_000.0 + 13 * 3600 + 0.37
"""Where virtual time starts (epoch seconds, mid-afternoon UTC, off any whole second): the client's clock reads it
plus the time elapsed, the provider's clock that plus the skew."""
MESSAGES = [{"role": "user", "content": "Hello"}]
NETWORK = 0.025
"""Seconds each way between the client and the provider; the rest of an answered request's round trip is the model
generating, after the provider's limit admitted it. A 429 comes back after the two legs alone: the provider's
gateway refuses before any model runs (the HTTP simulator answers its limit's 429s at once too)."""
TOKENS_PER_REQUEST = 100  # a limit on tokens holds `Shape.size` average requests: that many times this many tokens
_PROMPT = "Summarise the attached note in one line."  # 40 characters: 10 tokens as providers count them
TOKEN_REQUESTS = [
    (ChatRequest.build([{"role": "user", "content": _PROMPT}], max_tokens=most), admission_tokens(len(_PROMPT), most))
    for most in (40, 90, 140)
]
"""Under a limit on tokens, each caller's request is one of these at random, with what the provider counts of it
(`admission_tokens`: 50, 100, 150): they differ in size, as real ones do, and a client can tell their cost before
it sends them (`ChatRequest.tokens`)."""


class HintForm(StrEnum):
    """How a provider tells the client about its limit."""

    REMAINING = "remaining"  # requests (and tokens) left and the reset on answers, `retry-after` on 429s (OpenAI's)
    RETRY_AFTER = "retry-after"  # nothing on answers; `Retry-After` in whole seconds on the 429
    RESET_MS = "reset-ms"  # nothing on answers; `X-RateLimit-Reset` epoch ms beside `Retry-After` (OpenRouter's)
    GROQ = "groq"  # requests left *today*, tokens this window; whole-second `retry-after` + "try again in 7.66s"
    GEMINI = "gemini"  # nothing on answers; a `RetryInfo` delay and the message's on the 429 (Gemini's)
    NONE = "none"  # nothing on answers, a bare 429


PROVIDER_OF: dict[HintForm, str] = {
    HintForm.REMAINING: "compat",
    HintForm.RETRY_AFTER: "compat",
    HintForm.RESET_MS: "openrouter",
    HintForm.GROQ: "groq",
    HintForm.GEMINI: "gemini",
    HintForm.NONE: "compat",
}
"""Whose wire format (the simulator's renderer, the client's classifier) carries each hint form."""
_SECRETS: dict[str, Callable[[int], str]] = {
    "openrouter": lambda i: f"sk-or-v1-{'0' * 50}{i:014d}",
    "groq": lambda i: f"gsk_virtual{'0' * 35}{i:010d}",
    "gemini": lambda i: f"AIzaSyVIRTUAL-not-real-{i:016d}",
    "compat": lambda i: f"sk-virtual-not-real-{i:012d}",
}


class CallerKind(StrEnum):
    FAIL_FAST = "fail-fast"  # `complete(messages)` with default settings; on an error, pause, then ask again
    WAIT = "wait"  # `complete(messages, wait=...)`: the client waits for a key within that many seconds


@dataclass(frozen=True)
class Shape:
    """One cell of the matrix: the provider's limit and how it speaks of it, the keys, and the callers."""

    window: WindowKind = WindowKind.FIXED_FIRST
    hint: HintForm = HintForm.REMAINING
    size: int = 5  # requests a window allows (a bucket's tokens)
    length: float = 2.0  # seconds a window lasts (a bucket refills over)
    keys: int = 4
    group: int = 1  # keys per shared limit (an account's keys share one)
    callers: int = 16
    caller: CallerKind = CallerKind.FAIL_FAST
    pause: float = 1.0  # a fail-fast caller's pause after an error
    wait: float = 10.0  # a waiting caller's `wait=`
    latency: float = 0.2  # seconds an answered request takes, there and back (`NETWORK` each way, then generation)
    jitter: float = 0.0  # ± that share of the generation time, at random
    skew: float = 0.0  # seconds the provider's clock is ahead of the client's
    windows: int = 10  # how long the run lasts, in windows (a day's limit: ten minutes)
    store: str = "memory"  # or "sqlite": a file
    processes: int = 1  # clients sharing the store (a SQLite file), the callers dealt among them in turn
    seed: int = 0

    @property
    def span(self) -> float:
        return 600.0 if self.window is WindowKind.PER_DAY else self.windows * self.length

    @property
    def subjects(self) -> int:
        return math.ceil(self.keys / self.group)

    @property
    def saturating(self) -> bool:
        """Whether the callers ask for at least twice what the keys allow (the premise of "share of the quota")."""
        return self.callers / max(self.latency, 1e-3) >= 2 * self.subjects * self.size / self.length

    @property
    def limit_size(self) -> int:  # in the limit's own unit: tokens for a limit on tokens
        return self.size * (TOKENS_PER_REQUEST if self.window is WindowKind.TOKENS else 1)

    @property
    def costs(self) -> list[float] | None:  # a limit on tokens: what its requests cost (`TOKEN_REQUESTS`), in turn
        return [float(cost) for _, cost in TOKEN_REQUESTS] if self.window is WindowKind.TOKENS else None

    @property
    def hinted(self) -> bool:
        return self.hint is not HintForm.NONE

    def scaled(self, factor: float) -> Shape:
        """The cell with time scaled by `factor`: windows, trips, pauses, waits and skew; sizes and counts kept. (The
        harness reproduces the full minute cells' shares on these within 0.001; the client's own constants — a 2 s
        rest waited for, the backoff ladder's first second — do not scale, which the harness's run of the same
        scaled cell shares.)"""
        return replace(
            self,
            length=self.length * factor,
            latency=self.latency * factor,
            pause=self.pause * factor,
            wait=self.wait * factor,
            skew=self.skew * factor,
        )

    def label(self) -> str:
        parts = [
            f"{self.window.value} {self.size}/{self.length:g}s",
            f"hint {self.hint.value}",
            f"{self.keys} keys" + (f" in groups of {self.group}" if self.group > 1 else ""),
            f"{self.callers} {self.caller.value} callers",
            f"latency {self.latency:g}s" + (f" ±{self.jitter:.0%}" if self.jitter else ""),
        ]
        if self.skew:
            parts.append(f"skew {self.skew:+g}s")
        if self.store != "memory":
            parts.append(self.store + (f" shared by {self.processes} processes" if self.processes > 1 else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class Measured:
    shape: Shape
    answers: int  # requests the providers admitted within the span
    refused: int  # 429s within the span
    capacity: float  # what a client that knew every limit could have had admitted within the span, in `spent`'s unit
    refused_first_window: int  # 429s in the first window (a burst's cost)
    spent: float | None = None
    """The quota the admitted requests used, where it is not their number: tokens, for a limit on tokens."""

    @property
    def share(self) -> float:
        """The quota delivered over what could have been: in tokens for a limit on tokens, where requests of
        different sizes make a count of requests no measure (cheap ones drawn by chance read above 1)."""
        used = self.answers if self.spent is None else self.spent
        return used / self.capacity if self.capacity else 1.0

    @property
    def waste(self) -> float:
        """429s per answer."""
        return self.refused / max(1, self.answers)

    @property
    def floor(self) -> float:
        """The least waste a client that cannot see the limit must pay, per answer: a 429 a window a subject where
        nothing is ever said of it; where answers say nothing and only the 429 carries a hint, the one 429 per key
        that teaches the window (issue 23: "the first window of a key whose quota is unknown costs at most one
        429"); none where every answer reports what is left."""
        if self.shape.hint is HintForm.REMAINING:
            return 0.0
        if self.shape.hinted:
            return self.shape.keys / max(1, self.answers)
        windows = self.shape.span / (DAY if self.shape.window is WindowKind.PER_DAY else self.shape.length)
        return self.shape.subjects * math.ceil(windows) / max(1, self.answers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape.label(),
            "answers": self.answers,
            "refused": self.refused,
            "capacity": round(self.capacity, 1),
            "share": round(self.share, 4),
            "waste": round(self.waste, 4),
            "floor": round(self.floor, 4),
            "refused_first_window": self.refused_first_window,
        }


class VirtualClock:
    """Epoch seconds that move only when the harness says so; both the client's clock and its timer."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Arrival:
    """A request as the provider saw it: seconds from the run's start on its clock, the key, admitted or refused."""

    at: float
    key: int
    admitted: bool


@dataclass(frozen=True)
class Lesson:
    """What a 429 taught: when its request left (seconds from the run's start, the client's clock), the key, the
    hint it carried (None: none), and what the client had learned of every key's limit once it took it in."""

    sent: float
    key: int
    hint: float | None
    learned: dict[str, Document]


@dataclass
class _Provider:
    """The modelled provider: one limit per subject (a key, or a group of keys), answering in its wire format."""

    shape: Shape
    limits: dict[int, Limit]
    started: float
    ends: float  # what is admitted from `started` until then counts
    answers: int = 0
    spent: float = 0.0  # the quota the answers within the span used (tokens, for a limit on tokens)
    refused: int = 0
    refused_first_window: int = 0
    today: Counter[int] = field(default_factory=Counter)
    arrivals: list[Arrival] | None = None  # every request as it arrived, where the caller of `run` asked

    def answer(
        self, key_number: int, model: str, now: float, cost: float, generation: float
    ) -> tuple[int, dict[str, str], Any]:
        """The status, headers and parsed body the provider sends for a request arriving `now` (its clock); an
        answer is written `generation` seconds later (its `Date`), a 429 at once."""
        shape, subject = self.shape, (key_number - 1) // self.shape.group
        limit = self.limits[subject]
        admitted, tokens = limit.admit(now, cost), None
        within = now < self.ends
        if self.arrivals is not None:
            self.arrivals.append(Arrival(now - self.started, key_number, admitted))
        if admitted:
            self.answers += within
            self.spent += cost if within else 0.0
            self.today[subject] += 1
            step, quota = Step.OK, limit.quota(now)
            tokens = quota if shape.window is WindowKind.TOKENS else None  # (the limit counts tokens)
            if shape.hint is HintForm.GROQ:  # Groq's request headers count the day
                until_midnight = DAY - now % DAY
                quota = Quota(14400, 14400 - self.today[subject], until_midnight, DAY)
            elif tokens is not None:  # a limit on requests far off beside the one on tokens
                quota = Quota(REQUESTS_BESIDE_TOKENS, REQUESTS_BESIDE_TOKENS, 60.0, 60.0)
        else:
            self.refused += within
            self.refused_first_window += now - self.started < min(shape.span, shape.length)
            step = Step.RATE_LIMIT_NOHINT if shape.hint is HintForm.NONE else Step.RATE_LIMIT
            quota = refusal(limit, now, cost)
            tokens = quota if shape.window is WindowKind.TOKENS else None  # (its 429 says so)
        provider = PROVIDER_OF[shape.hint]
        call = Call(provider, False, model, False, "ok", 5, True, tokens=int(cost))
        plan = Plan(step, status_for(provider, step, False), quota, 0.0, f"org_{subject}", now, tokens)
        reply = render_reply(call, plan, "sk-or-v1-...")
        written = now + generation if admitted else now
        headers = {**reply.headers, "Date": formatdate(written, usegmt=True)}  # whole seconds, on its clock
        if shape.hint in (HintForm.RETRY_AFTER, HintForm.NONE):  # this provider reports nothing on an answer
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-ratelimit")}
        elif tokens is not None and admitted and shape.hint in (HintForm.REMAINING, HintForm.GROQ):
            headers |= token_headers(tokens)
        if shape.hint is HintForm.RESET_MS and not admitted:
            headers["Retry-After"] = str(max(1, math.ceil(quota.reset_in)))  # beside the precise epoch ms
        return reply.status, headers, json.loads(reply.body) if reply.body else None


def _env(shape: Shape) -> dict[str, str]:
    provider = PROVIDER_OF[shape.hint]
    prefix = provider.upper()
    env = {
        "LLM_PROVIDER_ORDER": provider,
        f"{prefix}_BASE_URL": "http://127.0.0.1:9/v1",
    }
    if provider == "compat":
        env["COMPAT_CHAT_MODEL"] = "sim-chat-small"
    if provider == "groq":  # a model that does not reason: what a request asks is what it is charged
        env["GROQ_CHAT_MODEL"] = "qwen/qwen3.6-27b"
    for number in range(1, shape.keys + 1):
        env[f"{prefix}_API_KEY_{number}"] = _SECRETS[provider](number)
        if shape.group > 1:
            env[f"{prefix}_API_KEY_{number}_GROUP"] = f"account{(number - 1) // shape.group}"
    return env


@contextmanager
def _stores(shape: Shape) -> Iterator[list[StateStore]]:
    """A store for each of the shape's processes: one memory store, or each its own connection to one SQLite file."""
    if shape.store == "memory":
        if shape.processes != 1:
            raise ValueError("processes share a store in a file: store='sqlite'")
        yield [MemoryStore()]
        return
    with tempfile.TemporaryDirectory(prefix="llms-virtual-") as folder:
        url = f"sqlite:///{Path(folder) / 'state.db'}"
        yield [store_from_url(url, failover=False) for _ in range(shape.processes)]


def run(
    shape: Shape,
    arrivals: list[Arrival] | None = None,
    learned: dict[str, Document] | None = None,
    lessons: list[Lesson] | None = None,
) -> Measured:
    """Run one shape from a fresh client and fresh providers; what it delivered and what it cost. `arrivals`: a
    list to add every request to as the provider saw it (`bench/shape_cell.py` prints them window by window);
    `learned`: a dict to fill with what the client learned of each key's hidden limit by the run's end, its
    documents by name, each key's fingerprint read as `key <n>`; `lessons`: a list to add, after each 429 the
    client took in, what it had learned then (`Lesson`: how a reading went wrong, 429 by 429)."""
    clock = VirtualClock()
    rng = random.Random(shape.seed)
    span_end = clock.now + shape.span
    provider_start = clock.now + shape.skew
    limits = {s: limit_of(shape.window, shape.limit_size, shape.length) for s in range(shape.subjects)}
    measured_until = provider_start + shape.span
    if shape.window is WindowKind.FIXED_CLOCK:  # end where a window ends: a sliver of one is no fair measure
        measured_until = max(provider_start + shape.length, measured_until // shape.length * shape.length)
    provider = _Provider(shape, limits, provider_start, measured_until, arrivals=arrivals)
    hello = ChatRequest.build(MESSAGES)
    with _stores(shape) as stores, ExitStack() as running:
        clients = [
            running.enter_context(SmartClient(_settings(shape), store=store, clock=clock, timer=clock))
            for store in stores
        ]
        name = PROVIDER_OF[shape.hint]
        spec = clients[0].settings.providers[name].spec
        numbers = {k.key_id: k.number for k in clients[0].settings.providers[name].keys}
        labels = {k.fingerprint: f"key {k.number}" for k in clients[0].settings.providers[name].keys}
        start = clock.now

        def labelled() -> dict[str, Document]:
            """What the client learned of each key's hidden limit so far, its documents by name (`key <n>`)."""
            out = {}
            for document, content in learned_documents(stores[0]).items():
                kind, _, subject = document.partition("/")
                base, bar, part = subject.partition("|")
                out[f"{kind}/{labels.get(base, base)}{bar}{part}"] = content
            return out

        def caller(client: SmartClient) -> Task:
            wait = shape.wait if shape.caller is CallerKind.WAIT else None
            adapter, route = client.failover.adapter(name), client.route(None)
            while clock.now < span_end:
                request, cost = rng.choice(TOKEN_REQUESTS) if shape.window is WindowKind.TOKENS else (hello, 1)
                run = Run(request=request)
                steps = client.failover.steps(route, client.failover.deadline(wait), run)
                try:
                    step = next(steps)
                    while True:
                        if isinstance(step, (float, SlotWait)):
                            yield step
                            step = next(steps)
                            continue
                        target, lease = step
                        leg = min(NETWORK, shape.latency / 2)
                        generation = (shape.latency - 2 * leg) * (1 + shape.jitter * rng.uniform(-1, 1))
                        yield leg
                        status, headers, body = provider.answer(
                            numbers[lease.key.key_id], target.model, clock.now + shape.skew, cost, generation
                        )
                        back = leg + (generation if status == 200 else 0.0)  # a 429 comes before any model runs
                        yield back
                        trip = leg + back
                        read_at = adapter.clock.read(headers, clock.now - trip, clock.now)  # the provider's clock
                        if status == 200:
                            quota = None if name == "gemini" else adapter.quota(headers, request)
                            completion = Completion("ok", target.model, Usage(5, 1, 6), quota)
                            client.failover.succeeded(target, lease, completion, run)
                            steps.close()
                            break
                        outcome: Outcome = spec.classify(status, headers, body, read_at)
                        try:
                            step = steps.send(outcome)
                        finally:  # (taken in whether the call goes on or gives up)
                            if lessons is not None:
                                sent = clock.now - trip - start
                                number = numbers[lease.key.key_id]
                                lessons.append(Lesson(sent, number, outcome.retry_after, labelled()))
                except AllKeysExhaustedError:
                    yield shape.pause

        def renewer(client: SmartClient) -> Task:  # the leases' thread
            while clock.now < span_end + shape.latency:
                yield min(LEASE_TTL, client.settings.request_timeout) / 3
                client.key_manager.renew_leases()

        ended = [_ended_of(client) for client in clients]
        runs = [(caller(clients[i % len(clients)]), ended[i % len(clients)]) for i in range(shape.callers)]
        if not stores[0].IN_MEMORY:
            runs += [(renewer(client), count) for client, count in zip(clients, ended, strict=True)]
        _drive(clock, runs)
        if learned is not None:
            learned.update(labelled())
    most = served(
        shape.window, shape.limit_size, shape.length, provider_start, measured_until,
        subjects=shape.subjects, callers=shape.callers, latency=shape.latency, costs=shape.costs,
    )  # fmt: skip
    spent = provider.spent if shape.costs else None
    return Measured(shape, provider.answers, provider.refused, most, provider.refused_first_window, spent)


def _settings(shape: Shape) -> Any:
    return load_settings(_env(shape), dotenv_path=None)


Task = Generator[float | SlotWait, None, None]
"""A caller (or a client's leases' thread) in virtual time: it yields how long it sleeps, or a `SlotWait`."""


def _ended_of(client: SmartClient) -> Callable[[], int]:
    """How many of the client's requests in flight have ended: what its callers' `SlotWait`s wait past."""
    return lambda: client.key_manager.in_flight.ended


def _drive(clock: VirtualClock, tasks: list[tuple[Task, Callable[[], int]]]) -> None:
    """Run the tasks to their ends: each yields how long it sleeps, or a `SlotWait` (asleep until more than its
    count of its client's requests in flight have ended — each task is paired with its client's count — or its
    seconds pass); the earliest to wake goes next."""
    order = itertools.count()
    ends = dict(tasks)
    counts = list(set(ends.values()))
    due: dict[Task, int] = {}  # task → its one live entry in the queue
    parked: dict[Task, int] = {}  # task → the ends it waits past

    def wake(task: Task, at: float) -> None:
        due[task] = number = next(order)
        heapq.heappush(queue, (at, number, task))

    def total() -> int:
        return sum(ended() for ended in counts)

    queue: list[tuple[float, int, Task]] = []
    for task in ends:
        wake(task, clock.now)
    while queue:
        at, number, task = heapq.heappop(queue)
        if due.get(task) != number:
            continue  # woken before this entry's time
        parked.pop(task, None)
        clock.now = max(clock.now, at)
        before = total()
        try:
            pause = next(task)
        except StopIteration:
            del due[task]
            pause = None
        if isinstance(pause, SlotWait):
            waits = ends[task]() <= pause.ended
            if waits:
                parked[task] = pause.ended
            wake(task, clock.now + (pause.seconds if waits else 0.0))
        elif pause is not None:
            wake(task, clock.now + max(0.0, pause))
        if total() != before:
            for sleeper in [p for p, seen in parked.items() if ends[p]() > seen]:
                del parked[sleeper]
                wake(sleeper, clock.now)
