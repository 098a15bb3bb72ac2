"""No full key in logs (DEBUG, every library), exceptions, tracebacks, reprs, status output or CLI output."""

from __future__ import annotations

import asyncio
import io
import logging
import traceback

import pytest
from conftest import ALL_SECRETS, SECRETS, USER_HELLO, MakeClient, free_port

from config.settings import load_settings
from llms import LLMError, SmartClient
from llms.state.memory import MemoryStore


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def assert_no_secret(text: str) -> None:
    leaked = [s[:12] + "…" for s in ALL_SECRETS if s in text]
    assert not leaked, f"full keys leaked (shown truncated): {leaked}"


@pytest.mark.slow
def test_nothing_captured_contains_a_key(make_client: MakeClient, captured_logs: io.StringIO, capsys) -> None:
    everything: list[str] = []
    client = make_client(
        {"openrouter": 2, "groq": 2, "gemini": 2},
        steps={
            "openrouter:1": ["invalid_key"],
            "openrouter:2": ["rate_limit", "no_credits"],
            "groq:1": ["server_error", "garbage", "timeout"],
            "groq:2": ["rate_limit_daily", "mid_stream_error"],
            "gemini:1": ["permission_denied", "rate_limit"],
        },
        LLM_REQUEST_TIMEOUT="0.5",
    )
    for _ in range(4):
        try:
            everything.append(repr(client.complete(USER_HELLO)))
        except LLMError as exc:
            everything.append("".join(traceback.format_exception(exc)))
    try:
        everything.append("".join(client.chat_stream(USER_HELLO)))
    except LLMError as exc:
        everything.append("".join(traceback.format_exception(exc)))
    everything += asyncio.run(_awaited_calls(client))
    for key_id in ("openrouter:1", "groq:1", "gemini:2"):
        everything.append(repr(client.admin.check_key(key_id)))
    everything += [repr(client.get_status_summary()), repr(client.admin.events()), repr(client.settings)]
    everything += [captured_logs.getvalue(), *capsys.readouterr()]
    text = "\n".join(everything)
    assert_no_secret(text)
    assert "401" in text and "429" in text  # the run really went through the failure paths


async def _awaited_calls(client: SmartClient) -> list[str]:
    """The gateway's path (aiohttp, the executor for Gemini): answers, or the tracebacks of its errors."""
    seen = []
    for stream in (False, False, True):
        try:
            if stream:
                seen.append("".join([piece async for piece in client.achat_stream(USER_HELLO)]))
            else:
                seen.append(repr(await client.acomplete(USER_HELLO)))
        except LLMError as exc:
            seen.append("".join(traceback.format_exception(exc)))
    await client.aclose_connections()
    return seen


def test_connection_errors_and_their_tracebacks_stay_clean(captured_logs: io.StringIO) -> None:
    port = free_port()  # nothing listens there
    env = {
        "OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/openrouter/api/v1",
        "GROQ_BASE_URL": f"http://127.0.0.1:{port}/groq/openai/v1",
        "GEMINI_BASE_URL": f"http://127.0.0.1:{port}/gemini",
        "OPENROUTER_API_KEY_1": SECRETS["openrouter"][0],
        "GROQ_API_KEY_1": SECRETS["groq"][0],
        "GEMINI_API_KEY_1": SECRETS["gemini"][0],
        "LLM_ERROR_THRESHOLD": "1",
    }
    client = SmartClient(load_settings(env, dotenv_path=None), store=MemoryStore())
    with pytest.raises(LLMError) as info:
        client.chat(USER_HELLO)
    client.reset_all()
    text = "".join(traceback.format_exception(info.value)) + "".join(asyncio.run(_awaited_calls(client)))
    text += captured_logs.getvalue()
    text += repr(client.get_status_summary()) + repr(client.admin.events())
    client.close()
    assert_no_secret(text)
    assert "connection failed" in text


def test_api_key_repr_and_str_show_only_id_and_hint() -> None:
    key = load_settings({"GROQ_API_KEY_2": SECRETS["groq"][1]}, dotenv_path=None).groq_api_keys[0]
    assert repr(key) == str(key) == f"ApiKey(groq:2 · gsk_…{SECRETS['groq'][1][-4:]})"
    assert key.label == f"groq:2 · gsk_…{SECRETS['groq'][1][-4:]}"
