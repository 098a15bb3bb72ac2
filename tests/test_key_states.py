"""Every key state and every outcome, walked through every view: each view says what the state's own facts say
(`llms.key_states`, `OutcomeKind`'s properties), never a fallback made from its internal name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dashboard import status
from dashboard.fallback import _held, _passing, failed_word
from dashboard.history import OUTCOME_WORDS
from dashboard.text import STATE_COLORS, kind_word, reason_words, state_label, utc_day
from dashboard.triage import FREES_ITSELF, NEEDS_PERSON, triage
from llms.alerts import incidents
from llms.key_manager import _PARKED
from llms.key_states import PARKED_REASONS, KeyState
from llms.key_status import state_of
from llms.outcomes import Attempt, OutcomeKind, describe_states
from llms.prober import LONG_COOLDOWNS
from llms.state import store_from_url
from tests.test_dashboard_status import NOW, key, provider

REASONS = [s for s in KeyState if s not in (KeyState.AVAILABLE, KeyState.DISABLED, KeyState.PAUSED)]
"""The states a key is in because of a cooldown reason."""


def in_state(state: KeyState) -> tuple[str, bool]:
    """The status table's state for a key in `state` (and whether its provider is paused)."""
    if state is KeyState.DISABLED:
        return state_of(key("groq:1", disabled=True)), False
    if state is KeyState.AVAILABLE:
        return state_of(key("groq:1")), False
    if state is KeyState.PAUSED:
        return state_of(key("groq:1"), paused=True), True
    return state_of(key("groq:1", state.value, 60.0)), False


def test_every_stored_reason_is_a_state_with_facts() -> None:
    """What parks a key is a reason the key manager stores (an outcome's `parks_as`), and what a store reads back
    of each reason is the same state again, with its facts."""
    assert {k.parks_as for k in OutcomeKind if k.parks_as} <= set(REASONS)
    assert all(k.parks_as.facts.parked for k in OutcomeKind if k.parks_as)
    store = store_from_url("memory://")
    store.register("groq", [s.value for s in REASONS])
    for state in REASONS:
        store.cool(state.value, NOW + 60, state, NOW)
        assert KeyState.of(store.records([state.value])[0].reason) is state
    assert all(s.facts for s in KeyState)


@pytest.mark.parametrize("state", list(KeyState))
def test_the_status_table_shows_each_state_by_its_own_facts(state: KeyState) -> None:
    shown, _ = in_state(state)
    assert shown == state.value
    assert state_label(shown) == state.facts.label and STATE_COLORS[shown] == state.facts.color
    pills = [pill for pill, states in status.FILTERS.items() if states is not None and shown in states]
    assert pills == [state.facts.filter]
    if state is not KeyState.AVAILABLE:
        assert triage(shown) == (NEEDS_PERSON if state.needs_person else FREES_ITSELF)
        assert state.needs_person != state.facts.frees_itself
    assert status.category(shown) in ("available", "disabled", "parked", "cooling")
    assert (status.category(shown) == "parked") == state.facts.parked


@pytest.mark.parametrize("state", REASONS)
def test_a_reason_reads_by_its_facts_on_the_status_page_in_the_chat_trail_and_in_messages(state: KeyState) -> None:
    resting = key("groq:1", state.value, 60.0)
    assert reason_words(state.value) == state.facts.cause
    assert _held(state.value) == state.facts.held
    assert _passing(resting) == state.facts.frees_itself
    assert describe_states([state.value]) == f"1 {state.facts.words}"


@pytest.mark.parametrize("state", [s for s in KeyState if s.facts.parked or s is KeyState.DISABLED])
def test_a_parked_or_disabled_key_is_an_alert_in_its_own_words(state: KeyState) -> None:
    parked = key("groq:1", state.value, 86_400.0, disabled=state is KeyState.DISABLED)
    found = incidents([provider("groq", parked, key("groq:2"))])
    assert found["key:groq:1"].text.endswith(f"is {state.facts.words}")


def test_parked_states_are_the_ones_the_key_manager_parks_and_the_prober_revives() -> None:
    assert {k.parks_as for k in OutcomeKind if k.parks_as} == {s for s in KeyState if s.facts.parked}
    assert {k: r.value for k, r in _PARKED.items()} == {k: k.parks_as for k in OutcomeKind if k.parks_as}
    assert {s.value for s in KeyState if s.facts.parked} == PARKED_REASONS
    assert {s.value for s in KeyState if s.facts.probed} == LONG_COOLDOWNS and LONG_COOLDOWNS <= PARKED_REASONS


@pytest.mark.parametrize("kind", list(OutcomeKind))
def test_every_outcome_reads_by_its_facts_in_the_log_the_trail_and_a_verdict(kind: OutcomeKind) -> None:
    assert OUTCOME_WORDS[kind.value] == kind.logged
    assert kind_word(kind.value, 503) == (f"error {503}" if kind is OutcomeKind.TRANSIENT else kind.word)
    attempt = Attempt("groq:1", kind, 400, "")
    expected = {OutcomeKind.TRANSIENT: "failed (400)"}.get(kind) or kind.failed or kind.word
    assert failed_word(attempt) == expected
    if kind.parks_as is not None:
        assert kind.failed == kind.parks_as.facts.held  # the trail says what the parked key is


def test_a_provider_pause_reads_as_its_reason() -> None:
    paused = provider("groq", key("groq:1"), paused_until=NOW + 8)
    assert state_of(paused.keys[0], paused=True) == KeyState.PAUSED
    assert KeyState.UPSTREAM.facts.cause in status.pause_text(paused, NOW)


def test_a_spend_cap_lifting_at_midnight_reads_as_that_day_though_its_rest_ends_a_round_trip_early() -> None:
    midnight = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert [utc_day(midnight - 0.3), utc_day(midnight), utc_day(midnight + 0.3)] == ["1 Jan"] * 3
    assert utc_day(midnight - 3600) == "31 Dec"
