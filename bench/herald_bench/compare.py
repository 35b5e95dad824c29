"""Herald next to the alternatives a user would pick, in one run on one machine.

The same workloads with Herald; redis-py (sync and asyncio, hiredis); FastStream's Redis broker
(channel and stream subscribers); broadcaster (Redis backend); nats-py on nats-server (core and
JetStream); aio-pika on RabbitMQ; and a raw socket + ``hiredis.Reader`` client as the ceiling of
what a Python client can get out of the server. One Valkey is started for the run (no
persistence); NATS and RabbitMQ are used where they listen (``nats_url``, ``amqp_url``). A peer
that cannot run here is reported with the reason, never left out silently.

Workloads: live publish and live end to end (one publisher process, one subscriber process);
fan-out to 10 and 100 subscribers (each its own connection, spread over two processes); durable
publish, and consume with ack by 4 consumer processes; request/reply round trips (one in
flight); p50/p99 latency at fixed rates (5k and 20k msg/s). Every run starts fresh processes
(:mod:`herald_bench._harness`); rows take turns; tables show medians.

Example::

    from herald_bench.compare import format_table, run_compare

    print(format_table(run_compare(quick=True)))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._compare_render import format_table, write_charts
from ._compare_rows import (
    AMQP_URL,
    COMPILED_TREE,
    LATENCY_OF,
    NATS_URL,
    NOT_MEASURED,
    PEERS,
    Row,
    _durable_rows,
    _fanout_rows,
    _live_rows,
    _request_rows,
    compiled_tree,
    with_compiled,
)
from ._compare_setup import _Context, _server_versions, _unavailable, _versions
from ._harness import Sample, median, server_pid, worker_params
from .live import PINNED, SERVER_ARGS, _environment

__all__ = ["format_table", "run_compare", "write_charts"]


def run_compare(
    *,
    quick: bool = False,
    runs: int | None = None,
    duration: float | None = None,
    payload_size: int = 100,
    rates: tuple[int, ...] = (5_000, 20_000),
    only: list[str] | None = None,
    nats_url: str = NATS_URL,
    amqp_url: str = AMQP_URL,
    progress: Callable[[str], None] | None = None,
    compiled: bool = False,
) -> dict[str, Any]:
    """Run the comparison and return its result (JSON-able).

    Args:
        quick: one short run per row, fan-out to 100 and the 20k/s latency rows left out.
        runs: runs per row (default 3; 1 with ``quick``); tables show medians.
        duration: seconds per run (default 2; 0.5 with ``quick``).
        payload_size: payload bytes (for Herald: of the JSON-encoded dict).
        rates: the latency rows' publish rates.
        only: workloads to run (``live``, ``fanout``, ``durable``, ``request``, ``latency``).
        nats_url: nats-server to use for nats-py rows.
        amqp_url: RabbitMQ to use for aio-pika rows.
        progress: called with a line per row run (for a terminal).
        compiled: run each Herald row a second time on the compiled core (``<row>-compiled``),
            from build/compiled (``make compiled``).
    """
    from herald._server import EmbeddedServer

    if compiled and compiled_tree() is None:
        raise SystemExit(f"no compiled core in {COMPILED_TREE}: run `make compiled` first")
    runs = runs or (1 if quick else 3)
    duration = duration or (0.5 if quick else 2.0)
    if quick:
        rates = rates[:1]
    want = set(only or ("live", "fanout", "durable", "request", "latency"))
    say = progress or (lambda line: None)
    started = time.time()
    unavailable = _unavailable(nats_url, amqp_url)
    server = EmbeddedServer(persist=False, args=SERVER_ARGS)
    server.start()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        pid = server_pid(server)
        env = _environment(server.url)
        env["packages"].update(_versions())
        env["servers"] = _server_versions(nats_url, amqp_url, unavailable)
        base = worker_params(
            server,
            nats_url=nats_url,
            amqp_url=amqp_url,
            duration=duration,
            payload_size=payload_size,
            rate=0,
        )
        plan = _plan(want, quick, compiled)
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {
            (r.workload, r.name): [] for r in plan
        }
        ctx = _Context(server.port, base, pid)
        try:
            for _ in range(runs):
                for row in plan:
                    if row.peer in unavailable:
                        continue
                    say(f"{row.workload:16} {row.name}")
                    samples[(row.workload, row.name)].append(ctx.run(row))
            for row in plan:
                results.setdefault(row.workload, []).append(
                    _summarise(row, samples[(row.workload, row.name)], unavailable.get(row.peer))
                )
            if "latency" in want:
                live = results.get("live", [])
                results.update(_latency(ctx, runs, rates, live, unavailable, say, compiled))
        finally:
            ctx.close()
    finally:
        server.cleanup()
    for workload, peer, reason in NOT_MEASURED:
        if workload in results and not workload.startswith("fanout"):
            name = PEERS[peer][0]
            results[workload].append(
                {"row": peer, "peer": peer, "label": name, "skipped": reason, "value": None}
            )
    _add_ratios(results)
    return {
        "benchmark": "compare",
        "parameters": {
            "quick": quick,
            "runs": runs,
            "duration": duration,
            "payload_size": payload_size,
            "rates": list(rates),
            "only": only,
        },
        "environment": env,
        "pinned": PINNED,
        "unavailable": unavailable,
        "wall_seconds": round(time.time() - started, 1),
        "workloads": results,
        "goals": _goals(results),
    }


def _plan(want: set[str], quick: bool, compiled: bool = False) -> list[Row]:
    """The rows of the workloads in ``want`` but latency (it depends on the live results), in
    the order they run."""
    plan: list[Row] = []
    if "live" in want:
        plan += _live_rows()
    if "fanout" in want:
        plan += _fanout_rows(10, 0.5 if quick else 1.0)
        if not quick:
            plan += _fanout_rows(100, 1.0)
    if "durable" in want:
        plan += _durable_rows()
    if "request" in want:
        plan += _request_rows()
    return with_compiled(plan) if compiled else plan


BEHIND = 0.95  # a latency row that published less than this share of its target rate fell behind


def _latency(
    ctx: _Context,
    runs: int,
    rates: tuple[int, ...],
    live: list[dict[str, Any]],
    unavailable: dict[str, str],
    say: Callable[[str], None],
    compiled: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    rows = {r.name: r for r in (with_compiled(_live_rows()) if compiled else _live_rows())}
    e2e = {r["row"]: r.get("value") for r in live}
    out: dict[str, list[dict[str, Any]]] = {}
    for target in rates:
        workload = f"latency-{target // 1000}k"
        plan: list[tuple[str, Row]] = []
        for name, live_name in LATENCY_OF.items():
            if live_name not in rows:  # the compiled core's, when not asked for
                continue
            row = rows[live_name]
            row = Row(workload, name, row.peer, row.label, row.kinds, row.params)
            reach = e2e.get(live_name)
            if row.peer in unavailable:
                out.setdefault(workload, []).append(_skipped(row, unavailable[row.peer]))
            elif live and (reach is None or reach < target * 1.25):
                got = "nothing" if reach is None else f"{reach / 1000:.1f}k/s"
                reason = f"not run: end to end it delivered {got}, below {target / 1000:g}k/s"
                out.setdefault(workload, []).append(_skipped(row, reason))
            else:
                plan.append((name, row))
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plan}
        for _ in range(runs):
            for name, row in plan:
                say(f"{workload:16} {name}")
                samples[name].append(ctx.run(row, {"rate": target}))
        for name, row in plan:
            summary = _summarise(row, samples[name], None)
            achieved = summary.get("achieved")
            if achieved and achieved < target * BEHIND:
                # Its latency was measured at the lower rate it managed: not comparable.
                summary["note"] = f"fell behind: {achieved / 1000:.1f}k/s of {target / 1000:g}k/s"
                summary["behind"] = True
            out.setdefault(workload, []).append(summary)
    return out


# -- results -------------------------------------------------------------------------------------


def _skipped(row: Row, reason: str) -> dict[str, Any]:
    return {
        "row": row.name,
        "peer": row.peer,
        "label": row.label,
        "skipped": reason,
        "value": None,
    }


def _first_error(workers: list[Sample]) -> str | None:
    for w in workers:
        if "error" in w:
            lines = [x for x in str(w["error"]).strip().splitlines() if x.strip()]
            return lines[-1] if lines else "error"
    return None


def _run_values(row: Row, run: dict[str, Any]) -> dict[str, float | None]:
    """The figures of one run of ``row``: what its table shows."""
    workers: list[Sample] = run["workers"]
    if _first_error(workers):
        return {}
    w = row.workload
    if w == "live":
        sub, pub = workers
        return {"published": pub.get("rate"), "delivered": sub.get("rate")}
    if w.startswith("latency"):
        sub, pub = workers
        lat = sub.get("latency_us") or {}
        return {"achieved": pub.get("rate"), "p50": lat.get("p50"), "p99": lat.get("p99")}
    if w.startswith("fanout"):
        subs, pub = workers[:-1], workers[-1]
        total = sum(s["received"] for s in subs)
        starts = [s["first"] for s in subs if s["received"]]
        span = max(s["last"] for s in subs) - min(starts) if starts else 0.0
        expected = row.params["count"] * row.params["subscribers"]
        return {
            "delivered": total / span if span > 0 else None,
            "published": pub.get("rate"),
            "fraction": total / expected if expected else None,
        }
    if w == "durable-publish":
        return {"rate": workers[0].get("rate")}
    if w == "durable-consume":
        total = sum(x["received"] for x in workers)
        span = max(x["last"] for x in workers) - min(x["first"] for x in workers)
        return {"rate": total / span if span > 0 and total > 1 else None, "received": total}
    # request
    req = workers[0]
    return {"rate": req.get("rate"), "p50": req.get("p50_us"), "p99": req.get("p99_us")}


MAIN_VALUE = {  # the figure ratios are taken of, per kind of workload
    "live": "delivered",
    "fanout": "delivered",
    "durable-publish": "rate",
    "durable-consume": "rate",
    "request": "rate",
    "latency": "p99",
}


def _main_key(workload: str) -> str:
    for prefix, key in MAIN_VALUE.items():
        if workload.startswith(prefix):
            return key
    raise KeyError(workload)


def _summarise(row: Row, runs: list[dict[str, Any]], unavailable: str | None) -> dict[str, Any]:
    if unavailable is not None:
        return _skipped(row, unavailable)
    values = [_run_values(row, r) for r in runs]
    keys = sorted({k for v in values for k in v})
    out: dict[str, Any] = {
        "row": row.name,
        "peer": row.peer,
        "label": row.label,
        **{k: median([v.get(k) for v in values]) for k in keys},
        "other_cores": median([r["machine"].get("other_cores") for r in runs]),
        "runs": runs,
    }
    errors = [e for r in runs if (e := _first_error(r["workers"]))]
    if errors:
        out["errors"] = errors
    out["value"] = out.get(_main_key(row.workload))
    if row.workload == "live" and not out.get("delivered") and not errors:
        out["note"] = "the subscriber received nothing"
    drained = sum(map(_drained, runs))
    if drained:
        # Its figure then covers less than the run's duration, ending in the backlog's tail.
        out["note"] = f"drained the whole backlog before the end in {drained} of {len(runs)} runs"
    return out


def _drained(run: dict[str, Any]) -> bool:
    """A consumer run whose processes got every prefilled message."""
    prefilled = run.get("after", {}).get("prefilled")
    return prefilled is not None and sum(w.get("received", 0) for w in run["workers"]) >= prefilled


def _add_ratios(results: dict[str, list[dict[str, Any]]]) -> None:
    """``herald_x``: Herald's best figure / this row's (for latency: this row's / Herald's)."""
    for workload, rows in results.items():
        herald = [r["value"] for r in rows if r["peer"] == "herald" and r.get("value")]
        if not herald:
            continue
        lower_is_better = workload.startswith("latency")
        best = min(herald) if lower_is_better else max(herald)
        for r in rows:
            v = r.get("value")
            if not v or r["peer"] == "herald":
                continue
            r["herald_x"] = v / best if lower_is_better else best / v


def _goals(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Is Herald first on every Redis-based row (raw, the ceiling, aside), and ahead of nats-py
    end to end? One entry per check, with the margin."""
    out = []
    for workload, rows in results.items():
        lower = workload.startswith("latency")
        herald = [r["value"] for r in rows if r["peer"] == "herald" and r.get("value")]
        others = [
            r
            for r in rows
            if r.get("value")
            and r["peer"] not in ("herald", "raw")
            and PEERS[r["peer"]][1]
            and not r.get("behind")
        ]
        if not herald or not others:
            continue
        mine = min(herald) if lower else max(herald)
        best = (min if lower else max)(others, key=lambda r: r["value"])
        ok = mine <= best["value"] if lower else mine >= best["value"]
        out.append(
            {
                "check": f"{workload}: Herald first among Redis-based clients",
                "met": ok,
                "herald": mine,
                "best_other": best["row"],
                "other": best["value"],
            }
        )
    live = {r["row"]: r for r in results.get("live", [])}
    h, n = live.get("herald", {}).get("value"), live.get("nats", {}).get("value")
    if h and n:
        out.append(
            {
                "check": "live end to end: Herald ahead of nats-py",
                "met": h >= n,
                "herald": h,
                "best_other": "nats",
                "other": n,
            }
        )
    return out
