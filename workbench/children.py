"""The child processes Workbench starts, and the one way to start them.

From a source checkout a child is `python -m MODULE ARGS`. A frozen build (PyInstaller)
has no `-m`: its executable is the app itself, so it is started again with a flag that
workbench.app.main dispatches to the same module's `main(argv)`. Every child goes through
`child_command`, so a new one cannot work from source and break in the installers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# flag -> module run by `python -m`; its `main(argv)` is what the flag calls.
CHILDREN: dict[str, str] = {
    "--engine-worker": "workbench.engine.worker",  # the llama.cpp engine process
    "--probe-hardware": "workbench.hardware",  # the hardware snapshot, as JSON
    "--measure-fit": "workbench.models.measure",  # llama.cpp's no_alloc buffer sizing
    "--requantize": "workbench.models.requantize",  # llama.cpp's quantizer
    "--train-lora": "workbench.lora.train",  # LoRA training (needs the train extra)
}


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def child_command(flag: str, args: Sequence[str] = ()) -> list[str]:
    """The command line that runs child `flag` with `args`, from source or frozen."""
    module = CHILDREN[flag]
    if is_frozen():
        return [sys.executable, flag, *args]
    return [sys.executable, "-m", module, *args]


def run_child(flag: str, argv: Sequence[str]) -> int:
    """Run child `flag` in this process (what a frozen executable does with the flag)."""
    module = importlib.import_module(CHILDREN[flag])
    if not hasattr(module, "main"):  # a package: its __main__ holds main()
        module = importlib.import_module(CHILDREN[flag] + ".__main__")
    return int(module.main(list(argv)) or 0)
