"""Reconnect backoff policy (sans-I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": a delay drawn between half and all of the ceiling.

    ``next()`` returns the delay before the next attempt; ``reset()`` after a success.
    """

    base: float = 0.05
    cap: float = 2.0
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
