"""A caller hanging up mid-request: the request's task is cancelled at once, and with it the upstream call.

Without this, a key's in-flight slot stayed held for the whole upstream call, and an answer nobody read was
counted "ok". Its own module because every answer — whole, streamed, embeddings — is watched the same way
(`gateway.app`), whether the connection is this package's own (`gateway.connections.HangUp`) or another server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Receive

from gateway.connections import HANG_UP, HangUp

T = TypeVar("T")


class CallerLeft(Exception):
    """The caller hung up before its answer (or its stream's first piece) was ready."""


class Caller:
    """Watches a request's connection, and cancels the request's task when the caller hangs up. Served by this
    package's protocol, the connection says so itself (`HangUp`); elsewhere a second task awaits `receive()` (the
    body has been read, so the server's next message is the disconnect). The work it guards runs in the request's
    own task: no task hop."""

    def __init__(self, request: Request) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.left = False
        self._task = task
        self._watcher: asyncio.Future[None] | None = None
        self._hang_up: HangUp | None = request.scope.get(HANG_UP)
        if self._hang_up is None:
            self._watcher = asyncio.ensure_future(self._watch(request.receive))
        elif self._hang_up.happened:
            self._hung_up()
        else:
            self._hang_up.add(self._hung_up)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._hung_up()

    def _hung_up(self) -> None:
        self.left = True
        self._task.cancel()

    async def unless_gone(self, work: Awaitable[T]) -> T:
        """`work`'s result, unless the caller hangs up first: then `work` is cancelled and `CallerLeft` raised."""
        try:
            return await work
        except asyncio.CancelledError:
            if not self.left:
                raise
            self.uncancel()
            raise CallerLeft from None

    def uncancel(self) -> None:
        """The cancellation was this watcher's: the request's task goes on (to answer 499, or end quietly)."""
        self._task.uncancel()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        elif self._hang_up is not None:
            self._hang_up.discard(self._hung_up)


async def unless_caller_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, unless the caller hangs up first: then the upstream call is cancelled at once (the client
    frees the key's in-flight slot and logs the request as abandoned) and `CallerLeft` is raised. Without this the
    slot stayed held for the whole upstream call, and the answer nobody read was counted "ok"."""
    caller = Caller(request)
    try:
        return await caller.unless_gone(work)
    finally:
        caller.stop()
