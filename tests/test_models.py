"""Choosing a model per call: selectors, catalogues and aliases, against the simulator on every store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DURABLE, SECRETS, STORE_BACKENDS, USER_HELLO, Clock, MakeClient

from config.api_keys import ApiKey
from config.settings import ConfigError, CooldownSettings, load_settings
from llms import AllKeysExhaustedError, RequestRejectedError, SmartClient
from llms.key_manager import KeyManager
from llms.outcomes import QuotaHint
from llms.state import StateStore
from simulator import Simulator

CATALOGUES = {
    "GROQ_MODELS": "qwen/qwen3.6-27b, shared-model",
    "GEMINI_MODELS": "shared-model",
    "LLM_ALIAS_FAST": "groq/qwen/qwen3.6-27b,gemini/gemini-3.5-flash",
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
        ("groq/openai/gpt-oss-120b", ("groq", "openai/gpt-oss-120b")),  # not listed: forwarded anyway
        ("openrouter/meta-llama/llama-3.3-70b-instruct:free", ("openrouter", "meta-llama/llama-3.3-70b-instruct:free")),
        ("qwen/qwen3.6-27b", ("groq", "qwen/qwen3.6-27b")),  # a bare id from a catalogue
        ("shared-model", ("groq", "shared-model")),  # in two catalogues: provider order
        ("fast", ("groq", "qwen/qwen3.6-27b")),  # an alias
        ("FAST", ("groq", "qwen/qwen3.6-27b")),
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
    model = "groq/qwen/qwen3.6-27b"
    assert client.chat(USER_HELLO, 0.3, 50, model=model)
    assert client.complete(USER_HELLO, model=model).model == "qwen/qwen3.6-27b"
    stream = client.chat_stream(USER_HELLO, model=model)
    assert "".join(stream) and stream.result is not None and stream.result.model == "qwen/qwen3.6-27b"

    async def awaited() -> tuple[str, str]:
        try:
            done = await client.acomplete(USER_HELLO, model=model)
            pieces = client.achat_stream(USER_HELLO, model=model)
            text = "".join([piece async for piece in pieces])
            assert text and pieces.result is not None
            return done.model, pieces.result.model
        finally:
            await client.aclose_connections()

    assert asyncio.run(awaited()) == ("qwen/qwen3.6-27b", "qwen/qwen3.6-27b")
    assert client.chat(USER_HELLO, temperature=0.3, max_tokens=500)  # the original description's call
    assert _asked(sim) == [("groq", "qwen/qwen3.6-27b")] * 5 + [("openrouter", "openai/gpt-oss-20b:free")]


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
        client.complete(USER_HELLO, model="groq/qwen/qwen3.6-27b")


@pytest.mark.parametrize("selector", ["no-such-model", "groq/", "", "openrouter/x"])
def test_an_unknown_selector_fails_before_any_call_naming_what_is_served(
    make_client: MakeClient, sim: Simulator, selector: str
) -> None:
    client = make_client({"groq": 1, "gemini": 1}, **CATALOGUES)  # no OpenRouter keys
    with pytest.raises(ValueError) as caught:
        client.complete(USER_HELLO, model=selector)
    if selector not in ("", "groq/"):
        assert "auto, fast, groq, gemini" in str(caught.value) and "groq/qwen/qwen3.6-27b" in str(caught.value)
    assert sim.calls() == 0


def test_aliases_and_catalogues_are_checked_at_start_up_naming_the_variable() -> None:
    settings = load_settings({**CATALOGUES, "LLM_ALIAS_BIG": "openrouter, groq/x"}, dotenv_path=None)
    assert settings.providers["groq"].models == ("openai/gpt-oss-20b", "qwen/qwen3.6-27b", "shared-model")
    assert settings.aliases["big"] == (("openrouter", "openai/gpt-oss-20b:free"), ("groq", "x"))
    for name, value in (("LLM_ALIAS_FAST", "nowhere/model"), ("LLM_ALIAS_GROQ", "gemini"), ("LLM_ALIAS_X", " , ")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value}, dotenv_path=None)


# --- limits where the provider keeps them --------------------------------------------------------------------------

GROQ_DEFAULT = "openai/gpt-oss-20b"


def _used(client: SmartClient, model: str, times: int = 2) -> set[str]:
    return {client.complete(USER_HELLO, model=model).key_id for _ in range(times)}


def test_a_429_for_one_model_rests_the_key_for_that_model_only(make_client: MakeClient, sim: Simulator) -> None:
    """Groq counts limits per model per organization: groq:1's 429 on the default model leaves it answering model
    B, and leaves groq:2 answering the default model."""
    client = make_client({"groq": 2}, steps={"groq:1": ["rate_limit"]}, GROQ_MODELS="model-b")
    assert client.complete(USER_HELLO, model="groq").key_id == "groq:2"  # groq:1 answered 429
    assert _used(client, "groq/model-b") == {"groq:1", "groq:2"}
    assert _used(client, "groq") == {"groq:2"}
    first = client.key_manager.statuses("groq")[0]
    assert not first.available and first.reason == "rate_limit"  # for the default model, which auto asks for
    assert set(first.models) == {GROQ_DEFAULT} and first.models[GROQ_DEFAULT]["reason"] == "rate_limit"
    summary = client.get_status_summary()
    assert summary["groq"]["available"] == 1 and summary["groq"]["keys"][0]["models"][GROQ_DEFAULT]["remaining"] > 0
    assert json.dumps(summary)
    client.reset_key("groq:1")
    assert _used(client, "groq") == {"groq:1", "groq:2"}


def test_account_wide_limits_and_bad_keys_rest_the_key_for_every_model(make_client: MakeClient) -> None:
    """OpenRouter's free-model requests per day are the account's, across all free models; an invalid key is
    invalid for every model."""
    client = make_client(
        {"openrouter": 2, "groq": 2},
        steps={"openrouter:1": ["rate_limit_daily"], "groq:1": ["invalid_key"]},
        OPENROUTER_MODELS="other/model:free",
        GROQ_MODELS="model-b",
    )
    assert client.complete(USER_HELLO, model="openrouter").key_id == "openrouter:2"
    assert _used(client, "openrouter/other/model:free") == {"openrouter:2"}
    assert client.complete(USER_HELLO, model="groq/model-b").key_id == "groq:2"
    assert _used(client, "groq") == {"groq:2"}
    assert [k.models for k in client.key_manager.statuses("groq")] == [{}, {}]  # the key itself rests


def test_a_model_the_provider_does_not_serve_never_cools_a_key(make_client: MakeClient) -> None:
    client = make_client({"groq": 1, "gemini": 1}, steps={"groq:1": ["model_not_found"]}, GROQ_MODELS="retired-model")
    with pytest.raises(RequestRejectedError, match="retired-model"):  # only Groq lists it, and refuses it
        client.complete(USER_HELLO, model="retired-model")
    groq = client.key_manager.statuses("groq")[0]
    assert groq.available and groq.models == {}
    problem = next(s for s in client.admin.provider_statuses() if s.provider == "groq").problem
    assert problem is not None and "retired-model" in problem  # a configuration problem, shown as such
    assert client.complete(USER_HELLO, model="groq").key_id == "groq:1"


def test_an_upstream_limit_pauses_that_model_of_the_provider_only(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client(
        {"openrouter": 2, "groq": 1}, steps={"openrouter:1": ["upstream_rate_limit"]}, OPENROUTER_MODELS="other:free"
    )
    assert client.complete(USER_HELLO).provider == "groq"  # the default model is busy upstream: no other key burnt
    assert sim.calls("openrouter:2") == 0
    assert client.complete(USER_HELLO, model="openrouter/other:free").provider == "openrouter"
    status = next(s for s in client.admin.provider_statuses() if s.provider == "openrouter")
    assert status.pause_reason == "upstream" and status.available == 0
    client.reset_provider("openrouter")
    assert client.complete(USER_HELLO).provider == "openrouter"


def test_a_gemini_project_without_quota_for_a_model_keeps_the_others(make_client: MakeClient) -> None:
    """`limit: 0` is that project's (key's group's) problem with that model: the key keeps its other models."""
    client = make_client({"gemini": 2}, steps={"gemini:1": ["no_quota"]}, GEMINI_MODELS="gemini-3.5-pro")
    assert client.complete(USER_HELLO, model="gemini/gemini-3.5-pro").key_id == "gemini:2"
    assert _used(client, "gemini/gemini-3.5-pro") == {"gemini:2"}
    assert _used(client, "gemini") == {"gemini:1", "gemini:2"}
    rests = client.key_manager.statuses("gemini")[0].models
    assert rests["gemini-3.5-pro"]["reason"] == "no_access" and rests["gemini-3.5-pro"]["remaining"] > 3600


