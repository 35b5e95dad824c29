"""Content-based routing: republish each message of a source topic on the topic(s) its
content chooses, as a durable consumer (nothing lost across restarts) or a live subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from herald._core.durable_message import DurableMessage
from herald._core.message import Message
from herald._core.offsets import Position
from herald._core.rules import Predicate, Target, condition
from herald._core.topics import RESERVED_HEADER, is_pattern, match
from herald._core.wire import Foreign, check_foreign

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from herald._durable.consumer import Consumer
    from herald._pubsub.subscription import Subscription

    from ._client import AsyncClient

log = logging.getLogger("herald")

# What a predicate may raise on a message of another shape (m.data["total"] on a list, on an
# order without a total): the rule does not match it. Anything else is a bug: it propagates.
_NO_MATCH = (LookupError, TypeError, ValueError, AttributeError)


@dataclass
class Rule:
    """One routing rule: messages for which ``when`` holds go to ``to``.

    Attributes:
        name: the rule's name, its key in :attr:`Router.counters`.
        when: the predicates, all of which must hold (none: every message).
        to: the target topics or templates.
        routed: messages this rule routed.
    """

    name: str
    when: list[Predicate]
    to: list[Target]
    routed: int = 0

    def targets(self, msg: Message) -> list[str] | None:
        """The topics ``msg`` goes to by this rule, or ``None`` if it does not match."""
        for predicate in self.when:
            try:
                if not predicate(msg):
                    return None
            except _NO_MATCH:
                return None
        topics = [t.topic(msg) for t in self.to]
        if None in topics:
            return None  # a template the message cannot fill: the next rule's
        return [t for t in topics if t is not None]


@dataclass
class RouterStats:
    """What a router did, by outcome (per rule: :attr:`Router.counters`)."""

    received: int = 0
    routed: int = 0  # by a rule or the default route
    published: int = 0  # copies published (a rule with several targets makes several)
    unrouted: int = 0  # no rule and no default: dead-lettered (durable) or dropped (live)
    failed: int = 0  # publishing failed: redelivered later (durable) or lost (live)
    rules: dict[str, int] = field(default_factory=dict)


class Router:
    """Republishes each message of ``source`` on the topic(s) chosen by the first rule that
    matches it, else on the default route.

    With ``group`` the router is a durable consumer of ``source`` (a durable topic) in that
    consumer group: a message is acked once it has been published to every target, so a
    router that stops or crashes loses nothing; it resumes where the group left off
    (at-least-once: a message routed just before a crash, not yet acked, is routed again;
    on durable targets the copy carries ``msg_id`` ``"<source>@<offset>"``, so it is stored
    once). Run several with the same ``group`` to share the load. A message no rule matches,
    with no default route, is dead-lettered (``reason`` ``"no route"``).

    Without ``group`` it is a live subscription to ``source`` (a topic or pattern): what is
    published while it is not running is not routed, and a message no rule matches, with no
    default route, is dropped (counted as ``unrouted``).

    A router restarted with the same ``consumer`` name routes the messages it had taken but
    not acked at once; any other member of the group takes them over after ``ack_wait``.
    ``start`` is where a new group starts (``consume``'s: ``"new"``, ``"all"``, an entry id or
    a time); a group that exists goes on from its position. ``concurrency`` and
    ``max_deliver`` are ``consume``'s (several messages routed at once do not keep their
    order). ``foreign`` (``"json"`` by default) decodes payloads published without Herald's envelope
    (redis-py, redis-cli) so that rules see their content. Messages keep their headers and
    type; Herald's own ``herald-*`` headers are not copied.

    Example::

        router = Router(hub, "orders", group="router")
        router.route(lambda m: m.data["total"] > 100, to="orders.big")
        router.route('country == "NZ"', to=["orders.nz", "audit"])
        router.route(to="orders.{region}")  # a template, from the payload
        router.default("orders.rest")
        await router.run()  # until stop() or cancelled
    """

    def __init__(
        self,
        hub: AsyncClient,
        source: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        foreign: Foreign = "json",
        concurrency: int = 1,
        max_deliver: int | None = 5,
        start: Position = "new",
        ack_wait: float = 30.0,
    ) -> None:
        check_foreign(foreign)
        self.hub = hub
        self.source = source
        self.group = group
        self.consumer = consumer
        self.foreign: Foreign = foreign
        self.concurrency = concurrency
        self.max_deliver = max_deliver
        self.start_at: Position = start
        self.ack_wait = ack_wait
        self.rules: list[Rule] = []
        self._default: list[Target] | None = None
        self._dropping = False  # default(None): unmatched messages are dropped on purpose
        self.stats = RouterStats()
        self._running: Consumer | Subscription | None = None
        self._stopped = asyncio.Event()

    # -- declaring ---------------------------------------------------------------------------

    def route(
        self,
        *when: str | Callable[[Message], bool],
        to: str | Iterable[str],
        name: str | None = None,
    ) -> Rule:
        """Add a rule: messages for which every ``when`` holds go to ``to`` (a topic, a
        template such as ``"prices.{sector}"``, or several). Rules are tried in the order
        added; the first that matches routes the message. ``when`` is a function of the
        :class:`Message` or a condition such as ``"total > 100"`` (see ``docs/routing.md``);
        a function that raises ``KeyError``, ``TypeError``, ``ValueError`` or
        ``AttributeError`` does not match. No ``when``: every message.

        Raises:
            ConfigurationError: a condition that does not parse, no target, a target that is
                the source, a name already used.
        """
        predicates = [condition(w) if isinstance(w, str) else w for w in when]
        for p in predicates:
            if not callable(p):
                raise ConfigurationError(f"a routing condition is text or a function, not {p!r}")
        targets = self._targets(to)
        if name is None:
            texts = [w for w in when if isinstance(w, str)]
            name = " and ".join(texts) if len(texts) == len(when) and texts else None
            name = name or f"rule {len(self.rules) + 1}"
        if any(r.name == name for r in self.rules) or name in ("default", "unrouted"):
            raise ConfigurationError(f"a routing rule named {name!r} exists already")
        rule = Rule(name, predicates, targets)
        self.rules.append(rule)
        return rule

    def default(self, to: str | Iterable[str] | None) -> None:
        """Where messages no rule matches go; ``None`` drops them (acked, counted as
        ``unrouted``). Without a default they are dead-lettered (durable) or dropped (live)."""
        self._dropping = to is None
        self._default = None if to is None else self._targets(to)

    def _targets(self, to: str | Iterable[str]) -> list[Target]:
        targets = [Target(to)] if isinstance(to, str) else [Target(t) for t in to]
        if not targets:
            raise ConfigurationError("a route needs at least one target topic")
        for t in targets:
            if not t.template and self._loops([t.text]):
                raise ConfigurationError(
                    f"routing {self.source!r} to {t.text!r} would loop: the router reads it"
                )
        return targets

    @property
    def counters(self) -> dict[str, int]:
        """Messages routed per rule (by name), by the default route, and unrouted."""
        out = {r.name: r.routed for r in self.rules}
        out["default"] = self.stats.rules.get("default", 0)
        out["unrouted"] = self.stats.unrouted
        return out

    # -- routing -----------------------------------------------------------------------------

    def targets(self, msg: Message) -> tuple[str, list[str]] | None:
        """(rule name, topics) for ``msg``, or ``None`` when nothing routes it."""
        for rule in self.rules:
            topics = rule.targets(msg)
            if topics is not None and not self._loops(topics):
                return rule.name, topics
        if self._default is not None:
            filled = [t.topic(msg) for t in self._default]
            topics = [t for t in filled if t is not None]
            if len(topics) == len(filled) and not self._loops(topics):
                return "default", topics
        return None

    def _loops(self, topics: list[str]) -> bool:
        """Whether a copy would come back to this router (a template filled in as the source,
        a target its pattern matches): such a rule does not match."""
        source = self.source
        pattern = is_pattern(source)
        return any(t == source or (pattern and match(source, t)) for t in topics)

    async def _forward(self, msg: Message) -> None:
        self.stats.received += 1
        found = self.targets(msg)
        if found is None:
            self.stats.unrouted += 1
            if isinstance(msg, DurableMessage) and not self._dropping:
                await msg.term("no route")
            return
        name, topics = found
        headers = {k: v for k, v in msg.headers.items() if k[:7].lower() != RESERVED_HEADER}
        durable = isinstance(msg, DurableMessage)
        msg_id = f"{self.source}@{msg.offset}" if durable else None
        data = _payload(msg.data)
        try:
            for topic in topics:
                await self.hub.publish(
                    topic,
                    data,
                    headers=headers or None,
                    type=msg.type,
                    confirm=True if durable else None,
                    msg_id=msg_id,
                )
        except Exception:
            self.stats.failed += 1
            raise  # durable: nak'd, routed again; live: logged by the subscription
        self.stats.published += len(topics)
        self.stats.routed += 1
        self.stats.rules[name] = self.stats.rules.get(name, 0) + 1
        for rule in self.rules:
            if rule.name == name:
                rule.routed += 1
                break

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> Router:
        """Start routing in the background (see :meth:`run`)."""
        if self._running is not None:
            return self
        if not self.rules and self._default is None:
            raise ConfigurationError("a router needs a rule or a default route")
        self._stopped.clear()
        if self.group is not None:
            self._running = await self.hub.consume(
                self.source,
                self.group,
                self.consumer,
                handler=self._forward,
                foreign=self.foreign,
                concurrency=self.concurrency,
                max_deliver=self.max_deliver,
                start=self.start_at,
                ack_wait=self.ack_wait,
            )
        else:
            self._running = await self.hub.subscribe(
                self.source, handler=self._forward, foreign=self.foreign
            )
        return self

    async def stop(self) -> None:
        """Stop routing; with a group, messages being routed are handed back to it."""
        running, self._running = self._running, None
        self._stopped.set()
        if running is not None:
            await running.close()

    async def run(self) -> None:
        """Route until :meth:`stop` is called or the task is cancelled."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    # As Buffered's (_io.waiting), but a router ends with stop() and holds no buffer of its own.
    async def __aenter__(self) -> Router:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        mode = f"group={self.group!r}" if self.group is not None else "live"
        return f"Router({self.source!r}, {mode}, rules={[r.name for r in self.rules]})"


def _payload(data: Any) -> Any:
    """What is republished: a foreign stream entry's fields (a dict of bytes, written by
    another program) as text where they are UTF-8, which JSON can carry."""
    if type(data) is not dict or not any(type(k) is bytes for k in data):
        return data
    return {_text(k): _text(v) for k, v in data.items()}


def _text(value: Any) -> Any:
    if type(value) is bytes:
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    return value
