"""llama.cpp's shared libraries load before numpy in every process that loads them.

With numpy imported first, the next model load crashed (SIGSEGV inside llama.cpp) on a
CUDA build; a CPU build does not show it, so these tests watch the order itself: a
sitecustomize in each child records, at the first llama/ggml library ctypes loads, whether
numpy was already imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.children import LOADS_LLAMA, child_command

HOOK = '''
import ctypes, json, os, sys
_seen = []
_load = ctypes.CDLL.__init__
def _init(self, name, *args, **kwargs):
    base = os.path.basename(str(name or ""))
    if not _seen and ("llama" in base or "ggml" in base):
        _seen.append(base)
        with open(os.environ["WB_IMPORT_ORDER_LOG"], "a") as fh:
            fh.write(json.dumps({"lib": base, "numpy": "numpy" in sys.modules}) + "\\n")
    _load(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = _init
'''


def _first_load(command: list[str], tmp_path: Path) -> dict:
    """Run `command` with the hook; what it recorded at the first llama/ggml load."""
    (tmp_path / "sitecustomize.py").write_text(HOOK)
    log = tmp_path / "order.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
           "WB_IMPORT_ORDER_LOG": str(log)}
    # The children get no arguments: each loads llama.cpp first, then stops at its missing
    # input (the worker at its empty stdin). Only the order matters here.
    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                   timeout=120, check=False)
    lines = log.read_text().splitlines() if log.exists() else []
    assert lines, f"{command} never loaded llama.cpp's libraries"
    return json.loads(lines[0])


@pytest.mark.parametrize("flag", sorted(LOADS_LLAMA))
def test_import_order_llama_before_numpy_in_each_child(flag: str, tmp_path: Path) -> None:
    first = _first_load(child_command(flag), tmp_path)
    assert first["numpy"] is False, first


@pytest.mark.parametrize("flag", ["--engine-worker", "--measure-fit"])
def test_import_order_in_a_frozen_build(flag: str, tmp_path: Path) -> None:
    # A frozen build starts its children as `APP --flag`: workbench.app.main dispatches.
    script = ("import sys; sys.frozen = True\n"
              f"from workbench.app import main; sys.exit(main([{flag!r}]))")
    first = _first_load([sys.executable, "-c", script], tmp_path)
    assert first["numpy"] is False, first


def test_import_order_in_the_benchmarks(tmp_path: Path) -> None:
    first = _first_load([sys.executable, "-m", "workbench.bench", "--help"], tmp_path)
    assert first["numpy"] is False, first


def test_import_order_hook_sees_numpy_first(tmp_path: Path) -> None:
    # The check itself: llama_cpp imported after numpy is caught.
    first = _first_load([sys.executable, "-c", "import numpy, llama_cpp"], tmp_path)
    assert first["numpy"] is True, first
