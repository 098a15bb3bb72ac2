"""One store contract, run against every backend (memory, a real SQLite file and a real redis-server)."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import in_threads
from hypothesis import given, settings
from hypothesis import strategies as st

from llms.key_states import KeyState
from llms.state import EventKind, KeyEvent, StateError, StateStore, store_from_url
from llms.state.base import Finish, Gate, Lease, RequestLimits, RequestRecord, group_gate

NOW = 1_900_000_000.0
IDS = ["fp-a", "fp-b", "fp-c"]


@pytest.fixture
def store(state_backend: Callable[[], StateStore]) -> StateStore:
    store = state_backend()
    store.register("pool", IDS)
    return store


def test_round_robin_skips_cooling_and_excluded_keys(store: StateStore) -> None:
    assert [store.acquire("pool", NOW) for _ in range(4)] == ["fp-a", "fp-b", "fp-c", "fp-a"]
    store.cool("fp-b", NOW + 10, KeyState.RATE_LIMIT, NOW)
    picked = [store.acquire("pool", NOW) for _ in range(4)]
    assert "fp-b" not in picked and set(picked) == {"fp-a", "fp-c"}
    assert store.acquire("pool", NOW, exclude={"fp-a", "fp-c"}) is None
    assert "fp-b" in {store.acquire("pool", NOW + 10) for _ in range(3)}


def test_register_is_idempotent_and_keeps_state(store: StateStore) -> None:
    store.record_success("fp-a", NOW)
    store.register("pool", IDS)
    assert store.records(["fp-a"])[0].successes == 1
    assert {store.acquire("pool", NOW) for _ in range(6)} == set(IDS)


def test_counters_streaks_and_last_error(store: StateStore) -> None:
    assert store.record_failure("fp-a", NOW, "boom", streak=True) == 1
    assert store.record_failure("fp-a", NOW + 1, "boom again", streak=True) == 2
    assert store.record_failure("fp-a", NOW + 2, "429", streak=False) == 2
    assert store.record_success("fp-a", NOW + 3) == 2
    record = store.records(["fp-a"])[0]
    assert (record.successes, record.failures, record.consecutive_failures) == (1, 3, 0)
    assert record.last_error == "429" and record.last_used == NOW + 3


def test_a_request_taken_and_answered_changes_its_counters_and_when_the_key_was_used_nothing_else(
    store: StateStore,
) -> None:
    """Every field kept through a success and a key taken (the memory store builds those records field by field,
    on every request: a field out of place would pass every other test here)."""
    store.record_failure("fp-a", NOW, "boom", streak=True)
    store.cool("fp-a", NOW + 30, KeyState.ERRORS, NOW)
    before = store.records(["fp-a"])[0]
    store.record_success("fp-a", NOW + 1)
    answered = store.records(["fp-a"])[0]
    assert answered == replace(before, successes=1, consecutive_failures=0, last_used=NOW + 1)
    assert store.acquire("pool", NOW + 31, exclude={"fp-b", "fp-c"}) == "fp-a"
    taken = replace(store.records(["fp-a"])[0], cooldown_until=0.0, reason=None)  # (a rest over: cleared, or not)
    assert taken == replace(answered, cooldown_until=0.0, reason=None, last_used=NOW + 31)


def test_cooldown_reason_expiry_and_next_free(store: StateStore) -> None:
    store.cool("fp-a", NOW + 30, KeyState.INVALID_KEY, NOW)
    store.cool("fp-c", NOW + 5, KeyState.ERRORS, NOW)
    record = store.records(["fp-a"])[0]
    assert record.cooldown_until == NOW + 30 and record.reason == KeyState.INVALID_KEY
    assert store.next_free("pool", NOW) == ("fp-c", NOW + 5)
    assert store.next_free("pool", NOW + 6) == ("fp-a", NOW + 30)
    assert store.next_free("pool", NOW + 31) is None


def test_a_reason_is_kept_and_read_back_as_its_plain_string(store: StateStore) -> None:
    """A store keeps a reason as the string it is (`KeyState` values) and reads back that string, not an enum."""
    store.cool("fp-a", NOW + 30, KeyState.NO_CREDITS, NOW)
    store.cool_model("fp-b", "m", NOW + 30, KeyState.RATE_LIMIT, NOW)
    store.pause("pool", NOW + 30, KeyState.UPSTREAM, NOW)
    read = [store.records(["fp-a"])[0].reason, store.model_rests(["fp-b"], NOW)[0]["m"][1], store.paused("pool", NOW)]
    assert read[:2] == ["no_credits", "rate_limit"] and read[2] is not None and read[2][1] == "upstream"
    assert {type(r) for r in (read[0], read[1], read[2][1])} == {str}


def test_reset_frees_keys_and_clears_streaks(store: StateStore) -> None:
    store.record_failure("fp-a", NOW, "x", streak=True)
    store.cool("fp-a", NOW + 100, KeyState.MANUAL, NOW)
    store.reset(["fp-a"])
    record = store.records(["fp-a"])[0]
    assert record.cooldown_until <= NOW and record.consecutive_failures == 0 and record.failures == 1
    assert "fp-a" in {store.acquire("pool", NOW) for _ in range(3)}


def test_events_newest_first(store: StateStore) -> None:
    for i in range(5):
        store.add_event(KeyEvent(NOW + i, f"groq:{i}", EventKind.COOLED, f"detail {i}"))
    events = store.events(3)
    assert [e.key_id for e in events] == ["groq:4", "groq:3", "groq:2"]
    assert events[0].kind is EventKind.COOLED and events[0].detail == "detail 4"


def test_unknown_records_are_blank(store: StateStore) -> None:
    record = store.records(["never-seen"])[0]
    assert record.successes == 0 and record.cooldown_until == 0


def test_health_names_the_backend(store: StateStore) -> None:
    health = store.health()
    assert health.healthy and health.backend in ("memory", "sqlite", "redis")


def test_32_threads_lose_no_update(store: StateStore) -> None:
    def work() -> Counter[str]:
        local: Counter[str] = Counter()
        for _ in range(30):
            key_id = store.acquire("pool", NOW)
            local[key_id] += 1
            store.record_success(key_id, NOW)
        return local

    picks = sum(in_threads(32, work), Counter())
    assert sum(picks.values()) == 960 and set(picks.values()) == {320}
    assert sum(r.successes for r in store.records(IDS)) == 960


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(StateError, match=r"unknown scheme 'mongodb'.*memory://.*redis://"):
        store_from_url("mongodb://localhost")


def _request(at: float, key: str, outcome: str = "ok", latency: float = 0.25, tokens: int = 10) -> RequestRecord:
    return RequestRecord(
        at, "groq", "m", key, f"groq:{key[-1]}", outcome, 200 if outcome == "ok" else 429, latency, tokens, 2 * tokens
    )


def test_hours_older_than_the_history_kept_are_dropped_once_they_age_out(store: StateStore) -> None:
    store.retain(history_days=2, log_size=50)
    store.log_request(_request(NOW, "fp-a"))
    store.log_request(_request(NOW + 60, "fp-b"))
    store.log_request(_request(NOW + 3 * 86400, "fp-a"))  # two days later: the first hour ages out
    store.log_request(_request(NOW + 3 * 86400 + 60, "fp-c"))
    assert sorted((h.key, h.hour >= NOW + 86400) for h in store.history(NOW - 3600)) == [
        ("fp-a", True),
        ("fp-c", True),
    ]


def test_the_request_log_keeps_the_newest_and_the_history_adds_up_per_key_and_hour(store: StateStore) -> None:
    store.retain(history_days=2, log_size=50)
    for i in range(120):
        outcome = "rate_limit" if i % 10 == 0 else "ok"
        if outcome == "ok":
            store.record_success("fp-a", NOW + i, _request(NOW + i, "fp-a", latency=0.04 if i % 2 else 2.5))
        else:
            store.record_failure("fp-a", NOW + i, "429", streak=False, request=_request(NOW + i, "fp-a", outcome))
    store.log_request(_request(NOW + 200, "fp-b", "request_error"))
    log = store.request_log(1000)
    assert 50 <= len(log) <= 150 and log[0].outcome == "request_error" and log[1].at == NOW + 119
    assert store.request_log(3) == log[:3]
    hours = {(h.key, h.hour): h for h in store.history(NOW - 3600)}
    a = [h for (key, _), h in hours.items() if key == "fp-a"]
    assert sum(h.requests for h in a) == 120 and sum(h.rate_limits for h in a) == 12
    assert sum(h.successes for h in a) == 108 and sum(h.tokens_out for h in a) == 2400
    assert sum(sum(h.latency_buckets) for h in a) == 120 and a[0].key_id == "groq:a"
    b = next(h for (key, _), h in hours.items() if key == "fp-b")
    assert (b.requests, b.errors) == (1, 1)
    later = NOW + 3 * 86400  # three days on, with two days kept: the old hours are gone
    store.record_success("fp-a", later, _request(later, "fp-a"))
    assert {h.hour for h in store.history(NOW - 3600)} == {later - later % 3600}


def test_the_sends_of_some_keys_answers_are_read_from_the_newest_of_the_log(store: StateStore) -> None:
    """What a learned window is counted from on a shared store (`LearnedLimits._seen`): every process's answers
    of the keys, from the log's newest `log_size` records only, read where the log is (SQL, a Redis script)."""
    store.retain(history_days=2, log_size=40)
    for i in range(60):
        key, outcome = IDS[i % 3], "rate_limit" if i % 7 == 0 else "ok"
        record = replace(_request(NOW + i, key, outcome, latency=0.5 + i / 100), model=f"m{i % 2}")
        store.log_request(record)
    log = store.request_log(1000)
    for keys, model in [({"fp-a"}, None), ({"fp-a", "fp-c"}, None), ({"fp-b"}, "m1"), (set(), None)]:
        answered = [r for r in log if r.key in keys and r.outcome == "ok" and model in (None, r.model)]
        expected = sorted(r.at - r.latency for r in answered)
        assert store.sent_times(keys, model) == pytest.approx(expected, abs=1e-9)
    assert min(store.sent_times({"fp-a", "fp-b", "fp-c"})) >= NOW + 20 - 1  # only the newest 40 records


