"""OpenAI-compatible providers' adapter: the OpenAI wire format over pooled connections, blocking and awaited.

One urllib3 connection pool per provider (and one aiohttp pool per event loop, made on the first awaited call);
the key travels only in the `Authorization` header. A provider module subclasses `OpenAICompatAdapter` and sets
its facts: `classify` (how its answers read), `probe_path` and `probe_outcome` (a call that spends no tokens),
`quota` (what a success says about the key's quota). What the bodies hold, written and read, is
`openai_wire.py`'s: this module sends them within the attempt's budget and turns what it reads into a verdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import urllib3
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import NewConnectionError, ProtocolError

from config.api_keys import ApiKey
from llms.clock import ProviderClock
from llms.exceptions import ProviderError
from llms.outcomes import Outcome, OutcomeKind, QuotaHint, transient
from llms.providers.base import Endpoint
from llms.providers.openai_wire import (
    chat_body,
    content_text,
    embedding_body,
    empty_answer,
    merge_tool_call_deltas,
    tool_calls_of,
    usage_of,
    vectors_of,
)
from llms.transport import NETWORK_ERRORS, Budget, HttpPool, NetworkFailure, read_body, read_lines, setting_up
from llms.types import ChatRequest, Completion, Embedded, EmbeddingRequest, StreamReply
from llms.wire import error_object, snippet

if TYPE_CHECKING:
    from llms.transport_async import AsyncAnswer, AsyncHttpPool


class OpenAICompatAdapter:
    provider: ClassVar[str]
    probe_path: ClassVar[str] = "models"
    extra_headers: ClassVar[Mapping[str, str]] = {}
    classify: ClassVar[Callable[[int, Mapping[str, str], Any, float], Outcome]]

    def __init__(self, endpoint: Endpoint, pool_size: int = 32) -> None:
        self.model = endpoint.model
        self._url = f"{endpoint.base_url}/chat/completions"
        self._embed_url = f"{endpoint.base_url}/embeddings"
        self._probe_url = f"{endpoint.base_url}/{self.probe_path}"
        self._timeout = endpoint.timeout
        self._max_bytes = endpoint.max_bytes
        self._stream_max = endpoint.stream_max_seconds
        self._secrets = endpoint.secrets
        self._base_url = endpoint.base_url
        self._pool_size = pool_size
        self._http = HttpPool(endpoint.base_url, pool_size)
        self._aio: AsyncHttpPool | None = None  # made on the first awaited call
        self._timeouts = urllib3.Timeout(connect=endpoint.timeout, read=endpoint.timeout)
        self._headers = {**_DEFAULT_HEADERS, **self.extra_headers}
        self.clock = ProviderClock()  # what a reset named as a moment is read against

    # --- provider hooks --------------------------------------------------------------------------------------

    def quota(self, headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
        """What a successful answer's headers say about the key's quota (None: nothing)."""
        return None

    def counted_tokens(self, request: ChatRequest, model: str) -> int:
        _, allowance = self.reasoning(model or self.model)
        return request.tokens + (allowance if request.max_tokens is not None else 0)

    def reasoning(self, model: str) -> tuple[dict[str, Any], int]:
        """The request fields that ask a reasoning model for its least reasoning, and the output tokens to add to
        the caller's `max_tokens` for it: reasoning tokens count as output, so without them a small `max_tokens`
        buys no text (an empty answer, `finish_reason: "length"`). ({}, 0): not a reasoning model."""
        return {}, 0

    def stream_error(self) -> Outcome:
        """The verdict on a stream chunk with `finish_reason: "error"` and no error object."""
        return transient("stream ended with finish_reason 'error'", 200)

    def probe_outcome(self, body: Any) -> Outcome:
        """The verdict on a 200 answer to the probe."""
        if isinstance(body, dict) and "data" in body:
            return Outcome(OutcomeKind.OK, 200, "key accepted")
        return transient("probe answer had no data", 200)

    # --- calls -----------------------------------------------------------------------------------------------

    def send(self, request: ChatRequest, key: ApiKey) -> Completion:
        budget = Budget(self._timeout, self._max_bytes)
        response = self._post(self._url, self._payload(request, False), key, budget)
        return self._completion(response.status, response.headers, self._body(response, budget), request, budget)

    async def asend(self, request: ChatRequest, key: ApiKey) -> Completion:
        """`send` from an event loop (the gateway), over aiohttp with the same budget."""
        budget = Budget(self._timeout, self._max_bytes)
        answer = await self._apost(self._url, self._payload(request, False), key, budget)
        return self._completion(answer.status, answer.headers, await self._abody(answer, budget), request, budget)

    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply:
        budget = Budget(self._timeout, self._max_bytes, overall=self._stream_max)
        response = self._post(self._url, self._payload(request, True), key, budget)
        if _not_a_stream(response.status, response.headers):
            self._refuse_stream(response.status, response.headers, self._body(response, budget), budget)
        reply = StreamReply(
            pieces=iter(()),
            model=request.model or self.model,
            quota=self.quota(response.headers, request),
            close=response.close,
        )
        reply.pieces = self._pieces(response, reply, budget)
        return reply

    async def aopen_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply:
        """`open_stream` from an event loop: the reply's `pieces` is an async iterator."""
        budget = Budget(self._timeout, self._max_bytes, overall=self._stream_max)
        answer = await self._apost(self._url, self._payload(request, True), key, budget)
        if _not_a_stream(answer.status, answer.headers):
            self._refuse_stream(answer.status, answer.headers, await self._abody(answer, budget), budget)
        reply = StreamReply(
            pieces=iter(()),
            model=request.model or self.model,
            quota=self.quota(answer.headers, request),
            close=answer.close,
        )
        reply.pieces = self._apieces(answer, reply, budget)
        return reply

    def embed(self, request: EmbeddingRequest, key: ApiKey) -> Embedded:
        """`POST {base}/embeddings` in OpenAI's shape, over the chat's connections, budget and classification."""
        budget = Budget(self._timeout, self._max_bytes)
        response = self._post(self._embed_url, embedding_body(request), key, budget)
        return self._embedded(response.status, response.headers, self._body(response, budget), request, budget)

    async def aembed(self, request: EmbeddingRequest, key: ApiKey) -> Embedded:
        """`embed` from an event loop (the gateway), over aiohttp with the same budget."""
        budget = Budget(self._timeout, self._max_bytes)
        answer = await self._apost(self._embed_url, embedding_body(request), key, budget)
        return self._embedded(answer.status, answer.headers, await self._abody(answer, budget), request, budget)

    def probe(self, key: ApiKey, timeout: float | None = None) -> Outcome:
        budget = Budget(timeout or self._timeout, self._max_bytes)
        try:
            with budget.active():
                response = self._http.request(
                    "GET", self._probe_url, None, self._headers_for(key), urllib3.Timeout(budget.timeout(None))
                )
            body = self._body(response, budget)
        except ProviderError as exc:
            return exc.outcome
        except NETWORK_ERRORS as exc:
            return network_outcome(exc, budget)
        if response.status == 200 and not error_object(body):
            return self.probe_outcome(body).redacted(self._secrets)
        return self.classify(response.status, response.headers, body, time.time()).redacted(self._secrets)

    def ready(self, key: ApiKey) -> None:
        """Nothing to make: connections are pooled per host, and a call opens one as it goes."""

    def close(self) -> None:
        self._http.close()

    async def aclose(self) -> None:
        """Close the event loop's connections (from that loop)."""
        if self._aio is not None:
            await self._aio.close()

    # --- the parts `send` and `asend`, `open_stream` and `aopen_stream` share --------------------------------

    def _completion(
        self, status: int, headers: Mapping[str, str], body: Any, request: ChatRequest, budget: Budget
    ) -> Completion:
        self._raise_unless_ok(self.classify(status, headers, body, self._read_at(headers, budget)))
        choice = body["choices"][0]
        message = choice.get("message") or {}
        text = content_text(message.get("content"))
        calls = tool_calls_of(message.get("tool_calls"))
        if not text and not calls:  # an answer that asks for tools has no text to read, and is an answer
            self._raise_unless_ok(empty_answer(choice.get("finish_reason")))
        finish = choice.get("finish_reason")
        return Completion(
            text=text,
            model=str(body.get("model") or request.model or self.model),
            usage=usage_of(body.get("usage")),
            quota=self.quota(headers, request),
            tool_calls=calls,
            finish_reason=str(finish) if finish else ("tool_calls" if calls else "stop"),
        )

    def _embedded(
        self, status: int, headers: Mapping[str, str], body: Any, request: EmbeddingRequest, budget: Budget
    ) -> Embedded:
        """An error answer (also an error inside a 200) is classified exactly as chat's; a 200 must carry one
        vector per text."""
        if status != 200 or error_object(body):
            outcome = self.classify(status, headers, body, self._read_at(headers, budget))
            self._raise_unless_ok(outcome if outcome.kind is not OutcomeKind.OK else transient("error answer", status))
        if not isinstance(body, dict) or "data" not in body:
            self._raise_unless_ok(transient(f"embeddings answer had no data: {snippet(body)}", 200))
        vectors = vectors_of(body.get("data"), len(request.texts))
        if vectors is None:
            self._raise_unless_ok(transient(f"embeddings answer did not hold {len(request.texts)} vector(s)", 200))
        usage = usage_of(body.get("usage"))
        return Embedded(vectors or [], str(body.get("model") or request.model or self.model), usage)

    def _refuse_stream(self, status: int, headers: Mapping[str, str], body: Any, budget: Budget) -> None:
        outcome = self.classify(status, headers, body, self._read_at(headers, budget))
        if outcome.kind is OutcomeKind.OK:
            outcome = transient("expected an event stream, got a JSON answer", 200)
        self._raise_unless_ok(outcome)

    def _read_at(self, headers: Mapping[str, str], budget: Budget) -> float:
        """When the provider read its limits for this attempt, on its clock (`ProviderClock`)."""
        return self.clock.read(headers, budget.left_at(), time.time())

    def _raise_unless_ok(self, outcome: Outcome) -> None:
        if outcome.kind is not OutcomeKind.OK:
            raise ProviderError(outcome.redacted(self._secrets))

    def _payload(self, request: ChatRequest, stream: bool) -> bytes:
        model = request.model or self.model
        least, allowance = self.reasoning(model)
        return chat_body(request, model, least, allowance, stream)

    def _headers_for(self, key: ApiKey) -> dict[str, str]:
        return {**self._headers, "Authorization": f"Bearer {key.secret}"}

    def _event(self, raw: bytes, reply: StreamReply, budget: Budget) -> list[str] | None:
        """One SSE line: the text pieces it carries, or None at `[DONE]`. Comment lines (`: OPENROUTER
        PROCESSING`) are keep-alives and do not count as progress: only a text piece moves the deadline on. An
        event carrying `error` (providers send one when a stream fails after its 200) is classified like any error
        answer."""
        line = raw.decode("utf-8", "replace")
        if not line.startswith("data:"):
            return []
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise ProviderError(transient("stream sent a line that is not JSON", 200)) from None
        if not isinstance(chunk, dict):
            raise ProviderError(transient("stream sent an event that is not an object", 200))
        if "error" in chunk:
            self._raise_unless_ok(self.classify(200, {}, chunk, time.time()))
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if usage:
            reply.usage = usage_of(usage)
        texts = []
        for choice in chunk.get("choices") or []:
            finish = choice.get("finish_reason")
            if finish == "error":
                self._raise_unless_ok(self.stream_error())
            if finish:
                reply.finish_reason = str(finish)
            delta = choice.get("delta") or {}
            if delta.get("tool_calls"):
                budget.extend(self._timeout)
                merge_tool_call_deltas(reply.tool_calls, delta["tool_calls"])
            text = delta.get("content")
            if text:
                budget.extend(self._timeout)
                texts.append(text)
        if chunk.get("model"):
            reply.model = str(chunk["model"])
        return texts

    # --- blocking (urllib3) ----------------------------------------------------------------------------------

    def _post(self, url: str, body: bytes, key: ApiKey, budget: Budget) -> BaseHTTPResponse:
        """Send the request; the answer's body is left unread. A redirect is not followed: providers do not send
        one, and following it would carry the key to wherever it points."""
        try:
            with budget.active():
                return self._http.request("POST", url, body, self._headers_for(key), self._timeouts)
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None

    def _body(self, response: BaseHTTPResponse, budget: Budget) -> Any:
        """The parsed JSON body, or its text when it is not JSON; read within the attempt's budget."""
        try:
            raw = read_body(response, budget)
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None
        finally:
            response.close()  # a fully read answer has already gone back to the pool; a partial one is dropped
        return json_or_text(raw)

    def _pieces(self, response: BaseHTTPResponse, reply: StreamReply, budget: Budget) -> Iterator[str]:
        finished = False
        try:
            for raw in read_lines(response, budget):
                texts = self._event(raw, reply, budget)
                if texts is None:
                    finished = True
                    break
                yield from texts
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None
        finally:
            response.close()
        if not finished:
            raise ProviderError(transient("stream ended without [DONE]", 200))

    # --- awaited (aiohttp) -----------------------------------------------------------------------------------

    async def _apost(self, url: str, body: bytes, key: ApiKey, budget: Budget) -> AsyncAnswer:
        if self._aio is None:
            with setting_up():  # aiohttp's import and TLS context (~0.2 s): not the request's time out
                from llms.transport_async import AsyncHttpPool

                self._aio = AsyncHttpPool(self._base_url, self._pool_size)
        try:
            return await self._aio.request("POST", url, body, self._headers_for(key), budget)
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None

    async def _abody(self, answer: AsyncAnswer, budget: Budget) -> Any:
        try:
            raw = await answer.read()
        except NETWORK_ERRORS as exc:
            answer.close()
            raise ProviderError(network_outcome(exc, budget)) from None
        return json_or_text(raw)

    async def _apieces(self, answer: AsyncAnswer, reply: StreamReply, budget: Budget) -> AsyncIterator[str]:
        finished = False
        try:
            while not finished and (lines := await answer.next_lines()):
                for raw in lines:
                    if not raw:  # the blank line that ends each event
                        continue
                    texts = self._event(raw, reply, budget)
                    if texts is None:
                        finished = True
                        break
                    for text in texts:
                        yield text
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None
        finally:
            answer.close()
        if not finished:
            raise ProviderError(transient("stream ended without [DONE]", 200))


def _not_a_stream(status: int, headers: Mapping[str, str]) -> bool:
    return status != 200 or "json" in headers.get("content-type", "")


def json_or_text(raw: bytes) -> Any:
    """An answer's body as JSON, or the start of its text when it is not JSON (for the classifier to quote)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", "replace")


def network_outcome(exc: Exception, budget: Budget | None = None) -> Outcome:
    if budget is not None and budget.exceeded == "size":
        return transient(f"answer larger than {budget.max_bytes:,} bytes")
    timed_out = isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError))
    if timed_out or (budget is not None and budget.exceeded):
        return transient("timed out")
    if isinstance(exc, NetworkFailure):
        return transient(str(exc))
    if isinstance(exc, (NewConnectionError, ProtocolError, ConnectionError)):
        return transient(f"connection failed ({type(exc).__name__})")
    return transient(f"request failed ({type(exc).__name__})")


_DEFAULT_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": f"llm-key-rotation urllib3/{urllib3.__version__}",
}
