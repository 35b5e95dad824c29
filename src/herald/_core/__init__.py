"""The sans-I/O core: wire format, RESP, topics, URLs, offsets, slots, messages, and the
keys, scripts and bookkeeping of durable and recoverable topics. Imports nothing above it."""

from __future__ import annotations