def test_configured_limits_are_counted_in_the_store(store: StateStore) -> None:
    per_minute = RequestLimits(per_minute=3, per_day=None, day_ends_at=NOW + 1000)
    assert [store.spend("fp-a", NOW + i, per_minute) for i in range(2)] == [(True, None), (True, None)]
    counted, rest = store.spend("fp-a", NOW + 2, per_minute)  # the minute's last slot
    assert counted and rest == pytest.approx(58)
    counted, rest = store.spend("fp-a", NOW + 3, per_minute)  # none left: refused, not counted
    assert not counted and rest == pytest.approx(57)
    assert store.spend("fp-b", NOW + 3, per_minute) == (True, None)  # per key
    assert store.spend("fp-a", NOW + 61, per_minute) == (True, None)  # a sliding minute: NOW+1 and NOW+2 left
    counted, rest = store.spend("fp-a", NOW + 61.5, per_minute)
    assert counted and rest == pytest.approx(0.5)  # NOW+2 leaves the window at NOW+62
    per_day = RequestLimits(per_minute=None, per_day=2, day_ends_at=NOW + 500)
    assert store.spend("fp-c", NOW, per_day) == (True, None)
    counted, rest = store.spend("fp-c", NOW + 10, per_day)
    assert counted and rest == pytest.approx(490)
    assert store.spend("fp-c", NOW + 20, per_day)[0] is False
    later = RequestLimits(per_minute=None, per_day=2, day_ends_at=NOW + 90_000)
    assert store.spend("fp-c", NOW + 600, later) == (True, None)  # a new day


