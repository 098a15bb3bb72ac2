"""Processes sharing a store tell each other what their answers read of tokens left (`llms.shared_tokens`), on
real stores: a SQLite file two connections open, one `redis-server` two clients use."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llms.outcomes import TokensLeft
from llms.shared_tokens import PRESENCE_EVERY, SharedTokens
from llms.state import StateStore, store_from_url
from tests.conftest import DURABLE, STORE_BACKENDS

Processes = tuple[tuple[StateStore, StateStore], tuple[SharedTokens, SharedTokens], list[float]]
"""Two processes' stores on one real store, their `SharedTokens`, and the clock they read (`processes`)."""


@pytest.fixture(params=DURABLE, ids=DURABLE)
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Two processes sharing a SQLite file or a redis-server, each with its own connection, on one clock at 100 s."""
    backend = STORE_BACKENDS[request.param]
    url, prefix = backend.url(request, tmp_path / "state.db"), f"test-{uuid.uuid4().hex[:10]}"
    one, two = (store_from_url(url, prefix=prefix, failover=False) for _ in range(2))
    now = [100.0]
    try:
        yield (one, two), (SharedTokens(one, lambda: now[0]), SharedTokens(two, lambda: now[0])), now
    finally:
        for store in (one, two):
            if backend.clear_after:
                with contextlib.suppress(Exception):
                    store.clear()  # type: ignore[attr-defined]
            store.close()


def test_readings_of_tokens_are_shared_once_another_process_uses_the_store(processes: Processes) -> None:
    (one, _), (first, second), now = processes
    told = TokensLeft(900, 30.0, 1000)
    first.answered("groq", "subject", told, 99.0)  # alone: nothing is written, nothing read
    assert one.documents(["tokens/subject"])[0] == {} and first.readings("subject", "groq") is None
    now[0] += PRESENCE_EVERY
    second.answered("groq", "subject", TokensLeft(950, 30.0, 1000), 100.5)  # it sees the first
    first.answered("groq", "subject", told, 101.0)  # and the first sees it
    assert second.readings("subject", "groq") == {"readings": [[900, 101.0, 131.0, 1000]]}
    # (a reading 0.5 s older than the newest is not kept beside it: requests out count against the newest)
    first.sent(150)  # (another process's request out of a size it did not say: as large as the largest lately)
    sends = [(1.0, 50), (1.0, 50), (2.0, 0), (3.0, 120)]
    assert first.theirs(sends, [(1.0, 50)], 50) == [(1.0, 50), (2.0, 150), (3.0, 120)]


def test_a_process_with_no_answer_of_its_own_reads_the_others_readings_and_the_requests_they_said_are_left(
    processes: Processes,
) -> None:
    """Which providers' answers read tokens left was known only from a process's own answers: one whose first
    answer had not come read none of the others' readings, and kept to one request out among all processes (under
    15 s answers, 0.89 of the quota where one process had 0.92). The providers are listed for every process
    (`READERS`, looked at once a second at most while a provider is not listed), and the readings carry the
    requests the same answer said are left, which lift the process's in-flight limit as its own answer would."""
    _, (first, second), now = processes
    assert not first.not_alone(now[0])  # (noted there)
    now[0] += PRESENCE_EVERY
    assert second.not_alone(now[0]) and first.not_alone(now[0])
    assert second.readings("subject", "openai") is None  # nothing listed yet (looked at now)
    first.answered("openai", "subject", TokensLeft(900, 30.0, 1000), 100.5, (499, 500))
    assert second.readings("subject", "openai") is None  # (not looked at again within the second)
    now[0] += PRESENCE_EVERY
    expected = {"readings": [[900, 100.5, 130.5, 1000]], "at_once": [499, 500]}
    assert second.readings("subject", "openai") == expected
    first.answered("openai", "subject", TokensLeft(800, 29.0, 1000), 102.0)  # (said no requests left: kept)
    assert second.readings("subject", "openai") == {"readings": [[800, 102.0, 131.0, 1000]], "at_once": [499, 500]}


def test_what_every_process_sends_on_a_limit_only_429s_speak_of_is_totalled_with_its_429s(
    processes: Processes,
) -> None:
    """A 429 of a limit on tokens that only 429s speak of lists the subject (`drips`): from then on every process
    adds what it sends to one total and lists its 429s beside it, for every process's drip to measure and learn
    from; alone, nothing is written."""
    (one, _), (first, second), now = processes
    assert first.refused("subject", 100, 99.0) is None and first.add_sent("subject", 50) is None  # alone
    assert one.documents(["sent/subject"])[0] == {}
    now[0] += PRESENCE_EVERY
    assert second.not_alone(now[0]) and first.not_alone(now[0])  # each sees the other, and the listed subject
    assert second.add_sent("subject", 120) == {"tokens": 120, "refused": []}
    assert first.add_sent("subject", 80) == {"tokens": 200, "refused": []}
    assert second.refused("subject", 120, 101.0) == {"tokens": 80, "refused": [[101.0, 80, 120]]}
    assert first.add_sent("subject", 0) == {"tokens": 80, "refused": [[101.0, 80, 120]]}
    assert first.add_sent("other", 50) is None  # no 429 listed it
