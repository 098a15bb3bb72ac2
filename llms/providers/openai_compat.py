"""The OpenAI chat-completions wire format, shared by OpenRouter and Groq (and any provider that speaks it).

One pooled `requests.Session` per provider; the key travels only in the `Authorization` header. A provider
module subclasses `OpenAICompatAdapter` and sets its facts: `classify` (how its answers read), `probe_path`
and `probe_outcome` (a call that spends no tokens), `quota` (what a success says about the key's quota).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import requests

from config.api_keys import ApiKey
from llms.exceptions import ProviderError
from llms.outcomes import OK, Outcome, OutcomeKind, QuotaHint, rejected, transient
from llms.providers.base import Endpoint
from llms.transport import NETWORK_ERRORS, Budget, BudgetExceeded, read_body, read_lines, requests_session
from llms.types import ChatRequest, Completion, StreamReply, Usage
from llms.wire import error_object, snippet


class OpenAICompatAdapter:
    provider: ClassVar[str]
    probe_path: ClassVar[str] = "models"
    extra_headers: ClassVar[Mapping[str, str]] = {}
    classify: ClassVar[Callable[[int, Mapping[str, str], Any, float], Outcome]]

    def __init__(self, endpoint: Endpoint, pool_size: int = 32) -> None:
        self.model = endpoint.model
        self._url = f"{endpoint.base_url}/chat/completions"
        self._probe_url = f"{endpoint.base_url}/{self.probe_path}"
        self._timeout = endpoint.timeout
        self._max_bytes = endpoint.max_bytes
        self._stream_max = endpoint.stream_max_seconds
        self._secrets = endpoint.secrets
        self._session = requests_session(endpoint.base_url, pool_size)
        self._session.headers.update(self.extra_headers)

    # --- provider hooks --------------------------------------------------------------------------------------

    def quota(self, headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
        """What a successful answer's headers say about the key's quota (None: nothing)."""
        return None

    def probe_outcome(self, body: Any) -> Outcome:
        """The verdict on a 200 answer to the probe."""
        if isinstance(body, dict) and "data" in body:
            return Outcome(OutcomeKind.OK, 200, "key accepted")
        return transient("probe answer had no data", 200)

    # --- calls -----------------------------------------------------------------------------------------------

    def send(self, request: ChatRequest, key: ApiKey) -> Completion:
        budget = Budget(self._timeout, self._max_bytes)
        response = self._post(request, key, budget, stream=False)
        body = self._body(response, budget)
        self._raise_unless_ok(self.classify(response.status_code, response.headers, body, time.time()))
        choice = body["choices"][0]
        text = content_text((choice.get("message") or {}).get("content"))
        if not text:
            self._raise_unless_ok(empty_answer(choice.get("finish_reason")))
        return Completion(
            text=text,
            model=str(body.get("model") or self.model),
            usage=usage_of(body.get("usage")),
            quota=self.quota(response.headers, request),
        )

    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply:
        budget = Budget(self._timeout, self._max_bytes, overall=self._stream_max)
        response = self._post(request, key, budget, stream=True)
        if response.status_code != 200 or "json" in response.headers.get("content-type", ""):
            body = self._body(response, budget)
            outcome = self.classify(response.status_code, response.headers, body, time.time())
            if outcome.kind is OutcomeKind.OK:
                outcome = transient("expected an event stream, got a JSON answer", 200)
            self._raise_unless_ok(outcome)
        reply = StreamReply(
            pieces=iter(()), model=self.model, quota=self.quota(response.headers, request), close=response.close
        )
        reply.pieces = self._pieces(response, reply, budget)
        return reply

    def probe(self, key: ApiKey, timeout: float | None = None) -> Outcome:
        budget = Budget(timeout or self._timeout, self._max_bytes)
        try:
            with budget.active():
                response = self._session.get(
                    self._probe_url, headers=_auth(key), timeout=budget.timeout(None), stream=True
                )
            body = self._body(response, budget)
        except ProviderError as exc:
            return exc.outcome
        except NETWORK_ERRORS as exc:
            return network_outcome(exc, budget)
        if response.status_code == 200 and not error_object(body):
            return self.probe_outcome(body).redacted(self._secrets)
        return self.classify(response.status_code, response.headers, body, time.time()).redacted(self._secrets)

    def close(self) -> None:
        self._session.close()

    def _raise_unless_ok(self, outcome: Outcome) -> None:
        if outcome.kind is not OutcomeKind.OK:
            raise ProviderError(outcome.redacted(self._secrets))

    def _post(self, request: ChatRequest, key: ApiKey, budget: Budget, *, stream: bool) -> requests.Response:
        payload: dict[str, Any] = {"model": self.model, "messages": list(request.messages)}
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if stream:
            payload["stream"] = True
        try:
            with budget.active():
                return self._session.post(
                    self._url, json=payload, headers=_auth(key), timeout=self._timeout, stream=True
                )
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None

    def _body(self, response: requests.Response, budget: Budget) -> Any:
        """The parsed JSON body, or its text when it is not JSON; read within the attempt's budget."""
        try:
            raw = read_body(response, budget)
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None
        finally:
            response.close()
        try:
            return json.loads(raw)
        except ValueError:
            return raw[:500].decode("utf-8", "replace")

    def _pieces(self, response: requests.Response, reply: StreamReply, budget: Budget) -> Iterator[str]:
        """SSE `data:` lines; comment lines (`: OPENROUTER PROCESSING`) are keep-alives and do not count as progress:
        only a text piece moves the deadline on. An event carrying `error` (providers send one when a stream fails
        after its 200) is classified like any error answer."""
        finished = False
        try:
            for raw in read_lines(response, budget):
                line = raw.decode("utf-8", "replace")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    break
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
                for choice in chunk.get("choices") or []:
                    if choice.get("finish_reason") == "error":
                        raise ProviderError(transient("stream ended with finish_reason 'error'", 200))
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        budget.extend(self._timeout)
                        yield text
                if chunk.get("model"):
                    reply.model = str(chunk["model"])
        except NETWORK_ERRORS as exc:
            raise ProviderError(network_outcome(exc, budget)) from None
        finally:
            response.close()
        if not finished:
            raise ProviderError(transient("stream ended without [DONE]", 200))


