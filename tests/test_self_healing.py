"""Self-healing keys: hint-less rate-limit windows are learned; parked keys are probed back to health."""

from __future__ import annotations

import itertools
import sqlite3
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DURABLE, STORE_BACKENDS, USER_HELLO, Clock, MakeClient

from config.api_keys import ApiKey
from config.settings import CooldownSettings
from llms import AllKeysExhaustedError
from llms.cooldown import TRIP_SPREAD, TRY_MARGIN, AdaptiveCooldown, Backoff, FixedCooldown
from llms.key_lease import KeyLease
from llms.key_manager import KeyManager
from llms.learned_limits import DUE_NOW_REST, RECOUNT_FOR
from llms.learned_pacing import Pacing
from llms.learned_windows import SlotLog
from llms.outcomes import Outcome, OutcomeKind, QuotaHint
from llms.prober import Prober
from llms.quota import InFlightLimit
from llms.state import store_from_url
from llms.state.base import RequestRecord
from simulator import Simulator


def test_the_adaptive_ladder_climbs_round_lengths_from_the_windows_opening_and_caps_at_the_maximum() -> None:
    policy = AdaptiveCooldown(maximum=100.0)
    # the next try: 1 s after the opening (and a margin past it: the opening is this client's reading)
    assert policy.climb(Backoff(), 0.8) == Backoff(1, pytest.approx(0.2 + TRY_MARGIN))
    assert policy.climb(Backoff(1, 0.2), 1.0).rest == pytest.approx(1.0 + TRY_MARGIN)  # refused at 1 s: 2 s
    assert policy.climb(Backoff(2, 1.0), 2.0).rest == pytest.approx(3.0 + TRY_MARGIN)  # then 5, 10, 30, 60 s, …
    assert policy.climb(Backoff(6, 60.0), 130.0).rest == 100.0  # 300 s after the opening is past the maximum
    assert policy.settle(Backoff(3, 3.0), 5.01) == Backoff(0, None, 5.01)  # the try went through: at most 5.01 s
    assert policy.settle(Backoff(0, None, 5.0), 9.0) == Backoff(0, None, 5.0)  # not backing off: nothing changes


def test_shorter_round_lengths_are_probed_between_what_failed_and_what_works() -> None:
    policy = AdaptiveCooldown(maximum=3600.0)
    assert policy.probe(1.0, 2.01) == 1.5
    assert policy.probe(30.0, 60.01) == 45.0  # the middle of 40 and 45
    assert policy.probe(1.5, 2.01) is None  # no round length between: keep to 2 s
    assert policy.probe(5.0, 10.01) == 8.0  # per-minute buckets refill every 6 s or 12 s: those are tried too
    assert policy.probe(0.0, 1.02) is None  # under 5 % faster is not worth a 429


def test_a_hintless_window_is_bracketed_by_its_429s_and_then_spent_as_a_sliding_log() -> None:
    """4 answers per 2 s window, sent from 0.0; the window met at 0.8 (a 429 sent then)."""
    policy = AdaptiveCooldown(maximum=60.0)
    pacing = Pacing().limited(0.8, policy, seen=(0.0, 0.2, 0.4))
    assert (pacing.window, pacing.opened, pacing.shortest) == (3, 0.0, 0.8)
    assert pacing.closed_until == pytest.approx(1.0 + TRY_MARGIN)  # the first rung: 1 s after the window opened
    pacing = pacing.succeeded(0.6, policy)  # still in flight when the 429 came: the window held 4
    assert pacing.window == 4 and pacing.quota(0.9) is None  # its length is not known yet
    # The try refused 1.06 s after the opening: longer than that less a trip's spread (the window opened as its first
    # request arrived, and the try may have come that much sooner after it than its send says).
    pacing = pacing.limited(1.06, policy)
    assert pacing.shortest == pytest.approx(1.06 - TRIP_SPREAD)
    assert pacing.closed_until == pytest.approx(2.0 + TRY_MARGIN)
    hints = []
    for at in (2.06, 2.27, 2.47, 2.67):  # the try at 2 s goes through: the window is at most 2.06 s long...
        pacing = pacing.succeeded(at, policy)
        hints.append(pacing.quota(at))
    assert pacing.backoff.learned == pytest.approx(2.06)
    # ...and holds 4 answers in any 2.02 s: each slot is spent as the answer that took it ages out
    assert hints[:3] == [
        QuotaHint(0, pytest.approx(t + 2.06 - at), limit=4) for t, at in ((0.2, 2.06), (0.4, 2.27), (0.6, 2.47))
    ]
    assert pacing.probe == 1.5  # 1.5 s is tried, a margin past it
    assert hints[3] == QuotaHint(0, pytest.approx(2.06 + 1.5 + TRY_MARGIN - 2.67), limit=4)
    refused = pacing.limited(3.62, policy)  # too short: back to the length that works, no climb
    assert refused.shortest == pytest.approx(1.56) and refused.backoff.step == 0
    assert refused.closed_until == pytest.approx(2.06 + 2.06) and refused.probe is None
    assert refused.succeeded(4.13, policy).probe is None  # nothing round is left between 1.56 and 2.06
    assert Pacing.of(refused.document()) == refused  # what the store keeps is all there is


