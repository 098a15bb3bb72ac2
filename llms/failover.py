"""The failover loop: for each target in the route, for each key in rotation, try, record, move on.

Written once as steps (`Failover.steps`: it yields a key to try, or seconds to sleep, and is sent how the attempt
ended), and driven two ways: with blocking calls (`serve`, `stream`) and with awaited ones (`aserve`, `astream`,
for callers on an event loop). It never retries a failing key within one round: the key's lease ends with the
outcome (`KeyLease`), and the next key or provider answers instead. It sleeps only for a busy key's in-flight slot
or, within `wait`, for a cooling key. `SmartClient` owns one; the virtual-time harness drives its steps itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

from config.api_keys import ApiKey
from config.settings import Settings
from llms.adapter_calls import aopen_stream, aready, open_stream
from llms.exceptions import AllKeysExhaustedError, ProviderError, RequestRejectedError, StreamInterruptedError
from llms.key_lease import KeyLease
from llms.key_manager import KeyManager
from llms.outcomes import Attempt, Outcome, OutcomeKind, QuotaHint, Scope, describe_states, transient
from llms.providers import ProviderAdapter
from llms.routing import Route, Target
from llms.state.base import ABANDONED, RequestRecord
from llms.streams import Run
from llms.transport import measured_setup
from llms.types import (
    ChatRequest,
    ChatResult,
    Completion,
    Embedded,
    EmbeddingResult,
    Usage,
)

log = logging.getLogger("llms.client")

Wait = bool | float | None
T = TypeVar("T")
_OK = Outcome(OutcomeKind.OK, 200)
_BUSY_POLL = 0.01  # the shortest wait for a slot (and the wait a pool that is only busy suggests)
_HELD_POLL = 0.1  # seconds between looks while other processes hold the slots (each look is a store round trip)
_LONE_LOOK = 1.0  # the longest a caller waits for a slot without looking, where no other process shares the store
PACING_GRACE = 2.0
"""Seconds a call with the default `wait` waits at least for a key whose rest ends within them: a rest that short
is the window's pacing (the client spacing requests, a provider's slot about to free), not exhaustion, and a
caller told to come back later would come back after it and leave the window's quota unused. They count from
when the call first waits for a cooling key, not from its start: time spent waiting for a busy slot is not
exhaustion either, and counted in, a caller that had waited 1.3 s for a slot gave up on a key freeing in 0.1 s
("All API keys exhausted … frees up in 0.1 s")."""


@dataclass(frozen=True)
class SlotWait:
    """A failover step: sleep until more than `ended` of this process's requests in flight have ended (a slot
    frees the moment one does), or `seconds` at most (what frees by the clock, or in another process). A thread
    or an event loop is told by the request's end (`InFlight`); 32 threads looking every 10 ms instead made 3,200
    store reads a second."""

    seconds: float
    ended: int


Step = tuple[Target, KeyLease] | float | SlotWait
"""A failover step: try this lease's key for this target, sleep this long, or wait for a slot."""


@dataclass(frozen=True)
class Deadline:
    """When a call gives up waiting for a cooling key (the timer's seconds); `paced`: it also waits for one
    during `PACING_GRACE` from when it first waits for a cooling key (the default `wait`)."""

    cooling: float
    paced: bool = False


