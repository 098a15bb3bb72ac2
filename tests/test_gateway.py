"""The OpenAI-compatible gateway, as a real server on loopback in front of the simulator, driven by the official
`openai` SDK and by raw HTTP for the error shapes."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import httpx
import openai
import pytest
import uvicorn
from conftest import ALL_SECRETS, PYTHON, ROOT, SECRETS, Stopper, free_port, in_threads, python_env

from config.settings import load_settings
from gateway.app import create_app
from gateway.config import load_gateway_settings
from gateway.connections import connection_cap
from gateway.pool import ClientPool
from gateway.server import is_loopback, uvicorn_config
from llms.state import store_from_url
from simulator import Simulator

TOKEN = "gw-test-token-0123456789abcdef"
HELLO = [{"role": "user", "content": "Hello there"}]
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@dataclass
class RunningGateway:
    url: str
    pool: ClientPool
    sim: Simulator

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def sdk(self, max_retries: int = 0, token: str = TOKEN) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=token, max_retries=max_retries, timeout=20)

    def post(self, body: bytes | dict[str, object], token: str | None = TOKEN, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.url}/v1/chat/completions", content=content, headers=headers, timeout=20, **kw)

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(httpx.get(f"{self.url}/metrics", timeout=10).text, name, **labels)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        series, _, label_text = head.partition("{")
        if series != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


StartGateway = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway(sim: Simulator, stopper: Stopper) -> Iterator[StartGateway]:
    """`start_gateway({"groq": 2}, steps={"groq:1": ["rate_limit"]}, limits=…, latency=…, tokens=(TOKEN,))`: the
    simulator's keys, a pool over them and uvicorn serving the gateway on a free loopback port in a thread."""
    running: list[tuple[uvicorn.Server, threading.Thread, ClientPool]] = []

    def start(
        keys: Mapping[str, int],
        steps: Mapping[str, Sequence[str]] | None = None,
        limits: Mapping[str, tuple[int, float]] | None = None,
        latency: Mapping[str, float] | None = None,
        tokens: tuple[str, ...] = (TOKEN,),
        workers: int = 8,
        **env: str,
    ) -> RunningGateway:
        variables = {**sim.env(), "LLM_REQUEST_TIMEOUT": "5", "LLM_STATE_URL": "memory://", **env}
        order = [p for p in ("openrouter", "groq", "gemini") if p in keys]
        variables.setdefault("LLM_PROVIDER_ORDER", ",".join(order))
        for provider, count in keys.items():
            for i in range(count):
                name = f"{provider}:{i + 1}"
                variables[f"{provider.upper()}_API_KEY_{i + 1}"] = SECRETS[provider][i]
                sim.add_key(
                    provider,
                    SECRETS[provider][i],
                    *(steps or {}).get(name, ()),
                    limit=(limits or {}).get(name),
                    latency=(latency or {}).get(name),
                    name=name,
                )
        pool = ClientPool(load_settings(variables, dotenv_path=None))
        port = free_port()
        settings = replace(load_gateway_settings(variables), tokens=tokens, workers=workers)
        server = uvicorn.Server(uvicorn_config(create_app(pool, settings), "127.0.0.1", port, settings))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.01)
        running.append((server, thread, pool))
        return RunningGateway(f"http://127.0.0.1:{port}", pool, sim)

    yield start
    for server, thread, pool in running:
        server.should_exit = True

        def stop(thread: threading.Thread = thread, pool: ClientPool = pool) -> None:
            thread.join(10)
            pool.close()

        stopper(stop)  # uvicorn ends on its next 0.1 s tick, beside the next test


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert not any(secret in text for secret in ALL_SECRETS)


# --- the SDK ---------------------------------------------------------------------------------------------------


