"""The Streamlit dashboard, driven in-process by AppTest against a provider simulator over real HTTP.

The dashboard reads its settings from the environment when its cached client is built, so each test sets env
vars pointing at the `sim` fixture's simulator and clears `st.cache_resource` (which closes the client and stops
any demo simulator) before and after.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence

import pandas as pd
import PIL.Image
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import auth, status, table_selection
from dashboard.chat import ChatOptions, Turn, stream_answer
from dashboard.client import build_backend, get_client
from dashboard.text import answer_caption, countdown, exhausted_message, md_escape, safe_markdown, skipped_text
from llms import AllKeysExhaustedError, Attempt, ChatResult, OutcomeKind, SmartClient, Usage
from llms.cooldown import SLOT_MARGIN
from llms.key_states import KeyState
from simulator import Simulator, Step
from simulator import server as simulator_server
from tests.conftest import ROOT, SECRETS, free_port

APP = str(ROOT / "streamlit_app.py")
STATUS = "pages/status.py"
_OURS = re.compile(r"_API_KEY(_\d+)?$|^(LLM_|OPENROUTER_|GROQ_|GEMINI_|DASHBOARD_PASSWORD$)")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Iterator[pytest.MonkeyPatch]:
    """No keys, overrides or password from the developer's shell or `.env`; a fresh cached client."""
    for name in list(os.environ):
        if _OURS.search(name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # load_settings looks for .env from the working directory upwards
    monkeypatch.setenv("LLM_STATE_URL", f"sqlite://{os.path.join(tmp_path, 'state.db')}")
    st.cache_resource.clear()
    yield monkeypatch
    st.cache_resource.clear()


def use_keys(
    monkeypatch: pytest.MonkeyPatch,
    sim: Simulator,
    keys: Mapping[str, int],
    steps: Mapping[str, Sequence[str]] | None = None,
    limits: Mapping[str, tuple[int, float]] | None = None,
) -> None:
    """Register the first N test keys per provider in the simulator and point the dashboard at them."""
    for name, value in {**sim.env(), "LLM_REQUEST_TIMEOUT": "2"}.items():
        monkeypatch.setenv(name, value)
    for provider, count in keys.items():
        for i in range(1, count + 1):
            key_id, secret = f"{provider}:{i}", SECRETS[provider][i - 1]
            sim.add_key(provider, secret, *(steps or {}).get(key_id, ()), limit=(limits or {}).get(key_id), name=key_id)
            monkeypatch.setenv(f"{provider.upper()}_API_KEY_{i}", secret)


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=15)


def chat(at: AppTest, text: str) -> AppTest:
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def captions(at: AppTest) -> list[str]:
    return [c.value.replace("\\", "") for c in at.caption]


def availability(at: AppTest) -> dict[str, str]:
    """Provider title → "1/2" (or "—" without keys), read from the Status page's summary table."""
    return dict(re.findall(r"^\| \*\*(\w+)\*\* \| [^|]*?(\d+/\d+|—)", summary(at), re.MULTILINE))


def summary(at: AppTest) -> str:
    """The Status page's per-provider summary table (markdown)."""
    return next(m.value for m in at.markdown if m.value.startswith("| Provider |"))


def key_table(at: AppTest) -> pd.DataFrame:
    return next(d for d in at.dataframe if (d.key or "").startswith(table_selection.TABLE_KEY)).value


def has_key_table(at: AppTest) -> bool:
    """Whether the Status page drew its key table (it says in words when there is nothing to list)."""
    return any((d.key or "").startswith(table_selection.TABLE_KEY) for d in at.dataframe)


def cool(client: SmartClient, *key_ids: str) -> None:
    """Force cooldowns through the key manager's public API, as a rate limit would."""
    manager = client.key_manager
    for key_id in key_ids:
        key = next(k for p in manager.providers for k in manager.keys(p) if k.key_id == key_id)
        manager.cool(key, 120, KeyState.RATE_LIMIT, "test")


