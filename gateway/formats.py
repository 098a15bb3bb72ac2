"""The wire formats the gateway answers in — chat completions and the Responses API — behind one interface.

Both become the same `ChatRequest`, so `gateway.app` has one path that runs a request through the client (failover,
the caller-left watcher, metrics, headers); a format only says how to read a body and how to write the answer, whole
or as SSE events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.openai_format import ApiError, ChunkWriter, ParsedChat, completion_body, completion_id, parse_chat
from gateway.responses_answer import ResponseWriter, response_body, response_id
from gateway.responses_format import ParsedResponses, parse_responses
from llms.types import ChatRequest, ChatResult


class Parsed(Protocol):
    """A validated request body, whatever its format."""

    @property
    def model(self) -> str: ...
    @property
    def request(self) -> ChatRequest: ...
    @property
    def stream(self) -> bool: ...


class StreamWriter(Protocol):
    """The SSE events of one streamed answer."""

    model: str

    def first(self, text: str) -> bytes: ...
    def piece(self, text: str) -> bytes: ...
    def finish(self, result: ChatResult | None) -> bytes: ...
    def error(self, error: ApiError) -> bytes: ...


@dataclass(frozen=True)
class WireFormat:
    parse: Callable[[bytes], Any]
    """Body → a `Parsed`, or `ApiError(400)` before any key is spent."""
    new_id: Callable[[], str]
    body: Callable[[Any, str, str, ChatResult], bytes]
    """(parsed, id, answering model, result) → the whole answer."""
    writer: Callable[[Any, str, str], StreamWriter]
    """(parsed, id, answering model) → the writer of a streamed answer."""


def _chat_body(parsed: ParsedChat, cid: str, model: str, result: ChatResult) -> bytes:
    return completion_body(cid, int(time.time()), model, result)


def _chat_writer(parsed: ParsedChat, cid: str, model: str) -> ChunkWriter:
    return ChunkWriter(cid, model, parsed.include_usage)


def _responses_writer(parsed: ParsedResponses, rid: str, model: str) -> ResponseWriter:
    return ResponseWriter(parsed, rid, model)


CHAT = WireFormat(parse_chat, completion_id, _chat_body, _chat_writer)
RESPONSES = WireFormat(parse_responses, response_id, response_body, _responses_writer)
