"""What a caller holds while its request runs on a key (`KeyLease`), and what a caller waiting for a slot sees of
this process's requests in flight (`InFlight`): the edge between the key manager and the failover loop, apart from
how the leases are kept (`llms.leases`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from config.api_keys import ApiKey
from llms.outcomes import Outcome, OutcomeKind, QuotaHint
from llms.state.base import RequestRecord

if TYPE_CHECKING:
    from llms.key_manager import KeyManager

_OK = Outcome(OutcomeKind.OK, 200)


@dataclass(eq=False)
class KeyLease:
    """One request's hold on a key, from `KeyManager.acquire` until the caller says how it ended — once, by
    `succeeded`, `failed` or `abandoned` — as a `concurrency-limits` limiter's listener: the in-flight slot it
    holds frees with the outcome that moves the key's limits, and only this request's slot."""

    key: ApiKey
    model: str | None
    token: str
    _manager: KeyManager = field(repr=False)
    ended: bool = False

    def succeeded(self, quota: QuotaHint | None = None, request: RequestRecord | None = None) -> None:
        """The key answered; `quota`: what the answer said of the key's quota."""
        if self._end():
            self._manager._record(self.key, _OK, quota, request, self.model, self.token)

    def failed(self, outcome: Outcome, request: RequestRecord | None = None) -> None:
        """The key's answer was a failure: the penalty (or none) the outcome earns."""
        if self._end():
            self._manager._record(self.key, outcome, None, request, self.model, self.token)

    def abandoned(self, request: RequestRecord | None = None) -> None:
        """The caller went away (cancelled, a stream closed early): the key did nothing wrong."""
        if self._end():
            self._manager._abandon(self.key, request, self.token)

    def _end(self) -> bool:
        ended, self.ended = self.ended, True
        return not ended


class InFlight(Protocol):
    """This process's requests in flight, as a caller waiting for a slot sees them (`Leases`)."""

    @property
    def ended(self) -> int:
        """How many have ended: a waiting caller that sees it move knows a slot may have freed since it looked."""
        ...

    def busy(self) -> bool: ...

    def wait_for_end(self, seen: int, timeout: float) -> None: ...

    async def await_end(self, seen: int, timeout: float) -> None: ...