def test_sdk_chat_fails_over_and_names_who_answered(start_gateway: StartGateway) -> None:
    gw = start_gateway({"openrouter": 1, "groq": 1}, steps={"openrouter:1": ["server_error"]})
    raw = gw.sdk().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, temperature=0.2, max_completion_tokens=50, top_p=0.9, seed=7, user="u1"
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Simulated groq reply to: Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "groq/openai/gpt-oss-20b"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-llm-provider"] == "groq"
    assert raw.headers["x-llm-key-id"] == "groq:1"
    assert raw.headers["x-llm-attempts"] == "2"
    assert raw.headers["x-llm-skipped"].startswith("openrouter:1 transient 500")
    sent = next(r for r in gw.sim.requests if r.key_name == "groq:1").payload
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 + 256  # gpt-oss: low effort, and room for it
    assert sent["reasoning_effort"] == "low"
    assert (sent["top_p"], sent["seed"]) == (0.9, 7) and "user" not in sent  # forwarded; accepted and ignored
    assert_no_secrets(raw.http_response.text, str(raw.headers))


def test_sdk_streaming_with_usage(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1})
    text = "Tell me a short story please"
    chunks = list(
        gw.sdk().chat.completions.create(
            model="groq",
            messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == f"Simulated groq reply to: {text}"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert last.model == "groq/openai/gpt-oss-20b"
    sent = gw.sim.requests[0].payload
    assert sent["messages"][0]["role"] == "system"  # `developer` is OpenAI's new name for it


def test_streaming_without_usage_ends_with_done(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1})
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        json={"model": "auto", "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert (response.headers["x-llm-provider"], response.headers["x-llm-key-id"]) == ("groq", "groq:1")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(e[6:]) for e in events[:-1])


def test_an_image_part_reaches_gemini_through_a_pinned_provider(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1, "gemini": 1})
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
    ]
    raw = gw.sdk().chat.completions.with_raw_response.create(
        model="gemini", messages=[{"role": "user", "content": content}]
    )
    assert raw.parse().choices[0].message.content.endswith("[image received]")
    assert raw.headers["x-llm-provider"] == "gemini"
    assert gw.sim.calls("groq:1") == 0
    parts = gw.sim.requests[0].payload["contents"][0]["parts"]
    assert any("inlineData" in p or "inline_data" in p for p in parts)


def test_model_names_pin_providers_over_one_shared_store(start_gateway: StartGateway) -> None:
    gw = start_gateway({"openrouter": 1, "groq": 2}, steps={"groq:1": ["rate_limit"]})
    sdk = gw.sdk()
    ids = [m.id for m in sdk.models.list()]
    assert ids[:3] == ["auto", "openrouter", "groq"]
    assert {"openrouter/openai/gpt-oss-20b:free", "groq/openai/gpt-oss-20b", "openai/gpt-oss-20b"} <= set(ids)
    assert sdk.models.retrieve("groq/openai/gpt-oss-20b").owned_by == "groq"

    first = sdk.chat.completions.with_raw_response.create(model="groq", messages=HELLO)
    assert (first.headers["x-llm-key-id"], first.headers["x-llm-attempts"]) == ("groq:2", "2")
    # groq:1 now rests in the shared store: the `auto` and the bare-model clients skip it without a call
    for model in ("openai/gpt-oss-20b", "groq/openai/gpt-oss-20b"):
        raw = sdk.chat.completions.with_raw_response.create(model=model, messages=HELLO)
        assert (raw.headers["x-llm-key-id"], raw.headers["x-llm-attempts"]) == ("groq:2", "1")
    assert gw.sim.calls("groq:1") == 1
    assert gw.sim.calls("openrouter:1") == 0
    pinned = sdk.chat.completions.create(model="openrouter/openai/gpt-oss-20b:free", messages=HELLO)
    assert pinned.model.startswith("openrouter/")

    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    error = missing.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found" and error["param"] == "model"
    assert "groq/openai/gpt-oss-20b" in error["message"]


