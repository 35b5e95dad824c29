"""Message accounting in the manner of Jepsen's queue checker (sans-I/O: no sockets, no asyncio).

Every publisher sends ``(publisher id, sequence number, idempotency key)``; every publish is
logged as an operation whose outcome is ``ok`` (the server acknowledged it), ``failed`` (it
certainly did not happen: refused, or never sent) or ``unknown`` (the connection died with it in
flight). Readers log every delivery. After a drain phase, :meth:`Checker.report` compares the
two histories:

- **lost**: acknowledged, never delivered to a reader; split by where the hole is in the
  publisher's sequence as the reader saw it: ``prefix`` (before the first message it got),
  ``middle``, ``postfix`` (after the last);
- **unexpected**: delivered, but never published, or published with a certain failure;
- **recovered**: outcome unknown, yet delivered (it did happen);
- **duplicates**: deliveries of a message beyond its first, per reader; ``redeliveries`` are the
  ones the system itself marked as such (a durable message's ``deliveries > 1``);
  ``duplicates_after_dedup``: side effects applied more than once (see :meth:`Checker.effect`);
- **reordered**: first deliveries, per reader, consumer and publisher, that came after a higher
  sequence number of the same publisher;
- **gaps**: runs of consecutive messages a reader missed (``happened``) and how many of them
  were reported exactly (``detected``): by a ``Gap`` whose window holds the publish of every
  message of the run; by exactly one ``HistoryLost``, in sequence, whose ``last_offset`` and
  ``first_available`` are the offsets delivered just before and just after it; or (reports
  with neither, e.g. ``PositionTrimmed``) by a report between the deliveries around the run.
  Also counted: ``silent_skips`` (a recoverable reader's offsets jump with no report),
  ``repeated`` (a hole reported more than once, or the same window twice), ``bad_bounds``
  (a ``HistoryLost`` whose offsets are not those delivered around it, or that bounds no
  loss), ``uncovered`` (missed messages published outside every ``Gap`` window);
- **time to recover**, **throughput** and **latency** (p50, p99), overall and during faults.

A *reader* is one logical stream of deliveries that should see every message: one live
subscription, or one consumer group (its consumers together).

Example::

    checker = Checker("server-kill")
    op = checker.invoke("p1", 1)
    checker.ok(op)
    checker.deliver("p1", 1, reader="group", consumer="c1")
    assert checker.report()["lost"] == 0
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["pending", "ok", "failed", "unknown"]


@dataclass(slots=True)
class Op:
    """One logical publish (retries of it with the same idempotency key included)."""

    publisher: str
    seq: int
    key: str
    invoked: float
    topic: str | None = None
    completed: float | None = None
    outcome: Outcome = "pending"
    attempts: int = 0
    error: str | None = None
    in_doubt: int = 0  # attempts whose outcome was unknown (retried with the same key)


@dataclass(slots=True)
class Delivery:
    publisher: str
    seq: int
    reader: str
    consumer: str
    at: float
    redelivered: bool
    offset: int | None = None  # a recoverable topic's offset


@dataclass(slots=True)
class Fault:
    name: str
    start: float
    end: float | None = None
    publishers: tuple[str, ...] | None = None  # whose publishes it hits (None: everyone's)


ReportKind = Literal["window", "history", "other"]


@dataclass(slots=True)
class GapReport:
    reader: str
    since: float
    until: float
    reason: str
    at: float  # when the reader was told
    kind: ReportKind = "other"  # a Gap's window, a HistoryLost's offsets, or neither
    position: int = 0  # deliveries the reader had logged when told (HistoryLost: in sequence)
    last_offset: int | None = None
    first_available: int | None = None
    detected: float | None = None  # when the loss was noticed (a Gap's ``detected``)


@dataclass
class Checker:
    """Collects the history of one scenario and reports on it (see the module docstring).

    Times are ``time.time()`` seconds, as in :class:`herald.Gap`.
    """

    name: str
    ops: dict[tuple[str, int], Op] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    gap_reports: list[GapReport] = field(default_factory=list)
    effects: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    readers: dict[str, str | None] = field(default_factory=dict)  # reader -> its topic
    started: float = field(default_factory=time.time)
    gap_slack: float = 1.0  # seconds around a report without bounds still counted as near
    window_slack: float = 0.05  # seconds around a Gap window (publish latency, clock steps)
    _delivered: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    # -- the publishers' side --------------------------------------------------------------

    def invoke(
        self, publisher: str, seq: int, key: str | None = None, topic: str | None = None
    ) -> Op:
        """A publish is about to be sent (its first attempt)."""
        op = Op(publisher, seq, key or f"{publisher}-{seq}", time.time(), topic)
        self.ops[(publisher, seq)] = op
        return op

    def attempt(self, op: Op) -> None:
        op.attempts += 1

    def in_doubt(self, op: Op) -> None:
        """An attempt's outcome was unknown; the publisher retries it with the same key."""
        op.in_doubt += 1

    def ok(self, op: Op, at: float | None = None) -> None:
        op.outcome, op.completed = "ok", at or time.time()

    def fail(self, op: Op, error: str, at: float | None = None) -> None:
        """It certainly did not happen (refused, never sent)."""
        op.outcome, op.completed, op.error = "failed", at or time.time(), error

    def unknown(self, op: Op, error: str, at: float | None = None) -> None:
        """It may or may not have happened (the connection died with it in flight)."""
        op.outcome, op.completed, op.error = "unknown", at or time.time(), error

    # -- the readers' side -----------------------------------------------------------------

    def reader(self, name: str, topic: str | None = None) -> None:
        """Declare a reader that must see every message (of ``topic``, if given), even one
        that ends up seeing none."""
        self.readers[name] = topic

    def deliver(
        self,
        publisher: str,
        seq: int,
        *,
        reader: str,
        consumer: str | None = None,
        redelivered: bool = False,
        at: float | None = None,
        offset: int | None = None,
    ) -> None:
        self.readers.setdefault(reader, None)
        self._delivered[reader] += 1
        self.deliveries.append(
            Delivery(
                publisher, seq, reader, consumer or reader, at or time.time(), redelivered, offset
            )
        )

    def effect(self, key: str) -> None:
        """A side effect of handling message ``key`` was applied (after consumer-side dedup)."""
        self.effects[key] += 1

    def gap(
        self,
        reader: str,
        since: float | None = None,
        until: float | None = None,
        reason: str = "",
        at: float | None = None,
        detected: float | None = None,
    ) -> None:
        """A reader was told (now, or ``at``) that it may have missed messages: a ``Gap``
        (messages published in ``[since, until]`` may be missed), or, with neither, a report
        without bounds (``PositionTrimmed``): judged by when it came."""
        now = at or time.time()
        kind: ReportKind = "window" if since is not None and until is not None else "other"
        self.gap_reports.append(
            GapReport(
                reader,
                now if since is None else since,
                now if until is None else until,
                reason,
                now,
                kind,
                self._delivered[reader],
                detected=detected,
            )
        )

    def history_lost(
        self,
        reader: str,
        last_offset: int,
        first_available: int | None,
        reason: str = "",
        at: float | None = None,
    ) -> None:
        """A recoverable reader got a ``HistoryLost`` in its sequence, after the deliveries
        logged so far: its bounds are checked against the offsets delivered around it."""
        now = at or time.time()
        self.gap_reports.append(
            GapReport(
                reader,
                now,
                now,
                reason,
                now,
                "history",
                self._delivered[reader],
                last_offset,
                first_available,
            )
        )

    # -- faults ----------------------------------------------------------------------------

    def fault_start(self, name: str, publishers: tuple[str, ...] | None = None) -> Fault:
        fault = Fault(name, time.time(), publishers=publishers)
        self.faults.append(fault)
        return fault

    def fault_end(self, fault: Fault) -> None:
        fault.end = time.time()

    @contextmanager
    def fault(self, name: str, publishers: tuple[str, ...] | None = None) -> Iterator[Fault]:
        f = self.fault_start(name, publishers)
        try:
            yield f
        finally:
            self.fault_end(f)

    # -- drain -----------------------------------------------------------------------------

    def missing(self, reader: str) -> int:
        """Acknowledged messages ``reader`` has not received yet (for a drain loop)."""
        got = {(d.publisher, d.seq) for d in self.deliveries if d.reader == reader}
        return sum(
            1 for k, op in self._ops_of(reader).items() if op.outcome == "ok" and k not in got
        )

    def _ops_of(self, reader: str) -> dict[tuple[str, int], Op]:
        topic = self.readers.get(reader)
        if topic is None:
            return self.ops
        return {k: op for k, op in self.ops.items() if op.topic == topic}

    # -- the report ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        ended = time.time()
        ops = list(self.ops.values())
        counts = {o: sum(1 for op in ops if op.outcome == o) for o in ("ok", "failed", "unknown")}
        by_reader: dict[str, list[Delivery]] = defaultdict(list)
        for d in self.deliveries:
            by_reader[d.reader].append(d)
        lost = {"prefix": 0, "middle": 0, "postfix": 0}
        unexpected = recovered_total = duplicates = redeliveries = reordered = 0
        gaps_happened = gaps_detected = 0
        strict = {"silent_skips": 0, "repeated": 0, "bad_bounds": 0, "uncovered": 0}
        unknown_missing = 0
        per_reader: dict[str, dict[str, Any]] = {}
        for reader in sorted(self.readers):
            ds = by_reader.get(reader, [])
            reader_ops = self._ops_of(reader)
            seen: dict[tuple[str, int], int] = defaultdict(int)
            for d in ds:
                seen[(d.publisher, d.seq)] += 1
                if d.redelivered:
                    redeliveries += 1
            duplicates += sum(n - 1 for n in seen.values())
            for key in seen:
                op = reader_ops.get(key)
                if op is None or op.outcome in ("failed", "pending"):
                    unexpected += 1
                elif op.outcome == "unknown":
                    recovered_total += 1
            unknown_missing += sum(
                1 for k, op in reader_ops.items() if op.outcome == "unknown" and k not in seen
            )
            split = _lost_split(reader_ops, seen)
            for where, n in split.items():
                lost[where] += n
            reordered += _reordered(ds)
            reports = [g for g in self.gap_reports if g.reader == reader]
            found = _gaps(reader_ops, ds, reports, self.gap_slack, self.window_slack)
            if any(g.kind == "history" for g in reports) or any(d.offset is not None for d in ds):
                found.update(_history_sequence(ds, [g for g in reports if g.kind == "history"]))
            happened, detected = found.pop("happened"), found.pop("detected")
            gaps_happened += happened
            gaps_detected += detected
            for k in strict:
                strict[k] += found.get(k, 0)
            per_reader[reader] = {
                "topic": self.readers[reader],
                "delivered": len(seen),
                "lost": sum(split.values()),
                "gaps_happened": happened,
                "gaps_detected": detected,
                **found,
            }
        n_readers = max(1, len(self.readers))
        latencies = sorted(
            op.completed - op.invoked for op in ops if op.outcome == "ok" and op.completed
        )
        report: dict[str, Any] = {
            "scenario": self.name,
            "duration_s": round(ended - self.started, 3),
            "readers": per_reader,
            "ops": {
                "attempted": len(ops),
                **counts,
                "retries": sum(max(0, op.attempts - 1) for op in ops),
                "ok_after_unknown_attempt": sum(
                    1 for op in ops if op.in_doubt and op.outcome == "ok"
                ),
            },
            "deliveries": len(self.deliveries),
            "lost": sum(lost.values()),
            "lost_split": lost,
            "unexpected": unexpected,
            "recovered": recovered_total,
            "recovered_pct": _pct(recovered_total, counts["unknown"] * n_readers),
            "unknown_not_delivered": unknown_missing,
            "duplicates": duplicates,
            "redeliveries": redeliveries,
            "duplicates_after_dedup": sum(n - 1 for n in self.effects.values() if n > 1),
            "reordered": reordered,
            "gaps": {
                "happened": gaps_happened,
                "detected": gaps_detected,
                "detected_pct": _pct(gaps_detected, gaps_happened),
                "reports": len(self.gap_reports),
                **strict,
                "exact": gaps_detected == gaps_happened and not any(strict.values()),
            },
            "latency_ms": {
                "p50": _ms(_quantile(latencies, 0.50)),
                "p99": _ms(_quantile(latencies, 0.99)),
                "max": _ms(latencies[-1] if latencies else None),
            },
            "throughput_per_s": _rate(ops, self.started, ended),
            "faults": [],
        }
        for f in self.faults:
            report["faults"].append(self._fault_figures(f, ops, ended))
        recoveries = [f["time_to_recover_s"] for f in report["faults"]]
        report["time_to_recover_s"] = (
            None if not recoveries or None in recoveries else max(recoveries)
        )
        return report

    def _fault_figures(self, f: Fault, ops: list[Op], ended: float) -> dict[str, Any]:
        end = f.end or ended
        hit = [op for op in ops if f.publishers is None or op.publisher in f.publishers]
        keys = {(op.publisher, op.seq) for op in hit}
        done = [op.completed for op in hit if op.outcome == "ok" and op.completed]
        seen = [d.at for d in self.deliveries if (d.publisher, d.seq) in keys]
        # Recovered when publishes complete and messages arrive again after the longest
        # silence that began during the fault.
        resumed = [t for t in (_resumed(done, f.start, end), _resumed(seen, f.start, end)) if t]
        recover = max(resumed) - f.start if resumed else None
        window_end = max(end, f.start + recover if recover is not None else end)
        during = sorted(
            op.completed - op.invoked
            for op in hit
            if op.outcome == "ok" and op.completed and f.start <= op.invoked <= window_end
        )
        return {
            "name": f.name,
            "at_s": round(f.start - self.started, 3),
            "duration_s": round(end - f.start, 3),
            "time_to_recover_s": None if recover is None else round(recover, 3),
            "throughput_per_s": _rate(hit, f.start, window_end),
            "p99_ms": _ms(_quantile(during, 0.99)),
        }


