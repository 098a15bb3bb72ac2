"""`POST /v1/responses` through the gateway, driven by the official `openai` SDK: plain and streamed answers, a
function tool round trip, structured output, `max_output_tokens`, and what it refuses (state it does not keep,
hosted tools) — on each provider's wire format, over the real simulator."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter
from test_gateway import PNG, TOKEN, StartGateway, start_gateway  # noqa: F401 - the fixture, shared
from test_gateway_agents import FORMATS, UNTHINKING

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


class Person(BaseModel):
    name: str
    age: int


def _strict(response: Response) -> Response:
    """The answer validated against the SDK's own model (the SDK builds responses without validating them)."""
    return Response.model_validate(response.model_dump(mode="json", exclude_unset=True))


@pytest.mark.parametrize("provider", FORMATS)
def test_a_plain_response_and_its_usage(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    raw = gw.sdk().responses.with_raw_response.create(model=provider, input="Hello there", instructions="Be brief.")
    answer = _strict(raw.parse())
    assert answer.id.startswith("resp_") and answer.object == "response" and answer.status == "completed"
    assert answer.output_text == f"Simulated {provider} reply to: Hello there"
    [message] = answer.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert answer.model.startswith(f"{provider}/") and answer.instructions == "Be brief."
    assert (
        answer.usage is not None and answer.usage.total_tokens == answer.usage.input_tokens + answer.usage.output_tokens
    )
    assert raw.headers["x-llm-provider"] == provider and raw.headers["x-request-id"] == answer.id
    sent = gw.sim.requests[-1].payload
    if provider == "gemini":
        assert "Be brief." in json.dumps(sent["systemInstruction"])
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("provider", FORMATS)
def test_a_streamed_response_in_the_order_the_sdk_assembles(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    events = list(gw.sdk().responses.create(model=provider, input="Hello there", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == f"Simulated {provider} reply to: Hello there"
    final = _strict(events[-1].response)  # type: ignore[union-attr]
    assert final.output_text == deltas and final.usage is not None and final.usage.output_tokens > 0
    for event in events:  # each event as the SDK's strict models read it
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))

    with gw.sdk().responses.stream(model=provider, input="Hello there") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        streamed = stream.get_final_response()
    assert "".join(texts) == streamed.output_text == deltas


@pytest.mark.parametrize("provider", FORMATS)
def test_a_function_tool_round_trip(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    sdk = gw.sdk()
    question = [{"role": "user", "content": "Weather in Paris?"}]
    first = _strict(sdk.responses.create(model=provider, input=question, tools=[WEATHER]))  # type: ignore[list-item]
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.id and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "sim"} and first.status == "completed"
    follow_up = [
        *question,
        call.model_dump(),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    final = _strict(sdk.responses.create(model=provider, input=follow_up, tools=[WEATHER]))  # type: ignore[arg-type, list-item]
    assert final.output_text == "The tool said: sunny"
    sent = gw.sim.requests[-1].payload
    if provider == "gemini":  # the call's thought signature rode in its call_id and went back
        asked, answered = (turn["parts"][0] for turn in sent["contents"][1:3])
        assert asked["functionCall"]["name"] == answered["functionResponse"]["name"] == "get_weather"
    else:
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}

    with sdk.responses.stream(model=provider, input=question, tools=[WEATHER]) as stream:  # type: ignore[arg-type]
        kinds = [e.type for e in stream]
        streamed = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    [streamed_call] = streamed.output
    assert streamed_call.type == "function_call" and json.loads(streamed_call.arguments) == {"city": "sim"}


@pytest.mark.parametrize("provider", FORMATS)
def test_structured_output_and_max_output_tokens(start_gateway: StartGateway, provider: str) -> None:  # noqa: F811
    gw = start_gateway({provider: 1})
    sdk = gw.sdk()
    parsed = sdk.responses.parse(model=provider, input="Who?", text_format=Person)
    assert parsed.output_parsed == Person(name="sim", age=1)
    as_json = sdk.responses.create(model=provider, input="Hello there", text={"format": {"type": "json_object"}})
    assert json.loads(as_json.output_text) == {"answer": f"Simulated {provider} reply to: Hello there"}
    cut = _strict(
        sdk.responses.create(model=UNTHINKING.get(provider, provider), input="Hello there", max_output_tokens=2)
    )
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.output_text == f"Simulated {provider}"
    events = list(
        sdk.responses.create(
            model=UNTHINKING.get(provider, provider), input="Hello there", max_output_tokens=2, stream=True
        )
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


def test_state_it_does_not_keep_and_hosted_tools_are_refused_naming_why(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"groq": 1})
    sdk = gw.sdk()
    for extra in (
        {"previous_response_id": "resp_123"},
        {"conversation": "conv_123"},
        {"background": True},
        {"prompt": {"id": "pmpt_123"}},
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.responses.create(model="groq", input="Hi", **extra)  # type: ignore[call-overload]
        error = caught.value.body
        assert (
            isinstance(error, dict) and error["code"] == "unsupported_parameter" and error["param"] == next(iter(extra))
        )
        assert "keeps no responses" in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="groq", input="Hi", tools=[{"type": "web_search"}])
    assert "'web_search'" in str(caught.value) and "function" in str(caught.value)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.responses.retrieve("resp_123")
    assert "stores no responses" in str(missing.value)
    assert httpx.get(f"{gw.base_url}/responses/resp_1", timeout=10).status_code == 401  # the token still guards it
    stored = sdk.responses.create(model="groq", input="Hi", store=True)  # accepted (the SDKs' default), not kept
    assert stored.status == "completed" and stored.store is False
    assert gw.sim.calls() == 1


def test_input_items_become_one_conversation(start_gateway: StartGateway) -> None:  # noqa: F811
    """Developer and assistant messages, reasoning items dropped, parallel calls joined into one assistant turn."""
    gw = start_gateway({"groq": 1})
    call = {"type": "function_call", "name": "get_weather", "arguments": '{"city":"A"}'}
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in A and B?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {**call, "call_id": "call_a"},
        {**call, "call_id": "call_b", "arguments": '{"city":"B"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "rain"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "sun"}]},
    ]
    answer = gw.sdk().responses.create(model="groq", input=items, tools=[WEATHER])  # type: ignore[arg-type, list-item]
    assert answer.output_text == "The tool said: sun"
    sent = gw.sim.requests[-1].payload["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[2]["tool_calls"]] == ["call_a", "call_b"]
    refused = httpx.post(
        f"{gw.base_url}/responses",
        json={"model": "groq", "input": [{"type": "item_reference", "id": "msg_1"}]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert refused.status_code == 400 and "keeps no responses" in refused.json()["error"]["message"]


def test_a_stream_that_breaks_ends_in_response_failed(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"groq": 1}, steps={"groq:1": ["mid_stream_error"]})
    events = list(gw.sdk().responses.create(model="auto", input="one two three four five six", stream=True))
    assert any(e.type == "response.output_text.delta" for e in events)  # text arrived, then the break was told
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None and "stream broke" in failed.response.error.message
    assert failed.response.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert not any(e.type == "response.completed" for e in events)
    assert gw.metric("llm_gateway_requests_total", outcome="interrupted") == 1


def test_unknown_paths_name_the_responses_endpoint_and_not_the_stored_one(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"groq": 1})
    listed = httpx.get(f"{gw.base_url}/batches", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    message = listed.json()["error"]["message"]
    assert "POST /v1/responses" in message and "response_id" not in message


def test_images_pass_and_malformed_input_is_refused_naming_the_callers_own_item(start_gateway: StartGateway) -> None:  # noqa: F811
    gw = start_gateway({"groq": 1})

    def post(body: dict[str, object]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(f"{gw.base_url}/responses", json={"model": "groq", **body}, headers=headers, timeout=10)

    image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}
    seen = post({"input": [{"role": "user", "content": [{"type": "input_text", "text": "What is it?"}, image]}]})
    assert seen.status_code == 200 and seen.json()["output"][0]["content"][0]["text"].startswith("Simulated groq")
    parts = gw.sim.requests[-1].payload["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": image["image_url"]}}
    broken = {**image, "image_url": "data:image/png;base64,not-base64!"}
    items = [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": [broken]}]
    refused = post({"instructions": "Be brief.", "input": items})
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("input[1]")
    bad_choice = post({"input": "Hi", "tools": [WEATHER], "tool_choice": "sometimes"})
    assert bad_choice.status_code == 400 and bad_choice.json()["error"]["param"] == "tool_choice"
    assert gw.sim.calls() == 1
