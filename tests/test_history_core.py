"""The sans-I/O bookkeeping of recoverable topics (``_history``), against a model: whatever
the position, the history kept and the live messages held, a catch-up delivers each offset
once, in order, or reports exactly the offsets that are gone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herald import HistoryLost, Message
from herald._core.history import Page, Track, accept, apply_page, release
from herald._core.wire import Encoder, decode

EPOCH = 1_700_000_000_000_000
TOPIC = "t"
ENCODER = Encoder("json")


def envelope(offset: int, epoch: int = EPOCH) -> bytes:
    return ENCODER.envelope(offset, None, offset, epoch)


def live(offset: int, epoch: int = EPOCH) -> Message:
    (msg,) = decode(TOPIC, envelope(offset, epoch))
    return msg


def catch_up(
    t: Track, published: int, kept: int, limit: int
) -> tuple[list[int], list[HistoryLost]]:
    """Run reads of ``limit`` until caught up, as Recovery._catch_up does, then release."""
    first = max(1, published - kept + 1)
    out: list[Message] = []
    lost: list[HistoryLost] = []
    for _ in range(published + 3):
        envs = [envelope(o) for o in range(max(t.offset + 1, first), published + 1)][:limit]
        page = Page(EPOCH if published else None, published, first, envs)
        report, more = apply_page(TOPIC, t, page, decode, out)
        if report is not None:
            lost.append(report)
        if not more and len(envs) < limit:
            break
    release(t, out)
    return [m.offset for m in out], lost  # type: ignore[misc]


@given(st.data())
def test_catch_up_is_exact(data: st.DataObject) -> None:
    published = data.draw(st.integers(1, 60), label="published")
    position = data.draw(st.integers(0, published), label="position")
    kept = data.draw(st.integers(1, 60), label="kept")
    limit = data.draw(st.integers(1, 7), label="read limit")
    # Live messages held while reading: from after the position up to just after the read's
    # snapshot (anything published later arrives live), contiguous, possibly none.
    held_from = data.draw(st.integers(position + 1, published + 1), label="held from")
    held_to = data.draw(st.integers(held_from - 1, published + 5), label="held to")
    t = Track(EPOCH, position)
    t.recovering = True
    t.held = [live(o) for o in range(held_from, held_to + 1)]
    got, lost = catch_up(t, published, kept, limit)
    first = max(1, published - kept + 1)
    start = position + 1
    if first > start:
        assert len(lost) == 1
        assert (lost[0].last_offset, lost[0].first_available) == (position, first)
        start = first
    else:
        assert lost == []
    assert got == list(range(start, max(published, held_to) + 1))
    assert (t.offset, t.recovering, t.held) == (max(published, held_to, position), False, [])


def test_live_messages_in_sequence_duplicates_and_breaks() -> None:
    tracks = {TOPIC: Track(EPOCH, 4)}
    out: list[Message] = []
    stale: list[str] = []
    dups, _ = accept(tracks, [live(4), live(5), live(6)], out, stale)
    assert (dups, [m.offset for m in out], stale) == (1, [5, 6], [])
    out.clear()
    accept(tracks, [live(9)], out, stale)  # 7 and 8 missing: recover, hold 9
    assert (out, stale, tracks[TOPIC].recovering) == ([], [TOPIC], True)
    assert [m.offset for m in tracks[TOPIC].held] == [9]
    # A new epoch live breaks the sequence too.
    t2 = {TOPIC: Track(EPOCH, 9)}
    accept(t2, [live(1, EPOCH + 1)], out, stale)
    assert t2[TOPIC].recovering


def test_new_epoch_and_reset_are_reported() -> None:
    t = Track(EPOCH, 7)
    out: list[Message] = []
    lost, more = apply_page(TOPIC, t, Page(EPOCH + 1, 3, 1, []), decode, out)
    assert lost is None  # reported with the first message of the new epoch: read it first
    assert (more, t.epoch, t.offset) == (True, EPOCH + 1, 0)
    page = Page(EPOCH + 1, 3, 1, [envelope(o, EPOCH + 1) for o in (1, 2, 3)])
    lost, more = apply_page(TOPIC, t, page, decode, out)
    assert lost is not None
    assert (lost.last_offset, lost.first_available, lost.epoch) == (7, 1, EPOCH + 1)
    assert "new epoch" in lost.reason
    assert ([m.offset for m in out], more, t.offset) == ([1, 2, 3], False, 3)
    out.clear()
    t = Track(EPOCH, 7)
    lost, more = apply_page(TOPIC, t, Page(None, 0, 1, []), decode, out)
    assert lost is not None
    assert "reset" in lost.reason
    assert (lost.first_available, more, t.epoch, t.offset) == (None, False, None, 0)
    # The first message of the new history is accepted and its epoch learnt.
    t.held = [live(1, EPOCH + 5), live(2, EPOCH + 5)]
    t.recovering = True
    release(t, out)
    assert ([m.offset for m in out], t.epoch, t.recovering) == ([1, 2], EPOCH + 5, False)


@given(st.data())
def test_a_history_trimmed_between_reads_costs_one_report(data: st.DataObject) -> None:
    """Every read finds the front of the history moved on (publishes trim it between reads):
    still exactly one HistoryLost, from the last offset delivered to the first delivered after
    it, then every later offset once, from the page in hand."""
    kept = data.draw(st.integers(5, 40), label="kept")
    position = data.draw(st.integers(0, 20), label="position")
    per_read = data.draw(st.integers(1, 4), label="published between reads")
    limit = data.draw(st.integers(per_read + 1, 12), label="read limit")
    published = position + kept + data.draw(st.integers(1, 30), label="beyond the history")
    t = Track(EPOCH, position)
    t.recovering = True
    out: list[Message] = []
    reports: list[tuple[int, HistoryLost]] = []
    for _ in range(1000):
        first = max(1, published - kept + 1)
        envs = [envelope(o) for o in range(max(t.offset + 1, first), published + 1)][:limit]
        before = len(out)
        report, _ = apply_page(TOPIC, t, Page(EPOCH, published, first, envs), decode, out)
        if report is not None:
            reports.append((before, report))
        if t.offset >= published:
            break
        published += per_read  # the next read finds the history trimmed further
    else:
        raise AssertionError(f"no end after 1000 reads: {len(reports)} reports")
    offsets = [m.offset for m in out if isinstance(m.offset, int)]
    assert len(offsets) == len(out)
    assert len(reports) == 1, [(r.last_offset, r.first_available) for _, r in reports]
    (at, lost) = reports[0]
    assert at == 0  # reported before the first message it bounds
    assert lost.last_offset == position
    assert lost.first_available == offsets[0] > position + 1
    assert offsets == list(range(offsets[0], published + 1))


def test_a_jump_inside_the_history_is_reported_and_passed() -> None:
    """Offsets missing inside a page (a damaged history) are one report and delivery goes on;
    reading the same page again would never end."""
    t = Track(EPOCH, 2)
    out: list[Message] = []
    page = Page(EPOCH, 9, 3, [envelope(3), envelope(4), envelope(8), envelope(9)])
    lost, _ = apply_page(TOPIC, t, page, decode, out)
    assert [m.offset for m in out] == [3, 4]
    assert lost is None
    lost, _ = apply_page(TOPIC, t, Page(EPOCH, 9, 3, [envelope(8), envelope(9)]), decode, out)
    assert lost is not None
    assert (lost.last_offset, lost.first_available) == (4, 8)
    assert [m.offset for m in out] == [3, 4, 8, 9]
