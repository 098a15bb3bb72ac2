"""Import: how long does `from llms import get_smart_client` take in a fresh process, next to `import litellm`?

A script or a dashboard worker pays this on every start. Each sample is a fresh interpreter that times only the
import statement (interpreter start-up is measured separately, as context), alternating llms and litellm so
drift hits both. With no Gemini key in use the Gemini SDK must stay unimported; the child reports whether
`google.genai` ended up in `sys.modules`.
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

from bench._common import ROOT, Result, Row, litellm_version, main, median

TITLE = "Import: wall time of `from llms import get_smart_client` in a fresh interpreter vs `import litellm`"
METHOD = (
    "Each sample starts a fresh `python -c` (working directory: a new empty temp dir, so no `.env` is read; "
    "the repo on `PYTHONPATH`; no provider keys in the environment) that times just the `import` statement with "
    "`time.perf_counter` and reports whether `google.genai` is in `sys.modules` afterwards. "
    "`from llms import get_smart_client` (which loads the client, settings, providers and stores; a bare "
    "`import llms` loads nothing until a name is used) and "
    "`import litellm` (with `LITELLM_LOCAL_MODEL_COST_MAP=True`, i.e. offline, as everywhere in this suite) "
    "alternate, 7 samples each; the figure is the median. Interpreter start-up (`python -c pass`) is given as "
    "context: a CLI call pays it on top."
)
SAMPLES = 7
_STATEMENTS = {"llms": "from llms import get_smart_client", "litellm": "import litellm"}
TARGET_S = 0.3
_CHILD = (
    "import sys, time, json\n"
    "t = time.perf_counter()\n"
    "{statement}\n"
    "elapsed = time.perf_counter() - t\n"
    "print(json.dumps({{'s': elapsed, 'genai': 'google.genai' in sys.modules, 'modules': len(sys.modules)}}))\n"
)


def _env() -> dict[str, str]:
    """The caller's environment without provider keys or `LLM_*` settings, offline LiteLLM, the repo importable."""
    ours = ("LLM_", "OPENROUTER_", "GROQ_", "GEMINI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _sample(module: str, cwd: str, env: dict[str, str]) -> dict[str, float | bool]:
    code = _CHILD.format(statement=_STATEMENTS[module]) if module else "pass"
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    wall = time.perf_counter() - started
    if not module:
        return {"s": wall}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


def run() -> Result:
    env = _env()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as cwd:
        _sample("llms", cwd, env)  # write the repo's .pyc files first, as an installed package has them
        samples: dict[str, list[dict[str, float | bool]]] = {"llms": [], "litellm": [], "": []}
        for _ in range(SAMPLES):
            for module in samples:
                samples[module].append(_sample(module, cwd, env))
    llms, lite = samples["llms"], samples["litellm"]
    return {
        "llms_s": median([float(s["s"]) for s in llms]),
        "litellm_s": median([float(s["s"]) for s in lite]),
        "llms_process_s": median([float(s["wall"]) for s in llms]),
        "litellm_process_s": median([float(s["wall"]) for s in lite]),
        "python_startup_s": median([float(s["s"]) for s in samples[""]]),
        "genai_imported": any(bool(s["genai"]) for s in llms),
        "llms_modules": int(llms[0]["modules"]),
        "litellm_modules": int(lite[0]["modules"]),
        "litellm_version": litellm_version(),
        "samples": SAMPLES,
    }


def rows(r: Result) -> list[Row]:
    return [
        Row(
            "`import` statement, median",
            f"{r['llms_s']:.3f} s",
            f"≤ {TARGET_S} s",
            f"{r['litellm_s']:.2f} s",
            r["llms_s"] <= TARGET_S and not r["genai_imported"],
        ),
        Row("LiteLLM import ÷ ours", f"{r['litellm_s'] / r['llms_s']:.0f}×"),
        Row(
            "`google.genai` loaded by the import",
            "yes" if r["genai_imported"] else "no",
            "no",
            met=not r["genai_imported"],
        ),
        Row(
            "whole process incl. start-up (context)",
            f"{r['llms_process_s']:.2f} s",
            f"`python -c pass`: {r['python_startup_s']:.3f} s",
            f"{r['litellm_process_s']:.2f} s",
        ),
        Row("modules in `sys.modules` after import", f"{r['llms_modules']:,}", "—", f"{r['litellm_modules']:,}"),
    ]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
