"""Benchmarks of Herald next to its peers, run side by side on one machine and one server.

``live`` (live pub/sub, :func:`herald_bench.live.run_live`), ``request`` (request/reply)
and ``durable`` (durable topics, :func:`herald_bench.durable.run_durable`). Every number is
measured in one run, because publisher, server and subscriber share the machine's cores and
absolute figures move with whatever else runs; the ratios between rows are what carries over.
"""

from __future__ import annotations

__all__: list[str] = []