@pytest.mark.parametrize("backend", DURABLE)
def test_a_model_rest_is_shared_by_every_process_on_the_store(
    sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = STORE_BACKENDS[backend].url(request, tmp_path / "s.db")
    env = {**sim.env(), "GROQ_MODELS": "model-b", "LLM_STATE_URL": url, "LLM_STATE_PREFIX": f"m-{tmp_path.name}"}
    for i in range(2):
        env[f"GROQ_API_KEY_{i + 1}"] = SECRETS["groq"][i]
        sim.add_key("groq", SECRETS["groq"][i], *(["rate_limit"] if i == 0 else []), name=f"groq:{i + 1}")
    settings = load_settings(env, dotenv_path=None)
    with SmartClient(settings) as first, SmartClient(settings) as second:
        assert first.complete(USER_HELLO).key_id == "groq:2"  # groq:1 answered 429 for the default model
        assert _used(second, "groq") == {"groq:2"}
        assert _used(second, "groq/model-b") == {"groq:1", "groq:2"}
        assert set(second.key_manager.statuses("groq")[0].models) == {GROQ_DEFAULT}


def test_one_models_used_up_quota_never_gates_another_models_requests(
    state_backend: Callable[[], StateStore],
) -> None:
    """Groq reports requests left per model: model A's "0 left today" rests the key for A only, and the count of
    requests in flight it allows (none) is A's gate, not the key's, so model B still gets the key at once."""
    clock = Clock()
    key = ApiKey("groq", 1, SECRETS["groq"][0])
    manager = KeyManager({"groq": [key]}, CooldownSettings(), state_backend(), clock, per_model={"groq"})
    lease = manager.acquire("groq", model="model-a")
    assert lease is not None and lease.key is key
    lease.succeeded(QuotaHint(remaining=0, reset_after=3600.0))
    assert manager.acquire("groq", model="model-a") is None
    for _ in range(3):
        lease = manager.acquire("groq", model="model-b")
        assert lease is not None and lease.key is key
        lease.succeeded(QuotaHint(remaining=500, reset_after=3600.0))
    assert set(manager.statuses("groq", "model-b")[0].models) == {"model-a"}
    clock.advance(3601)
    lease = manager.acquire("groq", model="model-a")
    assert lease is not None and lease.key is key
