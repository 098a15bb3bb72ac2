"""The `httpx2` client `google-genai` sends through: every network read obeys the attempt's `Budget` (deadline and
size cap, `llms.transport`), and gzip/deflate are decoded here within the cap.

Built from the libraries' public parts only: `httpcore2.ConnectionPool` takes a `network_backend` (its documented
hook for custom I/O), and `httpx2.BaseTransport` is how `httpx2` is told to use a pool. `httpx2.HTTPTransport`
offers no such hook, so `GuardedTransport` does its small job itself: turn the request into the pool's, and the
pool's answer and errors back into `httpx2`'s. Imported only when a Gemini adapter with keys is built.
"""

from __future__ import annotations

import functools
import ssl
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore2
import httpx2

from llms.transport import BudgetExceeded, current, leaving, setting_up

_ERRORS: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)
"""httpcore's errors as httpx names them (most specific first), so the SDK sees the errors it knows."""


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = next((theirs for ours, theirs in _ERRORS if isinstance(exc, ours)), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class GuardedStream(httpcore2.NetworkStream):
    """A connection whose reads wait no longer than the active budget allows, and count what they receive."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = current()
        if budget is None:
            return self._inner.read(max_bytes, timeout)
        try:
            data = self._inner.read(max_bytes, budget.timeout(timeout))
            budget.count(len(data))
        except BudgetExceeded as exc:
            raise httpcore2.ReadTimeout(f"attempt {exc.reason} exceeded") from None
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        budget = current()
        leaving()
        try:
            self._inner.write(buffer, budget.timeout(timeout) if budget else timeout)
        except BudgetExceeded as exc:
            raise httpcore2.WriteTimeout(f"attempt {exc.reason} exceeded") from None

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        with setting_up():  # the handshake is the connection's set-up, not the request's time out
            return GuardedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore2.NetworkBackend):
    """The pool's network backend: every connection it opens is a `GuardedStream`."""

    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        with setting_up():
            return GuardedStream(self._inner.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return GuardedStream(self._inner.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class BodyStream(httpx2.SyncByteStream):
    """The pool's answer body as `httpx2` reads it: decoded in 64 KiB steps when compressed (`wbits`), each step
    counted against the active budget; the pool's errors in `httpx2`'s names."""

    def __init__(self, raw: Iterable[bytes], wbits: int | None) -> None:
        self._raw = raw
        self._wbits = wbits

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            if self._wbits is None:
                yield from self._raw
                return
            decoder = zlib.decompressobj(self._wbits)
            try:
                for chunk in self._raw:
                    data = decoder.decompress(chunk, 65536)
                    while data:
                        self._count(len(data))
                        yield data
                        data = decoder.decompress(decoder.unconsumed_tail, 65536)
            except zlib.error as exc:
                raise httpx2.DecodingError(f"bad compressed answer: {exc}") from None

    @staticmethod
    def _count(size: int) -> None:
        budget = current()
        if budget is not None:
            try:
                budget.count(size)
            except BudgetExceeded as exc:
                raise httpx2.ReadError(f"attempt {exc.reason} exceeded") from None

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every key's pool: making one loads the CA bundle (~40 ms of CPU), and one key's pool
    needs nothing another's does not."""
    return httpx2.create_ssl_context()


class GuardedTransport(httpx2.BaseTransport):
    """A connection pool on the guarded backend; gzip/deflate decoded here, other encodings refused."""

    def __init__(self) -> None:
        self._pool = httpcore2.ConnectionPool(
            ssl_context=_tls_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(httpcore2.SyncBackend()),
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        sent = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            answer = self._pool.handle_request(sent)
        headers = httpx2.Headers(answer.headers)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        wbits = {"": None, "identity": None, "gzip": 47, "deflate": 15}.get(encoding, 0)
        if wbits == 0:
            answer.close()
            raise httpx2.DecodingError(f"unexpected content-encoding {encoding!r}")
        if wbits is not None:
            headers = httpx2.Headers(
                [(k, v) for k, v in headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
            )
        stream = BodyStream(answer.stream, wbits)  # type: ignore[arg-type]
        return httpx2.Response(answer.status, headers=headers, stream=stream, extensions=answer.extensions)

    def close(self) -> None:
        self._pool.close()


def gemini_http_client(timeout: float) -> httpx2.Client:
    """The `httpx2.Client` one Gemini key's SDK client sends through (one per key: its pool is its own)."""
    return httpx2.Client(
        transport=GuardedTransport(),
        timeout=timeout,
        headers={"Accept-Encoding": "identity"},
        follow_redirects=False,
    )