def test_a_first_429_counts_only_the_latest_run_of_answers() -> None:
    policy = AdaptiveCooldown(maximum=60.0)
    idle_then_busy = (0.0, 30.0, 60.0, 100.0, 100.2, 100.4)  # a key used now and then, then a burst
    pacing = Pacing().limited(100.6, policy, seen=idle_then_busy)
    assert (pacing.window, pacing.opened) == (3, 100.0)
    assert Pacing().limited(5.0, policy).window is None  # nothing counted: the ladder counts from the 429
    assert Pacing().limited(5.0, policy).closed_until == pytest.approx(6.0 + TRY_MARGIN)


def test_a_window_that_no_longer_holds_what_was_learned_is_learned_again() -> None:
    policy = AdaptiveCooldown(maximum=60.0)
    pacing = Pacing(Backoff(0, None, 2.0), window=4, times=(0.0, 0.2, 0.4, 0.6), opened=0.0, shortest=1.0)
    pacing = pacing.succeeded(2.7, policy)  # a new window...
    pacing = pacing.limited(2.9, policy)  # ...refused after one answer though the log said three were left
    assert (pacing.window, pacing.backoff.step, pacing.backoff.learned) == (1, 1, None)
    assert pacing.closed_until == pytest.approx(3.7 + TRY_MARGIN)  # climbing again from the opening at 2.7


def test_a_hinted_429_teaches_a_sliding_window_then_each_slot_is_spent_as_it_frees() -> None:
    burst = (10.0, 10.01, 10.02)  # three answers, long after the last ones (a gap longer than the hint)
    log = SlotLog().limited(10.05, hint=1.95, seen=(1.0, *burst))  # "the oldest answer's slot frees at 12.0"
    assert (log.size, log.length, log.closed_until) == (3, pytest.approx(2.0), 12.0)
    log = log.succeeded(10.06)  # a late answer of that window: it held four
    assert log.size == 4
    assert log.limited(10.5, hint=1.5).length == pytest.approx(2.0)  # the same full window: nothing new
    log = log.succeeded(12.05)  # the first three slots have freed; four answers in any 2 s
    # two left; one more frees when 10.06 ages out
    assert log.quota(12.05) == QuotaHint(2, pytest.approx(0.01), limit=4)
    log = log.succeeded(12.051).succeeded(12.052)
    # (the key manager adds the margin)
    assert log.quota(12.052) == QuotaHint(0, pytest.approx(10.06 + 2.0 - 12.052), limit=4)
    # Refused at 12.2 though 10.06's slot should have freed at 12.06: the window is longer than learned, and the
    # slot frees at 12.21 — 2.15 s after the answer that took it.
    stretched = replace(log, length=pytest.approx(2.15), closed_until=12.2 + 0.01, waited=0.01)
    refused = log.limited(12.2, hint=0.01)  # (its moment, 12.21, a window from 12.0's: not on a clock)
    assert replace(refused, closings=log.closings) == stretched and refused.moments == (
        *log.moments,
        pytest.approx(12.21),
    )


