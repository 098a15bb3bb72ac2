"""Quota on every shape over HTTP: the named cells of `bench_shapes.py` against the real simulator, our client beside
LiteLLM's Router, each beside the virtual-time harness's number for the same cell.

The harness (`simulator/virtual_time.py`) is where the shapes are explored: it runs the client's own loop on a
virtual clock, so thousands of cells take a minute. This is its confirmation (issue 23): every named cell that fits
the time budget runs again in real time, against the HTTP simulator (`simulator/server.py`, a fresh one per run,
its keys given the cell's limit shape and hint form through `add_key`), with our client at default settings and
with LiteLLM's `Router` at default settings, and the simulator's request log is the judge. A cell whose share over
HTTP differs from the harness's by more than 0.05 is a finding: one of the two is not modelling what the other does.

Real time costs what virtual time does not, so cells run for five windows, not ten, and a cell of minute windows
runs with all its time scaled down (windows, trips, pauses; sizes kept); the harness is run on that same shortened
cell, so the comparison is like for like. A cell whose point is answers slow beside a minute's window runs as named,
in real minutes, all such cells at once (scaled, the client's own constants would be long beside its window: that
runs too, as its time-scaled variant). A cell that would still not fit, or would no longer test what it names, is
skipped with its reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    Result,
    Row,
    import_litellm,
    litellm_version,
    main,
)
from bench.bench_shapes import NAMED, STORE, targets
from bench.shape_contender import contend
from llms.quota import InFlightLimit
from simulator.shapes import WindowKind
from simulator.virtual_time import HintForm, Shape, run

TITLE = (
    "Quota on every shape over HTTP: the named cells against the simulator, ours and LiteLLM's Router at default "
    "settings, beside the virtual-time harness"
)
WINDOWS = 5
"""Windows each cell runs for over HTTP (a burst: its one). Two made a first window's learning (a hint-only
provider's first 429, a ladder's first tries) a third of the measure: 0.79 of a bucket's quota over 4 s where the
same client keeps 1.00 over 10 s; five keep the steady state what is measured, at about 8 minutes for the table."""
LONGEST = 10.0
"""A cell whose windows are longer than this (a minute) runs with time scaled down so they last SCALED seconds:
its trips, pauses, waits and skew shrink with them, its sizes are kept (`Shape.scaled`)."""
SCALED = 2.0
REAL_TIME_AFTER = 1.0
"""A cell of minute windows whose answers take this long (seconds) runs in real time, beside its time-scaled variant:
what it names is answers slow beside the window, and scaled by 30 its trips shrink but the client's pacing of a key
whose quota is unknown (a send every half second at first: `InFlightLimit.SPACING`) and its margins do not, so the
variant is a shape of its own (2 s windows of 20 under 0.3 s answers), not the named one."""
SIDE_BY_SIDE_AFTER = 30.0
"""A cell whose run lasts longer than this (seconds) runs side by side with the others as long, each contender on
its own simulator: five real minutes, not five for each of them."""
SKIP: dict[str, str] = {
    "fixed 20/60 s, whole-second Retry-After only": "what the cell shows is that a whole-second hint costs little "
    f"on a minute's window; with time scaled to {SCALED:g} s windows the hint's rounding would not shrink with it "
    "(up to half a window), so it would test something else — and that form runs in its 2 s cell",
}
"""Named cells that do not run over HTTP, and why."""
CONTENDERS = ("ours", "litellm")
DIFFERS = 0.05
"""A share over HTTP this far from the harness's for the same cell is a finding."""
HARNESS_DRAWS = 5
"""Seeds the harness runs each cell under, its median draw (by share, then 429s) beside HTTP: one draw of a cell's
jitter is as much a sample as one run over HTTP (the ÷30 sliding 20/2 s cell drew 0.65 to 0.77 over five): against
seed 0 alone, HTTP "differed" in cells where that one draw was high."""
RUNS = HARNESS_DRAWS
"""Runs of each contender on a cell whose first run of ours missed, or differed from the harness: the median
counts. As many as the harness's draws, so the two medians it is compared with are taken alike (with three runs
beside five draws, the ÷30 Gemini cell's HTTP median 0.820, of 0.800–0.900, read as differing from the harness's
0.900, of 0.840–0.960)."""
SWEEP = (30.0, 10.0, 6.0, 1.0)
"""Time scalings (÷) at which the harness reruns a time-scaled cell where ours fell below LiteLLM over HTTP: whether
the shortfall is the scaling's (the client's own constants do not scale) or the shape's."""
METHOD = (
    "For each named cell of *Quota on every shape* (`bench/bench_shapes.py: NAMED`), a fresh HTTP simulator "
    "(`simulator/server.py`, in this process, on loopback) gets the cell's keys, each with the cell's limit "
    "(`add_key(limit=(n, seconds), window=…)`: a window fixed from its first request, fixed on the clock, sliding, "
    "a token bucket, tokens — the models of `simulator/shapes.py` the harness counts against; under a limit on "
    "tokens each call asks one of the harness's requests of 50, 100 and 150 tokens at random, the simulator "
    "charging what the body asks, its text at four characters a token and its `max_tokens`, and its answers "
    "reporting the tokens left as OpenAI's and Groq's do), its shared-limit group, its "
    "latency (held after the request is admitted, as a model generates after the rate limiter let it in; the "
    "harness admits it half-way through the trip) and its hint form, in the wire format the harness uses for it "
    "(`PROVIDER_OF`): *remaining* and the hint-less forms as a generic OpenAI-compatible provider, with "
    "`quota_headers=False` where answers say nothing (whole-second `Retry-After` only; a bare 429); OpenRouter's "
    "epoch-ms reset with `retry_after=True` (a whole-second `Retry-After` beside it, as the harness sends); Groq's "
    "with `day_count=14400` (its request headers count the day, not the window); Gemini's `RetryInfo`; a provider "
    "clock ahead with `Simulator(skew=…)`; each run's simulator is fresh and serves from a process of its own, as "
    "a provider does (`simulator.remote.SimulatorProcess`: `python -m simulator` scripted over its control API). "
    "The cell's callers run as threads in real time for the cell's span, "
    "counted from the first request the simulator sees (what a client does before it is start-up, not "
    "rotation; where windows sit on the clock, the callers start at the moment of a window the harness's first "
    "request reaches): fail-fast callers loop `client.complete(messages)` with default settings (the default "
    "store, a SQLite file, fresh for each run; the harness's column runs the cell on one too) and pause the "
    "cell's pause (1 s) after an error; waiting callers "
    "pass `wait=` as the cell says. LiteLLM's callers loop `Router.completion` over one deployment per key "
    "(default Router settings; `openai/sim-chat-small` for the generic provider) and pause the same after any "
    "error. *Share* = answers (tokens, under a limit on tokens) the simulator logged within the span ÷ what a "
    "client that knew every limit could "
    "have had admitted in it with the same callers (`simulator.shapes.served`, the harness's arithmetic); "
    "*429s per answer* = 429s logged in the span ÷ those answers; a burst's cost is its "
    f"first window's 429s per key. To keep the whole run near 8 minutes each cell runs for {WINDOWS} windows (a "
    "burst for its one) where the harness runs 10, and a cell of minute windows runs with time scaled to "
    f"{SCALED:g} s windows: its trips, pauses, waits and skew shrink by the same factor, its sizes are kept "
    f"(marked *time ÷{60 / SCALED:g}* in the table; on the harness this reproduces the full minute cells' shares, "
    "1.000 each, where scaling the windows alone — 0.2 s trips in 2–3 s windows — would halve some: a key whose "
    "quota is unknown serves one request at a time). A minute cell whose answers take "
    f"{REAL_TIME_AFTER:g} s or more (the slow answers, the reasoning model's) also runs as named, in real "
    "minutes, these side by side, each contender on its own simulator: what it names is answers slow beside the "
    "window, and scaled, the client's own pacing constants are not (its time-scaled run stays in the table as "
    "that cell's variant). *Harness* is `simulator.virtual_time.run` on the same cell as run over HTTP (shortened "
    f"or not), so the two compare like with like, its median draw of {HARNESS_DRAWS} seeds (by share, then 429s: "
    "one draw of a cell's jitter is as much a sample as one run over HTTP; the full cells' numbers are in *Quota on "
    "every shape*). "
    "Targets are issue "
    "23's, for our client over HTTP, judged by `bench_shapes.targets`: ≥ 0.98 share (hint-less 0.95) and ≤ the "
    "floor + 0.05 429s per answer (floor: none where answers report the quota, one 429 per key where only the 429 "
    "carries a hint, one a window a limit where nothing does), a burst ≤ 1 429 per key whose quota is unknown "
    "and 0 where answers report it; and never below LiteLLM (share no lower, 429s no more). One run per "
    "contender per cell, in real time, on a machine that is doing other things, so one answer either way is "
    f"noise: where ours misses a target or its share is more than {DIFFERS:g} from the harness's, both "
    f"contenders run the cell {RUNS - 1} more times and each is judged by its median run (by share, then 429s; "
    "all the runs' shares are shown), and the cell is a finding where that median differs from the harness."
)


