"""Our distribution name, and install hints that fit how this copy was installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from workbench import installation
from workbench.installation import DISTRIBUTION, extra_hint, how_installed
from workbench.models import builtin

ROOT = Path(__file__).resolve().parent.parent


def test_the_distribution_is_ours_and_every_hint_names_it() -> None:
    # PyPI's "workbench" is an unrelated project: a hint naming it installs someone else's
    # software. (That the name is free on PyPI was checked by hand on 2026-12-04.)
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib before Python 3.11
    assert re.search(r'^name = "([^"]+)"', pyproject, re.M).group(1) == DISTRIBUTION
    assert DISTRIBUTION != "workbench" and re.search(r"^train = \[", pyproject, re.M)
    pip_of_old_name = re.compile(r"""pip install[^\n`]*?["' ]workbench\[""")
    texts = [p for p in (ROOT / "workbench").rglob("*.py")] + [
        ROOT / "README.md", ROOT / "packaging" / "README.md", ROOT / "Makefile"]
    offenders = [p.name for p in texts if pip_of_old_name.search(p.read_text("utf-8"))]
    assert offenders == []


def test_a_checkout_is_told_the_make_command() -> None:
    assert how_installed() == "checkout"  # the tests run from the source tree
    hint = extra_hint("train")
    assert "make run WORKBENCH_EXTRAS=train" in hint and "pip" not in hint


def test_an_installer_is_told_what_its_download_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert how_installed() == "installer" and installation.source_root() is None
    hint = extra_hint("train")
    assert "not included in this download" in hint
    assert "pip install" not in hint and ".venv" not in hint
    assert "Reinstall Workbench" in builtin.INSTALL_HINTS[how_installed()]


def test_a_pip_install_is_told_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installation, "source_root", lambda: None)
    assert how_installed() == "package"
    hint = extra_hint("train")
    assert f'pip install "{DISTRIBUTION}[train]"' in hint
    assert "download.pytorch.org/whl/cpu" in hint  # else pip may pull a CUDA torch
