"""JWT authentication and per-topic grants: pure functions, no I/O.

A token is a JWT signed with one of the configured algorithms (``none`` is never accepted),
with ``exp``, ``aud`` and ``iss`` required and checked (``leeway`` seconds of clock skew), and a
claim (``herald`` by default) holding the grants::

    {"herald": {"publish": ["chat.*"], "subscribe": ["chat.*", "news"], "history": ["chat.*"],
                "replay": ["orders"], "admin": false}}

``replay`` lets a caller put a durable topic's dead letters back on it; the gateway also requires
``publish`` on that topic (a replay publishes the messages again there).

A topic is granted when a grant matches it as a glob (Redis ``stringmatch``). A pattern
subscription is granted only when a grant covers it for certain: the same pattern, or a grant
``prefix*`` (no other glob character) whose prefix starts the pattern. Nothing is granted that is
not listed: deny by default.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from jwt.algorithms import get_default_algorithms

from herald import match

Action = Literal["publish", "subscribe", "history", "replay"]
_GLOB = frozenset("*?[\\")
#: RFC 7518 3.2: an HMAC key at least as long as the hash's output.
_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class AuthError(Exception):
    """A request that may not go on.

    Attributes:
        status: the HTTP status that says why (401: no or bad token, 403: not granted).
        reason: what was wrong, for the client.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are checked.

    Attributes:
        key: the HMAC secret (at least as long as the hash: 32 bytes for HS256, 48 for HS384,
            64 for HS512), the public key (PEM) for RS*/PS*/ES*/EdDSA algorithms, or a
            :class:`jwt.PyJWKSet` (a JWKS: the token's ``kid`` picks the key).
        audience: the required ``aud``.
        issuer: the required ``iss``.
        algorithms: the accepted algorithms, pinned (never taken from the token).
        leeway: seconds of clock skew allowed on ``exp``/``nbf``/``iat``.
        claim: the claim holding the grants.

    Example::

        AuthConfig(key=os.environ["HERALD_JWT_KEY"], audience="herald", issuer="auth.example")
    """

    key: str | bytes | jwt.PyJWKSet
    audience: str
    issuer: str
    algorithms: tuple[str, ...] = ("HS256",)
    leeway: float = 5.0
    claim: str = "herald"

    def __post_init__(self) -> None:
        if not self.algorithms or any(a.lower() == "none" for a in self.algorithms):
            raise ValueError("algorithms must be pinned and must not include 'none'")
        if not self.audience or not self.issuer:
            raise ValueError("audience and issuer are required")
        available = get_default_algorithms()
        missing = [a for a in self.algorithms if a not in available]
        if missing:
            raise ValueError(
                f"algorithm {', '.join(missing)} is not available: RS*, PS*, ES* and EdDSA "
                "need PyJWT's cryptography extra (pip install 'pyjwt[crypto]')"
            )
        hmac = [a for a in self.algorithms if a.upper().startswith("HS")]
        if hmac and isinstance(self.key, str | bytes):
            key = self.key.encode() if isinstance(self.key, str) else self.key
            need = max(_HMAC_KEY_BYTES.get(a.upper(), 64) for a in hmac)
            if len(key) < need:
                raise ValueError(
                    f"the HMAC key must be at least {need} bytes for {', '.join(hmac)} "
                    f"(it has {len(key)}): a short key can be guessed offline from one token"
                )
            if key.lstrip().startswith(b"-----BEGIN"):
                raise ValueError("a PEM key cannot be an HMAC secret: pin RS256, ES256, ...")


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do.

    ``Principal.anonymous()`` (auth off) may do everything.
    """

    subject: str | None
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    replay: tuple[str, ...] = ()
    admin: bool = False
    expires: float | None = None
    everything: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(subject=None, admin=True, everything=True)

    def grants(self, action: Action) -> tuple[str, ...]:
        return {
            "publish": self.publish,
            "subscribe": self.subscribe,
            "history": self.history,
            "replay": self.replay,
        }[action]

    def may(self, action: Action, name: str) -> bool:
        """Whether ``action`` is granted on topic or pattern ``name``."""
        if self.everything:
            return True
        return covers(self.grants(action), name)

    def check(self, action: Action, name: str) -> None:
        """Raise :class:`AuthError` (403) unless ``action`` is granted on ``name``."""
        if not self.may(action, name):
            raise AuthError(403, f"no {action} grant for {name!r}")

    def check_admin(self) -> None:
        if not (self.everything or self.admin):
            raise AuthError(403, "no admin grant")

    def expired(self, now: float | None = None, leeway: float = 0.0) -> bool:
        if self.expires is None:
            return False
        return (time.time() if now is None else now) > self.expires + leeway


def covers(grants: Iterable[str], name: str) -> bool:
    """Whether a grant covers topic or pattern ``name`` (see the module docstring)."""
    is_pattern = not _GLOB.isdisjoint(name)
    for grant in grants:
        if not is_pattern:
            if match(grant, name):
                return True
        elif grant == name or (
            grant.endswith("*") and _GLOB.isdisjoint(grant[:-1]) and name.startswith(grant[:-1])
        ):
            return True
    return False


def _prefix_grant(grant: str, pattern: str) -> bool:
    # "news.*" covers any pattern that starts with "news." (whatever follows, it only narrows)
    prefix = grant[:-1]
    return grant.endswith("*") and _GLOB.isdisjoint(prefix) and pattern.startswith(prefix)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise AuthError(401, f"grant {what!r} must be a list of strings")
    return tuple(value)


def authenticate(token: str | None, config: AuthConfig | None) -> Principal:
    """Check ``token`` and return who it names; with ``config`` ``None`` everyone is allowed.

    Raises:
        AuthError: 401 for a missing, malformed, expired or wrongly signed token, or one for
            another audience or issuer.

    Example::

        principal = authenticate(request.headers.get("authorization"), config.auth)
        principal.check("publish", "chat.room1")
    """
    if config is None:
        return Principal.anonymous()
    if not token:
        raise AuthError(401, "a bearer token is required")
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    try:
        claims = jwt.decode(
            token,
            _key_for(token, config.key),
            algorithms=list(config.algorithms),
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway,
            options={"require": ["exp", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.InvalidAudienceError:
        raise AuthError(401, "token has the wrong audience") from None
    except jwt.InvalidIssuerError:
        raise AuthError(401, "token has the wrong issuer") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError(401, "token algorithm not allowed") from None
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None
    grants = claims.get(config.claim) or {}
    if not isinstance(grants, Mapping):
        raise AuthError(401, f"claim {config.claim!r} must be an object")
    return Principal(
        subject=str(claims["sub"]) if "sub" in claims else None,
        publish=_strings(grants.get("publish"), "publish"),
        subscribe=_strings(grants.get("subscribe"), "subscribe"),
        history=_strings(grants.get("history"), "history"),
        replay=_strings(grants.get("replay"), "replay"),
        admin=grants.get("admin") is True,
        expires=float(claims["exp"]),
        claims=claims,
    )


def _key_for(token: str, key: str | bytes | jwt.PyJWKSet) -> Any:
    """The key that checks ``token``: ``key`` itself, or from a JWKS the one its ``kid`` names
    (or the only one)."""
    if not isinstance(key, jwt.PyJWKSet):
        return key
    kid = jwt.get_unverified_header(token).get("kid")
    if kid is None and len(key.keys) == 1:
        return key.keys[0]
    for jwk in key.keys:
        if jwk.key_id == kid:
            return jwk
    raise jwt.InvalidKeyError(f"no key {kid!r} in the JWKS")


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str] | None) -> bool:
    """Whether a browser ``Origin`` may talk to the gateway reached as ``host``.

    No ``Origin`` (not a browser) is allowed; ``allowed`` ``None`` means same origin only.
    """
    if origin is None:
        return True
    if allowed is None:
        if host is None:
            return False
        scheme_sep = origin.find("://")
        return scheme_sep > 0 and origin[scheme_sep + 3 :].rstrip("/") == host
    return "*" in allowed or origin.rstrip("/") in allowed
