"""How provider calls reach the network: every socket read obeys the attempt's deadline and size cap.

`urllib3` and `httpx` time out per socket operation, so a server that trickles one byte a second never times
out, and a gzip bomb or an endless body fills memory. A `Budget` is one attempt's limits: a deadline (moved
forward by a stream each time text arrives, never past the stream's overall cap) and a maximum number of
bytes. While a budget is active in a thread, the sockets made here wait at most until its deadline on every
read and count what they receive; past either limit the read fails, and the adapter reports a transient error.

- `HttpPool`: urllib3 connections to one endpoint, each wrapping its socket (plain or TLS);
- `measured_setup`: how long the calls in a block spent making connections before their requests left;
- `llms.transport_httpx`: the `httpx2` client `google-genai` sends through, whose connections do the same.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from urllib3 import BaseHTTPResponse, PoolManager, ProxyManager, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import parse_url

_active = threading.local()
_setup: ContextVar[ConnectionSetup | None] = ContextVar("llms_connection_setup", default=None)

NETWORK_ERRORS = (Urllib3Error, OSError)
"""What a call over an `HttpPool` may raise."""


class NetworkFailure(ConnectionError):
    """The exchange failed below HTTP; the message says how, in words fit for the request log."""


class BudgetExceeded(TimeoutError):
    """The attempt ran past its deadline or its size cap (`.reason` says which)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConnectionSetup:
    """How long the call in a `measured_setup` block took before its request left: until it was last written to its
    socket (its body's last piece: a provider counts a request it has received; a proxy's CONNECT went before),
    where the socket is one of this module's (or `llms.transport_httpx`'s), else the seconds spent opening a
    connection (TCP, a proxy's tunnel, the TLS handshake) or waiting for a free one.

    A request's time, and what is learned of its key's window from it, counts from when it left: a new TLS
    connection to a provider takes 50-300 ms, and a rest counted from before it ended that much before the
    provider's window did (the request that resumed the key, on the connection kept alive, went straight in). On
    a busy machine the request's own building waits for the interpreter too: 32 threads on 2 loaded cores left
    40-150 ms after their attempts began, and keys whose answers counted their quota resumed that early (a 429
    each)."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.seconds = 0.0
        self.left: float | None = None  # (monotonic) when the request was last written to its socket

    @property
    def delay(self) -> float:
        """Seconds from the block's start until its request left."""
        return self.left - self.began if self.left is not None else self.seconds


def leaving() -> None:
    """A request is being written (by a socket of the current `measured_setup` block, if any): it leaves now, or
    with a later piece (HTTP/1.1: nothing is written once the answer comes)."""
    setup = _setup.get()
    if setup is not None:
        setup.left = time.monotonic()


@contextmanager
def measured_setup() -> Iterator[ConnectionSetup]:
    """Measure the connection set-up of the calls in the block (in this thread, or this task of an event loop)."""
    setup = ConnectionSetup()
    token = _setup.set(setup)
    try:
        yield setup
    finally:
        _setup.reset(token)


@contextmanager
def setting_up() -> Iterator[None]:
    """A connection being made for the calls of the current `measured_setup` block (none: not measured)."""
    began = time.monotonic()
    try:
        yield
    finally:
        setup = _setup.get()
        if setup is not None:
            setup.seconds += time.monotonic() - began


class Budget:
    """One attempt's limits: seconds until its deadline, and bytes it may receive."""

    def __init__(self, seconds: float, max_bytes: int, *, overall: float | None = None) -> None:
        self.sent_at = time.time()
        self._setup = _setup.get()
        self._setup_before = self._setup.seconds if self._setup is not None else 0.0
        now = self._created = time.monotonic()
        self._cap = now + overall if overall is not None else None
        self.deadline = min(now + seconds, self._cap) if self._cap is not None else now + seconds
        self.max_bytes = max_bytes
        self.received = 0
        self.exceeded: str | None = None

    def left_at(self) -> float:
        """When the request left (wall clock): `sent_at`, and what passed since until it was last written (else
        what making its connection took)."""
        setup = self._setup
        if setup is None:
            return self.sent_at
        if setup.left is not None and setup.left >= self._created:
            return self.sent_at + setup.left - self._created
        return self.sent_at + setup.seconds - self._setup_before

    def extend(self, seconds: float) -> None:
        """Progress was made (a stream's text piece): the next deadline is `seconds` from now, within the cap."""
        deadline = time.monotonic() + seconds
        self.deadline = min(deadline, self._cap) if self._cap is not None else deadline

    def timeout(self, default: float | None) -> float:
        """How long the next socket operation may wait."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.exceeded = self.exceeded or "deadline"
            raise BudgetExceeded("deadline")
        return left if default is None else min(default, left)

    def count(self, size: int) -> None:
        self.received += size
        if self.received > self.max_bytes:
            self.exceeded = self.exceeded or "size"
            raise BudgetExceeded("size")

    @contextmanager
    def active(self) -> Iterator[Budget]:
        """Make this the budget of the calling thread's socket reads while the block runs."""
        previous = getattr(_active, "budget", None)
        _active.budget = self
        try:
            yield self
        finally:
            _active.budget = previous


def current() -> Budget | None:
    return getattr(_active, "budget", None)


# --- urllib3 ---------------------------------------------------------------------------------------------------