def test_a_disabled_key_is_never_acquired_until_enabled(store: StateStore) -> None:
    store.set_disabled(["fp-b"], True)
    assert {store.acquire("pool", NOW) for _ in range(6)} == {"fp-a", "fp-c"}
    store.cool("fp-b", NOW + 5, KeyState.RATE_LIMIT, NOW)
    store.reset(["fp-b"])
    assert store.records(["fp-b"])[0].disabled and "fp-b" not in {store.acquire("pool", NOW) for _ in range(6)}
    store.cool("fp-a", NOW + 5, KeyState.RATE_LIMIT, NOW)
    assert store.next_free("pool", NOW) == ("fp-a", NOW + 5)  # a disabled key never "frees up"
    store.set_disabled(["fp-b"], False)
    assert "fp-b" in {store.acquire("pool", NOW) for _ in range(6)}


def _lease(token: str, until: float = NOW + 60) -> Lease:
    return Lease(token, until)


def test_in_flight_leases_obey_the_reported_quota_and_expire_when_a_process_dies(store: StateStore) -> None:
    store.register("solo", ["fp-z"])
    assert store.acquire("solo", NOW, lease=_lease("t1")) == "fp-z"  # nothing known: no limit
    store.record_success("fp-z", NOW, finish=Finish("t1", remaining=2, window_ends=NOW + 30))
    assert store.acquire("solo", NOW, lease=_lease("t2")) == "fp-z"
    assert store.acquire("solo", NOW, lease=_lease("t3")) == "fp-z"
    assert store.acquire("solo", NOW, lease=_lease("t4")) is None  # two in flight, two left: no third
    store.record_failure("fp-z", NOW + 1, "boom", streak=True, finish=Finish("t2"))
    assert store.acquire("solo", NOW + 1, lease=_lease("t5")) == "fp-z"  # a slot came back
    store.end_lease("fp-z", Finish("t5"), NOW + 1)
    # Window over: what was left is still left (a count only grows once its window ends), so t3 and one more.
    assert store.acquire("solo", NOW + 31, lease=_lease("t6", NOW + 100)) == "fp-z"
    assert store.acquire("solo", NOW + 31, lease=_lease("t7", NOW + 100)) is None
    store.end_lease("fp-z", Finish("t6"), NOW + 31)
    assert store.acquire("solo", NOW + 61, lease=_lease("t8", NOW + 120)) == "fp-z"  # t3's process died: freed
    assert store.acquire("solo", NOW + 61, lease=_lease("t9", NOW + 120)) == "fp-z"
    assert store.acquire("solo", NOW + 61, lease=_lease("t10", NOW + 120)) is None
    assert store.acquire("solo", NOW + 61) == "fp-z"  # without a lease (probes), the gate does not apply


