"""Gemini through the maintained `google-genai` SDK: how its answers read, and its adapter (one client per key).

The request in Gemini's terms (and an answer's text and usage back) is `gemini_translate.py`'s; its agent fields
are `gemini_agents.py`'s.

Facts (sources in docs/providers.md, "Provider facts"):
- Errors are `{"error": {"code", "message", "status", "details"}}`. A 429 lists one or several `QuotaFailure`
  violations: any per-day one rests the key until midnight Pacific, even when `RetryInfo` says 51 s; a limit of
  0 (`quotaValue "0"`, "limit: 0") means the project has no quota for the model at all, which no wait fixes.
- Depleted prepay credits answer 402 (429 before 2026) "Your prepayment credits are depleted"; 400
  `FAILED_PRECONDITION` (region without a free tier, billing) is the key's project, not the request.
- A 200 can carry no text: `promptFeedback.blockReason`, or a candidate that stopped at `MAX_TOKENS`, `SAFETY`,
  `RECITATION`… Thinking models count thoughts against `max_output_tokens`, so thinking is set to the model's
  lowest level and `max_output_tokens` gets that level's allowance on top of the caller's `max_tokens`
  (`gemini_translate.thinking`).
- Limits are per Google Cloud project; per-day quotas reset at midnight Pacific.

Why one `genai.Client` per key: the SDK binds the key at construction, construction costs tens of milliseconds,
and a client dropped after one call closes its connection pool. SDK retries are off (one attempt) so that
rotation, not the SDK, decides what happens after a 429. The SDK is imported when an adapter with keys is built,
not by `import llms` (fast for users who have no Gemini key) nor by the first call: that import takes a second or
more, and counted in the first call's time it made the request look sent a second early — its latency in the
history was the import's, and a rest counted from that moment (a hint-less 429's first rung, 1 s) was over before
it began.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import llms.providers.gemini_agents as agents
from config.api_keys import ApiKey
from llms.clock import ProviderClock
from llms.exceptions import ProviderError
from llms.outcomes import OK, Outcome, OutcomeKind, Scope, rejected, transient
from llms.providers.base import Endpoint, ProviderSpec
from llms.providers.gemini_translate import text_of, translate, usage_of
from llms.transport import Budget
from llms.types import ChatRequest, Completion, Embedded, EmbeddingRequest, StreamReply
from llms.wire import (
    classify_common,
    error_message,
    error_object,
    lower_headers,
    message_hint,
    moment_grid,
    most_precise,
    parse_duration,
    retry_after_header,
    seconds_until_midnight,
)

if TYPE_CHECKING:
    from google import genai

PACIFIC = ZoneInfo("America/Los_Angeles")
API_VERSION = "v1"
"""google-genai 3.x talks to `v1` by default (it was `v1beta` before); named here so the tests can check that
the system prompt and the thinking settings reach that version."""
API_VERSIONS = ("v1", "v1beta", "v1alpha")
_BETA_ONLY = re.compile(r"preview|-exp\b|experimental|-latest$", re.I)
"""Models only `v1beta` serves: previews, experiments and the `-latest` aliases (`gemini-flash-latest`)."""

EMBED_BATCH = 100
"""Texts per `batchEmbedContents` call: Gemini refuses more ("at most 100 requests can be in one batch"); a longer
list goes in several calls with the same key, within one attempt's budget."""
EMBEDDING_MODEL = "gemini-embedding-001"

