"""The ASGI app: OpenAI's `/v1/chat/completions`, `/v1/responses` and `/v1/models`, plus `/healthz` and `/metrics`,
over a key pool.

Provider calls are awaited on the event loop (`SmartClient.acomplete` / `achat_stream`: aiohttp for OpenRouter and
Groq), at most `LLM_GATEWAY_WORKERS` at once (further requests queue); what blocks — Gemini's SDK, a SQLite or
Redis store, `/healthz` and `/metrics` — runs in the loop's default executor, as many threads. (A thread hop per
request cost more than the rest of the gateway.) Order of checks, cheapest first: route, token, body size (while
reading, never after; `gateway.admission`), JSON and messages, model name; only then is a key spent. A caller
hanging up cancels its upstream call (`gateway.caller`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.admission import authenticate, read_body
from gateway.caller import Caller, CallerLeft, unless_caller_leaves
from gateway.config import GatewaySettings
from gateway.formats import CHAT, RESPONSES, Parsed, StreamWriter, WireFormat
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.openai_format import (
    ApiError,
    ParsedEmbeddings,
    dumps,
    embedding_id,
    embeddings_body,
    model_entry,
    model_list,
    parse_embeddings,
    retry_headers,
)
from gateway.pool import ClientPool
from gateway.responses_format import not_stored
from llms import AllKeysExhaustedError, AsyncChatStream, LLMError, RequestRejectedError, StreamInterruptedError

log = logging.getLogger("llms.gateway")
T = TypeVar("T")
_Parsed = TypeVar("_Parsed")
JSON = "application/json"


@dataclass
class _State:
    pool: ClientPool
    settings: GatewaySettings
    metrics: GatewayMetrics
    tokens: tuple[bytes, ...]
    slots: asyncio.Semaphore

    async def begin(self) -> None:
        """Wait for one of the `LLM_GATEWAY_WORKERS` request slots (further requests queue here)."""
        await self.slots.acquire()
        self.metrics.in_flight.inc()

    def end(self) -> None:
        self.metrics.in_flight.dec()
        self.slots.release()

    async def run(self, call: Callable[[], T]) -> T:
        """A blocking call in a worker thread of the loop's default executor."""
        return await asyncio.get_running_loop().run_in_executor(None, call)