def test_a_hinted_429_after_paced_answers_reads_the_latest_gap_that_fits_not_the_whole_log() -> None:
    """Answers paced half a second apart, then quicker: every gap is longer than the hint, so the latest gap (one
    answer a 0.5 s: but two went within it) does not fit what was admitted, nor do the next three. The window
    holds the five since 2.0; read as the whole log (eight a 3.2 s), a window of 5 a 2 s on the clock was kept
    to 0.84 of its quota, as no 429 came to correct it."""
    sent = (0.5, 1.0, 1.5, 2.0, 2.3, 2.6, 2.9, 3.2)
    log = SlotLog().limited(3.5, hint=0.2, seen=sent)
    assert (log.size, log.length) == (5, pytest.approx(3.7 - 2.0))
    assert all(sum(1 for t in sent if start <= t < start + log.length) <= log.size for start in sent)  # it fits


def test_a_429_whose_reset_lies_on_the_minute_puts_the_window_on_the_clock_at_once() -> None:
    """A minute's 20 requests: one a second from 10 s past the minute, one more at 45 s, the 21st refused at 50 s
    and freed on the minute (`Outcome.grid` 60). Read as a sliding log, the window would hold those 20 for 50 s,
    and the next window's requests would go as its slots freed, one a second from 60 s, until a second 429 put it
    on the clock. With the grid it is on the clock at once: a minute long, turning at 60 s, all 20 back then."""
    sent = (*(10.0 + i for i in range(19)), 45.0)
    log = SlotLog().limited(50.0, hint=10.0, seen=sent, grid=60.0)
    assert (log.clock, log.length, log.size) == (60.0, 60.0, 20)
    assert log.quota(60.2) == QuotaHint(20, pytest.approx(60.0 - 0.2 + TRIP_SPREAD), limit=20)  # all back as it turns
    assert SlotLog().limited(50.0, hint=10.0, seen=sent).clock is None  # without the grid: a sliding log
    # Not a shorter round length on that grid: windows of 10 or 30 s before this one held more than its one request
    # and the four still out.
    assert SlotLog().limited(50.0, hint=10.0, seen=sent, in_flight=(46.0, 47.0, 48.0, 49.0), grid=60.0).length == 60.0


def test_requests_sent_just_before_a_shorter_grids_turn_are_not_read_into_both_of_its_windows() -> None:
    """Gemini's 10 a 2 s on the clock (÷30 of 10 a minute), a key's first requests sent from 0.8 s, three of them
    after 1.0, the 11th refused at 1.062 until 2.0. A window of 1 s fit only where the three sent in the last trip's
    spread before 1.0 came after it, yet was sized as though they had not: 3 a 1 s. No 429 came to correct it (the
    key sent 6 a window of 10, over HTTP, for as long as it ran). Counted in the window before, as its size counts
    them, they rule 1 s out: 2 s fits with none of them in doubt."""
    sent = (0.802, 0.832, 0.852, 0.875, 0.906, 0.932, 0.975, 1.001, 1.023, 1.042)
    log = SlotLog().limited(1.062, hint=0.938, seen=sent, grid=2.0)
    assert (log.clock, log.length, log.size) == (2.0, 2.0, 10)


def test_a_recount_counts_the_answers_sent_with_the_refused_request() -> None:
    """Callers that send at the same moment as the request a 429 refused (a virtual clock's tie, or a clock's
    granularity) were admitted before it: the window counted again holds them (another process's, read from the
    store's log). Left out, a window on the clock of 30 was learned as 27, three short every window."""
    sent = tuple(round(0.1 * i, 1) for i in range(1, 10))
    log = SlotLog().limited(1.0, hint=1.0, seen=sent, grid=2.0)
    assert (log.clock, log.length, log.size) == (2.0, 2.0, 9)
    assert log.recounted((*sent, 1.0, 1.0)).size == 11


def test_a_recount_counts_the_window_it_taught_though_the_log_moved_on_past_its_length() -> None:
    """A window of 2 s read at a 429 at 7.0 (a whole-second `Retry-After` of 2: resting until 9.0), its oldest
    answer sent at 6.0, one of its answers late. Counted again at the first answer after the rest, sent at 9.3:
    the log keeps what the window taught until then, where it used to keep only the last 2 s (from 7.3): the
    recount found nothing of the window to count, and a window counted short stays short (no 429 says so)."""
    log = SlotLog((6.0, 6.3, 6.6), 3, 2.0, closed_until=9.0, uncounted=(6.0, 7.0)).succeeded(6.9)
    assert log.succeeded(9.3).recounted(()).size == 4


