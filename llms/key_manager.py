"""Which key to use next, and what an outcome does to a key.

The key manager turns outcomes into cooldowns (the policy) and keeps them in a `StateStore` (the memory); beside it
live this process's leases (`llms.leases`; a caller holds a `llms.key_lease.KeyLease`), what 429s taught
(`llms.learned_limits`), the status page's read of a provider (`llms.provider_state`) and what operators and probes
change (`llms.operator_actions`). It knows nothing of HTTP: the smart client hands it the adapters' verdicts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from config.api_keys import ApiKey
from config.settings import CooldownSettings
from llms.clock import client_time
from llms.cooldown import SLOT_MARGIN, cooldown_policy
from llms.key_lease import InFlight, KeyLease
from llms.key_states import KeyState
from llms.key_status import KeyStatus
from llms.learned_limits import DUE_NOW_REST, LearnedLimits
from llms.leases import LEASE_TTL, Admission, Leases
from llms.operator_actions import OperatorActions
from llms.outcomes import Outcome, OutcomeKind, QuotaHint, Scope, format_duration
from llms.provider_state import read_provider_state
from llms.quota import ConfiguredLimits, StormRule, limit_subject
from llms.state import EventKind, KeyEvent, StateStore, StoreHealth
from llms.state.base import Document, Finish, HourOfKey, RequestRecord, group_gate, model_pool

log = logging.getLogger("llms.keys")
Targets = Iterable[tuple[str, str | None]]  # (provider, model) pairs: a route's
Soonest = tuple[ApiKey, float] | None  # a key, and seconds until it frees
_MONTH = 31 * 86400.0
_PARKED: Mapping[OutcomeKind, KeyState] = {kind: kind.parks_as for kind in OutcomeKind if kind.parks_as is not None}
"""Outcomes that park a key for the long cooldown (or until the date the provider names), and as what."""


class KeyManager:
    """The keys in rotation and what outcomes cost them, over a `StateStore` every process sharing it obeys."""

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
        """`lease_seconds`: the longest a request may hold its in-flight slot (its deadline); `lease_ttl`: how long
        a slot outlives a process that died holding it (`Leases` renews it while the request runs). `per_model`:
        providers that count limits per model (`ProviderSpec.limits_per_model`): for them, what is learned
        (windows, in-flight limits) and what a success's quota rests belongs to (key, model). `default_models`:
        each provider's default model, which `statuses` speaks for unless told another."""
        self._cooldowns = cooldowns
        self._store = store
        self._clock = clock
        self._limits = {p: b for p, b in (limits or {}).items() if b.active}
        self._per_model = frozenset(per_model)
        self._default_models = dict(default_models or {})
        self._lock = threading.Lock()  # one for `_leases` and `_learned`: the latter reads subjects the former saw
        self._storms = StormRule()
        self.policy = cooldown_policy(cooldowns.policy, cooldowns.rate_limit)
        self._answered_at: dict[str, float] = {}  # when this process last had an answer from each provider
        self._leases = Leases(store, clock, self._lock, self._account, lease_seconds, lease_ttl)
        self._learned = LearnedLimits(store, self._lock, self._account, self._known_subjects)
        self._actions = OperatorActions(store, clock)
        self.set_keys(keys)

    def set_keys(self, keys: Mapping[str, Sequence[ApiKey]]) -> None:
        """The keys in rotation, per provider, again at runtime (the rest keep their state in the store); a key in
        the store's ring this manager does not know (removed here, or another process's) is passed over."""
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
        self._foreign: set[str] = set()

    @property
    def in_flight(self) -> InFlight:
        """This process's requests in flight, as a caller waiting for a slot sees them: one frees as one ends."""
        return self._leases

    def _known_subjects(self) -> set[str]:
        """Every account this process knows and every subject it sent a request for. Called with the lock held."""
        return {limit_subject(k, "") for k in self._by_id.values()} | self._leases.subjects

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def keys(self, provider: str) -> tuple[ApiKey, ...]:
        return self._keys.get(provider, ())

    def acquire(
        self, provider: str, exclude: Collection[ApiKey] = (), model: str | None = None, tokens: int = 0
    ) -> KeyLease | None:
        """A lease on the next usable key of `provider` in round-robin order (for `model`: not resting for it), or
        None when all are cooling or excluded. The caller must end the lease (`KeyLease`). A key with as many
        requests in flight as it has left is passed over, as is one whose tokens left cannot pay for `tokens`
        (`ChatRequest.tokens`: rested till they can, if no answer out will say more); a configured limit's last
        slot rests the key after it."""
        part = self._part(provider, model)
        now = self._clock()
        self._learned.refresh(now)
        with self._lock:
            skip = {k.fingerprint for k in exclude} | self._foreign | self._leases.saturated(part, now)
        limits = self._limits.get(provider)
        while True:
            now, seen = self._clock(), self._leases.counts_told
            lease = self._leases.lease(now, provider, part)
            fingerprint = self._store.acquire(provider, now, skip, lease, model)
            if fingerprint is None:
                return None
            skip.add(fingerprint)
            key = self._by_fingerprint.get(fingerprint)
            if key is None:  # another configuration's
                self._foreign.add(fingerprint)
            admission = self._leases.admit(key, lease, now, seen, tokens) if key is not None else Admission.FULL
            if admission is not Admission.ADMITTED:  # its last slot went first, or its count came since: look again
                self._store.end_lease(fingerprint, Finish(lease.token, part=part), now)
                if admission is Admission.STALE:
                    skip.discard(fingerprint)
                elif admission is Admission.SPENT and key and (back := self._leases.tokens_back(key, part, tokens)):
                    why = f"token quota for this minute cannot cover a request of {tokens} tokens"
                    self._rest_longer(self._account(key), back - now, why, part or None, now)
                continue
            if limits is not None:
                counted, rest = self._store.spend(fingerprint, now, limits.at(now))
                if rest is not None:
                    self.cool(key, rest, KeyState.RATE_LIMIT, "configured request limit reached")
                if not counted:  # another process took the last slot first
                    finish = self._leases.finish(key, lease.token, None, now) or Finish(lease.token, part=part)
                    self._store.end_lease(fingerprint, finish, now)
                    continue
            return KeyLease(key, model, lease.token, self)

    def _part(self, provider: str, model: str | None) -> str:
        """The model, where the provider counts limits per model; "" where it counts them per key."""
        return model if model and provider in self._per_model else ""

    def next_free(self, targets: Targets | None = None) -> Soonest:
        """The cooling key that frees up first, with seconds until then: for the (provider, model) `targets`
        (its rests for that model count too), or across all providers."""
        return self._soonest(targets, lambda provider, model, now: self._store.next_free(provider, now, model))

    def next_change(self, targets: Targets) -> float | None:
        """Seconds until a key of the (provider, model) `targets` may take a request by the clock alone, with no
        request ending: a rest ends, a lease runs out, a slot held past its window frees, a learned window frees a
        slot (None: nothing is due)."""
        targets, now = list(targets), self._clock()
        soonest = [found[1] for found in (self.next_free(targets), self.busy_until(targets)) if found is not None]
        soonest += [at - now for at in (self._leases.frees_at(now), self._learned.grows_at) if at is not None]
        return max(0.0, min(soonest)) if soonest and min(soonest) < math.inf else None

    def busy_until(self, targets: Targets | None = None) -> Soonest:
        """A free key whose every in-flight slot is held (by this process or another sharing the store), with
        seconds until one frees — at the latest when a process that died holding it is known dead. For the
        (provider, model) `targets`, or across all providers."""
        return self._soonest(targets, lambda p, model, now: self._leases.busy_until(p, self._part(p, model), now))

    def _soonest(self, targets: Targets | None, find: Callable[..., tuple[str, float] | None]) -> Soonest:
        """The key `find` (a store's lookup for a provider and model) names soonest, with seconds until then."""
        now = self._clock()
        soonest: tuple[ApiKey, float] | None = None
        for provider, model in targets if targets is not None else ((p, None) for p in self._keys):
            found = find(provider, model, now)
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
        """An outcome of a request that held no lease (a probe, an operator's check), for the key alone."""
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
        end the lease `token` (None: none held); `request` goes to the request log and history in one store write.

        What the answer says of the key's quota counts from when the request was sent (`request.latency` ago):
        the provider read its limit when the request arrived, so a rest timed from then ends as the provider's
        window does, where one timed from the answer would end a round trip late, every window."""
        now = self._clock()
        sent = now - (request.latency if request is not None else 0.0)
        ok = outcome.kind is OutcomeKind.OK
        part = self._part(key.provider, model)
        if ok:
            self._answered_at[key.provider] = now
            subject = limit_subject(key, part)
            quota = reported = self._learned.bound_reset(subject, self._sane_quota(quota), sent, now)
            quota = self._learned.counted(subject, key, part, quota, sent, now, self.policy)
            self._leases.reported(key.provider, part, reported, sent, self._learned.length_of(subject))
            self._rest_for(key, quota, part, sent, now)  # before the slot frees, as a penalty (below)
            learned, trip = quota is not reported, request.latency if request is not None else math.inf
            finish = self._leases.ending(token, quota, sent, learned=learned)  # told the store before the slot frees
            try:
                ended_streak = self._store.record_success(key.fingerprint, now, request, finish)
            finally:
                self._leases.finish(key, token, quota, sent, outcome.kind, learned=learned, trip=trip)
            if ended_streak:
                self._event(now, key, EventKind.RECOVERED, f"after {ended_streak} failure(s)")
            if reported is not None and (reported.remaining is not None or reported.tokens is not None):
                self._learned.note_reported(subject, reported, sent, now)
            return
        if outcome.kind is OutcomeKind.REQUEST_ERROR:
            self._leases.release(key, token, request, sent, now, outcome.kind)
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
            self._penalise(key, outcome, sent, model, token)
        finish = self._leases.finish(key, token, None, sent, outcome.kind)
        streak = self._store.record_failure(fp, now, message, streak=transient, request=request, finish=finish)
        if transient:
            if streak % self._cooldowns.error_threshold == 0:  # every Nth consecutive error, not every one after
                self.cool(key, self._cooldowns.errors, KeyState.ERRORS, f"{streak} consecutive errors")
            else:
                of = f"{streak}/{self._cooldowns.error_threshold}"
                self._event(now, key, EventKind.FAILED, f"{outcome.message} ({of})")

    def _penalise(self, key: ApiKey, outcome: Outcome, sent: float, model: str | None, token: str | None) -> None:
        """Rest a rate-limited key (`_rate_limited`), or park one the provider refused (and its account's keys,
        where the refusal is the account's). `token`: the lease its request held."""
        only = model if outcome.scope is Scope.MODEL else None  # the key rests for this model only
        if outcome.kind is OutcomeKind.RATE_LIMIT:
            self._rate_limited(key, outcome, sent, only, token)
            return
        reason = _PARKED[outcome.kind]
        seconds = self._sane(outcome.retry_after, scheduled=outcome.scheduled) or self._cooldowns.invalid_key
        for member in self._account(key) if outcome.scope in (Scope.ACCOUNT, Scope.MODEL) else (key,):
            why = outcome.message or reason.value
            self.cool(member, seconds, reason, why if member is key else f"shares an account with {key.key_id}", only)

    def _rest_for(self, key: ApiKey, quota: QuotaHint | None, part: str, sent: float, now: float) -> None:
        """Rest the key for an answer's quota (counted from `sent`, when the request left), before the request's
        slot frees, as a penalty does: between the two, a caller waiting for that slot found the key neither busy
        nor resting, and was sent to it (a 429) or gave up ("All API keys exhausted … frees up in 0.7 s")."""
        if quota is not None and quota.remaining == 0 and quota.reset_after is not None:
            seconds = self._rest_from(sent, quota.reset_after, now)
            self._rest_longer(self._account(key), seconds, "quota used up for this window", part or None, now)

    def _rest_longer(self, keys: Iterable[ApiKey], seconds: float, why: str, model: str | None, now: float) -> None:
        """Rest the keys (for `model`, where their provider counts per model) for a quota fact, each unless it rests
        longer already: answers sent together come back in any order, the provider's first read (more left) last
        (a clock window of 2 a 30 s read as a sliding log resumed its key 0.09 s early: 13 429s)."""
        for key in keys if seconds > SLOT_MARGIN else ():
            if now + seconds > self._resting_until(key, model, now):
                self.cool(key, seconds, KeyState.RATE_LIMIT, why, model)

    def pause_provider(self, provider: str, outcome: Outcome, model: str | None = None) -> None:
        """A limit every key of the provider shares (an upstream limit on `model`, a blocked network): rest the
        provider (for that model only, when given), not its keys, so no other key is spent finding out."""
        now = self._clock()
        seconds = self._sane(outcome.retry_after) or self._cooldowns.storm
        reason = KeyState.UPSTREAM if outcome.kind is OutcomeKind.RATE_LIMIT else KeyState.ERRORS
        self._store.pause(model_pool(provider, model) if model else provider, now + seconds, reason, now)
        what = f"{provider} ({model})" if model else provider
        detail = f"{what} paused for {format_duration(seconds)}: {outcome.message}"
        self._store.add_event(KeyEvent(at=now, key_id=provider, kind=EventKind.COOLED, detail=detail))
        log.info("%s", detail)

    def provider_pause(self, provider: str, model: str | None = None) -> tuple[float, str] | None:
        """When and why (a `KeyState` value, as stored) the whole provider (with `model`: for that model) rests."""
        now = self._clock()
        names = [provider, *([model_pool(provider, model)] if model else [])]
        found = [p for p in (self._store.paused(name, now) for name in names) if p is not None]
        return max(found, key=lambda p: p[0]) if found else None

    def _account(self, key: ApiKey) -> list[ApiKey]:
        """The key and every key configured in its group (keys of one account share limits and caps)."""
        if not key.group:
            return [key]
        return [key, *(m for m in self._groups.get((key.provider, key.group), ()) if m is not key)]

    def renew_leases(self) -> None:
        self._leases.renew()  # a thread does so by itself; a virtual clock's driver calls this in its own time

    def _abandon(self, key: ApiKey, request: RequestRecord | None, token: str) -> None:
        """The caller gave up on a request (cancelled, a stream closed early): it no longer counts as in flight;
        `request` goes to the request log in the same store write."""
        now = self._clock()
        self._leases.release(key, token, request, now, now)

    def _rate_limited(self, key: ApiKey, outcome: Outcome, sent: float, model: str | None, token: str | None) -> None:
        """Cool the key (for `model` only, when given), its shared-limit group, and on a storm the provider's other
        keys. A hint counts from when the 429's request was `sent`. A limit on tokens is learned by its rate
        (`Leases.refused_tokens`): once sure, it says when a request fits better than a whole-second hint."""
        now, part = self._clock(), self._part(key.provider, model)
        subject = limit_subject(key, part)
        hint = self._sane(outcome.retry_after)  # none for a wait of 0 or less: the policy decides, never a spin
        on_tokens = outcome.on_tokens and not outcome.daily_quota and self.policy.name == "adaptive"
        if on_tokens and (back := self._leases.refused_tokens(key, part, token, sent, now)) is not None:
            seconds = max(0.0, min(back - now, self._rest_from(sent, hint, now) if hint else math.inf))
            source = "token quota: its rate says when the request fits"
        elif hint is None and outcome.retry_after is not None and self._learned.first_due_now(subject, now):
            seconds, source = DUE_NOW_REST, "provider hint: its limit frees now"
        elif hint is not None:
            seconds = max(0.0, self._rest_from(sent, hint, now))
            source = "per-day quota" if outcome.daily_quota else "provider hint"
            if not outcome.daily_quota and not on_tokens and self.policy.name == "adaptive":  # learn its window
                out = self._leases.others_in_flight(key, part, sent)
                self._learned.hinted(subject, key, part, sent, hint, now, out, outcome.grid, self._keys[key.provider])
                self._store.probe_next(key.fingerprint, part)  # resume with one request: its answer says how many
        else:
            if self._resting_until(key, model, now) > now:
                return  # a concurrent request already earned this 429's rest: don't climb the ladder twice
            pacing = self._learned.hintless(subject, key, part, sent, now, self.policy)
            self._store.probe_next(key.fingerprint, part)
            backoff = pacing.backoff
            seconds = max(0.0, self._rest_from(pacing.closed_until, 0.0, now))
            if self.policy.name == "fixed":  # the original rule, exactly: the hour from the 429
                seconds = backoff.rest or self._cooldowns.rate_limit
            source = f"no hint; {self.policy.name} policy, step {backoff.step}"
            if not backoff.step and backoff.learned is not None:
                source = f"no hint; back to the {backoff.learned:.3g} s window that works"
        self.cool(key, seconds, KeyState.RATE_LIMIT, source, model)
        for member in self._account(key)[1:]:
            self.cool(member, seconds, KeyState.RATE_LIMIT, f"shares a limit with {key.key_id}", model)
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
        self._rest_longer(provider_keys, rest, f"{key.provider} answered 429 on most keys at once", model, now)

    @staticmethod
    def _rest_from(sent: float, wait: float, now: float) -> float:
        """Seconds from `now` until a wait counted from a request's start (`sent`) is over, and the margin."""
        return sent + wait + SLOT_MARGIN - now

    def _resting_until(self, key: ApiKey, model: str | None, now: float) -> float:
        """When the key's own rest (for `model`: its rest for that model) ends."""
        if model is None:
            return self._store.records([key.fingerprint])[0].cooldown_until
        return self._store.model_rests([key.fingerprint], now)[0].get(model, (0.0,))[0]

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
        reset = quota.reset_after
        if reset is not None:  # 0: the window is back to its initial state now (a count of 0 "for 60 s" held a key)
            reset = min(max(0.0, reset), self._cooldowns.maximum) if math.isfinite(reset) else None
        same = remaining == quota.remaining and reset == quota.reset_after  # (most answers: no copy on every answer)
        return quota if same else replace(quota, remaining=remaining, reset_after=reset)

    def cool(self, key: ApiKey, seconds: float, reason: KeyState, why: str = "", model: str | None = None) -> None:
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
        """Why the key is in a cooldown now (a `KeyState` value, as stored), None when it is not."""
        record = self._store.records([key.fingerprint])[0]
        return record.reason if record.reason is not None and record.cooldown_until > self._clock() else None

    def probe_passed(
        self,
        key: ApiKey,
        vouches_for: Collection[OutcomeKind],
        revives_credit: Callable[[str], bool] | None = None,
    ) -> bool:
        """A cheap real call just worked: a key parked for a reason that call disproves comes back now.
        `vouches_for` comes from the provider's spec: a call that spends no tokens says nothing about a rate
        limit, and on most providers nothing about credit either, so such keys stay put. `revives_credit`: which
        no-credit parkings (by the message that parked the key) the call can disprove (None: all)."""
        revivable = {_PARKED[kind] for kind in vouches_for if kind in _PARKED}
        return self._actions.revive(key, revivable, revives_credit)

    def note_daily_requests(self, key: ApiKey, quota: QuotaHint) -> None:
        """Keep what a probe read of the key's account's requests left today (for the status page), until then."""
        self._actions.note_daily_requests(key, quota)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool, by: str | None = None) -> None:
        """Take keys out of rotation by hand (or put them back), for every process; `by`: who, for the event."""
        self._actions.set_disabled([self.key(key_id) for key_id in key_ids], disabled, by)

    def key(self, key_id: str) -> ApiKey:
        key = self._by_id.get(key_id)
        if key is None:
            known = ", ".join(list(self._by_id)[:5]) + (", …" if len(self._by_id) > 5 else "")
            raise KeyError(f"unknown key id {key_id!r}; known: {known or 'none'}")
        return key

    def reset_key(self, *key_ids: str, by: str | None = None) -> None:
        self._actions.reset([self.key(key_id) for key_id in key_ids], by)

    def resume_provider(self, provider: str) -> None:
        """Lift a provider-wide pause, leaving its keys as they are."""
        if provider not in self._keys:
            raise KeyError(f"unknown provider {provider!r}; known: {', '.join(self._keys)}")
        self._store.pause(provider, 0.0, KeyState.MANUAL, self._clock())

    def reset_provider(self, provider: str, by: str | None = None) -> None:
        self.resume_provider(provider)
        self._actions.reset(self._keys[provider], by)

    def reset_all(self, by: str | None = None) -> None:
        for provider in self._keys:
            self._store.pause(provider, 0.0, KeyState.MANUAL, self._clock())
        self._actions.reset(self._by_id.values(), by)

    def statuses(self, provider: str, model: str | None = None) -> list[KeyStatus]:
        """Every key of the provider; `available` and the reason speak for `model` (default: the provider's default
        model, the one `auto` asks for): a key resting for it is not available, whatever other models it answers."""
        return self.provider_state(provider, model)[0]

    def provider_state(self, provider: str, model: str | None = None) -> tuple[list[KeyStatus], dict[str, int] | None]:
        """`statuses` and the provider's daily totals from one read of the documents both need (a status page
        refreshing every 2 s over 1,000 keys read each account's day twice, and each key's window twice)."""
        default_model = model or self._default_models.get(provider)
        keys, part = self._keys.get(provider, ()), self._part(provider, default_model)
        limits, now = self._limits.get(provider), self._clock()
        return read_provider_state(self._store, provider, keys, now, part, default_model, self._learned.about, limits)

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
        self._leases.close()
        self._store.close()

    def note(self, key: ApiKey, kind: EventKind, detail: str) -> None:
        """An event about the key that changes nothing of its state (a person's check, the key joining, leaving)."""
        self._event(self._clock(), key, kind, detail)

    def _event(self, now: float, key: ApiKey, kind: EventKind, detail: str) -> None:
        self._store.add_event(KeyEvent(at=now, key_id=key.key_id, kind=kind, detail=detail))
