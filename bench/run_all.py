"""Run every benchmark in one go, print one table, and write docs/benchmarks.md and docs/benchmarks.png.

    pip install -r bench/requirements.txt     # LiteLLM and matplotlib: bench-only dependencies
    python bench/run_all.py                   # a few minutes on 2 cores
    python bench/run_all.py --only overhead,import      # a subset; leaves docs/ alone
    python bench/run_all.py --save /tmp/r.json          # keep the raw numbers; --load /tmp/r.json re-renders

Each benchmark runs in its own fresh interpreter (`python bench/bench_x.py --json …`), so LiteLLM's background
threads, Streamlit's caches or a crash in one cannot disturb another; a benchmark that cannot run here (no
`redis-server`, dashboard not importable) is reported as skipped with its reason. Ratios come from one run of
one script; absolute times are context.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, SKIPPED_EXIT, Result, Row, litellm_version, table

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
TIMEOUT_S = 900


@dataclass(frozen=True)
class Bench:
    key: str
    module: str
    question: str
    timeout_s: float = TIMEOUT_S


BENCHES: tuple[Bench, ...] = (
    Bench("overhead", "bench_overhead", "Overhead"),
    Bench("utilisation", "bench_utilisation", "Utilisation"),
    Bench("scale", "bench_scale", "Scale"),
    Bench("import", "bench_import", "Import"),
    Bench("dashboard", "bench_dashboard", "Dashboard"),
    Bench("state", "bench_state", "State store"),
    Bench("sqlite", "bench_sqlite_processes", "SQLite, many processes"),
    Bench("shared", "bench_shared_share", "Shared stores, 4 processes vs 1"),
    Bench("gateway", "bench_gateway", "Gateway"),
    Bench("burst", "bench_burst", "Burst"),
    Bench("shapes", "bench_shapes", "Quota on every shape"),
    # (real minutes: 43 of them where a cell of minute windows runs again)
    Bench("shapes_http", "bench_shapes_http", "Quota on every shape over HTTP", timeout_s=3600),
)


@dataclass
class Outcome:
    bench: Bench
    status: str  # ok | skipped | failed
    seconds: float
    result: Result | None = None
    message: str = ""

    @property
    def script(self) -> ModuleType:
        return importlib.import_module(f"bench.{self.bench.module}")

    def rows(self) -> list[Row]:
        return self.script.rows(self.result) if self.result is not None else []


def run_one(bench: Bench) -> Outcome:
    """The benchmark in a fresh interpreter; its JSON file says ok / skipped / failed and carries the numbers."""
    script = ROOT / "bench" / f"{bench.module}.py"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(script), "--json", str(out)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=bench.timeout_s,
            )
        except subprocess.TimeoutExpired:
            message = f"timed out after {bench.timeout_s:g} s"
            return Outcome(bench, "failed", time.perf_counter() - started, message=message)
        seconds = time.perf_counter() - started
        data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if proc.returncode not in (0, SKIPPED_EXIT) or not data:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return Outcome(bench, "failed", seconds, message=data.get("message") or f"exit {proc.returncode}\n{tail}")
    return Outcome(bench, data["status"], seconds, data.get("result"), data.get("message", ""))


def machine() -> dict[str, str]:
    """What the numbers depend on: cores, CPU, Python, OS, library versions, the commit measured, the date."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "llms", "config", "dashboard", "pages")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "litellm": litellm_version() or "not installed",
        "commit": commit + (" + uncommitted changes in llms/config/dashboard" if dirty else "") if commit else "",
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --- the report -------------------------------------------------------------------------------------------------


def headline(outcome: Outcome) -> list[Row]:
    """The rows with a target verdict (the summary table), or one row saying why there are none."""
    if outcome.status != "ok":
        return [Row(outcome.bench.question, outcome.status, "—", "—")]
    return [
        Row(f"{outcome.bench.question}: {r.what}", r.measured, r.target, r.litellm, r.met)
        for r in outcome.rows()
        if r.met is not None
    ]


