"""What agents send, through the Python client against the simulator: tool calls, JSON output, stop sequences,
finish reasons and the sampling options, blocking, streamed and awaited."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from conftest import USER_HELLO, MakeClient

from llms import ChatResult, RequestRejectedError, SmartClient
from simulator import Simulator
from simulator.core import SimRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
PROVIDERS = ["openrouter", "groq", "gemini"]
UNTHINKING = {
    "gemini": "gemini/gemini-2.5-flash",
    "groq": "groq/qwen/qwen3.6-27b",
    "openrouter": "openrouter/meta-llama/llama-3.3-70b-instruct:free",
}
"""Models whose answer `max_tokens` cuts: the defaults reason (Gemini 3 thinks, `gpt-oss` reasons), and the
adapters give reasoning its own allowance on top of `max_tokens`."""
"""A model whose answer `max_tokens` cuts: Gemini 3 thinks, and the adapter gives thoughts their own allowance."""


def _complete(client: SmartClient, awaited: bool, messages: Any, **options: Any) -> ChatResult:
    if not awaited:
        return client.complete(messages, **options)

    async def call() -> ChatResult:
        try:
            return await client.acomplete(messages, **options)
        finally:
            await client.aclose_connections()

    return asyncio.run(call())


def _stream(client: SmartClient, awaited: bool, messages: Any, **options: Any) -> tuple[str, ChatResult]:
    if not awaited:
        stream = client.chat_stream(messages, **options)
        text = "".join(stream)
        assert stream.result is not None
        return text, stream.result

    async def call() -> tuple[str, ChatResult]:
        try:
            stream = client.achat_stream(messages, **options)
            text = "".join([piece async for piece in stream])
            assert stream.result is not None
            return text, stream.result
        finally:
            await client.aclose_connections()

    return asyncio.run(call())


@pytest.mark.parametrize("awaited", [False, True], ids=["blocking", "awaited"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_call_round_trip(make_client: MakeClient, sim: Simulator, provider: str, awaited: bool) -> None:
    """The answer asks for a tool; its result goes back as a `tool` message; the next answer uses it."""
    client = make_client({provider: 1})
    first = _complete(client, awaited, USER_HELLO, tools=[WEATHER, CLOCK])
    assert (first.text, first.finish_reason) == ("", "tool_calls")
    [call] = first.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "sim", "days": 1}
    messages = [
        *USER_HELLO,
        {"role": "assistant", "content": None, "tool_calls": first.tool_calls},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 °C"},
    ]
    final = _complete(client, awaited, messages, tools=[WEATHER, CLOCK])
    assert (final.text, final.finish_reason, final.tool_calls) == ("The tool said: sunny, 21 °C", "stop", [])
    _assert_round_trip_sent(sim.requests[1], provider, call)
    forced = _complete(
        client,
        awaited,
        USER_HELLO,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert forced.tool_calls[0]["function"]["name"] == "get_time"
    assert _complete(client, awaited, USER_HELLO, tools=[WEATHER], tool_choice="none").finish_reason == "stop"


def _assert_round_trip_sent(sent: SimRequest, provider: str, call: dict[str, Any]) -> None:
    """The second request carried the tools, the call and its result, in the provider's own words."""
    body = sent.payload
    if provider != "gemini":
        assert body["tools"] == [WEATHER, CLOCK] and body["messages"][1]["tool_calls"] == [call]
        assert body["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 °C"}
        return
    assert "/v1beta/" in sent.path  # Gemini's tools live in v1beta
    [tool] = body["tools"]
    declarations = tool["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["get_weather", "get_time"]
    assert declarations[0]["parameters_json_schema"] == WEATHER["function"]["parameters"]
    asked, answered = body["contents"][1], body["contents"][2]
    [part] = asked["parts"]
    assert asked["role"] == "model"
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "sim", "days": 1}}
    signature = base64.urlsafe_b64decode(part["thoughtSignature"] + "==")
    assert signature.startswith(b"sim-thought:") and "__thought__" in call["id"]  # Gemini 3's, carried in the id
    assert answered == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 21 °C"}}}],
    }


