"""Embeddings end to end: `client.embed` on every provider format with chat's failover and cooldowns, and the
official `openai` SDK's `embeddings.create` through the gateway (floats and its default base64), against the
simulator over HTTP."""

from __future__ import annotations

import asyncio
import math
import re

import httpx
import openai
import pytest
from conftest import MakeClient
from test_gateway import TOKEN, StartGateway, start_gateway  # noqa: F401 - the fixture, shared

from config.settings import ConfigError, load_settings
from llms import AllKeysExhaustedError
from simulator import Simulator
from simulator.core import EMBEDDING_DIMENSIONS, embedding_vector

FORMATS = ["openrouter", "groq", "gemini"]
CONFIGURED = {"OPENROUTER_EMBEDDING_MODEL": "openai/text-embedding-3-small", "GROQ_EMBEDDING_MODEL": "sim-embed"}
"""OpenRouter and Groq have no embedding model by default: configured as a user would."""
EXPECTED_MODEL = {
    "openrouter": "openai/text-embedding-3-small",
    "groq": "sim-embed",
    "gemini": "gemini-embedding-001",
}


def _unit(vector: list[float]) -> bool:
    return math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-4)


@pytest.mark.parametrize("provider", FORMATS)
def test_the_client_embeds_on_each_provider_format(make_client: MakeClient, provider: str) -> None:
    client = make_client({provider: 1}, **CONFIGURED)
    result = client.embed(["one text", "another text"])
    assert (result.provider, result.model, result.key_id) == (provider, EXPECTED_MODEL[provider], f"{provider}:1")
    assert result.vectors == [embedding_vector("one text"), embedding_vector("another text")]
    assert all(len(v) == EMBEDDING_DIMENSIONS and _unit(v) for v in result.vectors)
    short = asyncio.run(client.aembed("one text", dimensions=4))
    assert len(short.vectors) == 1 and len(short.vectors[0]) == 4
    [last] = client.admin.request_log(1)
    assert (last["provider"], last["model"], last["outcome"]) == (provider, EXPECTED_MODEL[provider], "ok")


def test_gemini_batches_of_more_than_a_hundred_texts_go_in_several_calls(
    make_client: MakeClient, sim: Simulator
) -> None:
    client = make_client({"gemini": 1})
    texts = [f"text {i}" for i in range(250)]
    result = client.embed(texts)
    assert result.vectors == [embedding_vector(t) for t in texts]
    sent = sim.requests
    assert [len(r.payload["requests"]) for r in sent] == [100, 100, 50]
    assert all(r.path.endswith("/models/gemini-embedding-001:batchEmbedContents") for r in sent)


def test_a_rate_limited_key_cools_and_the_next_provider_answers(make_client: MakeClient) -> None:
    client = make_client({"groq": 1, "gemini": 1}, steps={"groq:1": ["rate_limit"]}, **CONFIGURED)
    first = client.embed("hello")
    assert (first.provider, [a.describe() for a in first.skipped]) == ("gemini", ["groq:1 rate_limit 429"])
    status = {k.key_id: k for k in client.key_manager.statuses("groq", "sim-embed")}
    assert not status["groq:1"].available
    second = client.embed("hello")  # the cooling key is not asked again
    assert second.provider == "gemini" and second.attempts[0].key_id == "gemini:1"
    assert client.get_status_summary()["groq"]["available"] == 1  # chat's model keeps its own window on Groq


def test_a_key_errors_classify_as_for_chat(make_client: MakeClient) -> None:
    client = make_client(
        {"openrouter": 2}, steps={"openrouter:1": ["invalid_key"]}, **CONFIGURED, LLM_PROVIDER_ORDER="openrouter"
    )
    result = client.embed("hello")
    assert result.key_id == "openrouter:2" and [a.describe() for a in result.skipped] == [
        "openrouter:1 invalid_key 401"
    ]
    client = make_client({"groq": 1}, steps={"groq:1": ["rate_limit"]}, **CONFIGURED, LLM_PROVIDER_ORDER="groq")
    with pytest.raises(AllKeysExhaustedError):
        client.embed("hello")