def markdown(outcomes: list[Outcome], info: dict[str, str], took: float) -> str:
    summary = [row for o in outcomes for row in headline(o)]
    parts = [
        "# Benchmarks",
        "",
        f"Measured {info['date']} by `python bench/run_all.py` ({took / 60:.1f} min) on {info['nproc']} cores "
        f"({info['cpu']}), Python {info['python']}, {info['os']}, LiteLLM {info['litellm']}"
        + (f", commit `{info['commit']}`" if info["commit"] else "")
        + ". Everything runs against the provider simulator (`simulator/`) on loopback; nothing leaves the "
        "machine. LiteLLM runs with its default `Router` settings throughout (one deployment per key in one model "
        "group); the only accommodation is in the harness and applies to both clients alike (a 10 ms pause after "
        "an error in the utilisation benchmark).",
        "",
        "Read the **ratios**: each is taken within one run of one script, so machine speed and drift cancel out. "
        "Absolute times are context and will differ on another machine. Regenerate with "
        "`pip install -r bench/requirements.txt && python bench/run_all.py`; each script also runs alone "
        "(`python bench/bench_overhead.py`).",
        "",
        f"![Key ratios: ours vs LiteLLM]({CHART.name})",
        "",
        "## Summary",
        "",
        table(summary, markdown=True),
    ]
    for n, outcome in enumerate(outcomes, 1):
        script = outcome.script
        parts += ["", f"## {n}. {outcome.bench.question} — `bench/{outcome.bench.module}.py`", "", f"{script.TITLE}."]
        if outcome.status == "ok":
            parts += ["", table(outcome.rows(), markdown=True)]
        else:
            parts += ["", f"**{outcome.status.capitalize()}:** {outcome.message}"]
        parts += ["", f"**Method.** {script.METHOD}"]
        notes = getattr(script, "notes", None)
        if outcome.status == "ok" and notes is not None:
            for note in notes(outcome.result):
                parts += ["", note]
    return "\n".join(parts) + "\n"


# --- the chart --------------------------------------------------------------------------------------------------

OURS, THEIRS, FLOOR, TARGET = "#2563eb", "#f97316", "#9ca3af", "#16a34a"


