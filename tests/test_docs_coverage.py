"""The site answers a newcomer's look-ups: every error class, client option and gateway limit
has its entry (the API and CLI references are generated, so they cannot miss one)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

import herald
from herald.gateway import GatewayConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"
ERRORS = sorted(
    name
    for name in herald.__all__
    if isinstance(obj := getattr(herald, name), type) and issubclass(obj, herald.HeraldError)
)


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_has_a_troubleshooting_entry(name: str) -> None:
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    assert f"### `{name}`" in page


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_is_in_the_api_reference(name: str) -> None:
    assert f"::: herald.{name}\n" in (DOCS / "reference.md").read_text(encoding="utf-8")


def test_every_client_option_is_in_the_configuration_table() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    options = [p for p in inspect.signature(herald.AsyncClient).parameters if p != "url"]
    assert [o for o in options if f"| `{o}` |" not in page] == []


def test_every_gateway_limit_is_in_the_configuration_reference() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    fields = [f.name for f in dataclasses.fields(GatewayConfig)]
    assert [f for f in fields if f"`{f}`" not in page] == []
