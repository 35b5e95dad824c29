"""The AsyncClient's request/reply (``docs/request-reply.md``): requests to every responder
(the first reply, or all of them) and responder groups (each request to one member).

:class:`RequestReply` is mixed into :class:`~herald.AsyncClient`; what it uses of the client is
declared below. The machinery is ``_pubsub.request`` and ``_pubsub.responders``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from herald._core.message import Message
from herald._pubsub.request import Requests
from herald._pubsub.responders import Responder
from herald._pubsub.subscriber import Subscriber
from herald._pubsub.subscription import Registry

from ._client_publish import Publishing


class RequestReply(Publishing):
    """Requests and responder groups (mixed into ``AsyncClient``): what ``_pubsub.request`` and
    ``_pubsub.responders`` need of their client is the publishing mixin's, and this."""

    _subscriber: Subscriber | None
    _requests: Requests | None
    _responders: set[Responder]

    # Deliberately repeated signature: a type stub of the AsyncClient method this mixin calls
    # (the client defines it; nothing here exists at run time).
    if TYPE_CHECKING:

        def _registry(self) -> Registry: ...

    async def request(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and return the first reply.

        Responders are subscriptions of ``topic`` whose handler returns a value, or that call
        :meth:`Message.reply`.

        Raises:
            NoResponders: at once, when nobody is subscribed to ``topic``.
            Timeout: no reply within ``timeout`` seconds (counted from the call).
            ResponderFailed: the responder's handler raised.

        Example::

            reply = await hub.request("geo.lookup", {"ip": "1.2.3.4"}, timeout=1.0)
            print(reply.data)
        """
        tracing = self._tracing
        if tracing is None or not tracing.active():
            return await self._request_table().request(topic, data, timeout, headers)
        if self._link is None:
            await self.connect()
        with tracing.publishing(topic, headers, True, data, operation="request") as (_, sent):
            return await self._request_table().request(topic, data, timeout, sent)

    async def request_many(
        self,
        topic: str,
        data: Any,
        *,
        max_replies: int | None = None,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> list[Message]:
        """Send a request to every responder and gather their replies (scatter/gather).

        Returns the replies that arrived, in arrival order, once ``max_replies`` are in, or as
        many as the server counted receivers of the request (one per subscribed connection:
        several subscriptions of one client to the topic count once, see
        ``docs/request-reply.md``), or when ``timeout`` passes: then possibly fewer, possibly
        none. Error replies are included (``herald-error`` header).

        Raises:
            NoResponders: at once, when nobody is subscribed to ``topic``.
            Timeout: the request itself could not be sent within ``timeout``.

        Example::

            replies = await hub.request_many("cache.size", None, timeout=0.5)
            total = sum(r.data for r in replies)
        """
        tracing = self._tracing
        if tracing is None or not tracing.active():
            return await self._request_table().request_many(
                topic, data, max_replies, timeout, headers
            )
        if self._link is None:
            await self.connect()
        with tracing.publishing(topic, headers, True, data, operation="request") as (_, sent):
            return await self._request_table().request_many(topic, data, max_replies, timeout, sent)

    def respond(
        self,
        topic: str,
        handler: Callable[..., Any],
        *,
        group: str,
        concurrency: int = 1,
        redeliver_after: float = 5.0,
        error_text: bool = False,
    ) -> Responder:
        """Answer requests to ``topic`` as one member of a responder group: each request is
        handled by one member of each group (plain responders, subscriptions with a handler,
        all get it as before). See ``docs/request-reply.md``.

        Args:
            group: the group's name; members of one group share its requests.
            concurrency: requests this member handles at once (it takes no more meanwhile).
            redeliver_after: seconds after which a request a member took and did not finish
                (the member died or stalled) is handed to another member, if its requester
                still waits.
            error_text: as for :meth:`subscribe`.

        Use as ``async with hub.respond(...)``, or ``r = await hub.respond(...)`` and
        ``await r.close()``. The handler is called as a subscription's handler is: its return
        value (awaited for a coroutine) is the reply; ``msg.reply(...)`` works too.

        Example::

            async with hub.respond("thumbnails", make_thumbnail, group="workers"):
                await stop.wait()
        """
        return Responder(self, topic, handler, group, concurrency, redeliver_after, error_text)

    def _request_table(self) -> Requests:
        if self._requests is None:
            self._requests = Requests(self, self._registry())
        return self._requests