def _resumed(times: list[float], start: float, end: float) -> float | None:
    """The first time after the longest silence in ``times`` that began in ``[start, end]``."""
    later = sorted(t for t in times if t >= start)
    best: tuple[float, float] | None = None
    prev = start
    for t in later:
        if prev <= end and (best is None or t - prev > best[0]):
            best = (t - prev, t)
        prev = t
    return None if best is None else best[1]


def _lost_split(ops: dict[tuple[str, int], Op], seen: dict[tuple[str, int], int]) -> dict[str, int]:
    lost = {"prefix": 0, "middle": 0, "postfix": 0}
    got_by_pub: dict[str, list[int]] = defaultdict(list)
    for pub, seq in seen:
        got_by_pub[pub].append(seq)
    bounds = {p: (min(s), max(s)) for p, s in got_by_pub.items()}
    for (pub, seq), op in ops.items():
        if op.outcome != "ok" or (pub, seq) in seen:
            continue
        lo, hi = bounds.get(pub, (math.inf, -math.inf))
        if seq < lo:
            lost["prefix"] += 1
        elif seq > hi:
            lost["postfix"] += 1
        else:
            lost["middle"] += 1
    return lost


def _reordered(ds: list[Delivery]) -> int:
    highest: dict[tuple[str, str], int] = {}
    first: set[tuple[str, str, int]] = set()
    n = 0
    for d in ds:
        if d.redelivered or (d.consumer, d.publisher, d.seq) in first:
            continue
        first.add((d.consumer, d.publisher, d.seq))
        k = (d.consumer, d.publisher)
        if d.seq < highest.get(k, -1):
            n += 1
        else:
            highest[k] = d.seq
    return n


