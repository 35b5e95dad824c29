"""Schemathesis against the gateway's OpenAPI document: generated requests (bounded in number)
to a gateway on a real Valkey; no 5xx, and every response as the document describes it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald import EmbeddedServer
from herald.gateway.openapi import document
from herald.gateway.serve import BackgroundGateway

SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = [
    (path, method.upper()) for path, item in document()["paths"].items() for method in item
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
