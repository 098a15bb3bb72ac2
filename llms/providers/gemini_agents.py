"""OpenAI's agent fields in Gemini's terms, both ways, through `google-genai`'s types.

- `tools` → one `Tool` of `FunctionDeclaration`s whose parameters go as JSON Schema (`parametersJsonSchema`, so
  unions, arrays and `additionalProperties` need no lossy down-translation); a same-document `$ref` is inlined and
  `$schema` dropped, as the endpoint wants; a `$ref` it cannot resolve (another document, a cycle) is refused
  before any call, naming the field (hermes-agent#98928, zed#63342 describe the same limits);
- `tool_choice` → `functionCallingConfig` (`AUTO`, `ANY`, `NONE`, `ANY` + `allowedFunctionNames`);
- an assistant's `tool_calls` → `functionCall` parts; `tool` messages → `functionResponse` parts (the function's
  name found from the call they answer), consecutive ones in one turn. Neither carries an `id`: the API pairs
  calls and results by order and has refused the field ("Unknown name \"id\"", koog#735, litellm#17080);
- thought signatures: Gemini 3 signs the first function call of each step and answers 400 ("Function call is
  missing a thought_signature") when the history comes back without it. OpenAI's wire has no field for it, so the
  signature rides in the tool call's id (`call_…__thought__<base64url>`, LiteLLM's way, litellm#16895), which
  every client sends back; a call that has none (made by another provider, or by hand) gets Google's documented
  stand-in `skip_thought_signature_validator`;
- `response_format` → `responseMimeType: application/json` (+ `responseJsonSchema`); `stop`, `top_p`, `seed`
  and the penalties → their `generationConfig` fields;
- back: `functionCall` parts → `tool_calls` with the call's id, or one made from the answer's id, the call's place,
  name and arguments; the finish reason in OpenAI's words.
These fields are Gemini's `v1beta` API's (its `v1` long lacked tools): a request carrying them is sent there.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

AGENT_FIELDS = ("tools", "tool_choice", "response_format")
"""Options that send a request to the `v1beta` API."""

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
SIGNED = "__thought__"
"""Separates a tool call's id from the thought signature it carries."""
FOREIGN_SIGNATURE = b"skip_thought_signature_validator"
"""Google's documented stand-in for a call Gemini 3 did not make (thought-signatures FAQ; pydantic-ai uses it)."""


class Refused(ValueError):
    """A request Gemini cannot take as it is: the message names the field."""


def needs_beta(options: Mapping[str, Any]) -> bool:
    return any(name in options for name in AGENT_FIELDS)


def call_names(messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """tool_call_id → function name, from every assistant message's `tool_calls`."""
    return {
        call["id"]: call["function"]["name"]
        for message in messages
        for call in message.get("tool_calls") or []
        if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping)
    }


def function_call_parts(calls: Sequence[Mapping[str, Any]], *, signed: bool) -> list[Any]:
    """An assistant's `tool_calls` as parts; `signed`: the model checks thought signatures (Gemini 3), so the
    first call of the step carries its own, or the stand-in."""
    from google.genai import types

    parts = []
    for i, call in enumerate(calls):
        try:
            args = json.loads(call["function"].get("arguments") or "{}")
        except ValueError:
            raise Refused(f"tool call {call['id']}: its arguments are not JSON") from None
        signature = signature_of(call["id"]) or (FOREIGN_SIGNATURE if signed and i == 0 else None)
        parts.append(
            types.Part(
                function_call=types.FunctionCall(name=call["function"]["name"], args=args),
                thought_signature=signature,
            )
        )
    return parts


def function_response_part(message: Mapping[str, Any], names: Mapping[str, str]) -> Any:
    from google.genai import types

    call_id = message["tool_call_id"]
    name = names.get(call_id)
    if name is None:
        raise Refused(f"a tool result answers {call_id!r}, which no assistant message called")
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content)
    try:
        result = json.loads(text)
    except ValueError:
        result = text
    response = result if isinstance(result, dict) else {"result": result}
    return types.Part(function_response=types.FunctionResponse(name=name, response=response))


