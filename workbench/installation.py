"""How this copy of Workbench was installed, and what to tell its user to get more of it.

A hint must work for the person reading it: an installer's user has no pip or make, a
source checkout's user wants the exact `make` command, and someone who installed the
Python package wants the pip line with our own distribution name (PyPI's "workbench" is
an unrelated project: asking pip for it would install someone else's software).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from workbench.children import is_frozen

DISTRIBUTION = "local-model-workbench"  # the name on PyPI; the import package is `workbench`
Installation = Literal["installer", "checkout", "package"]

# What each optional extra brings, in words, and what a pip user should know about it.
_EXTRAS = {
    "train": ("LoRA training", "PyTorch, transformers and peft (about 1 GB)",
              " On Linux add --extra-index-url https://download.pytorch.org/whl/cpu, or pip "
              "may fetch a CUDA build of several GB."),
}


def source_root() -> Path | None:
    """The checkout this copy runs from (where the Makefile is), or None."""
    if is_frozen():
        return None
    root = Path(__file__).resolve().parent.parent
    if (root / "Makefile").is_file() and (root / "pyproject.toml").is_file():
        return root
    return None


def how_installed() -> Installation:
    """'installer' (a frozen build), 'checkout' (run from the source tree, as `make run`
    sets it up) or 'package' (pip installed the distribution)."""
    if is_frozen():
        return "installer"
    return "checkout" if source_root() is not None else "package"


def extra_hint(extra: str, installation: Installation | None = None) -> str:
    """How to add optional extra `extra` to this installation, as plain text."""
    feature, contents, pip_note = _EXTRAS[extra]
    where = installation or how_installed()
    if where == "installer":
        return (f"{feature} is not included in this download: it needs {contents}, which "
                "the installers leave out. To use it, run Workbench from its source code "
                f"with `make run WORKBENCH_EXTRAS={extra}` (the README's “Run from source” "
                "says how).")
    if where == "checkout":
        return (f"{feature} needs {contents}. Install them into this checkout's .venv and "
                f"start again with:\n    make run WORKBENCH_EXTRAS={extra}")
    return (f"{feature} needs {contents}. Install them with:\n"
            f'    pip install "{DISTRIBUTION}[{extra}]"\n{pip_note.strip()}')