@pytest.mark.parametrize(
    ("texts", "words"),
    [
        ([], "at least one"),
        ("", "texts[0] is empty"),
        (["ok", "  "], "texts[1] is empty"),
        ([1, 2], "texts[0] must be a string"),
        (b"bytes", "string or a list"),
        (["x"] * 2049, "at most 2048"),
        (["\ud800"], "lone surrogate"),
    ],
)
def test_bad_input_is_refused_before_any_key_is_spent(make_client: MakeClient, texts: object, words: str) -> None:
    client = make_client({"gemini": 1})
    with pytest.raises(ValueError, match=re.escape(words)):
        client.embed(texts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimensions"):
        client.embed("ok", dimensions=0)
    with pytest.raises(ValueError, match=r"unknown embedding model 'nope'.*gemini/gemini-embedding-001"):
        client.embed("ok", model="nope")
    assert client.admin.request_log() == []


def test_a_provider_without_an_embedding_model_is_named(make_client: MakeClient) -> None:
    client = make_client({"groq": 1, "gemini": 1})
    with pytest.raises(ValueError, match=r"groq has no embedding model \(set GROQ_EMBEDDING_MODEL\)"):
        client.embed("ok", model="groq")
    assert client.embed("ok").provider == "gemini"  # auto: the providers that have one
    assert client.embed("ok", model="groq/sim-embed").provider == "groq"  # provider/model: exactly that


def test_the_embedding_model_setting() -> None:
    assert load_settings({}, dotenv_path=None).providers["gemini"].embedding_model == "gemini-embedding-001"
    assert (
        load_settings({"GEMINI_EMBEDDING_MODEL": "none"}, dotenv_path=None).providers["gemini"].embedding_model is None
    )
    with pytest.raises(ConfigError, match="GROQ_EMBEDDING_MODEL"):
        load_settings({"GROQ_EMBEDDING_MODEL": "a, b"}, dotenv_path=None)


# --- through the gateway, with the official SDK ------------------------------------------------------------------


@pytest.mark.parametrize("provider", FORMATS)
def test_sdk_embeddings_create_through_the_gateway(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1}, **CONFIGURED)
    sdk = gw.sdk()
    raw = sdk.embeddings.with_raw_response.create(model=provider, input=["alpha", "beta"], encoding_format="float")
    floats = raw.parse()
    assert raw.headers["x-llm-provider"] == provider and raw.headers["x-llm-key-id"] == f"{provider}:1"
    assert floats.model == f"{provider}/{EXPECTED_MODEL[provider]}" and floats.object == "list"
    assert [d.index for d in floats.data] == [0, 1]
    assert [d.embedding for d in floats.data] == [embedding_vector("alpha"), embedding_vector("beta")]
    raw = sdk.embeddings.with_raw_response.create(model=EXPECTED_MODEL[provider], input="alpha", dimensions=8)
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)  # the SDK's default: base64
    [only] = raw.parse().data
    assert len(only.embedding) == 8
    assert only.embedding == pytest.approx(embedding_vector("alpha", 8), abs=1e-6)
    sent = gw.sim.requests[-1]
    assert sent.provider == provider and sent.status == 200


def test_the_gateway_lists_embedding_models_and_404s_an_unknown_one(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"groq": 1, "gemini": 1})
    sdk = gw.sdk()
    ids = [m.id for m in sdk.models.list()]
    assert "gemini/gemini-embedding-001" in ids and "gemini-embedding-001" in ids
    assert sdk.models.retrieve("gemini-embedding-001").owned_by == "llm-gateway"
    for model in ("no-such-embedder", "groq"):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.embeddings.create(model=model, input="hello")
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "model_not_found" and error["param"] == "model"
        assert "gemini/gemini-embedding-001" in error["message"]
    with pytest.raises(openai.NotFoundError) as chat_caught:  # chat's 404 names chat models, not embedders
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "gemini-embedding-001" not in str(chat_caught.value.body)
    assert gw.sim.calls() == 0


def test_the_gateway_refuses_token_arrays_and_bad_fields_spending_no_key(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"gemini": 1})

    def post(body: dict[str, object]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(f"{gw.url}/v1/embeddings", json=body, headers=headers, timeout=10)

    tokens = post({"model": "gemini", "input": [[1, 2, 3]]})
    assert tokens.status_code == 400 and tokens.json()["error"]["code"] == "unsupported_parameter"
    assert "send the text" in tokens.json()["error"]["message"]
    for body, param in (
        ({"model": "gemini", "input": []}, "input"),
        ({"model": "gemini", "input": ["a", ""]}, "input"),
        ({"model": "gemini", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "gemini", "input": "a", "dimensions": -1}, "dimensions"),
        ({"input": "a"}, "model"),
    ):
        answer = post(body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, body
    plain = httpx.post(
        f"{gw.url}/embeddings",
        json={"model": "auto", "input": "a", "user": "u1"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert plain.status_code == 200 and plain.json()["data"][0]["embedding"] == embedding_vector("a")
    assert gw.sim.calls() == 1
    listed = httpx.get(f"{gw.url}/v1/nothing", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert "POST /v1/embeddings" in listed.json()["error"]["message"]


def test_an_exhausted_pool_is_a_429_for_embeddings_too(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"gemini": 1}, steps={"gemini:1": ["rate_limit"]})
    with pytest.raises(openai.RateLimitError):
        gw.sdk().embeddings.create(model="gemini", input="hello")


def test_embeddings_count_against_the_simulated_rate_limit(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"gemini": 2}, limits={"gemini:1": (1, 60.0), "gemini:2": (1, 60.0)})
    assert [client.embed("a").key_id, client.embed("b").key_id] == ["gemini:1", "gemini:2"]
    with pytest.raises(AllKeysExhaustedError) as caught:
        client.embed("c")
    assert [a.describe() for a in caught.value.attempts] == ["gemini:1 rate_limit 429", "gemini:2 rate_limit 429"]
    assert [r.status for r in sim.requests] == [200, 200, 429, 429]
    with pytest.raises(AllKeysExhaustedError):  # both cool: no request reaches the simulator
        client.embed("d")
    assert len(sim.requests) == 4


def test_the_simulator_answers_geminis_single_embed_content(sim: Simulator) -> None:
    sim.add_key("gemini", "AIzaSimulatorSingleEmbedKey000001")
    answer = httpx.post(
        f"{sim.base_urls['gemini']}/v1beta/models/gemini-embedding-001:embedContent",
        json={"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4},
        headers={"x-goog-api-key": "AIzaSimulatorSingleEmbedKey000001"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json() == {"embedding": {"values": embedding_vector("hello", 4)}}
    empty = httpx.post(
        f"{sim.base_urls['openrouter']}/embeddings",
        json={"model": "m", "input": []},
        headers={"Authorization": "Bearer nobody"},
        timeout=10,
    )
    assert empty.status_code == 401  # an unknown key is refused first, as for chat
