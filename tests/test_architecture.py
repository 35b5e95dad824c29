"""docs/architecture.md's layer map is checked against the tree and the layer contract: a module
added, moved or removed, or a layer reordered in pyproject.toml, fails here until the page says
so too."""

from __future__ import annotations

import re
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "herald"
PAGE = (ROOT / "docs" / "architecture.md").read_text()
# Packages whose every module the map names (the gateway, the fault suite and the testing
# helpers are named as wholes).
MAPPED = ("", "_core", "_io", "_pubsub", "_durable", "cli")


def layer_map() -> str:
    """The code block under "## Layers"."""
    section = PAGE.split("## Layers", 1)[1]
    return section.split("```", 2)[1]


def modules() -> Counter[str]:
    """The modules of the mapped packages as the map writes them (`link.py`, `cli/route.py`),
    counted: `group.py` is in `_io` and in `_durable`, so the map must name it twice."""
    found: Counter[str] = Counter()
    for folder in MAPPED:
        for path in (PACKAGE / folder).glob("*.py"):
            if path.name not in {"__init__.py", "__main__.py"}:
                found[f"cli/{path.name}" if folder == "cli" else path.name] += 1
    return found


def named() -> Counter[str]:
    """The modules the map names, counted."""
    text = layer_map()
    return Counter(re.findall(r"(?<![\w/])([a-z_]+\.py)\b", text)) + Counter(
        re.findall(r"\b(cli/[a-z_]+\.py)\b", text)
    )


def test_the_layer_map_names_every_module() -> None:
    missing = modules() - named()
    assert not missing, f"modules not in docs/architecture.md's layer map: {sorted(missing)}"


def test_every_module_the_layer_map_names_exists() -> None:
    # Counted, as above: a name the map gives twice (group.py) needs two modules of that name.
    extra = named() - modules()
    assert not extra, f"the layer map names modules that do not exist: {sorted(extra)}"
    for module in ("fastapi.py", "pytest_plugin.py"):
        assert (PACKAGE / module).exists()


def test_the_page_lists_the_contracts_layers_in_order() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = (c["layers"] for c in contracts if c["id"] == "layers")
    bullet = re.split(r"\.\s+A\s+module", PAGE.split("- **layers**, from the top:", 1)[1])[0]
    listed = [" ".join(name.split()) for name in re.findall(r"`([^`]+)`", bullet)]
    assert listed == layers, "docs/architecture.md's layers bullet differs from pyproject.toml"


def test_a_module_gone_whose_name_another_package_has_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # _io/group.py removed, _durable/group.py still there: the map's second group.py is stale.
    tree = modules() - Counter({"group.py": 1})
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: tree)
    with pytest.raises(AssertionError, match=r"group\.py"):
        test_every_module_the_layer_map_names_exists()
