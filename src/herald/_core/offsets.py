"""Stream positions, sans-I/O: entry ids, points in time, and the range bounds made of them.

A durable topic's offset is its stream's entry id, ``"<ms>-<seq>"``: the milliseconds since the
epoch at which the server stored the entry, and a sequence within that millisecond. So a point
in time is a position too: ``<ms>-0`` is the first id stored at or after it.
"""

from __future__ import annotations

import re
from datetime import datetime

from herald._errors import ConfigurationError

MAX_SEQ = 2**64 - 1
_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")

# Where reading starts or ends: an entry id, a datetime (naive: local time), or seconds since
# the epoch.
Position = str | datetime | int | float


def parse_id(value: object) -> tuple[int, int]:
    """``"1700000000000-3"`` -> (1700000000000, 3); ``"1700000000000"`` -> (..., 0).

    Raises:
        ConfigurationError: not an entry id.
    """
    m = _ID.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigurationError(f"{value!r} is not an entry id (<ms>-<seq>)")
    ms, seq = int(m.group(1)), int(m.group(2) or 0)
    if ms > MAX_SEQ or seq > MAX_SEQ:
        raise ConfigurationError(f"{value!r} is not an entry id: out of range")
    return ms, seq


def format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def normalize_id(value: str) -> str:
    """The full form of an entry id: ``"17"`` -> ``"17-0"``."""
    return format_id(*parse_id(value))


def previous_id(value: str) -> str | None:
    """The largest id below ``value`` (``None`` below ``0-0``): reading *after* it reads
    *from* ``value``.

    >>> previous_id("17-3"), previous_id("17-0"), previous_id("0-0")
    ('17-2', '16-18446744073709551615', None)
    """
    ms, seq = parse_id(value)
    if seq:
        return format_id(ms, seq - 1)
    if ms:
        return format_id(ms - 1, MAX_SEQ)
    return None


def to_ms(when: datetime | int | float) -> int:
    """Milliseconds since the epoch of a datetime (naive: local time) or of epoch seconds."""
    if isinstance(when, bool):
        raise ConfigurationError("a point in time must be a datetime or seconds, not a bool")
    seconds = when.timestamp() if isinstance(when, datetime) else float(when)
    if not seconds >= 0:
        raise ConfigurationError(f"a point in time must be >= 0 seconds, not {when!r}")
    return round(seconds * 1_000_000) // 1000  # via microseconds: 0.924 s is 924 ms, not 923


def id_time(entry_id: str) -> float:
    """When an entry was stored: seconds since the epoch, from its id."""
    return parse_id(entry_id)[0] / 1000


def start_bound(since: Position | None) -> str:
    """XRANGE's start for entries *after* an entry id, or stored *at or after* a time."""
    if since is None:
        return "-"
    if isinstance(since, str):
        return "(" + normalize_id(since)
    return format_id(to_ms(since), 0)


def end_bound(until: Position | None) -> str:
    """XRANGE's end for entries up to an entry id (included), or stored up to a time."""
    if until is None:
        return "+"
    if isinstance(until, str):
        return normalize_id(until)
    return format_id(to_ms(until), MAX_SEQ)


def group_start(start: Position) -> str:
    """XGROUP CREATE's id for a new group: ``"new"`` (``$``), ``"all"`` (``0``), after an entry
    id, or from a point in time (the group's last delivered id is set just before it)."""
    if start == "new":
        return "$"
    if start == "all":
        return "0"
    if isinstance(start, str):
        try:
            return normalize_id(start)
        except ConfigurationError:
            raise ConfigurationError(
                f"invalid start {start!r}: use 'new', 'all', an entry id or a datetime"
            ) from None
    return previous_id(format_id(to_ms(start), 0)) or "0"
