"""Gemini through the maintained `google-genai` SDK, one long-lived `genai.Client` per key.

Why one client per key: the SDK binds the key at construction, construction costs tens of milliseconds, and a
client dropped after one call closes its connection pool. SDK retries are off (one attempt) so that rotation,
not the SDK, decides what happens after a 429. The SDK itself is imported on first use, so `import llms` stays
fast for users who have no Gemini key.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from config.api_keys import ApiKey
from config.settings import ProviderSettings
from llms.errors import Outcome, OutcomeKind, ProviderError, classify_response
from llms.types import ChatRequest, Completion, StreamReply, Usage, message_text

if TYPE_CHECKING:
    from google import genai


class GeminiAdapter:
    def __init__(self, settings: ProviderSettings, timeout: float) -> None:
        self.provider = settings.provider.value
        self.model = settings.model
        self._base_url = settings.base_url
        self._timeout_ms = max(1, int(timeout * 1000))
        self._secrets = [k.secret for k in settings.keys]
        self._clients: dict[str, genai.Client] = {}
        self._lock = threading.Lock()

    def send(self, request: ChatRequest, key: ApiKey) -> Completion:
        contents, config = self._translate(request)
        try:
            response = self._client(key).models.generate_content(model=self.model, contents=contents, config=config)
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc)) from None
        return self._completion(response)

    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply:
        contents, config = self._translate(request)
        try:
            chunks = iter(
                self._client(key).models.generate_content_stream(model=self.model, contents=contents, config=config)
            )
            first = next(chunks, None)
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc)) from None
        if first is None:
            raise ProviderError(Outcome(OutcomeKind.TRANSIENT, 200, "stream ended before any answer"))
        outcome = self._check(first, streaming=True)
        if outcome.kind is not OutcomeKind.OK:
            raise ProviderError(outcome)
        reply = StreamReply(pieces=iter(()), model=self.model)
        reply.pieces = self._pieces(first, chunks, reply)
        return reply

    def probe(self, key: ApiKey) -> Outcome:
        """Listing models spends no tokens and fails the same way a bad key fails a completion."""
        try:
            pager = self._client(key).models.list(config={"page_size": 1})
            next(iter(pager), None)
        except Exception as exc:
            return self._outcome_of(exc)
        return Outcome(OutcomeKind.OK, 200, "key accepted")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _client(self, key: ApiKey) -> genai.Client:
        client = self._clients.get(key.fingerprint)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key.fingerprint)
            if client is None:
                from google import genai
                from google.genai import types

                client = genai.Client(
                    api_key=key.secret,
                    http_options=types.HttpOptions(
                        base_url=self._base_url,
                        api_version="v1",
                        timeout=self._timeout_ms,
                        retry_options=types.HttpRetryOptions(attempts=1),
                    ),
                )
                self._clients[key.fingerprint] = client
            return client

    def _translate(self, request: ChatRequest) -> tuple[list[Any], Any]:
        """OpenAI-style messages to Gemini contents: system → system_instruction, assistant → model, images inline."""
        from google.genai import types

        system: list[str] = []
        contents: list[types.Content] = []
        for message in request.messages:
            if message["role"] == "system":
                system.append(message_text(message["content"]))
                continue
            role = "model" if message["role"] == "assistant" else "user"
            contents.append(types.Content(role=role, parts=_parts(message["content"])))
        config = types.GenerateContentConfig(
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            system_instruction="\n\n".join(system) if system else None,
        )
        return contents, config

    def _completion(self, response: Any) -> Completion:
        outcome = self._check(response, streaming=False)
        if outcome.kind is not OutcomeKind.OK:
            raise ProviderError(outcome)
        return Completion(text=_text_of(response), model=response.model_version or self.model, usage=_usage(response))

    def _check(self, response: Any, *, streaming: bool) -> Outcome:
        """A 200 can still be a blocked prompt (no candidates, a block reason) or an empty answer."""
        if response.candidates:
            return Outcome(OutcomeKind.OK, 200)
        feedback = response.prompt_feedback
        body: dict[str, Any] = {}
        if feedback is not None and feedback.block_reason:
            body = {
                "promptFeedback": {"blockReason": str(getattr(feedback.block_reason, "value", feedback.block_reason))}
            }
        if streaming and not body:
            return Outcome(OutcomeKind.OK, 200)
        return classify_response(self.provider, 200, {}, body, time.time())

    def _pieces(self, first: Any, rest: Iterator[Any], reply: StreamReply) -> Iterator[str]:
        chunk = first
        try:
            while chunk is not None:
                if chunk.usage_metadata:
                    reply.usage = _usage(chunk)
                if chunk.model_version:
                    reply.model = chunk.model_version
                text = _text_of(chunk)
                if text:
                    yield text
                chunk = next(rest, None)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc)) from None

    def _outcome_of(self, exc: Exception) -> Outcome:
        """SDK errors carry the status and the parsed error body; transport errors mean a transient failure."""
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            headers = dict(getattr(exc.response, "headers", None) or {})
            body = exc.details if isinstance(exc.details, (dict, list)) else str(exc.details)
            outcome = classify_response(self.provider, int(exc.code or 0), headers, body, time.time())
        elif "Timeout" in type(exc).__name__:
            outcome = Outcome(OutcomeKind.TRANSIENT, None, "timed out")
        elif type(exc).__module__.startswith(("httpx", "httpcore", "h11", "ssl", "socket")) or isinstance(exc, OSError):
            outcome = Outcome(OutcomeKind.TRANSIENT, None, f"connection failed ({type(exc).__name__})")
        else:
            outcome = Outcome(OutcomeKind.TRANSIENT, None, f"unreadable answer ({type(exc).__name__})")
        return outcome.redacted(self._secrets)


def _parts(content: Any) -> list[Any]:
    from google.genai import types

    if isinstance(content, str):
        return [types.Part(text=content)]
    parts = []
    for part in content:
        if part["type"] == "text":
            parts.append(types.Part(text=part["text"]))
            continue
        url = part["image_url"]["url"]
        if url.startswith("data:"):
            header, _, data = url.partition(",")
            mime = header[5:].split(";")[0] or "image/png"
            parts.append(types.Part.from_bytes(data=base64.b64decode(data), mime_type=mime))
        else:
            mime = "image/png" if url.lower().endswith(".png") else "image/jpeg"
            parts.append(types.Part.from_uri(file_uri=url, mime_type=mime))
    return parts


def _text_of(response: Any) -> str:
    texts = []
    for candidate in response.candidates or []:
        for part in (candidate.content.parts if candidate.content else None) or []:
            if part.text and not part.thought:
                texts.append(part.text)
    return "".join(texts)


def _usage(response: Any) -> Usage:
    meta = response.usage_metadata
    if meta is None:
        return Usage()
    prompt = meta.prompt_token_count or 0
    completion = meta.candidates_token_count or 0
    return Usage(prompt, completion, meta.total_token_count or prompt + completion)
