"""Choosing a model per call: selectors, catalogues and aliases, against the simulator on every store."""

from __future__ import annotations

import asyncio

import pytest
from conftest import USER_HELLO, MakeClient

from config.settings import ConfigError, load_settings
from llms import AllKeysExhaustedError
from simulator import Simulator

CATALOGUES = {
    "GROQ_MODELS": "llama-3.1-8b-instant, shared-model",
    "GEMINI_MODELS": "shared-model",
    "LLM_ALIAS_FAST": "groq/llama-3.1-8b-instant,gemini/gemini-3.5-flash",
}


def _asked(sim: Simulator) -> list[tuple[str, str | None]]:
    """(provider, model) of every request the simulator received, in order."""
    return [(r.provider, r.model) for r in sim.requests]


@pytest.mark.parametrize(
    ("selector", "answered"),
    [
        (None, ("openrouter", "openai/gpt-oss-20b:free")),
        ("auto", ("openrouter", "openai/gpt-oss-20b:free")),
        ("groq", ("groq", "openai/gpt-oss-20b")),
        ("GROQ", ("groq", "openai/gpt-oss-20b")),
        ("groq/llama-3.3-70b-versatile", ("groq", "llama-3.3-70b-versatile")),  # not listed: forwarded anyway
        ("openrouter/meta-llama/llama-3.3-70b-instruct:free", ("openrouter", "meta-llama/llama-3.3-70b-instruct:free")),
        ("llama-3.1-8b-instant", ("groq", "llama-3.1-8b-instant")),  # a bare id from a catalogue
        ("shared-model", ("groq", "shared-model")),  # in two catalogues: provider order
        ("fast", ("groq", "llama-3.1-8b-instant")),  # an alias
        ("FAST", ("groq", "llama-3.1-8b-instant")),
    ],
)
def test_a_selector_picks_the_provider_and_the_model_that_answer(
    make_client: MakeClient, sim: Simulator, selector: str | None, answered: tuple[str, str]
) -> None:
    client = make_client({"openrouter": 1, "groq": 1, "gemini": 1}, **CATALOGUES)
    result = client.complete(USER_HELLO, model=selector)
    assert (result.provider, result.model) == answered
    assert _asked(sim) == [answered]


def test_every_call_takes_a_model(make_client: MakeClient, sim: Simulator) -> None:
    """`chat`, `complete`, `chat_stream`, `acomplete` and `achat_stream` alike; the original calls are unchanged."""
    client = make_client({"openrouter": 1, "groq": 1}, **CATALOGUES)
    model = "groq/llama-3.1-8b-instant"
    assert client.chat(USER_HELLO, 0.3, 50, model=model)
    assert client.complete(USER_HELLO, model=model).model == "llama-3.1-8b-instant"
    stream = client.chat_stream(USER_HELLO, model=model)
    assert "".join(stream) and stream.result is not None and stream.result.model == "llama-3.1-8b-instant"

    async def awaited() -> tuple[str, str]:
        try:
            done = await client.acomplete(USER_HELLO, model=model)
            pieces = client.achat_stream(USER_HELLO, model=model)
            text = "".join([piece async for piece in pieces])
            assert text and pieces.result is not None
            return done.model, pieces.result.model
        finally:
            await client.aclose_connections()

    assert asyncio.run(awaited()) == ("llama-3.1-8b-instant", "llama-3.1-8b-instant")
    assert client.chat(USER_HELLO, temperature=0.3, max_tokens=500)  # the original description's call
    assert _asked(sim) == [("groq", "llama-3.1-8b-instant")] * 5 + [("openrouter", "openai/gpt-oss-20b:free")]


def test_an_alias_fails_over_across_its_targets_as_auto_does_across_providers(
    make_client: MakeClient, sim: Simulator
) -> None:
    client = make_client(
        {"openrouter": 1, "groq": 2, "gemini": 1},
        steps={"groq:1": ["rate_limit"], "groq:2": ["invalid_key"]},
        **CATALOGUES,
    )
    result = client.complete(USER_HELLO, model="fast")
    assert (result.provider, result.model) == ("gemini", "gemini-3.5-flash")
    assert [a.key_id for a in result.attempts] == ["groq:1", "groq:2", "gemini:1"]
    assert ("openrouter", "openai/gpt-oss-20b:free") not in _asked(sim)  # not in the alias: never asked
    assert client.complete(USER_HELLO, model="groq").key_id == "groq:1"  # its 429 was for the other model
    with pytest.raises(AllKeysExhaustedError):
        client.complete(USER_HELLO, model="groq/llama-3.1-8b-instant")


@pytest.mark.parametrize("selector", ["no-such-model", "groq/", "", "openrouter/x"])
def test_an_unknown_selector_fails_before_any_call_naming_what_is_served(
    make_client: MakeClient, sim: Simulator, selector: str
) -> None:
    client = make_client({"groq": 1, "gemini": 1}, **CATALOGUES)  # no OpenRouter keys
    with pytest.raises(ValueError) as caught:
        client.complete(USER_HELLO, model=selector)
    if selector not in ("", "groq/"):
        assert "auto, fast, groq, gemini" in str(caught.value) and "groq/llama-3.1-8b-instant" in str(caught.value)
    assert sim.calls() == 0


def test_aliases_and_catalogues_are_checked_at_start_up_naming_the_variable() -> None:
    settings = load_settings({**CATALOGUES, "LLM_ALIAS_BIG": "openrouter, groq/x"}, dotenv_path=None)
    assert settings.providers["groq"].models == ("openai/gpt-oss-20b", "llama-3.1-8b-instant", "shared-model")
    assert settings.aliases["big"] == (("openrouter", "openai/gpt-oss-20b:free"), ("groq", "x"))
    for name, value in (("LLM_ALIAS_FAST", "nowhere/model"), ("LLM_ALIAS_GROQ", "gemini"), ("LLM_ALIAS_X", " , ")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value}, dotenv_path=None)
