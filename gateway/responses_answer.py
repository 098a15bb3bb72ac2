"""A Responses API answer (`POST /v1/responses`): one `response` object, or the SSE events of a streamed one.

The request side (`gateway.responses_format`) turns a Responses request into the pool's chat request; this side
turns the chat answer back into the Responses API's shapes: output items (a message, then one item per function
call), usage in its own names, and the events in the order the SDKs assemble them. Apart, because the SDKs check
the answer's shapes field by field while the request side is about refusing what cannot be served. Pure
functions over dicts and bytes, like `openai_format`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gateway.openai_format import ApiError, dumps, random_hex
from gateway.responses_format import ParsedResponses
from llms.types import ChatResult, Usage


def response_id() -> str:
    return f"resp_{random_hex()}"


def _item_id(prefix: str) -> str:
    return f"{prefix}_{random_hex()}"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


def _incomplete_reason(result: ChatResult | None) -> str | None:
    """Why an answer stopped short, in the Responses API's words: cut at `max_output_tokens`, or filtered."""
    reason = result.finish_reason if result else None
    return {"length": "max_output_tokens", "content_filter": "content_filter"}.get(reason or "")


def response_object(
    rid: str,
    parsed: ParsedResponses,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    *,
    incomplete: str | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `response` object, with the request fields the SDKs' models require echoed back."""
    return {
        "id": rid,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        **parsed.echo,
        "model": model,
        "output": output,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "truncation": "disabled",
        "usage": usage_dict(usage) if usage is not None else None,
        "user": None,
    }


def _message_item(mid: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": mid, "type": "message", "role": "assistant", "status": status, "content": [part]}


def _call_item(call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call["function"]
    return {
        "id": _item_id("fc"),
        "type": "function_call",
        "call_id": call["id"],
        "name": function["name"],
        "arguments": function.get("arguments") or "",
        "status": status,
    }


def response_body(parsed: ParsedResponses, rid: str, model: str, result: ChatResult) -> bytes:
    """The whole answer as one Response: a `message` item when it has text (or nothing else), then one
    `function_call` item per tool call; `incomplete` with the reason when it was cut short."""
    incomplete = _incomplete_reason(result)
    status = "incomplete" if incomplete else "completed"
    output = []
    if result.text or not result.tool_calls:
        output.append(_message_item(_item_id("msg"), result.text, status))
    output.extend(_call_item(call) for call in result.tool_calls)
    return dumps(
        response_object(rid, parsed, model, int(time.time()), status, output, result.usage, incomplete=incomplete)
    )


class ResponseWriter:
    """The SSE events of one streamed Response, in the order the SDKs assemble them: `response.created`,
    `response.in_progress`, the message item (added, content part added, text deltas, text done, part done, item
    done), each function call item (added, arguments delta and done, item done), then `response.completed` (or
    `response.incomplete`, or `response.failed` when the provider's stream broke). Every event carries the next
    `sequence_number`."""

    def __init__(self, parsed: ParsedResponses, rid: str, model: str) -> None:
        self.parsed = parsed
        self.rid = rid
        self.model = model
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.message_id: str | None = None
        self.text = ""

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(data) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        usage = extra.pop("usage", None)
        return response_object(self.rid, self.parsed, self.model, self.created_at, status, self.output, usage, **extra)

    def first(self, text: str) -> bytes:
        opening = self._response("in_progress")
        out = self._event("response.created", response=opening)
        out += self._event("response.in_progress", response=opening)
        return out + (self.piece(text) if text else b"")

    def piece(self, text: str) -> bytes:
        out = b"" if self.message_id is not None else self._open_message()
        self.text += text
        return out + self._event(
            "response.output_text.delta",
            item_id=self.message_id,
            output_index=len(self.output),
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _open_message(self) -> bytes:
        self.message_id = _item_id("msg")
        index = len(self.output)
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item = {**_message_item(self.message_id, "", "in_progress"), "content": []}
        out = self._event("response.output_item.added", output_index=index, item=item)
        return out + self._event(
            "response.content_part.added", item_id=self.message_id, output_index=index, content_index=0, part=empty
        )

    def _close_message(self, status: str) -> bytes:
        assert self.message_id is not None
        index, mid = len(self.output), self.message_id
        item = _message_item(mid, self.text, status)
        part = item["content"][0]
        out = self._event(
            "response.output_text.done", item_id=mid, output_index=index, content_index=0, text=self.text, logprobs=[]
        )
        out += self._event("response.content_part.done", item_id=mid, output_index=index, content_index=0, part=part)
        out += self._event("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        self.message_id = None
        return out

    def finish(self, result: ChatResult | None) -> bytes:
        incomplete = _incomplete_reason(result)
        status = "incomplete" if incomplete else "completed"
        calls = result.tool_calls if result else []
        out = b""
        if self.message_id is None and not calls and not self.output:
            out += self._open_message()  # an empty answer is still one (empty) message
        if self.message_id is not None:
            out += self._close_message(status)
        for call in calls:
            index, item = len(self.output), _call_item(call)
            out += self._event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=item["arguments"],
            )
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
            self.output.append(item)
        closing = self._response(status, usage=result.usage if result else Usage(), incomplete=incomplete)
        return out + self._event(f"response.{status}", response=closing)

    def error(self, error: ApiError) -> bytes:
        """The provider's stream broke after the answer began: `response.failed` with what arrived, so no SDK
        mistakes the truncated text for a whole answer."""
        out = self._close_message("incomplete") if self.message_id is not None else b""
        failed = self._response("failed", error={"code": "server_error", "message": error.message})
        return out + self._event("response.failed", response=failed)
