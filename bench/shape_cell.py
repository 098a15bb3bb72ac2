"""One cell of *Quota on every shape*, run in the virtual-time harness and shown window by window.

Where `bench_shapes.py` says that a cell misses, this says how: for each window, each key's answers and 429s as the
provider saw them, beside what a client that knew the limit could have had admitted in it. A named cell by its
name, or any shape by its fields (`simulator.virtual_time.Shape`):

    python bench/shape_cell.py "slow answers (10 s ± 50 %), sliding 20/60 s, remaining"
    python bench/shape_cell.py --window bucket --hint reset-ms --size 20 --length 60 --latency 10 --jitter 0.5
    python bench/shape_cell.py --learned "clock 30/60 s, Groq"     # also what each key's 429s taught
    python bench/shape_cell.py --lessons --window clock --hint gemini --size 20 --length 10 --skew -0.5
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_shapes import NAMED, targets
from llms.learned_pacing import Pacing
from llms.learned_windows import SlotLog
from llms.state.base import Document
from simulator.shapes import WindowKind
from simulator.virtual_time import EPOCH, Arrival, CallerKind, HintForm, Lesson, Measured, Shape, run

_KINDS: dict[str, type[Any]] = {"window": WindowKind, "hint": HintForm, "caller": CallerKind}


def shape_from(argv: list[str]) -> Shape:
    """The named cell, or a `Shape` from `--field value` flags (defaults: `Shape`'s)."""
    return _parsed(argv)[0]


def _parsed(argv: list[str]) -> tuple[Shape, bool, bool]:
    """The shape, whether `--learned` asks for what the client learned of each key's limit, and whether
    `--lessons` asks how each reading changed, 429 by 429."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="a named cell (bench/bench_shapes.py: NAMED)")
    parser.add_argument("--learned", action="store_true", help="also show what each key's 429s taught by the end")
    parser.add_argument("--lessons", action="store_true", help="also show, 429 by 429, how each reading changed")
    for spec in fields(Shape):
        kind = _KINDS.get(spec.name)
        choices = [member.value for member in kind] if kind else None
        convert = str if kind or spec.type == "str" else (int if spec.type == "int" else float)
        default = spec.default.value if isinstance(spec.default, Enum) else spec.default
        assert default is not MISSING
        parser.add_argument(f"--{spec.name}", type=convert, choices=choices, help=f"default {default}")
    args = parser.parse_args(argv)
    if args.name:
        if args.name not in NAMED:
            parser.error(f"no named cell {args.name!r}; the names: " + "; ".join(NAMED))
        return NAMED[args.name], args.learned, args.lessons
    given = {k: v for k, v in vars(args).items() if k not in ("name", "learned", "lessons") and v is not None}
    return Shape(**{k: _KINDS[k](v) if k in _KINDS else v for k, v in given.items()}), args.learned, args.lessons


def windows(shape: Shape, arrivals: list[Arrival]) -> list[str]:
    """A line per window of the run's span: each key's answers/429s in it, on the provider's clock. Windows count
    from the run's start; a window on the clock, from the provider's own boundaries (the first one is partial)."""
    offset = (EPOCH + shape.skew) % shape.length if shape.window is WindowKind.FIXED_CLOCK else 0.0
    answers: Counter[tuple[int, int]] = Counter()
    refused: Counter[tuple[int, int]] = Counter()
    for arrival in arrivals:
        if arrival.at < shape.span:
            window = int((arrival.at + offset) // shape.length)
            (answers if arrival.admitted else refused)[window, arrival.key] += 1
    last = max((window for window, _ in answers | refused), default=-1)
    keys = range(1, shape.keys + 1)
    lines = [f"{'from':>8}  " + "  ".join(f"key {k:<6}" for k in keys) + "   (answers/429s)"]
    for window in range(last + 1):
        cells = "  ".join(f"{answers[window, k]:>4}/{refused[window, k]:<5}" for k in keys)
        lines.append(f"{max(0.0, window * shape.length - offset):>7.4g}s  {cells}")
    return lines


def learned_lines(learned: dict[str, Document]) -> list[str]:
    """A line per subject: the window its 429s taught (`SlotLog`, a hint; `Pacing`, none), as the run ended."""
    lines = []
    for name, document in sorted(learned.items()):
        kind, _, subject = name.partition("/")
        what = described(kind, document)
        if what:
            lines.append(f"{subject}: {what}")
    return lines or ["nothing learned (no 429)"]


def described(kind: str, document: Document) -> str:
    """What one learned document says of a limit (`slots`: a `SlotLog`; `pace`: a `Pacing`; else nothing)."""
    if kind == "slots":
        log = SlotLog.of(document)
        if log.size is None or log.length is None:
            return "nothing learned yet"
        shape = "on the clock" if log.clock is not None else "sliding"
        taught = "answers' counts" if log.read_from_counts else "429s' hints"
        return f"{shape} {log.size} a {log.length:.4g} s (from {taught})"
    if kind == "pace":
        pacing = Pacing.of(document)
        length = pacing.backoff.learned
        what = f"{pacing.window} a {length:.4g} s" if length is not None else f"{pacing.window}, length unknown"
        return f"hint-less window {what}"
    return ""


def lesson_lines(lessons: list[Lesson]) -> list[str]:
    """A line per 429 after which what the client had learned differs from what it had at the 429 before: when
    its request left (seconds from the run's start, on the client's clock), the key, its hint, and each reading
    that changed since (answers in between change readings too: a late one of a closed window grows its size)."""
    lines, before = [], {}
    for lesson in lessons:
        now = {name: described(name.partition("/")[0], document) for name, document in lesson.learned.items()}
        changed = [
            f"{name.partition('/')[2]}: {what}" for name, what in sorted(now.items()) if before.get(name) != what
        ]
        before = now
        if changed:
            hint = "no hint" if lesson.hint is None else f"hint {lesson.hint:.3f} s"
            lines.append(f"{lesson.sent:9.3f} s  key {lesson.key}  {hint}:  " + "; ".join(changed))
    return lines or ["no 429 changed what was learned"]


def report(shape: Shape, measured: Measured, arrivals: list[Arrival]) -> str:
    share_met, waste_met = targets(measured)
    used, unit = (measured.answers, "") if measured.spent is None else (measured.spent, " tokens")
    return "\n".join(
        [
            shape.label(),
            f"share {measured.share:.3f} ({used:g} of {measured.capacity:g}{unit}; target met: {share_met}), "
            f"429s per answer {measured.waste:.3f} (floor {measured.floor:.3f}; target met: {waste_met})",
            *windows(shape, arrivals),
        ]
    )


def main(argv: list[str]) -> int:
    shape, show_learned, show_lessons = _parsed(argv)
    arrivals: list[Arrival] = []
    learned: dict[str, Document] = {}
    lessons: list[Lesson] | None = [] if show_lessons else None
    print(report(shape, run(shape, arrivals, learned, lessons), arrivals))
    if lessons is not None:
        print("429 by 429 (when each request left, what its 429 changed):", *lesson_lines(lessons), sep="\n  ")
    if show_learned:
        print("learned by the end:", *learned_lines(learned), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
