"""The fault suite's smoke subset on real servers (scenarios 2, 3, 4, 9, 12, 13, 15 small; the
runs are ``herald faults run --scale full``, figures in ``docs/guarantees.md``), and the checker
and the proxy themselves: a checker that cannot see a loss would prove nothing."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import herald
from herald import ConfigurationError, EmbeddedServer
from herald._durable.confirm import wait_fsync, wait_replicas
from herald._io.link import Link
from herald.faults import (
    hostile,
    scenarios,
    scenarios_net,
    scenarios_recoverable,
    scenarios_trust,
)
from herald.faults._harness import SMOKE
from herald.faults.checker import Checker
from herald.faults.proxy import Proxy
from herald.faults.runner import SCENARIOS, find, format_table


def passed(report: dict[str, Any]) -> None:
    failed = [name for name, ok in report["checks"].items() if not ok]
    table = format_table([{**report, "number": 0, "wall_s": 0}])
    assert not failed, f"{report['scenario']}: failed {failed}\n{table}"


# -- the checker -------------------------------------------------------------------------


def test_checker_finds_losses_and_splits_them() -> None:
    c = Checker("unit")
    for seq in range(1, 11):
        c.ok(c.invoke("p", seq))
    for seq in (3, 4, 6, 7, 8):
        c.deliver("p", seq, reader="r")
    r = c.report()
    assert r["lost_split"] == {"prefix": 2, "middle": 1, "postfix": 2}
    assert r["lost"] == 5
    assert r["gaps"]["happened"] == 3  # 1-2, 5, 9-10
    assert r["gaps"]["detected"] == 0


def test_checker_unexpected_recovered_duplicates_reordering() -> None:
    c = Checker("unit")
    ok, failed, unknown, lost_unknown = (c.invoke("p", s) for s in (1, 2, 3, 4))
    c.ok(ok)
    c.fail(failed, "refused")
    c.unknown(unknown, "connection lost")
    c.unknown(lost_unknown, "connection lost")
    c.deliver("p", 3, reader="r")
    c.deliver("p", 1, reader="r")  # after 3: reordered
    c.deliver("p", 1, reader="r", redelivered=True)
    c.deliver("p", 2, reader="r")  # certainly failed, yet delivered
    c.deliver("ghost", 1, reader="r")  # never published
    c.effect("p-1")
    c.effect("p-1")
    r = c.report()
    assert r["lost"] == 0
    assert r["unexpected"] == 2
    assert r["recovered"] == 1
    assert r["unknown_not_delivered"] == 1
    assert (r["duplicates"], r["redeliveries"], r["duplicates_after_dedup"]) == (1, 1, 1)
    assert r["reordered"] == 2  # 1 and 2 both came after 3


def test_checker_counts_a_gap_as_detected_only_where_it_was_reported() -> None:
    c = Checker("unit", gap_slack=0.0)
    t = time.time()
    for seq in range(1, 7):
        c.ok(c.invoke("p", seq), at=t + seq)
    for seq in (1, 2, 5, 6):
        c.deliver("p", seq, reader="r", at=t + 10 + seq)
    c.gap("r", at=t + 13)  # between deliveries 2 and 5: covers the hole 3-4
    assert c.report()["gaps"] == {
        "happened": 1,
        "detected": 1,
        "detected_pct": 100.0,
        "reports": 1,
        "silent_skips": 0,
        "repeated": 0,
        "bad_bounds": 0,
        "uncovered": 0,
        "exact": True,
    }
    c.gap_reports.clear()
    c.gap("r", at=t + 17)  # after 6: the reader was told too late
    assert c.report()["gaps"]["detected"] == 0


def _missed_3_and_4() -> tuple[Checker, float]:
    c = Checker("unit")
    t = time.time()
    for seq in range(1, 7):
        c.ok(c.invoke("p", seq), at=t + seq)
        c.ops[("p", seq)].invoked = t + seq - 0.01
    for seq in (1, 2, 5, 6):
        c.deliver("p", seq, reader="r", at=t + seq + 0.001)
    return c, t


def test_checker_a_gap_window_must_hold_every_missed_publish() -> None:
    c, t = _missed_3_and_4()
    c.gap("r", t + 2.5, t + 4.5, at=t + 10)  # reported late, but its window holds 3 and 4
    assert (c.report()["gaps"]["detected"], c.report()["gaps"]["exact"]) == (1, True)
    c.gap_reports.clear()
    c.gap("r", t + 3.5, t + 4.5)  # since too late: 3 is outside
    g = c.report()["gaps"]
    assert (g["detected"], g["uncovered"], g["exact"]) == (0, 1, False)
    c.gap_reports.clear()
    c.gap("r", 0.0, 1.0)  # 1970
    g = c.report()["gaps"]
    assert (g["detected"], g["uncovered"]) == (0, 2)
    c.gap_reports.clear()
    c.gap("r", t + 2.5, t + 4.5)
    c.gap("r", t + 2.5, t + 4.5)  # the same window twice
    g = c.report()["gaps"]
    assert (g["repeated"], g["exact"]) == (1, False)


def _history_reader(events: list[int | tuple[int, int | None]]) -> dict[str, Any]:
    """A recoverable reader's log: an int is a delivered offset, a pair a HistoryLost."""
    c = Checker("unit")
    for e in events:
        if isinstance(e, tuple):
            c.history_lost("r", e[0], e[1])
        else:
            c.ok(c.invoke("p", e))
            c.deliver("p", e, reader="r", offset=e)
    gaps: dict[str, Any] = c.report()["gaps"]
    return gaps