# --- chat ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_caption_names_provider_key_and_skips(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"openrouter": 2, "groq": 1}, limits={"openrouter:1": (0, 60.0)})
    at = app().run()
    assert not any("Demo mode" in e.label for e in at.expander), "no demo banner with keys configured"
    chat(at, "Hello dashboard")

    answer = at.chat_message[-1]
    assert answer.name == "assistant"
    assert "Simulated openrouter reply to: Hello dashboard" in [m.value for m in answer.markdown]
    caption = captions(at)[-1]
    assert caption.startswith("openrouter · openai/gpt-oss-20b:free · openrouter:2 (")
    assert caption.endswith(" · skipped openrouter:1 rate-limited")
    assert [e.label for e in at.expander] == ["2 attempts"]

    chat(at, "And again")  # history is redrawn from session state, captions included
    assert len(at.chat_message) == 4
    assert sum("openrouter:2 (" in c for c in captions(at)) == 2


@pytest.mark.slow
def test_chat_options_survive_a_visit_to_the_status_page(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    at = app().run()
    at.text_area[0].input("Answer like a pirate.").run()
    at.slider[0].set_value(1.2).run()
    at.switch_page(STATUS).run()
    at.switch_page("pages/chat.py").run()
    assert (at.text_area[0].value, at.slider[0].value) == ("Answer like a pirate.", 1.2)
    _click(at, "Clear chat")
    assert not at.chat_message


@pytest.mark.slow
def test_the_chat_page_picks_a_model_and_the_caption_names_it(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"openrouter": 1, "groq": 1})
    env.setenv("LLM_ALIAS_FAST", "groq/qwen/qwen3.6-27b")
    at = app().run()
    picker = at.selectbox(key="_chat_model")
    assert picker.value == "auto" and picker.options[:4] == ["auto", "fast", "openrouter", "groq"]
    picker.set_value("fast").run()
    chat(at, "Hello model")
    assert captions(at)[-1].startswith("groq · qwen/qwen3.6-27b · groq:1 (")
    at.switch_page(STATUS).run()
    at.switch_page("pages/chat.py").run()
    assert at.selectbox(key="_chat_model").value == "fast"  # kept across pages, like the other options
    at.session_state["chat_model"] = "groq/openai/gpt-oss-120b"  # typed into the box (AppTest cannot type)
    at.run()
    assert at.selectbox(key="_chat_model").value == "groq/openai/gpt-oss-120b"
    chat(at, "Hello again")
    assert captions(at)[-1].startswith("groq · openai/gpt-oss-120b · groq:1 (")
    assert [(r.provider, r.model) for r in sim.requests] == [
        ("groq", "qwen/qwen3.6-27b"),
        ("groq", "openai/gpt-oss-120b"),
    ]


def test_image_attachment_is_sent_as_data_url(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    at = app().run()
    at.chat_input[0].set_value("What is this?").upload("dot.png", tiny_png(), "image/png")
    at.run()
    assert not at.exception
    assert "Simulated groq reply to: What is this? [image received]" in [m.value for m in at.markdown]

    at.chat_input[0].set_value("And this?").upload("fake.png", b"not an image", "image/png")
    at.run()
    assert not at.exception
    assert at.warning[0].value == "Not a readable image, left out: fake.png"
    # the message went out without the bad file (the simulator still sees the first image, from the history)
    assert "Simulated groq reply to: And this? [image received]" in [m.value for m in at.markdown]
    assert len(at.chat_message[-2].get("imgs")) == 0


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (4, 4), "#4f46e5").save(buffer, format="PNG")
    return buffer.getvalue()


def test_all_keys_cooling_shows_when_the_next_frees_up(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"openrouter": 1, "groq": 1}, limits={"openrouter:1": (0, 60.0), "groq:1": (0, 60.0)})
    at = chat(app().run(), "Anyone there?")
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("All API keys are cooling down right now. The next one, ")
    assert re.search(r"frees up in (59|60|61) s \(at \d\d:\d\d:\d\d\)", message), message
    assert [e.label for e in at.expander] == ["2 attempts"]

    chat(at, "Still there?")  # the first error stays in the history, the second is added below it
    assert len(at.error) == 2


