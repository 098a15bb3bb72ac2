"""The README stays a short front page, keeps the test command CI runs, and every relative link in the docs lands.

Links are checked as GitHub renders them: a relative path must name a file of the checkout, and a `#anchor` must
be the slug of a heading in that file (lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` for repeats).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
MAX_README_BYTES = 12 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, …


def _prose(text: str) -> str:
    """The text without fenced code blocks, whose brackets are code, not links."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: its rendered words lower-cased, punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its words
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "").replace("~", "")
    text = re.sub(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", "", text)  # _emphasis_, not snake_case
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    return [match.group(2) for match in _HEADING.finditer(_prose(path.read_text(encoding="utf-8")))]


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the file's headings, repeats numbered as it numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(path):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[str]:
    """The targets of the file's inline links and images, outside code."""
    text = _CODE_SPAN.sub("", _prose(path.read_text(encoding="utf-8")))
    for match in _LINK.finditer(text):
        yield match.group(1)


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if _EXTERNAL.match(target):
            continue
        where, _, anchor = target.partition("#")
        file = (path.parent / where).resolve() if where else path
        if not file.exists():
            problems.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(ROOT)}")
    return problems


def test_the_readme_is_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {MAX_README_BYTES})"


def test_the_readme_keeps_the_test_command_ci_runs() -> None:
    lines = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert "python -m pytest -q" in lines, "CI (.ci/run) runs the README's test command: keep the line"
    assert 'python -m pytest -q -m "not slow"' in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands_on_a_file_and_heading(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_headings_are_whole(path: Path) -> None:
    """No heading with an unclosed quote, code span or bracket (as the old `## OpenAI-compatible gateway" section)`)."""
    for heading in headings(path):
        assert heading.count('"') % 2 == 0, heading
        assert heading.count("`") % 2 == 0, heading
        assert heading.count("(") == heading.count(")"), heading
        assert heading.count("[") == heading.count("]"), heading


def test_the_slugs_follow_githubs_rules() -> None:
    assert slug("Why `google-genai`") == "why-google-genai"
    assert slug("What agents send, and what happens to it") == "what-agents-send-and-what-happens-to-it"
    assert slug("On every shape: the virtual-time harness") == "on-every-shape-the-virtual-time-harness"
    assert slug("A key's own page") == "a-keys-own-page"
    assert slug("Theme, phones, offline") == "theme-phones-offline"
    assert slug("11. Quota on every shape — `bench/bench_shapes.py`") == "11-quota-on-every-shape--benchbench_shapespy"
