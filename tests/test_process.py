"""Real processes: Ctrl-C, fork() and kill -9 of a process that owns an embedded server."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

EXIT_TIMEOUT = 5.0


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


RESET_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


class Child:
    """A Python child process running ``script``; its stdout lines are read on a thread."""

    def __init__(self, script: str, *args: str, tmp: Path) -> None:
        # The embedded server's temporary directory of a child killed -9 cannot be removed by
        # it: keep it in pytest's tmp_path rather than /tmp.
        # A runner started as a background job ignores SIGINT, and a child inherits that: the
        # child sets Python's own handler back, as a program started from a terminal has it.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RESET_SIGINT + textwrap.dedent(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp)},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = 10.0) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child printed nothing in {timeout}s")
        if line is None:
            self.wait(EXIT_TIMEOUT)
            pytest.fail(f"child exited ({self.proc.returncode}) early:\n{self.stderr}")
        return line

    def wait(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._finish()
            pytest.fail(f"child still running after {timeout}s:\n{self.stderr}")
        self._finish()
        return self.proc.returncode

    def _finish(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.wait()
            self._finish()


Spawn = Callable[..., Child]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    children: list[Child] = []

    def start(script: str, *args: str) -> Child:
        children.append(Child(script, *args, tmp=tmp_path))
        return children[-1]

    yield start
    for child in children:
        child.close()


# -- Ctrl-C ----------------------------------------------------------------------------------

ITERATE = """
    import herald
    with herald.Client() as hub:
        print(hub._async._server.process.pid, flush=True)
        with hub.subscribe("ctrl-c") as sub:
            hub.publish("ctrl-c", "hello")
            print(sub.next(5).data, flush=True)
            for msg in sub:
                pass
"""

HANDLER = """
    import threading, herald
    hub = herald.Client()  # no with: the atexit hook must close it
    print(hub._async._server.process.pid, flush=True)
    got = threading.Event()
    hub.subscribe("ctrl-c", handler=lambda msg: got.set())
    hub.publish("ctrl-c", "hello")
    got.wait(5)
    print("hello", flush=True)
    threading.Event().wait()
"""

PUBLISHING = """
    import herald
    with herald.Client() as hub:
        print(hub._async._server.process.pid, flush=True)
        hub.publish("ctrl-c", "hello", confirm=True)
        print("hello", flush=True)
        i = 0
        while True:
            hub.publish("ctrl-c", i)
            i += 1
"""


@pytest.mark.parametrize(
    "script", [ITERATE, HANDLER, PUBLISHING], ids=["iterating", "handler", "publishing"]
)
def test_ctrl_c_exits_promptly_and_stops_the_embedded_server(spawn: Spawn, script: str) -> None:
    child = spawn(script)
    server_pid = int(child.line())
    assert alive(server_pid)
    assert child.line() == "hello"

    child.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code = child.wait(EXIT_TIMEOUT)
    assert time.monotonic() - started < EXIT_TIMEOUT
    # Python ends an unhandled KeyboardInterrupt by dying of SIGINT, after its traceback.
    assert code == -signal.SIGINT, child.stderr
    assert child.stderr.rstrip().endswith("KeyboardInterrupt"), child.stderr
    assert child.stderr.count("Traceback") == 1, child.stderr
    assert not alive(server_pid), "the embedded valkey-server outlived its client"


# -- fork ------------------------------------------------------------------------------------

FORK = """
    import os, sys, time, herald
    url, topic = sys.argv[1:3]
    hub = herald.Client(url)
    sub = hub.subscribe(topic)
    hub.publish(topic, "before")
    assert sub.next(5).data == "before"

    pid = os.fork()
    if pid == 0:
        problems = []
        calls = {
            "publish": lambda: hub.publish(topic, "child"),
            "confirm": lambda: hub.publish(topic, "child", confirm=True),
            "flush": hub.flush,
            "execute": lambda: hub.execute("PING"),
            "subscribe": lambda: hub.subscribe(topic),
            "next": lambda: sub.next(),
            "iterate": lambda: next(iter(sub)),
        }
        for name, call in calls.items():
            try:
                call()
            except herald.ClientClosed as exc:
                if "fork" not in str(exc):
                    problems.append(f"{name}: {exc}")
            except Exception as exc:
                problems.append(f"{name}: {exc!r}")
            else:
                problems.append(f"{name}: no error")
        sub.close()
        hub.close()
        with herald.Client(url) as fresh, fresh.subscribe(topic) as mine:
            fresh.publish(topic, "from child")
            if mine.next(5).data != "from child":
                problems.append("the child's own client does not work")
        print(problems or "child ok", flush=True)
        sys.exit(1 if problems else 0)  # a normal exit: atexit hooks run in the child too

    hub.publish(topic, "parent")
    got = {sub.next(5).data, sub.next(5).data}
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            print("child hung", flush=True)
            sys.exit(2)
        time.sleep(0.01)
    assert got == {"parent", "from child"}, got
    assert hub.publish(topic, "still", confirm=True).receivers == 1
    assert sub.next(5).data == "still"
    hub.close()
    print("parent ok", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_fork_child_gets_a_clear_error_and_a_new_client_works(
    spawn: Spawn, url: str, topic: str
) -> None:
    child = spawn(FORK, url, topic)
    assert child.line() == "child ok"
    assert child.line() == "parent ok 0"
    assert child.wait(EXIT_TIMEOUT) == 0, child.stderr


# -- kill -9 ---------------------------------------------------------------------------------

SYNC_OWNER = """
    import threading, herald
    hub = herald.Client()
    print(hub._async._server.process.pid, flush=True)
    threading.Event().wait()
"""

ASYNC_OWNER = """
    import asyncio, herald

    async def main():
        async with herald.AsyncClient() as hub:
            print(hub._server.process.pid, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
"""


@pytest.mark.parametrize("script", [SYNC_OWNER, ASYNC_OWNER], ids=["Client", "AsyncClient"])
def test_embedded_server_dies_with_a_killed_owner(spawn: Spawn, script: str) -> None:
    child = spawn(script)
    server_pid = int(child.line())
    assert alive(server_pid)
    child.proc.kill()
    assert child.wait(EXIT_TIMEOUT) == -signal.SIGKILL
    assert wait_dead(server_pid, EXIT_TIMEOUT), "valkey-server survived kill -9 of its owner"
