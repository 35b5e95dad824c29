"""OpenTelemetry spans and trace context in message headers (the ``otel`` extra).

Nothing here is imported unless a client is made with ``tracing=``: without it the clients
keep ``_tracing = None`` and each hot path pays one attribute check. With it, this module wraps
what it traces from the outside (the publish call, a subscription's handler or delivery, a
consumer's settle methods, the replier) instead of adding branches inside the data plane.

Names follow the OpenTelemetry messaging semantic conventions (docs/tracing.md):
``messaging.system`` is ``"herald"``, the destination is the topic, and the W3C trace context
travels in the message's ``traceparent``/``tracestate`` headers, which Herald already carried
for the gateway (docs/wire-format.md), written by the globally configured propagator.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError, StopSubscription
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider

    from herald._core.durable_message import DurableMessage
    from herald._core.message import Message
    from herald._durable.consumer import Consumer
    from herald._pubsub.subscription import Subscription

SYSTEM = "herald"
TRACE_HEADERS = ("traceparent", "tracestate")


def _always() -> bool:
    return True


def make_tracing(option: bool | TracerProvider | None) -> Tracing | None:
    """The client's tracer: ``None`` unless tracing is asked for (``True``: the global tracer
    provider, or a ``TracerProvider`` of its own)."""
    if option is None or option is False:
        return None
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "tracing needs the OpenTelemetry API: pip install 'herald-pubsub[otel]'"
        ) from None
    return Tracing(None if option is True else option)


class Tracing:
    """Spans of one client."""

    def __init__(self, provider: TracerProvider | None) -> None:
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self.tracer = trace.get_tracer("herald", __version__, tracer_provider=provider)
        if provider is None:
            # The global provider: until one is set (or while it is the API's no-op), nothing
            # is recorded, and each traced path goes its untraced way after this check.
            unset = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
            get_provider = trace.get_tracer_provider
            get_provider()  # loads one named by $OTEL_PYTHON_TRACER_PROVIDER, if any
            if hasattr(trace, "_TRACER_PROVIDER"):
                # get_tracer_provider() looks at os.environ while none is set (0.8 us a
                # call, as much as a publish): the module's global says the same in 30 ns.
                module = trace

                def active() -> bool:
                    provider = module._TRACER_PROVIDER
                    return provider is not None and not isinstance(provider, unset)

            else:  # an API without that global

                def active() -> bool:
                    return not isinstance(get_provider(), unset)

            self.active = active
        else:
            self.active = _always
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER
        self._client = trace.SpanKind.CLIENT

    # -- context in headers ------------------------------------------------------------------

    def extract(self, headers: Mapping[str, str] | None) -> Context:
        """The creation context a message carries (an empty context if none)."""
        return self._propagate.extract(headers or {})

    def _parent(self, headers: Mapping[str, str] | None) -> Context | None:
        """A publish's parent: trace context given in its headers (the gateway's caller, or a
        program that propagates by hand), else the current span (``None``)."""
        if headers and "traceparent" in headers:
            return self.extract(headers)
        return None

    def inject(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if k not in TRACE_HEADERS} if headers else {}
        self._propagate.inject(out)
        return out

    # -- producer side -----------------------------------------------------------------------

    @contextmanager
    def publishing(
        self,
        topic: str,
        headers: Mapping[str, str] | None,
        carries_headers: bool,
        data: Any = None,
        count: int | None = None,
        operation: str = "publish",
    ) -> Iterator[tuple[Span, Mapping[str, str] | None]]:
        """A producer span around a publish; yields it and the headers to send (with its trace
        context, when the message carries headers: not on bare topics)."""
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": topic,
            "messaging.operation.type": "send",
            "messaging.operation.name": operation,
        }
        if count is not None:
            attributes["messaging.batch.message_count"] = count
        elif isinstance(data, bytes | bytearray):
            attributes["messaging.message.body.size"] = len(data)
        elif isinstance(data, str):
            attributes["messaging.message.body.size"] = len(data.encode())
        with self.tracer.start_as_current_span(
            f"{operation} {topic}",
            context=self._parent(headers),
            kind=self._producer,
            attributes=attributes,
        ) as span:
            yield span, (self.inject(headers) if carries_headers else headers)

    @contextmanager
    def replying(self, request: Message, inbox: str) -> Iterator[Span]:
        """The span of a reply: a child of the handler's span, else of the request's
        publish."""
        current = self._trace.get_current_span()
        parent = None if current.get_span_context().is_valid else self.extract(request._headers)
        with self.tracer.start_as_current_span(
            f"reply {request.topic}",
            context=parent,
            kind=self._producer,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": inbox,
                "messaging.destination.temporary": True,
                "messaging.operation.type": "send",
                "messaging.operation.name": "reply",
            },
        ) as span:
            yield span

    # -- consumer side -----------------------------------------------------------------------

    def _attributes(
        self, msg: Message, operation: str, kind: str, group: str | None = None
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": msg.topic,
            "messaging.operation.type": kind,
            "messaging.operation.name": operation,
            "messaging.message.envelope.size": len(msg.raw),
        }
        msg_id = msg.id
        if msg_id is not None:
            attributes["messaging.message.id"] = msg_id
        if msg.pattern is not None:
            attributes["messaging.destination.template"] = msg.pattern
        if group is not None:
            attributes["messaging.consumer.group.name"] = group
            attributes["messaging.herald.offset"] = str(msg.offset)
            attributes["messaging.herald.deliveries"] = getattr(msg, "deliveries", 1)
        return attributes

    def handler(
        self,
        handler: Callable[[Any], Any],
        operation: str,
        group: str | None = None,
        auto_ack: bool = False,
    ) -> Callable[[Any], Any]:
        """``handler`` inside a consumer span (``process``), a child of the message's creation
        context, so that the handler's own spans join the publisher's trace. ``auto_ack``: a
        durable message the handler returned from unsettled is acked inside the span (what
        the consumer would do right after, untraced), so its ``settle`` span is a child.
        :class:`StopSubscription` ends the span as any return does (no error status, no
        exception event) and is raised after it: stopping is not a failure."""
        start = self.tracer.start_as_current_span
        extract = self.extract
        attributes = self._attributes
        kind = self._consumer
        active = self.active

        def span(msg: Any) -> Any:  # the handler's span, current while it runs
            return start(
                f"{operation} {msg.topic}",
                context=extract(msg._headers),
                kind=kind,
                attributes=attributes(msg, operation, "process", group),
            )

        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def traced_async(msg: Any) -> Any:  # a Message or a DurableMessage
                if not active():
                    return await handler(msg)
                with span(msg):
                    try:
                        result = await handler(msg)
                    except StopSubscription as exc:
                        stop = exc  # a normal end: raised after the span, not an error in it
                    else:
                        if auto_ack and not msg._settled:
                            msg.ack()
                        return result
                raise stop

            return traced_async

        @functools.wraps(handler)
        def traced(msg: Any) -> Any:
            if not active():
                return handler(msg)
            with span(msg):
                try:
                    result = handler(msg)
                except StopSubscription as exc:
                    stop = exc  # as above
                else:
                    if auto_ack and result is None and not msg._settled:
                        msg.ack()
                    return result
            raise stop

        return traced

    def received(self, msg: Message, group: str | None = None) -> None:
        """A ``receive`` span, ended at once, for a message handed to an iterator: it marks the
        delivery in the publisher's trace (the application's own processing spans can be
        children of the message's context: ``opentelemetry.propagate.extract(msg.headers)``)."""
        if not self.active():
            return
        self.tracer.start_span(
            f"receive {msg.topic}",
            context=self.extract(msg._headers),
            kind=self._consumer,
            attributes=self._attributes(msg, "receive", "receive", group),
        ).end()

    @contextmanager
    def settling(self, msg: DurableMessage, operation: str, group: str) -> Iterator[Span]:
        """A ``settle`` span (ack, nak, term): a child of the current span (the handler's),
        linked to the message's creation context."""
        link_ctx = self._trace.get_current_span(self.extract(msg._headers)).get_span_context()
        links = [self._trace.Link(link_ctx)] if link_ctx.is_valid else None
        current = self._trace.get_current_span().get_span_context()
        with self.tracer.start_as_current_span(
            f"{operation} {msg.topic}",
            context=None if current.is_valid else self.extract(msg._headers),
            kind=self._client,
            links=links,
            attributes=self._attributes(msg, operation, "settle", group),
        ) as span:
            yield span