def _gaps(
    ops: dict[tuple[str, int], Op],
    ds: list[Delivery],
    reports: list[GapReport],
    slack: float,
    window_slack: float,
) -> dict[str, int]:
    """Runs of missed messages and how many were reported, for one reader.

    A run is a stretch of one publisher's sequence the reader never got, holding at least one
    acknowledged message (certain failures are not missed; unknown outcomes may have been
    published). It is detected when every acknowledged message of it was published (between
    its invocation and its acknowledgement) inside a ``Gap`` window, ``window_slack`` either
    side; or, for reports with no window (``PositionTrimmed``), when one came between the
    delivery just before the run and the one just after it (``slack`` either side). A
    ``HistoryLost`` reader is judged by offsets instead (:func:`_history_sequence`).
    """
    first: dict[tuple[str, int], float] = {}
    for d in ds:
        first.setdefault((d.publisher, d.seq), d.at)
    by_pub: dict[str, list[Op]] = defaultdict(list)
    for op in ops.values():
        if op.outcome in ("ok", "unknown"):
            by_pub[op.publisher].append(op)
    windows = [
        (g.since - window_slack, g.until + window_slack) for g in reports if g.kind == "window"
    ]
    told = sorted(g.at for g in reports if g.kind == "other")
    repeated = len(windows) - len(set(windows))

    def inside(op: Op) -> bool:
        lo, hi = op.invoked, op.completed or op.invoked
        return any(since <= hi and lo <= until for since, until in windows)

    happened = detected = uncovered = 0
    for pub_ops in by_pub.values():
        pub_ops.sort(key=lambda op: op.seq)
        before = -math.inf
        run: list[Op] = []
        entries: list[Op | None] = [*pub_ops, None]
        for entry in entries:
            at = None if entry is None else first.get((entry.publisher, entry.seq))
            if entry is not None and at is None:
                run.append(entry)
                continue
            acked = [o for o in run if o.outcome == "ok"]
            if acked:
                happened += 1
                after = math.inf if at is None else at
                outside = sum(1 for o in acked if not inside(o))
                if windows:
                    uncovered += outside
                if (windows and not outside) or any(
                    before - slack <= t <= after + slack for t in told
                ):
                    detected += 1
            run = []
            if at is not None:
                before = at
    return {
        "happened": happened,
        "detected": detected,
        "repeated": repeated,
        "uncovered": uncovered,
    }


