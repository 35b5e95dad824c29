"""The rule for the docs' code blocks (tests/docblocks.py), checked without a server.

tests/test_docs_examples.py runs the blocks; this module keeps the fragments honest: each
marker sits right before a fence, and the number of fragments per file is the one listed here,
so a new fragment is a visible change of this table (and a reviewer's question: why can this
one not run?).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from docblocks import ROOT, blocks, doc_files, fragment_markers

# file (relative to the repository) -> its blocks marked <!-- fragment -->
FRAGMENTS = {
    "README.md": 4,  # make serve/test, curl and herald sub against `herald serve`, pip install
    "docs/architecture.md": 1,  # lint-imports: the development environment's tool
    "docs/deployment.md": 3,  # installing as root, systemctl, a gateway for another host
    "docs/development.md": 2,  # make targets
    "docs/getting-started.md": 3,  # pip install, herald serve, the compiled core's build
    "docs/durable.md": 1,  # the ordering lines (the work queue before it is the program)
    "docs/gateway.md": 3,  # herald serve, uvicorn.run, AuthConfig's fields
    "docs/guarantees.md": 1,  # herald faults run: minutes
    "docs/how-to.md": 1,  # a pytest module: tests/test_pytest_plugin.py runs it with pytest
    "docs/routing.md": 1,  # herald route runs until stopped
    "docs/security.md": 2,  # herald serve with auth: runs until stopped
    "docs/scaling.md": 6,  # Sentinel and TLS cluster hosts, the harness's calls, certificates,
    # the two ways to publish plainly on a cluster, shards on three servers
    "docs/tracing.md": 3,  # pip install, a few lines of a subscriber, opentelemetry-instrument
}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_fragments_are_the_listed_ones() -> None:
    found = {_rel(p): n for p in doc_files() if (n := sum(b.fragment for b in blocks(p)))}
    assert found == FRAGMENTS


@pytest.mark.parametrize("path", doc_files(), ids=_rel)
def test_every_marker_is_right_before_a_fence(path: Path) -> None:
    assert fragment_markers(path) == sum(b.fragment for b in blocks(path))


@pytest.mark.parametrize("path", doc_files(), ids=_rel)
def test_every_python_block_that_runs_compiles(path: Path) -> None:
    for b in blocks(path):
        if b.runs and b.kind == "python":
            compile(b.code, b.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_parser(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n<!-- fragment: why -->\n```sh\nherald sub x\n```\n"
        "- item\n  ```py\n  if True:\n      pass\n  ```\n````text\n```python\n````\n"
        "<!--fragment-->\n~~~bash\nexit 1\n~~~\n",
        encoding="utf-8",
    )
    found = [(b.line, b.kind, b.fragment, b.runs, b.code) for b in blocks(page)]
    assert found == [
        (3, "python", False, True, "print(1)\n"),
        (8, "shell", True, False, "herald sub x\n"),
        (12, "python", False, True, "if True:\n    pass\n"),
        (16, "other", False, False, "```python\n"),
        (20, "shell", True, False, "exit 1\n"),
    ]
    assert fragment_markers(page) == 2
