"""What agents send, through the gateway, driven by the official `openai` SDK: tool calls (plain and streamed),
structured output (`.parse()` with a pydantic model, JSON mode), stop sequences and finish reasons."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel
from test_gateway import HELLO, StartGateway, start_gateway  # noqa: F401 - the fixture, shared

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FORMATS = ["openrouter", "groq", "gemini"]
UNTHINKING = {
    "gemini": "gemini/gemini-2.5-flash",
    "groq": "groq/qwen/qwen3.6-27b",
    "openrouter": "openrouter/meta-llama/llama-3.3-70b-instruct:free",
}
"""Models whose answer `max_tokens` cuts: the defaults reason (Gemini 3 thinks, `gpt-oss` reasons), and the
adapters give reasoning its own allowance on top of `max_tokens`."""


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("provider", FORMATS)
def test_a_tool_round_trip_through_the_sdk(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    sdk = gw.sdk()
    first = sdk.chat.completions.create(model=provider, messages=HELLO, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "sim"}
    final = sdk.chat.completions.create(
        model=provider,
        messages=[
            *HELLO,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert final.choices[0].message.content == "The tool said: sunny"
    assert final.choices[0].finish_reason == "stop"
    sent = gw.sim.requests[-1].payload
    if provider == "gemini":  # no ids on Gemini's wire; the call's thought signature rode in its id and went back
        asked, answered = (turn["parts"][0] for turn in sent["contents"][1:3])
        assert asked["functionCall"]["name"] == answered["functionResponse"]["name"] == "get_weather"
        assert asked["thoughtSignature"].rstrip("=") in call.id
    else:
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.id and sent["messages"][2]["tool_call_id"] == call.id


@pytest.mark.parametrize("provider", FORMATS)
def test_streamed_tool_calls_reach_the_sdk_as_deltas(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in gw.sdk().chat.completions.create(model=provider, messages=HELLO, tools=[WEATHER], stream=True):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function.name if delta.function else None) or ""
                call["arguments"] += (delta.function.arguments if delta.function else None) or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "sim"}
    assert calls[0]["id"].startswith("call_")


@pytest.mark.parametrize("provider", FORMATS)
def test_structured_output_stop_and_length_through_the_sdk(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    sdk = gw.sdk()
    parsed = sdk.chat.completions.parse(model=provider, messages=HELLO, response_format=Person)
    assert parsed.choices[0].message.parsed == Person(name="sim", age=1)
    as_json = sdk.chat.completions.create(model=provider, messages=HELLO, response_format={"type": "json_object"})
    assert json.loads(as_json.choices[0].message.content or "") == {
        "answer": f"Simulated {provider} reply to: Hello there"
    }
    stopped = sdk.chat.completions.create(model=provider, messages=HELLO, stop=["there"])
    assert stopped.choices[0].message.content == f"Simulated {provider} reply to: Hello "
    cut = sdk.chat.completions.create(model=UNTHINKING.get(provider, provider), messages=HELLO, max_completion_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (f"Simulated {provider}", "length")
    streamed = list(
        sdk.chat.completions.create(model=UNTHINKING.get(provider, provider), messages=HELLO, max_tokens=2, stream=True)
    )
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "length"


def test_an_unknown_path_is_a_404_in_openais_shape_naming_what_is_served(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"groq": 1})
    with pytest.raises(openai.NotFoundError) as caught:
        gw.sdk().batches.list()
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "not_found"
    assert "GET /v1/batches is not served here" in error["message"]
    assert "POST /v1/chat/completions" in error["message"] and "GET /v1/models" in error["message"]
    wrong_method = httpx.get(f"{gw.url}/v1/chat/completions", timeout=10)
    assert wrong_method.status_code == 405 and "POST /v1/chat/completions" in wrong_method.json()["error"]["message"]
    assert gw.sim.calls() == 0


@pytest.mark.slow
def test_the_demo_gateway_carries_an_agent_burst() -> None:
    """`python -m llms serve --demo` serves programs: the demo keys have the providers' free-tier limits, so an
    agent's burst of tool-loop calls is answered (the dashboard's presenter-paced limits would run dry by ~16)."""
    import threading
    import time

    import uvicorn
    from conftest import free_port, in_threads

    from gateway.server import build_gateway, uvicorn_config

    gateway = build_gateway({}, demo=True)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(gateway.app(), "127.0.0.1", port, gateway.settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.01)
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

        def agent_steps() -> list[str | None]:
            return [
                sdk.chat.completions.create(model="auto", messages=HELLO, tools=[WEATHER]).choices[0].finish_reason
                for _ in range(5)
            ]

        reasons = [reason for steps in in_threads(8, agent_steps) for reason in steps]
        assert reasons == ["tool_calls"] * 40
    finally:
        server.should_exit = True
        thread.join(10)
        gateway.close()