def signature_of(call_id: str) -> bytes | None:
    """The thought signature a tool call's id carries, if any."""
    _, mark, encoded = call_id.partition(SIGNED)
    if not mark or not encoded:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        return None


def generation_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """`GenerateContentConfig` fields for the request's options."""
    from google.genai import types

    config: dict[str, Any] = {}
    if "tools" in options:
        declarations = [
            types.FunctionDeclaration(
                name=tool["function"]["name"],
                description=tool["function"].get("description"),
                parameters_json_schema=prepared(
                    tool["function"].get("parameters") or {"type": "object", "properties": {}},
                    f"tools[{i}]['function']['parameters']",
                ),
            )
            for i, tool in enumerate(options["tools"])
        ]
        config["tools"] = [types.Tool(function_declarations=declarations)]
    choice = options.get("tool_choice")
    if choice is not None:
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(choice) if isinstance(choice, str) else "ANY"
        names = [choice["function"]["name"]] if isinstance(choice, Mapping) else None
        config["tool_config"] = types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=mode, allowed_function_names=names)
        )
    response_format = options.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["response_mime_type"] = "application/json"
        if response_format["type"] == "json_schema":
            schema = response_format["json_schema"].get("schema") or {"type": "object"}
            config["response_json_schema"] = prepared(schema, "response_format['json_schema']['schema']")
    if "stop" in options:
        config["stop_sequences"] = list(options["stop"])
    for name in ("top_p", "seed", "presence_penalty", "frequency_penalty"):
        if name in options:
            config[name] = options[name]
    return config


def prepared(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A JSON schema as Gemini's endpoint takes it: same-document `$ref`s inlined, `$schema` dropped."""
    root = copy.deepcopy(dict(schema))
    definitions = {**(root.pop("definitions", None) or {}), **(root.pop("$defs", None) or {})}
    root.pop("$schema", None)

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith(("#/$defs/", "#/definitions/")) or name not in definitions:
                raise Refused(f"{where}: $ref {ref!r} does not point into the same schema's $defs")
            if name in seen or len(seen) > 16:
                raise Refused(f"{where}: $ref {ref!r} refers to itself; Gemini takes no recursive schema")
            target = inline(definitions[name], (*seen, name))
            return {**target, **{k: inline(v, seen) for k, v in node.items() if k != "$ref"}}
        return {k: inline(v, seen) for k, v in node.items() if k != "$schema"}

    result = inline(root, ())
    assert isinstance(result, dict)
    return result


def tool_calls_of(candidate: Any, offset: int = 0, answer_id: str = "") -> tuple[dict[str, Any], ...]:
    """A candidate's `functionCall` parts as OpenAI tool calls; `offset`: calls already seen in this stream;
    `answer_id`: the response's id, so that the same call in two answers gets two ids."""
    calls = []
    for part in (candidate.content.parts if candidate and candidate.content else None) or []:
        call = part.function_call
        if call is None or not call.name:
            continue
        arguments = json.dumps(call.args or {}, sort_keys=True)
        made = hashlib.sha256(f"{answer_id}|{offset + len(calls)}|{call.name}|{arguments}".encode()).hexdigest()
        call_id = call.id or f"call_{made[:24]}"
        if part.thought_signature:
            call_id += SIGNED + base64.urlsafe_b64encode(part.thought_signature).decode().rstrip("=")
        calls.append({"id": call_id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
    return tuple(calls)


def finish_reason(reason: str, has_calls: bool) -> str:
    """Gemini's finishReason in OpenAI's words: a stop with calls is "tool_calls"; filters are "content_filter"."""
    if has_calls and reason in ("STOP", ""):
        return "tool_calls"
    return _FINISH.get(reason, "content_filter" if reason else "stop")