def test_a_429_on_a_round_moment_but_within_a_drip_of_it_is_not_read_as_the_clock() -> None:
    """A bucket's 429 waits for one drip of a slot, and where its drips fall on whole seconds (a drip of 0.2 s
    at a phase near a second) its moments lie on the grid too: a wait shorter than a drip of the window the grid
    would read (its length over what it admitted) is no turn of the clock. A window of one is the exception: its
    drip is the whole window."""
    sent = (1.2, 1.6, 2.0, 2.2, 2.4, 2.6, 2.8)  # a bucket's drips every 0.2 s, after a slow start
    assert SlotLog().limited(2.93, hint=0.07, seen=sent, grid=1.0).clock is None  # within a drip of 1/5 s
    assert SlotLog().limited(2.5, hint=0.5, seen=sent[:5], grid=1.0).clock == 3.0  # more than a drip of 1/3 s
    assert SlotLog().limited(0.4, hint=27.6, seen=(0.3,), grid=30.0).clock == 28.0


def test_a_token_bucket_read_as_a_window_is_stretched_to_the_pace_it_refills_at() -> None:
    """A bucket of 5 refilling 2.5 a second, first seen as 9 answers in 2 s (its burst and the refills during it).
    Refused though the log said a slot had freed, 0.4 s after it reopened with one answer between: the provider
    keeps 9 slots per 3.6 s, not per 2 — one stretch, where one gap per 429 took eight. Refused again at that pace
    (a slot per 0.4 s), waiting less than a slot: the rate holds and the burst the log keeps does not, so the
    window is the pace alone, 1 a 0.4 s (stretched by its burst instead, a bucket of 20 a 30 s grew by a slot a
    429, one 429 an answer, until its log forgot the burst)."""
    burst = tuple(round(0.2 * i, 1) for i in range(9))  # answers sent at 0.0 … 1.6
    log = SlotLog().limited(1.8, hint=0.2, seen=burst)
    assert (log.size, log.length) == (9, pytest.approx(2.0))
    log = log.succeeded(2.01).limited(2.21, hint=0.19)  # the window said a slot was free at 2.2: refused
    assert log.length == pytest.approx(9 * (2.4 - 2.0) / 1, abs=0.05)
    before = log.succeeded(2.41)
    log = before.limited(2.61, hint=0.19)  # again: one answer admitted since it reopened at 2.4
    assert (log.size, log.length) == (1, pytest.approx(2.8 - 2.4))
    # Slow answers: two more sent since it reopened are still out, so it admitted three, not one: no stretch.
    assert before.limited(2.61, hint=0.19, in_flight=(2.45, 2.5)).length == pytest.approx(before.length)
    # A pace read from one answer over a long span (a slow answer may yet come) at most doubles the window.
    assert before.limited(2.61, hint=1.5).length == pytest.approx(2 * before.length)


def test_fixed_policy_is_the_original_rule() -> None:
    policy = FixedCooldown(3600)
    assert [policy.climb(Backoff(step), 1.0).rest for step in range(3)] == [3600] * 3
    assert Pacing().limited(0.0, policy).succeeded(1.0, policy).quota(1.0) is None  # learns no windows


@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_hint_wins_over_any_policy(make_client: MakeClient, policy: str) -> None:
    client = make_client({"groq": 1}, limits={"groq:1": (1, 30.0)}, LLM_COOLDOWN_POLICY=policy)
    client.complete(USER_HELLO)
    with pytest.raises(AllKeysExhaustedError):
        client.complete(USER_HELLO)
    assert 25 < client.key_manager.statuses("groq")[0].cooldown_remaining <= 30.5