@dataclass(frozen=True)
class Cell:
    """A named cell as the harness has it, and as it runs over HTTP (None: it does not, `why`)."""

    name: str
    named: Shape
    http: Shape | None
    why: str = ""

    @property
    def long(self) -> bool:
        """Whether a run takes long (minutes of mostly waiting on slow answers): such cells run side by side."""
        return self.http is not None and self.http.span > SIDE_BY_SIDE_AFTER

    @property
    def scaled(self) -> bool:
        """Whether the cell runs over HTTP with its time scaled down (a minute's windows as `SCALED` seconds)."""
        return self.http is not None and self.http.length != self.named.length

    @property
    def label(self) -> str:
        if self.http is None or not self.scaled:
            return self.name
        named, http = self.named, self.http
        return (
            f"{self.name} [time ÷{named.length / http.length:g}: windows {named.length:g} → {http.length:g} s, "
            f"trips {named.latency:g} → {http.latency:.2g} s]"
        )


def cells() -> list[Cell]:
    out = []
    for name, shape in NAMED.items():
        why = SKIP.get(name) or _unsupported(shape)
        if why:
            out.append(Cell(name, shape, None, why))
            continue
        as_named = replace(shape, windows=min(shape.windows, WINDOWS), store=STORE)
        if shape.length <= LONGEST or shape.latency >= REAL_TIME_AFTER:
            out.append(Cell(name, shape, as_named))
        if shape.length > LONGEST:
            out.append(Cell(name, shape, as_named.scaled(SCALED / shape.length)))
    return out


