"""OpenAI's Responses API (`POST /v1/responses`) as the gateway's chat request (the answer back as a Response is
`gateway.responses_answer`).

The pool speaks chat completions; a Responses request is translated into the same `ChatRequest` (input items to
messages, flat function tools to chat tools, `text.format` to `response_format`), so it takes the same failover as
any chat. What needs state the gateway does not keep (`previous_response_id`, conversations, stored prompts,
background runs) is refused with a 400 that says so, never silently dropped: a caller continuing a conversation it
believes stored would get answers that forgot it. Pure functions over dicts and bytes, like `openai_format`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.openai_format import ApiError, bad_request, flag, load_object, required_model
from llms.types import ChatRequest

STATEFUL_FIELDS = {
    "previous_response_id": "continues a stored response",
    "conversation": "continues a stored conversation",
    "prompt": "names a stored prompt",
}
"""Refused: each needs something this gateway never stores."""

NO_STATE = "This gateway keeps no responses, conversations or prompts: send the whole conversation as 'input'."

IGNORED_FIELDS = (
    "include",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "stream_options",
    "top_logprobs",
    "truncation",
    "user",
)
"""Accepted and ignored: bookkeeping, or tuning the answer keeps its shape without. `store` is true by default in
the SDKs (the Agents SDK sends it), so it cannot be refused; nothing is stored, and the answer says `store: false`."""

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = ("input_text", "output_text", "text")


@dataclass(frozen=True)
class ParsedResponses:
    """A validated `/v1/responses` body: the chat request it becomes, and what the answer echoes back."""

    model: str
    request: ChatRequest
    stream: bool
    echo: Mapping[str, Any] = field(default_factory=dict)


def parse_responses(body: bytes) -> ParsedResponses:
    """The request as a `ChatRequest`, validated as the client will validate it, or `ApiError(400)` naming the
    field."""
    data = load_object(body)
    model = required_model(data)
    _refuse_stateful(data)
    stream = flag(data, "stream")
    tools, echoed_tools = _tools(data.get("tools"))
    text_format = _text_format(data.get("text"))
    instructions = _instructions(data.get("instructions"))
    items, origins = _input(data.get("input"))
    messages, origins = instructions + items, ["instructions"] * len(instructions) + origins
    options = {
        "tools": tools,
        "tool_choice": _tool_choice(data.get("tool_choice")),
        "response_format": text_format,
        "top_p": data.get("top_p"),
    }
    try:
        request = ChatRequest.build(messages, data.get("temperature"), data.get("max_output_tokens"), **options)
    except ValueError as exc:
        raise _translated(str(exc), origins) from None
    echo = {
        "instructions": data.get("instructions") if isinstance(data.get("instructions"), str) else None,
        "max_output_tokens": data.get("max_output_tokens"),
        "metadata": data.get("metadata") if isinstance(data.get("metadata"), dict) else {},
        "parallel_tool_calls": data.get("parallel_tool_calls") is not False,
        "temperature": data.get("temperature"),
        "text": {"format": _echo_format(text_format)},
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": echoed_tools,
        "top_p": data.get("top_p"),
    }
    return ParsedResponses(model, request, stream, echo)


def _translated(text: str, origins: list[str]) -> ApiError:
    """The client's validation message in the Responses API's own field names: `messages[2]` becomes the input item
    it was made from (instructions come first, and calls join the assistant turn before them)."""
    for chat, ours in (
        ("max_tokens", "max_output_tokens"),
        ("response_format", "text.format"),
        ("tool_choice", "tool_choice"),
        ("tools", "tools"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
    ):
        if text.startswith(chat):
            return bad_request(text.replace(chat, ours, 1), ours)
    text = re.sub(r"messages\[(\d+)\]", lambda m: origins[int(m.group(1))], text)
    return bad_request(text.replace("messages", "input"), "input")


def _refuse_stateful(data: Mapping[str, Any]) -> None:
    for name, what in STATEFUL_FIELDS.items():
        if data.get(name) is not None:
            raise bad_request(f"'{name}' {what}. {NO_STATE}", name, "unsupported_parameter")
    if data.get("background"):
        raise bad_request(
            "'background': true needs a stored response to poll. This gateway keeps no responses: send the request "
            "without it (stream it to see progress).",
            "background",
            "unsupported_parameter",
        )


def _instructions(instructions: Any) -> list[dict[str, Any]]:
    if instructions is None:
        return []
    if isinstance(instructions, str):
        return [{"role": "system", "content": instructions}] if instructions else []
    raise bad_request("'instructions' must be text (a list of input items goes in 'input').", "instructions")


def _input(items: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Input items as chat messages, and the item each message came from (for error messages): a `function_call`
    joins the assistant turn before it (or opens one), a `function_call_output` becomes a `tool` message, a
    `reasoning` item is dropped (only its model could read it)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}], ["input"]
    if not isinstance(items, list) or not items:
        raise bad_request("'input' must be text or a non-empty list of input items.", "input")
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object (a message or a function call item).", "input")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "reasoning":
            continue
        if kind == "message":
            message = _message(where, item)
        elif kind == "function_call_output":
            message = _function_output(where, item)
        elif kind == "function_call":
            call = _function_call(where, item)
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
                continue
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        elif kind == "item_reference":
            raise bad_request(f"{where}: an 'item_reference' points at a stored item. {NO_STATE}", "input")
        else:
            raise bad_request(
                f"{where}: input items of type {kind!r} are not supported here; this gateway takes messages, "
                "'function_call' and 'function_call_output' items (and drops 'reasoning').",
                "input",
                "unsupported_parameter",
            )
        messages.append(message)
        origins.append(where)
    return messages, origins


def _message(where: str, item: Mapping[str, Any]) -> dict[str, Any]:
    role = _ROLES.get(item.get("role")) if isinstance(item.get("role"), str) else None
    if role is None:
        raise bad_request(f"{where}['role'] must be one of {', '.join(_ROLES)}, got {item.get('role')!r}.", "input")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad_request(f"{where}['content'] must be text or a list of content parts.", "input")
    parts = [_part(f"{where}['content'][{j}]", part) for j, part in enumerate(content)]
    if role != "user" or all(p["type"] == "text" for p in parts):  # only a user's turn may hold images
        if any(p["type"] != "text" for p in parts):
            raise bad_request(f"{where}: only a user message may hold images.", "input")
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _part(where: str, part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        url = part.get("image_url")
        if isinstance(url, str):
            return {"type": "image_url", "image_url": {"url": url}}
        raise bad_request(
            f"{where}: an image needs 'image_url' (a data: or http(s) URL); uploaded files ('file_id') are not kept "
            "here.",
            "input",
        )
    if kind in ("input_file", "input_audio"):
        raise bad_request(f"{where}: {kind!r} parts are not supported; send text or images.", "input")
    raise bad_request(f"{where} must be an 'input_text', 'output_text' or 'input_image' part.", "input")


def _function_call(where: str, item: Mapping[str, Any]) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name and isinstance(arguments, str)):
        raise bad_request(
            f"{where}: a 'function_call' item needs 'call_id', 'name' and 'arguments' (JSON text).", "input"
        )
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _function_output(where: str, item: Mapping[str, Any]) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if isinstance(output, list):  # content parts: the tool's text
        output = "".join(p.get("text", "") for p in output if isinstance(p, dict) and p.get("type") in _TEXT_PARTS)
    if not (isinstance(call_id, str) and call_id and isinstance(output, str)):
        raise bad_request(
            f"{where}: a 'function_call_output' item needs the 'call_id' of its call and an 'output'.", "input"
        )
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tools(tools: Any) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """Flat function tools as chat tools (and as the answer echoes them). A hosted tool runs on OpenAI's servers,
    which no provider behind this gateway has: refused by name, so the caller does not wait for a search that never
    happens."""
    if tools is None or tools == []:
        return None, []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be a list of function tools.", "tools")
    chat, echoed = [], []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise bad_request(
                f"tools[{i}]: the hosted tool {kind!r} is not available through this gateway (its providers run "
                "none); only 'function' tools are forwarded.",
                "tools",
                "unsupported_parameter",
            )
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        chat.append({"type": "function", "function": function})
        echoed.append({"type": "function", "parameters": None, "strict": None, "description": None, **function})
    return chat, echoed


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "required", "none"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise bad_request(
        f"tool_choice {kind!r} is not supported: send 'auto', 'required', 'none' or "
        "{'type': 'function', 'name': ...}.",
        "tool_choice",
        "unsupported_parameter",
    )


def _text_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as chat's `response_format` (`json_schema`'s fields move under a `json_schema` key)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad_request("'text' must be an object such as {'format': {'type': 'text'}}.", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise bad_request("text.format must be {'type': 'text' | 'json_object' | 'json_schema', ...}.", "text.format")


def _echo_format(response_format: Mapping[str, Any] | None) -> dict[str, Any]:
    if response_format is None:
        return {"type": "text"}
    if response_format["type"] == "json_schema":
        return {"type": "json_schema", **response_format["json_schema"]}
    return dict(response_format)


def not_stored(response: str) -> ApiError:
    """`GET /v1/responses/{id}` and friends: nothing is ever stored here to find."""
    return ApiError(
        404,
        f"No response '{response}' here: this gateway stores no responses ('store' is accepted and ignored). "
        "Keep the Response you were sent, and send the whole conversation as 'input' to continue it.",
        param="response_id",
        code="not_found",
    )
