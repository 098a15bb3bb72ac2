"""Many processes on one SQLite file: does a busy store ever reach a caller?

8 OS processes × 16 threads call `SmartClient.complete` for 60 s (`--seconds`) against the simulator (8 Groq
keys, zero latency), all sharing one `sqlite://` file. Each worker counts answers, errors, and the times its
store fell back to memory ("database is locked" past the busy timeout); the parent sums them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Result, Row, main
from simulator import Simulator

TITLE = "SQLite store: 8 processes × 16 threads on one file"
METHOD = (
    "8 worker processes of 16 threads each call `complete` for 60 s against the simulator (8 Groq keys, zero "
    "latency), every process pointed at the same `sqlite://` file; each counts answers, errors that reached its "
    "caller, and store fall-backs to memory (a lock held past the 5 s busy timeout). Throughput is answers per "
    "second over all processes."
)
PROCESSES, THREADS = 8, 16
SECONDS = 60.0

_WORKER = """
import json, logging, sys, threading, time
from config.settings import load_settings
from llms import SmartClient
env, seconds, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
fallbacks = []
class Count(logging.Handler):
    def emit(self, record):
        if "unavailable" in record.getMessage():
            fallbacks.append(record.getMessage()[-160:])
logging.getLogger("llms.state").addHandler(Count())
answers, errors, samples, lock = [0], [0], [], threading.Lock()
client = SmartClient(load_settings(env, dotenv_path=None))
end = time.monotonic() + seconds
def work():
    while time.monotonic() < end:
        try:
            client.complete([{"role": "user", "content": "hi"}], wait=5)
            with lock: answers[0] += 1
        except Exception as exc:
            with lock:
                errors[0] += 1
                samples.append(str(exc)[-200:])
workers = [threading.Thread(target=work) for _ in range(threads)]
[w.start() for w in workers]; [w.join() for w in workers]
client.close()
why = fallbacks[:3] + samples[:3]
print(json.dumps({"answers": answers[0], "errors": errors[0], "fallbacks": len(fallbacks), "why": why}))
"""


def run(seconds: float = SECONDS) -> Result:
    root = Path(__file__).resolve().parents[1]
    with Simulator() as sim, tempfile.TemporaryDirectory() as folder:
        env = {**sim.env(), "LLM_STATE_URL": f"sqlite://{folder}/state.db"}
        for i in range(1, 9):
            env[f"GROQ_API_KEY_{i}"] = f"gsk_bench_sqlite_{i:04d}_secret"
            sim.add_key("groq", env[f"GROQ_API_KEY_{i}"])
        args = [sys.executable, "-c", _WORKER, json.dumps(env), str(seconds), str(THREADS)]
        started = time.monotonic()
        workers = [
            subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=root, env={"PYTHONPATH": str(root)})
            for _ in range(PROCESSES)
        ]
        outputs = [json.loads(w.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1]) for w in workers]
        elapsed = time.monotonic() - started
    total = {name: sum(o[name] for o in outputs) for name in ("answers", "errors", "fallbacks")}
    why = sorted({reason for o in outputs for reason in o["why"]})
    return {**total, "why": why, "per_second": total["answers"] / elapsed, "seconds": elapsed}


def notes(r: Result) -> list[str]:
    return [f"What went wrong: {'; '.join(r['why'])}"] if r.get("why") else []


def rows(r: Result) -> list[Row]:
    return [
        Row("errors that reached a caller", str(r["errors"]), "0", met=r["errors"] == 0),
        Row(
            "store fall-backs to memory (lock held past the busy timeout)",
            str(r["fallbacks"]),
            "0",
            met=not r["fallbacks"],
        ),
        Row(
            "throughput, all processes (context)",
            f"{r['per_second']:.0f} answers/s, {r['answers']} in {r['seconds']:.0f} s",
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, lambda: run(float(os.environ.get("BENCH_SECONDS", SECONDS))), rows))
