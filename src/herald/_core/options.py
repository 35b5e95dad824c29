"""The connection options a client takes from its URL or as keyword arguments (sans-I/O).

One table (``OPTIONS``) holds each option's name, the ``Endpoint`` field it sets and how a
value is checked: ``parse_url`` reads the URL's query with it, ``with_options`` applies a
client's keyword arguments with it. An option given both ways must say the same thing: a
keyword that contradicts the URL is a :class:`ConfigurationError`, never silently preferred
(which of the two the user meant cannot be known; a ``$HERALD_URL`` with one password and code
with another is a mistake to report).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from herald._errors import ConfigurationError

CertReqs = Literal["none", "optional", "required"]

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty str, not {value!r}")
    return value


def _db(name: str, value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be a database number (an int >= 0), not {value!r}")
    return value


def byte_count(name: str, value: object) -> int:
    """A size in bytes given as a keyword (``max_pending_bytes``): an int >= 1, or a float
    holding a whole number (``8e6``). Checked here so that both builds take the same values
    (compiled, ``Link`` refuses a float where its annotation says int)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a number of bytes (an int >= 1), not {value!r}")
    return value


def _verify(name: str, value: Any) -> bool:
    """``ssl_cert_reqs``: as in redis-py and Python's ssl module, for a client "optional"
    verifies like "required" (a server always presents a certificate); only "none" turns
    verification off."""
    text = value.lower() if isinstance(value, str) else value
    if text not in ("none", "optional", "required"):
        raise ConfigurationError(f"invalid {name}={value!r}: none, optional or required")
    return bool(text != "none")


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.lower() if isinstance(value, str) else value
    if text not in _TRUE + _FALSE:
        raise ConfigurationError(f"invalid {name}={value!r}: true or false")
    return text in _TRUE


@dataclass(frozen=True)
class Option:
    """A connection option: ``field`` is the attribute of ``Endpoint`` it sets (of its
    ``SentinelSpec`` when ``sentinel``); ``check`` turns a keyword's value or the URL's text
    into that attribute's value, or raises ConfigurationError."""

    name: str
    field: str
    check: Callable[[str, Any], Any]
    tls: bool = False  # used by TLS connections only (rediss://)
    sentinel: bool = False  # the sentinels' own (redis+sentinel://)


OPTIONS: Mapping[str, Option] = {
    o.name: o
    for o in (
        Option("username", "username", _text),
        Option("password", "password", _text),
        Option("db", "db", _db),
        Option("ssl_ca_certs", "ca_certs", _text, tls=True),
        Option("ssl_certfile", "certfile", _text, tls=True),
        Option("ssl_keyfile", "keyfile", _text, tls=True),
        Option("ssl_cert_reqs", "verify", _verify, tls=True),
        Option("ssl_check_hostname", "check_hostname", _flag, tls=True),
        Option("sentinel_username", "username", _text, sentinel=True),
        Option("sentinel_password", "password", _text, sentinel=True),
    )
}


def check_option(name: str, value: Any, url: str | None = None) -> Any:
    """The ``Endpoint`` value of option ``name`` given as ``value`` (a keyword's, or the URL's
    text when ``url`` names the URL, for the error message)."""
    try:
        return OPTIONS[name].check(name, value)
    except ConfigurationError as exc:
        if url is None:
            raise
        raise ConfigurationError(f"{exc} in {url!r}") from None
