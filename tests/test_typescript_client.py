"""The TypeScript client (clients/typescript) against a real gateway on a real Valkey.

npm installs its one development dependency (TypeScript) from the lock; tsc builds dist/ and
checks test/types.check.ts against the declarations; Node's built-in test runner runs
test/*.test.mjs against gateways started here (two open, one with JWT auth). A second test loads
the built modules in headless Chromium. Skipped only when node or npm (or, for the second,
Chromium) is not installed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import herald
from herald import EmbeddedServer
from herald.gateway import AuthConfig, GatewayConfig
from herald.gateway.serve import BackgroundGateway

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "typescript"
KEY = "ts" * 32
AUDIENCE, ISSUER = "herald", "tests"
#: The number of tests in clients/typescript/test: a test that silently stopped running fails here.
EXPECTED_TESTS = 15

NODE, NPM = shutil.which("node"), shutil.which("npm")
pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed for the TypeScript client"
)


def _run(*cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=CLIENT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def built() -> Path:
    """The client installed from its lock and compiled to dist/."""
    assert NPM is not None
    install = _run(
        NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", timeout=300
    )
    assert install.returncode == 0, install.stdout + install.stderr
    for script in ("build", "typecheck"):  # dist/, then the README's usage against the types
        done = _run(NPM, "run", "--silent", script, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    return CLIENT / "dist"


@pytest.fixture
def topics(server: EmbeddedServer) -> dict[str, str]:
    """The test's topics, the recoverable ones declared before any gateway starts: a running
    gateway learns a new policy only at its next refresh (up to a second later)."""
    prefix = f"ts{uuid.uuid4().hex[:10]}"
    names = {
        "HERALD_TOPIC_PREFIX": prefix,
        "HERALD_RECOVERABLE_TOPICS": ",".join(f"{prefix}.rec.{i}" for i in range(4)),
        "HERALD_SHORT_HISTORY_TOPIC": f"{prefix}.short",
        # under the test token's grants (two: resumed together after a reconnect)
        "HERALD_AUTH_RECOVERABLE_TOPIC": f"{prefix}.auth.rec",
        "HERALD_AUTH_RECOVERABLE_TOPIC_2": f"{prefix}.auth.rec2",
    }

    async def declare() -> None:
        async with herald.AsyncClient(server.url) as hub:
            for name in names["HERALD_RECOVERABLE_TOPICS"].split(","):
                await hub.declare(name, history=1000)
            await hub.declare(names["HERALD_SHORT_HISTORY_TOPIC"], history=3)
            await hub.declare(names["HERALD_AUTH_RECOVERABLE_TOPIC"], history=100)
            await hub.declare(names["HERALD_AUTH_RECOVERABLE_TOPIC_2"], history=100)

    asyncio.run(declare())
    return names


@pytest.fixture
def gateways(server: EmbeddedServer, topics: dict[str, str]) -> Iterator[dict[str, str]]:
    """Two open gateways (a client moves from one to the other) and one with auth."""
    auth = AuthConfig(key=KEY, audience=AUDIENCE, issuer=ISSUER, leeway=0)
    with (
        BackgroundGateway(server.url) as open_gw,
        BackgroundGateway(server.url) as other_gw,
        BackgroundGateway(server.url, GatewayConfig(auth=auth)) as auth_gw,
    ):
        yield {
            "HERALD_GATEWAY_URL": open_gw.url,
            "HERALD_OTHER_GATEWAY_URL": other_gw.url,
            "HERALD_AUTH_GATEWAY_URL": auth_gw.url,
        }


def _node_flags() -> list[str]:
    # WebSocket is a global from Node 22; Node 20 and 21 have it behind a flag.
    assert NODE is not None
    major = int(_run(NODE, "-p", "process.versions.node.split('.')[0]", timeout=30).stdout)
    return ["--experimental-websocket"] if major < 22 else []


def test_typescript_client(built: Path, topics: dict[str, str], gateways: dict[str, str]) -> None:
    env = os.environ | topics | gateways
    env |= {
        "HERALD_JWT_KEY": KEY,
        "HERALD_JWT_AUDIENCE": AUDIENCE,
        "HERALD_JWT_ISSUER": ISSUER,
        "NODE_OPTIONS": "",
    }
    assert NODE is not None
    tests = sorted(str(p.relative_to(CLIENT)) for p in (CLIENT / "test").glob("*.test.mjs"))
    cmd = [NODE, *_node_flags(), "--test", "--test-reporter=tap", "--test-timeout=20000", *tests]
    try:
        result = subprocess.run(
            cmd, cwd=CLIENT, env=env, capture_output=True, text=True, timeout=50, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = "".join(
            v.decode() if isinstance(v, bytes) else v or "" for v in (exc.stdout, exc.stderr)
        )
        pytest.fail(f"node --test ran over 50 s:\n{out}")
    report = result.stdout + result.stderr
    counts = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail) (\d+)$", report, re.M)}
    assert result.returncode == 0, report
    assert counts.get("fail") == 0, report
    assert counts.get("tests", 0) > 0, report
    assert counts.get("pass") == EXPECTED_TESTS == counts["tests"], report


PAGE = """<!doctype html>
<script type="module">
import { HeraldClient, ReservedNameError } from "./index.js";
const topic = new URLSearchParams(location.search).get("topic");
try {
  const client = new HeraldClient({ url: location.origin });
  await client.connect();
  const got = [];
  await client.subscribe(`${topic}.*`, (msg) => got.push(msg));
  const ack = await client.publish(`${topic}.ws`, { n: 1 });
  await client.http.publish(`${topic}.http`, new Uint8Array([255, 0]));
  await client.publish(`${topic}.text`, "hi");
  let refused = null;
  try {
    await client.publish("_herald.inbox.x", 1);
  } catch (err) {
    refused = err instanceof ReservedNameError ? err.code : String(err);
  }
  while (got.length < 3) await new Promise((r) => setTimeout(r, 20));
  const data = got.map((m) => (m.data instanceof Uint8Array ? Array.from(m.data) : m.data));
  const kinds = got.map((m) => m.kind);
  window.result = { receivers: ack.receivers, data, kinds, refused };
  client.close();
} catch (err) {
  window.result = { error: String(err) };
}
</script>
"""


@pytest.mark.timeout(120)
def test_typescript_client_in_chromium(built: Path, server: EmbeddedServer) -> None:
    """The built client as a browser loads it: ES modules, the browser's WebSocket and fetch."""
    chromium = os.environ.get("HERALD_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}: run scripts/ensure-browser.sh")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    # The page is a response Playwright makes up, which Chromium places in no address space:
    # its Local Network Access checks would block its WebSocket to 127.0.0.1.
    args += ["--disable-features=LocalNetworkAccessChecks"]
    topic = f"ts{uuid.uuid4().hex[:10]}"
    with BackgroundGateway(server.url) as gw, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page()

            # The page and the modules are served at the gateway's origin, as an app served
            # next to it would be: same origin, so the gateway's origin check lets it in.
            def serve(route: Any) -> None:
                name = route.request.url.split("/ts/", 1)[1].split("?", 1)[0]
                if name == "index.html":
                    route.fulfill(body=PAGE, content_type="text/html")
                else:
                    body = (built / name).read_text()
                    route.fulfill(body=body, content_type="text/javascript")

            page.route(f"{gw.url}/ts/**", serve)
            page.goto(f"{gw.url}/ts/index.html?topic={topic}")
            page.wait_for_function("() => window.result !== undefined", timeout=15_000)
            result = page.evaluate("() => window.result")
        finally:
            browser.close()
    assert result == {
        "receivers": 1,
        "data": [{"n": 1}, [255, 0], "hi"],
        "kinds": ["json", "bytes", "text"],
        "refused": "reserved_topic",
    }
