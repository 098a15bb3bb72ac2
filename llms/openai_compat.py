"""OpenRouter and Groq: OpenAI-style chat completions over one pooled `requests.Session` per provider.

The adapter sends one request with one key and reports what happened; it never retries and never picks keys.
The key travels only in the `Authorization` header.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from config.api_keys import ApiKey
from config.settings import ProviderSettings
from llms.errors import (
    Outcome,
    OutcomeKind,
    ProviderError,
    classify_response,
    error_message,
    quota_hint,
)
from llms.types import ChatRequest, Completion, StreamReply, Usage

_EXTRA_HEADERS: Mapping[str, Mapping[str, str]] = {
    "openrouter": {"X-Title": "llm-key-rotation"},
}


class OpenAICompatAdapter:
    def __init__(self, settings: ProviderSettings, timeout: float, pool_size: int = 32) -> None:
        self.provider = settings.provider.value
        self.model = settings.model
        self._url = f"{settings.base_url}/chat/completions"
        self._probe_url = f"{settings.base_url}/key" if self.provider == "openrouter" else f"{settings.base_url}/models"
        self._timeout = timeout
        self._secrets = [k.secret for k in settings.keys]
        self._session = requests.Session()
        self._session.headers.update(_EXTRA_HEADERS.get(self.provider, {}))
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def send(self, request: ChatRequest, key: ApiKey) -> Completion:
        response = self._post(request, key, stream=False)
        body = _json_or_text(response)
        outcome = classify_response(self.provider, response.status_code, response.headers, body, time.time())
        if outcome.kind is not OutcomeKind.OK:
            raise ProviderError(outcome.redacted(self._secrets))
        choice = body["choices"][0]
        return Completion(
            text=_content_text(choice.get("message", {}).get("content")),
            model=str(body.get("model") or self.model),
            usage=_usage(body.get("usage")),
            quota=quota_hint(response.headers),
        )

    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply:
        response = self._post(request, key, stream=True)
        if response.status_code != 200 or "json" in response.headers.get("content-type", ""):
            body = _json_or_text(response)
            response.close()
            outcome = classify_response(self.provider, response.status_code, response.headers, body, time.time())
            if outcome.kind is OutcomeKind.OK:
                outcome = Outcome(OutcomeKind.TRANSIENT, 200, "expected an event stream, got a JSON answer")
            raise ProviderError(outcome.redacted(self._secrets))
        reply = StreamReply(pieces=iter(()), model=self.model, quota=quota_hint(response.headers), close=response.close)
        reply.pieces = self._pieces(response, reply)
        return reply

    def probe(self, key: ApiKey) -> Outcome:
        """A call that spends no tokens: OpenRouter's key info, Groq's model list."""
        try:
            response = self._session.get(self._probe_url, headers=_auth(key), timeout=self._timeout)
        except requests.RequestException as exc:
            return _network_outcome(exc).redacted(self._secrets)
        body = _json_or_text(response)
        if response.status_code == 200 and isinstance(body, dict) and "data" in body:
            return Outcome(OutcomeKind.OK, 200, "key accepted")
        outcome = classify_response(self.provider, response.status_code, response.headers, body, time.time())
        return outcome.redacted(self._secrets)

    def close(self) -> None:
        self._session.close()

    def _post(self, request: ChatRequest, key: ApiKey, *, stream: bool) -> requests.Response:
        payload: dict[str, Any] = {"model": self.model, "messages": list(request.messages)}
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if stream:
            payload["stream"] = True
        try:
            return self._session.post(self._url, json=payload, headers=_auth(key), timeout=self._timeout, stream=stream)
        except requests.RequestException as exc:
            raise ProviderError(_network_outcome(exc).redacted(self._secrets)) from None

    def _pieces(self, response: requests.Response, reply: StreamReply) -> Iterator[str]:
        """Parse SSE `data:` lines; comment lines (`: OPENROUTER PROCESSING`) are keep-alives and skipped."""
        finished = False
        try:
            for raw in response.iter_lines(chunk_size=None):
                line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    raise self._stream_error("stream sent a line that is not JSON") from None
                if "error" in chunk:
                    raise self._stream_error(f"stream error: {error_message(chunk)}")
                usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
                if usage:
                    reply.usage = _usage(usage)
                for choice in chunk.get("choices") or []:
                    if choice.get("finish_reason") == "error":
                        raise self._stream_error("stream ended with finish_reason 'error'")
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
                if chunk.get("model"):
                    reply.model = str(chunk["model"])
        except requests.RequestException as exc:
            raise ProviderError(_network_outcome(exc).redacted(self._secrets)) from None
        finally:
            response.close()
        if not finished:
            raise self._stream_error("stream ended without [DONE]")

    def _stream_error(self, message: str) -> ProviderError:
        return ProviderError(Outcome(OutcomeKind.TRANSIENT, 200, message).redacted(self._secrets))


def _auth(key: ApiKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


def _network_outcome(exc: requests.RequestException) -> Outcome:
    if isinstance(exc, requests.Timeout):
        return Outcome(OutcomeKind.TRANSIENT, None, "timed out")
    if isinstance(exc, requests.ConnectionError):
        return Outcome(OutcomeKind.TRANSIENT, None, f"connection failed ({type(exc).__name__})")
    return Outcome(OutcomeKind.TRANSIENT, None, f"request failed ({type(exc).__name__})")


def _json_or_text(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, requests.RequestException):
        try:
            return response.text[:500]
        except requests.RequestException:
            return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    return Usage(prompt, completion, int(raw.get("total_tokens") or prompt + completion))
