"""What the fake providers answer to what agents send: tool calls, JSON output, stop sequences and `max_tokens`.

Deterministic, so tests and the demo can rely on it: with `tools` (and `tool_choice` not "none") the answer calls the
chosen tool (or the first) with arguments made from its parameter schema; after a tool result it answers in text
quoting it; with `response_format` it answers JSON (`{"answer": …}`, or an instance of the given schema); `stop`
cuts the text before the first stop sequence; more words than `max_tokens` end the answer there with "length".
Every wire format (OpenAI's, Gemini's) renders the same `Answer`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

_CALL_IDS = itertools.count(1)

UNABLE: dict[tuple[str, str], tuple[str, str]] = {
    ("openrouter", "deepseek/deepseek-r1:free"): ("tools", "no_tool_endpoints"),
    ("groq", "qwen/qwen3.6-27b"): ("json_schema", "json_schema_unsupported"),
    ("gemini", "gemma-3-27b-it"): ("tools", "function_calling_not_enabled"),
}
"""(provider, model) → (what the model cannot take, the recorded refusal): one model per provider, as users met
them (sources in simulator/wire/), so that failover from a model that cannot to one that can is tested."""


@dataclass(frozen=True)
class Answer:
    text: str
    tool_calls: tuple[dict[str, Any], ...] = field(default=())
    finish: str = "stop"  # "stop", "length" or "tool_calls"


def example(schema: Any, depth: int = 0) -> Any:
    """A value that fits a JSON schema (the common keywords): what a model would fill in."""
    if not isinstance(schema, dict) or depth > 8:
        return "sim"
    if schema.get("enum"):
        return schema["enum"][0]
    for choice in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(choice), list) and schema[choice]:
            return example(schema[choice][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {name: example(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [example(schema.get("items"), depth + 1)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "sim")


def answer(
    reply: str,
    *,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    tool_result: str | None = None,
    response_format: Any = None,
    stop: Any = None,
    max_tokens: Any = None,
    reasoning: int = 0,
) -> Answer:
    """The answer to a request whose plain reply would be `reply`. `tools`: (name, parameters schema) of each
    function offered; `tool_result`: the content of the last message, when it is a tool's result; `reasoning`:
    output tokens a reasoning model spends thinking first, out of `max_tokens`."""
    if tool_result is not None:
        reply = f"The tool said: {tool_result[:200]}"
    elif tools and tool_choice != "none":
        forced = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
        tool = next((t for t in tools if t["name"] == forced), tools[0])
        arguments = example(tool.get("parameters") or {"type": "object", "properties": {}})
        call = {
            "id": f"call_sim{next(_CALL_IDS):06d}",
            "type": "function",
            "function": {"name": tool["name"], "arguments": json.dumps(arguments)},
        }
        return Answer("", (call,), "tool_calls")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        reply = json.dumps({"answer": reply})
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        reply = json.dumps(example(schema))
    for sequence in [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []:
        if isinstance(sequence, str) and sequence and sequence in reply:
            reply = reply[: reply.index(sequence)]
    words = reply.split(" ")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 < max_tokens < len(words) + reasoning:
        return Answer(" ".join(words[: max(0, max_tokens - reasoning)]), finish="length")
    return Answer(reply)


REASONING_TOKENS = {"low": 120, "medium": 500, "high": 1500}
"""Output tokens the simulated `gpt-oss` models think for, per effort (medium when none is asked, as on Groq)."""


def reasoning_tokens(data: dict[str, Any]) -> int:
    """What a simulated reasoning model spends before its text: Groq's `reasoning_effort`, OpenRouter's
    `reasoning.effort` (`none` turns it off)."""
    if "gpt-oss" not in str(data.get("model") or ""):
        return 0
    nested = data.get("reasoning")
    effort = data.get("reasoning_effort") or (nested.get("effort") if isinstance(nested, dict) else None)
    return 0 if effort == "none" else REASONING_TOKENS.get(str(effort or "medium"), REASONING_TOKENS["medium"])


def openai_request(data: dict[str, Any], reply: str) -> Answer:
    """`answer` for an OpenAI-format request body."""
    messages = data.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tools = [
        {"name": t["function"]["name"], "parameters": t["function"].get("parameters")}
        for t in data.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
    ]
    content = last.get("content")
    return answer(
        reply,
        tools=tools,
        tool_choice=data.get("tool_choice"),
        tool_result=(content if isinstance(content, str) else json.dumps(content))
        if last.get("role") == "tool"
        else None,
        response_format=data.get("response_format"),
        stop=data.get("stop"),
        max_tokens=data.get("max_completion_tokens") or data.get("max_tokens"),
        reasoning=reasoning_tokens(data),
    )


def _field(data: Any, camel: str) -> Any:
    """A field of a Gemini body under its JSON name or its proto name: the API takes both, and `google-genai`
    sends some (a tool's `parameters_json_schema`) in the second."""
    if not isinstance(data, dict):
        return None
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return data[camel] if camel in data else data.get(snake)


def gemini_request(data: dict[str, Any], reply: str) -> Answer:
    """`answer` for a Gemini `generateContent` body: `tools[].functionDeclarations`, `toolConfig`, a last turn of
    `functionResponse` parts, and `generationConfig` (`responseMimeType`, `responseJsonSchema` / `responseSchema`,
    `stopSequences`, `maxOutputTokens`)."""
    declarations = [
        d
        for tool in _field(data, "tools") or []
        for d in _field(tool, "functionDeclarations") or []
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    tools = [
        {"name": d["name"], "parameters": _field(d, "parametersJsonSchema") or d.get("parameters")}
        for d in declarations
    ]
    calling = _field(_field(data, "toolConfig"), "functionCallingConfig") or {}
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = _field(calling, "allowedFunctionNames") or []
    tool_choice: Any = "none" if mode == "NONE" else None
    if mode == "ANY" and allowed:
        tool_choice = {"type": "function", "function": {"name": allowed[0]}}
    contents = data.get("contents") or []
    last_parts = (contents[-1].get("parts") or []) if contents and isinstance(contents[-1], dict) else []
    responses = [_field(p, "functionResponse") for p in last_parts if _field(p, "functionResponse")]
    tool_result = None
    if responses:
        result = responses[0].get("response")
        tool_result = result.get("result") if isinstance(result, dict) and "result" in result else json.dumps(result)
    config = _field(data, "generationConfig") or {}
    response_format = None
    if _field(config, "responseMimeType") == "application/json":
        schema = _field(config, "responseJsonSchema") or _field(config, "responseSchema")
        response_format = (
            {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
            if schema
            else {"type": "json_object"}
        )
    return answer(
        reply,
        tools=tools,
        tool_choice=tool_choice,
        tool_result=str(tool_result) if tool_result is not None else None,
        response_format=response_format,
        stop=_field(config, "stopSequences"),
        max_tokens=_field(config, "maxOutputTokens"),
    )


def unable(provider: str, model: str | None, *, tools: bool, json_schema: bool) -> tuple[str, dict[str, str]] | None:
    """The recorded refusal of a model asked for what it cannot do (`UNABLE`), with its values."""
    lacking = UNABLE.get((provider, model or ""))
    if lacking is None:
        return None
    asked = {"tools": tools, "json_schema": json_schema}[lacking[0]]
    return (lacking[1], {"model": model or ""}) if asked else None
