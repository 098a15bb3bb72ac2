"""Two real gateway processes (`python -m llms serve`) over one real Redis act as one pool."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import PYTHON, ROOT, SECRETS, RedisServer, free_port, python_env
from test_gateway import HELLO, TOKEN, metric_sum

from config.settings import load_settings
from llms import SmartClient
from simulator import Simulator


@pytest.fixture
def replicas(sim: Simulator, redis_server: RedisServer) -> Iterator[tuple[list[str], dict[str, str]]]:
    prefix = f"gw-{uuid.uuid4().hex[:8]}"
    env = {
        **sim.env(),
        "GROQ_API_KEY_1": SECRETS["groq"][0],
        "GROQ_API_KEY_2": SECRETS["groq"][1],
        "LLM_PROVIDER_ORDER": "groq",
        "LLM_STATE_URL": redis_server.url,
        "LLM_STATE_PREFIX": prefix,
    }
    sim.add_key("groq", SECRETS["groq"][0], "rate_limit", name="groq:1")  # a 429 with a hint, then fine
    sim.add_key("groq", SECRETS["groq"][1], name="groq:2")
    processes, urls = [], []
    for _ in range(2):
        port = free_port()
        processes.append(
            subprocess.Popen(
                [PYTHON, "-m", "llms", "serve", "--port", str(port)],
                env=python_env(**env, LLM_GATEWAY_TOKENS=TOKEN),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        for url, process in zip(urls, processes, strict=True):
            while True:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "a gateway replica did not start"
                time.sleep(0.1)
        yield urls, env
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _chat(url: str) -> httpx.Response:
    body = {"model": "auto", "messages": HELLO}
    response = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20
    )
    assert response.status_code == 200, response.text
    return response


@pytest.mark.slow
def test_replicas_share_cooldowns_and_their_metrics_add_up(
    replicas: tuple[list[str], dict[str, str]], sim: Simulator
) -> None:
    (a, b), env = replicas
    first = _chat(a)
    assert (first.headers["x-llm-key-id"], first.headers["x-llm-attempts"]) == ("groq:2", "2")
    for _ in range(3):  # the other replica knows groq:1 is resting: it never calls it
        answer = _chat(b)
        assert (answer.headers["x-llm-key-id"], answer.headers["x-llm-attempts"]) == ("groq:2", "1")
    assert sim.calls("groq:1") == 1
    for url in (a, b):
        health = httpx.get(f"{url}/healthz").json()
        assert health["providers"]["groq"]["available"] == 1 and health["store"]["backend"] == "redis"

    scraped = [httpx.get(f"{url}/metrics").text for url in (a, b)]
    per_replica = [metric_sum(text, "llm_gateway_requests_total", outcome="ok") for text in scraped]
    assert per_replica == [1, 3] and sum(per_replica) == sim.calls("groq:2") == 4
    assert [metric_sum(text, "llm_gateway_upstream_429_total", key_id="groq:1") for text in scraped] == [1, 0]
    assert [metric_sum(text, "llm_gateway_keys_available", provider="groq") for text in scraped] == [1, 1]

    # the request log is shared too: a third client on the same Redis prefix sees all five provider calls
    with SmartClient(load_settings(env, dotenv_path=None)) as observer:
        log = observer.admin.request_log(20)
    assert sorted((r["key_id"], r["outcome"]) for r in log) == [("groq:1", "rate_limit")] + [("groq:2", "ok")] * 4