def _history_sequence(ds: list[Delivery], reports: list[GapReport]) -> dict[str, int]:
    """A recoverable reader's offsets, in delivery order, against its ``HistoryLost`` reports
    placed between them: every hole must be reported exactly once, at the hole, with
    ``last_offset`` the offset delivered just before and ``first_available`` the one just
    after; offsets must otherwise go up by one (a jump with no report is a silent skip)."""
    by_position: dict[int, list[GapReport]] = defaultdict(list)
    for g in reports:
        by_position[g.position].append(g)
    offsets = [d.offset for d in ds]
    happened = detected = silent = repeated = bad = 0
    prev: int | None = None
    for i in range(len(offsets) + 1):
        nxt = offsets[i] if i < len(offsets) else None
        told = by_position.get(i, [])
        if told:
            happened += 1
            repeated += len(told) - 1
            g = told[0]
            assert g.last_offset is not None
            exact = (
                (prev is None or g.last_offset == prev)
                and (nxt is None or g.first_available == nxt)
                and (g.first_available is None or g.first_available > g.last_offset + 1)
            )
            if exact and len(told) == 1:
                detected += 1
            elif not exact:
                bad += 1
        elif prev is not None and nxt is not None and nxt > prev + 1:
            happened += 1
            silent += 1
        if nxt is not None:
            prev = nxt
    return {
        "happened": happened,
        "detected": detected,
        "silent_skips": silent,
        "repeated": repeated,
        "bad_bounds": bad,
    }


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


def _rate(ops: list[Op], start: float, end: float) -> float:
    n = sum(1 for op in ops if op.outcome == "ok" and op.completed and start <= op.completed <= end)
    return round(n / (end - start), 1) if end > start else 0.0
