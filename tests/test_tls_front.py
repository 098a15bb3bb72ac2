"""The tests' own TLS front (`tls_front.SlowTlsFront`) must not touch sockets that are not its own: it runs in the
test process, beside the next test's redis connections and fronts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_front import SlowTlsFront


@contextlib.contextmanager
def serving(answer: bytes, hang_up: bool) -> Iterator[int]:
    """A loopback server answering each read with `answer` (hanging up after it if `hang_up`); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while conn.recv(65536):
                conn.sendall(answer)
                if hang_up:
                    return

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


@pytest.mark.slow
def test_a_connection_both_sides_hung_up_never_reads_a_socket_opened_after_it(tmp_path: Path) -> None:
    """The upstream hangs up first, then the client closes with a close_notify: the front once closed its TLS socket
    while its other thread still read it, and OpenSSL read the alert's body from the fd number's next socket — here
    a neighbour's, whose reply vanished (7 connections in 20 before the fix; the clean-clone runs' redis
    "unreachable (TimeoutError)")."""
    with (
        serving(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", hang_up=True) as upstream,
        serving(b"PONG", hang_up=False) as neighbour,
        SlowTlsFront(f"http://127.0.0.1:{upstream}", handshake_delay=0.0, directory=tmp_path) as front,
    ):
        trusted = ssl.create_default_context(cafile=str(front.ca_file))

        async def one_connection() -> bytes | None:
            reader, writer = await asyncio.open_connection("127.0.0.1", front.port, ssl=trusted)
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await reader.read(100)
            await asyncio.sleep(0.1)  # the upstream has hung up: the front's upstream-to-client direction is done
            with socket.create_connection(("127.0.0.1", neighbour), timeout=1.0) as other:  # a freed fd number
                writer.close()  # the close_notify: one TLS record for the front's client-to-upstream direction
                await asyncio.sleep(0.05)
                other.sendall(b"PING")
                with contextlib.suppress(TimeoutError):
                    return other.recv(10)
                return None

        replies = [asyncio.run(one_connection()) for _ in range(20)]
    assert replies == [b"PONG"] * 20
