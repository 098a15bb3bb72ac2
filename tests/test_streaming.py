"""Streaming over SSE for all three providers: failover before the first piece, a loud error after it."""

from __future__ import annotations

import pytest
from conftest import USER_HELLO, MakeClient

from llms import AllKeysExhaustedError, OutcomeKind, StreamInterruptedError
from simulator import Simulator

PROVIDERS = ["openrouter", "groq", "gemini"]


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_yields_the_whole_answer_in_pieces(make_client: MakeClient, provider: str) -> None:
    client = make_client({provider: 1})
    stream = client.chat_stream([{"role": "user", "content": "Tell me a short story please"}], max_tokens=50)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == f"Simulated {provider} reply to: Tell me a short story please"
    assert stream.result is not None
    assert stream.result.provider == provider and stream.result.key_id == f"{provider}:1"
    assert stream.result.usage.completion_tokens > 0
    assert client.get_current_provider() == provider


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("step", ["rate_limit", "invalid_key", "server_error", "garbage"])
def test_stream_fails_over_before_the_first_piece(make_client: MakeClient, provider: str, step: str) -> None:
    client = make_client({provider: 2}, steps={f"{provider}:1": [step]})
    stream = client.chat_stream(USER_HELLO)
    assert "".join(stream) == f"Simulated {provider} reply to: Hello"
    assert stream.result.key_id == f"{provider}:2"
    assert stream.result.attempts[0].kind is not OutcomeKind.OK


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_mid_stream_error_raises_instead_of_truncating(make_client: MakeClient, sim: Simulator, provider: str) -> None:
    client = make_client({provider: 2}, steps={f"{provider}:1": ["mid_stream_error"]})
    received: list[str] = []
    with pytest.raises(StreamInterruptedError, match=provider):
        for piece in client.chat_stream([{"role": "user", "content": "one two three four five six seven eight"}]):
            received.append(piece)
    assert received  # something arrived before the break, and the caller was told
    assert sim.calls(f"{provider}:2") == 0
    # OpenRouter's error event comes from the upstream provider, Gemini's is "The model is overloaded" (503): the
    # model rests, not the key; Groq's is the key's
    if provider in ("openrouter", "gemini"):
        assert client.key_manager.statuses(provider)[0].consecutive_failures == 0
        assert client.key_manager.provider_pause(provider, client.settings.providers[provider].model) is not None
    else:
        assert client.key_manager.statuses(provider)[0].consecutive_failures == 1


def test_stream_falls_back_across_providers(make_client: MakeClient) -> None:
    client = make_client(
        {"openrouter": 1, "groq": 1, "gemini": 1}, steps={"openrouter:1": ["rate_limit"], "groq:1": ["overloaded"]}
    )
    stream = client.chat_stream(USER_HELLO)
    assert "".join(stream).startswith("Simulated gemini")
    assert [a.key_id for a in stream.result.attempts] == ["openrouter:1", "groq:1", "gemini:1"]


def test_stream_with_every_key_cooling_raises_exhausted(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"groq": 1}, steps={"groq:1": ["rate_limit"]})
    with pytest.raises(AllKeysExhaustedError):
        list(client.chat_stream(USER_HELLO))
    calls = sim.calls()
    with pytest.raises(AllKeysExhaustedError):
        list(client.chat_stream(USER_HELLO))
    assert sim.calls() == calls


def test_malformed_messages_fail_when_the_stream_is_created(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"groq": 1})
    with pytest.raises(ValueError):
        client.chat_stream([{"role": "user", "content": 42}])
    assert sim.calls() == 0