def test_a_shared_store_keeps_the_sends_of_requests_out_in_the_order_it_was_told_them(store: StateStore) -> None:
    """`note_sent`: a request out is kept with when it left, whether the key's gate counts it or not, and is told
    the sends kept before it on its account's gates (two sent at one moment are told apart by the order); it never
    counts against a count read later (that count already holds the requests sent before it), and is kept until
    its lease ends or runs out; each is told with the tokens its request may spend. A store no other process shares
    keeps none: its process's own count holds all."""
    group, members = group_gate("acct", "team"), ["fp-x", "fp-y"]
    store.register("acct", members, {"fp-x": group, "fp-y": group})
    told = []
    for token, sent, tokens in (("late", NOW + 1, 150), ("t2", NOW, 0), ("t1", NOW, 50)):
        lease = Lease(token, NOW + 30, sent=sent, tokens=tokens)
        assert store.acquire("acct", NOW + 1, lease=lease) is not None
        told.append(store.note_sent("fp-x", lease, members, NOW + 1))
    if not store.SHARED:
        assert told == [[], [], []] and store.sends_out(members, "", NOW + 1) == []
        return
    assert told == [[], [(NOW + 1, 150)], [(NOW, 0), (NOW + 1, 150)]]
    assert store.sends_out(["fp-y"], "", NOW + 1) == [NOW, NOW, NOW + 1]
    assert store.sends_out(members, "gpt", NOW + 1) == []  # another model's gates
    store.end_lease("fp-y", Finish("t2", remaining=1, window_ends=NOW + 30), NOW + 2)  # the account counts now
    assert store.sends_out(members, "", NOW + 2) == [NOW, NOW + 1]
    counted = Lease("counted", NOW + 20, sent=NOW + 2)
    assert store.acquire("acct", NOW + 2, lease=counted) is not None  # 1 left: the sends kept do not count
    assert store.note_sent("fp-y", counted, members, NOW + 2) == [(NOW, 50), (NOW + 1, 150)]
    assert store.acquire("acct", NOW + 2, lease=Lease("full", NOW + 20)) is None
    assert store.sends_out(members, "", NOW + 25) == [NOW, NOW + 1]  # "counted" ran out
    store.renew_leases({group: {"late": NOW + 90}}, NOW + 25)
    assert store.sends_out(members, "", NOW + 60) == [NOW + 1]
    store.end_lease("fp-x", Finish("late"), NOW + 60)
    assert store.sends_out(members, "", NOW + 60) == []


