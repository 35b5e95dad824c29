"""The comparison's servers and per-run setup: which peers can run, streams, queues, prefill."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ._compare_rows import GROUP, PEERS, REGISTRY, Row
from ._harness import run_workers

# -- availability --------------------------------------------------------------------------------


def _unavailable(nats_url: str, amqp_url: str) -> dict[str, str]:
    """Peers that cannot run here, with the reason."""
    out: dict[str, str] = {}
    for peer, (_, _, modules) in PEERS.items():
        for module in modules:
            try:
                __import__(module)
            except ImportError as exc:
                out[peer] = f"{module} is not installed ({exc}); pip install 'herald-pubsub[bench]'"
                break
    if "nats" not in out:
        reason = asyncio.run(_check_nats(nats_url))
        if reason:
            out["nats"] = reason
    if "rabbitmq" not in out:
        reason = asyncio.run(_check_rabbitmq(amqp_url))
        if reason:
            out["rabbitmq"] = reason
    return out


async def _check_nats(url: str) -> str | None:
    import nats

    try:
        await _reachable(url, 4222)
        nc = await asyncio.wait_for(
            nats.connect(url, connect_timeout=2, allow_reconnect=False, error_cb=_ignore), 5
        )
    except Exception as exc:
        return f"no nats-server at {url} ({type(exc).__name__}: {exc}); start nats-server -js"
    try:
        await nc.jetstream().account_info()
    except Exception as exc:
        return f"nats-server at {url} has no JetStream ({type(exc).__name__}); start it with -js"
    finally:
        await nc.close()
    return None


async def _reachable(url: str, default_port: int) -> None:
    """Fail at once on a refused port (the clients themselves retry until their timeout)."""
    parts = urlsplit(url)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port or default_port), 5
    )
    writer.close()


async def _ignore(exc: Exception) -> None:
    """nats-py logs connection errors through its callback; the caller reports them."""


async def _check_rabbitmq(url: str) -> str | None:
    import aio_pika

    try:
        await _reachable(url, 5672)
        connection = await asyncio.wait_for(aio_pika.connect(url), 5)
    except Exception as exc:
        return f"no RabbitMQ at {url} ({type(exc).__name__}: {exc})"
    await connection.close()
    return None


def _versions() -> dict[str, str | None]:
    from .durable import _version

    return {
        d: _version(d) for d in ("faststream", "broadcaster", "nats-py", "aio-pika", "matplotlib")
    }


def _server_versions(nats_url: str, amqp_url: str, unavailable: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def probe() -> None:
        if "nats" not in unavailable:
            import nats

            nc = await nats.connect(nats_url)
            out["nats-server"] = nc.connected_server_version.__str__()
            await nc.close()
        if "rabbitmq" not in unavailable:
            import aio_pika

            connection = await aio_pika.connect(amqp_url)
            props: Any = connection.transport.connection.server_properties  # type: ignore[union-attr]
            version = props.get("version", b"")
            out["rabbitmq"] = version.decode() if isinstance(version, bytes) else str(version)
            await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # versions are information only
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# -- running rows --------------------------------------------------------------------------------


class _Context:
    """What the parent needs between runs: the admin connection and the servers' setup."""

    def __init__(self, port: int, base: dict[str, Any], server_pid: int | None) -> None:
        from .durable import _Admin

        self.admin = _Admin(port)
        self.base = base
        self.server_pid = server_pid

    def close(self) -> None:
        self.admin.close()

    def run(self, row: Row, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:8]
        params = {**self.base, **row.params, **(extra or {})}
        params["channel"] = params["topic"] = f"bench.compare.{row.name}.{tag}"
        timeout = float(params["duration"]) * 4 + 60
        cleanup: Callable[[], None] = lambda: None  # noqa: E731
        after: dict[str, Any] = {}
        try:
            if row.workload.startswith("durable"):
                cleanup, after = self._setup_durable(row, params, tag)
            workers, load = run_workers(REGISTRY, list(row.kinds), params, timeout, self.server_pid)
            if row.workload == "durable-consume":
                after.update(self._after_consume(row, params))
        except Exception as exc:  # the row says why; the others go on
            return {"workers": [{"error": f"{type(exc).__name__}: {exc}"}], "machine": {}}
        finally:
            try:
                cleanup()
            except Exception:
                pass
        return {"workers": workers, "machine": load, "after": after}

    def _setup_durable(
        self, row: Row, params: dict[str, Any], tag: str
    ) -> tuple[Callable[[], None], dict[str, Any]]:
        from herald._core.streams import stream_key

        from .durable import _declare, _delete, _entry

        consume = row.workload == "durable-consume"
        prefill = max(1000, int(row.params.get("prefill_rate", 0) * params["duration"]))
        params["group"] = GROUP
        after: dict[str, Any] = {"prefilled": prefill} if consume else {}
        if row.peer in ("herald", "redis-py", "faststream"):
            topic = params["topic"]
            key = stream_key(topic) if row.peer == "herald" else f"bench:compare:{tag}"
            params["key"] = key
            if row.peer == "herald":
                _declare(params["url"], topic)
            if consume:
                client = "redis-py" if row.peer == "redis-py" else row.peer
                entry = _entry(client, params["url"], params["payload_size"])
                self.admin.prefill(key, entry, prefill)
                self.admin.call("XGROUP", "CREATE", key, GROUP, "0")

            def cleanup() -> None:
                self.admin.call("DEL", key)
                if row.peer == "herald":
                    _delete(params["url"], topic)

            return cleanup, after
        if row.peer == "nats":
            stream = f"BENCH_{tag}"
            params["stream"] = stream
            params["subject"] = f"bench.js.{tag}"
            asyncio.run(_js_setup(params, prefill if consume else 0))
            return lambda: asyncio.run(_js_delete(params)), after
        params["queue"] = f"bench.compare.{tag}"
        asyncio.run(_rabbit_setup(params, prefill if consume else 0))
        return lambda: asyncio.run(_rabbit_delete(params)), after

    def _after_consume(self, row: Row, params: dict[str, Any]) -> dict[str, Any]:
        if row.peer in ("herald", "redis-py", "faststream"):
            return {"pending": int(self.admin.call("XPENDING", params["key"], GROUP)[0])}
        return {}