def test_fixed_policy_keeps_the_original_60_min_24_h_10_min(make_client: MakeClient) -> None:
    clock = Clock()
    client = make_client(
        {"openrouter": 3},
        steps={
            "openrouter:1": ["rate_limit_nohint"],
            "openrouter:2": ["invalid_key"],
            "openrouter:3": ["server_error"] * 3,
        },
        clock=clock,
        LLM_COOLDOWN_POLICY="fixed",
    )
    for _ in range(3):
        with pytest.raises(AllKeysExhaustedError):
            client.complete(USER_HELLO)
    rests = {k.key_id: (k.reason, k.cooldown_remaining) for k in client.key_manager.statuses("openrouter")}
    assert rests == {
        "openrouter:1": ("rate_limit", 3600),
        "openrouter:2": ("invalid_key", 86400),
        "openrouter:3": ("errors", 600),
    }


@pytest.mark.slow
def test_a_hintless_window_is_learned_within_a_few_probes(make_client: MakeClient, sim: Simulator) -> None:
    """A key allows 2 requests per 1.5 s window and its 429s say nothing about when to come back."""
    client = make_client({"openrouter": 1})
    secret = client.key_manager.keys("openrouter")[0].secret
    sim.add_key("openrouter", secret, limit=(2, 1.5), limit_hint=False, name="openrouter:1")
    started = time.time()
    deadline = time.monotonic() + 6
    answers = 0
    while time.monotonic() < deadline:
        try:
            client.complete(USER_HELLO, wait=5)
            answers += 1
        except AllKeysExhaustedError:
            pass
    key = client.key_manager.statuses("openrouter")[0]
    limited = [r for r in sim.requests if r.status == 429]
    # at most the round length that worked, tried TRY_MARGIN past it; a loaded machine (two suites on 2 cores) sent
    # that try 0.05 s later still, and the length is read from when it left
    assert key.learned_rest is not None and 1.5 <= key.learned_rest <= 2.0 + TRY_MARGIN + TRIP_SPREAD
    # The ladder's tries at 1 s and 2 s after the window opened, and a refused probe: 1.5 s, or, where that went
    # through, 1 s (the try at 1 s came 1.06 s after the window's first request was sent: it may have come early).
    assert len(limited) <= 3
    # Then each window is spent without a 429 but for the one refused probe, in whichever window it came (at 4.7 s
    # or at 6.3 s: a fixed 5 s cut-off failed a run in three on a quicker machine).
    later = [round(r.at - started, 2) for r in limited if r.at > started + 2.0]  # (before: the first 429, the 1 s try)
    assert len(later) <= 1, later
    assert answers >= 6  # a fixed hour would have delivered 2


def test_a_key_back_from_a_false_401_returns_after_the_next_probe(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"groq": 2}, steps={"groq:1": ["invalid_key"]})
    assert client.complete(USER_HELLO).key_id == "groq:2"
    assert client.key_manager.statuses("groq")[0].reason == "invalid_key"
    prober = Prober(client.admin.parked_key_ids, client.admin.check_key, interval=60)
    assert prober.run_once() == ["groq:1"]
    first = client.key_manager.statuses("groq")[0]
    assert first.available
    assert any(e.key_id == "groq:1" and "probe passed" in e.detail for e in client.admin.events())
    assert [r.path.rsplit("/", 1)[-1] for r in sim.requests if r.key_name == "groq:1"] == ["completions", "models"]


def test_a_revoked_key_stays_out_and_costs_at_most_one_probe_per_interval(
    make_client: MakeClient, sim: Simulator
) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["invalid_key"] * 100})
    client.complete(USER_HELLO)
    clock = Clock(0)
    prober = Prober(client.admin.parked_key_ids, client.admin.check_key, interval=30, clock=clock)
    for _ in range(10):  # ten rounds within one interval, then the next interval
        prober.run_once()
        clock.advance(2.9)
    clock.advance(2)
    prober.run_once()
    assert sim.calls("openrouter:1") == 1 + 2  # the failing chat, then one probe per interval
    assert client.key_manager.statuses("openrouter")[0].reason == "invalid_key"


def test_probes_skip_short_cooldowns(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"groq": 3}, steps={"groq:1": ["rate_limit"], "groq:2": ["server_error"] * 3})
    client.complete(USER_HELLO)
    assert Prober(client.admin.parked_key_ids, client.admin.check_key, interval=1).due() == []