def _unsupported(shape: Shape) -> str:
    if shape.window is WindowKind.PER_DAY:
        return "a day's limit runs for ten minutes"
    if shape.processes > 1:
        return "processes sharing a store run over HTTP in *Shared stores, 4 processes vs 1* (bench_shared_share.py)"
    return ""


# --- the whole table -----------------------------------------------------------------------------------------------


def _runs_of(batch: list[Cell], runs: int) -> list[dict[str, list[Result]]]:
    """`runs` runs of each contender on each cell of `batch`: in turn for one cell; side by side for several (the
    cells of minute windows, whose runs are minutes of mostly waiting), each on its own simulator."""
    jobs = [(cell.http, contender) for cell in batch for contender in CONTENDERS for _ in range(runs)]
    side_by_side = len(jobs) if len(batch) > 1 else 1
    with ThreadPoolExecutor(max_workers=side_by_side, thread_name_prefix="bench-cell") as pool:
        results = list(pool.map(lambda job: contend(*job), jobs))
    per_cell: list[dict[str, list[Result]]] = [{contender: [] for contender in CONTENDERS} for _ in batch]
    for index, result in enumerate(results):
        per_cell[index // (len(CONTENDERS) * runs)][jobs[index][1]].append(result)
    return per_cell


def _entry(cell: Cell, first: dict[str, list[Result]]) -> dict[str, Any]:
    """A cell's first run of each contender, beside the harness on the same shape."""
    assert cell.http is not None
    draws = [run(replace(cell.http, seed=cell.http.seed + draw)) for draw in range(HARNESS_DRAWS)]
    harness = _median_run(draws, lambda m: (m.share, m.waste))
    return {
        "name": cell.name,
        "label": cell.label,
        "http_shape": cell.http.label() + f", {cell.http.span:g} s",
        "harness": harness.as_dict() | {"met": list(targets(harness))},
        **{contender: results[0] for contender, results in first.items()},
    }


T = TypeVar("T")


def _median_run(runs: Sequence[T], measures: Callable[[T], tuple[float, float]]) -> T:
    """The middle of several runs (or harness draws) of a cell by share, then by fewer 429s (`measures`: a run's
    share and 429s per answer): what the cell is judged by."""
    return sorted(runs, key=lambda run: (measures(run)[0], -measures(run)[1]))[len(runs) // 2]


def _unsure(entry: Result) -> bool:
    """Whether one run settles nothing: ours missed, or differs from the harness."""
    return not all(_verdict(entry["name"], entry)) or abs(entry["ours"]["share"] - entry["harness"]["share"]) > DIFFERS


def run_all() -> Result:
    started = time.perf_counter()
    import_litellm()  # once, before any clock starts (seconds of import are not the test)
    out: dict[str, Any] = {}
    listed = cells()
    for cell in listed:
        if cell.http is None:
            out[cell.label] = {"name": cell.name, "skipped": cell.why}
    in_turn = [[cell] for cell in listed if cell.http is not None and not cell.long]
    for batch in [*in_turn, [cell for cell in listed if cell.long]]:
        began = time.perf_counter()
        entries = [_entry(cell, first) for cell, first in zip(batch, _runs_of(batch, 1), strict=True)]
        again = [(cell, entry) for cell, entry in zip(batch, entries, strict=True) if _unsure(entry)]
        for (_, entry), more in zip(again, _runs_of([cell for cell, _ in again], RUNS - 1), strict=True):
            for contender in CONTENDERS:  # one run is noise: both contenders' median of RUNS
                runs = [entry[contender], *more[contender]]
                entry[f"{contender}_runs"] = [run["share"] for run in runs]
                entry[contender] = _median_run(runs, lambda run: (run["share"], run["waste"]))
        for cell, entry in zip(batch, entries, strict=True):
            assert cell.http is not None
            if cell.scaled and entry["ours"]["share"] < entry["litellm"]["share"]:
                sweep = {
                    f"{f:g}": run(replace(cell.named.scaled(1 / f), windows=WINDOWS, store=STORE)).share for f in SWEEP
                }
                entry["sweep"] = sweep
            entry["seconds"] = round(time.perf_counter() - began, 1)
            out[cell.label] = entry
            print(f"  {cell.label}: {entry['seconds']:.0f} s", file=sys.stderr, flush=True)
    return {
        "litellm_version": litellm_version(),
        "windows": WINDOWS,
        "cells": out,
        "seconds": time.perf_counter() - started,
    }


def _burst(name: str) -> bool:
    return name.startswith("burst")


def _verdict(name: str, cell: Result) -> tuple[bool, bool]:
    """Issue 23's targets for ours over HTTP, each also "never below LiteLLM"."""
    ours, lite = cell["ours"], cell["litellm"]
    share_met, waste_met = ours["met"]
    if _burst(name):
        no_worse = ours["refused_first_window"] <= lite["refused_first_window"]
    else:
        no_worse = ours["waste"] <= lite["waste"]
    return share_met and ours["share"] >= lite["share"], waste_met and no_worse


def _findings(result: Result, measure: str = "share") -> list[tuple[str, Result]]:
    """Cells where ours over HTTP (its median run, where it ran more than once) and the harness differ by more
    than DIFFERS in `measure`."""
    return [
        (name, cell)
        for name, cell in result["cells"].items()
        if "ours" in cell and abs(cell["ours"][measure] - cell["harness"][measure]) > DIFFERS
    ]


def _runs(cell: Result, contender: str) -> str:
    """Where the contender ran the cell more than once, its runs' shares: `; median of 0.820 / 1.000 / 1.000`."""
    shares = cell.get(f"{contender}_runs")
    return f"; median of {' / '.join(f'{share:.3f}' for share in shares)}" if shares else ""


def rows(result: Result) -> list[Row]:
    out = []
    for label, cell in result["cells"].items():
        name = cell["name"]
        if "skipped" in cell:
            out.append(Row(f"{name}: not run over HTTP", f"skipped: {cell['skipped']}"))
            continue
        ours, lite, harness = cell["ours"], cell["litellm"], cell["harness"]
        share_met, waste_met = _verdict(name, cell)
        out.append(
            Row(
                f"{label}: share",
                f"{ours['share']:.3f} (harness {harness['share']:.3f}{_runs(cell, 'ours')})",
                "≥ 0.98 (hint-less 0.95), ≥ LiteLLM",
                f"{lite['share']:.3f}" + (f" ({_runs(cell, 'litellm')[2:]})" if "litellm_runs" in cell else ""),
                share_met,
            )
        )
        if _burst(name):
            keys = NAMED[name].keys
            per_key = f"{ours['refused_first_window'] / keys:.2f}"
            per_key += f" (harness {harness['refused_first_window'] / keys:.2f})"
            target = ("0" if "remaining" in name else "≤ 1") + ", ≤ LiteLLM"
            lite_per_key = f"{lite['refused_first_window'] / keys:.2f}"
            out.append(Row(f"{label}: 429s per key in the burst", per_key, target, lite_per_key, waste_met))
            continue
        floor = f", floor {ours['floor']:.3f}" if ours["floor"] else ""
        out.append(
            Row(
                f"{label}: 429s per answer",
                f"{ours['waste']:.3f} (harness {harness['waste']:.3f}{floor})",
                "≤ floor + 0.05, ≤ LiteLLM",
                f"{lite['waste']:.3f}",
                waste_met,
            )
        )
    ran = sum(1 for c in result["cells"].values() if "ours" in c)
    found, wasted = _findings(result), _findings(result, "waste")
    out.append(
        Row(
            f"cells whose share over HTTP is more than {DIFFERS:g} from the harness's",
            f"{len(found)} of {ran}" + (": " + "; ".join(n for n, _ in found) if found else ""),
            "0",
            "—",
            not found,
        )
    )
    out.append(
        Row(
            f"cells whose 429s per answer over HTTP are more than {DIFFERS:g} from the harness's",
            f"{len(wasted)} of {ran}" + (": " + "; ".join(n for n, _ in wasted) if wasted else ""),
        )
    )
    return out


def notes(result: Result) -> list[str]:
    """The wall time, each cell where HTTP and the harness differ, and what explains the differences seen so far
    (only where the numbers call for it)."""
    ran = sum(1 for c in result["cells"].values() if "ours" in c)
    lines = [
        f"The {ran} cells that ran (of {len(result['cells'])}: the named cells, and the time-scaled variants of "
        f"those run in real minutes) took {result['seconds']:.0f} s of wall time "
        "over HTTP "
        f"(LiteLLM {result['litellm_version']}); the numbers of each full cell (10 windows, minute windows "
        "unscaled) are in *Quota on every shape*."
    ]
    differ = dict(_findings(result)) | dict(_findings(result, "waste"))
    for name, cell in differ.items():
        ours, harness = cell["ours"], cell["harness"]
        lines.append(
            f"**{name}: HTTP and the harness differ.** Over HTTP ours had {ours['answers']} answers and "
            f"{ours['refused']} 429s of a capacity of {ours['capacity']} (share {ours['share']:.3f}, "
            f"{ours['waste']:.3f} per answer); the harness {harness['answers']} and {harness['refused']} (share "
            f"{harness['share']:.3f}, {harness['waste']:.3f} per answer)."
        )
    epoch = [n for n, c in _findings(result, "waste") if NAMED[c["name"]].hint is HintForm.RESET_MS]
    if epoch:
        lines.append(
            "**Why OpenRouter's epoch reset costs a second 429 over HTTP** (" + "; ".join(epoch) + "). The "
            "key manager ends a hint's rest at `sent + wait` (`llms/key_manager.py: _rest_from`), `wait` counted "
            "from halfway through the trip: it assumes the provider read its limit half a trip after the "
            "request left, as the harness models it. The HTTP simulator admits a request when it arrives (on "
            "loopback, at once) and spends the whole latency after that, as a model generating does; so an "
            "absolute reset becomes a rest that ends half a trip (0.1 s) early, the next request arrives before "
            "the window has ended and is refused. That second 429's reset has passed by the time it is read "
            "(0 s, which `most_precise` takes for a whole number), so the whole-second `Retry-After: 1` wins "
            "and the key rests a second more."
        )
    swept = {name: cell["sweep"] for name, cell in result["cells"].items() if "sweep" in cell}
    if swept:
        pacing = InFlightLimit
        shares = "; ".join(f"{n}: " + ", ".join(f"÷{f} {v:.2f}" for f, v in s.items()) for n, s in swept.items())
        lines.append(
            "**Why the time-scaled cells below LiteLLM fall short: the shape, not HTTP** ("
            + "; ".join(swept)
            + "). The harness reads no better on the same shortened cell, so it is the client on that shape. "
            "Scaling time shrinks the windows and the trips but not the client's own constants: while a key's quota "
            f"is unknown one more request goes every {pacing.SPACING:g} s, halved every "
            f"{pacing.SPACING_HALVED_AFTER} answers but never below half its quickest answer's trip (so a 429 comes "
            f"back before the next send), and its in-flight limit grows only after {pacing.PROVEN_AFTER} answers "
            "(`InFlightLimit`). A 2 s window of 20 under 0.3 s answers is worth 10 requests a second, which that "
            "pacing never reaches; the first 429 comes seconds later, and the window it teaches (`SlotLog.limited`: "
            "where no later window fits what was admitted, every answer since the first) spans several windows of a "
            "key held below its limit by its own pacing: too slow, and a window learned too slow never earns the 429 "
            "that would correct it. LiteLLM sends at once and rests on each 429. The harness's share of each cell "
            f"as the scaling shrinks ({WINDOWS} windows; ÷1 is the cell itself): {shares}. The shortfall is the "
            "shape's (windows short beside the answers' trips) and is open in issue 23."
        )
    return lines


if __name__ == "__main__":
    sys.exit(main(TITLE, run_all, rows))
