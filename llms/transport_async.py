"""How provider calls reach the network from an event loop (the gateway): aiohttp, under the same `Budget` as
`llms.transport` — every read waits at most until the attempt's deadline, and every byte is counted against its
cap after decompression, which is done here in bounded steps (so a small gzip answer cannot expand without bound).

aiohttp, not httpx: measured on the gateway's path, an `httpx.AsyncClient` call cost three times an aiohttp one.
Imported only by callers on an event loop, so `import llms` does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import zlib
from collections.abc import AsyncGenerator, Awaitable, Mapping
from typing import Any, TypeVar

import aiohttp

from llms.transport import Budget, BudgetExceeded, NetworkFailure, ca_bundle, proxy_for, setting_up

T = TypeVar("T")
_STEP = 65536


class AsyncAnswer:
    """A provider's answer whose body is still to be read, within the attempt's budget."""

    def __init__(self, response: aiohttp.ClientResponse, budget: Budget) -> None:
        self._response = response
        self._budget = budget
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity", "gzip", "deflate"):
            response.close()
            raise NetworkFailure(f"answer in an unexpected content-encoding ({encoding[:20]!r})")
        self._wbits = 47 if encoding == "gzip" else 15
        self._inflate = zlib.decompressobj(self._wbits) if encoding in ("gzip", "deflate") else None
        self._ended = False
        self._pending = b""  # the start of a line whose end has not arrived

    async def next_bytes(self) -> list[bytes]:
        """The decoded bytes that arrive next (several pieces when a compressed chunk inflates past one step; []:
        the body has ended). Each wait ends at the deadline, each byte counts against the cap; what has arrived
        already is taken without arming a timer (most answers arrive whole with their headers). Plain awaits, not
        async generators: each of those cost a registration with the loop, per answer and per level."""
        if self._ended:
            return []
        content, budget = self._response.content, self._budget
        try:
            budget.timeout(None)  # past the deadline: `BudgetExceeded`, whether or not the bytes are here
            raw = content.read_nowait()
            if not raw and not content.at_eof():
                raw = await within(budget, content.readany())
            if not raw:
                self._ended = True
                return []
            if self._inflate is None:
                budget.count(len(raw))
                return [raw]
            pieces = []
            data = self._inflate.decompress(raw, _STEP)
            while data:
                budget.count(len(data))
                pieces.append(data)
                data = self._inflate.decompress(self._inflate.unconsumed_tail, _STEP)
            return pieces if pieces else [b""]  # a chunk that inflates to nothing yet is not the end
        except zlib.error:
            raise NetworkFailure(f"answer was not valid {'gzip' if self._wbits == 47 else 'deflate'}") from None
        except aiohttp.ClientError as exc:
            raise NetworkFailure(f"connection failed ({type(exc).__name__})") from None

    async def read(self) -> bytes:
        """The whole decoded body; the connection goes back to the pool when it was read to the end."""
        parts: list[bytes] = []
        while pieces := await self.next_bytes():
            parts += pieces
        self._response.release()
        return b"".join(parts)

    async def next_lines(self) -> list[bytes]:
        """The lines of a streamed body that arrive next, `\\r` stripped ([]: the body has ended; an unterminated
        last line comes before that); the budget binds only while waiting, never between lines."""
        while pieces := await self.next_bytes():
            *lines, self._pending = (self._pending + b"".join(pieces)).split(b"\n")
            if lines:
                return [line.rstrip(b"\r") for line in lines]
        tail, self._pending = self._pending, b""
        return [tail.rstrip(b"\r")] if tail else []

    def close(self) -> None:
        """Drop the connection (a half-read answer cannot go back to the pool)."""
        self._response.close()


class _MeasuredConnector(aiohttp.TCPConnector):
    """aiohttp's connector, whose connections (made, or waited for at the pool's limit) count as the request's
    set-up (`llms.transport.measured_setup`), not its time out to the provider."""

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        with setting_up():
            return await super().connect(*args, **kwargs)


class AsyncHttpPool:
    """aiohttp connections to one provider endpoint, with no retries and no redirects; the proxy and CA bundle
    come from the environment as for `HttpPool`. A session belongs to one event loop, so each running loop gets
    its own (a gateway has one; a program may run several, or `asyncio.run` twice), closed as its loop shuts down
    (`_closed_with_its_loop`)."""

    def __init__(self, base_url: str, pool_size: int = 32) -> None:
        self.proxy = proxy_for(base_url)
        self._pool_size = pool_size
        self._tls = ssl.create_default_context(cafile=ca_bundle()) if base_url.startswith("https:") else None
        self._sessions: dict[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]] = {}
        self._lock = threading.Lock()

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session, _ = self._sessions.get(loop) or (None, None)
        if session is None or session.closed:
            with setting_up():  # a loop's first call makes its session: not the request's time out
                connector = _MeasuredConnector(limit=self._pool_size, ssl=self._tls or False)
                session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)
            closer = _closed_with_its_loop(session)
            with contextlib.suppress(StopIteration):
                closer.asend(None).send(None)  # runs it to its `yield` (nothing before it waits): the loop keeps it
            with self._lock:  # forget the sessions of loops that have ended
                self._sessions = {lp: s for lp, s in self._sessions.items() if not lp.is_closed()}
                self._sessions[loop] = (session, closer)
        return session

    async def request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], budget: Budget
    ) -> AsyncAnswer:
        """Send the request and wait for the status line and headers, within the budget."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=budget.timeout(None))
        sending = self._session_here().request(
            method, url, data=body, headers=headers, proxy=self.proxy, allow_redirects=False, timeout=timeout
        )
        try:
            response = await within(budget, sending)
        except aiohttp.ClientError as exc:
            raise NetworkFailure(f"connection failed ({type(exc).__name__})") from None
        return AsyncAnswer(response, budget)

    async def close(self) -> None:
        """Close the running loop's session."""
        with self._lock:
            _, closer = self._sessions.pop(asyncio.get_running_loop(), (None, None))
        if closer is not None:
            await closer.aclose()


async def _closed_with_its_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Closes `session` as its loop shuts down: a loop finalizes the async generators it has started while it still
    runs (`asyncio.run`'s `shutdown_asyncgens`), and nothing else says a loop is ending. Left open, each session
    of a program that called `asyncio.run(client.acomplete(...))` more than once was reported at garbage collection
    ("Unclosed client session", logged as an error), its connections closed by the collector."""
    try:
        yield
    finally:
        await session.close()


async def within(budget: Budget, waiting: Awaitable[T]) -> T:
    """Await `waiting` no longer than the budget's deadline allows."""
    try:
        seconds = budget.timeout(None)
    except BudgetExceeded:
        getattr(waiting, "close", lambda: None)()  # never awaited: say so to the coroutine, not to a warning
        raise
    try:
        async with asyncio.timeout(seconds):
            return await waiting
    except TimeoutError:
        budget.exceeded = budget.exceeded or "deadline"
        raise BudgetExceeded("deadline") from None