def test_the_sdk_picks_any_model_an_alias_or_a_catalogue_entry(start_gateway: StartGateway) -> None:
    gw = start_gateway(
        {"groq": 1, "gemini": 1},
        GROQ_MODELS="qwen/qwen3.6-27b",
        LLM_ALIAS_FAST="groq/qwen/qwen3.6-27b,gemini/gemini-3.5-flash",
    )
    sdk = gw.sdk()
    ids = [m.id for m in sdk.models.list()]
    assert ids[:4] == ["auto", "fast", "groq", "gemini"] and "groq/qwen/qwen3.6-27b" in ids
    assert sdk.models.retrieve("fast").owned_by == "alias"
    for model, answered in (
        ("fast", "groq/qwen/qwen3.6-27b"),
        ("qwen/qwen3.6-27b", "groq/qwen/qwen3.6-27b"),
        ("groq/openai/gpt-oss-120b", "groq/openai/gpt-oss-120b"),  # not listed: forwarded as asked
        ("gemini", "gemini/gemini-3.5-flash-lite"),
    ):
        assert sdk.chat.completions.create(model=model, messages=HELLO).model == answered
        stream = sdk.chat.completions.create(model=model, messages=HELLO, stream=True)
        assert {chunk.model for chunk in stream} == {answered}
    asked = [(r.provider, r.model) for r in gw.sim.requests]
    assert asked[:2] == [("groq", "qwen/qwen3.6-27b")] * 2 and asked[4] == ("groq", "openai/gpt-oss-120b")


@pytest.mark.slow
def test_exhausted_pool_is_a_429_with_retry_after_that_the_sdk_honours(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1}, limits={"groq:1": (1, 2.5)})  # a rest longer than the 2 s pacing grace
    sdk = gw.sdk(max_retries=0)
    began = time.monotonic()
    sdk.chat.completions.create(model="auto", messages=HELLO)  # spends the window; Groq reports 0 left + reset
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="auto", messages=HELLO)
    spent = time.monotonic() - began  # the window began within this (on a busy machine, well over 0.1 s)
    response = limited.value.response
    rest_ms = int(response.headers["retry-after-ms"])
    assert 2500 - spent * 1000 - 50 <= rest_ms <= 2600  # what is left of the provider's window
    assert response.headers["retry-after"] == str(math.ceil(rest_ms / 1000))
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert "groq:1" in response.json()["error"]["message"]
    assert gw.sim.calls("groq:1") == 1  # the 429 cost no call: the key was known to be spent

    answer = gw.sdk(max_retries=1).chat.completions.create(model="auto", messages=HELLO)
    assert answer.choices[0].message.content.startswith("Simulated groq")
    # it waited for the key (the SDK slept on retry-after-ms): the provider's window began after `began`, so an
    # answer it gave with no 429 came 2.5 s after that at the earliest, however busy the machine
    assert time.monotonic() - began >= 2.5
    assert gw.metric("llm_gateway_exhausted_total") == 2
    assert gw.sim.calls("groq:1") == 2
    assert_no_secrets(response.text)


def test_mid_stream_failure_reaches_the_sdk_as_an_error(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1}, steps={"groq:1": ["mid_stream_error"]})
    stream = gw.sdk().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "one two three four five six"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="stream broke"):
        for chunk in stream:
            received.append(chunk)
    assert received  # text arrived, then the caller was told the answer is incomplete
    assert gw.metric("llm_gateway_requests_total", outcome="interrupted") == 1


# --- raw HTTP: error shapes ------------------------------------------------------------------------------------


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert_no_secrets(response.text)
    return body["error"]


