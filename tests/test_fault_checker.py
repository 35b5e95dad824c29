"""The fault checker, tested by the bugs it must catch: each test plants one bug in the client
(a real defect, in the real code path, against a real server) and runs the scenario that covers
it, which must FAIL. A checker test that cannot fail is a defect; these are the proof that a
passing scenario means something."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from herald import Gap, HistoryLost, Message
from herald._pubsub.subscription import Subscription
from herald.faults import scenarios_net, scenarios_recoverable
from herald.faults._harness import SMOKE

pytestmark = pytest.mark.timeout(90)

Add = Callable[[Subscription, list[Message]], None]


def _plant_in_add(
    monkeypatch: pytest.MonkeyPatch, topic: str, bug: Callable[[int, list[Message]], list[Message]]
) -> None:
    """Pass what a subscription of ``topic`` buffers through ``bug(count so far, messages)``."""
    original: Add = Subscription._add
    seen = [0]

    def planted(self: Subscription, messages: list[Message]) -> None:
        if self.names == (topic,) and messages:
            n = seen[0]
            seen[0] += len(messages)
            messages = bug(n, messages)
        original(self, messages)

    monkeypatch.setattr(Subscription, "_add", planted)


async def _recoverable_reset_fails() -> dict[str, Any]:
    r = await scenarios_recoverable.recoverable_reset(SMOKE)
    assert not r["passed"], r["checks"]
    return r


async def test_baseline_the_recoverable_scenario_passes_without_a_planted_bug() -> None:
    r = await scenarios_recoverable.recoverable_reset(SMOKE)
    assert r["passed"], r["checks"]


async def test_a_skip_after_each_history_lost_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    original_lost = Subscription._lost
    skip: dict[int, int] = {}

    def lost(self: Subscription, exc: HistoryLost) -> None:
        original_lost(self, exc)
        skip[id(self)] = 3

    original_add = Subscription._add

    def add(self: Subscription, messages: list[Message]) -> None:
        n = skip.get(id(self), 0)
        if n and messages:
            skip[id(self)] = max(0, n - len(messages))
            messages = messages[n:]
        original_add(self, messages)

    monkeypatch.setattr(Subscription, "_lost", lost)
    monkeypatch.setattr(Subscription, "_add", add)
    r = await _recoverable_reset_fails()
    tight = r["readers"]["tight"]
    assert tight["bad_bounds"] + tight["silent_skips"] > 0


async def test_each_history_lost_repeated_five_times_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original_lost = Subscription._lost

    def lost(self: Subscription, exc: HistoryLost) -> None:
        for _ in range(5):
            original_lost(self, exc)

    monkeypatch.setattr(Subscription, "_lost", lost)
    r = await _recoverable_reset_fails()
    assert r["readers"]["tight"]["repeated"] > 0


async def test_a_dropped_message_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(n: int, messages: list[Message]) -> list[Message]:
        return messages[1:] if n <= 500 < n + len(messages) else messages

    _plant_in_add(monkeypatch, "deep", drop)
    r = await _recoverable_reset_fails()
    assert r["readers"]["deep"]["lost"] + r["readers"]["deep"]["silent_skips"] > 0


async def test_a_duplicate_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def twice(n: int, messages: list[Message]) -> list[Message]:
        return [messages[0], *messages] if n <= 500 < n + len(messages) else messages

    _plant_in_add(monkeypatch, "deep", twice)
    r = await _recoverable_reset_fails()
    assert r["duplicates"] > 0


async def test_a_reordering_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[Message] = []

    def reorder(n: int, messages: list[Message]) -> list[Message]:
        if not held and n <= 500 < n + len(messages):
            held.append(messages[0])  # delivered after the next frame instead of now
            return messages[1:]
        if held and n > 500:
            late = held.pop()
            return [*messages, late]
        return messages

    _plant_in_add(monkeypatch, "deep", reorder)
    r = await _recoverable_reset_fails()
    assert r["reordered"] > 0


async def test_gap_windows_in_1970_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    original_gap = Subscription._gap

    def gap(self: Subscription, g: Gap) -> None:
        original_gap(self, Gap(g.names, 0.0, 1.0, g.reason, g.detected))

    monkeypatch.setattr(Subscription, "_gap", gap)
    r = await scenarios_net.slow_subscriber(SMOKE)
    assert not r["passed"], r["checks"]
    assert r["gaps"]["uncovered"] > 0
