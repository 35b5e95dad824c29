"""herald.Client: the asyncio implementation driven from ordinary threads."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

import herald
from herald import Message


def herald_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(("herald-io", "herald-handler")) or t.name.startswith("asyncio_")
    ]


def non_daemon_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_iterator_and_context_manager(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic) as sub:
        for i in range(100):
            hub.publish(topic, i)
        got = []
        for msg in sub:
            assert msg.topic == topic
            got.append(msg.data)
            if len(got) == 100:
                break
        assert got == list(range(100))
        assert hub.publish(topic, "confirmed", confirm=True).receivers == 1
        assert sub.next(5).data == "confirmed"
        assert sub.stats.delivered == 101
        assert hub.stats.published == 101


def test_iteration_ends_when_the_subscription_closes(url: str, topic: str) -> None:
    with herald.Client(url) as hub:
        sub = hub.subscribe(topic)
        hub.publish(topic, "last", confirm=True)
        closer = threading.Timer(0.0, sub.close)
        got = []
        first = True
        for msg in sub:
            got.append(msg.data)
            if first:
                closer.start()  # close from another thread while this one waits
                first = False
        closer.join()
        assert got == ["last"]
        with pytest.raises(herald.ClientClosed):
            sub.next(1)


def test_handler_runs_on_its_own_thread_and_gets_every_message(url: str, topic: str) -> None:
    n = 2000
    received: list[object] = []
    threads: set[threading.Thread] = set()
    done = threading.Event()

    def handler(msg: Message) -> None:
        threads.add(threading.current_thread())
        received.append(msg.data)
        if len(received) == n:
            done.set()

    with herald.Client(url) as hub:
        sub = hub.subscribe(topic, handler=handler)
        for i in range(n):
            hub.publish(topic, i)
        assert done.wait(10), f"handler got {len(received)} of {n}"
        assert received == list(range(n))
        (thread,) = threads
        assert thread is not threading.main_thread()
        assert thread.name.startswith("herald-handler")
        assert sub.stats.dropped == 0
    assert not thread.is_alive()


def test_handler_errors_are_counted_and_do_not_stop_it(url: str, topic: str) -> None:
    received: list[object] = []
    done = threading.Event()

    def handler(msg: Message) -> None:
        if msg.data == "boom":
            raise ValueError("boom")
        received.append(msg.data)
        if msg.data == "last":
            done.set()

    with herald.Client(url) as hub:
        sub = hub.subscribe(topic, handler=handler)
        for data in ("first", "boom", "last"):
            hub.publish(topic, data)
        assert done.wait(10)
        assert received == ["first", "last"]
        assert sub.stats.handler_errors == 1


def test_concurrent_publishers_lose_nothing_and_keep_their_order(url: str, topic: str) -> None:
    writers, per_writer = 4, 5000
    total = writers * per_writer
    with herald.Client(url) as hub, hub.subscribe(topic, max_pending=total) as sub:
        start = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(w: int) -> None:
            try:
                start.wait(5)
                for i in range(per_writer):
                    hub.publish(topic, [w, i])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        seen: dict[int, list[int]] = defaultdict(list)
        for _ in range(total):
            w, i = sub.next(10).data
            seen[w].append(i)
        for t in threads:
            t.join(10)
        assert not errors
        assert {w: len(s) for w, s in seen.items()} == dict.fromkeys(range(writers), per_writer)
        for w in range(writers):
            assert seen[w] == list(range(per_writer)), f"writer {w} out of order"
        with pytest.raises(herald.Timeout):
            sub.next(0.2)
        assert sub.stats.dropped == 0
        assert hub.stats.published == total


def test_next_times_out(url: str, topic: str) -> None:
    with herald.Client(url) as hub, hub.subscribe(topic) as sub:
        started = time.monotonic()
        with pytest.raises(herald.Timeout) as info:
            sub.next(0.3)
        assert 0.29 <= time.monotonic() - started < 1.0
        assert info.value.timeout == 0.3
        assert isinstance(info.value, TimeoutError)


def test_close_leaves_no_thread_behind(url: str, topic: str) -> None:
    before = set(non_daemon_threads())
    before_herald = set(herald_threads())
    got = threading.Event()
    hub = herald.Client(url)
    hub.subscribe(topic, handler=lambda msg: got.set())
    sub = hub.subscribe(topic)
    hub.publish(topic, 1)
    assert got.wait(5)
    assert sub.next(5).data == 1
    assert set(herald_threads()) > before_herald
    hub.close()
    assert set(herald_threads()) <= before_herald
    assert set(non_daemon_threads()) <= before
    hub.close()  # twice is fine
    with pytest.raises(herald.ClientClosed):
        hub.publish(topic, 2)
    with pytest.raises(herald.ClientClosed):
        hub.subscribe(topic)


def test_without_url_starts_and_stops_an_embedded_server(topic: str) -> None:
    assert herald._server.discover() is None  # HERALD_HOME is the test session's own
    before = set(herald_threads())
    with herald.Client() as hub:
        server = hub._async._server
        assert server is not None
        assert server.process is not None
        pid = server.process.pid
        assert alive(pid)
        with hub.subscribe(topic) as sub:
            hub.publish(topic, "embedded")
            assert sub.next(5).data == "embedded"
    assert not alive(pid)
    assert set(herald_threads()) <= before
