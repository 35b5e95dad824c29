"""Raw commands, sans-I/O: which commands the shared connection refuses, and reply decoding.

A client's command connection is shared by every task (auto-pipelined: replies are matched to
callers by order). A raw command that changes what the connection's later replies are, what
other tasks' commands mean, or that holds the connection would corrupt it for everyone, so
``execute()`` refuses these and names what to use instead:

- replies no longer one per command: ``MONITOR``, the ``SUBSCRIBE`` family, ``CLIENT REPLY``,
  ``CLIENT TRACKING``/``CACHING`` (invalidation pushes), ``HELLO`` (could switch to RESP3),
  ``SYNC``/``PSYNC``/``REPLCONF`` (a replication stream);
- state that other tasks' commands would run under: ``MULTI``/``EXEC``/``DISCARD`` (another
  task's command queued into someone's transaction), ``WATCH``/``UNWATCH``, ``SELECT``,
  ``AUTH``, ``RESET`` (undoes the handshake: user, database, name), ``ASKING`` (flags the next
  command, someone else's);
- the end of the connection: ``QUIT``;
- blocking: ``BLPOP``, ``BRPOP``, ``BRPOPLPUSH``, ``BLMOVE``, ``BLMPOP``, ``BZPOPMIN``,
  ``BZPOPMAX``, ``BZMPOP`` and ``XREAD``/``XREADGROUP`` with ``BLOCK`` (every command queued
  behind them waits, and the liveness probe declares the connection dead);
  ``WAIT``/``WAITAOF`` with a timeout of 0 (forever) or one the probe would not survive.
  A short ``WAIT`` is allowed: it is how Herald waits for replicas itself, and only on the
  shared connection does it cover the writes made there.

Commands that only change the server (``CLIENT PAUSE``, ``CONFIG SET``, ``FLUSHALL``) or the
connection harmlessly (``CLIENT SETNAME``, ``CLIENT NO-EVICT``) are allowed.
"""

from __future__ import annotations

from typing import Any

from herald._errors import DecodeError, UnsafeCommand

from .resp import Arg

_TRANSACTION = "hub.transaction() (MULTI/EXEC, with optional WATCH, on a connection of its own)"
_BLOCKING = "hub.execute_blocking(...), which runs it on a connection of its own"
_SUBSCRIBE = "hub.subscribe(...)"

# command (or "COMMAND SUBCOMMAND") -> what to use instead
_REFUSED: dict[bytes, str] = {
    b"MULTI": _TRANSACTION,
    b"EXEC": _TRANSACTION,
    b"DISCARD": _TRANSACTION,
    b"WATCH": _TRANSACTION,
    b"UNWATCH": _TRANSACTION,
    b"SUBSCRIBE": _SUBSCRIBE,
    b"PSUBSCRIBE": _SUBSCRIBE,
    b"SSUBSCRIBE": _SUBSCRIBE,
    b"UNSUBSCRIBE": "closing the subscription (sub.close())",
    b"PUNSUBSCRIBE": "closing the subscription (sub.close())",
    b"SUNSUBSCRIBE": "closing the subscription (sub.close())",
    b"MONITOR": "a connection of its own (redis-cli monitor): MONITOR turns the connection "
    "into a stream of every command the server runs",
    b"SELECT": "the database in the URL (redis://host:6379/2), for every connection",
    b"AUTH": "the user and password in the URL (redis://user:password@host)",
    b"HELLO": "nothing: Herald's connections speak RESP2 as set up by their handshake",
    b"RESET": "hub.close() and a new client",
    b"QUIT": "hub.close()",
    b"ASKING": "nothing: the cluster client sends ASKING itself when a slot moves",
    b"SYNC": "a replica: SYNC turns the connection into a replication stream",
    b"PSYNC": "a replica: PSYNC turns the connection into a replication stream",
    b"REPLCONF": "a replica: REPLCONF is the replication protocol",
    b"CLIENT REPLY": "fire-and-forget publishes (publish() without confirm), or "
    "hub.pipeline(): skipping replies breaks the matching of replies to commands",
    b"CLIENT TRACKING": "a connection of its own: invalidation messages would arrive as replies",
    b"CLIENT CACHING": "a connection of its own with CLIENT TRACKING",
    b"BLPOP": _BLOCKING,
    b"BRPOP": _BLOCKING,
    b"BRPOPLPUSH": _BLOCKING,
    b"BLMOVE": _BLOCKING,
    b"BLMPOP": _BLOCKING,
    b"BZPOPMIN": _BLOCKING,
    b"BZPOPMAX": _BLOCKING,
    b"BZMPOP": _BLOCKING,
}
_SUBCOMMANDS = frozenset(name.split()[0] for name in _REFUSED if b" " in name)
_WAITS = (b"WAIT", b"WAITAOF")