def create_app(pool: ClientPool, settings: GatewaySettings) -> Starlette:
    """The gateway over `pool` (whose lifetime the caller owns)."""
    state = _State(
        pool,
        settings,
        GatewayMetrics(pool.auto.admin.provider_statuses),
        tuple(t.encode() for t in settings.tokens),
        asyncio.Semaphore(settings.workers),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        workers = ThreadPoolExecutor(settings.workers, thread_name_prefix="llm-gateway")
        asyncio.get_running_loop().set_default_executor(workers)
        try:
            yield
        finally:
            await pool.aclose_connections()

    async def authenticated_body(request: Request, parse: Callable[[bytes], _Parsed]) -> _Parsed | Response:
        """The caller's token checked, then its body read within the limits and parsed; an error answer if not."""
        refused = authenticate(state.tokens, request)
        if refused is not None:
            return _error(refused)
        try:
            return parse(await read_body(request, settings.max_body, settings.body_timeout))
        except ApiError as exc:
            return _error(exc)

    def answering(wire: WireFormat) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint of one wire format: every format's request runs through the client on the same path."""

        async def endpoint(request: Request) -> Response:
            parsed = await authenticated_body(request, wire.parse)
            if isinstance(parsed, Response):
                return parsed
            client = pool.resolve(parsed.model)
            if client is None:
                return _error(_unknown_model(pool, parsed.model))
            if parsed.stream:
                return await _stream(state, client, wire, parsed, request)
            return await _complete(state, client, wire, parsed, request)

        return endpoint

    chat, responses = answering(CHAT), answering(RESPONSES)

    async def stored_response(request: Request) -> Response:
        refused = authenticate(state.tokens, request)
        return _error(refused or not_stored(request.path_params["response_id"]))

    async def embeddings(request: Request) -> Response:
        parsed = await authenticated_body(request, parse_embeddings)
        if isinstance(parsed, Response):
            return parsed
        try:
            pool.auto.embedding_route(parsed.model)
        except ValueError as exc:  # no embedding model by that name: say which are served
            return _error(ApiError(404, f"The model '{parsed.model}': {exc}.", param="model", code="model_not_found"))
        return await _embed(state, pool.auto, parsed, request)

    async def models(request: Request) -> Response:
        refused = authenticate(state.tokens, request)
        if refused is not None:
            return _error(refused)
        return Response(model_list(pool.model_ids()), media_type=JSON)

    async def model(request: Request) -> Response:
        refused = authenticate(state.tokens, request)
        if refused is not None:
            return _error(refused)
        wanted = request.path_params["model"]
        owner = dict(pool.model_ids()).get(wanted)
        if owner is None:
            return _error(_unknown_model(pool, wanted))
        return Response(dumps(model_entry(wanted, owner)), media_type=JSON)

    async def healthz(_: Request) -> Response:
        statuses, store = await state.run(lambda: (pool.auto.admin.provider_statuses(), pool.auto.admin.store_health()))
        providers = {
            s.provider: {
                "available": s.available,
                "total": s.total,
                "paused_until": s.paused_until,
                "problem": s.problem,
            }
            for s in statuses
        }
        serving = any(s.available for s in statuses)
        body = {
            "status": "ok" if serving else "unavailable",
            "providers": providers,
            "store": {"backend": store.backend, "healthy": store.healthy, "detail": store.detail},
        }
        return Response(dumps(body), status_code=200 if serving else 503, media_type=JSON)

    async def metrics(_: Request) -> Response:
        return Response(await state.run(state.metrics.render), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        text = exc.detail if isinstance(exc, HTTPException) else "Internal error."
        if status in (404, 405):  # name what was asked and what is served: a bare "Not Found" reads as a bad model
            text = f"{request.method} {request.url.path} is not served here. This gateway serves: {_served(request)}."
        return _error(ApiError(status, text, code={404: "not_found", 405: "method_not_allowed"}.get(status)))

    async def internal_error(_: Request, exc: Exception) -> Response:
        """A bug must not hand its traceback (or anything in it) to a caller: OpenAI's shape, the type's name only
        in the log (uvicorn logs the traceback where the operator reads it)."""
        log.error("internal error answering a request: %s", type(exc).__name__)
        return _error(ApiError(500, "Internal error.", type="server_error", code="internal_error"))

    answers = {
        "/v1/chat/completions": chat,
        "/chat/completions": chat,
        "/v1/embeddings": embeddings,
        "/embeddings": embeddings,
        "/v1/responses": responses,
        "/responses": responses,
    }
    return _Gateway(
        answers,
        http_error,
        internal_error,
        routes=[
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in answers.items()),
            Route(
                "/v1/responses/{response_id:path}",
                stored_response,
                methods=["GET", "POST", "DELETE"],
                include_in_schema=False,  # answers that nothing is stored: not listed among what is served
            ),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model:path}", model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class _Gateway(Starlette):
    """The Starlette app, with the POSTs that answer (chat, responses, embeddings) dispatched straight to their
    endpoints: the same endpoint, the same error answers, without four layers of middleware and the route table
    walked per request (about a twentieth of the gateway's time under load). Everything else — other methods and
    paths, a trailing slash, a `root_path`, lifespan — goes through Starlette as before."""

    def __init__(
        self, answers: dict[str, Endpoint], http_error: ErrorHandler, internal_error: ErrorHandler, **kwargs: Any
    ) -> None:
        super().__init__(exception_handlers={HTTPException: http_error, Exception: internal_error}, **kwargs)
        self._answers = answers
        self._http_error = http_error
        self._internal_error = internal_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._answers.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None or scope.get("root_path"):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except HTTPException as exc:  # as Starlette's ExceptionMiddleware answers it
            response = await self._http_error(request, exc)
            exc.__traceback__ = None
        except Exception as exc:  # as Starlette's ServerErrorMiddleware: the 500 answer, then raised for uvicorn
            await (await self._internal_error(request, exc))(scope, receive, send)
            raise
        try:
            await response(scope, receive, send)
        except Exception as exc:  # the answer had begun: nothing more can be sent (logged, raised)
            await self._internal_error(request, exc)
            raise


# --- what is served, for the answers that name it --------------------------------------------------------------


def _served(request: Request) -> str:
    """The OpenAI paths this app answers, with their methods, from its own routing table."""
    routes = [
        r for r in request.app.routes if isinstance(r, Route) and r.path.startswith("/v1/") and r.include_in_schema
    ]
    return ", ".join(f"{'/'.join(sorted((r.methods or set()) - {'HEAD'}))} {r.path}" for r in routes)


def _unknown_model(pool: ClientPool, name: str) -> ApiError:
    known = ", ".join(i for i, _ in pool.auto.models())
    return ApiError(
        404,
        f"The model '{name}' is not served by this gateway. Use one of: {known}.",
        param="model",
        code="model_not_found",
    )


# --- answering -------------------------------------------------------------------------------------------------


async def _complete(state: _State, client: Any, wire: WireFormat, parsed: Parsed, request: Request) -> Response:
    started = time.perf_counter()
    await state.begin()
    try:
        result = await unless_caller_leaves(request, client.acomplete(parsed.request, model=parsed.model))
    except LLMError as exc:
        error, outcome = _from_llm_error(exc)
        state.metrics.finished(outcome, getattr(exc, "attempts", ()), time.perf_counter() - started, False)
        return _error(error)
    except CallerLeft:
        state.metrics.finished("client_disconnected", (), time.perf_counter() - started, False)
        return Response(status_code=499)  # nobody reads it; uvicorn drops it on the closed connection
    finally:
        state.end()
    state.metrics.finished("ok", result.attempts, time.perf_counter() - started, False, result.key_id)
    cid = wire.new_id()
    body = wire.body(parsed, cid, _answered(result.provider, result.model), result)
    return Response(body, media_type=JSON, headers=_who(result.provider, result.key_id, result.attempts, cid))


async def _embed(state: _State, client: Any, parsed: ParsedEmbeddings, request: Request) -> Response:
    """Embeddings over the same pool, failover and metrics as a chat answer; the same x-llm-* headers."""
    started = time.perf_counter()
    await state.begin()
    try:
        work = client.aembed(parsed.request, model=parsed.model)
        result = await unless_caller_leaves(request, work)
    except LLMError as exc:
        error, outcome = _from_llm_error(exc)
        state.metrics.finished(outcome, getattr(exc, "attempts", ()), time.perf_counter() - started, False)
        return _error(error)
    except CallerLeft:
        state.metrics.finished("client_disconnected", (), time.perf_counter() - started, False)
        return Response(status_code=499)
    finally:
        state.end()
    state.metrics.finished("ok", result.attempts, time.perf_counter() - started, False, result.key_id)
    body = embeddings_body(_answered(result.provider, result.model), result, parsed.encoding_format)
    headers = _who(result.provider, result.key_id, result.attempts, embedding_id())
    return Response(body, media_type=JSON, headers=headers)


async def _stream(state: _State, client: Any, wire: WireFormat, parsed: Parsed, request: Request) -> Response:
    """Fail over until the first piece (so a 429 or 400 is still a proper HTTP status), then stream SSE events."""
    started = time.perf_counter()
    stream = client.achat_stream(parsed.request, model=parsed.model)
    await state.begin()
    caller = Caller(request)  # watches until the stream's end (`_SSE` stops it)
    try:
        first = await caller.unless_gone(anext(stream, None))
    except LLMError as exc:
        caller.stop()
        state.end()
        error, outcome = _from_llm_error(exc)
        state.metrics.finished(outcome, getattr(exc, "attempts", ()), time.perf_counter() - started, True)
        return _error(error)
    except CallerLeft:
        caller.stop()
        state.end()
        await _close(stream)
        state.metrics.finished("client_disconnected", stream.attempts, time.perf_counter() - started, True)
        return Response(status_code=499)
    except BaseException:
        caller.stop()
        state.end()
        await _close(stream)
        raise
    cid = wire.new_id()
    provider, model, key_id = stream.provider, stream.model, stream.key_id
    writer = wire.writer(parsed, cid, _answered(provider, model) if provider else parsed.model)
    headers = {"x-request-id": cid, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if provider and key_id:
        headers.update(_who(provider, key_id, stream.attempts, cid))
    return _SSE(_Events(state, stream, first, writer, started, caller), headers)


@dataclass
class _Events:
    """One streamed answer: the provider's stream, the writer of its SSE events, and the caller's watcher."""

    state: _State
    stream: AsyncChatStream
    first: str | None
    writer: StreamWriter
    started: float
    caller: Caller


class _SSE(Response):
    """The SSE events of one streamed answer, sent as they come. When the caller hangs up, its watcher cancels the
    wait for the next piece, and the provider's stream is closed at once (its key freed now, not when an abandoned
    generator is garbage-collected); the request then ends quietly, as a disconnect.

    The events are sent from this task: Starlette's `StreamingResponse` ran an anyio task group per stream (a task
    to send, a cancel scope, the request's task listening for the hang-up), about a tenth of a streamed answer's
    time. The last event goes with the body's end (one write)."""

    media_type = "text/event-stream"

    def __init__(self, events: _Events, headers: dict[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.events = events
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e = self.events
        outcome, done, last = "client_disconnected", False, b""
        try:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                opening = e.writer.first(e.first or "")  # None: an answer that only calls tools (it has ended)
                if e.first is not None:
                    await send({"type": "http.response.body", "body": opening, "more_body": True})
                    opening = b""
                    async for piece in e.stream:
                        await send({"type": "http.response.body", "body": e.writer.piece(piece), "more_body": True})
                done = True
                result = e.stream.result
                if result is not None:
                    e.writer.model = _answered(result.provider, result.model)
                outcome = "ok"
                last = opening + e.writer.finish(result)
            except StreamInterruptedError as exc:
                done = True
                outcome = "interrupted"
                last = e.writer.error(ApiError(502, str(exc), type="server_error", code="stream_interrupted"))
            finally:
                e.caller.stop()
                if not done:  # the caller went away (or the app is stopping): free the key's in-flight slot now
                    await _close(e.stream)
                e.state.end()
                result = e.stream.result
                attempts = result.attempts if result else e.stream.attempts
                key_id = result.key_id if result and outcome == "ok" else e.stream.key_id
                e.state.metrics.finished(outcome, attempts, time.perf_counter() - e.started, True, key_id)
        except asyncio.CancelledError:
            if not e.caller.left:
                raise
            e.caller.uncancel()
            return
        await send({"type": "http.response.body", "body": last, "more_body": False})


async def _close(stream: AsyncChatStream) -> None:
    """End the provider's stream and free the key's slot; shielded, because it usually runs while the request is
    being cancelled."""
    with anyio.CancelScope(shield=True):
        await stream.aclose()


def _answered(provider: str | None, model: str | None) -> str:
    """The response's `model`: `provider/model`, the id `/v1/models` lists, so a caller can pin what answered."""
    return f"{provider}/{model}" if model else str(provider)


def _who(provider: str, key_id: str, attempts: Any, cid: str) -> dict[str, str]:
    """Who answered: provider, key id (never the key) and how many keys were tried."""
    headers = {"x-llm-provider": provider, "x-llm-key-id": key_id, "x-request-id": cid}
    if attempts:
        headers["x-llm-attempts"] = str(len(attempts))
        skipped = [a.describe() for a in attempts if a.kind.value != "ok"]
        if skipped:
            headers["x-llm-skipped"] = ", ".join(skipped)
    return headers


def _from_llm_error(exc: LLMError) -> tuple[ApiError, str]:
    """The client's errors as OpenAI-shaped answers, and the outcome label for the metrics."""
    if isinstance(exc, AllKeysExhaustedError):
        if exc.retry_in is not None and exc.retry_in > 0:
            return ApiError(
                429, str(exc), type="requests", code="rate_limit_exceeded", headers=retry_headers(exc.retry_in)
            ), "exhausted"
        if exc.retry_in == 0:  # every key failed just now (transient errors), none is resting
            return ApiError(
                503, str(exc), type="server_error", code="upstream_unavailable", headers={"Retry-After": "1"}
            ), "unavailable"
        return ApiError(
            503, str(exc), type="server_error", code="no_keys_available", headers={"x-should-retry": "false"}
        ), "unavailable"
    if isinstance(exc, RequestRejectedError):
        return ApiError(400, str(exc), code="request_rejected"), "rejected"
    return ApiError(502, str(exc), type="server_error", code="upstream_error"), "error"


def _error(error: ApiError) -> Response:
    return Response(error.body(), status_code=error.status, media_type=JSON, headers=error.headers)
