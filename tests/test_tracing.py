"""OpenTelemetry spans (the otel extra) on a real Valkey, recorded by the SDK's in-memory
exporter: publish -> Redis -> handler in one trace, durable consume and settle, request and
reply, a trace across two processes, and the gateway's traceparent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import herald
from herald import Message
from herald._core.durable_message import DurableMessage
from herald.gateway import GatewayConfig, create_app
from herald.gateway.state import Gateway

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


async def spans(
    exporter: InMemorySpanExporter, *names: str, timeout: float = 5.0
) -> dict[str, ReadableSpan]:
    """The finished spans by name, once every one of ``names`` has finished."""
    deadline = time.monotonic() + timeout
    while True:
        done = {s.name: s for s in exporter.get_finished_spans()}
        if all(n in done for n in names) or time.monotonic() > deadline:
            missing = [n for n in names if n not in done]
            assert not missing, f"no span {missing}; got {sorted(done)}"
            return done
        await asyncio.sleep(0.01)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_handler_span_is_a_child_of_the_publish_span(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    got: list[Message] = []
    tracer = provider.get_tracer("test")
    async with herald.AsyncClient(url, tracing=provider) as hub:

        async def handle(msg: Message) -> None:
            with tracer.start_as_current_span("inside the handler"):
                got.append(msg)

        async with hub.subscribe(topic, handler=handle):
            with tracer.start_as_current_span("app"):
                await hub.publish(topic, {"n": 1})
            done = await spans(
                exporter, f"publish {topic}", f"process {topic}", "inside the handler"
            )
    app, publish = done["app"], done[f"publish {topic}"]
    process, inner = done[f"process {topic}"], done["inside the handler"]
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert parent_of(publish) == ids(app)[1]
    assert parent_of(process) == ids(publish)[1]
    assert ids(process)[0] == ids(app)[0]
    assert parent_of(inner) == ids(process)[1]
    assert dict(publish.attributes or {}) == {
        "messaging.system": "herald",
        "messaging.destination.name": topic,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    attrs = dict(process.attributes or {})
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.message.id"] == got[0].id
    assert attrs["messaging.message.envelope.size"] == len(got[0].raw)
    # The context travels in the standard W3C header, visible to any reader.
    assert got[0].headers["traceparent"].split("-")[1] == f"{ids(app)[0]:032x}"


async def test_iterator_receive_spans_and_bytes_body_size(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with (
        herald.AsyncClient(url, tracing=provider) as hub,
        hub.subscribe(f"{topic}.*") as sub,
    ):
        await hub.publish(f"{topic}.a", b"12345", headers={"k": "v"})
        msg = await sub.next(2.0)
        done = await spans(exporter, f"publish {topic}.a", f"receive {topic}.a")
    assert msg.headers["k"] == "v"
    publish, receive = done[f"publish {topic}.a"], done[f"receive {topic}.a"]
    assert (publish.attributes or {})["messaging.message.body.size"] == 5
    assert parent_of(receive) == ids(publish)[1]
    assert (receive.attributes or {})["messaging.destination.template"] == f"{topic}.*"


async def test_a_bare_topic_gets_a_span_but_no_headers(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with herald.AsyncClient(url, tracing=provider) as hub:
        await hub.declare(topic, bare=True)
        async with hub.subscribe(topic) as sub:
            await hub.publish(topic, "plain")
            msg = await sub.next(2.0)
            await spans(exporter, f"publish {topic}", f"receive {topic}")
    assert msg.foreign
    assert msg.data == b"plain"


async def test_durable_consume_process_and_settle_spans(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[DurableMessage] = []
    async with herald.AsyncClient(url, tracing=provider) as hub:
        await hub.declare(topic, durable=True)
        ack = await hub.publish(topic, {"order": 1})
        assert ack is not None

        async def handle(msg: DurableMessage) -> None:
            seen.append(msg)
            if len(seen) == 1:
                await msg.nak(0)  # once: the redelivery is acked by auto_ack

        async with hub.consume(topic, "billing", handler=handle, backoff=[0.01], start="all"):
            done = await spans(exporter, f"nak {topic}", f"ack {topic}")
    publish = done[f"publish {topic}"]
    assert (publish.attributes or {})["messaging.herald.offset"] == ack.offset
    processes = [s for s in exporter.get_finished_spans() if s.name == f"process {topic}"]
    assert len(processes) == 2
    for process in processes:
        assert parent_of(process) == ids(publish)[1]
        attrs = dict(process.attributes or {})
        assert attrs["messaging.consumer.group.name"] == "billing"
        assert attrs["messaging.herald.offset"] == ack.offset
    assert [dict(p.attributes or {})["messaging.herald.deliveries"] for p in processes] == [1, 2]
    nak, settled = done[f"nak {topic}"], done[f"ack {topic}"]
    assert parent_of(nak) == ids(processes[0])[1]
    assert parent_of(settled) == ids(processes[1])[1]
    assert (settled.attributes or {})["messaging.operation.type"] == "settle"
    assert [link.context.span_id for link in settled.links] == [ids(publish)[1]]


def assert_a_normal_end(span: ReadableSpan) -> None:
    assert span.status.status_code is StatusCode.UNSET, span.status
    assert [e.name for e in span.events] == []  # no exception recorded


async def test_stop_subscription_ends_the_handler_span_without_an_error(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def stop(msg: Message) -> None:
        raise herald.StopSubscription

    async def fail(msg: Message) -> None:
        raise ValueError("a real failure")

    async def until(cond: Any) -> None:
        deadline = time.monotonic() + 5
        while not cond():
            assert time.monotonic() < deadline, "not stopped in time"
            await asyncio.sleep(0.01)

    durable = f"{topic}.durable"
    async with herald.AsyncClient(url, tracing=provider) as hub:
        await hub.declare(durable, durable=True)
        sub = await hub.subscribe(topic, handler=stop)
        await hub.publish(topic, 1)
        await hub.publish(durable, 1)
        consumer = await hub.consume(durable, "g", handler=stop, start="all")
        done = await spans(exporter, f"process {topic}", f"process {durable}")
        await until(lambda: sub.closed and consumer.closed)  # it still stops them
        assert consumer.stats.acked == 1  # and the message it stopped on counts as handled
        async with hub.subscribe(f"{topic}.fails", handler=fail):
            await hub.publish(f"{topic}.fails", 1)
            failed = (await spans(exporter, f"process {topic}.fails"))[f"process {topic}.fails"]
    assert_a_normal_end(done[f"process {topic}"])
    assert_a_normal_end(done[f"process {durable}"])
    # A handler that fails, against that: its span is an error.
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


def test_stop_subscription_in_a_threads_handler_is_not_an_error_either(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    durable = f"{topic}.durable"

    def stop(msg: Any) -> None:
        raise herald.StopSubscription

    with herald.Client(url, tracing=provider) as hub:
        hub.declare(durable, durable=True)
        sub = hub.subscribe(topic, handler=stop)
        consumer = hub.consume(durable, "g", handler=stop, start="all")
        hub.publish(topic, 1)
        hub.publish(durable, 1)
        deadline = time.monotonic() + 5
        while not (sub._sub.closed and consumer.closed):
            assert time.monotonic() < deadline, "not stopped in time"
            time.sleep(0.01)
    done = {s.name: s for s in exporter.get_finished_spans()}
    assert_a_normal_end(done[f"process {topic}"])
    assert_a_normal_end(done[f"process {durable}"])


async def test_durable_iterator_receive_and_manual_ack(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with herald.AsyncClient(url, tracing=provider) as hub:
        await hub.declare(topic, durable=True)
        await hub.publish(topic, 1)
        async with hub.consume(topic, "g", start="all") as c:
            msg = await c.next(2.0)
            await msg.ack(confirm=True)
        done = await spans(exporter, f"receive {topic}", f"ack {topic}")
    publish = done[f"publish {topic}"]
    assert parent_of(done[f"receive {topic}"]) == ids(publish)[1]
    assert parent_of(done[f"ack {topic}"]) == ids(publish)[1]  # no current span: the message's


async def test_request_and_reply_spans(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with (
        herald.AsyncClient(url, tracing=provider) as responder,
        herald.AsyncClient(url, tracing=provider) as requester,
        responder.subscribe(topic, handler=lambda m: m.data * 2),
    ):
        reply = await requester.request(topic, 21, timeout=2.0)
        done = await spans(exporter, f"request {topic}", f"process {topic}", f"reply {topic}")
    assert reply.data == 42
    request, process, answer = (
        done[f"request {topic}"],
        done[f"process {topic}"],
        done[f"reply {topic}"],
    )
    assert (request.attributes or {})["messaging.operation.name"] == "request"
    assert parent_of(process) == ids(request)[1]
    # The reply is sent after the handler returned: a child of the request, with the inbox.
    assert parent_of(answer) == ids(request)[1]
    attrs = dict(answer.attributes or {})
    assert attrs["messaging.destination.temporary"] is True
    assert str(attrs["messaging.destination.name"]).startswith("_herald.inbox.")
    assert reply.headers["traceparent"].split("-")[2] == f"{ids(answer)[1]:016x}"
    assert request.end_time is not None
    assert answer.end_time is not None
    assert request.end_time >= answer.end_time  # the request's span waits for the reply


async def test_reply_from_inside_the_handler_and_error_replies(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def answer(msg: Message) -> None:
        if msg.data == "boom":
            raise ValueError("no")
        await msg.reply("ok")

    async with (
        herald.AsyncClient(url, tracing=provider) as hub,
        hub.subscribe(topic, handler=answer),
    ):
        assert (await hub.request(topic, "hi", timeout=2.0)).data == "ok"
        done = await spans(exporter, f"process {topic}", f"reply {topic}")
        assert parent_of(done[f"reply {topic}"]) == ids(done[f"process {topic}"])[1]
        exporter.clear()
        with pytest.raises(herald.ResponderFailed):
            await hub.request(topic, "boom", timeout=2.0)
        done = await spans(exporter, f"process {topic}", f"reply {topic}", f"request {topic}")
    assert (done[f"reply {topic}"].attributes or {})["error.type"] == "ValueError"
    assert not done[f"process {topic}"].status.is_ok
    assert not done[f"request {topic}"].status.is_ok


PUBLISHER = textwrap.dedent(
    """
    import asyncio, json, sys
    import herald
    from opentelemetry.sdk.trace import TracerProvider

    async def main():
        provider = TracerProvider()
        async with herald.AsyncClient(sys.argv[1], tracing=provider) as hub:
            with provider.get_tracer("publisher").start_as_current_span("job") as span:
                await hub.publish(sys.argv[2], {"from": "another process"}, confirm=True)
                ctx = span.get_span_context()
        print(json.dumps({"trace_id": ctx.trace_id}))

    asyncio.run(main())
    """
)


async def test_a_trace_across_two_processes(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    got: list[Message] = []
    async with (
        herald.AsyncClient(url, tracing=provider) as hub,
        hub.subscribe(topic, handler=got.append),
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PUBLISHER,
            url,
            topic,
            stdout=subprocess.PIPE,
            env={**os.environ, "OTEL_PROPAGATORS": "tracecontext"},
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        done = await spans(exporter, f"process {topic}")
    trace_id = json.loads(out)["trace_id"]
    process = done[f"process {topic}"]
    assert got[0].data == {"from": "another process"}
    assert ids(process)[0] == trace_id
    assert process.parent is not None
    assert process.parent.is_remote


async def test_the_gateways_traceparent_is_the_publish_spans_parent(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with herald.AsyncClient(url, tracing=provider) as hub:
        app = create_app(hub, GatewayConfig())
        gw: Gateway = app.state.gateway
        await gw.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://localhost") as api,
                hub.subscribe(topic) as sub,
            ):
                r = await api.post(
                    f"/topics/{topic}",
                    json={"n": 1},
                    headers={"traceparent": TRACEPARENT, "tracestate": "a=b"},
                )
                assert r.status_code == 200, r.text
                msg = await sub.next(2.0)
        finally:
            await gw.stop()
        done = await spans(exporter, f"publish {topic}", f"receive {topic}")
    publish = done[f"publish {topic}"]
    assert ids(publish)[0] == int(TRACE_ID, 16)
    assert parent_of(publish) == int("b7ad6b7169203331", 16)
    # The message carries the publish span's context, the caller's tracestate kept.
    assert msg.headers["traceparent"] == f"00-{TRACE_ID}-{ids(publish)[1]:016x}-01"
    assert msg.headers["tracestate"] == "a=b"
    assert parent_of(done[f"receive {topic}"]) == ids(publish)[1]


def test_gateway_config_turns_tracing_on_for_its_own_client(url: str) -> None:
    app = create_app(url, GatewayConfig(tracing=True))
    assert app.state.gateway.hub._tracing is not None
    app = create_app(url, GatewayConfig())
    assert app.state.gateway.hub._tracing is None


def test_threads_client_spans_join_the_callers_span(
    url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test")
    handled = threading.Event()
    inner: list[Any] = []

    def handle(msg: Message) -> None:
        with tracer.start_as_current_span("in the thread") as span:
            inner.append(span)
        handled.set()

    with herald.Client(url, tracing=provider) as hub:
        hub.subscribe(topic, handler=handle)
        with tracer.start_as_current_span("caller"):
            hub.publish(topic, 1)
        assert handled.wait(5)
    done = {s.name: s for s in exporter.get_finished_spans()}
    assert parent_of(done[f"publish {topic}"]) == ids(done["caller"])[1]
    process = [s for s in exporter.get_finished_spans() if s.name == f"process {topic}"]
    assert parent_of(process[0]) == ids(done[f"publish {topic}"])[1]
    assert parent_of(done["in the thread"]) == ids(process[0])[1]


def test_without_tracing_opentelemetry_is_not_even_imported() -> None:
    code = textwrap.dedent(
        """
        import sys
        import herald
        hub = herald.AsyncClient("redis://localhost:1")
        assert hub._tracing is None
        assert not any(m.startswith("opentelemetry") for m in sys.modules), "imported"
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        try:
            herald.AsyncClient("redis://localhost:1", tracing=True)
        except herald.ConfigurationError as exc:
            assert "herald-pubsub[otel]" in str(exc)
        else:
            raise AssertionError("no ConfigurationError")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


GLOBAL_PROVIDER = textwrap.dedent(
    """
    import asyncio, sys
    import herald
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    async def main(url, topic):
        async with herald.AsyncClient(url, tracing=True) as hub, hub.subscribe(topic) as sub:
            await hub.publish(topic, 1)  # no provider yet: untraced, no header added
            assert "traceparent" not in (await sub.next(2.0)).headers
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)  # after the client was made
            await hub.publish(topic, 2)
            assert "traceparent" in (await sub.next(2.0)).headers
            names = sorted(s.name for s in exporter.get_finished_spans())
            assert names == [f"publish {topic}", f"receive {topic}"], names

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_tracing_true_follows_the_global_provider_once_it_is_set(url: str, topic: str) -> None:
    subprocess.run([sys.executable, "-c", GLOBAL_PROVIDER, url, topic], check=True, timeout=30)


def test_herald_serve_tracing_flag_reaches_the_gateway_config() -> None:
    from herald.gateway.serve import gateway_config

    assert gateway_config(host="127.0.0.1", tracing=True).tracing is True
    assert gateway_config(host="127.0.0.1").tracing is False