class Failover:
    """The loop and its drivers over one client's key manager and adapters."""

    def __init__(
        self,
        key_manager: KeyManager,
        adapters: Mapping[str, ProviderAdapter],
        settings: Callable[[], Settings],
        *,
        clock: Callable[[], float],
        timer: Callable[[], float] = time.monotonic,
        store_in_memory: bool = False,
        answered_by: Callable[[Target], None] = lambda target: None,
        misconfigured: Callable[[Target, Outcome], None] = lambda target, outcome: None,
    ) -> None:
        """`adapters`: the client's own mapping (a key reload replaces adapters in it). `settings`: the client's
        current settings. `clock`: epoch seconds the request log is kept in; `timer`: the seconds deadlines are
        measured in. `answered_by`: told of each target that answered; `misconfigured`: of each request error
        that says a configured model is wrong (`Outcome.config_error`)."""
        self.key_manager = key_manager
        self._adapters = adapters
        self._settings = settings
        self._clock = clock
        self._timer = timer
        self._store_in_memory = store_in_memory
        self._answered_by = answered_by
        self._misconfigured = misconfigured

    def _tokens(self, target: Target, run: Run) -> int:
        """What the target's provider counts of the run's request against a limit on tokens (0: not a chat)."""
        return self._adapters[target.provider].counted_tokens(run.request, target.model) if run.request else 0

    def adapter(self, provider: str) -> ProviderAdapter:
        """The adapter the loop calls for `provider` (the harness reads answers through it too)."""
        return self._adapters[provider]

    def deadline(self, wait: Wait) -> Deadline:
        """When a call with this `wait` gives up waiting for a cooling key (the timer's seconds), and whether it
        also waits `PACING_GRACE` from when it first waits for one (the default `wait`)."""
        if wait is None:
            seconds = max(self._settings().max_wait, PACING_GRACE)
        elif wait is False:
            seconds = 0.0
        elif wait is True:
            seconds = self._settings().max_wait or 60.0
        elif isinstance(wait, (int, float)) and wait >= 0:
            seconds = float(wait)
        else:
            raise ValueError(f"wait must be True, False, None or a number of seconds, got {wait!r}")
        return Deadline(self._timer() + seconds, paced=wait is None)

    def steps(self, route: Route, deadline: Deadline, run: Run) -> Generator[Step, Outcome | None, None]:
        """The failover loop: for each target of the route (a provider and a model), each usable key once, until a
        key answers.

        Then wait and go round again: while keys are only busy (at their in-flight limit), for a slot, up to
        `LLM_REQUEST_TIMEOUT` whatever `wait` says — a slot frees as soon as a request in flight ends, and a caller
        should not fail because this client paces itself; for the first cooling key to free up, only within
        `wait` (the default: `PACING_GRACE` from when it first waits for one, whatever it waited for slots). A
        request error that another provider may take, or a limit the whole provider shares, moves on to the next
        target at once.

        Written once for both kinds of caller, as steps a driver carries out: it yields `(target, key)` and is
        sent the attempt's failure (None: the key answered, the loop ends), or yields seconds to sleep, or a
        `SlotWait`. `serve` drives it with blocking calls, `aserve` with awaited ones.
        """
        patience = max(deadline.cooling, self._timer() + self._settings().request_timeout)  # for a busy slot
        cooling_since: float | None = None
        while True:
            ended_before, mine, rested = self.key_manager.in_flight.ended, 0, False
            for target in route:
                tried: set[ApiKey] = set()
                run.leave_target, tokens = False, self._tokens(target, run)
                while not run.leave_target and (
                    lease := self.key_manager.acquire(target.provider, tried, target.model, tokens)
                ):
                    tried.add(lease.key)
                    mine += 1
                    run.started = self._timer()
                    failure = yield target, lease
                    if failure is None:
                        return
                    self._failed(target, lease, failure, run)
                    rested = rested or failure.kind is OutcomeKind.RATE_LIMIT
            if run.rejected:
                raise self._give_up(run, route)
            in_flight, seen = self.key_manager.in_flight, ended_before + mine  # (this round's attempts ended too)
            now = self._timer()
            if (in_flight.busy() or in_flight.ended > seen) and now + _BUSY_POLL <= patience:
                # Keys only busy: a slot frees as a request in flight ends (or as one just did), or by the clock.
                due = self.key_manager.next_change(_pairs(route))
                look = _LONE_LOOK if self._store_in_memory else _HELD_POLL  # (what other processes free)
                yield SlotWait(max(_BUSY_POLL, min(look, patience - now, look if due is None else due + 0.001)), seen)
                continue
            held = self.key_manager.busy_until(_pairs(route))  # busy with others' requests (or a dead process's)
            if held is not None and self._timer() + _HELD_POLL <= patience:
                yield min(_HELD_POLL, held[1] + 0.001)
                continue
            soonest = self.key_manager.next_free(_pairs(route))
            now = self._timer()
            cooling_since = now if cooling_since is None else cooling_since
            until = max(deadline.cooling, cooling_since + PACING_GRACE) if deadline.paced else deadline.cooling
            if soonest is None and rested and now <= until:
                continue  # the rest a 429 of this round earned is over already (a slow 429, a busy machine): again
            if soonest is None or now + soonest[1] > until:
                raise self._give_up(run, route)
            yield soonest[1] + 0.001

    def serve(
        self, route: Route, deadline: Deadline, call: Callable[[ProviderAdapter, ApiKey, str], T], run: Run
    ) -> tuple[Target, ApiKey, T]:
        """The failover loop with blocking calls: the first key whose `call(adapter, key, model)` returns, and what
        it returned."""
        steps = self.steps(route, deadline, run)
        step = next(steps)
        while True:
            if isinstance(step, SlotWait):
                self.key_manager.in_flight.wait_for_end(step.ended, step.seconds)
                step = next(steps)
                continue
            if isinstance(step, float):
                time.sleep(step)
                step = next(steps)
                continue
            target, lease = step
            try:
                adapter = self._adapters[target.provider]
                adapter.ready(lease.key)
                with self._leaving(run):
                    answer = call(adapter, lease.key, target.model)
            except Exception as exc:
                step = steps.send(_failure(exc))
                continue
            except BaseException:  # interrupted (Ctrl-C): the key is no longer in flight, for any process
                self._abandoned(target, lease, run)
                raise
            steps.close()
            return target, lease, answer

    async def aserve(
        self, route: Route, deadline: Deadline, call: Callable[[ProviderAdapter, ApiKey, str], Awaitable[T]], run: Run
    ) -> tuple[Target, ApiKey, T]:
        """The failover loop with awaited calls; its own steps (store reads and writes) run off the event loop
        unless the store is in memory."""
        steps = self.steps(route, deadline, run)
        step = await self.off_loop(steps.send, None)
        while True:
            if isinstance(step, SlotWait):
                await self.key_manager.in_flight.await_end(step.ended, step.seconds)
                step = await self.off_loop(steps.send, None)
                continue
            if isinstance(step, float):
                await asyncio.sleep(step)
                step = await self.off_loop(steps.send, None)
                continue
            target, lease = step
            try:
                adapter = self._adapters[target.provider]
                await aready(adapter, lease.key)
                with self._leaving(run):
                    answer = await call(adapter, lease.key, target.model)
            except Exception as exc:
                step = await self.off_loop(steps.send, _failure(exc))
                continue
            except BaseException:  # cancelled (the caller went away): the key is no longer in flight
                self._abandoned(target, lease, run)
                raise
            steps.close()
            return target, lease, answer

    @contextmanager
    def _leaving(self, run: Run) -> Iterator[None]:
        """The attempt's request leaves in the block: its time, and its key's window's, count from when it left
        (`measured_setup`: written to its socket, after a TLS handshake the provider's clock never saw)."""
        run.started = self._timer()
        with measured_setup() as setup:
            try:
                yield
            finally:
                run.started += setup.delay

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Store work from the event loop: in the loop's default executor when the store may block (a SQLite
        lock, a Redis round trip), inline when it is in this process's memory (microseconds, no thread hop)."""
        if self._store_in_memory:
            return work(*args)
        return await asyncio.get_running_loop().run_in_executor(None, partial(work, *args))

    def stream(
        self, request: ChatRequest, route: Route, deadline: Deadline, run: Run
    ) -> Generator[str, None, ChatResult]:
        target, lease, (reply, first) = self.serve(
            route, deadline, lambda a, k, m: open_stream(a, request.for_model(m), k), run
        )
        run.answering = (target.provider, reply.model, lease.key.key_id)
        text = [first] if first else []
        try:
            if first:
                yield first
            for piece in reply.pieces:
                text.append(piece)
                yield piece
        except Exception as exc:
            outcome = _failure(exc)
            self._failed(target, lease, outcome, run, raise_rejected=False)
            raise _broke(target.provider, len(text), outcome, run) from None
        except BaseException:  # closed early (GeneratorExit) or interrupted: the key is no longer in flight
            self._abandoned(target, lease, run)
            raise
        finally:
            reply.close()
        completion = Completion(
            "".join(text), reply.model, reply.usage, reply.quota, tuple(reply.tool_calls), reply.finish_reason
        )
        return self.succeeded(target, lease, completion, run)

    async def astream(
        self, request: ChatRequest, route: Route, deadline: Deadline, run: Run
    ) -> AsyncGenerator[str, None]:
        """`stream` with awaited calls; the result goes to `run.result` (an async generator returns nothing)."""
        target, lease, (reply, first) = await self.aserve(
            route, deadline, lambda a, k, m: aopen_stream(a, request.for_model(m), k), run
        )
        run.answering = (target.provider, reply.model, lease.key.key_id)
        pieces = cast(AsyncIterator[str], reply.pieces)
        text = [first] if first else []
        try:
            if first:
                yield first
            async for piece in pieces:
                text.append(piece)
                yield piece
        except Exception as exc:
            outcome = _failure(exc)
            await self.off_loop(partial(self._failed, raise_rejected=False), target, lease, outcome, run)
            raise _broke(target.provider, len(text), outcome, run) from None
        except BaseException:  # closed early, cancelled while waiting for a piece, or interrupted
            self._abandoned(target, lease, run)  # inline: a cancelled task may not get to await anything more
            raise
        finally:
            reply.close()
        completion = Completion(
            "".join(text), reply.model, reply.usage, reply.quota, tuple(reply.tool_calls), reply.finish_reason
        )
        run.result = await self.off_loop(self.succeeded, target, lease, completion, run)

    def _failed(
        self, target: Target, lease: KeyLease, outcome: Outcome, run: Run, *, raise_rejected: bool = True
    ) -> None:
        provider, key = target.provider, lease.key
        latency = self._timer() - run.started
        entry = self._log_entry(target, key, outcome.kind.value, outcome.status, latency)
        lease.failed(outcome, entry)
        run.attempted(Attempt(key.key_id, outcome.kind, outcome.status, outcome.message))
        log.debug("%s failed: %s %s %s", key.label, outcome.kind.value, outcome.status, outcome.message)
        if outcome.scope is Scope.PROVIDER:
            run.leave_target = True
        if outcome.kind is not OutcomeKind.REQUEST_ERROR:
            return
        if outcome.config_error:
            self._misconfigured(target, outcome)
        if not outcome.other_provider_may_serve and raise_rejected:
            raise RequestRejectedError(f"{provider} rejected the request: {outcome.message}", run.attempts)
        run.rejected.append(outcome)
        run.leave_target = True

    def _answered(
        self, target: Target, lease: KeyLease, model: str, usage: Usage, quota: QuotaHint | None, run: Run
    ) -> float:
        """Record a key's success (chat or embeddings alike); returns the attempt's latency."""
        latency = self._timer() - run.started
        entry = self._log_entry(target, lease.key, _OK.kind.value, _OK.status, latency, model, usage)
        lease.succeeded(quota, entry)
        run.attempted(Attempt(lease.key.key_id, OutcomeKind.OK, 200, ""))
        self._answered_by(target)
        return latency

    def embedded(self, target: Target, lease: KeyLease, embedded: Embedded, run: Run) -> EmbeddingResult:
        key = lease.key
        latency = self._answered(target, lease, embedded.model, embedded.usage, embedded.quota, run)
        return EmbeddingResult(
            vectors=embedded.vectors,
            provider=target.provider,
            model=embedded.model,
            key_id=key.key_id,
            key_hint=key.hint,
            usage=embedded.usage,
            attempts=tuple(run.attempts),
            latency_s=latency,
        )

    def succeeded(self, target: Target, lease: KeyLease, completion: Completion, run: Run) -> ChatResult:
        key = lease.key
        latency = self._answered(target, lease, completion.model, completion.usage, completion.quota, run)
        return ChatResult(
            text=completion.text,
            provider=target.provider,
            model=completion.model,
            key_id=key.key_id,
            key_hint=key.hint,
            latency_s=latency,
            usage=completion.usage,
            attempts=tuple(run.attempts),
            tool_calls=list(completion.tool_calls),
            finish_reason=completion.finish_reason,
        )

    def _abandoned(self, target: Target, lease: KeyLease, run: Run) -> None:
        """The caller went away mid-request (cancelled, interrupted, a stream closed early). The key did nothing
        wrong: its in-flight slot frees now, for every process, and the request log says "abandoned"."""
        lease.abandoned(self._log_entry(target, lease.key, ABANDONED, None, self._timer() - run.started))

    def _log_entry(
        self,
        target: Target,
        key: ApiKey,
        outcome: str,
        status: int | None,
        latency: float,
        model: str | None = None,
        usage: Usage | None = None,
    ) -> RequestRecord:
        return RequestRecord(
            at=self._clock(),
            provider=target.provider,
            model=model or target.model,
            key=key.fingerprint,
            key_id=key.key_id,
            outcome=outcome,
            status=status,
            latency=round(latency, 6),
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
        )

    def _give_up(self, run: Run, route: Route) -> Exception:
        if run.rejected:
            reasons = "; ".join(
                f"{a.key_id.split(':')[0]}: {a.message}" for a in run.attempts if a.kind is OutcomeKind.REQUEST_ERROR
            )
            return RequestRejectedError(f"No provider accepted the request ({reasons})", run.attempts)
        reasons = [k.reason for t in route for k in self.key_manager.statuses(t.provider, t.model)]
        described = describe_states(reasons)
        soonest = self.key_manager.next_free(_pairs(route))
        held = self.key_manager.busy_until(_pairs(route))
        if held is not None and (soonest is None or held[1] < soonest[1]):
            return AllKeysExhaustedError(run.attempts, held[1], held[0].key_id, described, busy=True)
        if soonest is not None:
            key, seconds = soonest
            return AllKeysExhaustedError(run.attempts, seconds, key.key_id, described)
        if self.key_manager.in_flight.busy():
            return AllKeysExhaustedError(run.attempts, _BUSY_POLL, None, described)
        return AllKeysExhaustedError(run.attempts, 0.0 if reasons else None, None, described)


def _pairs(route: Route) -> list[tuple[str, str | None]]:
    return [(t.provider, t.model) for t in route]


def _broke(provider: str, pieces: int, outcome: Outcome, run: Run) -> StreamInterruptedError:
    """A stream that failed after text was delivered: it cannot fail over, and a truncated answer is never silent."""
    return StreamInterruptedError(f"{provider} stream broke after {pieces} piece(s): {outcome.message}", run.attempts)


def _failure(exc: Exception) -> Outcome:
    return exc.outcome if isinstance(exc, ProviderError) else _unexpected(exc)


def _unexpected(exc: Exception) -> Outcome:
    """Only the exception's type is kept: its text could quote a request, and with it a key."""
    log.warning("unexpected %s while calling a provider; treated as a transient error", type(exc).__name__)
    return transient(f"unexpected error ({type(exc).__name__})")
