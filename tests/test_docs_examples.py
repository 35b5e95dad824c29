"""Every Python and shell block of README.md and docs/ runs, alone, against a real server.

The rule is in tests/docblocks.py and docs/development.md: a block is skipped only when the
line before its fence is ``<!-- fragment -->``. Each block runs in a process of its own with
``HERALD_URL`` set to this module's Valkey, which is emptied before each block, so blocks can
use fixed topic names. A Python block may use ``await`` at the top level (as in
``python -m asyncio``); then it runs in ``asyncio.run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import herald
from docblocks import Block, blocks, doc_files
from herald import EmbeddedServer

TIME_LIMIT = 45.0  # seconds per block

# Runs a block's source: as a module, or, when it awaits at the top level, as a coroutine.
BOOTSTRAP = """
import ast, asyncio, inspect, sys
path = sys.argv[1]
source = open(path, encoding="utf-8").read()
namespace = {"__name__": "__main__", "__file__": path}
try:
    code = compile(source, path, "exec")
except SyntaxError:
    code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
if code.co_flags & inspect.CO_COROUTINE:
    async def main():
        await eval(code, namespace)
    asyncio.run(main())
else:
    exec(code, namespace)
"""

RUNNABLE = [b for path in doc_files() for b in blocks(path) if b.runs]


@pytest.fixture(scope="module")
def docs_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(persist=False) as srv:
        yield srv


def _env(url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HERALD_URL"] = url
    env["HERALD_HOME"] = str(home)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.timeout(TIME_LIMIT + 15)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_block_runs(block: Block, docs_server: EmbeddedServer, tmp_path: Path) -> None:
    with herald.Client(docs_server.url) as hub:
        hub.execute("FLUSHALL")
    if block.kind == "python":
        script = tmp_path / "block.py"
        script.write_text(block.code, encoding="utf-8")
        argv = [sys.executable, "-c", BOOTSTRAP, str(script)]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    try:
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=_env(docs_server.url, tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{block.name} ran past {TIME_LIMIT:.0f} s\n{e.stdout!r}\n{e.stderr!r}")
    output = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"{block.name} exited {done.returncode}\n{output}"
