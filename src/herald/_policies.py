"""Topic policies: how each topic is published, stored in Redis so that every client agrees.

A policy lives in the hash ``herald:topics`` (topic -> JSON :class:`~herald.TopicPolicy`), with
a version key bumped on every change. A client loads them all when it connects, and again when
the version moved (watched every ``policy_refresh`` seconds, and checked before a subscription
or a consumer starts); a change clears the client's cached routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from herald._core.history import check_history
from herald._core.streams import (
    DEAD_SUFFIX,
    TOPICS_KEY,
    TOPICS_VERSION_KEY,
    DurableTopic,
    check_policy,
    dead_topic,
    differing_fields,
)
from herald._core.topics import check_user_name, is_pattern, match, validate_topic
from herald._durable.publish import Scripts
from herald._durable.publish import declare as durable_declare

from ._errors import ConfigurationError, PermissionDenied
from ._models import DEAD_POLICY, TopicPolicy, policy_decode

log = logging.getLogger("herald")

Execute = Callable[..., Awaitable[Any]]
_DENIED = b"denied"  # the version of a registry this client may not read


class Policies:
    """The policies of every declared topic, as this client last loaded them."""

    def __init__(self) -> None:
        self.by_topic: dict[str, TopicPolicy] = {}
        self.version: bytes | None = None

    def get(self, topic: str) -> TopicPolicy | None:
        return self.by_topic.get(topic)

    async def load(self, execute: Execute) -> bool:
        """Read every policy; return whether they changed.

        An ACL user who may not read the registry gets a warning (once) and every topic is
        treated as live."""
        try:
            version, raw = await asyncio.gather(
                execute("GET", TOPICS_VERSION_KEY), execute("HGETALL", TOPICS_KEY)
            )
        except PermissionDenied as exc:
            if self.version != _DENIED:
                log.warning(
                    "cannot read topic policies (%s, %s): every topic is treated as live; "
                    "grant read access to these keys (%s)",
                    TOPICS_KEY,
                    TOPICS_VERSION_KEY,
                    exc,
                )
            self.version = _DENIED
            return False
        policies: dict[str, TopicPolicy] = {}
        it = iter(raw)
        for k, v in zip(it, it, strict=True):
            try:
                policies[k.decode()] = policy_decode(v)
            except (msgspec.DecodeError, UnicodeDecodeError):
                log.warning("ignoring undecodable policy of topic %r in %s", k, TOPICS_KEY)
        self.version = version
        if policies == self.by_topic:
            return False
        self.by_topic = policies
        return True

    async def refresh(self, execute: Execute) -> bool:
        """Load the policies again if their version moved; return whether they changed."""
        version = await execute("GET", TOPICS_VERSION_KEY)
        return version != self.version and await self.load(execute)

    def recoverable_among(self, names: Iterable[str]) -> dict[str, str | None]:
        """The recoverable topics among ``names`` and matched by its patterns (-> pattern)."""
        found: dict[str, str | None] = {}
        for name in names:
            if is_pattern(name):
                for topic, p in self.by_topic.items():
                    if p.history and topic not in found and match(name, topic):
                        found[topic] = name
            elif (policy := self.by_topic.get(name)) is not None and policy.history:
                found[name] = None
        return found

    def unsharded(self) -> set[bytes]:
        """The channels of topics declared ``sharded=False`` (plain SUBSCRIBE clients read them)."""
        return {t.encode() for t, p in self.by_topic.items() if not p.sharded}


def new_policy(
    topic: str,
    *,
    bare: bool,
    sharded: bool,
    durable: bool,
    max_len: int | None,
    max_age: float | None,
    dedup_window: float,
    trim_unacked: bool,
    history: int,
    history_ttl: float | None,
    fsync: bool,
) -> TopicPolicy:
    """A checked policy for ``topic`` (``declare``'s arguments)."""
    validate_topic(topic)
    check_user_name(topic)  # a policy on an inbox (bare, durable) would break its replies
    check_policy(durable, max_len, max_age, dedup_window, trim_unacked)
    if fsync and not durable:
        raise ConfigurationError("fsync applies to durable topics")
    check_history(history, history_ttl, durable=durable, bare=bare)
    return TopicPolicy(
        bare=bare,
        sharded=sharded,
        durable=durable,
        max_len=max_len,
        max_age=None if max_age is None else float(max_age),
        dedup_window=float(dedup_window),
        trim_unacked=trim_unacked,
        history=history,
        history_ttl=None if history_ttl is None else float(history_ttl),
        fsync=fsync,
    )


async def store(scripts: Scripts, topic: str, policy: TopicPolicy, update: bool) -> None:
    """Store ``policy`` (and, for a durable topic, its dead-letter topic's, unless declared).

    Raises:
        ConfigurationError: the topic is declared with other settings and ``update`` is false.
    """
    dead = dead_topic(topic) if policy.durable and not topic.endswith(DEAD_SUFFIX) else ""
    if dead:
        validate_topic(dead)
    current = await durable_declare(
        scripts, topic, msgspec.json.encode(policy), update, dead, DEAD_POLICY
    )
    if current is not None:
        stored = policy_decode(current)
        if stored != policy:
            diff = ", ".join(
                f"{f}={getattr(stored, f)!r} (not {getattr(policy, f)!r})"
                for f in differing_fields(stored, policy)
            )
            raise ConfigurationError(
                f"topic {topic!r} is declared with {diff}; pass update=True to change it"
            )


def durable_topic(topic: str, policy: TopicPolicy) -> DurableTopic:
    """The stream settings of a durable topic, from its policy."""
    return DurableTopic(
        topic,
        max_len=policy.max_len,
        max_age=policy.max_age,
        dedup_window=policy.dedup_window,
        trim_unacked=policy.trim_unacked,
        fsync=policy.fsync,
        policy_json=msgspec.json.encode(policy),
        dead_json=b"" if topic.endswith(DEAD_SUFFIX) else DEAD_POLICY,
    )