@pytest.mark.slow
def test_malformed_requests_are_400s_that_spend_no_key(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1})
    assert _error(gw.post(b'{"model": "auto", "messages": ['), 400)["code"] == "invalid_json"
    assert _error(gw.post(b"[1, 2]"), 400)["code"] == "invalid_json"
    assert _error(gw.post({"messages": HELLO}), 400)["param"] == "model"
    bad_role = _error(gw.post({"model": "auto", "messages": [{"role": "robot", "content": "hi"}]}), 400)
    assert bad_role["param"] == "messages" and "messages[0]['role']" in str(bad_role["message"])
    assert _error(gw.post({"model": "auto", "messages": []}), 400)["param"] == "messages"
    broken_image = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}
    ]
    assert "base64" in str(_error(gw.post({"model": "auto", "messages": broken_image}), 400)["message"])
    assert _error(gw.post({"model": "auto", "messages": HELLO, "temperature": 7}), 400)["param"] == "temperature"
    too_few = _error(gw.post({"model": "auto", "messages": HELLO, "max_completion_tokens": 0}), 400)
    assert too_few["param"] == "max_completion_tokens"
    functions = [{"name": "f", "parameters": {}}]
    legacy = _error(gw.post({"model": "auto", "messages": HELLO, "functions": functions}), 400)
    assert legacy["code"] == "unsupported_parameter" and "send 'tools'" in str(legacy["message"])
    assert _error(gw.post({"model": "auto", "messages": HELLO, "n": 3}), 400)["param"] == "n"
    assert _error(gw.post({"model": "auto", "messages": HELLO, "logprobs": True}), 400)["param"] == "logprobs"
    yaml_mode = {"model": "auto", "messages": HELLO, "response_format": {"type": "yaml"}}
    assert _error(gw.post(yaml_mode), 400)["param"] == "response_format"
    bad_tools = {"model": "auto", "messages": HELLO, "tools": [{"type": "function", "function": {}}]}
    assert _error(gw.post(bad_tools), 400)["param"] == "tools"
    assert _error(gw.post({"model": "auto", "messages": HELLO, "stream": "yes"}), 400)["param"] == "stream"
    unknown = _error(gw.post({"model": "no-such-model", "messages": HELLO}), 404)
    assert unknown["code"] == "model_not_found"
    surrogate = b'{"model": "auto", "messages": [{"role": "user", "content": "x\\ud800"}]}'
    for _ in range(4):  # three used to rest every key for 10 minutes
        lone = _error(gw.post(surrogate), 400)
        assert lone["param"] == "messages" and "lone surrogate" in str(lone["message"])
    deep = _error(gw.post(b'{"model": "auto", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400)
    assert deep["code"] == "invalid_json" and "Traceback" not in str(deep["message"])
    odd_model = _error(gw.post(b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}'), 404)
    assert odd_model["code"] == "model_not_found"
    assert gw.sim.calls() == 0
    assert gw.sdk().chat.completions.create(model="auto", messages=HELLO).choices[0].message.content


def test_tokens_are_required_and_checked(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1}, tokens=(TOKEN, "second-token-abcdefghijklmnop"))
    missing = gw.post({"model": "auto", "messages": HELLO}, token=None)
    assert _error(missing, 401)["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert _error(gw.post({"model": "auto", "messages": HELLO}, token="wrong-token-abcdefghijkl"), 401)["code"] == (
        "invalid_api_key"
    )
    assert _error(gw.post({"model": "auto", "messages": HELLO}, token=TOKEN[:-1]), 401)["code"] == "invalid_api_key"
    assert httpx.get(f"{gw.base_url}/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        gw.sdk(token="not-the-token-at-all-123").chat.completions.create(model="auto", messages=HELLO)
    assert gw.sim.calls() == 0
    assert gw.post({"model": "auto", "messages": HELLO}, token="second-token-abcdefghijklmnop").status_code == 200
    # a huge body without a token is refused before a byte of it is read
    assert gw.post(b"x" * (1024 * 1024), token=None).status_code == 401


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and raw answer (headers and a Content-Length body). The server may reset the connection right after
    (closing a socket with unread bytes does that), so a reset ends the read."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), data


def test_a_body_over_the_limit_is_refused_before_it_is_read(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 1})
    port = int(gw.url.rsplit(":", 1)[1])
    declared = 25 * 1024 * 1024
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"x" * 1024)  # 1 KB of the 25 MB: the answer must not wait for the rest
        status, data = _read_response(sock)
    assert status == 413 and b"request_too_large" in data and b"connection: close" in data.lower()

    # chunked, so no Content-Length warns the server: it must stop reading once the limit is passed (what it did
    # not read piles up in the sockets' buffers, a few MB on loopback, until the sender blocks)
    chunk, endless = b"y" * (1024 * 1024), 200 * 1024 * 1024
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace(f"Content-Length: {declared}".encode(), b"Transfer-Encoding: chunked"))
        sock.settimeout(0.5)
        status = 0
        while sent < endless:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (TimeoutError, OSError):
                break  # the server stopped reading: its answer is waiting
            sent += len(chunk)
        sock.settimeout(10)
        status, data = _read_response(sock)
    assert status == 413
    assert 20 * 1024 * 1024 <= sent < 60 * 1024 * 1024
    assert gw.sim.calls() == 0


