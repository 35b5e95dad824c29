"""`herald serve` as a user runs it: embedded Valkey plus the gateway, stopped by Ctrl-C."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.sync.client import connect as ws_connect

import herald
from herald.gateway import AuthConfig, AuthError, authenticate
from herald.gateway.serve import DEFAULT_LOOP, LOOPS, gateway_config, loop_factory

HERALD = [sys.executable, "-m", "herald.cli"]


def _start(
    args: list[str], env: dict[str, str], log: Path, **popen: Any
) -> tuple[subprocess.Popen[str], str]:
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*HERALD, *args], env=env, stdout=out, stderr=out, text=True, **popen
        )
    deadline = time.monotonic() + 20
    while True:
        text = log.read_text()
        found = re.search(r"dashboard and gateway: (http://\S+)", text)
        if found and "Ctrl-C to stop" in text:  # the whole banner
            return proc, found.group(1)
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[str], log: Path) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.timeout(90)
def test_serve_runs_valkey_and_the_gateway_until_ctrl_c(tmp_path: Path, topic: str) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path)}
    env.pop("HERALD_URL", None)
    log = tmp_path / "serve.log"
    proc, base = _start(["serve", "--port", "0"], env, log)
    try:
        state = json.loads((tmp_path / "herald.json").read_text())
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        assert "Live tail" in httpx.get(f"{base}/").text
        with herald.Client(state["url"]) as hub, hub.subscribe(topic) as sub:
            r = httpx.post(f"{base}/topics/{topic}", json={"via": "http"})
            assert r.json() == {"topic": topic, "receivers": 1}
            assert sub.next(timeout=5).data == {"via": "http"}
    finally:
        _stop(proc, log)
    with pytest.raises(ProcessLookupError):
        os.kill(state["server_pid"], 0)
    assert not (tmp_path / "herald.json").exists()


@pytest.mark.timeout(60)
def test_serve_with_url_runs_the_gateway_alone(url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc, base = _start(["serve", "--url", url, "--port", "0"], dict(os.environ), log)
    try:
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        _stop(proc, log)


@pytest.mark.timeout(90)
def test_serve_on_uvloop_publishes_to_a_websocket_and_stops_on_ctrl_c(
    tmp_path: Path, topic: str
) -> None:
    assert importlib.util.find_spec("uvloop") is not None  # in the test lock: no skipping
    env = {**os.environ, "HERALD_HOME": str(tmp_path), "HERALD_GATEWAY_LOOP": "asyncio"}
    env.pop("HERALD_URL", None)
    log = tmp_path / "serve.log"
    # Started as a background job is, with SIGINT ignored; the flag wins over the variable.
    proc, base = _start(
        ["serve", "--port", "0", "--loop", "uvloop"],
        env,
        log,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert "event loop: uvloop" in log.read_text()
        ws_url = base.replace("http://", "ws://") + "/ws"
        with ws_connect(ws_url, open_timeout=10) as ws:
            ws.send(json.dumps({"op": "subscribe", "topics": [topic], "id": 1}))
            assert json.loads(ws.recv(10))["type"] == "subscribed"
            r = httpx.post(f"{base}/topics/{topic}", json={"via": "http"})
            assert r.json() == {"topic": topic, "receivers": 1}
            got = json.loads(ws.recv(10))
            assert (got["type"], got["topic"], got["data"]) == ("message", topic, {"via": "http"})
    finally:
        _stop(proc, log)
    assert not (tmp_path / "herald.json").exists()


def test_the_event_loop_is_uvloop_when_installed_and_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvloop

    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None  # asyncio.run's own
    with pytest.raises(ValueError, match="unknown event loop"):
        loop_factory("trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert loop_factory("auto") is None
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_the_cli_offers_the_loops_serve_knows_with_its_default() -> None:
    import click

    from herald.cli import serve

    (option,) = [p for p in serve.params if p.name == "loop"]
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == LOOPS  # the CLI spells them out: it imports lazily
    assert option.default == DEFAULT_LOOP


@pytest.mark.timeout(60)
def test_serve_loop_uvloop_without_uvloop_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    hide = tmp_path / "hide"
    (hide / "uvloop").mkdir(parents=True)
    (hide / "uvloop" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "HERALD_HOME": str(tmp_path / "home"), "PYTHONPATH": str(hide)}
    out = _run_serve(["--port", "0", "--loop", "uvloop"], env)
    assert out.returncode == 1, out.stderr
    assert "--loop uvloop: uvloop is not installed" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "home" / "herald.json").exists()


def _run_serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERALD, "serve", *args], env=env, capture_output=True, text=True)


@pytest.mark.timeout(60)
def test_serve_refuses_a_network_address_without_auth(tmp_path: Path) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path)}
    out = _run_serve(["--host", "0.0.0.0", "--port", "0"], env)
    assert out.returncode == 1
    assert "refusing to serve the gateway on 0.0.0.0 without auth" in out.stderr
    # --insecure is the explicit choice, and the banner says where it really listens.
    log = tmp_path / "serve.log"
    proc, _ = _start(["serve", "--host", "0.0.0.0", "--port", "0", "--insecure"], env, log)
    try:
        text = log.read_text()
        assert re.search(r"http://0\.0\.0\.0:\d+ \(all interfaces\)", text), text
        assert "127.0.0.1" not in text.split("dashboard and gateway:")[1].splitlines()[0]
        assert "--insecure" in text
    finally:
        _stop(proc, log)


def _token(key: bytes, grants: dict[str, Any], kid: str | None = None) -> str:
    claims = {"sub": "t", "aud": "herald", "iss": "me", "exp": int(time.time()) + 60}
    return jwt.encode(
        {**claims, "herald": grants}, key, algorithm="HS256", headers={"kid": kid} if kid else None
    )


@pytest.mark.timeout(90)
def test_serve_turns_auth_on_from_a_config_file(tmp_path: Path, topic: str) -> None:
    key = os.urandom(32).hex().encode()
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(key + b"\n")
    key_file.chmod(0o600)
    config = tmp_path / "herald.toml"
    config.write_text(
        f'[serve]\nauth-key-file = "{key_file}"\nauth-issuer = "me"\nhost = "0.0.0.0"\n'
        'allowed-host = ["herald.example"]\n'
    )
    env = {**os.environ, "HERALD_HOME": str(tmp_path / "home")}
    log = tmp_path / "serve.log"
    proc, base = _start(["serve", "--config", str(config), "--port", "0"], env, log)
    try:
        assert "auth: JWT (HS256, iss 'me', aud 'herald')" in log.read_text()
        local = base.replace("0.0.0.0", "127.0.0.1")
        assert httpx.post(f"{local}/topics/{topic}", json=1).status_code == 401
        bearer = {"authorization": "Bearer " + _token(key, {"publish": [topic]})}
        assert httpx.post(f"{local}/topics/{topic}", json=1, headers=bearer).status_code == 200
        named = {**bearer, "host": "herald.example"}
        assert httpx.post(f"{local}/topics/{topic}", json=1, headers=named).status_code == 200
        assert httpx.get(f"{local}/stats", headers={"host": "evil.example"}).status_code == 421
    finally:
        _stop(proc, log)


def test_serve_refuses_weak_or_exposed_keys(tmp_path: Path) -> None:
    env = {**os.environ, "HERALD_HOME": str(tmp_path)}
    short = tmp_path / "short.key"
    short.write_text("secret")
    short.chmod(0o600)
    out = _run_serve(["--auth-key-file", str(short), "--auth-issuer", "me", "--port", "0"], env)
    assert out.returncode == 1
    assert "at least 32 bytes" in out.stderr
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    empty.chmod(0o600)
    out = _run_serve(["--auth-key-file", str(empty), "--auth-issuer", "me", "--port", "0"], env)
    assert out.returncode == 1
    assert "at least 32 bytes" in out.stderr
    exposed = tmp_path / "exposed.key"
    exposed.write_text("k" * 64)
    exposed.chmod(0o644)
    out = _run_serve(["--auth-key-file", str(exposed), "--auth-issuer", "me", "--port", "0"], env)
    assert out.returncode == 1
    assert "readable by other users" in out.stderr
    out = _run_serve(["--auth-key-file", str(short), "--port", "0"], env)
    assert "--auth-issuer" in out.stderr


def test_auth_config_refuses_short_hmac_keys() -> None:
    for key in ("", "secret", b"x" * 31):
        with pytest.raises(ValueError, match="at least 32 bytes"):
            AuthConfig(key=key, audience="herald", issuer="me")
    with pytest.raises(ValueError, match="at least 64 bytes"):
        AuthConfig(key="k" * 32, audience="herald", issuer="me", algorithms=("HS512",))
    AuthConfig(key="k" * 32, audience="herald", issuer="me")
    if importlib.util.find_spec("cryptography") is None:
        # Public-key algorithms need it: refused at start, not at each token.
        with pytest.raises(ValueError, match="cryptography"):
            AuthConfig(
                key="-----BEGIN PUBLIC KEY-----", audience="a", issuer="i", algorithms=("RS256",)
            )


def test_a_jwks_picks_the_key_by_kid(tmp_path: Path) -> None:
    keys = {kid: os.urandom(32) for kid in ("one", "two")}
    jwks = {
        "keys": [
            {"kty": "oct", "kid": kid, "alg": "HS256", "k": jwt.utils.base64url_encode(k).decode()}
            for kid, k in keys.items()
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    path.chmod(0o600)
    config = gateway_config(host="127.0.0.1", auth_jwks_file=path, auth_issuer="me")
    assert config.auth is not None
    for kid, key in keys.items():
        principal = authenticate(_token(key, {"publish": ["a"]}, kid), config.auth)
        assert principal.may("publish", "a")
    with pytest.raises(AuthError):
        authenticate(_token(keys["one"], {}, "two"), config.auth)
    with pytest.raises(AuthError):
        authenticate(_token(keys["one"], {}, "three"), config.auth)