async def _js_setup(params: dict[str, Any], prefill: int) -> None:
    import nats

    nc = await nats.connect(params["nats_url"])
    try:
        js = nc.jetstream()
        await js.add_stream(name=params["stream"], subjects=[params["subject"]], storage="memory")
        if prefill:
            from ._live_common import bytes_payload

            payload = bytes_payload(params["payload_size"])
            for _ in range(prefill):
                await nc.publish(params["subject"], payload)
            await nc.flush(timeout=60)
            deadline = time.monotonic() + 60
            while (await js.stream_info(params["stream"])).state.messages < prefill:
                if time.monotonic() > deadline:
                    raise TimeoutError("JetStream did not store the prefill within 60 s")
                await asyncio.sleep(0.05)
            await js.add_consumer(params["stream"], durable_name=GROUP, ack_policy="explicit")
    finally:
        await nc.close()


async def _js_delete(params: dict[str, Any]) -> None:
    import nats

    nc = await nats.connect(params["nats_url"])
    try:
        await nc.jetstream().delete_stream(params["stream"])
    finally:
        await nc.close()


async def _rabbit_setup(params: dict[str, Any], prefill: int) -> None:
    import aio_pika

    from ._live_common import bytes_payload

    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.declare_queue(params["queue"], durable=False)
        if prefill:
            payload = bytes_payload(params["payload_size"])
            publish = channel.default_exchange.publish
            for _ in range(prefill):
                await publish(aio_pika.Message(payload), routing_key=params["queue"])
            deadline = time.monotonic() + 60
            while True:
                declared = await channel.declare_queue(params["queue"], passive=True)
                count = declared.declaration_result.message_count or 0
                if count >= prefill:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("RabbitMQ did not store the prefill within 60 s")
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def _rabbit_delete(params: dict[str, Any]) -> None:
    import aio_pika

    connection = await aio_pika.connect(params["amqp_url"])
    try:
        channel = await connection.channel()
        await channel.queue_delete(params["queue"])
    finally:
        await connection.close()
