"""Schemathesis against the gateway's OpenAPI document: generated requests (bounded in number)
to a gateway on a real Valkey; no 5xx, and every response as the document describes it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald import EmbeddedServer
from herald.gateway.openapi import document
from herald.gateway.serve import BackgroundGateway

SCHEMA = schemathesis.openapi.from_dict(document())
#: The event stream never ends, so no whole response can be checked: its refusals (400, 403,
#: 409) and its frames are tested in test_gateway_ws.py and test_gateway_protocol.py.
ENDLESS = {("/topics/{topic}/events", "GET")}
OPERATIONS = [
    (path, method.upper())
    for path, item in document()["paths"].items()
    for method in item
    if (path, method.upper()) not in ENDLESS
]


@pytest.fixture(scope="module")
def gateway(server: EmbeddedServer) -> Iterator[BackgroundGateway]:
    with BackgroundGateway(server.url) as gw:
        yield gw


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_operation_conforms(gateway: BackgroundGateway, path: str, method: str) -> None:
    operation = SCHEMA[path][method]

    @given(data=st.data())
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy())
        response = case.call(base_url=gateway.url)
        case.validate_response(response)

    check()


def test_the_document_is_complete_and_its_topics_are_the_servers(
    gateway: BackgroundGateway,
) -> None:
    """Enough to generate a client: an operationId and security on every operation, a typed
    body for every 200, SSE and /metrics present; topics as the server takes them."""
    import httpx
    import jsonschema_rs

    served = httpx.get(f"{gateway.url}/openapi.json").json()
    assert served["servers"] == [{"url": gateway.url, "description": "this gateway"}]
    ids = []
    for path, item in served["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert "security" in op, (path, method)
            ok = op["responses"]["200"]["content"]
            schema = next(iter(ok.values()))["schema"]
            assert schema not in ({}, {"type": "object"}) or path in (
                "/openapi.json",
                "/topics/{topic}",  # the request body of a publish is any JSON
            ), (path, method)
    assert len(ids) == len(set(ids))
    assert {"/topics/{topic}/events", "/metrics"} <= set(served["paths"])
    params = served["paths"]["/topics/{topic}"]["post"]["parameters"]
    topic_schema = next(p for p in params if p["name"] == "topic")["schema"]
    valid = jsonschema_rs.validator_for(topic_schema)
    with httpx.Client(base_url=gateway.url) as http:
        for name in ("café", ".dot", "x" * 300, "news/sport", "a%b", "日本"):
            assert valid.is_valid(name), name
            r = http.post(f"/topics/{quote(name, safe='')}", json=1)
            assert r.status_code == 200, (name, r.text)
            assert r.json()["topic"] == name
        for name in ("a b", "{x}", "a*", "."):
            assert not valid.is_valid(name), name
