"""A hostile HTTP server on 127.0.0.1 for the tests: answers that trickle, never end, explode or lie.

A real socket server (no mocks). The first path segment picks the behaviour, so a client pointed at
`http://127.0.0.1:<port>/trickle-body` as its provider base URL gets that behaviour on every call; the rest of
the path (`/chat/completions`, `/v1/models/…:generateContent`) is ignored. Every loop is bounded: the server
stops writing after `limit` seconds or when the client hangs up.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable

_JSON = "application/json"


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(text: str = "hostile hello", **more: object) -> bytes:
    body = {
        "id": "x",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        **more,
    }
    return json.dumps(body).encode()


def _piece(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


@functools.cache
def gzip_bomb(megabytes: int = 1024) -> bytes:
    """About 1 MB of gzip that inflates to `megabytes` MB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(megabytes)]
    parts.append(compressor.flush())
    return b"".join(parts)


class HostileServer:
    def __init__(self, limit: float = 60.0) -> None:
        self.limit = limit
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def base(self, behaviour: str) -> str:
        return f"{self.url}/{behaviour}"

    def __enter__(self) -> HostileServer:
        hostile = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                hostile._serve(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- one connection ----------------------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(self.limit)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        length = int(headers.get("content-length") or 0)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        path = request_line.split(" ")[1]
        behaviour = path.strip("/").split("/")[0]
        self.requests.append((behaviour, headers))
        handler: Callable[[socket.socket, dict[str, str]], None] = getattr(self, "_" + behaviour.replace("-", "_"))
        with contextlib.suppress(OSError):  # the client hung up: what most of these behaviours wait for
            handler(conn, headers)

    def _until_limit(self) -> Callable[[], bool]:
        end = time.monotonic() + self.limit
        return lambda: time.monotonic() < end

    def _send(self, conn: socket.socket, status: str, headers: dict[str, str], body: bytes) -> None:
        conn.sendall(_head(status, {**headers, "Content-Length": str(len(body)), "Connection": "close"}) + body)

    # --- behaviours ----------------------------------------------------------------------------------------------

    def _trickle_status(self, conn: socket.socket, _: dict[str, str]) -> None:
        going = self._until_limit()
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100_000:
            if not going():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.2)

    def _trickle_body(self, conn: socket.socket, _: dict[str, str]) -> None:
        body = _answer("x" * 100_000)
        conn.sendall(_head("200 OK", {"Content-Type": _JSON, "Content-Length": str(len(body))}))
        going = self._until_limit()
        for byte in body:
            if not going():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.2)

    def _keepalive_stream(self, conn: socket.socket, _: dict[str, str]) -> None:
        conn.sendall(_head("200 OK", {"Content-Type": "text/event-stream", "Connection": "close"}))
        conn.sendall(_piece("first piece "))
        going = self._until_limit()
        while going():
            conn.sendall(b": keep-alive\n\n")
            time.sleep(0.2)

    def _gemini_keepalive_stream(self, conn: socket.socket, _: dict[str, str]) -> None:
        conn.sendall(_head("200 OK", {"Content-Type": "text/event-stream", "Connection": "close"}))
        chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "first piece "}]}, "index": 0}]}
        conn.sendall(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
        going = self._until_limit()
        while going():
            conn.sendall(b"\r\n")  # blank lines: bytes keep coming, text does not
            time.sleep(0.2)

    def _endless_pieces(self, conn: socket.socket, _: dict[str, str]) -> None:
        conn.sendall(_head("200 OK", {"Content-Type": "text/event-stream", "Connection": "close"}))
        going = self._until_limit()
        while going():
            conn.sendall(_piece("more "))
            time.sleep(0.2)

    def _huge_pieces(self, conn: socket.socket, _: dict[str, str]) -> None:
        conn.sendall(_head("200 OK", {"Content-Type": "text/event-stream", "Connection": "close"}))
        piece = _piece("y" * (1024 * 1024))
        going = self._until_limit()
        while going():
            conn.sendall(piece)

    def _gzip_bomb(self, conn: socket.socket, _: dict[str, str]) -> None:
        headers = {"Content-Type": _JSON, "Content-Encoding": "gzip"}
        self._send(conn, "200 OK", headers, gzip_bomb())

    def _huge_body(self, conn: socket.socket, _: dict[str, str]) -> None:
        size = 100 * 1024 * 1024
        conn.sendall(_head("200 OK", {"Content-Type": _JSON, "Content-Length": str(size), "Connection": "close"}))
        block = b'{"choices": "' + b"z" * (1024 * 1024)
        sent = 0
        while sent < size:
            part = block[: size - sent]
            conn.sendall(part)
            sent += len(part)

    def _retry_after_huge(self, conn: socket.socket, _: dict[str, str]) -> None:
        self._rate_limited(conn, {"Retry-After": "1e12"})

    def _retry_after_overflow(self, conn: socket.socket, _: dict[str, str]) -> None:
        self._rate_limited(conn, {"Retry-After": "1e308"})

    def _reset_inf(self, conn: socket.socket, _: dict[str, str]) -> None:
        self._rate_limited(conn, {"X-RateLimit-Reset": "inf"})

    def _reset_past(self, conn: socket.socket, _: dict[str, str]) -> None:
        self._rate_limited(conn, {"X-RateLimit-Reset": str(int((time.time() - 3600) * 1000))})

    def _rate_limited(self, conn: socket.socket, headers: dict[str, str]) -> None:
        body = json.dumps(
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        )
        self._send(conn, "429 Too Many Requests", {"Content-Type": _JSON, **headers}, body.encode())

    def _remaining_zero_forever(self, conn: socket.socket, _: dict[str, str]) -> None:
        headers = {"Content-Type": _JSON, "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1e300"}
        self._send(conn, "200 OK", headers, _answer())

    def _bad_usage(self, conn: socket.socket, _: dict[str, str]) -> None:
        self._send(conn, "200 OK", {"Content-Type": _JSON}, _answer("kept", usage={"prompt_tokens": "lots", "x": []}))

    def _quote_key(self, conn: socket.socket, headers: dict[str, str], part: slice = slice(None, 22)) -> None:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {token[part]}. You can find your API key at https://example.invalid"
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}})
        self._send(conn, "401 Unauthorized", {"Content-Type": _JSON}, body.encode())

    def _quote_key_middle(self, conn: socket.socket, headers: dict[str, str]) -> None:
        self._quote_key(conn, headers, slice(6, -6))