@pytest.mark.parametrize("awaited", [False, True], ids=["blocking", "awaited"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_streamed_tool_calls_are_assembled_on_the_result(make_client: MakeClient, provider: str, awaited: bool) -> None:
    client = make_client({provider: 1})
    text, result = _stream(client, awaited, USER_HELLO, tools=[WEATHER])
    assert text == "" and result.finish_reason == "tool_calls"
    assert result.tool_calls[0]["function"]["name"] == "get_weather"
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == {"city": "sim", "days": 1}
    text, result = _stream(client, awaited, USER_HELLO, max_tokens=2, model=UNTHINKING.get(provider))
    assert (text, result.finish_reason) == ("Simulated " + provider, "length")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_output_stop_sequences_and_length(make_client: MakeClient, sim: Simulator, provider: str) -> None:
    client = make_client({provider: 1})
    as_object = client.complete(USER_HELLO, response_format={"type": "json_object"})
    assert json.loads(as_object.text) == {"answer": f"Simulated {provider} reply to: Hello"}
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "person",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}},
        },
    }
    assert json.loads(client.complete(USER_HELLO, response_format=schema).text) == {"name": "sim", "age": 1}
    stopped = client.complete([{"role": "user", "content": "Hello there friend"}], stop=["there", "zzz"])
    assert (stopped.text, stopped.finish_reason) == (f"Simulated {provider} reply to: Hello ", "stop")
    cut = client.complete(USER_HELLO, max_tokens=3, model=UNTHINKING.get(provider))
    assert (cut.text, cut.finish_reason) == (f"Simulated {provider} reply", "length")
    penalties = {"presence_penalty": 0.5, "frequency_penalty": -0.5}  # Gemini 3.5 Flash-Lite refuses them: 2.5 takes
    sampled = client.complete(USER_HELLO, top_p=0.9, seed=7, model=UNTHINKING.get(provider), **penalties)
    assert sampled.finish_reason == "stop"
    sent = sim.requests[-1].payload
    if provider == "gemini":
        sent = sent["generationConfig"]
        sent = {"top_p": sent["topP"], "seed": sent["seed"]} | {
            k: sent[c] for k, c in [("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")]
        }
    assert (sent["top_p"], sent["seed"], sent["presence_penalty"], sent["frequency_penalty"]) == (0.9, 7, 0.5, -0.5)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"tools": {"name": "x"}}, "tools must be a non-empty list"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "must be a name of 1 to 64"),
        ({"tools": [WEATHER, WEATHER]}, "two functions of the same name"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "not among the tools",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice must be"),
        ({"response_format": {"type": "yaml"}}, "response_format must be"),
        ({"response_format": {"type": "json_schema"}}, "json_schema needs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "1 to 4 strings"),
        ({"top_p": 1.5}, "top_p must be between 0 and 1"),
        ({"seed": 1.5}, "seed must be a whole number"),
        ({"presence_penalty": float("nan")}, "presence_penalty must be a number"),
    ],
)
def test_malformed_options_fail_before_any_call(
    make_client: MakeClient, sim: Simulator, options: dict[str, Any], says: str
) -> None:
    client = make_client({"groq": 1})
    with pytest.raises(ValueError, match=says):
        client.complete(USER_HELLO, **options)
    with pytest.raises(TypeError, match="unexpected option"):
        client.complete(USER_HELLO, logit_bias={"1": 2})
    bad_messages = [
        [*USER_HELLO, {"role": "tool", "content": "sunny"}],  # no tool_call_id
        [*USER_HELLO, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {}}]}],
    ]
    for messages in bad_messages:
        with pytest.raises(ValueError, match=r"messages\[1\]"):
            client.complete(messages)
    assert sim.calls() == 0


@pytest.mark.parametrize(
    ("alias", "options", "answered_by"),
    [
        (  # OpenRouter: 404 "No endpoints found that support tool use" for this model
            "openrouter/deepseek/deepseek-r1:free,groq/openai/gpt-oss-20b",
            {"tools": [WEATHER]},
            ("groq", "openai/gpt-oss-20b"),
        ),
        (  # Groq: 400 "This model does not support response format `json_schema`"; another Groq model takes it
            "groq/qwen/qwen3.6-27b,groq/openai/gpt-oss-20b",
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
            ("groq", "openai/gpt-oss-20b"),
        ),
        (  # Gemini: 400 "Function calling is not enabled for models/gemma-3-27b-it"
            "gemini/gemma-3-27b-it,gemini/gemini-2.5-flash",
            {"tools": [WEATHER]},
            ("gemini", "gemini-2.5-flash"),
        ),
    ],
    ids=["openrouter-tools", "groq-json-schema", "gemini-tools"],
)
def test_a_model_that_cannot_take_tools_or_json_hands_the_request_on_and_cools_nothing(
    make_client: MakeClient, alias: str, options: dict[str, Any], answered_by: tuple[str, str]
) -> None:
    client = make_client({"openrouter": 1, "groq": 1, "gemini": 1}, LLM_ALIAS_AGENT=alias)
    for _ in range(4):  # more than the three errors that would cool a key, were these failures
        result = client.complete(USER_HELLO, model="agent", **options)
        assert (result.provider, result.model) == answered_by
        assert [a.kind for a in result.attempts] == ["request_error", "ok"]
    for status in client.admin.provider_statuses():
        assert status.problem is None  # the model is configured right: it just cannot do this
        assert all(k.available and not k.consecutive_failures for k in status.keys)
    plain = client.complete(USER_HELLO, model=alias.split(",")[0])  # without tools / a schema it still answers
    assert plain.text and len(plain.attempts) == 1


def test_when_no_model_can_take_the_tools_every_reason_is_told(make_client: MakeClient) -> None:
    client = make_client(
        {"openrouter": 1, "gemini": 1}, LLM_ALIAS_AGENT="openrouter/deepseek/deepseek-r1:free,gemini/gemma-3-27b-it"
    )
    with pytest.raises(RequestRejectedError) as caught:
        client.complete(USER_HELLO, model="agent", tools=[WEATHER])
    assert "support tool use" in str(caught.value) and "Function calling is not enabled" in str(caught.value)
    assert all(k.available for s in client.admin.provider_statuses() for k in s.keys)


def test_a_finished_stream_keeps_its_result_when_read_again(make_client: MakeClient) -> None:
    """A tool-only answer streams no text: a caller that polls for a first piece and then drains the stream (the
    chat page does) must still find the result."""
    stream = make_client({"groq": 1}).chat_stream(USER_HELLO, tools=[WEATHER])
    assert next(stream, None) is None
    assert list(stream) == []
    assert stream.result is not None and stream.result.tool_calls[0]["function"]["name"] == "get_weather"
