"""Connection options as keyword arguments of AsyncClient and Client: the same names, checks
and defaults as the URL's (one table), and a clear error when a keyword contradicts the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

import herald
from herald._core.options import OPTIONS
from herald._core.url import parse_url, with_options


def test_keywords_set_what_the_url_would() -> None:
    by_url = parse_url(
        "rediss://bob:pw@h:1/3?ssl_ca_certs=/ca&ssl_certfile=/c&ssl_keyfile=/k"
        "&ssl_cert_reqs=none&ssl_check_hostname=false"
    )
    by_keywords = with_options(
        parse_url("rediss://h:1"),
        {
            "username": "bob",
            "password": "pw",
            "db": 3,
            "ssl_ca_certs": "/ca",
            "ssl_certfile": "/c",
            "ssl_keyfile": "/k",
            "ssl_cert_reqs": "none",
            "ssl_check_hostname": False,
        },
    )
    assert by_keywords == by_url
    sentinel = with_options(
        parse_url("redis+sentinel://s1/main"),
        {"sentinel_username": "watch", "sentinel_password": "spw"},
    )
    assert (
        sentinel.sentinel
        == parse_url(
            "redis+sentinel://s1/main?sentinel_username=watch&sentinel_password=spw"
        ).sentinel
    )


def test_every_url_option_is_a_keyword_of_both_clients() -> None:
    import inspect

    for cls in (herald.AsyncClient, herald.Client):
        params = inspect.signature(cls).parameters
        assert [n for n in OPTIONS if n not in params] == [], cls
        assert all(params[n].default is None for n in OPTIONS)


@pytest.mark.parametrize(
    ("address", "options", "error"),
    [
        ("redis://:a@h", {"password": "b"}, "password is given in the URL and as a keyword"),
        ("redis://h/2", {"db": 3}, "db is given in the URL"),
        ("redis://h?db=2", {"db": 3}, "db is given in the URL"),
        ("rediss://h?ssl_cert_reqs=none", {"ssl_cert_reqs": "required"}, "ssl_cert_reqs is"),
        ("redis://h", {"ssl_ca_certs": "/ca.pem"}, "use a rediss:// URL"),
        ("redis://h", {"sentinel_password": "x"}, "redis\\+sentinel://"),
        ("redis+cluster://h:1", {"db": 1}, "database 0 only"),
        ("rediss://h", {"ssl_cert_reqs": "maybe"}, "none, optional or required"),
        ("rediss://h", {"ssl_check_hostname": "perhaps"}, "true or false"),
        ("redis://h", {"db": -1}, "database number"),
        ("redis://h", {"password": ""}, "non-empty str"),
    ],
)
def test_bad_or_contradicting_keywords_are_refused(
    address: str, options: dict[str, object], error: str
) -> None:
    with pytest.raises(herald.ConfigurationError, match=error) as info:
        herald.AsyncClient(address, **options)  # type: ignore[arg-type]
    assert "pw" not in str(info.value)


def test_the_same_value_both_ways_is_fine() -> None:
    hub = herald.AsyncClient("redis://:pw@h/2", password="pw", db=2)
    assert hub.endpoint is not None
    assert (hub.endpoint.password, hub.endpoint.db) == ("pw", 2)


@pytest.mark.integration  # a server of its own
async def test_password_and_db_as_keywords_on_a_real_server(tmp_path: Path, topic: str) -> None:
    with herald.EmbeddedServer(tmp_path / "v", persist=False, password="s3cret") as server:
        url = f"redis://127.0.0.1:{server.port}"
        with pytest.raises(herald.AuthenticationFailed):
            async with herald.AsyncClient(url, password="wrong"):
                pass
        async with herald.AsyncClient(url, password="s3cret", db=5) as hub:
            await hub.execute("SET", topic, "x")
            assert await hub.execute("CLIENT", "INFO") is not None
        async with herald.AsyncClient(f"{url}/5", password="s3cret") as hub:
            assert await hub.execute("GET", topic) == b"x"
        with herald.Client(url, password="s3cret", db=5, publish_timeout=2.0) as sync_hub:
            assert sync_hub.execute("GET", topic) == b"x"


def test_sizes_and_flags_are_checked_the_same_in_both_builds() -> None:
    # Compiled, Link refuses a float where its annotation says int and an int where it says
    # bool: the client hands it exactly those, or refuses the value itself, in both builds.
    hub = herald.AsyncClient("redis://127.0.0.1:1", max_pending_bytes=8e6, batch=1)  # type: ignore[arg-type]
    assert hub.batch is True
    hub = herald.AsyncClient("redis://127.0.0.1:1", batch=0)  # type: ignore[arg-type]
    assert hub.batch is False
    for bad in (0, -1, 1.5, float("inf"), float("nan"), "8MB", True, None):
        with pytest.raises(herald.ConfigurationError, match="max_pending_bytes"):
            herald.AsyncClient("redis://127.0.0.1:1", max_pending_bytes=bad)  # type: ignore[arg-type]


async def test_a_whole_float_size_and_an_int_flag_publish(url: str, topic: str) -> None:
    async with (
        herald.AsyncClient(url, max_pending_bytes=8e6, batch=1) as hub,  # type: ignore[arg-type]
        hub.subscribe(topic) as sub,
    ):
        for n in range(3):
            await hub.publish(topic, {"n": n})
        assert [(await sub.next(timeout=2)).data["n"] for _ in range(3)] == [0, 1, 2]
