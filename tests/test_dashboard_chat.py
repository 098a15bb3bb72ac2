"""The chat's rotation story (fallback badge, live trail, retry), demo pacing and the Simulate panel, driven by
AppTest against the simulator over real HTTP (fixtures and helpers shared with tests/test_dashboard.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.chat import first_piece
from dashboard.client import build_backend, get_client
from llms.cooldown import SLOT_MARGIN
from simulator import DEMO_KEYS, Simulator
from simulator import server as simulator_server
from tests.conftest import ALL_SECRETS, SECRETS
from tests.test_dashboard import app, captions, chat, env, use_keys

__all__ = ["env"]  # the fixture, imported so pytest finds it here

BADGE = re.compile(r":orange-badge\[:material/alt_route: (.*?)\](?: :blue-badge\[[^\]]*\])?$")
KEY_BADGE = re.compile(r"(?:^|\] ):blue-badge\[:material/key: (.*)\]$")
DEMO_SECRETS = tuple(s for keys in DEMO_KEYS.values() for s in keys)


def badges(at: AppTest, index: int = -1) -> list[str]:
    """The fallback badge texts in one chat message (unescaped)."""
    found = (BADGE.match(m.value) for m in at.chat_message[index].markdown)
    return [m.group(1).replace("\\", "") for m in found if m]


def key_badges(at: AppTest) -> list[str]:
    """The "which key answered" badge of each answer, in order (unescaped)."""
    found = (KEY_BADGE.search(m.value) for message in at.chat_message for m in message.markdown)
    return [m.group(1).replace("\\", "") for m in found if m]


def expanders(at: AppTest, index: int = -1) -> list[str]:
    return [e.label for e in at.chat_message[index].expander]


def trail(at: AppTest, index: int = -1) -> tuple[str, list[str]] | None:
    """(label, lines) of the live trail left in a chat message, or None."""
    statuses = at.chat_message[index].status
    if not statuses:
        return None
    [status] = statuses
    return status.label.replace("\\", ""), status.markdown[0].value.replace("\\", "").split("  \n")


def page_text(at: AppTest) -> str:
    """Everything the page shows as text, tables included."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "error", "warning", "info", "toast", "text", "code"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [e.label for e in at.expander] + [s.label for s in at.status]
    parts += [f.value.to_string() for f in at.dataframe]
    return "\n".join(parts)


def assert_no_secrets(at: AppTest, secrets: Iterable[str] = ALL_SECRETS + DEMO_SECRETS) -> None:
    shown = page_text(at)
    leaked = [s for s in secrets if s in shown or s[-12:] in shown]
    assert not leaked, "a key (or a recognisable part of one) is on the page"


def panel() -> AppTest:
    """The Simulate panel alone, on the same cached backend as the app (st.cache_resource is per process)."""

    def script() -> None:
        from dashboard.client import get_backend
        from dashboard.simulate import simulate_panel

        simulate_panel(get_backend())

    return AppTest.from_function(script, default_timeout=15)


def key_reason(key_id: str) -> str | None:
    return next(k.reason for s in get_client().admin.provider_statuses() for k in s.keys if k.key_id == key_id)


# --- fallback badge, trail, expander ------------------------------------------------------------------------------


