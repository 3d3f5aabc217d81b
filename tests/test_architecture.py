"""The layout the project promises, and the rule that core packages never import Qt."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import workbench

ROOT = Path(__file__).resolve().parents[1]
CORE = ("hardware", "models", "engine", "chat", "explain", "lora", "serve")


def core_modules() -> list[str]:
    names = ["workbench", "workbench.settings"]
    for package in CORE:
        names.append(f"workbench.{package}")
        path = Path(workbench.__file__).parent / package
        names += [f"workbench.{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]
    return names


def test_layout_is_in_place() -> None:
    for name in ("pyproject.toml", "README.md", "Makefile", "workbench", "resources",
                 "packaging", "tests", ".ci/run", "docs", "workbench/app.py",
                 "workbench/ui", "workbench/bench"):
        assert (ROOT / name).exists(), name
    for package in CORE:
        assert (ROOT / "workbench" / package / "__init__.py").is_file(), package


def test_app_icon_is_found() -> None:
    from workbench.resources import icon_path

    assert icon_path().is_file() and icon_path().read_text().startswith("<svg")


def test_core_packages_import_without_qt() -> None:
    modules = core_modules()
    assert "workbench.engine.worker" in modules and "workbench.chat.store" in modules
    # A meta-path finder that refuses PySide6/shiboken6: importing core must not need them.
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6'):\n"
        "            raise ImportError('Qt imported by core: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        "print('ok', len(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make run") < 800 and readme.index("make test") < 800
