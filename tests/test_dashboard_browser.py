"""The dashboard in headless Chromium: a message published from Python shows in the live tail.

Needs Debian's Chromium at /usr/bin/chromium (``scripts/ensure-browser.sh`` installs it; ``make
test`` runs that first). The screenshot is saved as ``tests/artifacts/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import herald
from herald.gateway.serve import BackgroundGateway

CHROMIUM = os.environ.get("HERALD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-browser.sh", pytrace=False)
    pytest.skip(
        f"no Chromium at {CHROMIUM}: run scripts/ensure-browser.sh", allow_module_level=True
    )

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

# As root and on a closed network: no sandbox, and none of Chromium's own network traffic.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def gateway(url: str) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(url) as gw:
        yield gw


@pytest.mark.timeout(120)
def test_live_tail_shows_a_message_published_from_python(
    gateway: BackgroundGateway, url: str, topic: str, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The dashboard works under its own Content-Security-Policy: no violation reported.
            page.on(
                "console",
                lambda msg: (
                    errors.append(msg.text) if "Content Security Policy" in msg.text else None
                ),
            )
            page.goto(gateway.url + "/")
            page.fill("#tail-topic", f"{topic}.*")
            page.click("#tail-start")
            # Selectors, not wait_for_function: the page's CSP forbids evaluating strings.
            page.wait_for_selector("#tail-state:text-matches('^following')", timeout=10_000)
            with herald.Client(url) as hub:
                for i in range(3):
                    hub.publish(f"{topic}.prices", {"seq": i, "price": 100 + i})
                hub.flush()
            page.wait_for_selector("#tail-list li.tail-msg >> nth=2", timeout=10_000)
            items = page.locator("#tail-list li.tail-msg").all_inner_texts()
            assert len(items) == 3
            assert '"price":102' in items[0]  # newest first
            assert all(f"{topic}.prices" in item for item in items)

            # The publish form goes through POST /topics/{topic} and comes back in the tail.
            page.fill("#pub-topic", f"{topic}.form")
            page.fill("#pub-body", '{"from": "form"}')
            page.click("#pub-send")
            page.wait_for_selector("#tail-list li.tail-msg >> nth=3", timeout=10_000)
            assert '"from":"form"' in page.locator("#tail-list li.tail-msg").first.inner_text()
            # The counters and the topic table update live.
            page.wait_for_selector(f"#topics :text('{topic}.prices')", timeout=10_000)
            page.wait_for_selector(".card[data-key=published] b:text('1')", timeout=10_000)
            time.sleep(1.2)  # one more chart refresh with the messages in it
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    stats = httpx.get(gateway.url + "/stats").json()
    assert stats["gateway"]["published"] == 1
    assert shutil.os.path.getsize(ARTIFACTS / "dashboard.png") > 10_000  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_the_dashboard_cannot_be_framed(gateway: BackgroundGateway) -> None:
    """A page of another origin framed the dashboard (clickjacking the replay buttons)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.set_content(f'<iframe id="dash" src="{gateway.url}/"></iframe>')
            deadline = time.monotonic() + 10
            while not any("frame-ancestors" in m for m in console):
                assert time.monotonic() < deadline, console
                page.wait_for_timeout(100)
            framed = [f for f in page.frames if f != page.main_frame]
            assert all(f.query_selector("#tail-topic") is None for f in framed)
        finally:
            browser.close()
