"""The site answers a newcomer's look-ups: every error class, client option and gateway limit
has its entry (the API and CLI references are generated, so they cannot miss one)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import click
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


# -- herald serve and the environment: docs/configuration.md against the code ------------------

SRC = Path(herald.__file__).resolve().parent
_SERVE_ROW = re.compile(r"^\| `(--[a-z][a-z-]*)` \| `([a-z][a-z-]*)`", re.MULTILINE)
_ENV_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)


def _serve_options() -> list[click.Option]:
    from herald.cli import serve

    return [p for p in serve.params if isinstance(p, click.Option) and not p.hidden]


def _long_flag(option: click.Option) -> str:
    return max((o for o in option.opts if o.startswith("--")), key=len)


def test_every_serve_flag_and_its_config_key_are_in_the_configuration_reference() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = []
    for option in _serve_options():
        flag = _long_flag(option)
        # --config names the file: it has no key of its own in it.
        key = "(none" if option.name == "config" else f"`{flag[2:]}`"
        if f"| `{flag}` | {key}" not in page:
            missing.append(flag)
    assert missing == [], "herald serve flags without a row in docs/configuration.md"


def test_every_documented_serve_key_is_one_that_config_files_set(tmp_path: Path) -> None:
    """Each row's flag exists, and its key in a --config file sets that flag's option."""
    from herald.cli import _load_config, serve

    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = _SERVE_ROW.findall(page)
    assert len(rows) == len(_serve_options()) - 1  # all but --config
    by_flag = {_long_flag(o): o for o in _serve_options()}
    config = next(o for o in _serve_options() if o.name == "config")
    for flag, key in rows:
        assert flag in by_flag, f"{flag} is documented but herald serve has no such flag"
        file = tmp_path / f"{key}.toml"
        file.write_text(f'[serve]\n{key} = "x"\n')
        ctx = click.Context(serve)
        _load_config(ctx, config, file)
        option = by_flag[flag]
        assert ctx.default_map == {option.name: ["x"] if option.multiple else "x"}, key


def _env_reads() -> set[str]:
    """The environment variables Herald's code reads by name: ``os.environ[...]``,
    ``os.environ.get``, ``os.getenv``, ``... in os.environ`` and click's ``envvar=``
    (docstrings and examples are not code)."""
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            arg: ast.expr | None = None
            if isinstance(node, ast.Subscript) and _is_environ(node.value):
                if isinstance(node.ctx, ast.Load):
                    arg = node.slice
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and (
                    (func.attr == "get" and _is_environ(func.value))
                    or (func.attr == "getenv" and _is_name(func.value, "os"))
                ):
                    arg = node.args[0]
            elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
                arg = node.left
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "envvar":
                        arg = kw.value
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
    return names


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_name(node.value, "os")


def test_every_environment_variable_herald_reads_is_in_the_configuration_reference() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    reads = _env_reads()
    assert {"HERALD_URL", "HERALD_HOME", "HERALD_GATEWAY_PORT"} <= reads  # the walk finds them
    documented = set(_ENV_ROW.findall(page))
    assert sorted(reads - documented) == [], "read by Herald, not in docs/configuration.md"
    assert sorted(documented - reads) == [], "in docs/configuration.md, read by nothing"