def test_a_send_a_dead_process_left_in_a_sqlite_file_is_swept_by_the_next_one_kept(tmp_path: Path) -> None:
    """A gate that counts nothing never sweeps its leases: the sends kept beside it (`note_sent`) that ran out
    go when the next one is kept on the account's gates, so a file shared for months does not grow with them."""
    path = tmp_path / "state.db"
    store = store_from_url(f"sqlite://{path}", failover=False)
    store.register("pool", IDS)
    store.note_sent("fp-a", Lease("dead", NOW + 5, sent=NOW), ["fp-a"], NOW)  # its process died: never ended
    assert store.note_sent("fp-a", Lease("alive", NOW + 60, sent=NOW + 10), ["fp-a"], NOW + 10) == []
    with sqlite3.connect(path) as db:
        assert [token for (token,) in db.execute("SELECT token FROM leases")] == ["alive"]
    store.close()


def test_keys_of_a_shared_limit_group_share_one_gate(store: StateStore) -> None:
    """An answer on either key reports the account's count: requests in flight on both are held against it."""
    shared = group_gate("acct", "team")
    store.register("acct", ["fp-x", "fp-y", "fp-solo"], {"fp-x": shared, "fp-y": shared})
    assert store.gate("fp-x") == store.gate("fp-y") == shared and store.gate("fp-solo") == "fp-solo"
    assert store.acquire("acct", NOW, lease=_lease("t1")) == "fp-x"
    store.record_success("fp-x", NOW, finish=Finish("t1", remaining=2, window_ends=NOW + 30))
    taken = [store.acquire("acct", NOW, exclude={"fp-solo"}, lease=_lease(f"t{i}")) for i in (2, 3, 4)]
    assert sorted(filter(None, taken)) == ["fp-x", "fp-y"] and taken[-1] is None  # two left for the account
    assert store.busy_until("acct", NOW + 1) in {("fp-x", NOW + 60), ("fp-y", NOW + 60)}
    store.renew_leases({shared: {"t2": NOW + 20, "t3": NOW + 20}}, NOW + 5)
    assert store.acquire("acct", NOW + 15, exclude={"fp-solo"}, lease=_lease("t5")) is None  # renewed: held
    store.end_lease("fp-y", Finish("t3"), NOW + 16)
    assert store.acquire("acct", NOW + 16, exclude={"fp-solo"}, lease=_lease("t6")) is not None