def test_checker_history_lost_once_at_the_hole_with_its_bounds() -> None:
    assert _history_reader([1, 2, (2, 5), 5, 6])["exact"]
    assert _history_reader([1, 2, (2, 5), 5, 6])["detected"] == 1
    # Each planted bug is seen:
    assert _history_reader([1, 2, 5, 6])["silent_skips"] == 1  # no report
    assert _history_reader([1, 2, (2, 5), 8, 9])["bad_bounds"] == 1  # skipped after it
    assert _history_reader([1, 2, (2, 5), 5, 8])["silent_skips"] == 1  # and later, silently
    assert _history_reader([1, 2, (2, 5), (2, 5), 5, 6])["repeated"] == 1
    assert _history_reader([1, 2, (3, 5), 5, 6])["bad_bounds"] == 1  # last_offset not delivered
    assert _history_reader([1, 2, (2, 3), 3, 4])["bad_bounds"] == 1  # bounds no loss
    assert _history_reader([1, 2, 5, (2, 5), 6])["exact"] is False  # out of sequence


def test_checker_time_to_recover_spans_the_silence() -> None:
    c = Checker("unit")
    t = time.time()
    fault = c.fault_start("kill")
    fault.start = t
    fault.end = t + 1
    for i, done in enumerate([t + 0.01, t + 2.0, t + 2.1]):
        op = c.invoke("p", i)
        op.invoked = t
        c.ok(op, at=done)
    assert c.report()["time_to_recover_s"] == pytest.approx(2.0, abs=0.01)


def test_every_scenario_is_listed_once() -> None:
    assert [s.number for s in SCENARIOS] == list(range(1, 18))
    assert find("4") is find("poison")
    with pytest.raises(KeyError):
        find("nope")


# -- the proxy -------------------------------------------------------------------------------


async def test_proxy_freeze_is_detected_by_probes_and_thaw_recovers(server: EmbeddedServer) -> None:
    with Proxy(server.port) as proxy:
        async with herald.AsyncClient(proxy.url, probe_interval=0.2, connect_timeout=0.5) as hub:
            await hub.execute("PING")
            proxy.freeze()
            started = time.monotonic()
            while hub.stats.connected:
                assert time.monotonic() - started < 3, "half-open link never detected"
                await asyncio.sleep(0.01)
            proxy.thaw()
            assert await asyncio.wait_for(hub.execute("PING"), 10) == b"PONG"


async def test_proxy_delay_and_cut(server: EmbeddedServer) -> None:
    with Proxy(server.port) as proxy:
        async with herald.AsyncClient(proxy.url, probe_interval=0) as hub:
            await hub.execute("PING")
            proxy.delay = 0.1
            started = time.monotonic()
            await hub.execute("PING")
            assert time.monotonic() - started >= 0.2  # both ways
            proxy.delay = 0
            proxy.cut()
            with pytest.raises(herald.ConnectionLost):
                await hub.execute("PING")
            assert await asyncio.wait_for(hub.execute("PING"), 10) == b"PONG"
            assert proxy.accepted >= 2


