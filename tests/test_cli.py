"""The herald command line, run as a user runs it: real processes, real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import herald

HERALD = [sys.executable, "-m", "herald.cli"]


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HERALD, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_help_lists_the_commands() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for command in ("serve", "pub", "sub", "faults"):
        assert command in out.stdout


def test_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path)}
    env.pop("HERALD_URL", None)
    out = _run("pub", "demo", "hello", env=env)
    assert out.returncode == 1
    assert "herald serve" in out.stderr


def test_bad_header_is_a_usage_error(url: str) -> None:
    out = _run("pub", "demo", "x", "--header", "novalue", "--url", url)
    assert out.returncode == 2
    assert "KEY=VALUE" in out.stderr


def test_sub_json_receives_what_pub_sends(url: str, topic: str) -> None:
    sub = subprocess.Popen(
        [*HERALD, "sub", f"{topic}.*", "--json", "--count", "3", "--timeout", "15", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the subscriber is registered on the server before publishing.
        with herald.Client(url) as hub:
            deadline = time.monotonic() + 10
            while hub.execute("PUBSUB", "NUMPAT") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert _run("pub", f"{topic}.a", "hello", "-H", "k=v", "--url", url).returncode == 0
        assert _run("pub", f"{topic}.b", '{"n": 1}', "--json", "--url", url).returncode == 0
        assert _run("pub", f"{topic}.c", "x", "--count", "1", "--url", url).returncode == 0
        out, err = sub.communicate(timeout=15)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["data"] for r in records] == ["hello", {"n": 1}, "x"]
    assert records[0]["headers"] == {"k": "v"}
    assert records[0]["topic"] == f"{topic}.a"
    assert records[0]["pattern"] == f"{topic}.*"
    assert all(r["id"] for r in records)


def test_sub_timeout_before_count_exits_1(url: str, topic: str) -> None:
    out = _run("sub", topic, "--count", "1", "--timeout", "0.5", "--url", url)
    assert out.returncode == 1


def test_serve_is_found_by_other_commands_and_keeps_data(tmp_path: Path, topic: str) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path), "HERALD_GATEWAY_PORT": "0"}
    env.pop("HERALD_URL", None)

    def start() -> subprocess.Popen[str]:
        with open(tmp_path / "serve.log", "a") as log:
            proc = subprocess.Popen([*HERALD, "serve"], env=env, stdout=log, stderr=log, text=True)
        deadline = time.monotonic() + 15
        while not (tmp_path / "herald.json").exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "herald serve did not start"
            time.sleep(0.05)
        return proc

    def stop(proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(15) == 0
        finally:  # a failed stop leaves no process behind to fail a later test
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not (tmp_path / "herald.json").exists()

    proc = start()
    try:
        state = json.loads((tmp_path / "herald.json").read_text())
        # A second serve on the same data directory refuses to start.
        second = _run("serve", env=env)
        assert second.returncode == 1
        assert "already running" in second.stderr
        # pub finds the server without --url.
        out = _run("pub", topic, "hi", "--confirm", env=env)
        assert out.returncode == 0, out.stderr
        with herald.Client(state["url"]) as hub:
            hub.execute("SET", f"{topic}:kept", "yes")
            time.sleep(1.2)  # appendfsync everysec
    finally:
        stop(proc)
    # The embedded server is gone with it ...
    with pytest.raises(ProcessLookupError):
        os.kill(state["server_pid"], 0)
    # ... and its data survives a restart.
    proc = start()
    try:
        url = json.loads((tmp_path / "herald.json").read_text())["url"]
        with herald.Client(url) as hub:
            assert hub.execute("GET", f"{topic}:kept") == b"yes"
    finally:
        stop(proc)


@pytest.mark.parametrize("gateway", [True, False], ids=["gateway", "no-gateway"])
def test_serve_stops_on_a_signal_that_comes_while_it_starts(tmp_path: Path, gateway: bool) -> None:
    # Started as a background job is: with SIGINT ignored. A Ctrl-C that lands between the
    # discovery file and the gateway's own handlers must still stop it.
    env = {**os.environ, "HERALD_HOME": str(tmp_path), "HERALD_GATEWAY_PORT": "0"}
    env.pop("HERALD_URL", None)
    args = [*HERALD, "serve", *([] if gateway else ["--no-gateway"])]
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "herald.json").exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "herald serve did not start"
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, (tmp_path / "serve.log").read_text()
        assert not (tmp_path / "herald.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _sub(url: str, topic: str, *args: str) -> subprocess.Popen[str]:
    """``herald sub`` on its own process, output captured."""
    return subprocess.Popen(
        [*HERALD, "sub", topic, *args, "--timeout", "15", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until_subscribed(hub: herald.Client, topic: str) -> None:
    deadline = time.monotonic() + 10
    while hub.execute("PUBSUB", "NUMSUB", topic)[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_sub_json_tells_bytes_from_a_base64_looking_json_value(url: str, topic: str) -> None:
    sub = _sub(url, topic, "--json", "--count", "2")
    try:
        with herald.Client(url) as hub:
            _until_subscribed(hub, topic)
            hub.publish(topic, b"\xff\x00")  # binary, not UTF-8
            hub.publish(topic, {"base64": "/wA="})  # a JSON value that looks like the old output
        out, err = sub.communicate(timeout=15)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert (first.get("data"), first["data_b64"]) == (None, "/wA=")
    assert (second["data"], second.get("data_b64")) == ({"base64": "/wA="}, None)


def test_pub_json_refuses_nan(url: str) -> None:
    out = _run("pub", "demo", "NaN", "--json", "--url", url)
    assert out.returncode == 2
    assert "NaN is not JSON" in out.stderr


def test_sub_foreign_json_decodes_a_plain_publisher(url: str, topic: str) -> None:
    sub = _sub(url, topic, "--json", "--foreign", "json", "--count", "1")
    try:
        with herald.Client(url) as hub:
            _until_subscribed(hub, topic)
            hub.execute("PUBLISH", topic, '{"user":"bob"}')  # as redis-cli would
        out, err = sub.communicate(timeout=15)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    assert json.loads(out)["data"] == {"user": "bob"}


def test_serve_fsync_always(tmp_path: Path) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path)}
    env.pop("HERALD_URL", None)
    with open(tmp_path / "serve.log", "a") as log:
        proc = subprocess.Popen(
            [*HERALD, "serve", "--no-gateway", "--fsync", "always"],
            env=env,
            stdout=log,
            stderr=log,
            text=True,
        )
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "herald.json").exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "herald serve did not start"
            time.sleep(0.05)
        url = json.loads((tmp_path / "herald.json").read_text())["url"]
        with herald.Client(url) as hub:
            assert hub.execute("CONFIG", "GET", "appendfsync")[1] == b"always"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    assert "fsync every write" in (tmp_path / "serve.log").read_text()


def test_serve_url_refuses_the_embedded_servers_options(tmp_path: Path) -> None:
    # --fsync always with --url would otherwise be believed and silently not applied.
    out = _run("serve", "--url", "redis://127.0.0.1:1", "--fsync", "always", "--port", "0")
    assert out.returncode == 1
    assert "--fsync apply to the embedded server" in out.stderr


def test_serve_config_takes_a_single_value_for_a_repeatable_option(tmp_path: Path) -> None:
    from herald.cli import serve

    config = tmp_path / "serve.toml"
    config.write_text('[serve]\nallowed-host = "herald.example.com"\n')
    ctx = serve.make_context("serve", ["--config", str(config)])
    assert ctx.params["allowed_hosts"] == ("herald.example.com",)