def test_a_key_whose_count_says_none_are_left_is_busy_until_its_window_ends_though_no_lease_holds_it(
    store: StateStore,
) -> None:
    """A learned window's count reaches the gate with no lease and no rest (`LearnedLimits.refresh_gates`: "0 left
    for 0.09 s"). Read as neither busy nor resting, the key sent the callers of a process with nothing in flight to
    sleep until another key's rest ended, 10 s on; it is busy until the window ends, as a key whose slots are held."""
    store.register("solo", ["fp-z"])
    store.end_lease("fp-z", Finish("", remaining=0, window_ends=NOW + 0.5), NOW)  # a lease no one holds
    assert store.acquire("solo", NOW + 0.1, lease=_lease("early")) is None
    assert store.busy_until("solo", NOW + 0.1) == ("fp-z", NOW + 0.5)
    assert store.busy_until("solo", NOW + 0.5) is None  # its window has ended: a slot is free
    assert store.acquire("solo", NOW + 0.5, lease=_lease("on time")) == "fp-z"
    store.end_lease("fp-z", Finish("", remaining=2, window_ends=NOW + 30), NOW + 1)
    assert store.acquire("solo", NOW + 1, lease=_lease("second")) == "fp-z"
    assert store.busy_until("solo", NOW + 2) == ("fp-z", NOW + 60)  # both slots held past the window's end
    store.end_lease("fp-z", Finish("", remaining=0, window_ends=NOW + 9, part="m"), NOW + 3)  # a model's count
    assert store.busy_until("solo", NOW + 3, "m") == ("fp-z", NOW + 9)
    store.cool_model("fp-z", "m", NOW + 9, KeyState.RATE_LIMIT, NOW + 3)  # resting for that model: not busy
    assert store.busy_until("solo", NOW + 3, "m") is None


def test_a_renewed_lease_holds_its_slot_and_a_dead_holders_frees_when_it_stops_being_renewed(
    store: StateStore,
) -> None:
    store.register("solo", ["fp-z"])
    store.probe_next("fp-z")  # one request at a time
    assert store.busy_until("solo", NOW) is None
    assert store.acquire("solo", NOW, lease=_lease("live", NOW + 10)) == "fp-z"
    assert store.busy_until("solo", NOW + 1) == ("fp-z", NOW + 10)
    store.renew_leases({"fp-z": {"live": NOW + 18}}, NOW + 8)  # its holder is alive: it renews
    assert store.acquire("solo", NOW + 12, lease=_lease("other", NOW + 22)) is None
    assert store.busy_until("solo", NOW + 12) == ("fp-z", NOW + 18)
    store.end_lease("fp-z", Finish("live"), NOW + 13)
    store.renew_leases({"fp-z": {"live": NOW + 30}}, NOW + 13)  # a renewal after the end brings nothing back
    assert store.busy_until("solo", NOW + 13) is None
    assert store.acquire("solo", NOW + 13, lease=_lease("dies", NOW + 23)) == "fp-z"  # and its holder dies
    assert store.acquire("solo", NOW + 22, lease=_lease("waits", NOW + 32)) is None
    assert store.acquire("solo", NOW + 23.5, lease=_lease("takes", NOW + 33)) == "fp-z"  # freed, unrenewed
    store.cool("fp-z", NOW + 100, KeyState.RATE_LIMIT, NOW + 24)
    assert store.busy_until("solo", NOW + 24) is None  # a cooling key is not "busy": it is cooling


