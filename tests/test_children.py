"""Child processes: each one runs from source (`python -m`) and from a frozen build (the
executable again, with a flag that workbench.app.main dispatches)."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import workbench
from workbench import app
from workbench.children import CHILDREN, child_command
from workbench.engine.local import worker_command
from workbench.hardware.isolated import probe_command

PACKAGE = Path(workbench.__file__).parent


def test_source_and_frozen_command_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    # From source, every child starts through the one launcher (workbench/children.py).
    assert worker_command() == [sys.executable, "-m", "workbench.children", "--engine-worker"]
    assert probe_command() == [sys.executable, "-m", "workbench.children", "--probe-hardware"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert worker_command() == [sys.executable, "--engine-worker"]
    assert probe_command() == [sys.executable, "--probe-hardware"]
    for flag in CHILDREN:
        assert child_command(flag, ["a", "b"]) == [sys.executable, flag, "a", "b"]


@pytest.mark.parametrize("flag", sorted(CHILDREN))
def test_every_child_has_a_main(flag: str) -> None:
    module = importlib.import_module(CHILDREN[flag])
    if not hasattr(module, "main"):
        module = importlib.import_module(CHILDREN[flag] + ".__main__")
    assert callable(module.main)


def test_app_main_dispatches_child_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(app, "run_child", lambda flag, argv: calls.append((flag, argv)) or 3)
    for flag in CHILDREN:
        assert app.main([flag, "x"]) == 3
    assert calls == [(flag, ["x"]) for flag in CHILDREN]


def test_every_python_m_child_in_the_source_has_a_frozen_flag() -> None:
    # A new `python -m workbench.…` child without a flag would break only in the installers.
    started = re.compile(r'sys\.executable,\s*"-m",\s*"(workbench[\w.]*)"')
    # Benchmarks run from a checkout only: packaging/workbench.spec leaves workbench.bench
    # out of the installers, so their children need no flag.
    for path in (p for p in PACKAGE.rglob("*.py") if "bench" not in p.relative_to(PACKAGE).parts):
        for module in started.findall(path.read_text(encoding="utf-8")):
            assert module in CHILDREN.values(), f"{path.name} starts {module} with no flag"


def test_frozen_dispatch_runs_the_probe_in_a_child() -> None:
    script = ("import sys; sys.frozen = True\n"
              "from workbench.app import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "--probe-hardware"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout.strip().splitlines()[-1])
    assert snapshot["cpu"]["logical_cores"] >= 1


def test_windowed_build_without_std_streams_does_not_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr(app, "run_child", lambda flag, argv: print("fine") or 0)
    assert app.main(["--probe-hardware"]) == 0
    assert sys.stdout is not None and sys.stderr is not None
    sys.stdout.close()
    sys.stderr.close()


def test_a_frozen_app_starts_its_children_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    # Children inherit this process's environment: they must run PyInstaller's start-up
    # again (the bundle on LD_LIBRARY_PATH), while other programs get the system's path.
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/workbench/_internal:/usr/local/lib")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/usr/local/lib")
    monkeypatch.delenv("PYINSTALLER_RESET_ENVIRONMENT", raising=False)
    app._environment_for_children()
    assert os.environ["PYINSTALLER_RESET_ENVIRONMENT"] == "1"
    assert os.environ["LD_LIBRARY_PATH"] == "/usr/local/lib"
    assert "LD_LIBRARY_PATH_ORIG" not in os.environ


def test_from_source_the_environment_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "frozen", raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/somewhere")
    monkeypatch.delenv("PYINSTALLER_RESET_ENVIRONMENT", raising=False)
    app._environment_for_children()
    assert "PYINSTALLER_RESET_ENVIRONMENT" not in os.environ
    assert os.environ["LD_LIBRARY_PATH"] == "/somewhere"
