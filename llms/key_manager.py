"""Which key to use next, and what an outcome does to a key.

The key manager turns outcomes into cooldowns (the policy) and keeps them in a `StateStore` (the memory).
It knows nothing of HTTP: adapters classify answers, the smart client hands the verdicts here.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from config.api_keys import ApiKey
from config.settings import CooldownSettings
from llms.clock import client_time
from llms.cooldown import SLOT_MARGIN, TRIP_SPREAD, cooldown_policy
from llms.key_status import KeyStatus, daily_totals, key_status
from llms.outcomes import Outcome, OutcomeKind, QuotaHint, Scope, format_duration
from llms.quota import (
    SLOTS_KEPT,
    ConfiguredLimits,
    InFlightLimit,
    Pacing,
    QuotaLeft,
    SlotLog,
    StormRule,
    quota_left,
)
from llms.state import CooldownReason, EventKind, KeyEvent, StateError, StateStore, StoreHealth
from llms.state.base import Document, Finish, HourOfKey, Lease, RequestRecord, group_gate, model_pool

log = logging.getLogger("llms.keys")
_MONTH = 31 * 86400.0
LEASE_TTL = 10.0
"""Seconds an in-flight slot outlives a process that died holding it (at most the request timeout)."""
_PACED_REFRESH = 0.5
"""Seconds between reads of what other processes learned: one read of one document, so often enough that their
answers count toward a window another process learned within a fraction of it."""
_LEARNED_INDEX = "learned"
"""The document that names every `pace/…` and `slots/…` document: what a process reads to learn what the others
learned, one read whatever the number of keys."""
DUE_NOW_REST = 0.25
"""Seconds a key rests after a 429 whose hint says its limit frees now (a reset moment already past when the answer
came: a sliding window's slot freeing as the request arrived). Long enough not to spin, too short to cost quota;
nothing is learned from it: read as no hint, it taught a window of every answer since the last idle gap and rested
the key on the ladder's rungs. A second one within `DUE_NOW_REPEAT` seconds is read as no hint (a provider whose
resets are always past)."""
DUE_NOW_REPEAT = 1.0
DISABLED_BY = "disabled-by"
"""The document naming who disabled each disabled key (by fingerprint): one write per bulk action, one read per
status of a provider with a disabled key."""
NOTE_QUOTA_EVERY = 5.0
"""Seconds between notes of a subject's reported quota in the store, for status pages in any process (a write per
answer would add a store write to every call); a count that reached zero, or grew (a new window), is noted at once."""

_PARKED: Mapping[OutcomeKind, CooldownReason] = {
    kind: CooldownReason(kind.parks_as.value) for kind in OutcomeKind if kind.parks_as is not None
}
"""Outcomes that park a key for the long cooldown (or until the date the provider names), and as what."""


_OK = Outcome(OutcomeKind.OK, 200)


@dataclass(frozen=True, slots=True)
class _Held:
    """This process's lease on a key while its request runs: what it counts toward, and how long it may last."""

    fingerprint: str
    subject: str  # whose in-flight limit it counts toward (a key, or a shared-limit group; per model where counted)
    part: str  # the store gate's part: "" or the model
    renew_until: float  # the latest its lease may be renewed to (the request's deadline)


@dataclass(eq=False)
class KeyLease:
    """One request's hold on a key, from `KeyManager.acquire` until the caller says how it ended — once, by
    `succeeded`, `failed` or `abandoned` — as a `concurrency-limits` limiter's listener: the in-flight slot it
    holds frees with the outcome that moves the key's limits, and only this request's slot."""

    key: ApiKey
    model: str | None
    token: str
    _manager: KeyManager = field(repr=False)
    ended: bool = False

    def succeeded(self, quota: QuotaHint | None = None, request: RequestRecord | None = None) -> None:
        """The key answered; `quota`: what the answer said of the key's quota."""
        if self._end():
            self._manager._record(self.key, _OK, quota, request, self.model, self.token)

    def failed(self, outcome: Outcome, request: RequestRecord | None = None) -> None:
        """The key's answer was a failure: the penalty (or none) the outcome earns."""
        if self._end():
            self._manager._record(self.key, outcome, None, request, self.model, self.token)

    def abandoned(self, request: RequestRecord | None = None) -> None:
        """The caller went away (cancelled, a stream closed early): the key did nothing wrong."""
        if self._end():
            self._manager._abandon(self.key, request, self.token)

    def _end(self) -> bool:
        ended, self.ended = self.ended, True
        return not ended


