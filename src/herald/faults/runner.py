"""Runs fault scenarios by name or number and formats their reports."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from . import (
    hostile,
    scenarios,
    scenarios_gateway,
    scenarios_net,
    scenarios_recoverable,
    scenarios_topology,
    scenarios_trust,
)
from ._harness import FULL, SMOKE, Scale


@dataclass(frozen=True)
class Scenario:
    number: int
    name: str
    run: Callable[[Scale], Coroutine[Any, Any, dict[str, Any]]] | None
    promise: str
    missing: str = ""  # why it cannot run here yet


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(1, "soak", scenarios.soak, "no loss, no duplicate, nothing pending"),
    Scenario(2, "server-kill", scenarios.server_kill, "no acknowledged publish lost (AOF)"),
    Scenario(3, "consumer-kill", scenarios.consumer_kill, "survivors reclaim; pending 0"),
    Scenario(4, "poison", scenarios.poison, "max_deliver deliveries, then dead letter"),
    Scenario(5, "server-pause", scenarios.server_pause, "retries deduplicated; no loss"),
    Scenario(6, "zombie", scenarios.zombie, "late ack: side effect applied once"),
    Scenario(
        7,
        "sentinel-failover",
        scenarios_topology.sentinel_failover,
        "replicas=1: no acknowledged publish lost; without: loss measured",
    ),
    Scenario(
        8,
        "cluster-faults",
        scenarios_topology.cluster_faults,
        "shard primary kill (replicas=1), slot migration: no acknowledged publish lost",
    ),
    Scenario(
        9,
        "recoverable-reset",
        scenarios_recoverable.recoverable_reset,
        "recovered from history, or HistoryLost; never a false recovery",
    ),
    Scenario(10, "slow-subscriber", scenarios_net.slow_subscriber, "cut-off detected, resumed"),
    Scenario(11, "half-open", scenarios_net.half_open, "detected within 2x probe_interval"),
    Scenario(12, "maxmemory", scenarios_net.maxmemory, "refused visibly, nothing silently lost"),
    Scenario(13, "trim-overrun", scenarios_net.trim_overrun, "trimmed entries reported, counted"),
    Scenario(
        14,
        "gateway-reconnect",
        scenarios_gateway.gateway_reconnect,
        "every WebSocket client resubscribed and resumed: nothing missing, nothing twice",
    ),
    Scenario(
        15,
        "hostile-input",
        hostile.hostile_input,
        "decoder and gateway: crashes 0, hangs 0, bad tokens accepted 0",
    ),
    Scenario(
        16,
        "forged-replies",
        scenarios_trust.forged_replies,
        "forged reply-to: publishes outside the inbox namespace 0, secrets leaked 0",
    ),
    Scenario(
        17,
        "recoverable-forged",
        scenarios_recoverable.recoverable_forged,
        "frames not from the publish script: rejected; reads and memory bounded",
    ),
)


def find(name: str) -> Scenario:
    for s in SCENARIOS:
        if name in (s.name, str(s.number)):
            return s
    names = ", ".join(f"{s.number} {s.name}" for s in SCENARIOS)
    raise KeyError(f"no scenario {name!r}; there are: {names}")


def run(names: Sequence[str] | None = None, scale: str = "smoke") -> list[dict[str, Any]]:
    """Run scenarios (all runnable ones by default), each on a fresh event loop; their reports.

    A scenario that raised reports ``passed: False`` with the error.
    """
    chosen = [find(n) for n in names] if names else [s for s in SCENARIOS if s.run]
    size = FULL if scale == "full" else SMOKE
    reports = []
    logger = logging.getLogger("herald")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # reconnect warnings and failing handlers are the point
    try:
        for s in chosen:
            reports.append(_run_one(s, size))
    finally:
        logger.setLevel(level)
    return reports


def _run_one(s: Scenario, size: Scale) -> dict[str, Any]:
    head = {"number": s.number, "scenario": s.name, "scale": size.name, "promise": s.promise}
    if s.run is None:
        return {**head, "skipped": f"not runnable yet: needs {s.missing}"}
    started = time.monotonic()
    try:
        report: dict[str, Any] = asyncio.run(s.run(size))
    except Exception as exc:
        report = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        report["passed"] = False
    return {**head, **report, "wall_s": round(time.monotonic() - started, 1)}


def format_table(reports: Sequence[dict[str, Any]]) -> str:
    """One line per scenario: verdict and the main figures; failed checks below it."""
    lines = []
    for r in reports:
        title = f"{r['number']:>2} {r['scenario']:<18}"
        if "skipped" in r:
            lines.append(f"{title} SKIP  {r['skipped']}")
            continue
        if "error" in r:
            lines.append(f"{title} ERROR {r['error']}")
            continue
        verdict = "PASS " if r["passed"] else "FAIL "
        figures = []
        if "ops" in r:
            o = r["ops"]
            figures.append(f"ok {o['ok']} failed {o['failed']} unknown {o['unknown']}")
            figures.append(f"lost {r['lost']} unexpected {r['unexpected']} dup {r['duplicates']}")
            if r["gaps"]["happened"]:
                figures.append(f"gaps {r['gaps']['detected']}/{r['gaps']['happened']}")
            if r.get("time_to_recover_s") is not None:
                figures.append(f"recover {r['time_to_recover_s']}s")
        for key in (
            "detection_s",
            "executions",
            "crashes",
            "hangs",
            "lost_without_wait",
            "time_to_resubscribe_s",
            "recovered_pct",
            "published_outside_inboxes",
            "secrets_leaked",
        ):
            if r.get(key) is not None:
                figures.append(f"{key} {r[key]}")
        lines.append(f"{title} {verdict} {'; '.join(figures)} ({r['wall_s']}s)")
        lines.extend(f"      failed check: {c}" for c, ok in r["checks"].items() if not ok)
    return "\n".join(lines)
