"""Agents on Gemini, whose wire differs from OpenAI's: thought signatures that must come back, no call ids, JSON
schemas without `$ref`, and conversations that move between Gemini and OpenAI-format providers mid-way."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import USER_HELLO, MakeClient

from llms import RequestRejectedError
from simulator import Simulator

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _answered(call: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *USER_HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]


def _signature(part: dict[str, Any]) -> bytes:
    encoded = part.get("thoughtSignature", "")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def test_a_tool_conversation_moves_between_gemini_and_an_openai_format_provider(
    make_client: MakeClient, sim: Simulator
) -> None:
    """Gemini 3's call carries its signature in a long id, which Groq gets hashed to OpenAI's 40 characters; a
    call Groq made reaches Gemini 3 with Google's stand-in signature. Neither provider refuses the history."""
    client = make_client({"gemini": 1, "groq": 1})
    from_gemini = client.complete(USER_HELLO, tools=[WEATHER], model="gemini")
    [call] = from_gemini.tool_calls
    assert len(call["id"]) > 40 and "__thought__" in call["id"]

    on_groq = client.complete(_answered(call), tools=[WEATHER], model="groq")
    assert (on_groq.provider, on_groq.text) == ("groq", "The tool said: sunny")
    sent = sim.requests[-1].payload["messages"]
    short = sent[1]["tool_calls"][0]["id"]
    assert len(short) <= 40 and sent[2]["tool_call_id"] == short

    [groq_call] = client.complete(USER_HELLO, tools=[WEATHER], model="groq").tool_calls
    on_gemini = client.complete(_answered(groq_call), tools=[WEATHER], model="gemini")
    assert (on_gemini.provider, on_gemini.text) == ("gemini", "The tool said: sunny")
    part = sim.requests[-1].payload["contents"][1]["parts"][0]
    assert _signature(part) == b"skip_thought_signature_validator"
    assert "id" not in part["functionCall"]


def test_gemini_2_5_calls_carry_no_signature(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"gemini": 1})
    [call] = client.complete(USER_HELLO, tools=[WEATHER], model="gemini/gemini-2.5-flash").tool_calls
    assert call["id"].startswith("call_") and "__thought__" not in call["id"]
    final = client.complete(_answered(call), tools=[WEATHER], model="gemini/gemini-2.5-flash")
    assert final.text == "The tool said: sunny"
    assert "thoughtSignature" not in sim.requests[-1].payload["contents"][1]["parts"][0]


def test_a_lost_signature_is_gemini_3s_refusal_and_another_provider_takes_the_history(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A client that rewrote the id (so the signature is gone, and no stand-in is due: this id looks signed)."""
    client = make_client({"gemini": 1, "groq": 1}, LLM_PROVIDER_ORDER="gemini,groq")
    [call] = client.complete(USER_HELLO, tools=[WEATHER]).tool_calls
    forged = {**call, "id": call["id"].split("__thought__")[0] + "__thought__AAAA"}
    answer = client.complete(_answered(forged), tools=[WEATHER])
    assert answer.provider == "groq"
    first = answer.attempts[0]
    assert (first.key_id, first.status) == ("gemini:1", 400)
    assert client.key_manager.statuses("gemini")[0].available  # the history's fault, not the key's


def test_schemas_reach_gemini_with_their_refs_inlined(make_client: MakeClient, sim: Simulator) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/Address"}, "work": {"$ref": "#/$defs/Address"}},
        "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    client = make_client({"gemini": 1})
    response_format = {"type": "json_schema", "json_schema": {"name": "places", "schema": schema}}
    answer = client.complete(USER_HELLO, response_format=response_format)
    assert json.loads(answer.text) == {"home": {"city": "sim"}, "work": {"city": "sim"}}
    config = sim.requests[-1].payload["generationConfig"]
    sent = json.dumps(config["responseJsonSchema"])
    assert "$ref" not in sent and "$defs" not in sent and "$schema" not in sent
    assert config["responseMimeType"] == "application/json"

    tool = {"type": "function", "function": {"name": "save", "parameters": schema}}
    [call] = client.complete(USER_HELLO, tools=[tool]).tool_calls
    assert json.loads(call["function"]["arguments"]) == {"home": {"city": "sim"}, "work": {"city": "sim"}}


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "tree",
                        "schema": {
                            "$ref": "#/$defs/Node",
                            "$defs": {"Node": {"type": "object", "properties": {"kids": {"$ref": "#/$defs/Node"}}}},
                        },
                    },
                }
            },
            "refers to itself",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"$ref": "https://example.com/schema.json"}},
                    }
                ]
            },
            "does not point into the same schema",
        ),
    ],
)
def test_what_gemini_cannot_take_is_refused_before_any_gemini_call(
    make_client: MakeClient, sim: Simulator, options: dict[str, Any], says: str
) -> None:
    only_gemini = make_client({"gemini": 1})
    with pytest.raises(RequestRejectedError, match=says):
        only_gemini.complete(USER_HELLO, **options)
    assert sim.calls() == 0
    both = make_client({"gemini": 1, "groq": 1}, LLM_PROVIDER_ORDER="gemini,groq")
    assert both.complete(USER_HELLO, **options).provider == "groq"
    assert [r.provider for r in sim.requests] == ["groq"]


def test_a_malformed_function_call_is_the_models_slip_and_is_tried_again(make_client: MakeClient) -> None:
    client = make_client({"gemini": 2}, steps={"gemini:1": ["malformed_call"]})
    answer = client.complete(USER_HELLO, tools=[WEATHER])
    assert answer.key_id == "gemini:2" and answer.tool_calls[0]["function"]["name"] == "get_weather"
    assert answer.attempts[0].kind == "transient"


def test_a_tool_result_for_no_call_is_refused_before_gemini_is_called(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client({"gemini": 1})
    messages = [
        *USER_HELLO,
        {"role": "assistant", "content": None, "tool_calls": [{**WEATHER, "id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
    ]
    with pytest.raises((RequestRejectedError, ValueError), match="call_2"):
        client.complete(messages, tools=[WEATHER])
    assert sim.calls() == 0