def test_fallback_badge_and_trail_only_when_the_first_choice_did_not_answer(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    use_keys(env, sim, {"openrouter": 1, "groq": 1}, limits={"openrouter:1": (1, 60.0)})
    at = chat(app().run(), "first")
    assert captions(at)[-1].startswith("openrouter · ")
    assert badges(at) == [] and expanders(at) == [] and trail(at) is None, "the first choice answered: no story"

    chat(at, "second")  # openrouter:1 answers 429 now, Groq answers
    assert "Simulated groq reply to: second" in [m.value for m in at.chat_message[-1].markdown]
    [badge] = badges(at)
    assert re.fullmatch(r"OpenRouter → Groq · 1 key rate-limited · next frees in (5\d|60) s", badge), badge
    assert expanders(at) == ["2 attempts"]
    assert trail(at) == (
        "1 key skipped, groq:1 answered",
        ["✗ openrouter:1 rate-limited", "↪ falling back to Groq", "✓ groq:1 answered"],
    )
    assert at.chat_message[-1].status[0].state == "complete"

    chat(at, "third")  # openrouter:1 is known to cool: Groq answers at once, still not the first choice
    assert re.fullmatch(r"OpenRouter → Groq · 1 key rate-limited · next frees in \d+ s", badges(at)[0])
    assert expanders(at) == [] and trail(at) is None, "one attempt: no expander, no trail"
    assert badges(at, 1) == [] and len(badges(at, 3)) == 1, "history redraws each answer's own badge"
    assert_no_secrets(at)


def test_a_long_badge_wraps_under_its_answer_instead_of_ending_in_an_ellipsis(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    """Streamlit cuts a badge at the bubble's edge with "…": on a phone the fallback badge lost its cause and
    countdown. The chat page lets a badge under an answer wrap (drawn, at 390 px, in tests/test_browser.py)."""
    use_keys(env, sim, {"openrouter": 1})
    at = app().run()
    [style] = [h.proto.body for h in at.get("html") if "stMarkdownBadge" in h.proto.body]
    assert '[data-testid="stChatMessage"] span.stMarkdownBadge' in style and "white-space: normal" in style
    chat(at, "Hello")
    assert captions(at)[-1].startswith("openrouter · ")


def test_badge_names_the_keys_when_a_later_key_of_the_first_provider_answers(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    use_keys(env, sim, {"openrouter": 2}, limits={"openrouter:1": (0, 60.0)})
    at = chat(app().run(), "Hello")
    [badge] = badges(at)
    assert re.fullmatch(r"openrouter:1 → openrouter:2 · 1 key rate-limited · next frees in (59|60|61) s", badge)
    assert expanders(at) == ["2 attempts"]


@pytest.mark.slow
def test_trail_sees_each_failure_while_the_next_key_is_still_answering(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """The trail is live because the failover runs in a worker thread, reporting each attempt (`on_attempt`)
    while the page's thread polls."""
    use_keys(env, sim, {"openrouter": 1, "groq": 1}, steps={"openrouter:1": ["rate_limit"]})
    sim.add_key("groq", SECRETS["groq"][0], latency=0.8, name="groq:1")  # slow to answer
    backend = build_backend()
    seen: list[bool] = []
    heard: list[str] = []

    def poll() -> None:
        seen.append("openrouter:1" in heard)

    try:
        stream = backend.client.chat_stream(
            [{"role": "user", "content": "hi"}], on_attempt=lambda attempt: heard.append(attempt.key_id)
        )
        assert first_piece(stream, poll) == "Simulated groq reply "
        assert "".join(stream) and stream.result is not None
    finally:
        backend.close()
    assert seen.count(True) >= 3, "the failure showed while groq:1 was still working on the answer"


def test_abandoned_run_frees_the_key_once_the_failover_ends(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """A new message abandons the run mid-failover (Streamlit raises from the page's next call)."""

    class NewMessage(BaseException):
        pass

    def poll() -> None:
        raise NewMessage

    use_keys(env, sim, {"groq": 1})
    sim.add_key("groq", SECRETS["groq"][0], latency=0.5, name="groq:1")
    backend = build_backend()
    try:
        with pytest.raises(NewMessage):
            first_piece(backend.client.chat_stream([{"role": "user", "content": "hi"}]), poll)
        assert backend.client.key_manager.in_flight.busy(), "the worker is still waiting for groq:1"
        deadline = time.monotonic() + 5
        while backend.client.key_manager.in_flight.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not backend.client.key_manager.in_flight.busy(), "the worker closed the stream: no slot left taken"
    finally:
        backend.close()


# --- no ghosts: an answer is redrawn where it was drawn -------------------------------------------------------------


def left_over(drawn: Any, redrawn: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Places where the run that drew `drawn` put an element and the next run, drawing `redrawn`, puts none:
    until that run ends, the browser keeps showing the old element there, faded (a ghost)."""
    found = []
    for index, child in drawn.children.items():
        there = redrawn.children.get(index)
        if there is None:
            found.append((*path, index))
        elif hasattr(child, "children") and hasattr(there, "children"):
            found += left_over(child, there, (*path, index))
    return found


def test_an_answer_is_redrawn_in_place_so_nothing_of_it_shows_twice(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """While the next answer streams, the previous one's caption was drawn twice (one faded), and the error box
    twice while a retry waited: the history drew an answer in other places than the run that streamed it."""
    use_keys(env, sim, {"groq": 2}, steps={"groq:1": ["rate_limit"]})  # a trail, a badge, a caption, attempts
    at = chat(app().run(), "Hello")
    streamed = at.chat_message[-1]
    assert streamed.caption and trail(at) is not None
    at.run()  # the next run (the next message's, or a retry's) draws it from the history first
    assert at.chat_message[-1].caption[0].value == streamed.caption[0].value
    assert left_over(streamed, at.chat_message[-1]) == []

    sim.set_steps(SECRETS["groq"][1], "rate_limit")  # now every key cools: an error box and Retry
    chat(at, "Again")
    failed = at.chat_message[-1]
    assert failed.error
    at.run()
    assert left_over(failed, at.chat_message[-1]) == []


# --- retry after exhaustion ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_retry_button_resends_once_a_key_frees_up(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1}, limits={"groq:1": (1, 3.0)})  # longer than the pacing grace
    at = chat(app().run(), "one")
    assert not [b for b in at.button if b.label == "Retry when a key frees up"]

    chat(at, "two")  # the window is used up: every key cools for the rest of it
    assert at.error[0].value.startswith("All API keys are cooling down right now. The next one, groq:1")
    assert trail(at) is None, "groq:1 said it had nothing left: the client skipped it without a call"
    [retry] = [b for b in at.button if b.label == "Retry when a key frees up"]
    assert not retry.disabled

    retry.click().run()
    assert not at.exception, at.exception
    assert "Simulated groq reply to: two" in [m.value for m in at.chat_message[-1].markdown]
    assert len(at.error) == 1, "the error stays in the history, the answer comes below it"
    assert not [b for b in at.button if b.label == "Retry when a key frees up"]


def test_failed_request_leaves_an_error_trail(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 2}, steps={"groq:1": ["server_error"], "groq:2": ["overloaded"]})
    at = chat(app().run(), "Hello")
    assert trail(at) == ("No key could answer (2 attempts)", ["✗ groq:1 error 500", "✗ groq:2 error 503"])
    assert at.chat_message[-1].status[0].state == "error"
    assert expanders(at) == ["2 attempts"]


def test_retry_button_is_disabled_when_the_first_key_frees_too_late(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """An invalid key rests for the long cooldown: waiting for it would block the page for a day."""
    use_keys(env, sim, {"groq": 1}, steps={"groq:1": ["invalid_key"]})
    at = chat(app().run(), "Hello")
    assert "frees up in 24 h 00 min" in at.error[0].value
    [retry] = [b for b in at.button if b.label == "Retry when a key frees up"]
    assert retry.disabled


# --- attachments --------------------------------------------------------------------------------------------------


def test_unreadable_image_is_noted_under_the_message_for_good(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    at = app().run()
    at.chat_input[0].set_value("Look").upload("fake.png", b"not an image", "image/png")
    at.run()
    assert at.warning[0].value == "Not a readable image, left out: fake.png"
    note = "Left out, not a readable image: fake.png"
    assert [c.value for c in at.chat_message[0].caption] == [f":material/broken_image: {note}"]
    chat(at, "again")  # the transient warning is gone, the note under the first message stays
    assert not at.warning and note in at.chat_message[0].caption[0].value

    at.chat_input[0].set_value("").upload("only.png", b"junk", "image/png")
    at.run()
    assert at.warning[0].value == "Not a readable image, left out: only.png"
    assert len(at.chat_message) == 4, "a message of only unreadable files is not sent"


# --- demo pacing --------------------------------------------------------------------------------------------------


def test_demo_falls_back_to_groq_by_the_fifth_message(env: pytest.MonkeyPatch) -> None:
    """OpenRouter's demo keys allow one request per ten minutes each: pace does not matter, count does."""
    env.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    at = app().run()
    assert at.expander[0].label.startswith("**Demo mode** (no API keys are configured)")
    assert len(at.expander) == 1  # one line, and the details open from it
    for i in range(1, 5):
        chat(at, f"message {i}")
        assert captions(at)[-1].startswith(f"openrouter · openai/gpt-oss-20b:free · openrouter:{i} ("), captions(at)[-1]
        assert badges(at) == []

    chat(at, "message 5")
    assert captions(at)[-1].startswith("groq · ")
    [badge] = badges(at)
    assert re.fullmatch(r"OpenRouter → Groq · 4 keys rate-limited · next frees in (9 min \d\d|10 min 00) s", badge)
    label, lines = trail(at) or ("", [])
    assert label == "4 keys skipped, groq:1 answered"
    assert lines[-2:] == ["↪ falling back to Groq", "✓ groq:1 answered"]

    chat(at, "message 6")  # Groq keeps answering (Gemini is behind it)
    assert captions(at)[-1].startswith("groq · ") and badges(at)
    assert_no_secrets(at)


def test_demo_keys_keep_answering_after_openrouter_is_spent(env: pytest.MonkeyPatch) -> None:
    """Replaces test_dashboard's per-minute demo test: OpenRouter is spent by the fifth request and cools for the
    rest of its ten-minute window; Groq's three keys then carry eight more, and Gemini answers after them."""
    env.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    backend = build_backend()
    try:
        client = backend.client
        providers = [client.complete([{"role": "user", "content": f"n{i}"}]).provider for i in range(5)]
        assert providers == ["openrouter"] * 4 + ["groq"]
        openrouter = client.get_status_summary()["openrouter"]
        assert openrouter["available"] == 0
        assert all(540 < k["cooldown_remaining"] <= 600 + SLOT_MARGIN for k in openrouter["keys"])
        later = [client.complete([{"role": "user", "content": "more"}]).provider for _ in range(9)]
        assert later == ["groq"] * 8 + ["gemini"]
    finally:
        backend.close()


# --- the Simulate panel -------------------------------------------------------------------------------------------


def _press(at: AppTest, label: str) -> None:
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    assert not at.exception, at.exception


def _demo(env: pytest.MonkeyPatch) -> tuple[AppTest, AppTest]:
    env.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    return app().run(), panel().run()


def test_simulate_revoke_parks_the_key_as_invalid(env: pytest.MonkeyPatch) -> None:
    at, sim_panel = _demo(env)
    sim_panel.selectbox(key="simulate_key").set_value("openrouter:1")
    _press(sim_panel, "Revoke key")
    assert sim_panel.caption[-1].value.startswith("openrouter:1 is revoked")
    chat(at, "Hello")
    assert key_reason("openrouter:1") == "invalid_key"
    assert badges(at) == ["openrouter:1 → openrouter:2 · 1 key invalid"]
    assert trail(at) == (
        "1 key skipped, openrouter:2 answered",
        ["✗ openrouter:1 invalid key", "✓ openrouter:2 answered"],
    )
    assert_no_secrets(at)
    assert_no_secrets(sim_panel)


@pytest.mark.slow
def test_demo_answers_name_their_key_and_a_revoked_key_is_parked_at_once(env: pytest.MonkeyPatch) -> None:
    """Round-robin may send the next message to another key: "Send a test request now" makes the client call the
    revoked key at once; the pacing is said outside the folded banner; each answer carries its key's badge."""
    at, sim_panel = _demo(env)
    assert any("1 request per 10 minutes" in c.value for c in at.caption), "the pacing is not folded away"
    assert "Next message goes to openrouter:1" in [c.value for c in at.caption]  # the demo's key strip says
    chat(at, "One")
    chat(at, "Two")
    assert key_badges(at) == ["OpenRouter · openrouter:1", "OpenRouter · openrouter:2"]
    at.run()  # the strip is drawn before the page answers; its fragment redraws it every 2 s, a rerun at once
    assert "Next message goes to openrouter:3" in [c.value for c in at.caption]
    [strip] = [h.proto.body for h in at.get("html") if "OpenRouter" in h.proto.body]
    assert strip.count("<span title=") == 8 and "openrouter:2: available · answered last" in strip
    assert "openrouter:3: available · the next message goes here" in strip
    sim_panel.selectbox(key="simulate_key").set_value("groq:1")
    _press(sim_panel, "Revoke key")
    assert sim_panel.caption[-1].value.endswith("The next chat message goes to openrouter:3.")
    _press(sim_panel, "Send a test request now")
    said = sim_panel.caption[-1].value
    assert said.startswith("Sent a test request: groq:1: ") and "HTTP 401" in said, said
    assert said.endswith("the client now rests it (invalid key): see the Status table and alerts."), said
    assert key_reason("groq:1") == "invalid_key"
    assert_no_secrets(sim_panel)


def test_simulate_rate_limit_rests_the_key_then_it_answers_again(env: pytest.MonkeyPatch) -> None:
    at, sim_panel = _demo(env)
    sim_panel.selectbox(key="simulate_key").set_value("openrouter:1")
    _press(sim_panel, "Rate-limit key")
    chat(at, "Hello")
    assert key_reason("openrouter:1") == "rate_limit"
    assert badges(at)[0].startswith("openrouter:1 → openrouter:2 · 1 key rate-limited · next frees in ")


@pytest.mark.slow
def test_simulate_outage_sends_answers_to_the_next_provider_and_recover_brings_it_back(
    env: pytest.MonkeyPatch,
) -> None:
    at, sim_panel = _demo(env)
    sim_panel.selectbox(key="simulate_provider").set_value("groq")
    _press(sim_panel, "Provider outage")
    sim_panel.selectbox(key="simulate_provider").set_value("openrouter")
    _press(sim_panel, "Provider outage")
    chat(at, "Anyone?")
    assert captions(at)[-1].startswith("gemini · "), "OpenRouter and Groq are down: Gemini answers"
    [badge] = badges(at)
    assert badge.startswith("OpenRouter → Gemini · ")
    _, lines = trail(at) or ("", [])
    assert any(re.fullmatch(r"✗ openrouter:\d error 502", line) for line in lines), lines
    assert any(re.fullmatch(r"✗ groq:\d error 503", line) for line in lines), lines
    assert lines[-1] == "✓ gemini:1 answered"

    _press(sim_panel, "Recover")
    assert sim_panel.caption[-1].value.endswith("The client's cooldowns were reset too.")
    chat(at, "Back?")
    assert captions(at)[-1].startswith("openrouter · ") and badges(at) == [] and trail(at) is None


def test_simulate_panel_is_demo_only(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    app().run()
    assert not panel().run().button


# --- tool calls ---------------------------------------------------------------------------------------------------


def test_a_tool_call_the_answer_asks_for_is_shown_with_its_arguments(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    at = app().run()
    at.toggle(key="_chat_tools").set_value(True).run()
    chat(at, "What is the weather?")
    shown = [m.value for m in at.chat_message[-1].markdown]
    assert any("tool call" in text and "get\\_weather" in text for text in shown), shown
    [code] = at.chat_message[-1].code
    assert json.loads(code.value) == {"city": "sim"}
    assert sim.requests[-1].payload["tools"][0]["function"]["name"] == "get_weather"
    at.toggle(key="_chat_tools").set_value(False).run()
    chat(at, "Hello again")  # the unanswered call is not sent back: the next request is well formed
    assert "tools" not in sim.requests[-1].payload
    assert [m["role"] for m in sim.requests[-1].payload["messages"]] == ["system", "user", "user"]
    assert at.chat_message[-1].markdown[0].value.startswith("Simulated groq reply")


def test_the_next_message_goes_to_the_first_free_key_after_the_last_used_of_the_first_provider_with_one() -> None:
    """Round-robin as the demo's strip predicts it: resting keys and paused providers are passed over, and the
    ring wraps around."""
    from dashboard.simulate import next_key
    from tests.test_dashboard_status import NOW, key, provider

    spent = provider("openrouter", key("openrouter:1", "rate_limit", 60.0), key("openrouter:2", "rate_limit", 60.0))
    groq = [key(f"groq:{n}", last_used=NOW - 10 + n) for n in (1, 2, 3)]
    assert next_key([spent, provider("groq", *groq)]) == "groq:1"  # groq:3 answered last: the ring wraps
    groq[0] = key("groq:1", "invalid_key", 86_400.0, last_used=NOW - 9)
    assert next_key([spent, provider("groq", *groq)]) == "groq:2"
    assert next_key([provider("groq", *groq, paused_until=NOW + 5), provider("gemini", key("gemini:1"))]) == (
        "gemini:1"
    )
    assert next_key([spent]) is None
