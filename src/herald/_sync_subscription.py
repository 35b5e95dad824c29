"""SyncSubscription: a :class:`~herald.Subscription` for threads, iterated or with a handler on a
thread of its own; its I/O runs on the client's loop (``_portal``)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from herald._core.message import Message, replier_of
from herald._core.typed import typed
from herald._pubsub.subscription import Handler, Subscription

from ._errors import ClientClosed, HeraldError, HistoryLost, StopSubscription
from ._portal import FORKED, Portal
from ._tracing import Tracing

log = logging.getLogger("herald")


class SyncSubscription:
    """A subscription for threads: an iterator and a context manager, or a handler thread."""

    def __init__(
        self,
        sub: Subscription,
        portal: Portal,
        handler: Handler | None,
        tracing: Tracing | None = None,
    ) -> None:
        self._sub = sub
        self._portal = portal
        self._handler = None if handler is None else typed(handler, sub._invalid)
        if self._handler is not None and tracing is not None:
            self._handler = tracing.handler(self._handler, "process")
        self._thread: threading.Thread | None = None
        if handler is not None:
            self._thread = threading.Thread(
                target=self._run_handler, name=f"herald-handler-{sub.names[0]}", daemon=True
            )
            self._thread.start()

    @property
    def names(self) -> tuple[str, ...]:
        return self._sub.names

    @property
    def stats(self) -> Any:
        return self._sub.stats

    @property
    def pending(self) -> int:
        return self._sub.pending

    def next(self, timeout: float | None = None) -> Message:
        """The next message; :class:`Timeout` if none arrives in time."""
        self._check_fork()
        return self._sub._next_sync(timeout)

    def add(self, *names: str) -> None:
        """Subscribe to more topics and patterns; see :meth:`Subscription.add`."""
        self._check_fork()
        self._portal.call(self._sub.add(*names))

    def remove(self, *names: str) -> None:
        """Unsubscribe from some of the names; see :meth:`Subscription.remove`."""
        self._check_fork()
        self._portal.call(self._sub.remove(*names))

    def __iter__(self) -> Iterator[Message]:
        self._check_fork()
        while True:
            try:
                yield self._sub._next_sync(None)
            except ClientClosed:
                return

    def _check_fork(self) -> None:
        if os.getpid() != self._portal.pid:
            raise ClientClosed(FORKED)

    def _run_handler(self) -> None:
        handler = self._handler
        assert handler is not None
        while True:
            try:
                msg = self._sub._next_sync(None)
            except ClientClosed:
                return
            except HistoryLost as exc:  # reported, and the subscription goes on
                log.error("subscription %s: %s", ",".join(self.names), exc)
                continue
            except HeraldError as exc:
                log.error("subscription %s ended: %s", ",".join(self.names), exc)
                return
            try:
                result = handler(msg)
                # A value returned for a request is its reply (docs/request-reply.md).
                if result is not None and msg._headers and (r := replier_of(msg)):
                    r.reply(msg, result, None)
            except StopSubscription:
                self.close()  # from this thread: nothing more is handled
                return
            except Exception as exc:
                self._sub.stats.handler_errors += 1
                ref = None
                if msg._headers and (r := replier_of(msg)):
                    ref = r.reply_error(msg, exc, self._sub.error_text)
                sent = "" if ref is None else f"; error reply {ref} sent"
                log.exception("handler %r failed on %r%s", handler, msg, sent)

    def _stop_handler(self) -> None:
        self._sub._finish()

    def _join_handler(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def close(self) -> None:
        """Unsubscribe."""
        if not self._sub.closed:
            try:
                self._portal.call(self._sub.close(), timeout=10)
            except (HeraldError, RuntimeError):
                self._sub._finish()
        self._join_handler()

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