_BARE_EXHAUSTED = re.compile(r"resource has been exhausted", re.I)
SPEND_WINDOW = 600.0
"""Gemini's spend-based limits are counted over a rolling 10 minutes (rate-limits doc, since June 2026)."""
_NO_QUOTA = re.compile(r"limit:\s*0\b|doesn't have a free quota tier", re.I)
_PREPAY = re.compile(r"prepayment credits are depleted", re.I)
_HISTORY = re.compile(r'thought_signature|Unknown name "id"', re.I)
_UNAVAILABLE_MODEL = re.compile(r"no longer available|is not found for API version", re.I)


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    """Classify an error answer (Gemini's 200s are read from the SDK's objects in `check_answer`)."""
    error = error_object(body)
    message = error_message(body)
    reason = _detail_field(error, "ErrorInfo", "reason")
    if _PREPAY.search(message):
        return Outcome(OutcomeKind.NO_CREDITS, status, message, scope=Scope.ACCOUNT)
    if status == 429 or error.get("status") == "RESOURCE_EXHAUSTED":
        violations = [
            v for d in _details(error, "QuotaFailure") for v in d.get("violations") or [] if isinstance(v, dict)
        ]
        if _NO_QUOTA.search(message) or any(str(v.get("quotaValue")) == "0" for v in violations):
            model = next(
                (str((v.get("quotaDimensions") or {}).get("model")) for v in violations if v.get("quotaDimensions")), ""
            )
            what = f"no quota for {model} in this project" if model else "no quota for this model in this project"
            return Outcome(OutcomeKind.NO_ACCESS, status, f"{what}: {message}", scope=Scope.MODEL)
        hint = most_precise(_retry_delay(error), retry_after_header(lower_headers(headers), now), message_hint(message))
        if not violations and hint is None:  # not a request-rate limit: those name their quota and a retry delay
            if _BARE_EXHAUSTED.search(message):  # shared capacity on the model, every key alike
                return Outcome(
                    OutcomeKind.RATE_LIMIT, status, f"model out of capacity: {message}", scope=Scope.UPSTREAM
                )
            what = f"spend-based limit (10 rolling minutes): {message}"
            return Outcome(OutcomeKind.RATE_LIMIT, status, what, SPEND_WINDOW, scope=Scope.ACCOUNT)
        if any("PerDay" in str(v.get("quotaId", "")) for v in violations):
            until_midnight = seconds_until_midnight(PACIFIC, now)
            return Outcome(
                OutcomeKind.RATE_LIMIT,
                status,
                message,
                max(hint or 0.0, until_midnight),
                daily_quota=True,
                scope=Scope.MODEL,
            )
        grid = None if hint is None else moment_grid(now + hint)  # (where its minute turns on the clock)
        on_tokens = any("token" in str(v.get("quotaMetric", "")) for v in violations)  # `…_input_token_count`
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, hint, scope=Scope.MODEL, grid=grid, on_tokens=on_tokens)
    if reason == "API_KEY_INVALID":
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status == 400 and error.get("status") == "FAILED_PRECONDITION":
        return Outcome(OutcomeKind.NO_ACCESS, status, message, scope=Scope.ACCOUNT)
    if status == 404 or _UNAVAILABLE_MODEL.search(message):
        return rejected(message, status, config=True)
    if status == 400 and _HISTORY.search(message):
        return rejected(message, status)  # Gemini's own demands on a conversation: another provider has none
    if status == 403 and error.get("status") == "PERMISSION_DENIED":
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status == 503 or error.get("status") == "UNAVAILABLE":  # "The model is overloaded": every key alike
        hint = retry_after_header(lower_headers(headers), now)
        return Outcome(OutcomeKind.TRANSIENT, status, f"model overloaded: {message}", hint, scope=Scope.UPSTREAM)
    return classify_common(status, message, None)


def _details(error: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and str(d.get("@type", "")).endswith(f"google.rpc.{kind}")]


def _detail_field(error: Mapping[str, Any], kind: str, name: str) -> Any:
    return next((d.get(name) for d in _details(error, kind)), None)


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    delay = _detail_field(error, "RetryInfo", "retryDelay")
    return parse_duration(str(delay)) if delay is not None else None


_NO_TEXT = {
    "MAX_TOKENS": "max_tokens ran out before any text (thinking counts against it); raise max_tokens",
    "SAFETY": "blocked by Gemini's safety filter",
    "RECITATION": "stopped for reciting protected material",
    "PROHIBITED_CONTENT": "blocked as prohibited content",
    "BLOCKLIST": "blocked by a blocklist",
    "SPII": "blocked for sensitive personal information",
}


_GLITCHES = {
    "MALFORMED_FUNCTION_CALL": "the model wrote a function call it could not parse",
    "UNEXPECTED_TOOL_CALL": "the model called a tool it was not offered",
    "MALFORMED_RESPONSE": "the model's answer was malformed",
}
"""Finish reasons that are the model's slip, not the request's fault: another try may well succeed
(vercel/ai#5039 shows the empty candidate)."""


def check_answer(response: Any, *, streaming: bool) -> Outcome:
    """A 200 is an answer only with text: a blocked prompt or a candidate that stopped before any text is not.

    The first chunk of a stream may carry no text yet; only a stream that ends with none is refused (by the
    client's failover loop).
    """
    feedback = response.prompt_feedback
    if not response.candidates:
        if feedback is not None and feedback.block_reason:
            return rejected(f"prompt blocked by Gemini ({_enum(feedback.block_reason)})", 200)
        return OK if streaming else transient("answer had no candidates", 200)
    if text_of(response) or streaming or agents.tool_calls_of(response.candidates[0]):
        return OK
    finish = _enum(response.candidates[0].finish_reason) or "none"
    if finish in _GLITCHES:
        return transient(f"answer had no text (finishReason {finish}: {_GLITCHES[finish]})", 200)
    return rejected(f"answer had no text (finishReason {finish}: {_NO_TEXT.get(finish, 'no text')})", 200)


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


