"""`herald serve` as a user runs it: embedded Valkey plus the gateway, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import herald

HERALD = [sys.executable, "-m", "herald.cli"]


def _start(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
    with open(log, "w") as out:
        proc = subprocess.Popen([*HERALD, *args], env=env, stdout=out, stderr=out, text=True)
    deadline = time.monotonic() + 20
    while True:
        found = re.search(r"dashboard and gateway: (http://\S+)", log.read_text())
        if found:
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
