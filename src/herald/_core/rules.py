"""Routing rules (sans-I/O): conditions on a message's content, and target topic templates.

A condition is text, ``FIELD OP VALUE`` (``total > 100``, ``customer.country == "NZ"``,
``tags contains python``, ``sku ~ "A-*"``, ``coupon exists``), conditions joined by ``and``.
FIELD is a dotted path into the payload (``items.0.sku``: a list index); ``$topic``,
``$type`` and ``$header.NAME`` read the message's topic, type and a header. VALUE is read as
JSON when it is JSON (``100``, ``"NZ"``, ``true``, ``[1, 2]``), else as the text it is.

A target is a topic, or a template filled in from the payload: ``prices.{sector}``.

Payloads from plain Redis programs route too: a foreign stream entry's fields are a dict of
bytes (``{b"total": b"150"}``), so a field name is also looked up as bytes, bytes values are
read as text, and a number compared with text that holds a number compares as numbers.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from herald._errors import ConfigurationError, InvalidTopic

from .message import Message
from .topics import is_inbox, validate_topic

Predicate = Callable[[Message], bool]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
    "contains": lambda a, b: b in a,
    "~": lambda a, b: isinstance(a, str) and fnmatch.fnmatchcase(a, str(b)),
}
# Longest first, so that ">=" is not read as ">" followed by "=..."; words need spaces round.
_OP_RE = re.compile(r"\s*(==|!=|>=|<=|>|<|~|\s(?:not in|in|contains)\s)\s*")
_MISSING = object()
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_BAD_IN_TOPIC = re.compile(r"[\s*?\[\]\\{}]")
_BAD_IN_FIELD = re.compile(r"[\s=<>!~{}]")


class Condition:
    """``FIELD OP VALUE`` (or ``FIELD exists``): true or false for a message.

    A field the message does not have, or a value that cannot be compared with VALUE, makes
    it false (``!=`` and ``not in`` included: an order without ``country`` is not routed as
    "not NZ").
    """

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        if self.text.endswith(" exists"):
            self.path = _path(self.text[: -len(" exists")].strip(), text)
            self.op, self.value = "exists", None
            return
        parts = _OP_RE.split(self.text, maxsplit=1)
        if (
            len(parts) != 3
            or not parts[0].strip()
            or not parts[2].strip()
            or parts[2].lstrip()[0] in "=<>!~"  # "a >> 3", "a => b": quote such a value
        ):
            raise ConfigurationError(
                f"routing condition {text!r} is not FIELD OP VALUE (OP: "
                f"{', '.join(_OPS)}) or FIELD exists"
            )
        self.path = _path(parts[0].strip(), text)
        self.op = parts[1].strip()
        self.value = _value(parts[2].strip())
        if self.op in ("in", "not in") and not isinstance(self.value, list):
            self.value = [_value(v.strip()) for v in str(self.value).split(",")]

    def __call__(self, msg: Message) -> bool:
        found = lookup(msg, self.path)
        if self.op == "exists":
            return found is not _MISSING
        if found is _MISSING:
            return False
        a, b = _comparable(found, self.value)
        try:
            return bool(_OPS[self.op](a, b))
        except TypeError:  # "abc" > 3, 5 contains 1: not this rule's message
            return False

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def condition(text: str) -> Predicate:
    """A predicate from ``FIELD OP VALUE`` conditions joined by `` and ``."""
    parts = [Condition(p) for p in re.split(r"\s+and\s+", text.strip()) if p]
    if not parts:
        raise ConfigurationError("an empty routing condition")
    if len(parts) == 1:
        return parts[0]
    return lambda msg: all(c(msg) for c in parts)


def _path(field: str, text: str) -> tuple[str, ...]:
    if not field or any(not p for p in field.split(".")) or _BAD_IN_FIELD.search(field):
        raise ConfigurationError(f"routing condition {text!r}: {field!r} is not a field path")
    if field.startswith("$"):
        head, _, rest = field.partition(".")
        if head not in ("$topic", "$type", "$header") or (head == "$header") != bool(rest):
            raise ConfigurationError(
                f"routing condition {text!r}: {field!r}: use $topic, $type or $header.NAME"
            )
        return (head, rest) if rest else (head,)
    return tuple(field.split("."))


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _comparable(found: Any, value: Any) -> tuple[Any, Any]:
    if isinstance(found, bytes):
        try:
            found = found.decode()
        except UnicodeDecodeError:
            return found, value
    if isinstance(found, str) and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(found), value
        except ValueError:
            return found, value
    return found, value


def lookup(msg: Message, path: Sequence[str]) -> Any:
    """The value at ``path`` in the message (``_MISSING`` when it has none)."""
    head = path[0]
    if head == "$topic":
        return msg.topic
    if head == "$type":
        return msg.type if msg.type is not None else _MISSING
    if head == "$header":
        return msg.headers.get(path[1], _MISSING)
    value: Any = msg.data
    for key in path:
        if isinstance(value, dict):
            # (a foreign stream entry's fields are bytes)
            value = value[key] if key in value else value.get(key.encode(), _MISSING)
        elif isinstance(value, list) and key.lstrip("-").isdigit():
            try:
                value = value[int(key)]
            except IndexError:
                return _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


class Target:
    """A target topic, or a template ``prices.{sector}`` filled in from the message."""

    def __init__(self, text: object) -> None:  # object: it checks the type itself
        if not isinstance(text, str) or not text:
            raise ConfigurationError(f"a routing target is a topic or template, not {text!r}")
        self.text = text
        self.paths = [_path(p, text) for p in _PLACEHOLDER.findall(text)]
        self.template = bool(self.paths)

    def topic(self, msg: Message) -> str | None:
        """The topic for ``msg``; ``None`` when a placeholder has no usable value (missing,
        not text or a number, empty, or holding whitespace or pattern characters), or when
        the topic filled in is not one a client may publish to (control characters, longer
        than a topic may be, a reply inbox)."""
        if not self.template:
            return self.text
        values: list[str] = []
        for path in self.paths:
            value = lookup(msg, path)
            if isinstance(value, bytes):
                try:
                    value = value.decode()
                except UnicodeDecodeError:
                    return None
            if isinstance(value, bool) or not isinstance(value, str | int):
                return None
            text = str(value)
            if not text or _BAD_IN_TOPIC.search(text):
                return None
            values.append(text)
        it = iter(values)
        topic = _PLACEHOLDER.sub(lambda _: next(it), self.text)
        try:
            validate_topic(topic)  # control characters, too long: not a topic
        except InvalidTopic:
            return None
        return None if is_inbox(topic) else topic

    def __repr__(self) -> str:
        return self.text
