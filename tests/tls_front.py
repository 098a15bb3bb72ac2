"""A TLS endpoint on 127.0.0.1 in front of a plain HTTP server (the simulator), whose every handshake is slow.

A provider's TLS terminator is far away: a new connection's handshake takes 50-300 ms before its first request can
leave, while a request on a connection kept alive leaves at once. This front waits `handshake_delay` seconds
before answering each new connection's handshake, then passes bytes both ways to the upstream server. Its
certificate is self-signed for 127.0.0.1 (`ca_file`: what a client must trust, e.g. as `REQUESTS_CA_BUNDLE`).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "front.pem", directory / "front.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class SlowTlsFront:
    def __init__(self, upstream: str, handshake_delay: float, directory: Path) -> None:
        """`upstream`: any URL of the plain HTTP server (its host and port are used)."""
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.handshake_delay = handshake_delay
        self.ca_file, key_file = self_signed(directory)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.ca_file, key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.handshakes = 0
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def url_for(self, upstream_url: str) -> str:
        """`upstream_url` (a base URL on the upstream server) reached through this front."""
        parts = urlsplit(upstream_url)
        return urlunsplit(("https", f"127.0.0.1:{self.port}", parts.path, "", ""))

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread (a bare close would not)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(self._upstream)  # ready for the first request, as a provider's is
        time.sleep(self.handshake_delay)  # the client's hello waits unanswered: its connect() takes this long
        try:
            secure = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            upstream.close()
            return
        self.handshakes += 1
        back = threading.Thread(target=_pump, args=(upstream, secure), daemon=True)
        back.start()
        _pump(secure, upstream)
        back.join()
        secure.close()  # only now, with both directions done: see `_pump`
        upstream.close()

    def __enter__(self) -> SlowTlsFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Bytes from `source` to `sink` until either side hangs up; then both are shut down, which wakes the other
    direction's read, and the thread that owns both closes them once both directions are done.

    Closed here, a socket the other direction was still reading freed its fd number while OpenSSL held it: OpenSSL
    reads a TLS record's header and its body in two reads of the same number, so a record that came later (the
    client's close_notify) had its body read from whatever socket took the number next in this test process — the
    next test's redis connection, whose reply vanished ("unreachable (TimeoutError)" in the clean-clone runs), or a
    new front's handshake (`ClientConnectorSSLError`)."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for side in (source, sink):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(side, socket.SHUT_RDWR)  # the plain socket's: SSLSocket's drops its TLS state
