"""This process's leases on keys and the in-flight limit of each subject, as a `concurrency-limits` limiter.

A request holds a lease on its key from `KeyManager.acquire` until it ends (`llms.key_lease.KeyLease`): the store
counts it against the key's in-flight slots, for every process sharing the store, and this process renews it while
the request runs, so a slot held by a process that died frees itself. What a subject may have in flight at once
(`InFlightLimit`) is this process's own, grown by answers and halved by 429s, like a TCP window: it lives here, apart
from the rotation, because only the requests this process sent move it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from config.api_keys import ApiKey
from llms.outcomes import OutcomeKind, QuotaHint, TokensLeft
from llms.quota import InFlightLimit, limit_subject
from llms.shared_tokens import SharedTokens, total_of
from llms.slot_ends import SlotEnds
from llms.state import StateError, StateStore
from llms.state.base import Document, Finish, Lease, RequestRecord
from llms.token_limits import TokenLimits

log = logging.getLogger("llms.keys")
LEASE_TTL = 10.0
"""Seconds an in-flight slot outlives a process that died holding it (at most the request timeout). A store in this
process's memory keeps a lease until its request's deadline: nothing outlives the process, and nothing renews it."""


class Admission(Enum):
    """What `Leases.admit` made of a lease the store took."""

    ADMITTED = "admitted"
    FULL = "full"  # the key's slots are held (by this process, or, while its quota is unknown, by others'): pass it
    SPENT = "spent"  # its tokens left cannot pay for the request, and no answer out will say more: rest it
    STALE = "stale"  # an answer told the store the key's count after the lease was taken: take it again


@dataclass(frozen=True, slots=True)
class _Held:
    """This process's lease on a key while its request runs: what it counts toward, and how long it may last."""

    fingerprint: str
    subject: str  # whose in-flight limit it counts toward (a key, or a shared-limit group; per model where counted)
    part: str  # the store gate's part: "" or the model
    renew_until: float  # the latest its lease may be renewed to: the request's deadline, or its window's end
    sent: float  # when its request left
    tokens: int  # what its request may spend of a limit on tokens (`ChatRequest.tokens`; 0: not a chat)


