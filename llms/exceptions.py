"""The exceptions this package raises on purpose; all derive from `LLMError` (a `RuntimeError`)."""

from __future__ import annotations

from collections.abc import Sequence

from llms.outcomes import Attempt, Outcome, format_duration


class LLMError(RuntimeError):
    """Base of the errors this package raises on purpose."""


class ProviderError(LLMError):
    """One provider call failed; `outcome` says how, so the key manager can apply the right penalty."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        status = f"HTTP {outcome.status}" if outcome.status else "no HTTP answer"
        super().__init__(f"{outcome.kind.value} ({status}): {outcome.message}")


class AllKeysExhaustedError(LLMError):
    """Every key of every provider is cooling down (or failed just now)."""

    def __init__(
        self,
        attempts: Sequence[Attempt],
        retry_in: float | None,
        next_key_id: str | None,
        states: str = "",
        *,
        busy: bool = False,
    ) -> None:
        """`retry_in`: seconds until a key can answer (0: the keys are available, they all failed just now;
        None: none will by itself). `states`: how the keys stand, e.g. "2 rate-limited, 1 invalid key". `busy`:
        the first key to answer is free but every slot it has is held by requests in flight (in this or another
        process; a process that died holding one frees it within seconds)."""
        self.attempts = tuple(attempts)
        self.retry_in = retry_in
        self.next_key_id = next_key_id
        if retry_in is None:
            when = "no key will free up by itself (none configured, or all need a manual reset)"
        elif busy and next_key_id is not None:
            when = (
                f"every free key is busy with requests in flight; {next_key_id} has a slot again within "
                f"{format_duration(retry_in)}"
            )
        elif next_key_id is not None:
            when = f"the first key ({next_key_id}) frees up in {format_duration(retry_in)}"
        elif retry_in == 0:
            when = "every key failed this request, none is cooling: they can be tried again now"
        else:
            when = "every free key is busy with requests in flight; retry in a moment"
        known = f" ({states})" if states else ""
        tried = f"; tried {', '.join(a.describe() for a in self.attempts)}" if self.attempts else ""
        super().__init__(f"All API keys exhausted across all providers: {when}{known}{tried}")


class RequestRejectedError(LLMError):
    """The request itself was refused (malformed, too large, blocked, unknown model): another key would not help."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)


class StreamInterruptedError(LLMError):
    """A stream failed after text was already delivered; raised so a truncated answer is never silent."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)
