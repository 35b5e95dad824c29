"""``GET /metrics``: Prometheus text format, read from the gateway's counters at scrape time.

With auth on, only a token with the ``admin`` grant or the configured ``metrics_token`` may
read them (they name topics and groups); ``GatewayConfig.metrics`` can open or close them.

Durable topics' consumer groups (pending, lag) and dead letters are read from the server at
most every ``_TOPIC_REFRESH`` seconds, for up to ``_MAX_TOPICS`` declared durable topics.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from herald import HeraldError, TopicInfo

if TYPE_CHECKING:
    from .state import Gateway

_TOPIC_REFRESH = 5.0
_MAX_TOPICS = 100


class GatewayCollector(Collector):
    """Turns one gateway's counters into metric families."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.topics: list[TopicInfo] = []
        self.read_at = 0.0

    async def refresh(self) -> None:
        if time.monotonic() - self.read_at < _TOPIC_REFRESH:
            return
        self.read_at = time.monotonic()
        infos: list[TopicInfo] = []
        try:
            policies = await self.gw.policies()
            for topic, policy in list(policies.items())[:_MAX_TOPICS]:
                if policy.durable and not topic.endswith(".dead"):
                    infos.append(await self.gw.hub.topic_info(topic))
        except HeraldError:
            return  # keep the last reading; the server is unreachable
        self.topics = infos

    def collect(self) -> Iterator[Metric]:
        s = self.gw.stats
        hub = self.gw.hub.stats

        def counter(name: str, doc: str, value: float) -> Metric:
            family = CounterMetricFamily(f"herald_gateway_{name}", doc)
            family.add_metric([], value)
            return family

        yield counter("published", "Messages published through the gateway.", s.published)
        yield counter("delivered", "Messages and events sent to clients.", s.delivered)
        yield counter(
            "dropped",
            "Messages not delivered: cut slow clients' queues and the gateway's own overflow.",
            s.dropped + self.gw.fanout.dropped(),
        )
        yield counter("slow_disconnects", "Clients cut off as too slow.", s.slow_disconnects)
        yield counter("gaps", "Windows in which live messages may have been missed.", s.gaps)
        yield counter("resumed", "Subscriptions resumed from an offset.", s.resumed)
        yield counter(
            "recovered",
            "Messages recovered from history after a reconnect.",
            self.gw.fanout.recovered(),
        )
        yield counter(
            "history_lost", "Resumes whose history no longer reached back.", s.history_lost
        )
        yield counter("refused", "Requests refused by auth, origin or limits.", s.refused)
        yield counter("errors", "Error frames sent to WebSocket clients.", s.errors)
        yield counter(
            "reconnects", "Reconnects of the gateway's Redis connections.", hub.reconnects
        )
        clients = GaugeMetricFamily(
            "herald_gateway_clients", "Connected clients.", labels=["transport"]
        )
        clients.add_metric(["websocket"], s.ws_clients)
        clients.add_metric(["sse"], s.sse_clients)
        yield clients
        up = GaugeMetricFamily("herald_gateway_redis_connected", "1 while connected to Redis.")
        up.add_metric([], 1.0 if hub.connected else 0.0)
        yield up
        lag = GaugeMetricFamily(
            "herald_group_lag", "Entries not yet delivered to a group.", labels=["topic", "group"]
        )
        pending = GaugeMetricFamily(
            "herald_group_pending", "Entries delivered, not acked.", labels=["topic", "group"]
        )
        dead = GaugeMetricFamily(
            "herald_dead_letters", "Entries in a topic's dead-letter stream.", labels=["topic"]
        )
        for info in self.topics:
            dead.add_metric([info.topic], info.dead_letters)
            for g in info.groups:
                pending.add_metric([info.topic, g.name], g.pending)
                if g.lag is not None:
                    lag.add_metric([info.topic, g.name], g.lag)
        yield lag
        yield pending
        yield dead


def registry_for(gw: Gateway) -> tuple[CollectorRegistry, GatewayCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector(gw)
    registry.register(collector)
    return registry, collector


def _allowed(request: Request, gw: Gateway) -> Response | None:
    """None if the caller may read the metrics (``GatewayConfig.metrics``), else the answer."""
    from .http import _principal, error  # the HTTP module's auth, without an import cycle

    config = gw.config
    if config.metrics == "off":
        return error(404, "not_found", "metrics are off")
    if config.metrics == "public" or config.auth is None:
        return None
    given = request.headers.get("authorization", "")
    token = config.metrics_token
    if (
        token is not None
        and given[:7].lower() == "bearer "
        and hmac.compare_digest(given[7:].strip().encode(), token.encode())
    ):
        return None
    _principal(request, gw).check_admin()  # AuthError: 401 or 403 through the app's handler
    return None


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text format; who may read it: ``GatewayConfig.metrics``."""
    refused = _allowed(request, request.app.state.gateway)
    if refused is not None:
        return refused
    registry: CollectorRegistry = request.app.state.metrics_registry
    collector: GatewayCollector = request.app.state.metrics_collector
    await collector.refresh()
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
