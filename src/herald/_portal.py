"""The threaded client's I/O thread: an event loop in a daemon thread, and the blocking call of
a coroutine on it from any other thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._errors import ClientClosed, HeraldError, Timeout

T = TypeVar("T")
FORKED = "this Client was created before fork(); create a new Client in the child process"


async def _run_in(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    return await asyncio.get_running_loop().create_task(coro, context=context)


class Portal:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # after fork() the thread is gone: the child must not wait on it
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="herald-io", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # loop.close() alone leaves to_thread's worker threads running after close().
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def call(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None = None,
        context: contextvars.Context | None = None,
    ) -> T:
        """Run ``coro`` on the loop and wait for its result; ``context``: in that context (the
        caller's, for its current span when tracing) rather than the loop thread's."""
        if os.getpid() != self.pid:
            coro.close()
            raise ClientClosed(FORKED)
        if threading.current_thread() is self.thread:
            coro.close()
            raise HeraldError("blocking Client call from a handler: use the AsyncClient there")
        if context is not None:
            coro = _run_in(coro, context)
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise Timeout(f"no result within {timeout}s", timeout) from None

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(5)
