"""State store overhead: per-call cost of the Redis store against the memory store, on the same machine.

Runs the same `SmartClient.complete` loop against the simulator with `memory://` and with a private
`redis-server` on a free port, and reports the extra milliseconds per call and the ratio.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import load_settings
from llms.simulator import Simulator
from llms.smart_client import SmartClient
from llms.state import store_from_url

MESSAGES = [{"role": "user", "content": "Hello"}]


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def per_call(client: SmartClient, calls: int, rounds: int = 7) -> list[float]:
    for _ in range(50):
        client.complete(MESSAGES)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            client.complete(MESSAGES)
        samples.append((time.perf_counter() - started) / calls)
    return samples


def run(calls: int = 300) -> dict[str, float]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    proc, url = start_redis()
    try:
        with Simulator() as sim:
            env = {**sim.env()}
            for i in range(1, 5):
                env[f"GROQ_API_KEY_{i}"] = f"gsk_bench_state_{i:04d}_secret"
                sim.add_key("groq", env[f"GROQ_API_KEY_{i}"])
            settings = load_settings(env, dotenv_path=None)
            memory = SmartClient(settings, store=store_from_url("memory://"))
            shared = SmartClient(settings, store=store_from_url(url, prefix="bench"))
            mem_samples, redis_samples = [], []
            for _ in range(3):  # interleave so drift hits both alike
                mem_samples += per_call(memory, calls)
                redis_samples += per_call(shared, calls)
            memory.close()
            shared.close()
    finally:
        proc.kill()
    mem, red = statistics.median(mem_samples), statistics.median(redis_samples)
    return {"memory_ms": mem * 1e3, "redis_ms": red * 1e3, "extra_ms": (red - mem) * 1e3, "ratio": red / mem}


if __name__ == "__main__":
    r = run()
    print("state store: Redis vs memory, per complete() call against the simulator")
    print(f"  extra per call : {r['extra_ms']:.3f} ms   (ratio {r['ratio']:.2f}x)")
    print(f"  context        : memory {r['memory_ms']:.2f} ms, redis {r['redis_ms']:.2f} ms per call")