def name_of(args: tuple[Arg, ...] | list[Arg]) -> str:
    """The command's name as the server knows it, with its subcommand for containers."""
    first = raw(args[0]).upper()
    if first in _SUBCOMMANDS and len(args) > 1:
        return f"{first.decode()} {raw(args[1]).upper().decode()}"
    return first.decode(errors="replace")


def check_command(
    args: tuple[Arg, ...] | list[Arg], longest_wait: float | None, blocking: bool = False
) -> None:
    """Raise :class:`UnsafeCommand` for a command the shared connection must not run.

    ``longest_wait``: seconds a ``WAIT``/``WAITAOF`` may block the connection (``None``: no
    probe, any finite timeout). ``blocking``: the command runs on a connection of its own,
    where blocking is allowed (connection state is refused there too: the connection is
    reused).

    >>> check_command(("GET", "k"), 2.5)
    >>> check_command(("client", "reply", "off"), 2.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    herald._errors.UnsafeCommand: CLIENT REPLY would corrupt the client's shared connection; ...
    """
    if not args:
        raise UnsafeCommand("", "a command: execute() needs at least the command's name")
    name = name_of(args)
    alternative = _REFUSED.get(name.encode())
    if alternative is None and name in ("XREAD", "XREADGROUP") and _blocks(args):
        alternative = _BLOCKING
    if alternative is None and name.encode() in _WAITS and not blocking:
        alternative = _wait_refused(args, longest_wait)
    if alternative is not None and not (blocking and alternative is _BLOCKING):
        raise UnsafeCommand(name, alternative)


def _blocks(args: tuple[Arg, ...] | list[Arg]) -> bool:
    """Whether an XREAD/XREADGROUP has BLOCK among its options (before STREAMS: after it come
    keys and ids, which may be named anything)."""
    # XREADGROUP GROUP <group> <consumer> [options]: a group or consumer may be named BLOCK
    first = 4 if raw(args[0]).upper() == b"XREADGROUP" else 1
    for a in args[first:]:
        word = raw(a).upper()
        if word == b"STREAMS":
            return False
        if word == b"BLOCK":
            return True
    return False


def _wait_refused(args: tuple[Arg, ...] | list[Arg], longest: float | None) -> str | None:
    try:
        timeout_ms = int(raw(args[-1]))
    except ValueError:
        return None  # the server answers with its own error
    if timeout_ms > 0 and (longest is None or timeout_ms <= longest * 1000):
        return None
    limit = "" if longest is None else f" (at most {int(longest * 1000)} ms here)"
    return (
        f"a timeout above 0 that the connection's liveness probe survives{limit}, in a loop "
        "if longer; or publish(..., replicas=N) / publish(..., fsync=True)"
    )


def raw(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()


def decoded(reply: Any) -> Any:
    """``reply`` with every ``bytes`` in it decoded as UTF-8, recursively (lists, dicts); error
    values are left as they are.

    >>> decoded([b"a", [b"b", 1], None])
    ['a', ['b', 1], None]
    """
    if isinstance(reply, bytes):
        try:
            return reply.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"a reply is not UTF-8 text ({exc}): read it with decode=False"
            ) from None
    if isinstance(reply, list):
        return [decoded(x) for x in reply]
    if isinstance(reply, dict):
        return {decoded(k): decoded(v) for k, v in reply.items()}
    return reply
