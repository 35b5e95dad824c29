"""The gateway's state: the Herald client it holds, its subscriptions, counters and probe."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from herald import AsyncClient, HeraldError, Message, Subscription, TopicPolicy

from .config import GatewayConfig
from .fanout import Fanout, GatewayStats
from .limits import KeyedBuckets
from .rates import INTERNAL_PREFIX, Rates

log = logging.getLogger("herald.gateway")


class Gateway:
    """Everything one gateway app shares between its requests and connections."""

    def __init__(self, hub: AsyncClient, config: GatewayConfig, *, owns_hub: bool) -> None:
        self.hub = hub
        self.config = config
        self.owns_hub = owns_hub
        self.stats = GatewayStats()
        self.fanout = Fanout(hub, self.stats)
        self.rates = Rates(hub)
        self.probe_topic = f"{INTERNAL_PREFIX}gateway.probe.{os.urandom(6).hex()}"
        self._probe_sub: Subscription | None = None
        self._probes: dict[str, asyncio.Future[float]] = {}
        self._probe_lock = asyncio.Lock()
        self._ready: tuple[float, float | BaseException] | None = None
        self._ready_lock = asyncio.Lock()
        #: publishes per token subject (HTTP and WebSocket), and per client address (HTTP, auth off)
        self.publish_buckets = KeyedBuckets(config.publish_rate, config.publish_burst)

    async def start(self) -> None:
        await self.hub.connect()

    async def stop(self) -> None:
        await self.rates.stop()
        await self.fanout.close()
        if self._probe_sub is not None:
            await self._probe_sub.close()
        if self.owns_hub:
            await self.hub.close()

    # -- readiness: a probe message's round trip --------------------------------------------

    def _probe_arrived(self, msg: Message) -> None:
        fut = self._probes.pop(str(msg.data), None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    async def ready(self) -> float:
        """:meth:`probe`, at most once per ``ready_cache`` seconds: callers in between share
        the last answer (a round trip, or the error), and concurrent callers one probe."""
        now = time.monotonic()
        if self._ready is not None and now - self._ready[0] < self.config.ready_cache:
            return self._unpack(self._ready[1])
        async with self._ready_lock:
            if (
                self._ready is not None
                and time.monotonic() - self._ready[0] < self.config.ready_cache
            ):
                return self._unpack(self._ready[1])
            try:
                result: float | BaseException = await self.probe()
            except (HeraldError, TimeoutError) as exc:
                result = exc
            self._ready = (time.monotonic(), result)
            return self._unpack(result)

    def _fresh_ready(self) -> float | BaseException | None:
        if self._ready is None or time.monotonic() - self._ready[0] >= self.config.ready_cache:
            return None
        return self._ready[1]

    @staticmethod
    def _unpack(result: float | BaseException) -> float:
        if isinstance(result, BaseException):
            raise result
        return result

    async def probe(self) -> float:
        """Publish a probe message and wait for it; return the round trip in seconds.

        Raises:
            HeraldError: the server cannot be reached, or the probe did not come back within
                ``ready_timeout``.
        """
        timeout = self.config.ready_timeout
        async with asyncio.timeout(timeout):
            if self._probe_sub is None:
                async with self._probe_lock:
                    if self._probe_sub is None:
                        sub = self.hub.subscribe(self.probe_topic, handler=self._probe_arrived)
                        await sub.start()
                        self._probe_sub = sub
            nonce = os.urandom(8).hex()
            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._probes[nonce] = fut
            try:
                start = time.perf_counter()
                await self.hub.publish(self.probe_topic, nonce, confirm=True)
                return await fut - start
            finally:
                self._probes.pop(nonce, None)

    # -- topics -------------------------------------------------------------------------------

    async def policies(self) -> dict[str, TopicPolicy]:
        return {
            t: p for t, p in (await self.hub.topics()).items() if not t.startswith(INTERNAL_PREFIX)
        }

    async def subscribers(self, topics: list[str]) -> dict[str, int]:
        """Subscriber connections per topic.

        One server: ``PUBSUB NUMSUB`` plus ``PUBSUB SHARDNUMSUB`` (a client of another
        library may subscribe either way). A cluster: ``PUBSUB SHARDNUMSUB``, asked of each
        topic's shard: a Herald subscription there is one ``SSUBSCRIBE`` on that shard; its
        ``SUBSCRIBE`` (for the copies that scripts publish) would count it twice, and
        ``NUMSUB`` only sees the node that answers it.
        """
        if not topics:
            return {}
        asks = [self._shard_subscribers(topics)]
        endpoint = self.hub.endpoint
        if endpoint is None or not endpoint.seeds:  # not a cluster
            asks.append(self.hub.execute("PUBSUB", "NUMSUB", *topics))
        replies = await asyncio.gather(*asks)
        out = dict.fromkeys(topics, 0)
        for reply in replies:
            for i in range(0, len(reply) - 1, 2):
                name = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
                out[name] = out.get(name, 0) + int(reply[i + 1])
        return out

    async def _shard_subscribers(self, topics: list[str]) -> Any:
        try:
            return await self.hub.execute("PUBSUB", "SHARDNUMSUB", *topics)
        except HeraldError:  # a server before Redis 7 has no sharded Pub/Sub
            return []

    async def active_topics(self) -> dict[str, int]:
        """Topics with subscribers now, declared or not (none when the server refuses
        ``PUBSUB``, e.g. to an ACL user without it: the listing still answers)."""
        try:
            return await self.hub.active_topics()
        except HeraldError as exc:
            log.debug("PUBSUB CHANNELS failed: %s", exc)
            return {}

    async def patterns(self) -> int:
        try:
            return int(await self.hub.execute("PUBSUB", "NUMPAT"))
        except HeraldError:
            return 0


def recoverable(policy: TopicPolicy | None) -> bool:
    """Whether a topic keeps an offset-numbered history (recoverable topics)."""
    return policy is not None and bool(getattr(policy, "history", 0))


def durable(policy: TopicPolicy | None) -> bool:
    return policy is not None and policy.durable
