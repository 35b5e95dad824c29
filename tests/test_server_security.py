"""The embedded server keeps other local users out: password, 0700 data directory, 0600 files,
a discovery file written safely and trusted only when no one else could have written it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import herald
from herald import EmbeddedServer
from herald._core.url import parse_url
from herald._server import discover, new_password, write_state

HERALD = [sys.executable, "-m", "herald.cli"]
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
as_other_user = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to act as another user"
)


def _other_user(*cmd: str) -> subprocess.CompletedProcess[str]:
    assert SETPRIV is not None
    return subprocess.run(
        [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _raw(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(command)
        return s.recv(200)


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            if not full.is_symlink():
                out[str(full.relative_to(root))] = stat.S_IMODE(full.stat().st_mode)
    return out


@pytest.mark.timeout(60)
def test_serve_gives_valkey_a_password_and_keeps_its_files_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "HERALD_HOME": str(home)}
    env.pop("HERALD_URL", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*HERALD, "serve", "--no-gateway", "--unix-socket"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while not (home / "herald.json").exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        state = json.loads((home / "herald.json").read_text())
        tcp = parse_url(state["tcp_url"])
        # No password, no access: not to the data, not to FLUSHALL, SHUTDOWN or CONFIG SET.
        assert _raw(tcp.port, b"KEYS *\r\n").startswith(b"-NOAUTH")
        assert _raw(tcp.port, b"FLUSHALL\r\n").startswith(b"-NOAUTH")
        assert _raw(tcp.port, b"CONFIG SET requirepass x\r\n").startswith(b"-NOAUTH")
        # The password is not on the server's command line (world-readable in /proc).
        cmdline = Path(f"/proc/{state['server_pid']}/cmdline").read_bytes()
        assert tcp.password is not None
        assert tcp.password.encode() not in cmdline
        assert tcp.password not in log.read_text()
        # The discovery file leads the CLI (and Client()) to the server, over the socket.
        assert state["url"].startswith("unix://")
        assert discover(home) == state["url"]
        with herald.Client() as hub:
            hub.execute("SET", "k", "v")
            hub.execute("BGREWRITEAOF")
        time.sleep(1.5)
        # Directory 0700; every file and directory in it the owner's alone.
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        modes = _modes(home)
        assert any(name.startswith("appendonlydir/") for name in modes), modes
        assert all(m & 0o077 == 0 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
        assert stat.S_IMODE((home / "valkey.sock").stat().st_mode) & 0o077 == 0
        if os.geteuid() == 0 and SETPRIV is not None:
            # Another user can read nothing in the data directory, nor use the socket.
            assert _other_user("cat", str(home / "herald.json")).returncode != 0
            sock = str(home / "valkey.sock")
            probe = f"import socket; s=socket.socket(socket.AF_UNIX); s.connect({sock!r})"
            assert _other_user(sys.executable, "-c", probe).returncode != 0
    finally:
        proc.send_signal(2)
        assert proc.wait(15) == 0, log.read_text()


def test_an_existing_data_dir_is_tightened_or_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    (loose / "appendonlydir").mkdir(parents=True)
    os.chmod(loose, 0o755)
    (loose / "appendonlydir" / "a.aof").write_text("")
    os.chmod(loose / "appendonlydir" / "a.aof", 0o644)
    with EmbeddedServer(loose, persist=True):
        pass
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert all(m & 0o077 == 0 for m in _modes(loose).values())

    writable = tmp_path / "writable"
    writable.mkdir()
    os.chmod(writable, 0o777)
    with pytest.raises(herald.ConfigurationError, match="writable by other users"):
        EmbeddedServer(writable).start()
    with pytest.raises(herald.ConfigurationError, match="not trusting"):
        discover(writable)


@as_other_user
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(herald.ConfigurationError, match="belongs to uid"):
        EmbeddedServer(theirs).start()
    # A discovery file someone else could have written is not trusted either.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "herald.json").write_text(json.dumps({"url": "redis://127.0.0.1:1"}))
    os.chown(mine / "herald.json", NOBODY, NOBODY)
    with pytest.raises(herald.ConfigurationError, match="not trusting"):
        discover(mine)


def test_discovery_file_is_written_without_following_planted_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (data / "herald.json.tmp").symlink_to(victim)
    (data / "herald.json").symlink_to(victim)
    state = {"url": f"redis://:{new_password()}@127.0.0.1:1", "pid": 1, "server_pid": 2}
    write_state(data, state)
    assert victim.read_text() == "precious"
    assert not (data / "herald.json").is_symlink()
    assert stat.S_IMODE((data / "herald.json").stat().st_mode) == 0o600
    assert json.loads((data / "herald.json").read_text()) == state
    # A link in place of the discovery file is refused, not followed.
    (data / "herald.json").unlink()
    (data / "herald.json").symlink_to(victim)
    with pytest.raises(herald.ConfigurationError, match="not trusting"):
        discover(data)