@pytest.mark.slow
def test_probes_run_one_at_a_time(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"groq": 4}, steps={f"groq:{i}": ["invalid_key"] for i in range(1, 4)})
    client.complete(USER_HELLO)
    sim.clear_log()
    sim.latency = 0.1
    assert sorted(Prober(client.admin.parked_key_ids, client.admin.check_key, interval=1).run_once()) == [
        "groq:1",
        "groq:2",
        "groq:3",
    ]
    starts = sorted(r.at for r in sim.requests)
    assert len(starts) == 3 and all(b - a >= 0.09 for a, b in itertools.pairwise(starts))


def test_background_prober_is_off_by_default_and_runs_when_configured(make_client: MakeClient) -> None:
    assert make_client({"groq": 1}).prober is None
    client = make_client({"groq": 2}, steps={"groq:1": ["invalid_key"]}, LLM_PROBE_INTERVAL="0.2")
    client.complete(USER_HELLO)
    deadline = time.monotonic() + 5
    while not client.key_manager.statuses("groq")[0].available and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.key_manager.statuses("groq")[0].available


def _two_processes(tmp_path: Path, key: ApiKey, clock: Clock) -> tuple[KeyManager, KeyManager]:
    """Two key managers on one SQLite file, as two processes sharing it."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first, second = (
        KeyManager({"openrouter": [key]}, CooldownSettings(), store_from_url(url, failover=False), clock)
        for _ in range(2)
    )
    return first, second


def _lease(manager: KeyManager, key: ApiKey) -> KeyLease:
    """A lease the manager must hand out, and on `key`."""
    lease = manager.acquire(key.provider)
    assert lease is not None and lease.key == key
    return lease


def test_a_first_429_on_a_shared_store_learns_from_every_process_s_answers(tmp_path: Path) -> None:
    """Two managers on one SQLite file (two processes): each saw part of the window; the one that meets the 429
    learns the whole window from the store's request log, not a window the size of its own share."""
    clock = Clock()
    key = ApiKey("openrouter", 1, "sk-or-v1-shared-window-0001")
    first, second = _two_processes(tmp_path, key, clock)
    for manager in (first, first, first, second):  # a window of 4: three answers here, one there
        lease = _lease(manager, key)
        clock.advance(0.1)
        lease.succeeded(None, RequestRecord(clock(), "openrouter", "m", key.fingerprint, key.key_id, "ok", 200, 0.1))
    lease = _lease(second, key)
    clock.advance(0.1)
    request = RequestRecord(clock(), "openrouter", "m", key.fingerprint, key.key_id, "rate_limit", 429, 0.1)
    lease.failed(Outcome(OutcomeKind.RATE_LIMIT, 429, "limited", retry_after=1.6), request)
    learned = SlotLog.of(second.document(f"slots/{key.fingerprint}"))
    assert learned.size == 4 and learned.length == pytest.approx(2.0, abs=0.01)


def test_what_one_process_learned_reaches_another_through_the_index_and_an_old_store_is_indexed(
    tmp_path: Path,
) -> None:
    """A window learned in one process is counted by another within `_PACED_REFRESH` (one read of the index, not
    one per key); a store written before the index existed is searched once and indexed."""
    clock = Clock()
    keys = [ApiKey("openrouter", n, f"sk-or-v1-index-window-{n:04d}") for n in (1, 2)]
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first, second = (
        KeyManager({"openrouter": keys}, CooldownSettings(), store_from_url(url, failover=False), clock)
        for _ in range(2)
    )
    first._learned.about(clock())
    assert first.document("learned") == {"names": []}  # nothing learned yet, and the search is not repeated
    _lease(first, keys[0]).failed(Outcome(OutcomeKind.RATE_LIMIT, 429, "limited", retry_after=2.0))
    assert second.document("learned") == {"names": [f"slots/{keys[0].fingerprint}"]}
    clock.advance(2.5)
    assert f"slots/{keys[0].fingerprint}" in second._learned.about(clock())  # the other process counts it now
    second.change_document("learned", lambda d: {})  # as a store from before the index
    clock.advance(2.5)
    third = KeyManager({"openrouter": keys}, CooldownSettings(), store_from_url(url, failover=False), clock)
    assert f"slots/{keys[0].fingerprint}" in third._learned.about(clock())
    assert third.document("learned") == {"names": [f"slots/{keys[0].fingerprint}"]}


