"""What the commands share: the ``--url`` and ``--unsharded`` options, an existing file as an
option's type, printing what a publisher sent without letting it act on the terminal, a
payload's JSON form and a JSON line (``--json`` output), and reading ``--count`` messages within
``--timeout``."""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click
from rich.markup import escape

import herald

M = TypeVar("M", bound=herald.Message, covariant=True)

URL = click.option(
    "--url",
    envvar="HERALD_URL",
    default=None,
    help="Redis/Valkey URL (default: $HERALD_URL, else the server `herald serve` runs).",
)
UNSHARDED = click.option(
    "--unsharded",
    is_flag=True,
    help="Cluster: publish with PUBLISH, which plain SUBSCRIBE clients receive (not SPUBLISH).",
)
#: ``--count``, ``--timeout`` and ``--json`` of the commands that print messages as they come.
COUNT = click.option(
    "--count", "-n", type=click.IntRange(min=1), default=None, help="Exit after N."
)
TIMEOUT = click.option("--timeout", "-t", type=float, default=None, help="Exit after S seconds.")
JSON_LINES = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
#: An option's value that names an existing file (not a directory), as a Path.
FILE = click.Path(dir_okay=False, exists=True, path_type=Path)
#: C0 and C1 control characters and DEL, shown escaped: what a publisher sent must not reach the
#: terminal as escape sequences (a title, a cleared screen, a link, the clipboard) or as new
#: lines that pass for other messages.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop a command that runs until stopped, by raising
    KeyboardInterrupt, also when it was started with SIGINT ignored (as a shell starts a
    background job, and as CI runs)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def shown(text: str) -> str:
    """``text`` for a rich ``console.print`` with markup: control characters escaped
    (``\\x1b``), and rich markup (``[link=...]``) escaped."""
    return escape(text.translate(_UNPRINTABLE))


def print_json(record: Any) -> None:
    """``record`` as one line of JSON on standard output, flushed at once (``--json``)."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def jsonable(data: Any) -> Any:
    """``data`` with its bytes (also the keys and values of a dict) as text, or as
    ``{"base64": ...}`` where they are not UTF-8."""
    if isinstance(data, bytes):
        try:
            return data.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode()}
    if isinstance(data, dict):
        return {jsonable(k) if isinstance(k, bytes) else k: jsonable(v) for k, v in data.items()}
    return data


def data_field(data: Any) -> tuple[str, Any]:
    """A JSON record's payload field: ``("data", value)``, or ``("data_b64", text)`` for bytes
    that are not UTF-8 (as the gateway does), so that they differ from a JSON payload
    ``{"base64": ...}``."""
    if isinstance(data, bytes):
        try:
            return "data", data.decode()
        except UnicodeDecodeError:
            return "data_b64", base64.b64encode(data).decode()
    return "data", jsonable(data)


class Source(Protocol[M]):
    """A subscription or a consumer."""

    async def next(self, timeout: float | None = None) -> M: ...


async def take(
    source: Source[M],
    count: int | None,
    timeout: float | None,
    each: Callable[[M], Awaitable[None]],
) -> int:
    """Hand ``each`` the messages of ``source`` until ``count`` of them (``None``: no end) or
    until ``timeout`` seconds passed; the exit status: 1 if the time ran out before ``count``
    messages, else 0."""
    received = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while count is None or received < count:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return 1 if count is not None else 0
        try:
            msg = await source.next(remaining)
        except herald.Timeout:
            continue
        received += 1
        await each(msg)
    return 0
