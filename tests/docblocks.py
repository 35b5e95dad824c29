"""The code blocks of README.md and docs/: which ones the test suite runs, and how.

The rule (docs/development.md, "Code blocks in the docs"):

- Every fenced block whose info string is ``python`` or ``py`` is a program, and every one whose
  info string is ``sh``, ``bash``, ``console`` or ``shell`` is a shell script: the suite runs
  each one alone, against a real server, and it must exit 0 within its time limit.
- A block is skipped only when the line right before its opening fence is the HTML comment
  ``<!-- fragment -->`` (text may follow the word: ``<!-- fragment: needs a TLS cluster -->``).
  The number of fragments per file is listed in ``tests/test_docs_blocks.py``, so a new one is
  a visible change.
- Blocks in any other language (``text``, ``json``, ``toml``, none) are never run.

``python tests/docblocks.py [FILE...]`` lists the blocks of the files (default: README.md and
docs/) with what the suite does with each.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = frozenset({"python", "py", "python3"})
SHELL = frozenset({"sh", "bash", "console", "shell"})
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_FRAGMENT = re.compile(r"^\s*<!--\s*fragment\b.*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str  # the info string's first word, lower case ("" when none)
    code: str  # dedented by the fence's indentation
    fragment: bool

    @property
    def kind(self) -> str:
        """``python``, ``shell`` or ``other``."""
        if self.lang in PYTHON:
            return "python"
        if self.lang in SHELL:
            return "shell"
        return "other"

    @property
    def runs(self) -> bool:
        return self.kind != "other" and not self.fragment

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        start = i
        body: list[str] = []
        i += 1
        close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        fragment = start > 0 and _FRAGMENT.match(lines[start - 1]) is not None
        found.append(Block(path, start + 1, m["info"].lower(), "\n".join(body) + "\n", fragment))
        i += 1
    return found


def fragment_markers(path: Path) -> int:
    """How many ``<!-- fragment -->`` lines the file has (each must sit right before a fence)."""
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if _FRAGMENT.match(line))


def main(argv: list[str]) -> None:
    paths = [Path(a).resolve() for a in argv] or doc_files()
    for path in paths:
        for b in blocks(path):
            action = "run" if b.runs else ("fragment" if b.fragment else "never run")
            print(f"{b.name:40} {b.lang or '-':8} {action}")


if __name__ == "__main__":
    main(sys.argv[1:])
