"""The smart client: the one object a program holds. It builds the key manager, the adapters and the failover loop
(`llms.failover`: for each provider in order, for each key in rotation, try, record, move on) from the settings,
and offers the calls: `chat` / `complete` / `chat_stream` / `embed` for blocking callers, `acomplete` /
`achat_stream` / `aembed` for callers on an event loop (the gateway), the same loop; and the seed's status and
reset calls. The operator's actions and reads (status, logs, disable, check, alerts) are on `client.admin`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from config.keys_file import file_stamp
from config.settings import Settings, get_settings
from llms.adapter_calls import aembed, asend
from llms.admin import Admin
from llms.clock import client_time
from llms.failover import Failover, Wait
from llms.key_manager import LEASE_TTL, KeyManager
from llms.outcomes import Outcome
from llms.prober import Prober
from llms.providers import Endpoint, ProviderAdapter
from llms.quota import ConfiguredLimits
from llms.routing import Route, Router, Target
from llms.state import EventKind, StateStore, store_from_url
from llms.status import StatusReader
from llms.streams import AsyncChatStream, ChatStream, OnAttempt, Run
from llms.types import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
)
from llms.wire import seconds_until_midnight

log = logging.getLogger("llms.client")

KEYS_FILE_POLL = 2.0
"""Seconds between looks at the keys file's stamp (one `stat`): keys added or removed from the dashboard reach
every process reading that file within this long of its next request or status read, with no restart."""


class SmartClient:
    """Chat with whichever key of whichever provider can answer now."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StateStore | None = None,
        clock: Callable[[], float] = client_time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock`: epoch seconds that key state is kept by. `timer`: the seconds the failover loop measures its
        deadlines in (the virtual-time harness in `simulator.virtual_time` gives both its own clock)."""
        self.settings = settings
        self._order = [p for p in settings.provider_order if settings.providers[p].keys]
        self._router = Router(settings.providers, self._order, settings.aliases)
        self._adapters: dict[str, ProviderAdapter] = {p: _adapter(settings, p) for p in self._order}
        self._retired: list[ProviderAdapter] = []
        self._owns_store = store is None
        store = _retained(store or store_from_url(settings.state_url, settings.state_prefix), settings)
        self.key_manager = KeyManager(
            {p: settings.providers[p].keys for p in settings.provider_order},
            settings.cooldowns,
            store,
            clock,
            limits={
                p: ConfiguredLimits(
                    settings.providers[p].requests_per_minute,
                    settings.providers[p].requests_per_day,
                    lambda now, zone=settings.providers[p].spec.day_zone: seconds_until_midnight(zone, now),
                )
                for p in settings.provider_order
            },
            lease_seconds=settings.stream_max_seconds + settings.request_timeout,
            lease_ttl=max(1.0, min(LEASE_TTL, settings.request_timeout)),
            per_model={p for p in settings.provider_order if settings.providers[p].spec.limits_per_model},
            default_models={p: settings.providers[p].model for p in settings.provider_order},
        )
        self._clock = clock
        self.failover = Failover(
            self.key_manager,
            self._adapters,
            lambda: self.settings,
            clock=clock,
            timer=timer,
            store_in_memory=store.IN_MEMORY,
            answered_by=self._answered_by,
            misconfigured=self._misconfigured,
        )
        """The failover loop and its drivers (`llms.failover`); the virtual-time harness drives its steps."""
        self.status = StatusReader(self.key_manager, lambda: self.settings, self._current_problems, clock)
        """Reads key state for people (`llms.status`)."""
        self._keys_stamp = file_stamp(settings.keys_file)
        self._keys_looked = time.monotonic()
        self._keys_watch = threading.Lock()
        self._current_provider: str | None = None
        self._problems: dict[Target, str] = {}
        self._lock = threading.Lock()
        self.admin = Admin(
            self.key_manager,
            self.status,
            lambda: self.settings,
            lambda provider: self._adapters[provider],
            lambda provider, secrets: _adapter(self.settings, provider, secrets),
            refresh=self.watch_keys_file,
            clock=clock,
        )
        """The operator's actions and reads (`llms.admin`): status, logs, disable, checks, alerts."""
        self.prober: Prober | None = None
        if settings.probe_interval > 0:
            self.prober = Prober(self.admin.parked_key_ids, self.admin.check_key, settings.probe_interval)
            self.prober.start()
            threading.Thread(target=self.admin.probe_at_start, name="llms-start-probes", daemon=True).start()

    # --- chatting -------------------------------------------------------------------------------------------------

    def chat(
        self,
        messages: Any,
        temperature: float | None = None,
        max_tokens: int | None = None,
        wait: Wait = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> str:
        return self.complete(
            messages, temperature=temperature, max_tokens=max_tokens, wait=wait, model=model, **options
        ).text

    def complete(
        self,
        messages: Any,
        temperature: float | None = None,
        max_tokens: int | None = None,
        wait: Wait = None,
        on_attempt: OnAttempt | None = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> ChatResult:
        """Answer with the first key that can. `model`: which models may answer (`llms.routing`: None or "auto",
        an alias, a provider, "provider/model" or a model id; unknown: `ValueError` before any call). `wait`: when
        every key is cooling but one frees up within that many seconds, wait for it instead of raising (`True`:
        `LLM_MAX_WAIT`, or 60 s when that is 0; `False`: never; default: `LLM_MAX_WAIT`, and at least `PACING_GRACE`,
        2 s: a rest that short is pacing, not exhaustion).
        `on_attempt` hears each attempt as it ends (from the calling thread), so a caller can show the keys being
        tried while it happens. `messages` may also be a `ChatRequest` already built (validated once, with its
        own temperature and max_tokens). `options`: OpenAI's `tools`, `tool_choice`, `response_format`, `stop`,
        `top_p`, `seed`, `presence_penalty`, `frequency_penalty`, in OpenAI's shapes (`llms.options`); the result
        carries `tool_calls` and `finish_reason`."""
        request = ChatRequest.build(messages, temperature, max_tokens, **options)
        route = self.route(model)
        run = Run(on_attempt=on_attempt, request=request)
        target, lease, completion = self.failover.serve(
            route, self.failover.deadline(wait), lambda a, k, m: a.send(request.for_model(m), k), run
        )
        return self.failover.succeeded(target, lease, completion, run)

    def embed(
        self,
        texts: str | Sequence[str] | EmbeddingRequest,
        model: str | None = None,
        dimensions: int | None = None,
        wait: Wait = None,
        on_attempt: OnAttempt | None = None,
    ) -> EmbeddingResult:
        """One vector per text, from the first key that can, with chat's failover, rotation and cooldowns (one loop:
        `_failover`). `texts`: a string or a non-empty list of non-empty strings, checked first, so a bad input burns
        no key (an `EmbeddingRequest` is taken as built). `model`: None or "auto" (every provider with an embedding
        model, in fallback order), a provider, "provider/model" or an embedding model id (`embedding_route`).
        `dimensions`: shorter vectors, where the model allows it. `wait`, `on_attempt`: as for `complete`."""
        request = EmbeddingRequest.build(texts, dimensions)
        route = self.embedding_route(model)
        run = Run(on_attempt=on_attempt)
        target, lease, embedded = self.failover.serve(
            route, self.failover.deadline(wait), lambda a, k, m: a.embed(request.for_model(m), k), run
        )
        return self.failover.embedded(target, lease, embedded, run)

    async def aembed(
        self,
        texts: str | Sequence[str] | EmbeddingRequest,
        model: str | None = None,
        dimensions: int | None = None,
        wait: Wait = None,
        on_attempt: OnAttempt | None = None,
    ) -> EmbeddingResult:
        """`embed` for callers on an event loop (the gateway): awaited where the adapter can (OpenAI-format
        providers), else in the loop's default executor (Gemini's SDK)."""
        request = EmbeddingRequest.build(texts, dimensions)
        route = self.embedding_route(model)
        run = Run(on_attempt=on_attempt)
        target, lease, embedded = await self.failover.aserve(
            route, self.failover.deadline(wait), lambda a, k, m: aembed(a, request.for_model(m), k), run
        )
        return await self.failover.off_loop(self.failover.embedded, target, lease, embedded, run)

    def embedding_route(self, model: str | None = None) -> Route:
        """The (provider, embedding model) targets an `embed` call with this `model` would try, in order;
        `ValueError` naming the embedding models served when none would."""
        self.watch_keys_file()
        return self._router.embedding_route(model)

    def embedding_models(self) -> list[tuple[str, str]]:
        """Each embedding model served, as `provider/model` and as a bare id, with its owner."""
        return self._router.embedding_served()

    def route(self, model: str | None = None) -> Route:
        """The (provider, model) targets a call with this `model` selector would try, in order; `ValueError` for
        a selector nothing serves (the message lists what is served)."""
        self.watch_keys_file()
        return self._router.route(model)

    def models(self) -> list[tuple[str, str]]:
        """Every selector served without a prefix, with its owner: `auto`, aliases, providers, `provider/model`
        of each catalogue, bare model ids (`/v1/models` of the gateway lists these)."""
        return self._router.served()

    def chat_stream(
        self,
        messages: Any,
        temperature: float | None = None,
        max_tokens: int | None = None,
        wait: Wait = None,
        on_attempt: OnAttempt | None = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> ChatStream:
        """Stream the answer's text. Fails over until the first piece arrives; after that an error raises.

        The returned `ChatStream` is an iterator of text pieces; once it is exhausted, `.result` holds the
        `ChatResult` (provider, key, usage) of the streamed answer. `model`, `on_attempt`: as for `complete`.
        """
        request = ChatRequest.build(messages, temperature, max_tokens, **options)
        route = self.route(model)
        run = Run(on_attempt=on_attempt, request=request)
        return ChatStream(self.failover.stream(request, route, self.failover.deadline(wait), run), run)

    async def acomplete(
        self,
        messages: Any,
        temperature: float | None = None,
        max_tokens: int | None = None,
        wait: Wait = None,
        on_attempt: OnAttempt | None = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> ChatResult:
        """`complete` for callers on an event loop (the gateway), same failover and same state. Providers that
        have awaited calls (OpenRouter, Groq) are awaited; the others (Gemini's SDK) run in the loop's default
        executor, as does store work unless the store is in memory."""
        request = ChatRequest.build(messages, temperature, max_tokens, **options)
        route = self.route(model)
        run = Run(on_attempt=on_attempt, request=request)
        target, lease, completion = await self.failover.aserve(
            route, self.failover.deadline(wait), lambda a, k, m: asend(a, request.for_model(m), k), run
        )
        return await self.failover.off_loop(self.failover.succeeded, target, lease, completion, run)

    def achat_stream(
        self,
        messages: Any,
        temperature: float | None = None,
        max_tokens: int | None = None,
        wait: Wait = None,
        on_attempt: OnAttempt | None = None,
        *,
        model: str | None = None,
        **options: Any,
    ) -> AsyncChatStream:
        """`chat_stream` for callers on an event loop: `async for piece in client.achat_stream(...)`."""
        request = ChatRequest.build(messages, temperature, max_tokens, **options)
        route = self.route(model)
        run = Run(on_attempt=on_attempt, request=request)
        return AsyncChatStream(self.failover.astream(request, route, self.failover.deadline(wait), run), run)

    def _current_problems(self) -> dict[Target, str]:
        with self._lock:
            return dict(self._problems)

    def _answered_by(self, target: Target) -> None:
        with self._lock:
            self._current_provider = target.provider
            self._problems.pop(target, None)

    def _misconfigured(self, target: Target, outcome: Outcome) -> None:
        """A request error saying the model is wrong: if it is a configured one, the status page says so (a
        caller's own pick is not the configuration's problem)."""
        configured = self.settings.providers[target.provider]
        if target.model in configured.models or target.model == configured.embedding_model:
            with self._lock:
                self._problems[target] = f"model {target.model!r}: {outcome.message}"

    # --- status and control ---------------------------------------------------------------------------------------

    def get_current_provider(self) -> str | None:
        """The provider of the most recent successful answer (None before the first one)."""
        return self._current_provider

    def get_status_summary(self) -> dict[str, Any]:
        """`{"openrouter": {"available": 3, "total": 4, "keys": [...], ...}, ..., "timestamp": 1764...}`.

        Every entry but `timestamp` is a provider mapping; everything is plain data (`json.dumps` takes it).
        Typed values, the store's health and the rest are on `client.admin`.
        """
        summary: dict[str, Any] = {status.provider: status.as_dict() for status in self.admin.provider_statuses()}
        summary["timestamp"] = self._clock()
        return summary

    def reset_key(self, *key_ids: str, by: str | None = None) -> None:
        """The seed's call: `client.admin.reset_key`."""
        self.admin.reset_key(*key_ids, by=by)

    def reset_provider(self, provider: str, by: str | None = None) -> None:
        """The seed's call: `client.admin.reset_provider`."""
        self.admin.reset_provider(provider, by)

    def reset_all(self, by: str | None = None) -> None:
        """The seed's call: `client.admin.reset_all`."""
        self.admin.reset_all(by)

    def reload_keys(self, settings: Settings | None = None, by: str | None = None) -> dict[str, list[str]]:
        """Read the keys again (from the sources these settings came from, or from `settings`) without a restart:
        new keys join the rotation, removed keys leave it, the others keep their state. Only keys change; other settings
        take effect on a restart. Each key added or removed is an event naming `by` (a person; else the keys file
        changed). Returns the key ids `added` and `removed`."""
        if settings is None:
            self._keys_stamp = file_stamp(self.settings.keys_file)  # before reading: a later write is seen later
        fresh = settings or self.settings.reread()
        before = {k.fingerprint: k for p in self.settings.provider_order for k in self.key_manager.keys(p)}
        providers = {p: replace(c, keys=fresh.providers[p].keys) for p, c in self.settings.providers.items()}
        self.settings = replace(self.settings, providers=providers)
        self.key_manager.set_keys({p: providers[p].keys for p in self.settings.provider_order})
        with self._lock:
            for provider in self.settings.provider_order:
                if providers[provider].keys:  # a new adapter knows the new secrets (to keep them out of messages)
                    old = self._adapters.get(provider)
                    self._adapters[provider] = _adapter(self.settings, provider)
                    if old is not None:
                        self._retired.append(old)  # requests may still be using it; closed with the client
            self._order = [p for p in self.settings.provider_order if providers[p].keys]
            self._router = Router(self.settings.providers, self._order, self.settings.aliases)
        after = {k.fingerprint: k for p in self._order for k in self.key_manager.keys(p)}
        added, removed = [after[f] for f in after if f not in before], [before[f] for f in before if f not in after]
        why = f"by {by}" if by else "the keys file changed"
        for key in added:
            self.key_manager.note(key, EventKind.ADDED, why)
        for key in removed:
            self.key_manager.note(key, EventKind.REMOVED, why)
        return {"added": [k.key_id for k in added], "removed": [k.key_id for k in removed]}

    def watch_keys_file(self) -> None:
        """Reload the keys if the keys file changed since they were read (another process added or removed one):
        at most one `stat` per `KEYS_FILE_POLL` seconds, called on each request and status read. A file that no
        longer parses keeps the keys in use, and says so in the log."""
        now = time.monotonic()
        if self.settings.keys_file is None or now - self._keys_looked < KEYS_FILE_POLL:
            return
        if not self._keys_watch.acquire(blocking=False):
            return  # another thread is looking
        try:
            self._keys_looked = now
            if file_stamp(self.settings.keys_file) != self._keys_stamp:
                changed = self.reload_keys()
                log.info("keys file changed: added %s, removed %s", changed["added"], changed["removed"])
        except Exception as exc:  # a bad edit must never take requests down
            log.warning("keys file changed but could not be read again: %s", type(exc).__name__)
        finally:
            self._keys_watch.release()

    def close(self) -> None:
        """Stop the prober, close provider connections and, if this client opened it, the state store."""
        if self.prober is not None:
            self.prober.stop()
        self.admin.close()
        for adapter in [*self._adapters.values(), *self._retired]:
            adapter.close()
        if self._owns_store:
            self.key_manager.close()

    async def aclose(self) -> None:
        """`close()` for a client that made awaited calls, from their event loop."""
        await self.aclose_connections()
        self.close()

    async def aclose_connections(self) -> None:
        """Close the connections awaited calls opened (they belong to the event loop this runs on)."""
        for adapter in self._adapters.values():
            aclose = getattr(adapter, "aclose", None)
            if aclose is not None:
                await aclose()

    def __enter__(self) -> SmartClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retained(store: StateStore, settings: Settings) -> StateStore:
    store.retain(settings.history_days, settings.request_log_size)
    return store


def _adapter(settings: Settings, provider: str, secrets: tuple[str, ...] | None = None) -> ProviderAdapter:
    """The provider's adapter for its configured keys (or `secrets`: the keys its log lines must mask)."""
    config = settings.providers[provider]
    endpoint = Endpoint(
        config.model,
        config.base_url,
        settings.request_timeout,
        secrets if secrets is not None else tuple(k.secret for k in config.keys),
        settings.max_response_bytes,
        settings.stream_max_seconds,
        config.api_version,
    )
    return config.spec.adapter(endpoint)


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
