"""A large random sample of *Quota on every shape*, kept as JSON, and what changed between two samples.

`bench_shapes.py` runs 60 random cells for the report; judging a change to the client's learning takes more: a
rule that mends one kind of shape often costs another (each session's "tried and not kept" list). This runs a few
hundred random cells of the same space (`bench_shapes.random_shape`, on the memory store: the harness's tests run
there, and it is several times faster than SQLite) in parallel, and compares two runs cell by cell and by class:

    python bench/shape_sample.py run /tmp/before.json --cells 300 --seed 23     # about three minutes on 2 cores
    (change the client)
    python bench/shape_sample.py run /tmp/after.json --cells 300 --seed 23
    python bench/shape_sample.py diff /tmp/before.json /tmp/after.json          # cells that moved, fixed, broke
    python bench/shape_sample.py classes /tmp/after.json                        # misses by window, hint, speed

A random cell runs for 4 windows, a key's first seconds where its windows are short: what the client does before
it knows a key's limit weighs heavily there. `--windows 30` runs each for 30 instead (about four times as long),
which shows what it does once it has learned.

The same seed draws the same cells, so two runs differ only by the client. A cell is one `simulator.virtual_time`
run, deterministic for its shape: a difference is the change's, not noise. A named cell meets its targets under the
one draw of sizes and jitter it is named with; `--named 8` runs every named cell (`bench_shapes.NAMED`, on its own
store) under draws 1–8 instead (`Shape.seed`), and `classes` then counts misses by cell:

    python bench/shape_sample.py run /tmp/named.json --named 8                  # about a minute on 2 cores
    python bench/shape_sample.py classes /tmp/named.json

The HTTP table's time-scaled cells (`bench_shapes_http`: a minute's windows run as 2 s ones, "÷30") are where the
client falls below LiteLLM's Router; `--scaled 5` runs each as that table's harness column does, under draws 0–4
(`classes` counts their misses by cell; the table shows each one's median draw):

    python bench/shape_sample.py run /tmp/scaled.json --scaled 5                # about half a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_shapes import NAMED, random_shape, targets
from simulator.virtual_time import Shape, run

Cell = dict[str, Any]


def measure(numbered: tuple[int, Shape]) -> Cell:
    """One cell run, as plain data."""
    number, shape = numbered
    measured = run(shape)
    named = [f"named: {name}" for name, cell in NAMED.items() if replace(cell, seed=shape.seed) == shape]
    named += [f"{name} (time-scaled)" for name, cell in _scaled().items() if replace(cell, seed=shape.seed) == shape]
    share_met, waste_met = targets(measured)
    return {
        "cell": number,
        "label": shape.label(),
        "share": measured.share,
        "waste": measured.waste,
        "floor": measured.floor,
        "met": [share_met, waste_met],
        "classes": classes_of(shape) + named[:1],
    }


def classes_of(shape: Shape) -> list[str]:
    """The kinds a cell belongs to, for counting misses by kind: its window, its hint, and how slow its answers
    are beside its window (a first answer later than a window's end leaves that window to a blind guess)."""
    speed = "answers ≥ window" if shape.latency >= shape.length else "answers ≥ ¼ window"
    slow = [speed] if shape.latency >= shape.length / 4 else []
    return [f"window {shape.window.value}", f"hint {shape.hint.value}", f"{shape.caller.value} callers", *slow]


def sample(cells: int, seed: int, windows: int | None = None) -> list[tuple[int, Shape]]:
    """`cells` random cells drawn from `seed`, each run for its own few windows or, given, for `windows`."""
    rng = random.Random(seed)
    shapes = (replace(random_shape(rng), store="memory") for _ in range(cells))
    return list(enumerate(shape if windows is None else replace(shape, windows=windows) for shape in shapes))


def named_draws(draws: int) -> list[tuple[int, Shape]]:
    """Every named cell under draws 1 to `draws` of its sizes and jitter, each on the store it is named with."""
    shapes = [replace(shape, seed=draw) for shape in NAMED.values() for draw in range(1, draws + 1)]
    return list(enumerate(shapes))


@cache
def _scaled() -> dict[str, Shape]:
    """The named cells the HTTP table runs with time scaled down, as it runs them, by name."""
    from bench.bench_shapes_http import cells  # (the HTTP table's own choice of cells and scaling)

    return {c.name: c.http for c in cells() if c.http is not None and c.scaled}


def scaled_draws(draws: int) -> list[tuple[int, Shape]]:
    """The HTTP table's time-scaled cells under draws 0 to `draws` − 1, as its harness column runs them."""
    return list(enumerate(replace(shape, seed=draw) for shape in _scaled().values() for draw in range(draws)))


def met(cell: Cell) -> bool:
    return all(cell["met"])


def summary(cells: list[Cell]) -> str:
    misses = sum(not met(cell) for cell in cells)
    share = sum(cell["share"] for cell in cells) / max(1, len(cells))
    return f"{misses} of {len(cells)} cells miss a target; mean share {share:.4f}"


def diff(before: list[Cell], after: list[Cell]) -> Iterable[str]:
    """The cells whose share moved by more than 0.01, whose waste moved by more than 0.02, or whose verdict
    changed; then how many were fixed and broken."""
    fixed = broken = 0
    for old, new in zip(before, after, strict=True):
        if old["label"] != new["label"]:
            raise SystemExit("the two samples hold different cells: run both with the same --cells and --seed")
        moved = abs(old["share"] - new["share"]) > 0.01 or abs(old["waste"] - new["waste"]) > 0.02
        if not moved and old["met"] == new["met"]:
            continue
        verdict = "fixed" if met(new) and not met(old) else "broke" if met(old) and not met(new) else ""
        fixed, broken = fixed + (verdict == "fixed"), broken + (verdict == "broke")
        yield (
            f"{old['cell']:4d}  share {old['share']:.3f} → {new['share']:.3f}  429s/answer {old['waste']:.3f} → "
            f"{new['waste']:.3f} (floor {old['floor']:.3f})  {verdict:5s}  {old['label']}"
        )
    yield f"fixed {fixed}, broke {broken}; before: {summary(before)}; after: {summary(after)}"


def by_class(cells: list[Cell]) -> Iterable[str]:
    """Misses per kind of cell, most first: which share target and which waste target each kind misses, and the
    kind's mean share."""
    total, missed, share_missed, waste_missed = Counter(), Counter(), Counter(), Counter()
    shares: Counter[str] = Counter()
    for cell in cells:
        for kind in cell["classes"]:
            total[kind] += 1
            missed[kind] += not met(cell)
            share_missed[kind] += not cell["met"][0]
            waste_missed[kind] += not cell["met"][1]
            shares[kind] += cell["share"]
    for kind in sorted(total, key=lambda k: (-missed[k], k)):
        yield (
            f"{kind:22s} {missed[kind]:4d} of {total[kind]:4d} miss   share {share_missed[kind]:4d}   "
            f"429s {waste_missed[kind]:4d}   mean share {shares[kind] / total[kind]:.3f}"
        )
    yield summary(cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="run a sample and keep it as JSON")
    running.add_argument("out", type=Path)
    running.add_argument("--cells", type=int, default=300)
    running.add_argument("--seed", type=int, default=23)
    running.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    running.add_argument("--named", type=int, metavar="DRAWS", help="the named cells under this many draws instead")
    running.add_argument("--windows", type=int, help="windows each random cell runs (default: its own, 4)")
    running.add_argument("--scaled", type=int, metavar="DRAWS", help="the HTTP table's time-scaled cells instead")
    comparing = commands.add_parser("diff", help="what changed between two samples of the same cells")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    counting = commands.add_parser("classes", help="misses by kind of cell")
    counting.add_argument("sample", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        with ProcessPoolExecutor(args.jobs) as pool:
            if args.scaled:
                numbered = scaled_draws(args.scaled)
            elif args.named:
                numbered = named_draws(args.named)
            else:
                numbered = sample(args.cells, args.seed, args.windows)
            cells = list(pool.map(measure, numbered, chunksize=4))
        args.out.write_text(json.dumps(cells))
        print(summary(cells))
    elif args.command == "diff":
        print("\n".join(diff(json.loads(args.before.read_text()), json.loads(args.after.read_text()))))
    else:
        print("\n".join(by_class(json.loads(args.sample.read_text()))))


if __name__ == "__main__":
    main()