def test_cli_runs_a_scenario_and_reports_json() -> None:
    import json

    from click.testing import CliRunner

    from herald.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["faults", "list"])
    assert listed.exit_code == 0
    assert "14 gateway-reconnect" in listed.output
    result = runner.invoke(main, ["faults", "run", "-s", "13", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    assert (report["scenario"], report["passed"]) == ("trim-overrun", True)
    unknown = runner.invoke(main, ["faults", "run", "-s", "no-such-fault"])
    assert unknown.exit_code == 2
    assert "no scenario 'no-such-fault'" in unknown.output


# -- the smoke subset (real servers, real faults) --------------------------------------------


@pytest.mark.timeout(60)
async def test_server_kill_under_durable_load() -> None:
    r = await scenarios.server_kill(SMOKE)
    passed(r)
    assert r["ops"]["attempted"] == 30_000
    # The kill is aimed at a background fsync: fsync=True publishes lose nothing; the
    # everysec-only publisher's loss is measured, not asserted (it may be 0 on a fast disk).
    assert r["lost_by_publisher"]["fsync=True (p0)"] == 0
    assert r["stored_twice"] == 0
    assert r["faults"]
    assert r["time_to_recover_s"] is not None


@pytest.mark.timeout(60)
async def test_consumer_kill_before_ack() -> None:
    r = await scenarios.consumer_kill(SMOKE)
    passed(r)
    assert r["pending"] == 0
    assert r["reclaimed"] > 0


@pytest.mark.timeout(60)
async def test_poison_messages() -> None:
    r = await scenarios.poison(SMOKE)
    passed(r)
    assert r["dead_letters"] == r["poison"] == 20
    assert r["handled_and_dead"] == 0


@pytest.mark.timeout(60)
async def test_recoverable_topic_under_connection_resets() -> None:
    r = await scenarios_recoverable.recoverable_reset(SMOKE)
    passed(r)
    assert r["readers"]["deep"]["lost"] == 0
    assert r["false_recoveries"] == 0
    tight = r["readers"]["tight"]
    assert tight["gaps_detected"] == tight["gaps_happened"]
    assert r["outage"]["history_lost"] == r["outage"]["outages"]


@pytest.mark.timeout(60)
async def test_trim_overrun_is_reported_and_counted() -> None:
    r = await scenarios_net.trim_overrun(SMOKE)
    passed(r)
    assert r["reported_raise"] == r["reported_continue"] == r["trimmed"] > 0


@pytest.mark.timeout(60)
async def test_hostile_input_to_the_decoder_and_the_gateway() -> None:
    r = await hostile.hostile_input(SMOKE)
    passed(r)
    assert r["executions"] > 1000
    assert (r["crashes"], r["hangs"]) == (0, 0)
    gateway = r["gateway"]
    assert gateway["frames"] > 100
    assert (gateway["internal_errors"], gateway["hangs"]) == (0, 0)
    assert gateway["bad_tokens_accepted"] == 0


@pytest.mark.timeout(60)
async def test_forged_reply_addresses_publish_nothing_outside_the_inboxes() -> None:
    r = await scenarios_trust.forged_replies(SMOKE)
    passed(r)
    assert r["forged_requests"] >= 1000
    assert r["published_outside_inboxes"] == 0
    assert r["secrets_leaked"] == 0
    assert r["gateway_forgeries_accepted"] == 0


@pytest.mark.timeout(60)
async def test_maxmemory_refuses_visibly_and_an_evicting_policy_is_warned_about() -> None:
    r = await scenarios_net.maxmemory(SMOKE)
    passed(r)
    assert r["ops"]["failed"] > 0
    assert "OOM" in r["refused_sample"][0]
    assert r["eviction_warning"]


# -- found by the suite (scenario 8: cluster primary kill with replicas=1) -------------------


async def test_unsatisfiable_replicas_publish_raises_not_replicated(
    server: EmbeddedServer, topic: str
) -> None:
    # A primary without replicas: WAIT 1 can only time out (publish_timeout). WAIT blocks the
    # connection, so it goes in slices the probe (0.25 s) can pass between.
    async with herald.AsyncClient(server.url, probe_interval=0.25, publish_timeout=1.0) as hub:
        await hub.declare(topic, durable=True)
        with pytest.raises(herald.NotReplicated):
            await hub.publish(topic, 1, replicas=1)
        assert hub.stats.connected


async def test_unsatisfiable_fsync_replicas_raises_not_persisted(
    own_server: EmbeddedServer, topic: str
) -> None:
    # fsync=True waits for the local AOF fsync (WAITAOF 1 0): it returns. With replicas=1 on a
    # primary without replicas it can only time out: NotPersisted, the message stored and
    # fsynced locally; the connection survives the blocking WAITAOF slices.
    async with herald.AsyncClient(own_server.url, probe_interval=0.25, publish_timeout=1.0) as hub:
        await hub.declare(topic, durable=True)
        ack = await hub.publish(topic, 1, fsync=True)
        assert ack is not None
        assert ack.offset
        with pytest.raises(herald.NotPersisted) as caught:
            await hub.publish(topic, 2, fsync=True, replicas=1)
        assert (caught.value.local, caught.value.replicas, caught.value.required) == (1, 0, 1)
        assert caught.value.ack.offset
        assert hub.stats.connected
        with pytest.raises(ConfigurationError):
            await hub.publish(topic, 3, fsync=True, confirm=False)


async def test_fsync_needs_an_aof(server: EmbeddedServer, topic: str) -> None:
    async with herald.AsyncClient(server.url) as hub:  # the session server: no persistence
        await hub.declare(topic, durable=True)
        with pytest.raises(ConfigurationError, match="appendonly"):
            await hub.publish(topic, 1, fsync=True)


def test_embedded_server_fsync_always(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "v", fsync="always") as srv, herald.Client(srv.url) as hub:
        assert hub.execute("CONFIG", "GET", "appendfsync")[1] == b"always"
    with pytest.raises(ConfigurationError):
        EmbeddedServer(tmp_path / "w", fsync="never")


async def test_confirmed_ack_waits_for_the_server(own_server: EmbeddedServer, topic: str) -> None:
    # Found by tests/test_fuzz_wire.py's model: ack(confirm=True) returned before the server had
    # the XACK, so an ack lost with its connection looked confirmed.
    async with herald.AsyncClient(own_server.url, probe_interval=0) as hub:
        await hub.declare(topic, durable=True)
        async with hub.consume(topic, "g", ack_wait=30) as c:
            await hub.publish(topic, "x")
            msg = await c.next(5)
            own_server.pause()  # the XACK cannot be answered now
            try:
                ack = asyncio.ensure_future(msg.ack(confirm=True))
                await asyncio.sleep(0.3)
                assert not ack.done(), "a confirmed ack returned while the server was stopped"
            finally:
                own_server.resume()
            await asyncio.wait_for(ack, 5)
            pending = await hub.execute("XPENDING", f"herald:{{{topic}}}:s", "g")
            assert pending[0] == 0


@pytest.mark.timeout(60)
async def test_forged_frames_on_a_recoverable_topic_are_rejected_within_bounds() -> None:
    r = await scenarios_recoverable.recoverable_forged(SMOKE)
    passed(r)
    assert r["rejected"] == r["forged_messages"] > 0
    assert r["idle_history_reads"] <= 2 * r["idle_forged_frames"]


async def test_a_topic_declared_with_fsync_waits_for_the_disk(
    own_server: EmbeddedServer, topic: str
) -> None:
    # The topic's policy makes every confirmed publish wait for WAITAOF, as fsync=True does:
    # with replicas=1 on a primary without replicas that can only time out (NotPersisted).
    async with herald.AsyncClient(own_server.url, publish_timeout=0.5) as hub:
        policy = await hub.declare(topic, durable=True, fsync=True)
        assert policy.fsync
        assert await hub.publish(topic, 1) is not None
        with pytest.raises(herald.NotPersisted):
            await hub.publish(topic, 2, replicas=1)
        with pytest.raises(ConfigurationError):
            await hub.declare(topic + "x", fsync=True)  # not durable
    with herald.Client(own_server.url) as sync_hub:  # the thread-safe path waits too
        ack = sync_hub.publish(topic, 3)
        assert ack is not None
        assert ack.offset


async def test_a_wait_answered_on_another_connection_does_not_confirm_the_write(
    own_server: EmbeddedServer, topic: str
) -> None:
    # The race behind a lost fsync=True publish: the store's reply arrives, the connection
    # drops (the server killed) before the WAITAOF goes out, and the WAITAOF, queued until
    # the reconnect, is answered by the restarted server for its own writes. It must not
    # confirm the earlier one. The proxy holds the connection down at that moment.
    with Proxy(own_server.port) as proxy:
        async with herald.AsyncClient(proxy.url, probe_interval=0.25) as hub:
            await hub.declare(topic, durable=True)
            link = hub._link
            assert isinstance(link, Link)
            _, _, durable, _ = hub._prefix(topic)
            assert durable is not None
            waits: dict[tuple[int, int], asyncio.Future[Any]] = {}
            for wait, refused in (
                (partial(wait_fsync, timeout=10.0, waits=waits), herald.NotPersisted),
                (partial(wait_replicas, timeout=10.0), herald.NotReplicated),
            ):
                ack = await hub.publish(topic, 1, confirm=True)
                assert ack is not None
                proxy.down()
                for _ in range(200):
                    if link.connection is None:
                        break
                    await asyncio.sleep(0.01)
                waiting = asyncio.ensure_future(wait(link, durable, 0, ack))
                await asyncio.sleep(0.1)
                proxy.up()
                with pytest.raises(refused):
                    await asyncio.wait_for(waiting, 10)
                await link.wait_connected(10)
            # A wait on the connection that stored the write still confirms it.
            assert await hub.publish(topic, 2, fsync=True) is not None
