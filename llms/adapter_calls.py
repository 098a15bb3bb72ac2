"""How the failover loop's drivers call an adapter: blocking, or from an event loop (awaited where the adapter has
awaited calls, else its blocking ones in the loop's default executor); a stream opened up to its first piece, so a
failure before any text can still fail over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import cast

from config.api_keys import ApiKey
from llms.exceptions import ProviderError
from llms.outcomes import rejected
from llms.providers import AwaitedAdapter, ProviderAdapter, awaited
from llms.types import ChatRequest, Completion, Embedded, EmbeddingRequest, StreamReply


def open_stream(adapter: ProviderAdapter, request: ChatRequest, key: ApiKey) -> tuple[StreamReply, str]:
    """Open a stream and read up to its first text piece, so a failure before any text can still fail over."""
    reply = adapter.open_stream(request, key)
    try:
        first = next(iter(reply.pieces), None)
    except BaseException:
        reply.close()
        raise
    return _begun(reply, first)


async def aready(adapter: ProviderAdapter, key: ApiKey) -> None:
    """`adapter.ready` from an event loop: in the loop's default executor for an adapter with blocking calls only
    (Gemini builds a key's SDK client, ~0.15 s of CPU), where its calls run too; inline for one with awaited calls,
    which has nothing to make."""
    if awaited(adapter):
        adapter.ready(key)
        return
    await asyncio.get_running_loop().run_in_executor(None, adapter.ready, key)


async def asend(adapter: ProviderAdapter, request: ChatRequest, key: ApiKey) -> Completion:
    """The adapter's awaited call, or its blocking one in the loop's default executor when it has none."""
    if awaited(adapter):
        return await cast(AwaitedAdapter, adapter).asend(request, key)
    return await asyncio.get_running_loop().run_in_executor(None, adapter.send, request, key)


async def aembed(adapter: ProviderAdapter, request: EmbeddingRequest, key: ApiKey) -> Embedded:
    """The adapter's awaited embeddings call, or its blocking one in the loop's default executor."""
    if awaited(adapter):
        return await cast(AwaitedAdapter, adapter).aembed(request, key)
    return await asyncio.get_running_loop().run_in_executor(None, adapter.embed, request, key)


async def aopen_stream(adapter: ProviderAdapter, request: ChatRequest, key: ApiKey) -> tuple[StreamReply, str]:
    """`open_stream` from an event loop; the reply's pieces become an async iterator either way."""
    loop = asyncio.get_running_loop()
    if not awaited(adapter):
        reply, first = await loop.run_in_executor(None, open_stream, adapter, request, key)
        reply.pieces = _in_executor(cast(Iterator[str], reply.pieces))
        return reply, first
    reply = await cast(AwaitedAdapter, adapter).aopen_stream(request, key)
    try:
        first = await anext(cast(AsyncIterator[str], reply.pieces), None)
    except BaseException:
        reply.close()
        raise
    return _begun(reply, first)


async def _in_executor(pieces: Iterator[str]) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while (piece := await loop.run_in_executor(None, next, pieces, None)) is not None:
        yield piece


def _begun(reply: StreamReply, first: str | None) -> tuple[StreamReply, str]:
    """A stream that ended before any text is a request error another provider may serve, not an answer — unless
    it asked for tools (then there is no text to read, and "" starts it)."""
    if first is None and reply.tool_calls:
        return reply, ""
    if first is None:
        reply.close()
        raise ProviderError(rejected("answer had no text (the stream ended without any)", 200))
    return reply, first
