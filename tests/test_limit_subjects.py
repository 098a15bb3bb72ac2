"""Provider facts, second pass (issue 22): whose limit it is — a key, its account, (key, model), (provider, model),
or nothing — for how long, and which API version serves a model. Each test runs both wire paths (blocking and
awaited) against the simulator over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from conftest import SECRETS, USER_HELLO, in_threads

from config.settings import load_settings
from llms import RequestRejectedError, SmartClient
from llms.cooldown import SLOT_MARGIN
from llms.state import store_from_url
from llms.types import ChatResult
from simulator import Simulator

WIRE_PATHS = ["blocking", "awaited"]
Build = Callable[..., SmartClient]


@pytest.fixture
def build(sim: Simulator) -> Iterator[Build]:
    """`build({"groq": 1}, limits={"groq:1": (n, seconds)}, steps={"groq:1": [...]}, **env)`: a client over the
    simulator's keys with an in-memory store."""
    clients: list[SmartClient] = []

    def make(
        keys: Mapping[str, int],
        limits: Mapping[str, tuple[int, float]] | None = None,
        steps: Mapping[str, list[str]] | None = None,
        **env: str,
    ) -> SmartClient:
        variables = {**sim.env(), "LLM_REQUEST_TIMEOUT": "5", "LLM_PROVIDER_ORDER": ",".join(keys), **env}
        for provider, count in keys.items():
            for i in range(count):
                name = f"{provider}:{i + 1}"
                variables[f"{provider.upper()}_API_KEY_{i + 1}"] = SECRETS[provider][i]
                sim.add_key(
                    provider,
                    SECRETS[provider][i],
                    *(steps or {}).get(name, ()),
                    limit=(limits or {}).get(name),
                    name=name,
                )
        client = SmartClient(load_settings(variables, dotenv_path=None), store=store_from_url("memory://"))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def burst(client: SmartClient, count: int, wire: str) -> list[ChatResult]:
    """`count` requests at once, from threads or from one event loop."""
    if wire == "blocking":
        return in_threads(count, lambda: client.complete(USER_HELLO))

    async def gather() -> list[ChatResult]:
        try:
            return list(await asyncio.gather(*(client.acomplete(USER_HELLO) for _ in range(count))))
        finally:
            await client.aclose()

    return asyncio.run(gather())


def most_at_once(sim: Simulator, latency: float) -> int:
    """The most requests the simulator admitted within one answer's latency of each other."""
    times = sorted(r.at for r in sim.requests)
    return max(sum(1 for t in times[i:] if t - start < latency * 0.75) for i, start in enumerate(times))


@pytest.mark.slow
@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_groq_requests_left_today_do_not_widen_what_goes_at_once(build: Build, sim: Simulator, wire: str) -> None:
    """Groq's `x-ratelimit-*-requests` count the day (999 left of 1000) and its per-minute limit (30) is never
    reported: the daily count must not let a burst put every request on the organization at once."""
    sim.latency = 0.2
    client = build({"groq": 1}, limits={"groq:1": (1000, 86_400.0)})
    assert client.complete(USER_HELLO).key_id == "groq:1"
    assert sim.requests[-1].status == 200
    sim.clear_log()
    assert [r.key_id for r in burst(client, 6, wire)] == ["groq:1"] * 6
    assert most_at_once(sim, sim.latency) == 1


def complete(
    client: SmartClient, wire: str, messages: list[dict[str, str]] = USER_HELLO, **options: object
) -> ChatResult:
    """One request on the blocking or the awaited wire path."""
    if wire == "blocking":
        return client.complete(messages, **options)  # type: ignore[arg-type]

    async def awaited() -> ChatResult:
        try:
            return await client.acomplete(messages, **options)  # type: ignore[arg-type]
        finally:
            await client.aclose()

    return asyncio.run(awaited())


@pytest.mark.parametrize("wire", WIRE_PATHS)
@pytest.mark.parametrize(
    ("model", "env", "version"),
    [
        ("gemini-3.5-flash-lite", {}, "v1"),  # a stable model: google-genai's default version
        ("gemini-3.5-flash-preview-09-2026", {}, "v1beta"),  # previews exist only on v1beta
        ("gemini-flash-latest", {}, "v1beta"),  # so do the -latest aliases
        ("gemini-3.5-flash-lite", {"GEMINI_API_VERSION": "v1alpha"}, "v1alpha"),  # the operator's choice wins
        ("gemini-3.5-flash-lite", {"GOOGLE_GENAI_API_VERSION": "beta"}, "v1beta"),  # as google-genai reads it
    ],
)
def test_gemini_api_version_is_chosen_per_model_or_set(
    build: Build, sim: Simulator, wire: str, model: str, env: dict[str, str], version: str
) -> None:
    client = build({"gemini": 1}, GEMINI_CHAT_MODEL=model, **env)
    assert complete(client, wire).provider == "gemini"
    assert sim.requests[-1].path == f"/gemini/{version}/models/{model}:generateContent"
    assert client.key_manager.statuses("gemini")[0].available


