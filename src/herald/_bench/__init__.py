"""Benchmarks of Herald next to its peers, run side by side on one machine and one server.

``live`` (live pub/sub) is the first: see :func:`herald._bench.live.run_live`. Every number is
measured in one run, because publisher, server and subscriber share the machine's cores and
absolute figures move with whatever else runs; the ratios between rows are what carries over.
"""

from __future__ import annotations

__all__: list[str] = []
