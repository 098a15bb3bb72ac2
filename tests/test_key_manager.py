"""Rotation and cooldown arithmetic with an injected clock (no sleeps), resets, events, thread safety."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock, in_threads

from config.api_keys import ApiKey
from config.settings import CooldownSettings
from llms.cooldown import SLOT_MARGIN, TRIP_SPREAD
from llms.key_lease import KeyLease
from llms.key_manager import KeyManager
from llms.key_states import KeyState
from llms.leases import Admission, Leases
from llms.outcomes import Outcome, OutcomeKind, QuotaHint, TokensLeft
from llms.quota import InFlightLimit, TokenBudget
from llms.state import EventKind, StateStore
from llms.state.base import Finish, Lease, RequestRecord
from llms.state.memory import MemoryStore


def make(
    n: int = 4, provider: str = "groq", clock: Clock | None = None, **cooldowns: Any
) -> tuple[KeyManager, list[ApiKey], Clock]:
    clock = clock or Clock()
    keys = [ApiKey(provider, i, f"gsk_test_secret_{i:04d}_abcdef") for i in range(1, n + 1)]
    manager = KeyManager({provider: keys}, CooldownSettings(**cooldowns), MemoryStore(), clock)
    return manager, keys, clock


def pick(manager: KeyManager, provider: str = "groq") -> ApiKey | None:
    """The next key, for a request that ends at once (so it holds none of the key's in-flight slots)."""
    lease = manager.acquire(provider)
    if lease is None:
        return None
    lease.abandoned()
    return lease.key


def fail(kind: OutcomeKind, retry_after: float | None = None, status: int = 429) -> Outcome:
    return Outcome(kind, status, f"{kind.value} happened", retry_after=retry_after)


def test_round_robin_order() -> None:
    manager, _keys, _ = make(3)
    picked = [pick(manager).key_id for _ in range(7)]
    assert picked == ["groq:1", "groq:2", "groq:3", "groq:1", "groq:2", "groq:3", "groq:1"]


def test_rate_limit_without_hint_cools_for_the_default_hour_under_the_fixed_policy() -> None:
    manager, keys, clock = make(2, policy="fixed")
    manager.record(keys[0], fail(OutcomeKind.RATE_LIMIT))
    assert [pick(manager).key_id for _ in range(3)] == ["groq:2"] * 3
    status = manager.statuses("groq")[0]
    assert not status.available and status.reason == "rate_limit" and status.cooldown_remaining == 3600
    clock.advance(3599.9)
    assert manager.statuses("groq")[0].cooldown_remaining == pytest.approx(0.1)
    clock.advance(0.1)
    assert manager.statuses("groq")[0].available
    assert {pick(manager).key_id for _ in range(2)} == {"groq:1", "groq:2"}


def test_provider_hint_wins_exactly_even_when_fractional() -> None:
    manager, keys, clock = make(1)
    manager.record(keys[0], fail(OutcomeKind.RATE_LIMIT, retry_after=1.2))
    assert pick(manager) is None
    assert manager.statuses("groq")[0].cooldown_remaining == pytest.approx(1.2 + SLOT_MARGIN)  # never early
    clock.advance(1.2 + SLOT_MARGIN)
    assert pick(manager) == keys[0]


@pytest.mark.parametrize("kind", [OutcomeKind.INVALID_KEY, OutcomeKind.NO_CREDITS])
def test_bad_keys_rest_a_day(kind: OutcomeKind) -> None:
    manager, keys, clock = make(1)
    manager.record(keys[0], fail(kind, status=401))
    assert manager.statuses("groq")[0].reason == kind.value
    clock.advance(86399)
    assert pick(manager) is None
    clock.advance(1)
    assert pick(manager) == keys[0]


def test_transient_errors_cool_only_at_the_threshold_of_consecutive_failures() -> None:
    manager, keys, clock = make(1)
    transient = fail(OutcomeKind.TRANSIENT, status=503)
    manager.record(keys[0], transient)
    manager.record(keys[0], transient)
    manager.record(keys[0], Outcome(OutcomeKind.OK, 200))  # a success resets the streak
    manager.record(keys[0], transient)
    manager.record(keys[0], transient)
    assert manager.statuses("groq")[0].available
    assert manager.statuses("groq")[0].consecutive_failures == 2
    manager.record(keys[0], transient)
    status = manager.statuses("groq")[0]
    assert not status.available and status.reason == "errors" and status.cooldown_remaining == 600
    assert status.failures == 5 and status.successes == 1
    clock.advance(600)
    assert pick(manager) == keys[0]
    manager.record(keys[0], transient)  # a fresh run of errors is needed to cool it again
    manager.record(keys[0], transient)
    assert manager.statuses("groq")[0].available
    manager.record(keys[0], transient)
    assert manager.statuses("groq")[0].reason == "errors"


def test_configured_cooldowns_and_threshold() -> None:
    manager, keys, _ = make(1, rate_limit=5, errors=7, error_threshold=1)
    manager.record(keys[0], fail(OutcomeKind.TRANSIENT, status=500))
    assert manager.statuses("groq")[0].cooldown_remaining == 7


def test_request_errors_do_not_penalise_the_key() -> None:
    manager, keys, _ = make(1)
    manager.record(keys[0], fail(OutcomeKind.REQUEST_ERROR, status=400))
    status = manager.statuses("groq")[0]
    assert status.available and status.failures == 0


def test_quota_at_zero_rests_the_key_before_a_429() -> None:
    manager, keys, clock = make(2)
    manager.record(keys[0], Outcome(OutcomeKind.OK, 200), QuotaHint(remaining=0, reset_after=2.5))
    assert pick(manager) == keys[1]
    assert pick(manager) == keys[1]
    clock.advance(2.5 + SLOT_MARGIN)
    assert {pick(manager), pick(manager)} == set(keys)


class _WatchedStore(MemoryStore):
    """A memory store that notes, as each lease ends, what a caller waiting for the slot would read then."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_as_slot_freed: list[tuple[str, float] | None] = []
        self.busy_as_key_cooled: list[bool] = []
        self.manager: KeyManager | None = None

    def cool(self, key_id: str, until: float, reason: str, now: float) -> None:
        if self.manager is not None:
            self.busy_as_key_cooled.append(self.manager.in_flight.busy())
        super().cool(key_id, until, reason, now)

    def record_success(self, key_id: str, now: float, request: Any = None, finish: Any = None) -> int:
        if finish is not None:
            self.seen_as_slot_freed.append(self.next_free("groq", now))
        return super().record_success(key_id, now, request, finish)


def test_an_answers_rest_lands_before_its_slot_frees() -> None:
    """CI, under load: a caller that waited for the one key's slot found it, between the answer's lease ending
    and its rest landing, neither busy nor resting, and gave up ("All API keys exhausted … frees up in 0.7 s") or
    was sent to it (a 429). A penalty already landed first; an answer's rest does too."""
    clock, store = Clock(), _WatchedStore()
    key = ApiKey("groq", 1, "gsk_test_secret_0001_abcdef")
    manager = store.manager = KeyManager({"groq": [key]}, CooldownSettings(), store, clock)
    lease = manager.acquire("groq")
    assert lease is not None
    lease.succeeded(QuotaHint(remaining=0, reset_after=2.5))
    assert store.busy_as_key_cooled == [True]  # this process's slot was still taken as the rest landed
    [seen] = store.seen_as_slot_freed
    assert seen is not None and seen[0] == key.fingerprint and seen[1] == pytest.approx(clock() + 2.5 + SLOT_MARGIN)


def test_a_window_rests_until_the_latest_reset_its_answers_bound_not_the_last_answers() -> None:
    """Issue 23's burst over HTTP: the answer that says 0 left queued 30 ms at the provider's door, so counting its
    reset from when it was sent ends the rest 30 ms before the window does; an earlier answer of the same window,
    which went straight in, bounds the reset later, and the rest must honour that bound."""
    manager, keys, clock = make(2)
    key = keys[0]

    def answered(latency: float, remaining: int, reset_at: float) -> None:
        """An answer arriving now, sent `latency` ago; the provider counted `reset_at` from its arrival."""
        sent_at = clock() - latency
        request = RequestRecord(clock(), "groq", "m", key.fingerprint, key.key_id, "ok", 200, latency)
        manager.record(key, Outcome(OutcomeKind.OK, 200), QuotaHint(remaining, reset_at - sent_at), request)

    window_ends = clock() + 2.0
    clock.advance(0.2)
    answered(0.2, 1, window_ends)  # went straight in: its bound is the window's end
    clock.advance(0.5)
    answered(0.2, 0, window_ends - 0.03)  # queued 30 ms: alone it would end the rest early
    assert manager.statuses("groq")[0].cooldown_remaining == pytest.approx(window_ends - clock() + SLOT_MARGIN)
    clock.advance(window_ends - clock())
    assert pick(manager) == keys[1]  # the window has not ended on the provider's clock yet
    clock.advance(SLOT_MARGIN)
    assert {pick(manager), pick(manager)} == set(keys)
    clock.advance(1.0)  # a new window: its first answer's bound replaces the old, even when earlier
    answered(0.2, 0, clock() + 1.5)
    assert manager.statuses("groq")[0].cooldown_remaining == pytest.approx(1.5 + SLOT_MARGIN)


def test_a_bucket_saying_when_its_next_token_comes_is_not_held_to_when_it_is_full() -> None:
    """A token bucket's answers report when it is full again, and at 0 left when its next token comes: a second
    earlier. Two bounds that far apart are two moments, not one seen through two trips out."""
    manager, keys, clock = make(1)
    key = keys[0]
    for remaining, reset_after in ((3, 2.0), (0, 0.4)):
        clock.advance(0.3)
        request = RequestRecord(clock(), "groq", "m", key.fingerprint, key.key_id, "ok", 200, 0.2)
        manager.record(key, Outcome(OutcomeKind.OK, 200), QuotaHint(remaining, reset_after), request)
    assert manager.statuses("groq")[0].cooldown_remaining == pytest.approx(0.4 - 0.2 + SLOT_MARGIN)


def test_resets_free_keys_and_are_logged() -> None:
    manager, keys, _ = make(3)
    for key in keys:
        manager.record(key, fail(OutcomeKind.RATE_LIMIT))
    assert pick(manager) is None
    manager.reset_key("groq:2")
    assert pick(manager) == keys[1]
    manager.reset_provider("groq")
    assert sum(s.available for s in manager.statuses("groq")) == 3
    for key in keys:
        manager.record(key, fail(OutcomeKind.INVALID_KEY, status=401))
    manager.reset_all()
    assert sum(s.available for s in manager.statuses("groq")) == 3
    kinds = Counter(e.kind for e in manager.events(1000))
    assert kinds[EventKind.COOLED] == 6 and kinds[EventKind.RESET] == 6
    with pytest.raises(KeyError, match="groq:9"):
        manager.reset_key("groq:9")


def test_a_storm_rest_ends_when_the_first_rate_limited_keys_rest_ends() -> None:
    """Six keys of eight refused 0.2 s apart, each resting its hint's 3 s: the storm rests the other two until the
    first refused key's rest ends, and leaves the refused keys' own rests as they were. (Counted from the storm's
    own 429, the shortest rest ended 1 s late, and every refused key was held to it.)"""
    manager, keys, clock = make(8)
    for key in keys[:6]:
        manager.record(key, fail(OutcomeKind.RATE_LIMIT, retry_after=3.0))
        clock.advance(0.2)
    remaining = [s.cooldown_remaining for s in manager.statuses("groq")]
    hinted = [3.0 + SLOT_MARGIN - 0.2 * (6 - i) for i in range(6)]  # each from its own 429
    assert remaining == pytest.approx([*hinted, hinted[0], hinted[0]])


def test_next_free_reports_the_soonest_key() -> None:
    manager, keys, _ = make(3)
    manager.record(keys[0], fail(OutcomeKind.RATE_LIMIT, retry_after=50))
    manager.record(keys[1], fail(OutcomeKind.RATE_LIMIT, retry_after=20))
    manager.record(keys[2], fail(OutcomeKind.INVALID_KEY, status=401))
    key, seconds = manager.next_free()
    assert key == keys[1] and seconds == pytest.approx(20 + SLOT_MARGIN)
    manager.reset_key("groq:2")
    assert manager.next_free()[0] == keys[0]


def test_event_log_is_bounded() -> None:
    clock = Clock()
    keys = [ApiKey("groq", 1, "gsk_bounded_log_key_1234")]
    manager = KeyManager({"groq": keys}, CooldownSettings(), MemoryStore(max_events=10), clock)
    for _ in range(50):
        manager.record(keys[0], fail(OutcomeKind.RATE_LIMIT, retry_after=1))
        clock.advance(1)
    events = manager.events(1000)
    assert len(events) == 10 and events[0].at > events[-1].at


def test_statuses_never_contain_secrets() -> None:
    manager, keys, _ = make(2)
    manager.record(keys[0], fail(OutcomeKind.RATE_LIMIT))
    text = repr(manager.statuses("groq")) + repr(manager.events()) + repr(keys)
    assert all(k.secret not in text for k in keys)
    assert "gsk_…cdef" in text


def test_in_flight_limit_starts_at_one_grows_when_proven_halves_on_a_429_and_takes_reported_quota() -> None:
    limit = InFlightLimit()
    for _ in range(InFlightLimit.PROVEN_AFTER):
        limit.succeeded(None)
    assert limit.allowed == 1  # a key whose quota is unknown: one at a time for its first answers
    for _ in range(7):
        limit.succeeded(None)
    assert limit.allowed == 8  # then one more per answer, until a 429
    limit.limited()
    assert limit.allowed == 4
    for _ in range(5):
        limit.succeeded(None)
    assert limit.allowed == 5  # after one, about one more per round of answers: 4 → 4.25 → 4.5 → 4.7 → 4.9 → 5.1
    limit.succeeded(12)  # an answer that says 12 are left
    assert limit.allowed == 12
    limit.limited()
    limit.succeeded(40, learned=True)  # a window learned from 429s says 40: it may be wrong, so at most twice over
    assert limit.allowed == 12
    limit.succeeded(40, learned=True)
    assert limit.allowed == 24


def test_a_key_whose_quota_is_unknown_takes_one_more_request_each_spacing_beyond_the_one_in_flight() -> None:
    """Slow answers under a small window: one at a time would leave it part unused; a send every `SPACING` (longer
    than a 429 takes to come back) keeps to one 429 when the window fills."""
    limit, spacing = InFlightLimit(), InFlightLimit.SPACING
    assert limit.room(0, 0.0) and not limit.room(1, 60.0)  # before any answer: one, whatever the wait
    limit.succeeded(None)  # an answer that said nothing of the quota
    assert not limit.room(1, spacing - 0.01) and limit.room(1, spacing) and limit.room(5, spacing)
    told = InFlightLimit()
    told.succeeded(1)  # the provider said one is left: no more than that goes
    assert not told.room(1, 60.0)
    refused = InFlightLimit()
    refused.succeeded(None)
    refused.limited()  # a 429 taught the window: the store's gate keeps to it from now on
    assert not refused.room(1, 60.0)
    learned = InFlightLimit()
    learned.limited()
    learned.succeeded(0, learned=True, window=5)  # a learned window of 5: its slots may all be out at once
    learned.succeeded(0, learned=True, window=5)
    learned.succeeded(0, learned=True, window=5)
    assert learned.allowed == 5  # at most twice over per answer: 1 → 2 → 4 → 5


def test_the_spacing_of_a_key_whose_quota_is_unknown_halves_as_answers_come_but_not_below_half_their_trip() -> None:
    """Half-second sends held a 2 s window of 10 to 0.42 of it; a 429 is refused before the model runs, in well
    under an answer's trip, so sends half a trip apart still cost one 429 when the window fills."""
    quick, slow, every = InFlightLimit(), InFlightLimit(), InFlightLimit.SPACING_HALVED_AFTER
    for _ in range(3 * every):
        quick.succeeded(None, trip=0.01)
        slow.succeeded(None, trip=0.3)
    assert quick.spacing == InFlightLimit.SPACING / 8 and quick.room(5, quick.spacing)
    assert not quick.room(5, quick.spacing - 0.001)
    assert slow.spacing == 0.15  # halved to 0.0625, but an answer takes 0.3 s: a 429 may take half that
    assert InFlightLimit().spacing == InFlightLimit.SPACING  # nothing answered yet
    long = InFlightLimit()
    long.succeeded(None, trip=20.0)
    assert long.spacing == InFlightLimit.SPACING  # never longer than it was


def test_a_key_with_a_request_in_flight_is_passed_over_until_it_ends() -> None:
    manager, keys, _ = make(2)
    first, second = manager.acquire("groq"), manager.acquire("groq")
    assert first is not None and second is not None and (first.key, second.key) == (keys[0], keys[1])
    assert manager.acquire("groq") is None and manager.in_flight.busy()  # both at their limit of one
    first.succeeded(QuotaHint(remaining=3, reset_after=60))
    assert [lease.key for lease in _leases(manager, 3)] == [keys[0], keys[0], keys[0]]  # room for the 3 left
    assert manager.acquire("groq") is None


def test_a_key_takes_only_the_requests_its_tokens_left_pay_for() -> None:
    """An answer said 250 of 6,000 tokens a minute are left, whole again in 57.5 s: a bucket refilling 100 a second.
    Two requests of 100 go at once, not a third (counting requests, the key's 99 left let all three go); half a
    second on (and a margin), 50 more have dripped back and it goes. Drained with none out, a request of 400 rests
    the key for the 4 s the bucket takes to pay for it, instead of earning a 429."""
    manager, _, clock = make(1)
    lease = manager.acquire("groq", tokens=100)
    assert lease is not None
    lease.succeeded(QuotaHint(99, 60.0, tokens=TokensLeft(250, 57.5, 6000)))
    out = [manager.acquire("groq", tokens=100) for _ in range(3)]
    assert [o is not None for o in out] == [True, True, False]
    clock.advance(0.5 + SLOT_MARGIN)
    third = manager.acquire("groq", tokens=100)
    assert third is not None and manager.acquire("groq", tokens=100) is None
    for done in (out[0], out[1], third):
        assert done is not None
        done.succeeded(QuotaHint(96, 60.0, tokens=TokensLeft(0, 60.0, 6000)))
    assert manager.acquire("groq", tokens=400) is None
    status = manager.statuses("groq")[0]
    assert status.reason == "rate_limit" and status.cooldown_remaining == pytest.approx(4.0 + SLOT_MARGIN)


def test_a_budget_of_tokens_refills_at_the_rate_its_reading_shows() -> None:
    """A Groq answer a user recorded (openai/gpt-oss-120b, README's provider facts): 7,927 of 8,000 tokens left,
    `x-ratelimit-reset-tokens: 547ms` — the 73 spent over 8,000 a minute, a bucket. A request fits once what is
    out and what it asks have dripped back; where the size is not said, only once the window is whole, with
    nothing out."""
    budget = TokenBudget(7927, read=0.0, resets=0.547, limit=8000)
    assert pytest.approx(8000 / 60, rel=0.005) == (8000 - 7927) / 0.547  # what was spent, over the minute's rate
    assert budget.fits_at(900, 7000) == -math.inf
    assert budget.fits_at(100, 7860) == pytest.approx(33 / (73 / 0.547) + SLOT_MARGIN)
    assert budget.fits_at(72, 7927) == 0.547  # (never later than whole)
    assert budget.fits_at(100, 7950) == math.inf  # (more than the window holds: the answers out will say more)
    assert budget.fits_at(9000, 0) == 0.547 and budget.fits_at(9000, 1) == math.inf  # larger than the window
    unsized = TokenBudget(10, read=0.0, resets=5.0)
    assert unsized.fits_at(100, 0) == 5.0 and unsized.fits_at(100, 5) == math.inf


def test_a_count_of_none_left_whose_window_is_back_now_holds_nothing() -> None:
    """`x-ratelimit-reset-requests: 0s` with none left: the window is back to its initial state as the answer was
    read. Taken for no reset at all, the count of none held the key for the default minute."""
    manager, _, _ = make(1)
    lease = manager.acquire("groq")
    assert lease is not None
    lease.succeeded(QuotaHint(remaining=0, reset_after=0.0, limit=5))
    assert len(_leases(manager, 5)) == 5 and manager.acquire("groq") is None  # the window's five, at once


def test_a_request_slower_than_its_window_frees_its_slot_once_the_window_has_passed() -> None:
    """A window of one a second and answers of five: the provider took the request's slot when it arrived and
    freed it as the window passed, long before the answer; held until then, the key kept to one request at a
    time (0.20 of its quota). Two windows' counts show how long one lasts; until then a slot is held to the end."""
    manager, _, clock = make(1)
    for _ in range(2):
        lease = manager.acquire("groq")
        assert lease is not None
        clock.advance(0.1)
        assert manager.acquire("groq") is None  # held: no count has shown the windows yet
        lease.succeeded(QuotaHint(remaining=0, reset_after=1.0, limit=1))
        clock.advance(1.5)
    slow = manager.acquire("groq")
    assert slow is not None
    clock.advance(1.0)
    assert manager.acquire("groq") is None  # its window may not have passed yet
    clock.advance(TRIP_SPREAD + 0.01)
    assert manager.acquire("groq") is not None  # it has: the slot is free, though its answer is still to come
    assert manager.acquire("groq") is None


def _leases(manager: KeyManager, count: int) -> list[KeyLease]:
    leases = [manager.acquire("groq") for _ in range(count)]
    assert all(lease is not None for lease in leases)
    return [lease for lease in leases if lease is not None]


def test_a_lease_taken_before_an_answer_told_the_store_its_keys_count_is_taken_again(
    state_backend: Callable[[], StateStore],
) -> None:
    """A thread's lease is taken while the key's gate counts nothing (no count yet); before it is admitted, the
    key's first answer tells the store 4 are left and lifts this process's limit to them. Admitted, its request
    went on no slot of the four, past the count: a burst of 32 callers on 8 keys paid 5 429s on a SQLite file under
    load. It is taken again instead, and then the gate holds it."""
    store, clock = state_backend(), Clock()
    key = ApiKey("groq", 1, "gsk_test_secret_0001_abcdef")
    store.register("groq", [key.fingerprint], {})
    leases = Leases(store, clock, threading.Lock(), lambda k: [k], 660.0, 10.0)

    def taken() -> tuple[Lease, int]:
        seen, lease = leases.counts_told, leases.lease(clock(), "groq", "")
        assert store.acquire("groq", clock(), (), lease) == key.fingerprint
        return lease, seen

    first, seen = taken()
    assert leases.admit(key, first, clock(), seen) is Admission.ADMITTED
    late, seen_late = taken()  # the gate counts nothing: no slot holds it
    quota = QuotaHint(remaining=4, reset_after=None, limit=5)
    store.record_success(key.fingerprint, clock(), None, leases.ending(first.token, quota, clock()))
    leases.finish(key, first.token, quota, clock(), OutcomeKind.OK)
    assert leases.admit(key, late, clock(), seen_late) is Admission.STALE
    store.end_lease(key.fingerprint, Finish(late.token), clock())
    again = [taken() for _ in range(4)]
    assert [leases.admit(key, lease, clock(), seen) for lease, seen in again] == [Admission.ADMITTED] * 4
    lease = leases.lease(clock(), "groq", "")
    assert store.acquire("groq", clock(), (), lease) is None  # the four left are held
    leases.close()


def test_a_lease_ends_once_and_frees_only_its_own_slot() -> None:
    """Two requests in flight on one key, and an operator's probe of it meanwhile: the probe's outcome frees
    nothing; each lease frees its own slot, once (a second end is ignored)."""
    manager, keys, _ = make(1)
    first = manager.acquire("groq")
    assert first is not None
    first.succeeded(QuotaHint(remaining=5, reset_after=60))  # room for more at once
    a, b = _leases(manager, 2)
    manager.record(keys[0], Outcome(OutcomeKind.OK, 200))  # a probe's answer: no lease of its own
    assert manager.in_flight.busy()
    a.failed(fail(OutcomeKind.TRANSIENT, status=500))
    a.abandoned()  # already ended: nothing more is freed
    assert manager.in_flight.busy()
    b.abandoned()
    assert not manager.in_flight.busy()


def test_a_caller_waiting_for_a_slot_wakes_as_a_request_ends_and_knows_when_the_clock_frees_one() -> None:
    """A caller whose keys are all busy sleeps until one of this process's requests ends, or until a slot frees
    by the clock (here: the window that counted a slow request has surely passed), instead of looking every
    10 ms: 32 threads looking made 3,200 store reads a second, and the virtual-time harness spent 9 of 10 s on them."""
    manager, _, clock = make(1)
    for _ in range(2):  # two windows' counts show how long one lasts
        lease = manager.acquire("groq")
        assert lease is not None
        clock.advance(0.1)
        lease.succeeded(QuotaHint(remaining=0, reset_after=1.0, limit=1))
        clock.advance(1.5)
    slow = manager.acquire("groq")
    assert slow is not None and manager.acquire("groq") is None
    assert manager.next_change([("groq", None)]) == pytest.approx(1.0 + SLOT_MARGIN)
    seen = manager.in_flight.ended
    waiter = threading.Thread(target=manager.in_flight.wait_for_end, args=(seen, 600.0))
    waiter.start()
    slow.succeeded(QuotaHint(remaining=0, reset_after=0.5, limit=1))
    waiter.join(30.0)
    assert not waiter.is_alive() and manager.in_flight.ended == seen + 1


def test_a_call_on_an_event_loop_waiting_for_a_slot_wakes_as_another_thread_ends_a_request() -> None:
    """The gateway's calls wait on its event loop; the request that frees the slot may end on another thread (a
    blocking adapter's executor, another client call). Told by that thread, the wait ends at once, not at its
    timeout, and a wait for an end that already came does not wait at all."""
    manager, _, _ = make(1)
    lease = manager.acquire("groq")
    assert lease is not None
    seen = manager.in_flight.ended

    async def wait_while_a_thread_ends_it() -> None:
        ender = threading.Timer(0.2, lease.abandoned)
        ender.start()
        await asyncio.wait_for(manager.in_flight.await_end(seen, 600.0), timeout=30.0)
        ender.join()
        await asyncio.wait_for(manager.in_flight.await_end(seen, 600.0), timeout=1.0)  # already ended

    asyncio.run(wait_while_a_thread_ends_it())
    assert manager.in_flight.ended == seen + 1


@pytest.mark.slow
def test_32_threads_never_double_count_or_lose_an_update() -> None:
    manager, _keys, _ = make(4, error_threshold=10**9)
    per_thread = 500

    def work() -> Counter[str]:
        local: Counter[str] = Counter()
        for _ in range(per_thread):
            while (lease := manager.acquire("groq")) is None:  # every key is at its in-flight limit: look again
                pass
            key = lease.key
            local[key.key_id] += 1
            lease.succeeded()
            manager.record(key, fail(OutcomeKind.TRANSIENT, status=500))
            manager.record(key, Outcome(OutcomeKind.OK, 200))
        return local

    picks = sum(in_threads(32, work), Counter())
    total = 32 * per_thread
    assert sum(picks.values()) == total
    assert min(picks.values()) > total // 8  # a key busy when its turn comes passes it: roughly even
    statuses = manager.statuses("groq")
    assert sum(s.successes for s in statuses) == 2 * total
    assert sum(s.failures for s in statuses) == total


def test_cooling_keys_piling_up_do_not_change_which_keys_rotate() -> None:
    manager, keys, _ = make(10_000)
    for key in keys[:9_000]:
        manager.cool(key, 3600, KeyState.RATE_LIMIT)
    seen = {pick(manager).key_id for _ in range(2_000)}
    assert seen == {k.key_id for k in keys[9_000:]}
