"""A typed client generated from the gateway's OpenAPI document: ``openapi-typescript`` (npm,
pinned in tests/node/openapi/package-lock.json) turns the live ``/openapi.json`` into
TypeScript types, ``tsc --noEmit`` type-checks a small program written against them
(tests/node/openapi/check.ts) and refuses one that misuses them (misuse.ts), then node runs the
program against the same gateway: what the gateway answers has the shapes the types promise."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import herald
from herald import EmbeddedServer
from herald.gateway.serve import BackgroundGateway

TOOLS = Path(__file__).parent / "node" / "openapi"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed to generate the TypeScript client"
)


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned npm tools, installed from the lock into a directory of the test's own."""
    work = tmp_path_factory.mktemp("openapi-ts")
    for name in ("package.json", "package-lock.json", ".npmrc", "tsconfig.json"):
        shutil.copy(TOOLS / name, work / name)
    assert NPM is not None
    out = _run([NPM, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], work)
    assert out.returncode == 0, out.stderr[-2000:]
    return work


@pytest.fixture(scope="module")
def gateway(server: EmbeddedServer) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(server.url) as gw:
        yield gw


def test_generated_types_check_and_match_the_gateways_answers(
    tools: Path, gateway: BackgroundGateway, url: str, topic: str
) -> None:
    import asyncio

    async def declare() -> None:
        async with herald.AsyncClient(url) as hub:
            await hub.declare(f"{topic}.rec", history=10)
            await hub.declare(f"{topic}.dur", durable=True)

    asyncio.run(declare())
    (tools / "openapi.json").write_text(httpx.get(f"{gateway.url}/openapi.json").text)
    bin_dir = tools / "node_modules" / ".bin"
    out = _run([str(bin_dir / "openapi-typescript"), "openapi.json", "-o", "api.ts"], tools)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("check.ts", "misuse.ts"):
        shutil.copy(TOOLS / name, tools / name)
    (tools / "target.ts").write_text(
        "".join(
            f"export const {k} = {json.dumps(v)};\n"
            for k, v in {
                "BASE": gateway.url,
                "RECOVERABLE": f"{topic}.rec",
                "DURABLE": f"{topic}.dur",
                "LIVE": f"{topic}.live",
            }.items()
        )
    )
    tsc = str(bin_dir / "tsc")
    out = _run([tsc, "--noEmit", "-p", "."], tools)
    assert out.returncode == 0, out.stdout + out.stderr
    # The types are precise: a program that misuses them does not compile.
    misuse = _run([tsc, "--noEmit", "--strict", "--skipLibCheck", "misuse.ts"], tools)
    assert misuse.returncode != 0
    assert "toUpperCase" in misuse.stdout, misuse.stdout
    assert '"queue"' in misuse.stdout, misuse.stdout
    # Then the program runs against the real gateway.
    out = _run([tsc, "-p", "."], tools)
    assert out.returncode == 0, out.stdout + out.stderr
    assert NODE is not None
    out = _run([NODE, "out/check.js"], tools, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "ok"