def trace_subscription(tracing: Tracing, sub: Subscription) -> None:
    """Trace a new subscription: its handler in ``process`` spans, or, without one, each
    message it buffers for the iterator with a ``receive`` span."""
    if sub.handler is not None:
        sub.handler = tracing.handler(sub.handler, "process")
        return
    deliver = sub._deliver
    received = tracing.received

    def traced_deliver(messages: list[Message]) -> None:
        for msg in messages:
            received(msg)
        deliver(messages)

    sub._deliver = traced_deliver  # type: ignore[method-assign]


def trace_consumer(tracing: Tracing, consumer: Consumer) -> None:
    """Trace a new consumer: its handler in ``process`` spans (or a ``receive`` span for each
    message the iterator hands out), each ack, nak and term in a ``settle`` span."""
    group = consumer.group
    if consumer.handler is not None:
        consumer.handler = tracing.handler(consumer.handler, "process", group, consumer.auto_ack)
    else:
        took = consumer._took
        received = tracing.received

        def traced_took(msg: DurableMessage) -> DurableMessage:
            received(msg, group)
            return took(msg)

        consumer._took = traced_took  # type: ignore[method-assign]

    settling = tracing.settling
    ack, ack_here, nak, term = consumer._ack, consumer._ack_here, consumer._nak, consumer._term

    active = tracing.active

    def traced_ack(msg: DurableMessage, confirm: bool) -> Awaitable[None]:
        if msg._settled or not active():
            return ack(msg, confirm)
        with settling(msg, "ack", group):
            return ack(msg, confirm)

    def traced_ack_here(msg: DurableMessage) -> None:
        if not active():
            ack_here(msg)
            return
        with settling(msg, "ack", group):
            ack_here(msg)

    def traced_nak(msg: DurableMessage, delay: float | None) -> Awaitable[None]:
        if msg._settled or not active():
            return nak(msg, delay)
        with settling(msg, "nak", group):
            return nak(msg, delay)

    def traced_term(msg: DurableMessage, reason: str) -> Awaitable[None]:
        if msg._settled or not active():
            return term(msg, reason)
        with settling(msg, "term", group):
            return term(msg, reason)

    consumer._ack = traced_ack  # type: ignore[method-assign]
    consumer._ack_here = traced_ack_here  # type: ignore[method-assign]
    consumer._nak = traced_nak  # type: ignore[method-assign]
    consumer._term = traced_term  # type: ignore[method-assign]