def test_broken_stream_keeps_the_partial_answer(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"openrouter": 1}, steps={"openrouter:1": [Step.MID_STREAM_ERROR]})
    at = chat(app().run(), "Tell me a long story please")
    assert at.warning[0].value.startswith("The answer was interrupted and is incomplete")
    assert any(m.value.startswith("Simulated openrouter reply") for m in at.chat_message[-1].markdown)
    assert captions(at)[-1].startswith("interrupted · openrouter:1")


def test_rejected_request_is_an_error_not_a_traceback(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1}, steps={"groq:1": [Step.BAD_REQUEST]})
    at = chat(app().run(), "Hello")
    assert at.error[0].value.startswith("The request was refused: groq rejected the request")


def test_answer_cut_short_by_a_new_message_is_kept(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    """Streamlit abandons a run (raising inside st.write_stream) when a message is sent mid-stream."""

    class NewMessage(BaseException):
        pass

    def write_stream(pieces: Iterator[str]) -> None:
        next(pieces)
        raise NewMessage

    use_keys(env, sim, {"groq": 1})
    backend = build_backend()
    kept: list[Turn] = []
    try:
        with pytest.raises(NewMessage):
            messages = [{"role": "user", "content": "one two three four five six seven"}]
            stream_answer(backend.client, messages, ChatOptions(), write_stream, keep=kept.append)
    finally:
        backend.close()
    [turn] = kept
    assert turn.text == "Simulated groq reply " and turn.warning == "Stopped early: a new message arrived first."
    assert turn.message() == {"role": "assistant", "content": "Simulated groq reply "}


# --- status -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_status_follows_cooldowns_and_each_reset(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"openrouter": 2, "groq": 2}, limits={"openrouter:1": (0, 60.0)})
    at = chat(app().run(), "Hello")  # openrouter:1 answers 429 and cools for the rest of its window
    at.switch_page(STATUS).run()
    assert not at.exception
    assert availability(at) == {"OpenRouter": "1/2", "Groq": "2/2", "Gemini": "—"}
    assert re.search(r"openrouter:1 frees in (59|60|61) s", summary(at))
    assert not has_key_table(at), "a rate-limited key frees itself: the page opens on the keys needing a person"
    assert "1 key frees itself (1 rate-limited): the next, openrouter:1, in" in " ".join(m.value for m in at.markdown)
    at.button_group(key="status_filter").set_value(status.SELF_HEALING).run()
    table = key_table(at).set_index("Key")
    assert list(table.index) == ["openrouter:1"]
    assert list(table.loc["openrouter:1", "State"]) == ["rate-limited"]
    assert 58 <= table.loc["openrouter:1", "Frees in"] <= 61  # a number, so the column sorts
    assert not any(secret in table.to_string() for secret in SECRETS["openrouter"])

    client = get_client()
    cool(client, "groq:1", "groq:2")
    at.run()
    assert availability(at)["Groq"] == "0/2"
    _click(at, "Reset Groq")
    assert availability(at)["Groq"] == "2/2"
    assert "reset" in at.dataframe[-1].value["Event"].tolist()  # the timeline records it

    cool(client, "openrouter:2", "groq:1")
    at.run()
    assert (availability(at)["OpenRouter"], availability(at)["Groq"]) == ("0/2", "1/2")
    _click(at, "Reset all")
    assert (availability(at)["OpenRouter"], availability(at)["Groq"]) == ("2/2", "2/2")


def _click(at: AppTest, label: str) -> None:
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    assert not at.exception, at.exception


# --- access -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_password_gate_from_env(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    env.setenv("DASHBOARD_PASSWORD", "open sesame")
    at = app().run()
    assert not at.chat_input and not at.dataframe, "nothing behind the gate runs"
    at.text_input(key="auth_password").input("open sesam")
    _click(at, "Unlock")
    assert at.error[0].value == "Wrong password. Try again in 1 s." and not at.chat_input

    at.text_input(key="auth_password").input("open sesame")  # right, but too soon: refused unchecked
    _click(at, "Unlock")
    assert at.error[0].value.startswith("Too many wrong passwords") and not at.chat_input
    time.sleep(1.1)
    at.text_input(key="auth_password").input("open sesame")
    _click(at, "Unlock")
    assert not at.error and at.chat_input
    chat(at, "Hi")
    at.switch_page(STATUS).run()
    assert availability(at)["Groq"] == "1/1"
    _click(at, "Log out")
    assert not at.dataframe and [t.label for t in at.text_input] == ["Password", "Your name (optional)"]


def test_wrong_passwords_wait_longer_each_time_up_to_a_minute() -> None:
    throttle = auth.Throttle()
    waits = []
    for _ in range(8):
        throttle.failed("address:10.0.0.1")
        waits.append(round(throttle.wait("session:new", "address:10.0.0.1")))
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    throttle.passed("address:10.0.0.1")
    assert throttle.wait("address:10.0.0.1") == 0


def test_replies_and_provider_texts_cannot_load_images_or_hide_links() -> None:
    reply = (
        "See ![pixel](https://tracker.example/p.gif) or [docs](https://phish.example) or [x][ref]\n\n[ref]: https://a"
    )
    shown = safe_markdown(reply)
    assert "![" not in shown and "](" not in shown
    assert "docs (https://phish.example)" in shown and "\\[ref]: https://a" in shown


def test_a_page_run_without_the_entry_script_still_asks_for_the_password(
    env: pytest.MonkeyPatch, sim: Simulator
) -> None:
    """Streamlit runs `pages/status.py` directly for a first request to /status after start-up."""
    use_keys(env, sim, {"groq": 1})
    env.setenv("DASHBOARD_PASSWORD", "open sesame")
    at = AppTest.from_file(str(ROOT / STATUS), default_timeout=15).run()
    assert not at.dataframe and [t.label for t in at.text_input] == ["Password", "Your name (optional)"]
    at.text_input(key="auth_password").input("open sesame")
    _click(at, "Unlock")
    assert at.chat_input  # the run went through the app's navigation (AppTest names no page: the default one)
    at.switch_page("status.py").run()  # relative to the script AppTest ran: the page itself
    assert availability(at)["Groq"] == "1/1"


def test_password_gate_from_secrets(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    at = app()
    at.secrets["DASHBOARD_PASSWORD"] = "from-secrets"
    at.run()
    assert not at.chat_input
    at.text_input(key="auth_password").input("from-secrets")
    _click(at, "Unlock")
    assert at.chat_input


# --- demo mode ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_mode_without_keys_answers_a_chat(env: pytest.MonkeyPatch) -> None:
    at = app().run()
    assert at.expander[0].label.startswith("**Demo mode** (no API keys are configured)")
    chat(at, "Hello demo")
    assert "Simulated openrouter reply to: Hello demo" in [m.value for m in at.markdown]
    assert re.match(r"openrouter · \S+ · openrouter:\d \(sk-o…\w{4}\) · \d+\.\d s$", captions(at)[-1])
    at.switch_page(STATUS).run()
    assert availability(at) == {"OpenRouter": "4/4", "Groq": "3/3", "Gemini": "1/1"}
    assert at.expander[0].label.startswith("**Demo mode**")


def test_demo_flag_wins_over_configured_keys(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    use_keys(env, sim, {"groq": 1})
    env.setenv("LLM_DEMO", "1")
    at = app().run()
    assert at.expander[0].label.startswith("**Demo mode** (LLM_DEMO is set)")


def test_demo_rotation_falls_back_by_the_fifth_message(env: pytest.MonkeyPatch) -> None:
    """OpenRouter's four demo keys allow one request per ten minutes each: however slowly one types, the fifth
    message falls back to Groq."""
    env.setattr(simulator_server, "DEMO_LATENCY", 0.0)
    backend = build_backend()
    try:
        assert backend.demo
        client = backend.client
        providers = [client.complete([{"role": "user", "content": f"n{i}"}]).provider for i in range(4)]
        assert providers == ["openrouter"] * 4
        result = client.complete([{"role": "user", "content": "5"}])
        assert result.provider == "groq"
        assert " · skipped openrouter:1 rate-limited, openrouter:2 rate-limited" in answer_caption(result)
        openrouter = client.get_status_summary()["openrouter"]
        assert openrouter["available"] == 0
        assert all(540 < k["cooldown_remaining"] <= 600 + SLOT_MARGIN for k in openrouter["keys"])
    finally:
        backend.close()


# --- wording ------------------------------------------------------------------------------------------------------


def test_countdown_and_caption_wording() -> None:
    assert [countdown(s) for s in (0, 0.2, 41.1, 60, 725, 86_399)] == [
        "0 s",
        "1 s",
        "42 s",
        "60 s",
        "12 min 05 s",
        "23 h 59 min",
    ]
    attempts = (
        Attempt("openrouter:1", OutcomeKind.RATE_LIMIT, 429, "Rate limit exceeded"),
        Attempt("openrouter:2", OutcomeKind.TRANSIENT, 502, "Provider returned error"),
        Attempt("groq:2", OutcomeKind.OK, 200, ""),
    )
    result = ChatResult("hi", "groq", "openai/gpt-oss-20b", "groq:2", "gsk_…9f3a", 0.84, Usage(), attempts)
    assert answer_caption(result) == (
        "groq · openai/gpt-oss-20b · groq:2 (gsk_…9f3a) · 0.8 s · skipped openrouter:1 rate-limited, "
        "openrouter:2 error 502"
    )
    assert md_escape("gsk_…9f3a costs $5") == "gsk\\_…9f3a costs \\$5"
    many = [Attempt(f"openrouter:{i}", OutcomeKind.INVALID_KEY, 401, "") for i in range(1, 7)]
    assert skipped_text(many).endswith("openrouter:4 invalid key and 2 more")
    assert "none is scheduled to free up" in exhausted_message(AllKeysExhaustedError([], None, None))


# --- shared state (Redis) -----------------------------------------------------------------------------------------


def test_status_shows_cooldowns_from_another_process_and_resets_them_for_it(
    env: pytest.MonkeyPatch, sim: Simulator, redis_server
) -> None:
    from config.settings import load_settings
    from llms.state import store_from_url

    # a hinted 429 (7.66 s): a bare one rests the key for the first second of the ladder, which a busy machine's
    # page run can outlast
    use_keys(env, sim, {"groq": 2}, steps={"groq:1": ["rate_limit"]})
    env.setenv("LLM_STATE_URL", redis_server.url)
    env.setenv("LLM_STATE_PREFIX", "dash-shared")
    settings = load_settings(dict(os.environ), dotenv_path=None)
    worker = SmartClient(settings, store=store_from_url(settings.state_url, settings.state_prefix))
    assert worker.complete([{"role": "user", "content": "hi"}]).key_id == "groq:2"  # groq:1 earned a 429 there

    at = app().run()
    at.switch_page(STATUS).run()
    assert availability(at)["Groq"] == "1/2"
    assert any("Redis at" in c for c in captions(at))
    _click(at, "Reset all")
    assert availability(at)["Groq"] == "2/2"
    assert worker.get_status_summary()["groq"]["available"] == 2  # the reset reached the other process
    worker.close()


def test_status_says_when_the_shared_store_is_degraded(env: pytest.MonkeyPatch, sim: Simulator) -> None:
    port = free_port()
    use_keys(env, sim, {"groq": 1})
    env.setenv("LLM_STATE_URL", f"redis://127.0.0.1:{port}/0")  # nothing listens there
    at = app().run()
    chat(at, "still answered")
    assert "Simulated groq reply" in at.chat_message[-1].markdown[0].value
    at.switch_page(STATUS).run()
    assert not at.exception
    assert any("degraded" in w.value for w in at.warning)