def test_a_preview_model_forced_onto_v1_is_the_configuration_problem_google_says(build: Build, sim: Simulator) -> None:
    """The simulator answers as Google does for a preview model on `v1`; the operator can see why and fix it."""
    client = build({"gemini": 1}, GEMINI_CHAT_MODEL="gemini-3.5-flash-preview-09-2026", GEMINI_API_VERSION="v1")
    with pytest.raises(RuntimeError, match="not found for API version v1"):
        client.complete(USER_HELLO)


@pytest.mark.parametrize("variable", ["GEMINI_API_VERSION", "GOOGLE_GENAI_API_VERSION"])
def test_a_malformed_api_version_names_its_variable(variable: str) -> None:
    with pytest.raises(ValueError, match=f"{variable} must be one of v1, v1beta, v1alpha, got 'v2'"):
        load_settings({variable: "v2", "GEMINI_API_KEY_1": "AIza" + "x" * 35}, dotenv_path=None)


@pytest.mark.parametrize("wire", WIRE_PATHS)
@pytest.mark.parametrize(
    ("provider", "asked"), [("groq", {"reasoning_effort": "low"}), ("openrouter", {"reasoning": {"effort": "low"}})]
)
def test_a_reasoning_default_model_answers_a_small_max_tokens(
    build: Build, sim: Simulator, wire: str, provider: str, asked: dict[str, object]
) -> None:
    """Both default models (`gpt-oss`) reason, and reasoning counts as output: asked for their least reasoning, with
    room added for it, `max_tokens=5` buys text — not an empty "length" answer that falls through every provider."""
    client = build({provider: 1})
    result = complete(client, wire, max_tokens=5)
    assert (result.text, result.finish_reason) == (f"Simulated {provider} reply to: Hello", "stop")
    sent = sim.requests[-1].payload
    assert {k: sent[k] for k in asked} == asked and sent["max_tokens"] == 5 + 256
    assert client.key_manager.statuses(provider)[0].available


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_an_overloaded_gemini_model_rests_the_model_briefly_not_its_keys(
    build: Build, sim: Simulator, wire: str
) -> None:
    """Gemini's 503 "The model is overloaded" hits every key alike: the (provider, model) pauses briefly, no other
    key walks into it, no key's error streak grows, and the next provider answers."""
    client = build({"gemini": 2, "groq": 1}, steps={"gemini:1": ["overloaded"]})
    assert complete(client, wire).provider == "groq"
    assert (sim.calls("gemini:1"), sim.calls("gemini:2")) == (1, 0)
    assert all(k.available and not k.consecutive_failures for k in client.key_manager.statuses("gemini"))
    pause = client.key_manager.provider_pause("gemini", "gemini-3.5-flash-lite")
    assert pause is not None and 0 < pause[0] - time.time() <= 11


