"""RESP2 command encoding (sans-I/O)."""

from __future__ import annotations

Arg = bytes | str | int | float


def _arg(a: Arg) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, bool):
        raise TypeError("bool is not a valid command argument")
    if isinstance(a, int | float):
        return repr(a).encode()
    raise TypeError(f"invalid command argument type {type(a).__name__}")


def command(*args: Arg) -> bytes:
    """Encode one command as a RESP array of bulk strings.

    >>> command("PUBLISH", "news", b"hi")
    b'*3\\r\\n$7\\r\\nPUBLISH\\r\\n$4\\r\\nnews\\r\\n$2\\r\\nhi\\r\\n'
    """
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n" % len(b))
        parts.append(b)
        parts.append(b"\r\n")
    return b"".join(parts)


def prefix(name: bytes, key: bytes) -> bytes:
    """The bytes of ``name key <value>`` up to the value's length: cached per topic by publishers.

    ``prefix(b"PUBLISH", b"news") + b"%d\\r\\n" % len(v) + v + b"\\r\\n"`` is the whole command.
    """
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$" % (len(name), name, len(key), key)


def head(*args: Arg) -> bytes:
    """The bytes of a command whose last argument is still to come, up to that argument's length.

    ``head(b"XADD", key, b"*", b"m") + b"%d\\r\\n" % len(v) + v + b"\\r\\n"`` is
    ``command(b"XADD", key, b"*", b"m", v)``: cached per topic by durable publishers.

    >>> head("PUBLISH", "news") == prefix(b"PUBLISH", b"news")
    True
    """
    parts = [b"*%d\r\n" % (len(args) + 1)]
    for a in args:
        b = _arg(a)
        parts += (b"$%d\r\n" % len(b), b, b"\r\n")
    parts.append(b"$")
    return b"".join(parts)
