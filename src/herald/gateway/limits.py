"""Publish rate limits: a token bucket per WebSocket connection, and per token or address
for HTTP (bounded: the least recently used buckets are forgotten first)."""

from __future__ import annotations

import time
from collections import OrderedDict


class Bucket:
    """Token bucket: ``rate`` per second, up to ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class KeyedBuckets:
    """One :class:`Bucket` per key (a token's subject, a client address), ``max_keys`` at most.

    Forgetting a bucket refills it, so ``max_keys`` must exceed the callers active at once;
    a full bucket of each costs ~100 bytes.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.rate, self.burst)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()

    def __len__(self) -> int:
        return len(self._buckets)