class GeminiAdapter:
    provider = "gemini"

    def __init__(self, endpoint: Endpoint) -> None:
        self.model = endpoint.model
        self._base_url = endpoint.base_url
        self._timeout = endpoint.timeout
        self._max_bytes = endpoint.max_bytes
        self._stream_max = endpoint.stream_max_seconds
        self._api_version = endpoint.api_version
        self._secrets = endpoint.secrets
        self._clients: dict[str, genai.Client] = {}
        self._lock = threading.Lock()
        self.clock = ProviderClock()  # what a reset named as a moment is read against
        if self._secrets:
            import google.genai.types  # noqa: F401 - the SDK's import, paid here rather than by the first call

            import llms.transport_httpx  # noqa: F401 - and its client's

    def counted_tokens(self, request: ChatRequest, model: str) -> int:
        """Gemini's answers report no tokens left, so nothing is kept to a budget: the request's own reckoning."""
        return request.tokens

    def ready(self, key: ApiKey) -> None:
        """The key's client for the default API version, built before the attempt's clock starts (`_client`)."""
        self._client(key, API_VERSION)

    def send(self, request: ChatRequest, key: ApiKey) -> Completion:
        model = request.model or self.model
        contents, config = translate(request, model)
        client = self._client(key, self._version(request, model))  # before the attempt's clock: see `_client`
        budget = Budget(self._timeout, self._max_bytes)
        try:
            with budget.active():
                response = client.models.generate_content(model=model, contents=contents, config=config)
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc, budget)) from None
        self._raise_unless_ok(check_answer(response, streaming=False))
        candidate = response.candidates[0] if response.candidates else None
        calls = agents.tool_calls_of(candidate, answer_id=response.response_id or "")
        return Completion(
            text=text_of(response),
            model=response.model_version or model,
            usage=usage_of(response),
            tool_calls=calls,
            finish_reason=agents.finish_reason(_enum(candidate.finish_reason) if candidate else "", bool(calls)),
        )

    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply:
        model = request.model or self.model
        contents, config = translate(request, model)
        client = self._client(key, self._version(request, model))
        budget = Budget(self._timeout, self._max_bytes, overall=self._stream_max)
        try:
            with budget.active():
                chunks = iter(client.models.generate_content_stream(model=model, contents=contents, config=config))
                first = next(chunks, None)
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc, budget)) from None
        if first is None:
            raise ProviderError(transient("stream ended before any answer", 200))
        self._raise_unless_ok(check_answer(first, streaming=True))
        reply = StreamReply(pieces=iter(()), model=model, close=lambda: _close(chunks))
        reply.pieces = self._pieces(first, chunks, reply, budget)
        return reply

    def embed(self, request: EmbeddingRequest, key: ApiKey) -> Embedded:
        """`models.embed_content` (the SDK posts `:batchEmbedContents`), `EMBED_BATCH` texts a call; errors are
        read by the same classifier as chat's."""
        from google.genai import types

        model = request.model or EMBEDDING_MODEL
        config = types.EmbedContentConfig(output_dimensionality=request.dimensions) if request.dimensions else None
        client = self._client(key, API_VERSION)
        budget = Budget(self._timeout, self._max_bytes)
        vectors: list[list[float]] = []
        try:
            with budget.active():
                for start in range(0, len(request.texts), EMBED_BATCH):
                    batch = list(request.texts[start : start + EMBED_BATCH])
                    response = client.models.embed_content(model=model, contents=batch, config=config)
                    vectors += [list(e.values or []) for e in response.embeddings or []]
                    budget.extend(self._timeout)
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc, budget)) from None
        if len(vectors) != len(request.texts) or not all(vectors):
            raise ProviderError(transient(f"embeddings answer did not hold {len(request.texts)} vector(s)", 200))
        return Embedded(vectors, model)

    def probe(self, key: ApiKey, timeout: float | None = None) -> Outcome:
        """Listing models spends no tokens and fails the same way a bad key fails a completion."""
        client = self._client(key, self._api_version or API_VERSION)
        budget = Budget(timeout or self._timeout, self._max_bytes)
        try:
            with budget.active():
                pager = client.models.list(config={"page_size": 1})
                next(iter(pager), None)
        except Exception as exc:
            return self._outcome_of(exc, budget)
        return Outcome(OutcomeKind.OK, 200, "key accepted")

    def probe_credit(self, key: ApiKey, timeout: float | None = None) -> Outcome:
        """For a key parked for "prepayment credits are depleted": the cheapest call that needs credit (one token
        of the default model). Listing models says nothing about credit, and Google has answered that falsely for
        a day (issue 22): a passing call brings the key back instead of the whole cooldown."""
        request = ChatRequest.build([{"role": "user", "content": "ping"}], None, 1)
        client = self._client(key, self._version(request, self.model))
        budget = Budget(timeout or self._timeout, self._max_bytes)
        try:
            contents, config = translate(request, self.model)
            with budget.active():
                client.models.generate_content(model=self.model, contents=contents, config=config)
        except ProviderError as exc:
            return exc.outcome
        except Exception as exc:
            return self._outcome_of(exc, budget)
        return Outcome(OutcomeKind.OK, 200, "a one-token answer: credit accepted")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _raise_unless_ok(self, outcome: Outcome) -> None:
        if outcome.kind is not OutcomeKind.OK:
            raise ProviderError(outcome.redacted(self._secrets))

    def _version(self, request: ChatRequest, model: str) -> str:
        """The operator's `GEMINI_API_VERSION`, else per request: tools, tool choice and JSON output, and the models
        only `v1beta` serves (previews, `-latest` aliases), go to `v1beta`; the rest to google-genai's `v1`."""
        if self._api_version:
            return self._api_version
        beta = agents.needs_beta(request.options) or _BETA_ONLY.search(model.removeprefix("models/"))
        return "v1beta" if beta else API_VERSION

    def _client(self, key: ApiKey, version: str) -> genai.Client:
        """One SDK client per key and API version (its key is fixed at construction: safe for rotation). Built
        before an attempt's `Budget` starts: making one costs ~0.15 s of CPU (TLS contexts), which on a loaded
        machine timed the first call out before it was sent."""
        name = f"{key.fingerprint}/{version}"
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                from google import genai
                from google.genai import types

                from llms.transport_httpx import gemini_http_client

                client = genai.Client(
                    api_key=key.secret,
                    http_options=types.HttpOptions(
                        base_url=self._base_url,
                        api_version=version,
                        timeout=max(1, int(self._timeout * 1000)),
                        retry_options=types.HttpRetryOptions(attempts=1),
                        httpx_client=gemini_http_client(self._timeout),
                    ),
                )
                self._clients[name] = client
            return client

    def _pieces(self, first: Any, rest: Iterator[Any], reply: StreamReply, budget: Budget) -> Iterator[str]:
        """The budget is active only while a chunk is read; each text piece moves the deadline on."""
        chunk = first
        try:
            while chunk is not None:
                if chunk.usage_metadata:
                    reply.usage = usage_of(chunk)
                if chunk.model_version:
                    reply.model = chunk.model_version
                candidate = chunk.candidates[0] if chunk.candidates else None
                reply.tool_calls += agents.tool_calls_of(candidate, len(reply.tool_calls), chunk.response_id or "")
                if candidate is not None and candidate.finish_reason:
                    reason = _enum(candidate.finish_reason)
                    reply.finish_reason = agents.finish_reason(reason, bool(reply.tool_calls))
                text = text_of(chunk)
                if text:
                    budget.extend(self._timeout)
                    yield text
                with budget.active():
                    chunk = next(rest, None)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(self._outcome_of(exc, budget)) from None

    def _outcome_of(self, exc: Exception, budget: Budget) -> Outcome:
        """SDK errors carry the status and the whole parsed body; transport errors mean a transient failure."""
        from google.genai import errors

        if budget.exceeded == "size":
            outcome = transient(f"answer larger than {budget.max_bytes:,} bytes")
        elif budget.exceeded == "deadline":
            outcome = transient("timed out")
        elif isinstance(exc, errors.APIError):
            headers = dict(getattr(exc.response, "headers", None) or {})
            body = exc.details if isinstance(exc.details, (dict, list)) else str(exc.details)
            read_at = self.clock.read(headers, budget.left_at(), time.time())
            outcome = classify(int(exc.code or 0), headers, body, read_at)
        elif "Timeout" in type(exc).__name__:
            outcome = transient("timed out")
        elif type(exc).__module__.startswith(("httpx", "httpcore", "h11", "ssl", "socket")) or isinstance(exc, OSError):
            outcome = transient(f"connection failed ({type(exc).__name__})")
        else:
            outcome = transient(f"unreadable answer ({type(exc).__name__})")
        return outcome.redacted(self._secrets)


def _close(chunks: Iterator[Any]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


SPEC = ProviderSpec(
    name="gemini",
    key_prefix="AIza",
    title="Gemini",
    default_model="gemini-3.5-flash-lite",
    default_base_url="https://generativelanguage.googleapis.com",
    day_zone=PACIFIC,
    classify=classify,
    adapter=GeminiAdapter,
    default_embedding_model=EMBEDDING_MODEL,
    limits_per_model=True,
    api_versions=API_VERSIONS,
)
