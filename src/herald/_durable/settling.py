"""Settling a consumer's messages: ack, nak, term, in_progress (``DurableMessage`` calls these).

:class:`Settling` is mixed into :class:`~herald._durable.consumer.Consumer`. Acks are batched
(one XACK per event-loop iteration); nak, term and in_progress are scripts that only touch
entries the consumer still owns. Every step works on the event loop (a task) and from any other
thread (a blocking wait), so the threaded consumer is a thin wrapper.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from herald._core.durable_message import ConsumerStats, DurableMessage
from herald._core.message import DONE
from herald._core.streams import backoff_delay
from herald._errors import ClientClosed

from .group import Acks, Member
from .redelivery import Redelivery

log = logging.getLogger("herald")


class Settling:
    """How a consumer settles its messages (mixed into ``Consumer``, which defines the state)."""

    name: str
    stats: ConsumerStats
    backoff: Sequence[float] | None
    _max: int
    _acks: Acks | None
    _member: Member | None
    _redelivery: Redelivery | None
    _outstanding: dict[bytes, DurableMessage]
    _room_waiter: asyncio.Future[None] | None
    _buffer: deque[DurableMessage]
    _low_water: int
    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: int
    _ops: set[asyncio.Task[Any]]

    if TYPE_CHECKING:

        def _wake_room(self) -> None: ...

    def _settle(self, msg: DurableMessage) -> bool:
        if msg._settled:
            return False
        msg._settled = True
        if self._outstanding.pop(msg._entry, None) is not None and self._room_waiter is not None:
            self._wake_room()
        return True

    def _ack(self, msg: DurableMessage, confirm: bool) -> Awaitable[None]:
        # _settle() written out: an ack per message is the common case.
        if msg._settled:
            return DONE
        msg._settled = True
        if self._outstanding.pop(msg._entry, None) is not None and self._room_waiter is not None:
            self._wake_room()
        acks = self._acks
        assert acks is not None
        self.stats.acked += 1
        acks.add(msg._entry)
        return self._run(acks.confirm()) if confirm else DONE

    def _ack_here(self, msg: DurableMessage) -> None:
        """``msg.ack()`` of an unsettled message, on the event loop's thread (auto-ack)."""
        msg._settled = True
        if (
            self._outstanding.pop(msg._entry, None) is not None
            and self._room_waiter is not None
            and len(self._buffer) <= self._low_water  # else _wake_room() would not wake it
        ):
            self._wake_room()
        acks = self._acks
        assert acks is not None
        self.stats.acked += 1
        acks.add_here(msg._entry)

    def _nak(self, msg: DurableMessage, delay: float | None) -> Awaitable[None]:
        if not self._settle(msg):
            return DONE
        if msg.deliveries >= self._max:
            self.stats.termed += 1
            reason = f"nak on delivery {msg.deliveries} of {self._max}"
            return self._run(self._bury(msg._entry, reason))
        assert self._redelivery is not None
        self.stats.naked += 1
        if delay is None:
            delay = backoff_delay(self.backoff, msg.deliveries)
        return self._run(self._redelivery.delay(msg._entry, max(0.0, delay)))

    def _term(self, msg: DurableMessage, reason: str) -> Awaitable[None]:
        if not self._settle(msg):
            return DONE
        self.stats.termed += 1
        return self._run(self._bury(msg._entry, reason))

    def _in_progress(self, msg: DurableMessage) -> Awaitable[None]:
        if msg._settled:
            return DONE
        assert self._member is not None
        return self._run(self._member.lease([msg._entry], 0))

    async def _bury(self, entry: bytes, reason: str) -> None:
        assert self._member is not None
        if await self._member.bury(entry, reason):
            self.stats.dead_lettered += 1
        else:
            log.warning(
                "consumer %s: %s not dead-lettered: no longer its own", self.name, entry.decode()
            )

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Awaitable[None]:
        """Start a settling step now: a task on the loop's thread, a blocking wait elsewhere."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise ClientClosed("consumer not started")
        if threading.get_ident() == self._loop_thread:
            task = loop.create_task(coro)
            self._ops.add(task)
            task.add_done_callback(self._op_done)
            return task
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        while True:  # short waits: Ctrl-C, and a loop stopped under us, end them
            try:
                fut.result(0.25)
                return DONE
            except concurrent.futures.TimeoutError:
                if not loop.is_running():
                    fut.cancel()
                    raise ClientClosed("consumer closed") from None

    def _op_done(self, task: asyncio.Task[Any]) -> None:
        self._ops.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("consumer %s: %s", self.name, exc)