class KeyManager:
    def __init__(
        self,
        keys: Mapping[str, Sequence[ApiKey]],
        cooldowns: CooldownSettings,
        store: StateStore,
        clock: Callable[[], float] = client_time,
        limits: Mapping[str, ConfiguredLimits] | None = None,
        lease_seconds: float = 660.0,
        lease_ttl: float = LEASE_TTL,
        per_model: Collection[str] = (),
        default_models: Mapping[str, str] | None = None,
    ) -> None:
        """`lease_seconds`: the longest a request may hold its in-flight slot (its deadline). `lease_ttl`: how long
        a slot outlives a process that died holding it. While a request runs, this process renews its lease every
        `lease_ttl / 3` seconds in a shared store (never past `lease_seconds`); a dead process stops renewing.
        `per_model`: providers that count limits per model (`ProviderSpec.limits_per_model`): for them, what is
        learned (windows, in-flight limits) and what a success's quota rests belongs to (key, model).
        `default_models`: each provider's default model, which `statuses` speaks for unless told another."""
        self._cooldowns = cooldowns
        self._store = store
        self._clock = clock
        self._limits = {p: b for p, b in (limits or {}).items() if b.active}
        self._lease_seconds = lease_seconds
        self._lease_ttl = min(lease_ttl, lease_seconds)
        self._leases: dict[str, _Held] = {}  # token → this process's lease on a key, while its request runs
        self._per_model = frozenset(per_model)
        self._default_models = dict(default_models or {})
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._storms = StormRule()
        self.policy = cooldown_policy(cooldowns.policy, cooldowns.rate_limit)
        self._learned: set[str] = set()  # names of the documents that hold what was learned about a subject
        self._paced_read_at = -math.inf
        self._foreign: set[str] = set()
        self._unpaced: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=64))
        self._due_now: dict[str, float] = {}  # when a subject last met a 429 that said its limit frees now
        self._noted: dict[str, tuple[float, int]] = {}  # when a subject's reported quota was last noted, and what
        self._resets: dict[tuple[str, bool], float] = {}  # (subject, per day) → the latest bound on its reset
        self._in_flight: Counter[str] = Counter()  # this process's requests in flight, per subject
        self._inflight_limits: defaultdict[str, InFlightLimit] = defaultdict(InFlightLimit)
        self._saturated: defaultdict[str, set[str]] = defaultdict(set)  # model part → fingerprints at their limit
        self._subjects: set[str] = set()  # every subject this process has sent a request for
        self._answered_at: dict[str, float] = {}  # when this process last had an answer from each provider
        self.ended = 0
        """How many of this process's requests in flight have ended: a waiting caller that sees it move knows a
        slot may have freed since it last looked."""
        self.set_keys(keys)

    def set_keys(self, keys: Mapping[str, Sequence[ApiKey]]) -> None:
        """The keys in rotation, per provider (again at runtime: the rest keep their state in the store).

        A key in the store's ring that this manager does not know (removed here, or added by another process
        sharing the store) is passed over, never handed out."""
        by_provider = {provider: tuple(ks) for provider, ks in keys.items()}
        groups: dict[tuple[str, str], list[ApiKey]] = defaultdict(list)
        for key in (k for ks in by_provider.values() for k in ks):
            if key.group:
                groups[key.provider, key.group].append(key)
        for provider, ks in by_provider.items():
            gates = {k.fingerprint: group_gate(provider, k.group) for k in ks if k.group}
            self._store.register(provider, [k.fingerprint for k in ks], gates)
        self._by_id = {k.key_id: k for ks in by_provider.values() for k in ks}
        self._by_fingerprint = {k.fingerprint: k for k in self._by_id.values()}
        self._groups = groups
        self._keys = by_provider
        self._foreign = set()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def keys(self, provider: str) -> tuple[ApiKey, ...]:
        return self._keys.get(provider, ())

    def acquire(self, provider: str, exclude: Collection[ApiKey] = (), model: str | None = None) -> KeyLease | None:
        """A lease on the next usable key of `provider` in round-robin order (for `model`: not resting for it), or
        None when all are cooling or excluded. The caller must end the lease (`KeyLease`).

        A key that already has as many requests in flight as the provider says it has left is passed over, and
        a request that uses a configured limit's last slot rests the key right after it.
        """
        part = self._part(provider, model)
        with self._lock:
            skip = {k.fingerprint for k in exclude} | self._foreign | self._saturated[part]
        limits = self._limits.get(provider)
        while True:
            now = self._clock()
            lease = Lease(uuid.uuid4().hex, now + self._lease_ttl, part)
            fingerprint = self._store.acquire(provider, now, skip, lease, model)
            if fingerprint is None:
                return None
            skip.add(fingerprint)
            key = self._by_fingerprint.get(fingerprint)
            if key is None:
                self._foreign.add(fingerprint)
                self._store.end_lease(fingerprint, Finish(lease.token, part=part), now)
                continue
            if not self._admit(key, lease.token, now, part):  # another thread took this key's last slot first
                self._store.end_lease(fingerprint, Finish(lease.token, part=part), now)
                continue
            if limits is not None:
                counted, rest = self._store.spend(fingerprint, now, limits.at(now))
                if rest is not None:
                    self.cool(key, rest, CooldownReason.RATE_LIMIT, "configured request limit reached")
                if not counted:  # another process took the last slot first
                    finish = self._finish(key, lease.token, None, now) or Finish(lease.token, part=part)
                    self._store.end_lease(fingerprint, finish, now)
                    continue
            return KeyLease(key, model, lease.token, self)

    def _part(self, provider: str, model: str | None) -> str:
        """The model, where the provider counts limits per model; "" where it counts them per key."""
        return model if model and provider in self._per_model else ""

    def _admit(self, key: ApiKey, token: str, now: float, part: str) -> bool:
        """Count a request in flight on the key if its subject's `InFlightLimit` has room."""
        subject = _subject(key, part)
        with self._lock:
            if self._in_flight[subject] >= self._inflight_limits[subject].allowed:
                return False
            self._in_flight[subject] += 1
            self._subjects.add(subject)
            self._leases[token] = _Held(key.fingerprint, subject, part, now + self._lease_seconds)
            self._saturate(key, subject, part)
            if self._renewer is None and not self._store.IN_MEMORY:
                self._renewer = threading.Thread(target=self._renew_leases, name="llms-leases", daemon=True)
                self._renewer.start()
        return True

    def _renew_leases(self) -> None:
        """Keep this process's leases `lease_ttl` ahead while their requests run (one store write per round, and
        none while nothing is in flight)."""
        while not self._closing.wait(self._lease_ttl / 3):
            now = self._clock()
            held: dict[str, dict[str, float]] = {}
            with self._lock:
                for token, lease in self._leases.items():
                    gate = self._store.gate(lease.fingerprint, lease.part)
                    held.setdefault(gate, {})[token] = min(now + self._lease_ttl, lease.renew_until)
            if not held:
                continue
            try:
                self._store.renew_leases(held, now)
            except StateError as exc:  # the store's own failover has already said so; the leases just run out
                log.debug("could not renew leases: %s", exc)

    def _saturate(self, key: ApiKey, subject: str, part: str) -> None:
        """Mark the subject's keys as at (or below) their in-flight limit, so `acquire` passes over full keys
        without a store round trip. Called with the lock held."""
        members = [m.fingerprint for m in self._account(key)]
        if self._in_flight[subject] >= self._inflight_limits[subject].allowed:
            self._saturated[part].update(members)
        else:
            self._saturated[part].difference_update(members)

    def next_free(self, targets: Iterable[tuple[str, str | None]] | None = None) -> tuple[ApiKey, float] | None:
        """The cooling key that frees up first, with seconds until then: for the (provider, model) `targets`
        (its rests for that model count too), or across all providers."""
        now = self._clock()
        soonest: tuple[ApiKey, float] | None = None
        for provider, model in targets if targets is not None else ((p, None) for p in self._keys):
            found = self._store.next_free(provider, now, model)
            if found and (soonest is None or found[1] - now < soonest[1]):
                soonest = (self._by_fingerprint[found[0]], found[1] - now)
        return soonest

    def busy_until(self, targets: Iterable[tuple[str, str | None]] | None = None) -> tuple[ApiKey, float] | None:
        """A free key whose every in-flight slot is held (by this process or another sharing the store), with
        seconds until its first lease ends — at the latest when a process that died holding it is known dead. For
        the (provider, model) `targets`, or across all providers."""
        now = self._clock()
        soonest: tuple[ApiKey, float] | None = None
        for provider, model in targets if targets is not None else ((p, None) for p in self._keys):
            found = self._store.busy_until(provider, now, self._part(provider, model))
            key = self._by_fingerprint.get(found[0]) if found else None
            if found and key is not None and (soonest is None or found[1] - now < soonest[1]):
                soonest = (key, found[1] - now)
        return soonest

    def record(
        self,
        key: ApiKey,
        outcome: Outcome,
        quota: QuotaHint | None = None,
        request: RequestRecord | None = None,
        model: str | None = None,
    ) -> None:
        """An outcome of a request that held no lease (a probe, an operator's check): what a `KeyLease` ends with,
        for the key alone."""
        self._record(key, outcome, quota, request, model, None)

    def _record(
        self,
        key: ApiKey,
        outcome: Outcome,
        quota: QuotaHint | None,
        request: RequestRecord | None,
        model: str | None,
        token: str | None,
    ) -> None:
        """Apply the penalty (or the absolution) an outcome earns the key that produced it, asked for `model`, and
        end the lease `token` (None: none held); `request` goes to the request log and the history in the same
        store write.

        What the answer says of the key's quota counts from when the request was sent (`request.latency` ago):
        the provider read its limit when the request arrived, so a rest timed from then ends as the provider's
        window does, where one timed from the answer would end a round trip late, every window."""
        now = self._clock()
        sent = now - (request.latency if request is not None else 0.0)
        ok = outcome.kind is OutcomeKind.OK
        part = self._part(key.provider, model)
        if ok:
            self._answered_at[key.provider] = now
            subject = _subject(key, part)
            quota = reported = self._bound_reset(subject, self._sane_quota(quota), sent, now)
            learned = self._learned_about(now)
            if f"pace/{subject}" in learned:
                pacing = self._pace(subject, lambda p: p.succeeded(sent, self.policy))
                if pacing.uncounted is not None and sent > pacing.uncounted[1]:  # after the 429: count it again
                    seen = self._seen(subject, key, part, now, recount=True)
                    pacing = self._pace(subject, lambda p: p.recounted(seen))
                quota = _binding_quota(quota, pacing.quota(sent))
            if f"slots/{subject}" in learned:
                slots = self._slots(subject, lambda log: log.succeeded(sent))
                if slots.uncounted is not None and sent > slots.uncounted[1]:
                    seen = self._seen(subject, key, part, now, recount=True)
                    slots = self._slots(subject, lambda log: log.recounted(seen))
                quota = _binding_quota(quota, slots.quota(sent))
            elif f"pace/{subject}" not in learned:
                self._unpaced[subject].append(sent)  # what a first 429 learns from, should one come
            finish = self._finish(key, token, quota, sent, outcome.kind, learned=quota is not reported)
            self._succeeded(key, quota, now, request, finish, part, sent)
            if reported is not None and reported.remaining is not None:
                self._note_reported(subject, reported, sent, now)
            return
        if outcome.kind is OutcomeKind.REQUEST_ERROR:
            finish = self._finish(key, token, None, sent, outcome.kind)
            if request is not None:
                self._store.log_request(request, finish)
            elif finish is not None:
                self._store.end_lease(key.fingerprint, finish, now)
            return
        # A penalty lands before the request's slot frees: a caller waiting for that slot must find the key (or
        # the provider) resting, not free for the moment between the two (issue 23: callers that waited for a
        # busy key were sent to it right after another caller's 429).
        fp, message = key.fingerprint, outcome.message
        provider_wide = outcome.scope in (Scope.PROVIDER, Scope.UPSTREAM)
        transient = outcome.kind is OutcomeKind.TRANSIENT and not provider_wide
        if provider_wide:
            self.pause_provider(key.provider, outcome, model if outcome.scope is Scope.UPSTREAM else None)
        elif not transient:
            self._penalise(key, outcome, sent, model)
        finish = self._finish(key, token, None, sent, outcome.kind)
        streak = self._store.record_failure(fp, now, message, streak=transient, request=request, finish=finish)
        if transient:
            if streak % self._cooldowns.error_threshold == 0:  # every Nth consecutive error, not every one after
                self.cool(key, self._cooldowns.errors, CooldownReason.ERRORS, f"{streak} consecutive errors")
            else:
                self._event(
                    now, key, EventKind.FAILED, f"{outcome.message} ({streak}/{self._cooldowns.error_threshold})"
                )

    def _penalise(self, key: ApiKey, outcome: Outcome, sent: float, model: str | None) -> None:
        """Rest a rate-limited key (`_rate_limited`), or park one the provider refused (and its account's keys,
        where the refusal is the account's)."""
        only = model if outcome.scope is Scope.MODEL else None  # the key rests for this model only
        if outcome.kind is OutcomeKind.RATE_LIMIT:
            self._rate_limited(key, outcome, sent, only, self._part(key.provider, only))
            return
        reason = _PARKED[outcome.kind]
        seconds = self._sane(outcome.retry_after, scheduled=outcome.scheduled) or self._cooldowns.invalid_key
        for member in self._account(key) if outcome.scope in (Scope.ACCOUNT, Scope.MODEL) else (key,):
            why = outcome.message or reason.value
            self.cool(member, seconds, reason, why if member is key else f"shares an account with {key.key_id}", only)

    def _finish(
        self,
        key: ApiKey,
        token: str | None,
        quota: QuotaHint | None,
        now: float,
        kind: OutcomeKind | None = None,
        *,
        learned: bool = False,
    ) -> Finish | None:
        """The end of this process's lease `token` on the key (None when it holds none: a probe), with the reported
        quota. In the same step the outcome's `kind` moves the subject's in-flight limit: an answer grows it (to
        what the key reports left, if more), a 429 halves it; anything else, or no outcome (abandoned), leaves it."""
        with self._lock:
            held = self._leases.pop(token, None) if token is not None else None
            if held is not None:
                subject, part = held.subject, held.part
                self.ended += 1
                self._in_flight[subject] -= 1
                if kind is OutcomeKind.OK:
                    at_once = quota.remaining if quota is not None and not quota.per_day else None
                    self._inflight_limits[subject].succeeded(at_once, learned=learned)
                elif kind is OutcomeKind.RATE_LIMIT:
                    self._inflight_limits[subject].limited()
                self._saturate(key, subject, part)
        if held is None or token is None:
            return None
        if quota is None or quota.remaining is None:
            return Finish(token, part=part)
        ends = now + (quota.reset_after if quota.reset_after is not None else 60.0)
        return Finish(token, quota.remaining, ends, part)

    def _succeeded(
        self,
        key: ApiKey,
        quota: QuotaHint | None,
        now: float,
        request: RequestRecord | None,
        finish: Finish | None,
        part: str,
        sent: float,
    ) -> None:
        """`sent`: when the request left, which the quota's times count from."""
        ended_streak = self._store.record_success(key.fingerprint, now, request, finish)
        if ended_streak:
            self._event(now, key, EventKind.RECOVERED, f"after {ended_streak} failure(s)")
        if quota is None:
            return
        model = part or None  # what an answer reports of a provider counting per model is that model's quota
        if quota.rest is not None:
            rest, why = quota.rest, "token quota for this minute cannot cover another"
        elif quota.remaining == 0 and quota.reset_after is not None:
            rest, why = quota.reset_after, "quota used up for this window"
        else:
            return
        seconds = self._rest_from(sent, rest, now)
        if seconds > SLOT_MARGIN:  # the quota is the account's: every key of a shared-limit group rests with it
            for member in self._account(key):
                self.cool(member, seconds, CooldownReason.RATE_LIMIT, why, model)

    def pause_provider(self, provider: str, outcome: Outcome, model: str | None = None) -> None:
        """A limit every key of the provider shares (an upstream limit on `model`, a blocked network): rest the
        provider (for that model only, when given), not its keys, so no other key is spent finding out."""
        now = self._clock()
        seconds = self._sane(outcome.retry_after) or self._cooldowns.storm
        reason = CooldownReason.UPSTREAM if outcome.kind is OutcomeKind.RATE_LIMIT else CooldownReason.ERRORS
        self._store.pause(model_pool(provider, model) if model else provider, now + seconds, reason, now)
        what = f"{provider} ({model})" if model else provider
        detail = f"{what} paused for {format_duration(seconds)}: {outcome.message}"
        self._store.add_event(KeyEvent(at=now, key_id=provider, kind=EventKind.COOLED, detail=detail))
        log.info("%s", detail)

    def provider_pause(self, provider: str, model: str | None = None) -> tuple[float, CooldownReason] | None:
        """When and why the whole provider rests (or, with `model`, rests for that model), if it does."""
        now = self._clock()
        names = [provider, *([model_pool(provider, model)] if model else [])]
        found = [p for p in (self._store.paused(name, now) for name in names) if p is not None]
        return max(found, key=lambda p: p[0]) if found else None

    def _account(self, key: ApiKey) -> list[ApiKey]:
        """The key and every key configured in its group (keys of one account share limits and caps)."""
        if not key.group:
            return [key]
        return [key, *(m for m in self._groups.get((key.provider, key.group), ()) if m is not key)]

    def busy(self) -> bool:
        """Whether this process has requests in flight, which may be all that keeps a key from being picked."""
        with self._lock:
            return bool(self._leases)

    def _abandon(self, key: ApiKey, request: RequestRecord | None, token: str) -> None:
        """The caller gave up on a request (cancelled, a stream closed early): it no longer counts as in flight;
        `request` goes to the request log in the same store write."""
        now = self._clock()
        finish = self._finish(key, token, None, now)
        if request is not None:
            self._store.log_request(request, finish)
        elif finish is not None:
            self._store.end_lease(key.fingerprint, finish, now)

    def _rate_limited(self, key: ApiKey, outcome: Outcome, sent: float, model: str | None, part: str) -> None:
        """Cool the key (for `model` only, when given), its whole shared-limit group, and on a storm the
        provider's other keys. A hint counts from when the 429's request was `sent`."""
        now = self._clock()
        subject = _subject(key, part)
        hint = self._sane(outcome.retry_after)  # none for a wait of 0 or less: the policy decides, never a spin
        if hint is None and outcome.retry_after is not None and self._first_due_now(subject, now):
            seconds, source = DUE_NOW_REST, "provider hint: its limit frees now"
        elif hint is not None:
            seconds = max(0.0, self._rest_from(sent, hint, now))
            source = "per-day quota" if outcome.daily_quota else "provider hint"
            if not outcome.daily_quota and self.policy.name == "adaptive":  # learn the window, to keep inside it
                seen = self._seen(subject, key, part, now)
                self._slots(subject, lambda log: log.limited(sent, hint, seen))
                self._store.probe_next(key.fingerprint, part)  # resume with one request: its answer says how many
        else:
            if self._resting_until(key, model, now) > now:
                return  # a concurrent request already earned this 429's rest: don't climb the ladder twice
            seen = self._seen(subject, key, part, now, recount=True)
            pacing = self._pace(subject, lambda p: p.limited(sent, self.policy, seen))
            self._store.probe_next(key.fingerprint, part)
            backoff = pacing.backoff
            seconds = max(0.0, self._rest_from(pacing.closed_until, 0.0, now))
            if self.policy.name == "fixed":  # the original rule, exactly: the hour from the 429
                seconds = backoff.rest or self._cooldowns.rate_limit
            if backoff.step or backoff.learned is None:
                source = f"no hint; {self.policy.name} policy, step {backoff.step}"
            else:
                source = f"no hint; back to the {backoff.learned:.3g} s window that works"
        self.cool(key, seconds, CooldownReason.RATE_LIMIT, source, model)
        for member in self._account(key)[1:]:
            self.cool(member, seconds, CooldownReason.RATE_LIMIT, f"shares a limit with {key.key_id}", model)
        provider_keys = self._keys.get(key.provider, ())
        if not self._storms.applies(len(provider_keys)):
            return
        seen = self._store.change(
            f"storm/{key.provider}",
            lambda seen: self._storms.observe(seen, key.fingerprint, seconds, now, len(provider_keys)),
        )
        if seen["storm"] is None or self._answered_at.get(key.provider, -math.inf) > seen.get("since", now):
            return  # no storm, or keys of this provider still answered after it began: their limits are their own
        rest = min(seen["storm"], self._cooldowns.storm)
        for other in provider_keys:
            if self._resting_until(other, model, now) < now + rest:
                why = f"{key.provider} answered 429 on most keys at once"
                self.cool(other, rest, CooldownReason.RATE_LIMIT, why, model)

    def _bound_reset(self, subject: str, quota: QuotaHint | None, sent: float, now: float) -> QuotaHint | None:
        """The quota with its reset counted from the latest bound any answer of the same window gave.

        The provider read each answer's reset when the request arrived, some time after it was `sent`, so each
        answer says the window resets no earlier than `sent + reset_after`; how much later is that request's own
        trip out. Trips vary (a burst queues at the provider's door; a quiet request goes straight in) while the
        request that resumes the key makes a quick one, so the rest follows the latest bound of the window's
        answers — the one whose trip out was shortest — and not whichever answer happened to say 0 left. Bounds
        further apart than trips differ (`TRIP_SPREAD`) are different resets, and the latest answer's stands."""
        if quota is None or quota.reset_after is None:
            return quota
        bound = sent + quota.reset_after
        with self._lock:
            known = self._resets.get((subject, quota.per_day), -math.inf)
            if now < known and 0 < known - bound <= TRIP_SPREAD:  # the same reset, bounded later by another answer
                return replace(quota, reset_after=known - sent)
            self._resets[(subject, quota.per_day)] = bound
        return quota

    def _note_reported(self, subject: str, quota: QuotaHint, sent: float, now: float) -> None:
        """Keep the quota an answer reported where every process's status page reads it (`reported/…`), at most
        every `NOTE_QUOTA_EVERY` seconds per subject, and at once when it reached zero or grew."""
        remaining = quota.remaining or 0
        last = self._noted.get(subject)
        if last is not None and now - last[0] < NOTE_QUOTA_EVERY and 0 < remaining <= last[1]:
            return
        self._noted[subject] = (now, remaining)
        until = sent + (quota.reset_after if quota.reset_after is not None else 60.0)  # the gate's default too
        document = {"remaining": remaining, "until": until, "per_day": quota.per_day, "at": now}
        self._store.change(f"reported/{subject}", lambda _: document)

    def _first_due_now(self, subject: str, now: float) -> bool:
        """Whether a 429 saying the subject's limit frees now is the first in `DUE_NOW_REPEAT` seconds."""
        first = now - self._due_now.get(subject, -math.inf) >= DUE_NOW_REPEAT
        self._due_now[subject] = now
        return first

    def _seen(self, subject: str, key: ApiKey, part: str, now: float, *, recount: bool = False) -> tuple[float, ...]:
        """When the subject's answers were sent, for a first 429 to learn its window from: where the store is
        shared, every process's (its request log), else this process's own. One process of four sees a quarter of
        the window, and a window learned that small is never corrected: the key stops before the real one fills.
        Read once per subject, at the 429 that teaches it, or, `recount`, at every hint-less one and at the first
        answer after a window was taught: another process writes its answers to the learned window only once it
        has read that the window exists, and its answers of the window may not be written yet when the 429 comes."""
        mine = tuple(self._unpaced.pop(subject, ()))
        learned = self._learned_about(now)
        if not self._store.SHARED:
            return mine
        if not recount and (f"slots/{subject}" in learned or f"pace/{subject}" in learned):
            return mine
        members = {m.fingerprint for m in self._account(key)}
        theirs = [
            r.at - r.latency
            for r in self._store.request_log(self._store.log_size)
            if r.key in members and r.outcome == OutcomeKind.OK.value and (not part or r.model == part)
        ]
        # The log holds this process's answers too (their times read a moment apart from `mine`: not merged).
        return tuple(sorted(theirs))[-SLOTS_KEPT:] if len(theirs) >= len(mine) else mine

    @staticmethod
    def _rest_from(sent: float, wait: float, now: float) -> float:
        """Seconds from `now` until a wait counted from a request's start (`sent`) is over, and the margin."""
        return sent + wait + SLOT_MARGIN - now

    def _resting_until(self, key: ApiKey, model: str | None, now: float) -> float:
        """When the key's own rest (for `model`: its rest for that model) ends."""
        if model is None:
            return self._store.records([key.fingerprint])[0].cooldown_until
        return self._store.model_rests([key.fingerprint], now)[0].get(model, (0.0,))[0]

    def _pace(self, subject: str, change: Callable[[Pacing], Pacing]) -> Pacing:
        self._index(f"pace/{subject}")
        return Pacing.of(self._store.change(f"pace/{subject}", lambda d: change(Pacing.of(d)).document()))

    def _slots(self, subject: str, change: Callable[[SlotLog], SlotLog]) -> SlotLog:
        self._index(f"slots/{subject}")
        return SlotLog.of(self._store.change(f"slots/{subject}", lambda d: change(SlotLog.of(d)).document()))

    def _index(self, name: str) -> None:
        """Name a document of what was learned in the store's index, once per process."""
        with self._lock:
            new = name not in self._learned
            self._learned.add(name)
        if new:
            self._store.change(_LEARNED_INDEX, _indexing([name]))

    def _learned_about(self, now: float) -> set[str]:
        """The documents holding what was learned about subjects' hidden limits, whose successes must be counted.

        Only subjects that met a 429 have one, and only they cost a store write per success. What other
        processes sharing the store learned is read every `_PACED_REFRESH` seconds, from the index of them (one
        read: reading every key's documents cost 30,000 keys 3 µs a call). A store from before the index is
        searched once, and the index written."""
        if now - self._paced_read_at >= _PACED_REFRESH:
            self._paced_read_at = now
            names = self._store.documents([_LEARNED_INDEX])[0].get("names")
            if names is None:
                with self._lock:
                    subjects = sorted({_subject(k, "") for k in self._by_id.values()} | self._subjects)
                candidates = [f"{kind}/{s}" for s in subjects for kind in ("pace", "slots")]
                documents = self._store.documents(candidates)
                names = [name for name, d in zip(candidates, documents, strict=True) if d]
                self._store.change(_LEARNED_INDEX, _indexing(names))  # written even when empty: searched once
            with self._lock:
                self._learned |= set(names)
        return self._learned

    def _sane(self, seconds: float | None, *, scheduled: bool = False) -> float | None:
        """A provider's hint as a rest: none when it is not a finite wait into the future (the policy decides),
        and never longer than `LLM_MAX_COOLDOWN` (a calendar reset: never longer than 31 days)."""
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            return None
        return min(seconds, _MONTH if scheduled else self._cooldowns.maximum)

    def _sane_quota(self, quota: QuotaHint | None) -> QuotaHint | None:
        if quota is None:
            return None
        remaining = quota.remaining if quota.remaining is None or quota.remaining >= 0 else 0
        return replace(
            quota, remaining=remaining, reset_after=self._sane(quota.reset_after), rest=self._sane(quota.rest)
        )

    def cool(
        self, key: ApiKey, seconds: float, reason: CooldownReason, why: str = "", model: str | None = None
    ) -> None:
        """Rest the key for `seconds` (only for `model`, when given: it keeps answering other models)."""
        now = self._clock()
        seconds = min(max(0.0, seconds), _MONTH) if math.isfinite(seconds) else self._cooldowns.maximum
        if model is None:
            self._store.cool(key.fingerprint, now + seconds, reason, now)
        else:
            self._store.cool_model(key.fingerprint, model, now + seconds, reason, now)
        what = f"{reason.value} on {model}" if model else reason.value
        detail = f"{what} for {format_duration(seconds)}" + (f" ({why})" if why else "")
        self._event(now, key, EventKind.COOLED, detail)
        log.info("cooling %s: %s", key.label, detail)

    def parked_for(self, key: ApiKey) -> str | None:
        """Why the key is in a cooldown now (a `CooldownReason` value), None when it is not."""
        record = self._store.records([key.fingerprint])[0]
        return record.reason.value if record.reason is not None and record.cooldown_until > self._clock() else None

    def probe_passed(
        self,
        key: ApiKey,
        vouches_for: Collection[OutcomeKind],
        revives_credit: Callable[[str], bool] | None = None,
    ) -> bool:
        """A cheap real call just worked: a key parked for a reason that call disproves comes back now.

        `vouches_for` comes from the provider's spec: a call that spends no tokens says nothing about a rate
        limit, and on most providers nothing about credit either, so such keys stay put. `revives_credit`: which
        no-credit parkings (by the message that parked the key) the call can disprove (None: all).
        """
        now = self._clock()
        record = self._store.records([key.fingerprint])[0]
        revivable = {_PARKED[kind] for kind in vouches_for if kind in _PARKED}
        if record.cooldown_until <= now or record.reason not in revivable:
            return False
        credit = record.reason is CooldownReason.NO_CREDITS
        if credit and revives_credit is not None and not revives_credit(record.last_error or ""):
            return False
        self._store.reset([key.fingerprint])
        self._event(now, key, EventKind.RECOVERED, f"probe passed after {record.reason.value}")
        return True

    def note_daily_requests(self, key: ApiKey, quota: QuotaHint) -> None:
        """Keep what a probe read of the key's account's requests left today (for the status page), until the
        day ends."""
        now = self._clock()
        until = now + (quota.reset_after or 0.0)
        document = {"remaining": quota.remaining, "limit": quota.limit, "until": until, "at": now}
        self._store.change(f"daily/{_subject(key, '')}", lambda _: document)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool, by: str | None = None) -> None:
        """Take keys out of rotation by hand (or put them back), in the store: every process sharing it obeys.
        `by`: who did it, for the event (a dashboard's logged-in operator); else "by an operator"."""
        keys = [self.key(key_id) for key_id in key_ids]
        who, fingerprints = by or "an operator", [k.fingerprint for k in keys]
        changed = set(fingerprints)

        def named(document: Document) -> Document:  # who disabled which key, for the status and the alert
            names = {k: v for k, v in document.items() if k not in changed}
            return names | (dict.fromkeys(fingerprints, who) if disabled else {})

        self._store.change(DISABLED_BY, named)
        self._store.set_disabled(fingerprints, disabled)
        now = self._clock()
        for key in keys:
            self._event(now, key, EventKind.DISABLED if disabled else EventKind.ENABLED, f"by {who}")

    def key(self, key_id: str) -> ApiKey:
        key = self._by_id.get(key_id)
        if key is None:
            known = ", ".join(list(self._by_id)[:5]) + (", …" if len(self._by_id) > 5 else "")
            raise KeyError(f"unknown key id {key_id!r}; known: {known or 'none'}")
        return key

    def reset_key(self, *key_ids: str, by: str | None = None) -> None:
        self._reset([self.key(key_id) for key_id in key_ids], by)

    def resume_provider(self, provider: str) -> None:
        """Lift a provider-wide pause, leaving its keys as they are."""
        if provider not in self._keys:
            raise KeyError(f"unknown provider {provider!r}; known: {', '.join(self._keys)}")
        self._store.pause(provider, 0.0, CooldownReason.MANUAL, self._clock())

    def reset_provider(self, provider: str, by: str | None = None) -> None:
        self.resume_provider(provider)
        self._reset(self._keys[provider], by)

    def reset_all(self, by: str | None = None) -> None:
        for provider in self._keys:
            self._store.pause(provider, 0.0, CooldownReason.MANUAL, self._clock())
        self._reset(self._by_id.values(), by)

    def _reset(self, keys: Iterable[ApiKey], by: str | None = None) -> None:
        keys = list(keys)
        now = self._clock()
        records = self._store.records([k.fingerprint for k in keys])
        self._store.reset(k.fingerprint for k in keys)
        for key, record in zip(keys, records, strict=True):
            if record.cooldown_until > now or record.consecutive_failures:
                self._event(now, key, EventKind.RESET, f"manual reset by {by}" if by else "manual reset")

    def statuses(self, provider: str, model: str | None = None) -> list[KeyStatus]:
        """Every key of the provider; `available` and the reason speak for `model` (default: the provider's
        default model, the one `auto` asks for): a key resting for it is not available, whatever other models it
        still answers."""
        return self.provider_state(provider, model)[0]

    def provider_state(self, provider: str, model: str | None = None) -> tuple[list[KeyStatus], dict[str, int] | None]:
        """`statuses` and the provider's daily totals from one read of the documents both need (a status page
        refreshing every 2 s over 1,000 keys read each account's day twice, and each key's window twice)."""
        default_model = model or self._default_models.get(provider)
        keys = self._keys.get(provider, ())
        now = self._clock()
        part = self._part(provider, default_model)
        fingerprints = [k.fingerprint for k in keys]
        records = self._store.records(fingerprints)
        rests = self._store.model_rests(fingerprints, now)
        learned = self._learned_about(now)
        subjects = [_subject(k, part) for k in keys]
        accounts = [_subject(k, "") for k in keys]
        names = list(
            dict.fromkeys(
                [
                    *(f"reported/{s}" for s in subjects),
                    *(f"daily/{a}" for a in accounts),
                    *(f"pace/{a}" for a in accounts),
                    *(f"{kind}/{s}" for s in subjects for kind in ("pace", "slots") if f"{kind}/{s}" in learned),
                    *([DISABLED_BY] if any(r.disabled for r in records) else []),
                ]
            )
        )
        found = dict(zip(names, self._store.documents(names), strict=True))
        quotas = self._quotas(provider, keys, subjects, found, now)
        disabled_by = found.get(DISABLED_BY, {})
        statuses = [
            key_status(key, record, Pacing.of(found[f"pace/{account}"]), now, rest, default_model, quota,
                    disabled_by.get(key.fingerprint))
            for key, account, record, rest, quota in zip(keys, accounts, records, rests, quotas, strict=True)
        ]  # fmt: skip
        return statuses, daily_totals([found[f"daily/{a}"] for a in dict.fromkeys(accounts)], now)

    def _quotas(
        self, provider: str, keys: Sequence[ApiKey], subjects: Sequence[str], found: Mapping[str, Document], now: float
    ) -> list[QuotaLeft]:
        """What each key has left (`QuotaLeft`), from the documents that say it (`found`, read once): the quota its
        answers reported, a probe's reading of its account's day, and the windows learned from 429s."""
        configured = self._configured_today(provider, keys, now)
        quotas = []
        for key, subject in zip(keys, subjects, strict=True):
            windows = [
                Pacing.of(found[f"pace/{subject}"]).quota(now) if f"pace/{subject}" in found else None,
                SlotLog.of(found[f"slots/{subject}"]).quota(now) if f"slots/{subject}" in found else None,
            ]
            tightest = min((w for w in windows if w is not None), key=lambda w: w.remaining or 0, default=None)
            reported, probed = found[f"reported/{subject}"], found[f"daily/{_subject(key, '')}"]
            quotas.append(quota_left(now, reported, probed, tightest, configured.get(key.fingerprint)))
        return quotas

    def _configured_today(self, provider: str, keys: Sequence[ApiKey], now: float) -> dict[str, tuple[int, float]]:
        """Per key, requests left today of a configured daily limit (`<PROVIDER>_REQUESTS_PER_DAY`) and seconds
        until the provider's day ends: the limit less the requests the history counts since the day began."""
        limits = self._limits.get(provider)
        if limits is None or not limits.per_day:
            return {}
        ends_in = limits.day_ends_in(now)
        began = now + ends_in - 86400.0
        used: Counter[str] = Counter()
        for hour in self._store.history(began):
            if hour.provider == provider and hour.hour >= began - 1.0:
                used[hour.key] += hour.requests
        return {k.fingerprint: (max(0, limits.per_day - used[k.fingerprint]), ends_in) for k in keys}

    def events(self, limit: int = 100) -> list[KeyEvent]:
        return self._store.events(limit)

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        return self._store.request_log(limit)

    def history(self, since: float) -> list[HourOfKey]:
        return self._store.history(since)

    def document(self, name: str) -> Document:
        return self._store.documents([name])[0]

    def change_document(self, name: str, change: Callable[[Document], Document]) -> Document:
        return self._store.change(name, change)

    def store_health(self) -> StoreHealth:
        return self._store.health()

    def close(self) -> None:
        self._closing.set()
        self._store.close()

    def note(self, key: ApiKey, kind: EventKind, detail: str) -> None:
        """An event about the key that changes nothing of its state (a person's check, the key joining or leaving
        the configuration)."""
        self._event(self._clock(), key, kind, detail)

    def _event(self, now: float, key: ApiKey, kind: EventKind, detail: str) -> None:
        self._store.add_event(KeyEvent(at=now, key_id=key.key_id, kind=kind, detail=detail))


def _indexing(names: Iterable[str]) -> Callable[[Document], Document]:
    """The change that adds `names` to the index of learned documents (`_LEARNED_INDEX`)."""
    return lambda index: {"names": sorted({*(index.get("names") or ()), *names})}


def _binding_quota(reported: QuotaHint | None, learned: QuotaHint | None) -> QuotaHint | None:
    """What an answer reported of the key's quota, unless that is a count of the day with requests left: then the
    window learned from 429s (a minute's limit the provider does not report) is what paces the key."""
    if reported is None or (reported.per_day and reported.remaining and learned is not None):
        return learned or reported
    return reported


def _subject(key: ApiKey, part: str) -> str:
    """What a limit is learned for: the shared-limit group when the key has one, else the key; and the model
    (`part`) where the provider counts limits per model."""
    base = f"{key.provider}/{key.group}" if key.group else key.fingerprint
    return f"{base}|{part}" if part else base
