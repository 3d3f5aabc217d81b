"""The child processes Workbench starts, and the one way to start them.

From a source checkout a child is `python -m workbench.children FLAG ARGS`: this module
is its entry. A frozen build (PyInstaller) has no `-m`: its executable is the app itself,
so it is started again with the flag, which workbench.app.main hands to the same
`run_child`. Every child goes through `child_command`, so a new one cannot work from
source and break in the installers.

`run_child` also settles what must happen first in a child: those that load llama.cpp
load its shared libraries before anything imports numpy. With numpy first, the next model
load crashed (SIGSEGV inside llama.cpp) on a CUDA build (seen on an H200, with all, some
or no layers on the GPU); the engine worker imports numpy through its modules.
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


# The children that load llama.cpp's libraries (the probe asks libggml for its devices).
LOADS_LLAMA = frozenset({"--engine-worker", "--probe-hardware", "--measure-fit",
                         "--requantize"})
LAUNCHER = "workbench.children"  # `python -m` this, then the flag


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def child_command(flag: str, args: Sequence[str] = ()) -> list[str]:
    """The command line that runs child `flag` with `args`, from source or frozen."""
    if flag not in CHILDREN:
        raise KeyError(flag)
    if is_frozen():
        return [sys.executable, flag, *args]
    return [sys.executable, "-m", LAUNCHER, flag, *args]


def load_llama() -> None:
    """Load llama.cpp's shared libraries now, before numpy (see the module docstring).
    Entry points that load llama.cpp in their own process call this first (the children
    through run_child, `python -m workbench.bench`). A broken build is not reported here:
    the caller meets it where it can say so."""
    if "llama_cpp" in sys.modules:
        return
    if "numpy" in sys.modules:
        print("workbench: numpy was imported before llama.cpp's libraries; a GPU build may "
              "crash on the next model load", file=sys.stderr)
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # ImportError, OSError: a missing or broken llama.cpp
        return


def run_child(flag: str, argv: Sequence[str]) -> int:
    """Run child `flag` in this process: from `python -m workbench.children FLAG`, or what
    a frozen executable does with the flag."""
    if flag in LOADS_LLAMA:
        load_llama()
    module = importlib.import_module(CHILDREN[flag])
    if not hasattr(module, "main"):  # a package: its __main__ holds main()
        module = importlib.import_module(CHILDREN[flag] + ".__main__")
    return int(module.main(list(argv)) or 0)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CHILDREN:
        sys.exit(f"usage: python -m {LAUNCHER} {{{','.join(CHILDREN)}}} [ARGS]")
    sys.exit(run_child(sys.argv[1], sys.argv[2:]))