def test_a_count_read_before_the_one_held_does_not_replace_it_once_that_window_ends(store: StateStore) -> None:
    """Slow answers come back out of order: a count the provider read 12 s ago, whose window ended long before it
    arrived, said more was left than the newer count the gate holds — read as current, it sent a burst into a full
    window (issue 23: 0.15 429s per answer on a sliding window with 10 s answers)."""
    store.register("solo", ["fp-z"])
    store.record_success("fp-z", NOW + 10, finish=Finish("", remaining=0, window_ends=NOW + 11, read_at=NOW + 9))
    store.end_lease("fp-z", Finish("", remaining=11, window_ends=NOW + 1.3, read_at=NOW), NOW + 12)
    taken = [store.acquire("solo", NOW + 12, lease=_lease(f"t{i}")) for i in range(3)]
    assert taken == ["fp-z", None, None]  # the newer count's window ended: one, as before, not eleven
    store.end_lease("fp-z", Finish("t0", remaining=4, window_ends=NOW + 13, read_at=NOW + 12), NOW + 12.5)
    taken = [store.acquire("solo", NOW + 12.5, lease=_lease(f"u{i}")) for i in range(5)]
    assert taken == ["fp-z"] * 4 + [None]  # a newer count replaces it
    for i in range(4):
        store.end_lease("fp-z", Finish(f"u{i}"), NOW + 14)
    store.end_lease("fp-z", Finish("", remaining=1, window_ends=NOW + 12.2, read_at=NOW + 11), NOW + 14)
    taken = [store.acquire("solo", NOW + 14, lease=_lease(f"v{i}")) for i in range(3)]
    assert taken == ["fp-z", None, None]  # an older count that says less is taken: the careful one


def test_a_count_taken_a_moment_before_the_one_held_but_written_after_it_does_not_replace_it(
    store: StateStore,
) -> None:
    """Writers read their clock, then wait for the store's lock: on a SQLite file under 16 threads an answer's
    count ("6 left", worked out 20 ms before) was written after a newer one ("5 left"). Read as a count from the
    clock's future, the newer one was replaced, and a clock window of 10 took 11 or 12 (issue 23)."""
    store.register("solo", ["fp-z"])
    store.end_lease("fp-z", Finish("", 5, window_ends=NOW + 2), NOW + 0.185)
    store.end_lease("fp-z", Finish("", 6, window_ends=NOW + 2), NOW + 0.165)
    taken = [store.acquire("solo", NOW + 0.17, lease=_lease(f"t{i}")) for i in range(6)]
    assert taken == ["fp-z"] * 5 + [None]  # taken with a clock read a moment before too: the count held binds


def test_a_count_whose_window_is_current_replaces_one_whose_window_has_ended(store: StateStore) -> None:
    """A count read before the one held, but of a window still current, where the held one's has ended: the
    current one binds. (A learned count, read as it was worked out, came after the first answers of a new fixed
    window were sent; their counts, read before it, were dropped, and the ended window let the key's whole size
    into the full one: 28 429s in 60 windows of 5 a second under 1 s answers.)"""
    store.register("solo", ["fp-z"])
    store.record_success("fp-z", NOW + 10, finish=Finish("", 0, window_ends=NOW + 10.5, read_at=NOW + 10, size=5))
    store.end_lease("fp-z", Finish("", remaining=1, window_ends=NOW + 12, read_at=NOW + 9.5, size=5), NOW + 11)
    taken = [store.acquire("solo", NOW + 11, lease=_lease(f"t{i}")) for i in range(3)]
    assert taken == ["fp-z", None, None]  # the one it has left, not the five of a window over


def test_a_later_reading_of_the_same_limit_replaces_a_tighter_count_still_current(store: StateStore) -> None:
    """A bucket's count grows as it drips: read 0.2 s apart, "1 of 60 left, full in 9.8 s" and then "3 left, full
    in 9.5 s". Held to the lowest until its reset, a bucket of 60 a 10 s under 0.2 s answers went one request at a
    time (0.96 of its quota). Counts of one burst, read within a trip's spread, keep the tighter one."""
    store.register("solo", ["fp-z"])
    store.end_lease("fp-z", Finish("", 1, window_ends=NOW + 9.8, read_at=NOW, size=60), NOW + 0.2)
    store.end_lease("fp-z", Finish("", 5, window_ends=NOW + 9.9, read_at=NOW + 0.05, size=60), NOW + 0.25)
    assert [store.acquire("solo", NOW + 0.3, lease=_lease(f"t{i}")) for i in range(2)] == ["fp-z", None]
    store.end_lease("fp-z", Finish("", 3, window_ends=NOW + 9.7, read_at=NOW + 0.2, size=60), NOW + 0.4)
    taken = [store.acquire("solo", NOW + 0.4, lease=_lease(f"u{i}")) for i in range(3)]
    assert taken == ["fp-z", "fp-z", None]  # three left, one of them held by t0


