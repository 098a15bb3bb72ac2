"""The simulator in a process of its own (`python -m simulator`), scripted through its control API (`/_sim/…`).

Why: a provider's clock is not the client's. Served from the client's own process, the simulator stamps each request
when the interpreter lets it, up to 0.15 s after it left on a loaded machine (32 client threads), and rests counted
from those stamps end early (429s no provider's clock causes). Benchmarks that judge quota and the gateway's load
test run it here instead; the object answers what they ask of an in-process `Simulator` (`add_key`, `env`,
`base_urls`, `requests`), over HTTP.

    with SimulatorProcess.start(skew=0.5) as sim:
        sim.add_key("groq", "gsk_test", limit=(5, 2.0))
        ...                                 # a client pointed at sim.env()
        log = sim.requests
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from simulator.core import SimRequest, Step
from simulator.registry import SIM_PROVIDERS

_ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)")


@dataclass
class SimulatorProcess:
    """A running `python -m simulator`: where it listens, and its control API as methods."""

    url: str
    process: subprocess.Popen[str]
    _first: float | None = field(default=None, init=False, repr=False)

    @classmethod
    def start(cls, *, latency: float = 0.0, skew: float = 0.0) -> Self:
        """Start one on a free port; returns once it listens (the port is read from the line it prints)."""
        command = [sys.executable, "-m", "simulator", "--port", "0", "--latency", str(latency), "--skew", str(skew)]
        process = subprocess.Popen(
            command, cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        line = process.stdout.readline() if process.stdout else ""
        found = _LISTENING.search(line)
        if found is None:
            process.kill()
            process.wait()
            raise RuntimeError(f"the simulator did not start (exit {process.poll()}): {line!r}")
        return cls(found.group(1), process)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: self.url + p.base_path for name, p in SIM_PROVIDERS.items()}

    def env(self) -> dict[str, str]:
        """Base-URL env vars that point a client at the simulator (as `Simulator.env`)."""
        return {f"{p.upper()}_BASE_URL": u for p, u in self.base_urls.items()}

    def add_key(self, provider: str, secret: str, *steps: Step | str, **options: Any) -> str:
        """`Simulator.add_key` over `/_sim/keys` (same options); returns the key's display name."""
        return str(
            self._call("POST", "/_sim/keys", {"provider": provider, "secret": secret, "steps": steps, **options})[
                "name"
            ]
        )

    @property
    def requests(self) -> list[SimRequest]:
        """The log so far."""
        return [SimRequest(**r) for r in self._call("GET", "/_sim/requests")]

    def first(self) -> float | None:
        """When the simulator, on its clock, saw its first request (None: not yet)."""
        if self._first is None and (log := self._call("GET", "/_sim/requests")):
            self._first = float(log[0]["at"])
        return self._first

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        ask = urllib.request.Request(self.url + path, data, {"Content-Type": "application/json"}, method=method)
        with urllib.request.urlopen(ask, timeout=30) as answer:
            return json.loads(answer.read())
