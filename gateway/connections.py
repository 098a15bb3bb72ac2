"""The gateway's connection policy: what one connection may cost the server before it has said what it wants.

uvicorn's httptools protocol reads a request's line and headers with no size or time bound, and keeps every
connection it accepts: one 100 MB header was read whole, and 1,050 connections trickling a byte a second made
every other request fail once file descriptors ran out. This protocol adds, per connection:
- the request line and headers are at most `max_header` bytes (431 and close past it), and must arrive within
  `header_timeout` seconds of their first byte (of the connection, for the first request; 408 and close);
- at most `max_connections` are open (bounded by the process's file descriptors): past it, the connection that
  has waited longest for its headers is dropped to make room, and when every connection is busy with a request the
  new one gets 503 with `Retry-After` — before the process runs out of descriptors, never after.
The body's own deadline is the app's (`LLM_GATEWAY_BODY_TIMEOUT`), which reads it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import GatewaySettings

log = logging.getLogger("llms.gateway")

RESERVED_DESCRIPTORS = 64
"""Descriptors kept back from callers' connections: listening socket, logs, the state store, what the event
loop and its threads hold. Upstream connections are counted separately (`descriptors_for_upstream`)."""


def raise_descriptor_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit (as most servers do at start); returns the
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(settings: GatewaySettings, descriptors: int) -> int:
    """`max_connections`, lowered so that callers' connections can never take the descriptors the upstream calls
    (two per worker: a provider connection and what it may need beside) and the rest of the process need."""
    return max(1, min(settings.max_connections, descriptors - RESERVED_DESCRIPTORS - 2 * settings.workers))


def guarded_protocol(settings: GatewaySettings, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with this module's limits (pass it as `uvicorn.Config(http=...)`)."""

    class Guarded(_GuardedProtocol):
        max_header = settings.max_header
        header_timeout = settings.header_timeout
        connection_limit = max_connections

    return Guarded


def _refusal(status: str, message: str, code: str, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}}).encode()
    lines = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_TOO_MANY = _refusal(
    "503 Service Unavailable",
    "The gateway has too many open connections.",
    "too_many_connections",
    {"retry-after": "1"},
)
_HEADERS_TOO_LARGE = _refusal(
    "431 Request Header Fields Too Large",
    "The request line and headers are larger than LLM_GATEWAY_MAX_HEADER.",
    "headers_too_large",
)
_HEADERS_TOO_SLOW = _refusal(
    "408 Request Timeout", "The request headers did not arrive within LLM_GATEWAY_HEADER_TIMEOUT.", "request_timeout"
)


class _GuardedProtocol(HttpToolsProtocol):
    max_header: ClassVar[int]
    header_timeout: ClassVar[float]
    connection_limit: ClassVar[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_since: float | None = None  # when the headers now awaited began to be awaited
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.connection_limit and not self._make_room():
            log.warning("gateway at its connection limit (%d): refusing a connection with 503", self.connection_limit)
            self._refuse(_TOO_MANY)
            return
        self._await_headers()

    def _make_room(self) -> bool:
        """Drop the connection that has waited longest for its headers (a slow or idle client), if there is one."""
        waiting = [c for c in self.connections if isinstance(c, _GuardedProtocol) and c._head_since is not None]
        waiting = [c for c in waiting if c is not self and not c._refused]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._head_since or 0.0)
        oldest._refuse(_HEADERS_TOO_SLOW)
        return True

    def _await_headers(self) -> None:
        self._head_bytes = 0
        self._head_since = time.monotonic()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._head_timer = None
        if self._head_since is not None:
            self._refuse(_HEADERS_TOO_SLOW)

    def _refuse(self, answer: bytes) -> None:
        self._refused = True
        self._head_since = None
        self._stop_timer()
        self.connections.discard(self)  # its descriptor is released as the transport closes
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_since is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_since is not None and self._head_bytes > self.max_header:
            self._refuse(_HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_since is None:  # a further request on a kept-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._stop_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # the request's fresh cycle (not an upgrade)
            cycle.transport = _HeadWithBody(self.transport, cycle, self.loop)  # type: ignore[assignment]
            cycle.scope[HANG_UP] = HangUp(cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_since = None
        self._stop_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        hang_up = cycle.scope.get(HANG_UP) if cycle is not None else None
        if hang_up is not None and cycle.disconnected:  # what the request's `receive()` now answers with
            hang_up.fire()


HANG_UP = "llm.gateway.hang_up"
"""The scope key of a request's `HangUp`, on connections served by this module's protocol."""


class HangUp:
    """Who to tell when a request's connection closes: the moment its `receive()` would answer `http.disconnect`,
    told by the connection itself, so the app needs no task per request awaiting `receive()` to learn it."""

    __slots__ = ("_callbacks", "_cycle")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._callbacks: list[Callable[[], None]] = []

    @property
    def happened(self) -> bool:
        return bool(self._cycle.disconnected)

    @property
    def body_arrived(self) -> bool:
        """Whether the request's whole body has been read off the connection (its `receive()` has it now)."""
        return not self._cycle.more_body

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def fire(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class _HeadWithBody:
    """The connection's transport as one request's response cycle sees it: what the response writes in one turn of
    the event loop goes out in one write — its status line and headers with the body's first bytes, and a stream's
    events that were ready together (a provider's stream usually arrives in one read) — at the end of that turn, or
    at once when the response's last bytes are written. One system call and one wakeup of the caller instead of one
    per piece: uvicorn writes the headers apart, and a stream's events one by one. An app that starts its response
    and is slow to send a body gets its headers on the loop's next turn."""

    __slots__ = ("_cycle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = held = []
            self._loop.call_soon(self._flush)
        held.append(data)
        cycle = self._cycle
        if cycle.chunked_encoding:  # the last chunk (a chunk that only looks like it is sent early: no harm)
            last = data.endswith(b"0\r\n\r\n")
        else:  # uvicorn counts a body's bytes off before writing them
            last = cycle.response_started and cycle.expected_content_length == 0
        if last:
            self._flush()

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
