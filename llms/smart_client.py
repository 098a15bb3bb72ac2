"""The smart client: for each provider in order, for each key in rotation, try, record, move on.

This is the only module that combines the key manager (which key, what penalty) with the adapters (one HTTP
call). It never sleeps and never retries a key within one request: a failing key is penalised and the next key
or provider answers instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

from config.api_keys import ApiKey
from config.settings import Provider, Settings, get_settings
from llms.errors import (
    AllKeysExhaustedError,
    Attempt,
    Outcome,
    OutcomeKind,
    ProviderError,
    RequestRejectedError,
    StreamInterruptedError,
    seconds_until_daily_reset,
)
from llms.key_manager import KeyManager
from llms.prober import Prober
from llms.quota import RequestBudget
from llms.state import KeyEvent, StateStore, store_from_url
from llms.types import ChatRequest, ChatResult, Completion, StreamReply

log = logging.getLogger("llms.client")

Wait = bool | float | None
_BUSY_POLL = 0.01  # seconds between looks while every free key is saturated with requests in flight


class ProviderAdapter(Protocol):
    provider: str
    model: str

    def send(self, request: ChatRequest, key: ApiKey) -> Completion: ...
    def open_stream(self, request: ChatRequest, key: ApiKey) -> StreamReply: ...
    def probe(self, key: ApiKey) -> Outcome: ...
    def close(self) -> None: ...


def build_adapter(settings: Settings, provider: Provider) -> ProviderAdapter:
    """The Gemini module (and with it the SDK) is imported only when Gemini has keys."""
    provider_settings = settings.providers[provider]
    if provider is Provider.GEMINI:
        from llms.gemini import GeminiAdapter

        return GeminiAdapter(provider_settings, settings.request_timeout)
    from llms.openai_compat import OpenAICompatAdapter

    return OpenAICompatAdapter(provider_settings, settings.request_timeout)


class SmartClient:
    """Chat with whichever key of whichever provider can answer now."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._order = [p.value for p in settings.provider_order if settings.providers[p].keys]
        self._adapters: dict[str, ProviderAdapter] = {p: build_adapter(settings, Provider(p)) for p in self._order}
        self.key_manager = KeyManager(
            {p.value: settings.providers[p].keys for p in settings.provider_order},
            settings.cooldowns,
            store or store_from_url(settings.state_url, settings.state_prefix),
            clock,
            budgets={
                p.value: RequestBudget(
                    settings.providers[p].requests_per_minute,
                    settings.providers[p].requests_per_day,
                    lambda now, provider=p.value: seconds_until_daily_reset(provider, now),
                )
                for p in settings.provider_order
            },
        )
        self._clock = clock
        self._current_provider: str | None = None
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()
        self.prober: Prober | None = None
        if settings.probe_interval > 0:
            self.prober = Prober(self, settings.probe_interval)
            self.prober.start()

    # --- chatting -------------------------------------------------------------------------------------------------

    def chat(
        self, messages: Any, temperature: float | None = None, max_tokens: int | None = None, wait: Wait = None
    ) -> str:
        return self.complete(messages, temperature=temperature, max_tokens=max_tokens, wait=wait).text

    def complete(
        self, messages: Any, temperature: float | None = None, max_tokens: int | None = None, wait: Wait = None
    ) -> ChatResult:
        """Answer with the first key that can. `wait`: when every key is cooling but one frees up within that
        many seconds, wait for it instead of raising (`True`: `LLM_MAX_WAIT`, or 60 s when that is 0; default:
        `LLM_MAX_WAIT`, which is 0 unless configured)."""
        request = ChatRequest.build(messages, temperature, max_tokens)
        attempts: list[Attempt] = []
        rejected: list[Outcome] = []
        for provider, adapter, key in self._candidates(attempts, self._deadline(wait)):
            started = time.perf_counter()
            try:
                completion = adapter.send(request, key)
            except ProviderError as exc:
                self._failed(provider, key, exc.outcome, attempts, rejected)
                continue
            except Exception as exc:  # an answer no adapter rule foresaw is a transient error, not a crash
                self._failed(provider, key, _unexpected(exc), attempts, rejected)
                continue
            return self._succeeded(provider, key, completion, attempts, time.perf_counter() - started)
        raise self._give_up(attempts, rejected)

    def chat_stream(
        self, messages: Any, temperature: float | None = None, max_tokens: int | None = None, wait: Wait = None
    ) -> ChatStream:
        """Stream the answer's text. Fails over until the first piece arrives; after that an error raises.

        The returned `ChatStream` is an iterator of text pieces; once it is exhausted, `.result` holds the
        `ChatResult` (provider, key, usage) of the streamed answer.
        """
        return ChatStream(self, ChatRequest.build(messages, temperature, max_tokens), self._deadline(wait))

    def _deadline(self, wait: Wait) -> float:
        if wait is None or wait is False:
            seconds = self.settings.max_wait
        elif wait is True:
            seconds = self.settings.max_wait or 60.0
        elif isinstance(wait, (int, float)) and wait >= 0:
            seconds = float(wait)
        else:
            raise ValueError(f"wait must be True, False, None or a number of seconds, got {wait!r}")
        return time.monotonic() + seconds

    def _candidates(self, attempts: list[Attempt], deadline: float) -> Iterator[tuple[str, ProviderAdapter, ApiKey]]:
        """Each usable key once, provider by provider; then, if allowed, wait for the first key to free up."""
        while True:
            for provider in self._order:
                tried: set[ApiKey] = set()
                while (key := self.key_manager.acquire(provider, exclude=tried)) is not None:
                    tried.add(key)
                    yield provider, self._adapters[provider], key
                    if attempts and attempts[-1].kind is OutcomeKind.REQUEST_ERROR:
                        break
            if any(a.kind is OutcomeKind.REQUEST_ERROR for a in attempts):
                return
            soonest = self.key_manager.next_free()
            pause = soonest[1] + 0.001 if soonest else (_BUSY_POLL if self.key_manager.busy() else None)
            if pause is None or time.monotonic() + pause > deadline:
                return
            time.sleep(pause)

    def _failed(
        self, provider: str, key: ApiKey, outcome: Outcome, attempts: list[Attempt], rejected: list[Outcome]
    ) -> None:
        self.key_manager.record(key, outcome)
        attempts.append(Attempt(key.key_id, outcome.kind, outcome.status, outcome.message))
        log.debug("%s failed: %s %s %s", key.label, outcome.kind.value, outcome.status, outcome.message)
        if outcome.kind is not OutcomeKind.REQUEST_ERROR:
            return
        if outcome.config_error:
            with self._lock:
                self._problems[provider] = f"model {self._adapters[provider].model!r}: {outcome.message}"
        if not outcome.other_provider_may_serve:
            raise RequestRejectedError(f"{provider} rejected the request: {outcome.message}", attempts)
        rejected.append(outcome)

    def _succeeded(
        self, provider: str, key: ApiKey, completion: Completion, attempts: list[Attempt], latency: float
    ) -> ChatResult:
        self.key_manager.record(key, Outcome(OutcomeKind.OK, 200), completion.quota)
        attempts.append(Attempt(key.key_id, OutcomeKind.OK, 200, ""))
        with self._lock:
            self._current_provider = provider
            self._problems.pop(provider, None)
        return ChatResult(
            text=completion.text,
            provider=provider,
            model=completion.model,
            key_id=key.key_id,
            key_hint=key.hint,
            latency_s=latency,
            usage=completion.usage,
            attempts=tuple(attempts),
        )

    def _give_up(self, attempts: list[Attempt], rejected: list[Outcome]) -> Exception:
        if rejected:
            reasons = "; ".join(f"{a.key_id.split(':')[0]}: {a.message}" for a in attempts if a.kind == "request_error")
            return RequestRejectedError(f"No provider accepted the request ({reasons})", attempts)
        soonest = self.key_manager.next_free()
        if soonest is None:
            return AllKeysExhaustedError(attempts, _BUSY_POLL if self.key_manager.busy() else None, None)
        key, seconds = soonest
        return AllKeysExhaustedError(attempts, seconds, key.key_id)

    # --- status and control ---------------------------------------------------------------------------------------

    def get_current_provider(self) -> str | None:
        """The provider of the most recent successful answer (None before the first one)."""
        return self._current_provider

    def get_status_summary(self) -> dict[str, Any]:
        """Per provider: available/total counts, a `KeyStatus` per key, and any configuration problem;
        `store` says which backend holds key state and whether it is healthy (`StoreHealth`)."""
        summary: dict[str, Any] = {}
        for provider in self.settings.provider_order:
            keys = self.key_manager.statuses(provider.value)
            summary[provider.value] = {
                "available": sum(k.available for k in keys),
                "total": len(keys),
                "model": self.settings.providers[provider].model,
                "problem": self._problems.get(provider.value),
                "keys": keys,
            }
        summary["store"] = self.key_manager.store_health()
        summary["timestamp"] = self._clock()
        return summary

    def events(self, limit: int = 100) -> list[KeyEvent]:
        return self.key_manager.events(limit)

    def reset_key(self, key_id: str) -> None:
        self.key_manager.reset_key(key_id)

    def reset_provider(self, provider: str) -> None:
        self.key_manager.reset_provider(provider)

    def reset_all(self) -> None:
        self.key_manager.reset_all()

    def check_key(self, key_id: str) -> Outcome:
        """One cheap real call with one key (no tokens where the provider allows), recorded like any other;
        a key parked as invalid or out of credit that now answers is returned to the rotation."""
        key = next((k for p in self._order for k in self.key_manager.keys(p) if k.key_id == key_id), None)
        if key is None:
            raise KeyError(f"unknown key id {key_id!r}")
        outcome = self._adapters[key.provider].probe(key)
        self.key_manager.record(key, outcome)
        if outcome.kind is OutcomeKind.OK:
            self.key_manager.probe_passed(key)
        return outcome

    def close(self) -> None:
        if self.prober is not None:
            self.prober.stop()
        for adapter in self._adapters.values():
            adapter.close()

    def __enter__(self) -> SmartClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChatStream(Iterator[str]):
    """An iterator of text pieces that fails over between keys until the first piece is out."""

    def __init__(self, client: SmartClient, request: ChatRequest, deadline: float) -> None:
        self._client = client
        self._request = request
        self._deadline = deadline
        self._pieces: Generator[str, None, None] = self._run()
        self.result: ChatResult | None = None

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop reading early: closes the provider's stream and frees the key's in-flight slot at once."""
        self._pieces.close()

    def _run(self) -> Generator[str, None, None]:
        client = self._client
        attempts: list[Attempt] = []
        rejected: list[Outcome] = []
        for provider, adapter, key in client._candidates(attempts, self._deadline):
            started = time.perf_counter()
            try:
                reply = adapter.open_stream(self._request, key)
                pieces = iter(reply.pieces)
                first = next(pieces, None)
            except ProviderError as exc:
                client._failed(provider, key, exc.outcome, attempts, rejected)
                continue
            except Exception as exc:
                client._failed(provider, key, _unexpected(exc), attempts, rejected)
                continue
            if first is None:
                client._failed(provider, key, Outcome(OutcomeKind.TRANSIENT, 200, "empty stream"), attempts, rejected)
                continue
            text = [first]
            try:
                yield first
                for piece in pieces:
                    text.append(piece)
                    yield piece
            except (ProviderError, Exception) as exc:
                outcome = exc.outcome if isinstance(exc, ProviderError) else _unexpected(exc)
                client._failed(provider, key, outcome, attempts, rejected)
                raise StreamInterruptedError(
                    f"{provider} stream broke after {len(text)} piece(s): {outcome.message}", attempts
                ) from None
            except GeneratorExit:
                client.key_manager.abandon(key)
                raise
            finally:
                reply.close()
            completion = Completion("".join(text), reply.model, reply.usage, reply.quota)
            self.result = client._succeeded(provider, key, completion, attempts, time.perf_counter() - started)
            return
        raise client._give_up(attempts, rejected)


def _unexpected(exc: Exception) -> Outcome:
    """Only the exception's type is kept: its text could quote a request, and with it a key."""
    log.warning("unexpected %s while calling a provider; treated as a transient error", type(exc).__name__)
    return Outcome(OutcomeKind.TRANSIENT, None, f"unexpected error ({type(exc).__name__})")


_client: SmartClient | None = None
_client_lock = threading.Lock()


def get_smart_client(settings: Settings | None = None) -> SmartClient:
    """The process-wide client, built once from `config.settings.SETTINGS` (or the given settings)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = SmartClient(settings or get_settings())
        return _client


def reset_smart_client() -> None:
    """Forget the process-wide client (tests, or after changing the environment)."""
    global _client
    with _client_lock:
        if _client is not None:
            _client.close()
        _client = None