def classify_answer(body: Any) -> Outcome:
    """A 200 whose body has no error object: an answer only if it has a choice to read."""
    if not isinstance(body, dict):
        return transient(f"answer was not JSON: {snippet(body)}", 200)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
        if choices[0].get("finish_reason") == "error":
            return transient("answer ended with finish_reason 'error'", 200)
        return OK
    return transient("answer had no choices", 200)


def empty_answer(finish_reason: Any) -> Outcome:
    """An answer with no text is never returned as `""`: the request may fit another provider (a reasoning
    model spent `max_tokens` on thoughts, a filter removed the text); no key is at fault."""
    why = {"length": "max_tokens ran out before any text", "content_filter": "the provider's filter removed it"}
    reason = why.get(str(finish_reason), f"finish_reason {finish_reason!r}")
    return rejected(f"answer had no text ({reason})", 200)


def network_outcome(exc: Exception, budget: Budget | None = None) -> Outcome:
    if budget is not None and budget.exceeded == "size":
        return transient(f"answer larger than {budget.max_bytes:,} bytes")
    timed_out = isinstance(exc, (requests.Timeout, BudgetExceeded, TimeoutError)) or "Timeout" in type(exc).__name__
    if timed_out or (budget is not None and budget.exceeded):
        return transient("timed out")
    if isinstance(exc, requests.ConnectionError):
        return transient(f"connection failed ({type(exc).__name__})")
    return transient(f"request failed ({type(exc).__name__})")


def _auth(key: ApiKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def usage_of(raw: Any) -> Usage:
    """Token counts; a malformed `usage` block costs the counts, never the answer."""
    if not isinstance(raw, dict):
        return Usage()
    try:
        prompt = max(0, int(raw.get("prompt_tokens") or 0))
        completion = max(0, int(raw.get("completion_tokens") or 0))
        return Usage(prompt, completion, max(0, int(raw.get("total_tokens") or prompt + completion)))
    except (TypeError, ValueError, OverflowError):
        return Usage()