def chart(outcomes: list[Outcome], info: dict[str, str], path: Path) -> None:
    """Six panels of the key ratios, ours in blue and LiteLLM in orange, targets as green dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {o.bench.key: o.result for o in outcomes if o.status == "ok"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(
        f"LLM key rotation client vs LiteLLM Router — {info['date']}, {info['nproc']} cores, Python {info['python']}",
        fontsize=13,
    )
    panels = (_overhead, _share, _waste, _import, _scale, _dashboard)
    needs = ("overhead", "utilisation", "utilisation", "import", "scale", "dashboard")
    for ax, draw, key in zip(axes.flat, panels, needs, strict=True):
        if key in results:
            draw(ax, results[key])
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{key}: not measured in this run", ha="center", va="center", color=FLOOR)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(
    ax: Any,
    labels: list[str],
    values: list[float],
    colors: list[str],
    fmt: str = "{:.2f}",
    ranges: list[tuple[float, float]] | None = None,
) -> None:
    """Labelled bars; `ranges` (min, max of single runs) draws whiskers and lifts the labels above them."""
    yerr = None
    if ranges:
        yerr = [[v - lo for v, (lo, _) in zip(values, ranges, strict=True)],
                [hi - v for v, (_, hi) in zip(values, ranges, strict=True)]]  # fmt: skip
    bars = ax.bar(labels, values, color=colors, width=0.6, yerr=yerr, capsize=4, ecolor="#374151")
    tops = [hi for _, hi in ranges] if ranges else values
    for bar, value, top in zip(bars, values, tops, strict=True):
        ax.annotate(
            fmt.format(value),
            (bar.get_x() + bar.get_width() / 2, max(value, top)),
            ha="center",
            va="bottom",
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=10,
        )
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.15)


def _target(ax: Any, y: float, label: str, xmin: float = 0.0, xmax: float = 1.0) -> None:
    """A dashed green target line (over part of the panel when the target applies to some bars only)."""
    ax.axhline(y, xmin=xmin, xmax=xmax, color=TARGET, linestyle="--", linewidth=1.5, label=label)


def _legend(ax: Any, loc: str) -> None:
    ax.legend(loc=loc, frameon=False, fontsize=9)


def _overhead(ax: Any, r: Result) -> None:
    _bars(
        ax,
        ["bare requests", "ours", "LiteLLM"],
        [1.0, r["ours_ratio"], r["litellm_ratio"]],
        [FLOOR, OURS, THEIRS],
        "{:.2f}×",
    )
    _target(ax, 1.15, "target ≤ 1.15×")
    _legend(ax, "upper left")
    ax.set_title("Overhead: median time per call ÷ bare POST")
    ax.set_ylabel("× bare requests (lower is better)")


def _utilisation_groups(r: Result, field: str) -> tuple[list[str], list[float], list[str], list[tuple[float, float]]]:
    """Five bars: hinted ours / LiteLLM, hint-less fixed / adaptive / LiteLLM; values pooled, ranges per run."""
    labels = [
        "hinted\nours",
        "hinted\nLiteLLM",
        "hint-less\nours fixed",
        "hint-less\nours adaptive",
        "hint-less\nLiteLLM",
    ]
    picks = [
        ("hinted", "ours"),
        ("hinted", "litellm"),
        ("hintless", "fixed"),
        ("hintless", "adaptive"),
        ("hintless", "litellm"),
    ]
    values = [float(r[s][c][field]) for s, c in picks]
    ranges = [(float(r[s][c][f"{field}_range"][0]), float(r[s][c][f"{field}_range"][1])) for s, c in picks]
    return labels, values, [OURS, THEIRS, FLOOR, OURS, THEIRS], ranges


def _share(ax: Any, r: Result) -> None:
    labels, values, colors, ranges = _utilisation_groups(r, "share")
    _bars(ax, labels, values, colors, ranges=ranges)
    _target(ax, 0.95, "hinted target ≥ 0.95", 0.0, 0.4)
    _target(ax, 0.9, "hint-less adaptive target ≥ 0.9", 0.6, 0.8)
    _legend(ax, "upper right")
    ax.set_ylim(0, 1.45)
    ax.set_title(
        f"Utilisation: share of the keys' quota delivered\n({r['repeats']} runs pooled; whiskers: single runs)"
    )
    ax.set_ylabel("answers ÷ capacity (higher is better)")
    ax.tick_params(axis="x", labelsize=9)


def _waste(ax: Any, r: Result) -> None:
    labels, values, colors, ranges = _utilisation_groups(r, "waste")
    _bars(ax, labels, values, colors, ranges=ranges)
    _target(ax, 0.1, "hinted target ≤ 0.1", 0.0, 0.4)
    _legend(ax, "upper left")
    ax.set_ylim(0, max(hi for _, hi in ranges) * 1.35)
    ax.set_title(f"Wasted 429s per answer\n({r['repeats']} runs pooled; whiskers: single runs)")
    ax.set_ylabel("429s ÷ answers (lower is better)")
    ax.tick_params(axis="x", labelsize=9)


def _import(ax: Any, r: Result) -> None:
    _bars(ax, ["import llms", "import litellm"], [r["llms_s"], r["litellm_s"]], [OURS, THEIRS], "{:.2f} s")
    _target(ax, 0.3, "target ≤ 0.3 s")
    _legend(ax, "upper left")
    ax.set_yscale("log")
    ax.set_ylim(0.01, max(10.0, r["litellm_s"] * 3))
    ax.set_title("Import time in a fresh interpreter")
    ax.set_ylabel("seconds, log scale (lower is better)")


def _scale(ax: Any, r: Result) -> None:
    _bars(ax, ["key pick + record", "full complete()"], [r["pick_ratio"], r["call_ratio"]], [OURS, OURS], "{:.2f}×")
    _target(ax, 1.2, "target ≤ 1.2×")
    _legend(ax, "upper right")
    ax.set_ylim(0, max(1.6, r["pick_ratio"] * 1.35, r["call_ratio"] * 1.35))
    ax.set_title("Scale: cost per call, 10,000 keys ÷ 8 keys")
    ax.set_ylabel("× the 8-key cost (lower is better)")


def _dashboard(ax: Any, r: Result) -> None:
    _bars(ax, ["cold\n(builds client)", "warm\n(cached client)"], [r["cold_s"], r["warm_s"]], [OURS, OURS], "{:.2f} s")
    _target(ax, 1.0, "target ≈ 1 s")
    _legend(ax, "upper right")
    ax.set_ylim(0, max(1.4, r["cold_s"] * 1.35))
    ax.set_title(f"Status page render, {r['keys']:,} keys")
    ax.set_ylabel("seconds per page run (lower is better)")


# --- entry point ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated subset: " + ",".join(b.key for b in BENCHES))
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone (implied by --only)")
    parser.add_argument("--save", metavar="PATH", help="also keep the raw results as JSON")
    parser.add_argument("--load", metavar="PATH", help="measure nothing: rebuild the report from saved results")
    args = parser.parse_args()
    args.no_write = args.no_write or bool(args.only)  # a partial run must not overwrite the full report
    wanted = set(args.only.split(",")) if args.only else {b.key for b in BENCHES}
    unknown = wanted - {b.key for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        benches = {b.key: b for b in BENCHES}
        outcomes = [Outcome(benches[o.pop("key")], **o) for o in saved["outcomes"]]
        info, took = saved["machine"], saved["seconds"]
    else:
        started = time.perf_counter()
        outcomes = []
        for bench in (b for b in BENCHES if b.key in wanted):
            print(f"running {bench.module} …", end=" ", flush=True)
            outcome = run_one(bench)
            print(f"{outcome.status} ({outcome.seconds:.0f} s)" + (f": {outcome.message}" if outcome.message else ""))
            outcomes.append(outcome)
        took = time.perf_counter() - started
        info = machine()
    if args.save:
        saved_outcomes = [
            {"key": o.bench.key, "status": o.status, "seconds": o.seconds, "result": o.result, "message": o.message}
            for o in outcomes
        ]
        Path(args.save).write_text(json.dumps({"machine": info, "seconds": took, "outcomes": saved_outcomes}))
    for outcome in outcomes:
        if outcome.status == "ok":
            print(f"\n{outcome.script.TITLE}\n{table(outcome.rows())}")
    print(f"\nSummary ({info['nproc']} cores, Python {info['python']}, {info['date']}, {took:.0f} s)")
    print(table([row for o in outcomes for row in headline(o)]))
    if not args.no_write:
        DOC.write_text(markdown(outcomes, info, took))
        chart(outcomes, info, CHART)
        print(f"\nwrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