def test_a_count_that_gave_its_windows_size_allows_all_of_it_once_the_window_is_back(store: StateStore) -> None:
    """OpenAI's reset is when the window is back to its initial state: an answer slower than the window reads one
    already over, and held to what was left then (none), a key of 5 a second was kept to one request at a time.
    A count taken after it that says less, without a size (a learned window's), binds as before."""
    store.register("solo", ["fp-z"])
    store.record_success("fp-z", NOW + 2, finish=Finish("", remaining=0, window_ends=NOW + 1, read_at=NOW, size=5))
    taken = [store.acquire("solo", NOW + 2, lease=_lease(f"t{i}")) for i in range(6)]
    assert taken == ["fp-z"] * 5 + [None]
    assert store.busy_until("solo", NOW + 2) == ("fp-z", NOW + 60)  # every slot of the five held
    for i in range(5):
        store.end_lease("fp-z", Finish(f"t{i}"), NOW + 2.5)
    store.end_lease("fp-z", Finish("", remaining=0, window_ends=NOW + 3), NOW + 2.5)  # a learned count: no size
    assert store.acquire("solo", NOW + 2.5, lease=_lease("u0")) is None
    taken = [store.acquire("solo", NOW + 3.5, lease=_lease(f"u{i}")) for i in (1, 2)]
    assert taken == ["fp-z", None]  # its window over: what was left is still left, one at a time


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 300).map(lambda t: t / 10)),
        min_size=1,
        max_size=12,
        unique_by=lambda r: r[1],
    ),
    arrival=st.randoms(use_true_random=False),
)
def test_whatever_order_late_answers_arrive_in_the_gate_never_holds_more_than_the_newest_count_read(
    readings: list[tuple[int, float]], arrival: random.Random
) -> None:
    """Each count's window (half a second) ended long before its answer came. The one read last holds, or a count
    read before it that says less (clocks of machines sharing a store differ: an older count is taken only where
    it is the more careful), never one that says more."""
    gate, now = Gate({}), NOW + 100
    order = arrival.sample(readings, len(readings))
    for remaining, read in order:
        gate.end(Finish("", remaining, NOW + read + 0.5, read_at=NOW + read), now, succeeded=True)
        now += 1
    newest = max(readings, key=lambda r: r[1])
    after = order[order.index(newest) :]
    assert gate.remaining == min(remaining for remaining, _ in after)


def test_a_probing_key_takes_one_request_at_a_time_until_one_succeeds(store: StateStore) -> None:
    store.register("solo", ["fp-z"])
    store.probe_next("fp-z")
    assert store.acquire("solo", NOW, lease=_lease("t1")) == "fp-z"
    assert store.acquire("solo", NOW, lease=_lease("t2")) is None
    store.record_success("fp-z", NOW, finish=Finish("t1"))
    assert store.acquire("solo", NOW, lease=_lease("t3")) == "fp-z"
    assert store.acquire("solo", NOW, lease=_lease("t4")) == "fp-z"


def test_documents_change_atomically_and_read_back_as_stored(store: StateStore) -> None:
    assert store.documents(["pace/a", "pace/b"]) == [{}, {}]

    def bump(document: dict) -> dict:
        return {"count": document.get("count", 0) + 1, "rest": 1.5, "seen": [[NOW, "fp-a", None]]}

    results = in_threads(16, lambda: [store.change("pace/a", bump)["count"] for _ in range(10)])
    counts = [count for result in results for count in result]
    assert sorted(counts) == list(range(1, 161))  # every change saw the one before it: no lost update
    assert store.documents(["pace/b", "pace/a"]) == [{}, {"count": 160, "rest": 1.5, "seen": [[NOW, "fp-a", None]]}]
    assert store.change("pace/b", lambda d: d) == {}
