"""What the local topologies share: a data directory, the servers' options, the thread that
starts their processes, and stopping them all."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from herald._server import EmbeddedServer

from ._tls import Certificates


class _Launcher:
    """Starts processes from one long-lived thread: an owned server dies with the thread that
    started it (PR_SET_PDEATHSIG), so a restart from a short-lived worker thread must not be the
    parent."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="herald-testing-launcher")

    def launch(self, server: EmbeddedServer) -> None:
        self._pool.submit(server.launch).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Topology:
    """Base of :class:`LocalCluster` and :class:`LocalSentinel`: the data directory (a temporary
    one unless given), the options every server gets, and :meth:`close` / the context manager."""

    def __init__(
        self,
        prefix: str,
        data_dir: str | Path | None,
        persist: bool,
        args: Sequence[str],
        binary: str | None,
        tls: Certificates | None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.persist = persist
        self.args = list(args)
        self.binary = binary
        self.tls = tls
        self._context = tls.client_context() if tls is not None else None
        self._launcher: _Launcher | None = None

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def _processes(self) -> list[EmbeddedServer]:
        """Every process of the topology, in the order to stop them."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop every process and remove the temporary directory."""
        for server in self._processes():
            with contextlib.suppress(Exception):
                if server.running:
                    server.resume()  # a paused process cannot handle SIGTERM
                server.kill()
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