class _GuardedSocket:
    """A connected socket (plain or TLS) whose reads and writes wait no longer than the active budget allows."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._default = sock.gettimeout()

    def _arm(self) -> Budget | None:
        budget = current()
        self._sock.settimeout(budget.timeout(self._default) if budget else self._default)
        return budget

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        budget = self._arm()
        size = self._sock.recv_into(buffer, nbytes, flags)
        if budget is not None:
            budget.count(size)
        return size

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        budget = self._arm()
        data = self._sock.recv(bufsize, flags)
        if budget is not None:
            budget.count(len(data))
        return data

    def settimeout(self, value: float | None) -> None:
        """urllib3 sets the per-operation timeout of each request; the budget only ever shortens it."""
        self._default = value
        self._sock.settimeout(value)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._arm()
        leaving()
        self._sock.sendall(data, flags)

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: Any) -> Any:
        """What `http.client` reads the response through: a buffered reader over *this* object."""
        raw = socket.SocketIO(self, "rb" if "b" in mode or mode == "r" else mode)  # type: ignore[arg-type]
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(raw, buffering if buffering and buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        with setting_up():  # (over TLS: the proxy's tunnel and the handshake too)
            super().connect()
        self.sock = _GuardedSocket(self.sock)  # type: ignore[assignment]


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """`_GuardedHTTPConnection.connect` around `HTTPSConnection.connect` (next in the method order)."""


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class HttpPool:
    """The connections to one provider endpoint, with no retries and no redirects, whose every read obeys the
    active `Budget`.

    urllib3 directly, not `requests`: a `requests` call re-reads proxy settings, merges session defaults and
    re-parses the URL on every call, which took longer than the HTTP round trip itself. What `requests` decided
    from the environment is decided here, once: the proxy for `base_url` (`HTTPS_PROXY`, `NO_PROXY`, …) and the CA
    bundle (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`, else certifi's, as `requests` does). Without a proxy, calls go
    straight to the endpoint's connection pool (urllib3's manager would parse the URL and look the pool up again).
    """

    def __init__(self, base_url: str, pool_size: int = 32) -> None:
        options: dict[str, Any] = {"num_pools": 2, "maxsize": pool_size, "block": False, "retries": False}
        if base_url.startswith("https:"):
            options["ca_certs"] = ca_bundle()
        self.proxy = proxy_for(base_url)
        self._manager = ProxyManager(self.proxy, **options) if self.proxy else PoolManager(**options)
        self._manager.pool_classes_by_scheme = {"http": _GuardedPool, "https": _GuardedTLSPool}
        origin = parse_url(base_url)
        self._origin = f"{origin.scheme}://{origin.netloc}"
        self._direct = None if self.proxy else self._manager.connection_from_url(base_url)

    def request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: Timeout
    ) -> BaseHTTPResponse:
        """One exchange with `url` (under the base URL); the body is left unread for the caller to read within
        its budget."""
        options: dict[str, Any] = {"body": body, "headers": headers, "timeout": timeout, "redirect": False}
        if self._direct is None:
            return self._manager.urlopen(method, url, preload_content=False, **options)
        return self._direct.urlopen(method, url[len(self._origin) :], preload_content=False, **options)

    def close(self) -> None:
        self._manager.clear()


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY` / `HTTP_PROXY`, else `ALL_PROXY`, as `requests`
    reads them), or None: no such variable, or `NO_PROXY` covers its host."""
    scheme, _, rest = url.partition("://")
    if urllib.request.proxy_bypass_environment(rest.split("/", 1)[0]):  # host[:port]; it splits off the port
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy and not proxy.lower().startswith(("http://", "https://")):
        kind = proxy.split("://", 1)[0] if "://" in proxy else "a proxy without a scheme"
        raise ValueError(
            f"{scheme.upper()}_PROXY / ALL_PROXY names a {kind} proxy for {url}; only http:// and https:// proxies "
            "are supported (set NO_PROXY for this host to go direct)"
        )
    return proxy


def ca_bundle() -> str | None:
    """The CA bundle to verify providers with: `REQUESTS_CA_BUNDLE` or `CURL_CA_BUNDLE` (as `requests` reads
    them), else certifi's; None: the system's default store."""
    named = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if named:
        return named
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


def read_body(response: BaseHTTPResponse, budget: Budget) -> bytes:
    """The whole (decoded) body, counted against the budget as it is decompressed, so a gzip bomb stops at the cap."""
    with budget.active():
        body = response.read(budget.max_bytes + 1, decode_content=True)  # urllib3 inflates at most this much
    if len(body) > budget.max_bytes:
        budget.exceeded = budget.exceeded or "size"
        raise BudgetExceeded("size")
    return body


def read_lines(response: BaseHTTPResponse, budget: Budget, chunk: int = 8192) -> Iterator[bytes]:
    """Lines of a streamed (decoded) body; the budget is active only while reading, never between lines."""
    pending = b""
    size = 0
    while True:
        with budget.active():
            piece = response.read1(chunk, decode_content=True)  # what has arrived, not a full chunk: events are small
        if not piece:
            break
        size += len(piece)
        if size > budget.max_bytes:
            budget.exceeded = budget.exceeded or "size"
            raise BudgetExceeded("size")
        pending += piece
        *lines, pending = pending.split(b"\n")
        yield from (line.rstrip(b"\r") for line in lines)
    if pending:
        yield pending.rstrip(b"\r")
