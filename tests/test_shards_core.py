"""The placement of topics over shards, without servers: the function's pinned vectors (and a
JavaScript version written from the docs agreeing with them), its properties, the URL forms."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import herald
from herald import AsyncClient
from herald._core.shards import placement_key, shard_of
from herald._core.url import parse_url, shards_endpoint

VECTORS = Path(__file__).parent / "vectors" / "shards-v1.json"


def test_placement_vectors() -> None:
    """The topic -> shard function is pinned: other clients reproduce these (docs/scaling.md)."""
    cases = json.loads(VECTORS.read_text())
    assert len(cases["cases"]) >= 20
    for case in cases["cases"]:
        assert shard_of(case["shards"], case["topic"]) == case["shard"], case


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_placement_in_another_language() -> None:
    """A JavaScript version written from docs/scaling.md gives the same shards."""
    script = Path(__file__).parent / "node" / "shard_of.mjs"
    out = subprocess.run(
        ["node", str(script), str(VECTORS)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_placement_properties() -> None:
    names = ["a", "b", "c"]
    topics = [f"t.{i}" for i in range(3000)]
    before = {t: shard_of(names, t) for t in topics}
    # balanced: each shard gets about a third
    for n in names:
        assert 800 < sum(1 for v in before.values() if v == n) < 1200
    # the order of the list does not matter, only the names
    assert all(shard_of(["c", "a", "b"], t) == before[t] for t in topics)
    # adding a shard moves only the topics it wins (~1/4), all of them to it
    after = {t: shard_of([*names, "d"], t) for t in topics}
    moved = [t for t in topics if after[t] != before[t]]
    assert all(after[t] == "d" for t in moved)
    assert 600 < len(moved) < 900
    # removing one moves only its own topics
    without_b = {t: shard_of(["a", "c"], t) for t in topics}
    assert all(without_b[t] == before[t] for t in topics if before[t] != "b")
    # a dead-letter topic lives with its topic
    assert placement_key("orders.dead.dead") == "orders"
    assert all(shard_of(names, t + ".dead") == before[t] for t in topics[:100])


def test_sharded_urls() -> None:
    ep = parse_url("redis+shards://u:pw@h1:7000,h2/3?ssl_cert_reqs=none")
    assert [(n, e.host, e.port, e.db, e.password) for n, e in ep.shards] == [
        ("h1:7000", "h1", 7000, 3, "pw"),
        ("h2:6379", "h2", 6379, 3, "pw"),
    ]
    with pytest.raises(herald.ConfigurationError, match="not a cluster"):
        shards_endpoint(["redis://h1", "redis+cluster://h2:7000"])
    with pytest.raises(herald.ConfigurationError, match="two shards are named"):
        shards_endpoint(["redis://h1", "redis://h1:6379"])
    with pytest.raises(herald.ConfigurationError, match="not one string"):
        shards_endpoint("redis://h1")
    with pytest.raises(herald.ConfigurationError, match="names no server"):
        shards_endpoint([])
    with pytest.raises(herald.ConfigurationError, match="not both"):
        AsyncClient("redis://h", shards=["redis://h1"])
    with pytest.raises(herald.ConfigurationError):
        parse_url("redis://h1,h2")  # still refused: the sharded form is explicit
