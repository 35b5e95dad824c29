"""The release artefacts: the sdist and the wheel build and pass `twine check`, and the wheel,
installed alone in a new virtual environment, gives a working `herald` without the web stack."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import herald
import herald._core

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    # Without PYTHONPATH: the compiled tier sets it to the compiled tree, and a venv's `herald`
    # must run what is installed in that venv, nothing else.
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def constraints_from_lock(lock: Path, out: Path) -> Path:
    """The lock's pins without their hashes: the wheel's own dependencies resolve to them."""
    pins = [
        line.rstrip(" \\")
        for line in lock.read_text().splitlines()
        if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", line)
    ]
    out.write_text("\n".join(pins) + "\n")
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "HERALD_MYPYC"}  # the pure wheel
    log = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, env=env)
    assert "Deprecat" not in log, log  # setuptools' warnings about the project's metadata
    return out


def test_sdist_and_wheel_build_and_pass_twine_check(dist: Path) -> None:
    version = herald.__version__
    names = sorted(p.name for p in dist.iterdir())
    assert names == [
        f"herald_pubsub-{version}-py3-none-any.whl",
        f"herald_pubsub-{version}.tar.gz",
    ]
    report = run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir())
    assert report.count("PASSED") == 2, report


def test_the_wheel_alone_installs_the_core_and_round_trips(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    pins = constraints_from_lock(ROOT / "requirements" / "serve.txt", tmp_path / "pins.txt")
    log = run(python, "-m", "pip", "install", "-q", "-c", pins, f"{wheel}[embedded]")
    assert "Deprecat" not in log, log

    installed = run(python, "-m", "pip", "list", "--format=freeze").lower()
    for web in ("starlette", "uvicorn", "websockets", "pyjwt", "prometheus-client"):
        assert f"\n{web}==" not in f"\n{installed}", f"{web} came with the core:\n{installed}"

    assert (
        run(venv / "bin" / "herald", "--version").strip()
        == f"herald, version {herald.__version__}, core pure Python"
    )
    script = textwrap.dedent(
        """
        import sys, herald
        assert "herald.gateway" not in sys.modules
        with herald.Client() as hub, hub.subscribe("dist.check") as sub:
            hub.publish("dist.check", {"n": 1}, confirm=True)
            print(sub.next(timeout=5).data)
        assert "herald.gateway" not in sys.modules
        """
    )
    assert run(python, "-c", script, cwd=tmp_path).strip() == "{'n': 1}"
    # The gateway is an extra: `herald serve` says which one instead of failing on an import.
    serve = subprocess.run(
        [venv / "bin" / "herald", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode != 0
    assert "pip install 'herald-pubsub[serve]'" in serve.stderr, serve.stderr


@pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler for the compiled core"
)
@pytest.mark.timeout(600)  # compiling the core takes a minute or two
def test_the_compiled_wheel_carries_the_compiled_core_and_runs_it(tmp_path: Path) -> None:
    """``HERALD_MYPYC=1`` (``make dist``): a platform wheel with ``herald._core`` and
    ``herald._io.link`` compiled."""
    out = tmp_path / "dist"
    env = {**os.environ, "HERALD_MYPYC": "1"}
    run(sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", out, ROOT, env=env)
    [wheel] = out.glob("*.whl")
    assert not wheel.name.endswith("-py3-none-any.whl"), wheel.name  # platform-tagged
    names = zipfile.ZipFile(wheel).namelist()
    core = Path(herald._core.__file__).parent
    for module in core.glob("*.py"):
        assert f"herald/_core/{module.name}" in names  # the sources, as in the pure wheel
        compiled = [n for n in names if n.startswith(f"herald/_core/{module.stem}.cpython-")]
        if module.stem in ("__init__", "durable_message"):  # setup.py's NOT_COMPILED
            assert compiled == []
        else:
            assert len(compiled) == 1, (module, compiled)
            assert compiled[0].endswith(".so")
    # and Link, the one module of herald._io that setup.py compiles
    [link] = [n for n in names if n.startswith("herald/_io/link.cpython-")]
    assert link.endswith(".so"), link
    assert any(n.startswith("herald_core__mypyc.") for n in names), names  # their runtime

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    pins = constraints_from_lock(ROOT / "requirements" / "serve.txt", tmp_path / "pins.txt")
    run(python, "-m", "pip", "install", "-q", "-c", pins, f"{wheel}[embedded]")
    assert (
        run(venv / "bin" / "herald", "--version").strip()
        == f"herald, version {herald.__version__}, core compiled (mypyc)"
    )
    installed = run(python, "-m", "pip", "list", "--format=freeze").lower()
    assert "\nmypy" not in f"\n{installed}", installed  # mypy builds it, it does not run it
    script = textwrap.dedent(
        """
        import herald, herald._io
        assert herald._io.compiled()[-1] == "herald._io.link", herald._io.compiled()
        with herald.Client() as hub, hub.subscribe("dist.check") as sub:
            hub.publish("dist.check", {"n": 1}, confirm=True)
            print(sub.next(timeout=5).data)
        """
    )
    assert run(python, "-c", script, cwd=tmp_path).strip() == "{'n': 1}"
