"""What a consumer is made of before it starts: its options, what its client gives it, and its
default name."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from herald._core.durable_message import DurableHandler
from herald._core.offsets import Position
from herald._core.streams import DurableTopic
from herald._core.url import Endpoint
from herald._core.wire import Foreign

from .publish import Scripts

_names = itertools.count(1)


def default_consumer_name() -> str:
    """``<hostname>-<pid>-<n>``: unique per process, stable for the life of the process."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_names)}"


OnTrimmed = Literal["raise", "continue"]


class ConsumeOptions(TypedDict, total=False):
    """Keyword options of ``consume()``; see :class:`Consumer`."""

    ack_wait: float
    max_deliver: int | None
    backoff: Sequence[float] | None
    max_ack_pending: int
    batch: int
    start: Position
    handler: DurableHandler | None
    auto_ack: bool
    delete_idle_after: float
    concurrency: int
    ordered_by_key: bool
    on_trimmed: OnTrimmed | None
    foreign: Foreign


@dataclass
class ConsumerSetup:
    """What a consumer needs from its client."""

    scripts: Scripts  # on the client's command connection: acks and scripts go there
    spec: DurableTopic
    endpoint: Endpoint
    link_options: dict[str, Any]
    name: str  # prefix of connection names
