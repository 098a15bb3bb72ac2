"""What one request has been through (`Run`), and the iterators a caller reads a streamed answer from
(`ChatStream`, `AsyncChatStream`), which say who answers as soon as the first piece has arrived.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field

from llms.outcomes import Attempt, Outcome
from llms.types import ChatRequest, ChatResult

log = logging.getLogger("llms.client")

OnAttempt = Callable[[Attempt], None]


@dataclass
class Run:
    """What one request has been through so far; the failover loop reads its flags, not the attempt list."""

    attempts: list[Attempt] = field(default_factory=list)
    rejected: list[Outcome] = field(default_factory=list)
    leave_target: bool = False  # this provider cannot serve the request with this model now
    started: float = 0.0  # when the current attempt began (the client's timer)
    on_attempt: OnAttempt | None = None
    answering: tuple[str, str, str] | None = None  # a stream's provider, model and key id, once it has begun
    result: ChatResult | None = None  # a stream's, once it has ended
    request: ChatRequest | None = None  # what is asked, where a limit on tokens counts it (None: not a chat)

    def attempted(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self.on_attempt is not None:
            try:
                self.on_attempt(attempt)
            except Exception:  # a caller's display must never break the failover
                log.exception("on_attempt callback failed")


class _StreamView:
    """Who answers a stream, known as soon as its first piece has arrived (`provider`, `model`, `key_id`; None
    before), for callers that must say so before the end (the gateway's response headers); `.result` holds the
    `ChatResult` once the pieces have run out."""

    def __init__(self, run: Run) -> None:
        self._run = run

    @property
    def provider(self) -> str | None:
        return self._run.answering[0] if self._run.answering else None

    @property
    def model(self) -> str | None:
        return self._run.answering[1] if self._run.answering else None

    @property
    def key_id(self) -> str | None:
        return self._run.answering[2] if self._run.answering else None

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The attempts so far (all of them once the stream has ended)."""
        return tuple(self._run.attempts)

    @property
    def result(self) -> ChatResult | None:
        return self._run.result


class ChatStream(_StreamView, Iterator[str]):
    """An iterator of text pieces (see `_StreamView` for who answers and the result)."""

    def __init__(self, pieces: Generator[str, None, ChatResult], run: Run | None = None) -> None:
        super().__init__(run or Run())
        self._pieces = pieces

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as done:
            if done.value is not None:  # a finished generator ends again with None: keep the result it gave
                self._run.result = done.value
            raise

    def close(self) -> None:
        """Stop reading early: closes the provider's stream and frees the key's in-flight slot at once."""
        self._pieces.close()


class AsyncChatStream(_StreamView, AsyncIterator[str]):
    """An async iterator of text pieces, from `achat_stream` (see `_StreamView` for who answers and the result)."""

    def __init__(self, pieces: AsyncGenerator[str, None], run: Run) -> None:
        super().__init__(run)
        self._pieces = pieces

    def __anext__(self) -> Awaitable[str]:
        return self._pieces.__anext__()

    async def aclose(self) -> None:
        """Stop reading early: closes the provider's stream and frees the key's in-flight slot at once."""
        await self._pieces.aclose()
