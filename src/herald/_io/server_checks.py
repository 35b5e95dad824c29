"""What a client checks of the server it connects to: limits that decide whether data can be
lost without anyone noticing."""

from __future__ import annotations

import logging
from typing import Any

from herald._errors import HeraldError, ServerError

from .group import LinkGroup
from .interface import Connection

log = logging.getLogger("herald")


async def check_server_limits(
    link: Connection,
) -> tuple[tuple[int, int, int] | None, bool | None]:
    """Read the server's Pub/Sub output-buffer limit (the point where it cuts a slow reader),
    returned as (hard, soft, soft seconds) if readable, and whether it persists its data
    (``None``: not known); warn about a limit of 0 and about a ``maxmemory-policy`` that
    evicts keys. A cluster or sharded client checks every primary or shard (the first one's
    limit is returned; it persists only if every one does; each warning is logged once)."""
    members = list(link.members) if isinstance(link, LinkGroup) else [link]
    results = [await _read_limits(member) for member in members]
    for warning in dict.fromkeys(w for *_, warnings in results for w in warnings):
        log.warning("%s", warning)
    kept = [persistent for _, persistent, _ in results]
    persistent = False if False in kept else (None if None in kept else True)
    return results[0][0], persistent


async def _read_limits(
    link: Connection,
) -> tuple[tuple[int, int, int] | None, bool | None, list[str]]:
    """One server's pubsub limit, whether it persists, and the warnings it calls for."""
    warnings: list[str] = []
    try:
        reply = await link.execute("CONFIG", "GET", "client-output-buffer-limit")
    except HeraldError:
        return None, None, warnings  # CONFIG may be refused by the ACL; nothing to learn then
    limit = _pubsub_limit(reply)
    hard = limit[0] if limit else None
    if hard == 0:
        warnings.append(
            "the server has no client-output-buffer-limit for pubsub: a stalled subscriber "
            "can grow the server's memory without bound"
        )
    # An evicting policy loses data silently when memory is full; noeviction refuses writes,
    # which publishers see (ServerError "OOM ...").
    # One round trip for the rest: a connect costs no more for the persistence check.
    try:
        try:
            reply = await link.execute("CONFIG", "GET", "maxmemory-policy", "appendonly", "save")
        except ServerError:  # before Redis 7, one parameter per CONFIG GET: no persistence check
            reply = await link.execute("CONFIG", "GET", "maxmemory-policy")
        config = _config(reply)
        policy = config.get("maxmemory-policy", "")
    except (HeraldError, AttributeError, ValueError, UnicodeDecodeError):
        return limit, None, warnings
    persistent = persists(config) if {"appendonly", "save"} <= config.keys() else None
    if policy.startswith(("allkeys-", "volatile-")):
        victims = (
            "durable streams, history and topic policies among them"
            if policy.startswith("allkeys-")
            else "idempotency keys among them (duplicates within the dedup window)"
        )
        warnings.append(
            f"the server's maxmemory-policy is {policy}: when memory is full it evicts keys, "
            f"{victims}; set it to noeviction so that publishes fail visibly instead"
        )
    return limit, persistent, warnings


def _pubsub_limit(reply: Any) -> tuple[int, int, int] | None:
    # reply: [b"client-output-buffer-limit", b"normal 0 0 0 replica ... pubsub 33554432 8388608 60"]
    try:
        words = reply[1].decode().split()
        i = words.index("pubsub")
        return int(words[i + 1]), int(words[i + 2]), int(words[i + 3])
    except (IndexError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def _config(reply: Any) -> dict[str, str]:
    """A ``CONFIG GET`` reply (a flat list, or a map with RESP3) as a dict."""
    if isinstance(reply, dict):
        return {k.decode(): v.decode() for k, v in reply.items()}
    it = iter(reply)
    return {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}


def persists(config: dict[str, str]) -> bool:
    """Whether a server with this ``appendonly`` and ``save`` configuration keeps its data
    across a restart: AOF on, or at least one RDB save point.

    >>> persists({"appendonly": "no", "save": ""})
    False
    >>> persists({"appendonly": "no", "save": "3600 1 300 100"})
    True
    """
    return config["appendonly"].lower() == "yes" or bool(config["save"].strip())


def warn_volatile(topic: str) -> None:
    """The warning for a durable topic used on a server without persistence."""
    log.warning(
        "durable topic %r used on a server without persistence (appendonly no, no save "
        "points): a restart of the server loses every stored message and every consumer "
        "group's position; turn on AOF (appendonly yes)",
        topic,
    )