@pytest.mark.parametrize("wire", WIRE_PATHS)
@pytest.mark.parametrize(
    ("messages", "options", "why"),
    [
        (USER_HELLO, {"presence_penalty": 0.5}, "refuses a custom presence_penalty"),
        (USER_HELLO, {"frequency_penalty": -0.5}, "refuses a custom frequency_penalty"),
        ([*USER_HELLO, {"role": "assistant", "content": "Sure:"}], {}, "last turn is the model's"),
    ],
)
def test_what_gemini_3_5_flash_lite_refuses_goes_to_another_provider_before_any_call(
    build: Build, sim: Simulator, wire: str, messages: list[dict[str, str]], options: dict[str, float], why: str
) -> None:
    """Google's model page: 3.5 Flash-Lite answers custom penalties and a conversation ending on the model's turn
    with an error. That is the request's problem for that model: Groq answers, Gemini is never called, nothing
    cools; with Gemini alone the caller gets the reason."""
    client = build({"gemini": 1, "groq": 1})
    result = complete(client, wire, messages, **options)
    assert result.provider == "groq" and sim.calls("gemini:1") == 0
    assert all(k.available for p in ("gemini", "groq") for k in client.key_manager.statuses(p))
    alone = build({"gemini": 1})
    with pytest.raises(RequestRejectedError, match=why):
        complete(alone, wire, messages, **options)
    assert sim.calls("gemini:1") == 0
    older = build({"gemini": 1}, GEMINI_CHAT_MODEL="gemini-2.5-flash")  # other models take them
    assert complete(older, wire, messages, **options).provider == "gemini"


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_a_decommissioned_groq_model_is_a_configuration_problem_not_a_bad_key(
    build: Build, sim: Simulator, wire: str
) -> None:
    """Groq retired its Llama 3.x defaults on 16 Aug 2026 and answers them 404 `model_not_found`: the next provider
    answers, the key stays available for other models, and the Status page names the model."""
    client = build({"groq": 1, "gemini": 1}, GROQ_CHAT_MODEL="llama-3.3-70b-versatile")
    assert complete(client, wire).provider == "gemini"
    assert sim.requests[0].status == 404 and sim.requests[0].model == "llama-3.3-70b-versatile"
    assert client.key_manager.statuses("groq")[0].available
    assert "llama-3.3-70b-versatile" in (client.get_status_summary()["groq"]["problem"] or "")


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_a_gemini_key_parked_for_prepay_comes_back_through_a_one_token_probe(
    build: Build, sim: Simulator, wire: str
) -> None:
    """Google has answered "prepayment credits are depleted" falsely for a day: the key parks (a day), and its probe
    is the cheapest call that needs credit — one token, not a model listing that says nothing about credit."""
    client = build({"gemini": 1, "groq": 1}, steps={"gemini:1": ["no_credits"]}, LLM_PROVIDER_ORDER="gemini,groq")
    assert complete(client, wire).provider == "groq"
    parked = client.key_manager.statuses("gemini")[0]
    assert parked.reason == "no_credits" and parked.cooldown_remaining > 3600
    assert client.admin.check_key("gemini:1").kind.value == "ok"
    probe = sim.requests[-1]
    assert probe.key_name == "gemini:1" and probe.path.endswith(":generateContent")
    assert probe.payload["generationConfig"]["maxOutputTokens"] <= 1 + 256  # one token, and the thinking allowance
    assert client.key_manager.statuses("gemini")[0].available


def test_a_gemini_key_still_without_prepay_stays_parked_after_its_probe(build: Build, sim: Simulator) -> None:
    client = build({"gemini": 1}, steps={"gemini:1": ["no_credits", "no_credits"]})
    with pytest.raises(RuntimeError):
        client.complete(USER_HELLO)
    assert client.admin.check_key("gemini:1").kind.value == "no_credits"
    assert client.key_manager.statuses("gemini")[0].reason == "no_credits"


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_a_gemini_429_without_quota_ids_rests_for_the_spend_window_not_a_1_s_ladder(
    build: Build, sim: Simulator, wire: str
) -> None:
    """A request-rate 429 names its quota and a retry delay; one with neither (python-genai#1427) is the project's
    spend-based limit, counted over 10 rolling minutes: the project rests that long, once, instead of climbing a
    ladder from 1 s into ten more 429s."""
    client = build({"gemini": 1, "groq": 1}, steps={"gemini:1": ["quota_no_details"]}, LLM_PROVIDER_ORDER="gemini,groq")
    assert complete(client, wire).provider == "groq"
    key = client.key_manager.statuses("gemini")[0]
    assert key.reason == "rate_limit" and 590 < key.cooldown_remaining <= 600 + SLOT_MARGIN and key.backoff_step == 0


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_a_bare_resource_exhausted_pauses_the_gemini_model_not_its_keys(
    build: Build, sim: Simulator, wire: str
) -> None:
    """ "Resource has been exhausted (e.g. check quota)." with nothing else came to paid projects under every quota
    (python-genai#2065): the model's shared capacity. It pauses briefly; no other key walks into it."""
    client = build({"gemini": 2, "groq": 1}, steps={"gemini:1": ["exhausted_bare"]}, LLM_PROVIDER_ORDER="gemini,groq")
    assert complete(client, wire).provider == "groq"
    assert (sim.calls("gemini:1"), sim.calls("gemini:2")) == (1, 0)
    assert all(k.available for k in client.key_manager.statuses("gemini"))
    assert client.key_manager.provider_pause("gemini", "gemini-3.5-flash-lite") is not None
