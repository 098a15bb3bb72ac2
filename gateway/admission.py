"""The checks a request passes before any key is spent: the caller's token, then its body's size and arrival time.

Cheapest first, and each refuses as early as it can: a body too large is refused from `Content-Length` before a
byte is read, or while a chunked body arrives, never after buffering it all; a body trickled in too slowly ends at
`LLM_GATEWAY_BODY_TIMEOUT`. Kept apart from the routes (`gateway.app`) so the limits read in one place.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from gateway.connections import HANG_UP, HangUp
from gateway.openai_format import ApiError


def authenticate(tokens: tuple[bytes, ...], request: Request) -> ApiError | None:
    """Bearer token against every configured token in constant time (no early exit that times a prefix)."""
    if not tokens:
        return None
    scheme, _, token = (_header(request, b"authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ApiError(
            401,
            "Missing bearer token: send 'Authorization: Bearer <token>' (api_key= in the OpenAI SDK).",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.strip().encode()
    matched = False
    for known in tokens:
        matched |= hmac.compare_digest(given, known)
    if not matched:
        return ApiError(401, "Invalid token.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return None


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large: from `Content-Length` before reading a
    byte, or while reading a chunked body — never after buffering it all; and with 408 when it has not all arrived
    within `timeout` seconds (a caller trickling its body must not hold a connection for ever)."""
    declared = _header(request, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Malformed Content-Length header.", code="invalid_request")
        if int(declared) > limit:
            raise _too_large(limit)
    hang_up: HangUp | None = request.scope.get(HANG_UP)
    if hang_up is not None and hang_up.body_arrived:  # nothing is left to wait for: no deadline to arm
        return await _receive_body(request.receive, limit)
    try:
        async with asyncio.timeout(timeout):
            return await _receive_body(request.receive, limit)
    except TimeoutError:
        raise ApiError(
            408,
            f"The request body did not arrive within {timeout:g} s (LLM_GATEWAY_BODY_TIMEOUT).",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None


async def _receive_body(receive: Receive, limit: int) -> bytes:
    """`request.stream()`'s loop, without an async generator per request; 413 past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(request: Request, name: bytes) -> str | None:
    """The first value of a header (`name` in lower case, as ASGI servers give names), as `request.headers.get`
    reads it, without building the headers' mapping for one look."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _too_large(limit: int) -> ApiError:
    mb = limit / (1024 * 1024)
    return ApiError(
        413,
        f"Request body is larger than {mb:g} MB (LLM_GATEWAY_MAX_BODY).",
        code="request_too_large",
        headers={"Connection": "close"},  # the rest of the body stays unread: this connection cannot be reused
    )
