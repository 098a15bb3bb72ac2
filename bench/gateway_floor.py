"""The floor under the gateway's CPU cost: the same server stack forwarding the same requests with no logic at all.

A bare ASGI app under uvicorn (httptools, uvloop when installed, as `python -m llms serve`) that sends each request
body to the simulator with one shared aiohttp session, keys taken in turn, and passes the answer's bytes back as
they come (streamed answers included). No parsing, no failover, no key state, no metrics: what is left of the
gateway's CPU per answer above this one is the gateway's own work. `bench/bench_gateway.py` runs it:

    FLOOR_UPSTREAM=http://127.0.0.1:PORT/groq/openai/v1/chat/completions FLOOR_KEYS=k1,k2 \
        python -m uvicorn --app-dir bench gateway_floor:app --port 8080
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import aiohttp

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "")
KEYS = itertools.cycle([f"Bearer {k}" for k in os.environ.get("FLOOR_KEYS", "none").split(",")])
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        if _session is not None:
            await _session.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if _session is None:
        _session = aiohttp.ClientSession()
    headers = {"Authorization": next(KEYS), "Content-Type": "application/json"}
    async with _session.post(UPSTREAM, data=body, headers=headers) as answer:
        kind = answer.headers.get("Content-Type", "application/json").encode()
        await send({"type": "http.response.start", "status": answer.status, "headers": [(b"content-type", kind)]})
        async for chunk in answer.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
