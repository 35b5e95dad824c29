"""The release artefacts: the sdist and the wheel build and pass `twine check`, and the wheel,
installed alone in a new virtual environment, gives a working `herald` without the web stack."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import herald

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
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
    log = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
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
        run(venv / "bin" / "herald", "--version").strip() == f"herald, version {herald.__version__}"
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