def _answer(lease: KeyLease, clock: Clock, status: int = 200, latency: float = 0.05, hint: float | None = None) -> None:
    """The lease's request answered now (or refused, with `hint`), and logged as sent `latency` ago."""
    key, kind = lease.key, OutcomeKind.OK if status == 200 else OutcomeKind.RATE_LIMIT
    request = RequestRecord(clock(), "openrouter", "m", key.fingerprint, key.key_id, kind.value, status, latency)
    if status == 200:
        lease.succeeded(None, request)
    else:
        lease.failed(Outcome(kind, status, retry_after=hint), request)


def _window_with_a_late_answer(
    first: KeyManager, second: KeyManager, key: ApiKey, clock: Clock, hint: float | None, unrecorded: Path | None = None
) -> KeyLease:
    """A window of four on the key: one answer from the first process, two from the second and its 429, while the
    first holds a request of the window whose answer is not yet written (returned). `unrecorded`: the store's file,
    from which the held request's record is taken, as a process of layout 4 kept none (`Lease.sent`)."""
    lease = _lease(first, key)
    clock.advance(0.05)
    _answer(lease, clock)  # the window's first answer (the first process reads what was learned: nothing yet)
    late = None
    for status in (200, 200, 429):  # the provider's window of four is full at the fourth
        lease = _lease(second, key)
        clock.advance(0.05)
        _answer(lease, clock, status, hint=hint)
        if status == 200 and late is None and (held := first.acquire("openrouter")) is not None:
            assert held.key == key
            late = held
            if unrecorded is not None:
                with sqlite3.connect(unrecorded) as db:
                    assert db.execute("DELETE FROM leases WHERE token = ?", (held.token,)).rowcount == 1
            # (the second process sends beside it: at once where it cannot see it, else once its spacing has passed)
            clock.advance(0.01 if unrecorded is not None else InFlightLimit.SPACING)
    assert late is not None
    return late


def _learned_window(manager: KeyManager, key: ApiKey, hint: float | None) -> int | None:
    if hint is None:
        return Pacing.of(manager.document(f"pace/{key.fingerprint}")).window
    return SlotLog.of(manager.document(f"slots/{key.fingerprint}")).size


@pytest.mark.parametrize("hint", [None, 1.6], ids=["hint-less", "hinted"])
def test_a_window_counted_while_another_process_s_answer_was_unwritten_is_counted_again(
    tmp_path: Path, hint: float | None
) -> None:
    """Two managers on one SQLite file: the second meets a 429 while the first's answer of the window is not yet
    written, nor its request out recorded (a process of an earlier version), and counts a window of three. Once the key
    answers after its rest, the window is counted again from the store's request log: four (a window learned too small
    never meets a 429 to correct it, and 4 processes kept keys to a fraction of their quota)."""
    clock = Clock()
    key = ApiKey("openrouter", 1, "sk-or-v1-shared-window-0002")
    first, second = _two_processes(tmp_path, key, clock)
    late = _window_with_a_late_answer(first, second, key, clock, hint, unrecorded=tmp_path / "state.db")
    _answer(late, clock, latency=0.1)  # written late, by a process that has not read that the window is learned
    assert _learned_window(second, key, hint) == 3

    clock.advance(second.statuses("openrouter")[0].cooldown_remaining + 0.01)
    lease = _lease(first, key)
    clock.advance(0.05)
    _answer(lease, clock)
    assert _learned_window(second, key, hint) == 4