class Leases:
    """This process's leases while their requests run, what each subject has in flight, and its in-flight limit."""

    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float],
        lock: threading.Lock,
        account: Callable[[ApiKey], list[ApiKey]],
        lease_seconds: float,
        lease_ttl: float,
    ) -> None:
        """`lock`: the key manager's lock, which guards the counters here (`acquire` reads `saturated` under
        it). `account`: a key and the keys that share its limits. `lease_seconds`: the longest a request may hold
        its in-flight slot (its deadline). `lease_ttl`: how long a slot outlives a process that died holding it.
        While a request runs, this process renews its lease every `lease_ttl / 3` seconds in a shared store (never
        past `lease_seconds`); a dead process stops renewing."""
        self._store = store
        self._clock = clock
        self._lock = lock
        self._account = account
        self._lease_seconds = lease_seconds
        self.ttl = lease_seconds if store.IN_MEMORY else min(lease_ttl, lease_seconds)  # nothing outlives this process
        self._held: dict[str, _Held] = {}  # token → this process's lease on a key, while its request runs
        self._held_of: defaultdict[str, dict[str, None]] = defaultdict(dict)  # subject → its leases' tokens, in order
        self._in_flight: Counter[str] = Counter()  # this process's requests in flight, per subject
        self._limits: defaultdict[str, InFlightLimit] = defaultdict(InFlightLimit)
        self._sent: dict[str, float] = {}  # subject → when this process last sent a request for it
        self._answered: set[str] = set()  # subjects another process sharing the store had an answer of
        self._looked: dict[str, float] = {}  # subject → when its answers in the store's request log were last looked at
        self._tokens = TokenLimits()  # each subject's limit on tokens, where answers or 429s speak of one
        self._shared = SharedTokens(store, clock)  # where other processes use the store, their readings too
        self._sizes: dict[str, int] = {}  # subject → the tokens of the latest request sent for it (`_saturate`)
        self._slots = SlotEnds()  # when each request out frees its slot, by the windows its provider showed
        self._elsewhere: defaultdict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (provider, part) →
        # fingerprints whose accounts other processes' requests out hold → until when (`busy_until`)
        self._saturated: defaultdict[str, dict[str, float]] = defaultdict(dict)  # model part → fingerprints at
        # their limit → until when (a key whose quota is unknown takes one more after `InFlightLimit.spacing`)
        self.subjects: set[str] = set()
        """Every subject this process has sent a request for (changed with the lock held)."""
        self.ended = 0
        """How many of this process's requests in flight have ended."""
        self.counts_told = 0
        """How many of this process's answers have told the store a count (`admit`'s `seen`)."""
        self._told_at: dict[str, int] = {}  # subject → `counts_told` when an answer last told the store its count
        self._ends = threading.Condition()  # told of each end, for callers waiting for a slot (`wait_for_end`)
        self._awaiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()  # (`await_end`)
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()

    def lease(self, now: float, provider: str, part: str) -> Lease:
        """A new lease for the store to grant on a key of the provider, `ttl` ahead, or until the window that
        counts its request has surely passed (`SlotEnds.until`), if sooner."""
        return Lease(os.urandom(16).hex(), min(now + self.ttl, self._slots.until(now, provider, part)), part)

    def saturated(self, part: str, now: float) -> set[str]:
        """The keys at their in-flight limit for the part (the model, or "") now. Called with the lock held."""
        return {fingerprint for fingerprint, until in self._saturated[part].items() if until > now}

    def admit(self, key: ApiKey, lease: Lease, now: float, seen: int, tokens: int = 0) -> Admission:
        """Count the lease's request in flight on the key if its subject's `InFlightLimit` has room among this
        process's requests out, and, while nothing is known of its quota, among every process's sharing the store
        (`_room_among_all`); and, where answers report the tokens left, if they pay for its `tokens` beside this
        process's requests out (`TokenBudget`; `SPENT` when none is out to say more). `seen`: `counts_told`
        before the store took the lease. A later answer that told the
        store the key's count makes it `STALE`: its gate counted nothing when it took the lease, so no slot held
        it, while the answer lifted this process's limit to the count (a burst of 32 callers on 8 keys whose
        answers report their quota paid 5 429s on a SQLite file, the threads late to admit sending past it).

        Where processes share the store and the subject's limit on tokens speaks only through 429s, the request's
        tokens are added to every process's total first, and taken out again unless admitted: read, then added
        once sent, the total let processes admitting at one moment each spend what the others were spending
        (0.13 429s per answer in the steady state)."""
        subject = limit_subject(key, lease.part)
        reserved = self._shared.add_sent(subject, tokens)  # (every process's total with this one: None, alone)
        admitted = self._admit(key, lease, now, seen, tokens, reserved)
        if reserved is not None and admitted is not Admission.ADMITTED:
            self._shared.add_sent(subject, -tokens)
        return admitted

    def _admit(
        self, key: ApiKey, lease: Lease, now: float, seen: int, tokens: int, reserved: Document | None
    ) -> Admission:
        """`admit`, with every process's total sent with this request and their latest 429s (`TokenDrip.fits_at`,
        `TokenLimits.caught_up`)."""
        token, part = lease.token, lease.part
        subject = limit_subject(key, part)
        shared = self._shared.readings(subject, key.provider)
        total_sent = None if reserved is None else total_of(reserved) - tokens
        with self._lock:
            if reserved is not None:
                self._tokens.caught_up(subject, reserved.get("refused", ()), self._out(subject))
            if shared is not None:
                self._tokens.merge(subject, shared)
                if (at_once := shared.get("at_once")) and self._limits[subject].learning:
                    self._limits[subject].told_of(*at_once)
            if self._told_at.get(subject, -1) > seen:
                return Admission.STALE
            limit = self._limits[subject]
            if not limit.room(self._holding(subject, now), now - self._sent.get(subject, -math.inf)):
                return Admission.FULL
            fits, waits = self._tokens.fits_at(subject, tokens, self._out(subject), now, shared=total_sent)
            if fits > now:
                return Admission.FULL if waits else Admission.SPENT
            self._in_flight[subject] += 1
            self._sent[subject], self._sizes[subject] = now, tokens
            self._shared.sent(tokens)
            self.subjects.add(subject)
            until = self._slots.hold(subject, token, key.provider, part, now, now + self._lease_seconds)
            self._held[token] = _Held(key.fingerprint, subject, part, until, now, tokens)
            self._held_of[subject][token] = None
            self._saturate(key, subject, part, now)
            if self._renewer is None and not self._store.IN_MEMORY:
                self._renewer = threading.Thread(target=self._renew, name="llms-leases", daemon=True)
                self._renewer.start()
            shares_tokens = shared is not None and self._tokens.read(subject)
            among_all = self._store.SHARED and (limit.learning or shares_tokens)
            if not among_all:
                self._tokens.sent(subject, tokens, now, total_sent)
                return Admission.ADMITTED
        tokens_too = subject if shares_tokens else None
        room = self._room_among_all(key, replace(lease, sent=now, tokens=tokens), limit, now, tokens_too)
        with self._lock:
            if room:  # (a drip counts only what went)
                self._tokens.sent(subject, tokens, now, total_sent)
                return Admission.ADMITTED
            self._let_go(token)  # as though it never went (not an end: waiters for one would look again at once)
            self._saturate(key, subject, part, now)
        return Admission.FULL

    def _out(self, subject: str, but: str | None = None) -> list[tuple[float, int]]:
        """(when, tokens) of this process's requests out for the subject, but the one of lease `but`. Called with
        the lock held."""
        held = self._held
        return [(held[t].sent, held[t].tokens) for t in self._held_of.get(subject, ()) if t != but]

    def tokens_back(self, key: ApiKey, part: str, tokens: int) -> float | None:
        """When the key's window of tokens for `part` pays for a request of `tokens`, as its answers said or its
        429s taught (None: nothing did, or it waits for an answer out)."""
        subject = limit_subject(key, part)
        with self._lock:
            back, _ = self._tokens.fits_at(subject, tokens, self._out(subject), self._clock())
        return back if math.isfinite(back) else None

    def refused_tokens(self, key: ApiKey, part: str, token: str | None, sent: float, now: float) -> float | None:
        """A 429 that named a limit on tokens, to this process's lease `token` sent then: learn the limit's rate
        (`TokenLimits.refused`) and say when a request as large fits again (None: the hint says)."""
        subject = limit_subject(key, part)
        with self._lock:
            held = self._held.get(token) if token is not None else None
            at, tokens = (held.sent, held.tokens) if held is not None else (sent, 0)  # (as `admit` counted it)
        shared = self._shared.refused(subject, tokens, at)  # (every process's total, where they share the store)
        total_sent = None if shared is None else total_of(shared)
        with self._lock:
            return self._tokens.refused(subject, at, tokens, self._out(subject), now, total_sent)

    def _room_among_all(
        self, key: ApiKey, lease: Lease, limit: InFlightLimit, now: float, tokens_too: str | None
    ) -> bool:
        """Whether `limit` has room for the lease's request among the requests out that the store kept before it,
        every process's (`StateStore.note_sent`, which keeps this one too): each process keeps its own limit, so
        four processes, one request each, put four at once on an account whose quota none knew (a clock window of
        1 a 2 s shared by 4 keys: 3 429s in its first window, then read as 1 a 3.8 s, 0.75 of the quota). Where
        it has none, the key's account is held elsewhere (`busy_until`) until the spacing would let one more go
        (once an answer came, here or in another process: `_answered_elsewhere`), or, before any, for a look a
        moment later. `tokens_too`: the subject whose tokens left answers read, which the other processes'
        requests out spend too (`SharedTokens.theirs`)."""
        members = [m.fingerprint for m in self._account(key)]
        try:
            before = self._store.note_sent(key.fingerprint, lease, members, now)
        except StateError as exc:  # the store's own failover has already said so: this process's count holds
            log.debug("could not keep the request's send: %s", exc)
            return True
        latest = max((sent for sent, _ in before), default=now)  # (none before: room, whatever the spacing)
        room = not limit.learning or limit.room(len(before), now - latest)
        spaced = limit.unknown or (not room and not limit.answers and self._answered_elsewhere(key, lease.part, now))
        room = room or (spaced and now - latest >= limit.spacing)
        if room and tokens_too is not None:
            with self._lock:
                mine = self._out(tokens_too, but=lease.token)
                out = mine + self._shared.theirs(before, mine, lease.tokens)
                room = self._tokens.fits_at(tokens_too, lease.tokens, out, now, read=True)[0] <= now
        again = latest + limit.spacing if spaced else now + InFlightLimit.SPACING
        with self._lock:
            held = self._elsewhere[(key.provider, lease.part)]
            for member in members:
                if room:
                    held.pop(member, None)
                else:
                    held[member] = again
        return room

    def _answered_elsewhere(self, key: ApiKey, part: str, now: float) -> bool:
        """Whether a process sharing the store had an answer of the key's account (for `part`), as its request log
        shows (looked at once a `SPACING` at most, and only until one is found): then a process whose own first
        answer has not come takes the spacing that one answer earned, where it kept to one request out among
        all (`_room_among_all`; under 15 s answers three of four processes sent nothing for minutes)."""
        subject = limit_subject(key, part)
        if subject in self._answered:
            return True
        if now - self._looked.get(subject, -math.inf) < InFlightLimit.SPACING:
            return False
        self._looked[subject] = now
        try:
            found = self._store.sent_times([m.fingerprint for m in self._account(key)], part or None)
        except StateError:
            return False
        if found:
            self._answered.add(subject)
        return bool(found)

    def busy_until(self, provider: str, part: str, now: float) -> tuple[str, float] | None:
        """A free key of the provider whose every slot for `part` is held, with when to look again: by the store's
        gate (`StateStore.busy_until`), or, while its quota is unknown, by other processes' requests out
        (`_room_among_all`). None: none is."""
        with self._lock:
            held = [(fp, until) for fp, until in self._elsewhere[(provider, part)].items() if until > now]
        return min(held, key=lambda found: found[1], default=None) or self._store.busy_until(provider, now, part)

    def finish(
        self,
        key: ApiKey,
        token: str | None,
        quota: QuotaHint | None,
        now: float,
        kind: OutcomeKind | None = None,
        *,
        learned: bool = False,
        trip: float = math.inf,
    ) -> Finish | None:
        """The end of this process's lease `token` on the key (None when it holds none: a probe), with the reported
        quota. In the same step the outcome's `kind` moves the subject's in-flight limit: an answer grows it (to
        what the key reports left, if more), a 429 halves it; anything else, or no outcome (abandoned), leaves it.
        `now`: when the request was sent, when the provider read the count it reports (a `learned` count is this
        process's own, worked out as the answer came, so the latest one is the newest). `trip`: seconds from the
        send to the answer, which bound how soon a 429 comes back (`InFlightLimit.spacing`)."""
        told: TokensLeft | None = None
        said: tuple[int, int | None] | None = None  # requests the answer said are left, of how many
        with self._lock:
            held = self._let_go(token) if token is not None else None
            if held is not None:
                subject, part = held.subject, held.part
                self.ended += 1
                if quota is not None and quota.remaining is not None:  # (the store was told it first: `ending`)
                    self.counts_told += 1
                    self._told_at[subject] = self.counts_told
                if kind is OutcomeKind.OK:
                    at_once = quota.remaining if quota is not None and not quota.per_day else None
                    window = quota.limit if at_once is not None and quota is not None else None
                    # (a count of tokens says nothing of requests at once: Groq's minute of requests goes untold)
                    told = quota.tokens if quota is not None else None
                    self._tokens.answered(subject, told, held.sent)
                    self._limits[subject].succeeded(at_once, learned=learned, window=window, trip=trip)
                    said = (at_once, window) if at_once is not None and not learned else None  # (as reported)
                elif kind is OutcomeKind.RATE_LIMIT:
                    self._limits[subject].limited()
                    self._slots.refused(subject, key.provider, part, held.sent)
                self._saturate(key, subject, part, now)
        if held is None or token is None:
            return None
        with self._ends:
            self._ends.notify_all()
            awaiting = list(self._awaiting)
        for loop, future in awaiting:
            with contextlib.suppress(RuntimeError):  # (a loop closed meanwhile: nothing waits on it)
                loop.call_soon_threadsafe(_settle, future)
        if told is not None:
            self._shared.answered(key.provider, held.subject, told, held.sent, said)
        return _finish(token, part, quota, now, learned)

    def _let_go(self, token: str) -> _Held | None:
        """Stop counting the request of lease `token` in flight (None: this process holds no such lease). Called
        with the lock held."""
        held = self._held.pop(token, None)
        if held is not None:
            of_subject = self._held_of[held.subject]
            del of_subject[token]
            if not of_subject:  # (kept only while it holds any: a process's subjects number keys × models)
                del self._held_of[held.subject]
            self._slots.let_go(held.subject, token)
            self._in_flight[held.subject] -= 1
        return held

    def ending(self, token: str | None, quota: QuotaHint | None, now: float, *, learned: bool = False) -> Finish | None:
        """What `finish` will tell the store of the lease `token`, read before it frees this process's slot: the
        store must know what the answer reported before another thread can take the slot (with its gate still
        counting nothing, a thread sent a request no lease held, and a burst of 32 callers on 8 keys whose answers
        report their quota cost 5 429s on a SQLite file)."""
        if token is None:
            return None
        with self._lock:
            held = self._held.get(token)
        return _finish(token, held.part, quota, now, learned) if held is not None else None

    def release(
        self,
        key: ApiKey,
        token: str | None,
        request: RequestRecord | None,
        sent: float,
        now: float,
        kind: OutcomeKind | None = None,
    ) -> None:
        """End the lease with no verdict on the key (abandoned, or a request error: the request's own fault);
        `request` goes to the request log in the same store write. `sent`: when the request left."""
        finish = self.finish(key, token, None, sent, kind)
        if request is not None:
            self._store.log_request(request, finish)
        elif finish is not None:
            self._store.end_lease(key.fingerprint, finish, now)

    def reported(self, provider: str, part: str, quota: QuotaHint | None, sent: float, learned: float | None) -> None:
        """What an answer's count showed of its provider's windows (`SlotEnds.reported`): the requests out whose
        slots it held longer renew their leases in the store as long."""
        with self._lock:
            for token, until in self._slots.reported(provider, part, quota, sent, learned).items():
                self._held[token] = replace(self._held[token], renew_until=max(self._held[token].renew_until, until))

    def _holding(self, subject: str, now: float) -> int:
        """This process's requests of the subject in flight that still hold a slot of its quota (`SlotEnds`)."""
        return self._in_flight[subject] - self._slots.freed(subject, now)

    def others_in_flight(self, key: ApiKey, part: str, sent: float) -> list[float]:
        """When the requests of the key's subject in flight were sent, but the one sent at `sent` (the nearest),
        ascending: every process's, where the store is shared and kept more of them than this process holds (it
        keeps those sent while the quota was unknown: `StateStore.note_sent`, `sends_out`), else this process's."""
        subject = limit_subject(key, part)
        with self._lock:
            sends = sorted(sent for sent, _ in self._out(subject))
        if self._store.SHARED:
            try:
                everyone = self._store.sends_out([m.fingerprint for m in self._account(key)], part, self._clock())
            except StateError as exc:  # the store's own failover has already said so: this process's record holds
                log.debug("could not read the requests out: %s", exc)
            else:
                sends = everyone if len(everyone) >= len(sends) else sends
        if sends:
            sends.remove(min(sends, key=lambda t: abs(t - sent)))
        return sends

    def busy(self) -> bool:
        """Whether this process has requests in flight."""
        with self._lock:
            return bool(self._held)

    def wait_for_end(self, seen: int, timeout: float) -> None:
        """Block until more than `seen` of this process's requests in flight have ended (`ended`), or `timeout`
        seconds have passed."""
        with self._ends:
            self._ends.wait_for(lambda: self.ended > seen, timeout)

    async def await_end(self, seen: int, timeout: float) -> None:
        """`wait_for_end` on an event loop: told by the thread that ends the request, whichever it is."""
        loop = asyncio.get_running_loop()
        waiter = (loop, loop.create_future())
        with self._ends:
            if self.ended > seen:
                return
            self._awaiting.add(waiter)
        try:
            await asyncio.wait({waiter[1]}, timeout=timeout)
        finally:
            with self._ends:
                self._awaiting.discard(waiter)

    def frees_at(self, now: float) -> float | None:
        """When a slot this process holds next frees by the clock alone, before its request ends: a request's slot
        once its window has surely passed (`SlotEnds.until`), a key whose quota is unknown after its spacing (None:
        none does)."""
        with self._lock:
            untils = self._slots.frees(now)
            untils += [u for part in self._saturated.values() for u in part.values() if now < u < math.inf]
        return min(untils, default=None)

    def close(self) -> None:
        """Stop renewing: the leases still held run out `ttl` after their last renewal."""
        self._closing.set()

    def _renew(self) -> None:
        while not self._closing.wait(self.ttl / 3):
            self.renew()

    def renew(self) -> None:
        """Keep this process's leases `ttl` ahead while their requests run (one store write per round, and none
        while nothing is in flight): its thread does every `ttl / 3` seconds; a virtual clock's driver, in its own
        time."""
        now = self._clock()
        held: dict[str, dict[str, float]] = {}
        with self._lock:
            for token, lease in self._held.items():
                gate = self._store.gate(lease.fingerprint, lease.part)
                held.setdefault(gate, {})[token] = min(now + self.ttl, lease.renew_until)
        if not held:
            return
        try:
            self._store.renew_leases(held, now)
        except StateError as exc:  # the store's own failover has already said so; the leases just run out
            log.debug("could not renew leases: %s", exc)

    def _saturate(self, key: ApiKey, subject: str, part: str, now: float) -> None:
        """Mark the subject's keys as at (or below) their in-flight limit, and until when, so `acquire` passes
        over full keys without a store round trip. Called with the lock held."""
        members = [m.fingerprint for m in self._account(key)]
        limit, saturated = self._limits[subject], self._saturated[part]
        until = None
        if self._holding(subject, now) >= limit.allowed:
            if limit.unknown:
                until = self._sent.get(subject, now) + limit.spacing
            else:  # until the first of its slots frees, or a request ends
                until = self._slots.next_free(subject, now)
        out = self._out(subject)
        fits, waits = self._tokens.fits_at(subject, self._sizes[subject], out, now) if out else (now, False)
        if waits and fits > now:  # (none out: `SPENT` rests it)
            until = max(until or fits, fits)  # (or until an answer out says more)
        if until is not None:
            saturated.update(dict.fromkeys(members, until))
        else:
            for member in members:
                saturated.pop(member, None)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _finish(token: str, part: str, quota: QuotaHint | None, now: float, learned: bool) -> Finish:
    """The end of lease `token` for the store, with the quota its answer reported (`now`: when it was sent)."""
    if quota is None or quota.remaining is None:
        return Finish(token, part=part)
    ends = now + (quota.reset_after if quota.reset_after is not None else 60.0)
    if learned:  # worked out now, from this process's own log
        return Finish(token, quota.remaining, ends, part)
    return Finish(token, quota.remaining, ends, part, read_at=now, size=quota.limit)
