"""herald.pytest_plugin used as a user would: a test project of its own, outside this
repository, with no conftest, run by pytest in a new process; the plugin comes through the
pytest11 entry point of the installed package. The how-to guide's example module runs there
too."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import herald
from docblocks import ROOT, blocks
from herald.testing import (
    assert_no_message,
    assert_no_message_sync,
    wait_for_message,
    wait_for_message_sync,
)

DOCS = ROOT / "docs"
USER_TESTS = """
import herald
import pytest
from herald.testing import (
    assert_no_message,
    assert_no_message_sync,
    wait_for_message,
    wait_for_message_sync,
)


@pytest.mark.asyncio
async def test_async_client(herald_client, herald_topic):
    async with herald_client.subscribe(herald_topic) as sub:
        await herald_client.publish(herald_topic, {"n": 1})
        await herald_client.publish(herald_topic, {"n": 2})
        msg = await wait_for_message(sub, lambda m: m.data["n"] == 2)
        assert msg.topic == herald_topic
        await assert_no_message(sub, within=0.1)


def test_sync_client(herald_sync_client, herald_topic, herald_url, herald_server):
    assert herald_url == herald_server.url
    with herald_sync_client.subscribe(herald_topic) as sub:
        herald_sync_client.publish(herald_topic, "hi")
        assert wait_for_message_sync(sub).data == "hi"
        with pytest.raises(AssertionError, match="nothing arrived"):
            wait_for_message_sync(sub, timeout=0.1)
        herald_sync_client.publish(herald_topic, "late")
        with pytest.raises(AssertionError, match="unexpected message"):
            assert_no_message_sync(sub, within=2)


def test_topics_are_unique(herald_topic):
    assert herald_topic.startswith("test.")


@pytest.mark.asyncio
async def test_durable_consumer(herald_client, herald_topic):
    await herald_client.declare(herald_topic, durable=True)
    async with herald_client.consume(herald_topic, "g", start="all") as consumer:
        await herald_client.publish(herald_topic, "job")
        msg = await wait_for_message(consumer)
        await msg.ack()
        await assert_no_message(consumer, within=0.1)


def test_cluster_and_sentinel(herald_cluster, herald_sentinel, herald_topic):
    for url in (herald_cluster.url, herald_sentinel.url):
        with herald.Client(url) as hub, hub.subscribe(herald_topic) as sub:
            hub.publish(herald_topic, url)
            assert wait_for_message_sync(sub, timeout=10).data == url
"""


@pytest.mark.timeout(180)
def test_a_user_project_gets_the_fixtures(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    # The how-to guide's example module, as it stands on the page (a fragment there).
    (how_to,) = [b for b in blocks(DOCS / "how-to.md") if "herald_cluster" in b.code]
    (project / "tests" / "test_from_docs.py").write_text(how_to.code)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
        'filterwarnings = ["error"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["HERALD_HOME"] = str(tmp_path / "home")
    env.pop("HERALD_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 passed" in done.stdout, done.stdout


async def test_the_async_helpers(herald_client: herald.AsyncClient, herald_topic: str) -> None:
    async with herald_client.subscribe(herald_topic) as sub:
        for n in range(3):
            await herald_client.publish(herald_topic, n)
        with pytest.raises(AssertionError, match=r"3 other message\(s\) arrived: .*0, .*1, .*2"):
            await wait_for_message(sub, lambda m: m.data == 9, timeout=0.3)
        await assert_no_message(sub, within=0.05)
        await herald_client.publish(herald_topic, 5)
        await assert_no_message(sub, lambda m: m.data == 6, within=0.1)  # 5 is not 6


def test_the_sync_helpers(herald_sync_client: herald.Client, herald_topic: str) -> None:
    with herald_sync_client.subscribe(herald_topic) as sub:
        herald_sync_client.publish(herald_topic, "a")
        assert wait_for_message_sync(sub, lambda m: m.data == "a").data == "a"
        assert_no_message_sync(sub, within=0.05)
