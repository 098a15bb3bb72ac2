"""The gateway's own work per request, counted in instructions: repeatable where CPU time is not.

A change that saves a few per cent of the gateway's CPU cannot be seen in requests a second or in /proc times on a
shared 2-core machine (they move by ±3 % run to run); `valgrind --tool=callgrind` counts the instructions the
process ran, within about 0.5 % run after run (0.1 % against one simulator process). This drives the gateway's app
in its own process with no server (an ASGI scope, the body, a `send` that keeps what it is given; half the requests
streamed, 64 at a time) against the simulator in another process (not counted), on uvloop where installed and after
the start-up that `gateway.server.serve` does (`settle_heap`), as uvicorn runs it; and counts it twice, with 200 and
1,200 requests: the difference over 1,000 is the cost of a request, start-up and imports cancelled out. Needs
valgrind (`apt-get install valgrind`); about a minute. At 32f3d72 it read 1.907 M, after the records built field by
field 1.796 M; at c7b36a0 1.802 M, and 1.786 M once the leases held were indexed by subject; at d02a07c 1.785 M,
and 1.738 M once a request that fits every reading of the tokens left with all that is out counted skipped the
readings one by one; 1.748 M once the per-subject index held the leases' tokens, not a second copy of each lease.

    python bench/gateway_instructions.py            # "1.796 M instructions a request (…)"
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, bench_secret, register_keys
from simulator.remote import SimulatorProcess

KEYS = 4
CONCURRENCY = 64
WARM_UP = 50
COUNTS = (200, 1200)
_COLLECTED = re.compile(r"Collected : (\d+)")


async def _drive(requests: int, upstream: str) -> None:
    """`requests` chat requests through the gateway's app, after a warm-up; every answer checked."""
    from gateway.server import build_gateway, settle_heap

    env = {"LLM_PROVIDER_ORDER": "groq", "LLM_STATE_URL": "memory://", "GROQ_BASE_URL": upstream}
    env |= {f"GROQ_API_KEY_{i}": bench_secret("groq", i) for i in range(1, KEYS + 1)}
    gateway = build_gateway(env, dotenv_path=None)
    app = gateway.app()
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        stream = "true" if i % 2 else "false"
        body = f'{{"model":"auto","messages":[{{"role":"user","content":"Hello"}}],"stream":{stream}}}'.encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "state": {},
        }
        sent: list[dict[str, object]] = []
        bodies = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            if bodies:
                return bodies.pop()
            await asyncio.Event().wait()  # the caller never hangs up
            raise AssertionError("unreachable")

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        async with slots:
            await app(scope, receive, send)
        if sent[0].get("status") != 200:
            raise RuntimeError(f"request {i} answered {sent[0].get('status')}")

    async with app.router.lifespan_context(app):
        await asyncio.gather(*(one(i) for i in range(WARM_UP)))
        settle_heap()
        await asyncio.gather(*(one(i) for i in range(requests)))
    gateway.close()


def _counted(requests: int, upstream: str) -> int:
    """Instructions the driving process ran for `requests` requests (start-up included)."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
    done = subprocess.run(
        [*command, "--drive", str(requests), upstream], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the counted run failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    with SimulatorProcess.start() as sim:
        register_keys(sim, "groq", KEYS)
        few, many = (_counted(n, sim.base_urls["groq"]) for n in COUNTS)
    per_request = (many - few) / (COUNTS[1] - COUNTS[0])
    print(f"{per_request / 1e6:.3f} M instructions a request (memory store, 4 Groq keys, half streamed)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--drive":
        try:  # the loop uvicorn runs the gateway on, where installed
            import uvloop

            uvloop.run(_drive(int(sys.argv[2]), sys.argv[3]))
        except ImportError:
            asyncio.run(_drive(int(sys.argv[2]), sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