@pytest.mark.parametrize("backend", DURABLE)
def test_processes_that_know_nothing_of_a_keys_quota_send_it_one_request_at_a_time_between_them(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Each process keeps its own in-flight limit, but while a key's quota is unknown it counts every process's
    requests out (`Leases.admit`): a second process waits for the first's answer, then for the spacing, as one
    process's second thread would (4 processes sent 4 requests at once to a key of 1 a window: 3 429s)."""
    clock = Clock()
    key = ApiKey("openrouter", 1, "sk-or-v1-one-at-a-time-0001")
    url, prefix = STORE_BACKENDS[backend].url(request, tmp_path / "state.db"), f"test-{uuid.uuid4().hex[:10]}"
    stores = [store_from_url(url, prefix, failover=False) for _ in range(2)]
    first, second = (KeyManager({"openrouter": [key]}, CooldownSettings(), store, clock) for store in stores)
    held = _lease(first, key)
    assert second.acquire("openrouter") is None  # one out, nothing yet answered: one at a time
    busy = second.busy_until()  # busy, as a key at its in-flight limit is: its callers wait, not fail
    assert busy is not None and busy[0] == key and 0 < busy[1] <= InFlightLimit.SPACING
    clock.advance(0.1)
    _answer(held, clock, latency=0.1)
    held = _lease(second, key)  # answered: the next may go
    assert first.acquire("openrouter") is None  # one out again, the spacing not yet passed since it left
    clock.advance(InFlightLimit.SPACING)
    assert _lease(first, key).key == key  # one more per spacing, whatever is out (as in one process)
    _answer(held, clock, status=429, hint=2.0)  # refused: what it teaches governs from now on
    assert second.acquire("openrouter") is None
    if STORE_BACKENDS[backend].clear_after:
        stores[0].clear()  # type: ignore[attr-defined]


def test_an_answer_written_after_the_window_was_counted_again_is_counted_at_the_next_answer(tmp_path: Path) -> None:
    """A short rest (a sliding window's slot about to free): the key answers after it before the other process's
    late answer of the window is written, so counting again once left the window at three — four processes learned
    windows of 3 and 4 of the provider's 5. Every answer within `RECOUNT_FOR` of the 429 counts it again."""
    clock = Clock()
    key = ApiKey("openrouter", 1, "sk-or-v1-shared-window-0003")
    first, second = _two_processes(tmp_path, key, clock)
    late = _window_with_a_late_answer(first, second, key, clock, 0.2, unrecorded=tmp_path / "state.db")
    refused = clock()
    clock.advance(second.statuses("openrouter")[0].cooldown_remaining + 0.01)
    lease = _lease(second, key)
    clock.advance(0.05)
    _answer(lease, clock)  # counted again: the late answer is not written yet
    assert _learned_window(second, key, 0.2) == 3
    _answer(late, clock, latency=0.4)  # written now, by a process that has not read that the window is learned
    lease = _lease(second, key)
    clock.advance(0.05)
    _answer(lease, clock)
    assert clock() < refused + RECOUNT_FOR  # (within it: the test's own premise)
    assert _learned_window(second, key, 0.2) == 4


def test_a_429_whose_limit_frees_now_rests_the_key_a_moment_and_teaches_nothing() -> None:
    """A reset moment already past when the 429 came (a sliding window's slot freeing as the request arrived) is a
    hint of 0, not the absence of one: read as no hint it taught a window of every answer since the last idle gap
    and rested the key on the ladder's rungs. A second such 429 within a second is read as no hint (never a spin)."""
    clock = Clock()
    key = ApiKey("openrouter", 1, "sk-or-v1-due-now-000000001")
    manager = KeyManager({"openrouter": [key]}, CooldownSettings(), store_from_url("memory://"), clock)

    def answer(status: int) -> None:
        kind = OutcomeKind.OK if status == 200 else OutcomeKind.RATE_LIMIT
        lease = _lease(manager, key)
        clock.advance(0.05)
        request = RequestRecord(clock(), "openrouter", "m", key.fingerprint, key.key_id, kind.value, status, 0.05)
        if status == 200:
            lease.succeeded(None, request)
        else:
            lease.failed(Outcome(kind, status, retry_after=0.0), request)

    for status in (200, 200, 200, 429):
        answer(status)
    assert manager.statuses("openrouter")[0].cooldown_remaining == pytest.approx(DUE_NOW_REST)
    assert manager.document(f"pace/{key.fingerprint}") == {}  # nothing learned
    clock.advance(DUE_NOW_REST)
    answer(429)  # again at once: read as no hint, the ladder's first rung
    assert manager.statuses("openrouter")[0].cooldown_remaining > 2 * DUE_NOW_REST  # 1 s from the opening
    assert Pacing.of(manager.document(f"pace/{key.fingerprint}")).backoff.step == 1
