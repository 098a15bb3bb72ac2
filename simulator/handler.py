"""The simulator's HTTP side: a threading server whose handler reads a request, asks the `Simulator` what to do
(`admit`), sleeps its latency, and writes the provider's answer (plain, or SSE with chunked transfer encoding); and
the control API (`/_sim/…`) other processes script it through.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from simulator.core import Call, Plan, Reply, SimRequest, Step, json_reply
from simulator.registry import SIM_PROVIDERS, render_reply, route


class Served(Protocol):
    """What the handler asks of the simulator it serves (`simulator.server.Simulator`)."""

    skew: float

    def admit(self, call: Call, secret: str | None, raw_path: str, path: str, payload: Any = None) -> Plan: ...

    def hang(self) -> bool: ...

    def dress(self, secret: str | None, plan: Plan, reply: Reply) -> Reply: ...

    def add_key(self, provider: str, secret: str, *steps: Step | str, **options: Any) -> str: ...

    def set_steps(self, secret: str, *steps: Step | str, then: Step | str = Step.OK) -> None: ...

    def clear_log(self) -> None: ...

    @property
    def requests(self) -> Sequence[SimRequest]: ...


def loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _label(secret: str | None) -> str:
    """OpenRouter's partial key label ("sk-or-v1-abc...xyz"); never the full secret."""
    return f"{secret[:12]}...{secret[-3:]}" if secret and len(secret) > 20 else "sk-or-v1-...."


_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_DATE: list[Any] = [0, ""]  # (epoch second, formatted): formatting a Date header per request is measurable


def _http_date(skew: float = 0.0) -> str:
    """The `Date` header: whole seconds on the provider's clock (`Simulator(skew=…)` ahead of this machine's)."""
    now = int(time.time() + skew)
    if _DATE[0] != now:
        _DATE[:] = [now, formatdate(now, usegmt=True)]
    return str(_DATE[1])


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for hung (timeout step) or idle keep-alive connections
    request_queue_size = 1024
    sim: Served

    def __init__(self, address: tuple[str, int], sim: Served) -> None:
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, drops) are normal here; anything else gets one quiet line."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"simulator: handler error: {type(exc).__name__}", file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LLMSimulator/1.0"
    disable_nagle_algorithm = True  # small header + body writes must not wait for delayed ACKs
    server: SimServer

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines could carry a key (`?key=`), and tests want quiet output."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        sim = self.server.sim
        raw = self.path
        path, _, query = raw.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._write(json_reply(400, {"error": {"message": "bad Content-Length"}}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if path.startswith("/_sim/"):
            self._write(self._control(path, body))
            return
        data = loads(body)  # once: what the route reads is what the log keeps (neither changes it)
        call = route(self.command, path, query, data)
        if call is None:
            self._write(json_reply(404, {"error": {"code": 404, "message": f"Not found: {self.command} {path}"}}))
            return
        secret = SIM_PROVIDERS[call.provider].secret(self.headers, query)  # type: ignore[arg-type]
        plan = sim.admit(call, secret, raw, path, data)
        if plan.latency > 0:
            time.sleep(plan.latency)
        if plan.step is Step.DROP:
            self.close_connection = True
            return
        if plan.step is Step.TIMEOUT and sim.hang():
            self.close_connection = True  # stopped while hanging: die like a killed server
            return
        self._write(sim.dress(secret, plan, render_reply(call, plan, _label(secret))), plan.latency)

    def _control(self, path: str, body: bytes) -> Reply:
        """Control API for other processes (benchmarks, the dashboard demo)."""
        sim, method = self.server.sim, self.command
        try:
            data = loads(body) or {}
            if path == "/_sim/keys" and method == "POST":
                limit = data.get("limit")
                name = sim.add_key(
                    data["provider"],
                    data["secret"],
                    *data.get("steps", ()),
                    then=data.get("then", Step.OK),
                    limit=(int(limit[0]), float(limit[1])) if limit else None,
                    limit_hint=bool(data.get("limit_hint", True)),
                    group=data.get("group"),
                    latency=data.get("latency"),
                    name=data.get("name"),
                    sliding=bool(data.get("sliding", False)),
                    window=data.get("window"),
                    quota_headers=bool(data.get("quota_headers", True)),
                    retry_after=bool(data.get("retry_after", False)),
                    day_count=data.get("day_count"),
                    jitter=float(data.get("jitter", 0.0)),
                )
                return json_reply(200, {"name": name})
            if path == "/_sim/steps" and method == "POST":
                sim.set_steps(data["secret"], *data.get("steps", ()), then=data.get("then", Step.OK))
                return json_reply(200, {"ok": True})
            if path == "/_sim/requests" and method == "GET":
                return json_reply(200, [asdict(r) for r in sim.requests])
            if path == "/_sim/clear" and method == "POST":
                sim.clear_log()
                return json_reply(200, {"ok": True})
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            return json_reply(400, {"error": f"{type(exc).__name__}: {exc}"})
        return json_reply(404, {"error": f"unknown control endpoint {method} {path}"})

    def _write(self, reply: Reply, latency: float = 0.0) -> None:
        """One write for a plain answer; chunked transfer encoding for SSE, so keep-alive survives streams."""
        lines = [
            f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, '')}",
            f"Server: {self.server_version}",
            f"Date: {_http_date(self.server.sim.skew)}",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        events = reply.events
        chunked = events is not None and self.request_version != "HTTP/1.0"
        if events is None:
            lines.append(f"Content-Length: {len(reply.body)}")
        elif chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if events is None:
                self.wfile.write(head + reply.body)
                return
            delay = latency / len(events) if latency > 0 else 0.0
            if not delay:  # nothing to wait for between events: the same bytes in one write (one system call)
                frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] if chunked else events
                self.wfile.write(b"".join([head, *frames, b"0\r\n\r\n" if chunked else b""]))
                return
            for i, event in enumerate(events):
                frame = b"%x\r\n%s\r\n" % (len(event), event) if chunked else event
                self.wfile.write(head + frame if i == 0 else frame)
                if delay:
                    time.sleep(delay)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