def _port(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _send_until_refused(sock: socket.socket, first: bytes, piece: bytes, most: int) -> int:
    """Send `first`, then `piece` after `piece` until the server stops reading (or `most` bytes); bytes sent."""
    sock.settimeout(0.5)
    sent = 0
    with contextlib.suppress(TimeoutError, OSError):
        sock.sendall(first)
        while sent < most:
            sock.sendall(piece)
            sent += len(piece)
    sock.settimeout(10)
    return sent


@pytest.mark.slow
def test_headers_are_bounded_in_size_and_in_time_and_never_stall_other_callers(start_gateway: StartGateway) -> None:
    """One 100 MB header used to be read whole (9.8 s, +195 MB), and three of 50 MB stalled other requests 2.7 s."""
    gw = start_gateway(
        {"groq": 1}, LLM_GATEWAY_MAX_HEADER="16KiB", LLM_GATEWAY_HEADER_TIMEOUT="1", LLM_GATEWAY_BODY_TIMEOUT="1"
    )
    huge = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Filler: "
    answers: list[tuple[int, bytes, int]] = []

    def send_huge() -> None:
        with socket.create_connection(("127.0.0.1", _port(gw)), timeout=10) as sock:
            sent = _send_until_refused(sock, huge, b"a" * 65536, 100 * 1024 * 1024)
            answers.append((*_read_response(sock), sent))

    senders = [threading.Thread(target=send_huge) for _ in range(3)]
    for sender in senders:
        sender.start()
    started = time.monotonic()
    assert gw.post({"model": "auto", "messages": HELLO}).status_code == 200
    assert time.monotonic() - started < 1.0
    for sender in senders:
        sender.join(20)
    assert [a[0] for a in answers] == [431] * 3 and all(b"headers_too_large" in a[1] for a in answers)
    assert all(a[2] < 20 * 1024 * 1024 for a in answers)  # the rest sat in socket buffers, unread

    with socket.create_connection(("127.0.0.1", _port(gw)), timeout=10) as sock:
        started = time.monotonic()
        status = 0
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n":  # a byte every 0.2 s
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        status, data = _read_response(sock)
    assert status == 408 and b"request_timeout" in data
    assert 0.9 < time.monotonic() - started < 4

    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    with socket.create_connection(("127.0.0.1", _port(gw)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(f'{head}Content-Length: 100\r\n\r\n{{"model":'.encode())  # the rest never comes
        status, data = _read_response(sock)
    assert status == 408 and b"LLM_GATEWAY_BODY_TIMEOUT" in data
    assert 0.9 < time.monotonic() - started < 4
    assert gw.sim.calls() == 1


@pytest.mark.slow
def _refused_while_busy(gw: RunningGateway, seconds: float = 3.0) -> tuple[int | None, bytes]:
    """A new connection's answer once every connection is inside a request (each key takes one at a time while its
    quota is unknown: 8 requests over 4 keys of 1 s keep all 8 busy for 2 s). While one of them is still on its
    way, a new connection is admitted (no answer until its header timeout) or is the slowest to send its headers
    and is dropped (408): it is tried again until the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.create_connection(("127.0.0.1", _port(gw)), timeout=10) as sock:
            sock.settimeout(0.2)
            try:
                status, data = _read_response(sock)
            except TimeoutError:
                status, data = None, b""
        if status == 503 or time.monotonic() > deadline:
            return status, data
        time.sleep(0.02)


@pytest.mark.slow
def test_connections_past_the_cap_drop_the_slowest_first_then_get_503(start_gateway: StartGateway) -> None:
    """1,050 connections trickling a byte a second used to make every normal request fail (file descriptors ran
    out). Past the cap, the connection that waited longest for its headers makes room; when every connection is
    inside a request, a new one gets 503 with Retry-After instead."""
    gw = start_gateway({"groq": 4}, latency={f"groq:{i}": 1.0 for i in range(1, 5)}, LLM_GATEWAY_MAX_CONNECTIONS="8")
    idle = [socket.create_connection(("127.0.0.1", _port(gw)), timeout=10) for _ in range(16)]
    try:
        for sock in idle:
            sock.sendall(b"P")  # a request begun, its headers never finished
        assert gw.post({"model": "auto", "messages": HELLO}).status_code == 200
        dropped = 0
        for sock in idle:
            sock.settimeout(0.1)
            with contextlib.suppress(TimeoutError):
                dropped += b"408" in sock.recv(1024)
        assert dropped >= 8  # the oldest slow ones made room: never more than 8 open at once
    finally:
        for sock in idle:
            sock.close()
    busy = [threading.Thread(target=gw.post, args=({"model": "auto", "messages": HELLO},)) for _ in range(8)]
    for thread in busy:
        thread.start()
    try:
        status, data = _refused_while_busy(gw)
        assert status == 503 and b"retry-after: 1" in data.lower() and b"too_many_connections" in data
    finally:
        for thread in busy:
            thread.join(20)
    assert gw.post({"model": "auto", "messages": HELLO}).status_code == 200


@pytest.mark.slow
def test_a_client_that_hangs_up_mid_stream_frees_its_key_at_once(start_gateway: StartGateway) -> None:
    """One key, trusted for one request at a time (its window ended without a fresh report), and a slow stream.
    A second request sent while the stream is open waits for the key's slot; once the streaming caller hangs up,
    it gets the same key at once — not when the stream would have ended, nor minutes later when the in-flight
    lease would expire."""
    gw = start_gateway({"groq": 1}, limits={"groq:1": (50, 0.3)}, latency={"groq:1": 1.0}, LLM_REQUEST_TIMEOUT="20")
    gw.post({"model": "auto", "messages": HELLO})  # the key reports its quota window (0.3 s)
    time.sleep(0.4)  # the window is over: until the next answer reports, one request at a time
    body = {"model": "auto", "stream": True, "messages": HELLO}
    waiting: list[httpx.Response] = []
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r,
    ):
        assert r.status_code == 200
        pieces = r.iter_bytes()  # kept: a dropped iterator would close the connection right here
        assert b"Simulated groq" in next(pieces)  # the stream is under way (its pieces take 1 s)
        second = threading.Thread(target=lambda: waiting.append(gw.post({"model": "auto", "messages": HELLO})))
        second.start()
        time.sleep(0.3)
        assert not waiting  # the key's one slot is the stream's
        # leaving the block closes the connection mid-stream
    hung_up = time.monotonic()
    second.join(10)
    assert waiting and waiting[0].status_code == 200 and waiting[0].headers["x-llm-key-id"] == "groq:1"
    assert time.monotonic() - hung_up < 3  # its own answer takes 1 s
    deadline = time.monotonic() + 3
    while gw.metric("llm_gateway_requests_total", outcome="client_disconnected") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert gw.metric("llm_gateway_in_flight") == 0


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_client_that_hangs_up_before_its_answer_cancels_the_upstream_call(
    start_gateway: StartGateway, stream: bool
) -> None:
    """Hanging up before the answer (or before a stream's first piece) used to leave the key's in-flight slot held
    for the whole upstream call, and the answer nobody read counted "ok"."""
    gw = start_gateway({"groq": 1}, latency={"groq:1": 1.5}, LLM_REQUEST_TIMEOUT="20")
    body = json.dumps({"model": "auto", "stream": stream, "messages": HELLO}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    client = gw.pool.auto
    in_flight = client.key_manager.in_flight
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(head.encode() + body)
        deadline = time.monotonic() + 3
        while not in_flight.busy():  # the upstream call is under way
            assert time.monotonic() < deadline
            time.sleep(0.01)
    hung_up = time.monotonic()
    while in_flight.busy() or gw.metric("llm_gateway_requests_total", outcome="client_disconnected") < 1:
        assert time.monotonic() - hung_up < 0.7  # at once, not when the 1.5 s answer arrives
        time.sleep(0.02)
    assert gw.metric("llm_gateway_in_flight") == 0
    time.sleep(1.5)  # past the upstream answer's time: nothing more is recorded for it
    assert [r["outcome"] for r in client.admin.request_log()] == ["abandoned"]
    assert gw.metric("llm_gateway_requests_total", outcome="ok") == 0
    assert client.admin.history(1)[0]["errors"] == 0  # the key did nothing wrong
    assert gw.post({"model": "auto", "messages": HELLO}).headers["x-llm-key-id"] == "groq:1"


@pytest.mark.slow
def test_requests_beyond_the_worker_limit_queue_instead_of_failing(start_gateway: StartGateway) -> None:
    """`LLM_GATEWAY_WORKERS=1`: two requests at once over two free keys are both answered, one after the other."""
    gw = start_gateway({"groq": 2}, latency={"groq:1": 0.4, "groq:2": 0.4}, workers=1)
    started = time.monotonic()
    answers = in_threads(2, lambda: gw.post({"model": "auto", "messages": HELLO}))
    assert [a.status_code for a in answers] == [200, 200]
    assert time.monotonic() - started >= 0.75  # 0.4 s each, in turn; side by side it would be 0.4 s


# --- health and metrics ----------------------------------------------------------------------------------------


def test_healthz_and_metrics_follow_the_pool(start_gateway: StartGateway) -> None:
    gw = start_gateway({"groq": 2}, steps={"groq:1": ["rate_limit"], "groq:2": ["invalid_key"]})
    healthy = httpx.get(f"{gw.url}/healthz")
    assert healthy.status_code == 200
    assert healthy.json()["providers"]["groq"] == {"available": 2, "total": 2, "paused_until": None, "problem": None}
    assert healthy.json()["store"] == {"backend": "memory", "healthy": True, "detail": ""}
    assert gw.metric("llm_gateway_keys_available", provider="groq") == 2
    assert _error(gw.post({"model": "auto", "messages": HELLO}), 429)["type"] == "requests"

    down = httpx.get(f"{gw.url}/healthz")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert down.json()["providers"]["groq"]["available"] == 0
    assert gw.metric("llm_gateway_keys_available", provider="groq") == 0
    assert gw.metric("llm_gateway_cooldowns_active", provider="groq") == 2
    assert gw.metric("llm_gateway_keys_total", provider="groq") == 2
    assert gw.metric("llm_gateway_requests_total", provider="none", outcome="exhausted") == 1
    assert gw.metric("llm_gateway_upstream_attempts_total", key_id="groq:2", outcome="invalid_key") == 1
    assert gw.metric("llm_gateway_upstream_429_total", key_id="groq:1") == 1
    assert gw.metric("llm_gateway_request_duration_seconds_count") == 1
    assert gw.metric("llm_gateway_in_flight") == 0
    assert _error(httpx.get(f"{gw.url}/v1/nothing-here"), 404)["code"] == "not_found"


# --- settings and the loopback rule ----------------------------------------------------------------------------


def test_serve_refuses_a_public_address_without_tokens() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [PYTHON, "-m", "llms", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=python_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0" in out.stderr and "LLM_GATEWAY_TOKENS" in out.stderr
    assert time.monotonic() - started < 30
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.5")


def test_gateway_settings_name_the_variable() -> None:
    settings = load_gateway_settings(
        {"LLM_GATEWAY_TOKENS": f" {TOKEN} ,,{TOKEN}", "LLM_GATEWAY_MAX_BODY": "5MiB", "LLM_GATEWAY_WORKERS": "4"}
    )
    assert (settings.tokens, settings.max_body, settings.workers) == ((TOKEN,), 5 * 1024 * 1024, 4)
    assert TOKEN not in repr(settings)
    defaults = load_gateway_settings({})
    assert defaults.max_body == 20 * 1024 * 1024 and defaults.max_header == 64 * 1024
    assert (defaults.header_timeout, defaults.body_timeout, defaults.max_connections) == (10.0, 60.0, 1000)
    assert connection_cap(defaults, 1024) == 1024 - 64 - 2 * 32  # never past the file descriptors
    assert connection_cap(defaults, 100_000) == 1000
    for name, value in (
        ("LLM_GATEWAY_MAX_BODY", "lots"),
        ("LLM_GATEWAY_WORKERS", "0"),
        ("LLM_GATEWAY_TOKENS", "short"),
        ("LLM_GATEWAY_MAX_HEADER", "-1"),
        ("LLM_GATEWAY_HEADER_TIMEOUT", "nan"),
        ("LLM_GATEWAY_BODY_TIMEOUT", "0"),
        ("LLM_GATEWAY_MAX_CONNECTIONS", "many"),
    ):
        with pytest.raises(ValueError, match=name):
            load_gateway_settings({name: value})


def test_every_model_name_is_a_route_of_one_client_over_one_store(sim: Simulator) -> None:
    env = {**sim.env(), "GROQ_API_KEY_1": SECRETS["groq"][0], "GEMINI_API_KEY_1": SECRETS["gemini"][0]}
    env |= {"GROQ_MODELS": "qwen/qwen3.6-27b", "LLM_ALIAS_FAST": "groq/qwen/qwen3.6-27b,gemini"}
    store = store_from_url("memory://")
    pool = ClientPool(load_settings(env, dotenv_path=None), store=store)
    with contextlib.closing(pool):
        for name in ("auto", "groq", "groq/openai/gpt-oss-20b", "groq/openai/gpt-oss-120b", "fast", "FAST"):
            assert pool.resolve(name) is pool.auto
        assert pool.resolve("openrouter") is None and pool.resolve("no-such-model") is None
        assert ("fast", "alias") in pool.model_ids() and ("groq/qwen/qwen3.6-27b", "groq") in pool.model_ids()


def test_metrics_say_what_each_key_has_left_and_when_the_provider_runs_out(start_gateway: StartGateway) -> None:
    """Groq's answers count the day: after one answer each, the keys' requests left today are gauges, and the
    provider's forecast (at the last hour's pace) and when its quota frees are too."""
    gw = start_gateway({"groq": 2}, limits={"groq:1": (10, 3600.0), "groq:2": (10, 3600.0)})
    for _ in range(2):
        assert gw.post({"model": "auto", "messages": HELLO}).status_code == 200
    for key_id in ("groq:1", "groq:2"):
        assert gw.metric("llm_gateway_key_requests_left", key_id=key_id, span="today") == 9
    assert gw.metric("llm_gateway_provider_runs_out_in_seconds", provider="groq") > 0
    assert 3500 < gw.metric("llm_gateway_provider_quota_frees_in_seconds", provider="groq") <= 3600
