"""PyInstaller hook for llama-cpp-python.

llama_cpp opens libllama/libggml/libmtmd with ctypes from its own `lib/` folder
(llama_cpp/_ctypes_extensions.py: load_shared_library(name, Path(__file__).parent / "lib")),
so PyInstaller's import scan never sees them. Everything in that folder is collected to the
same place in the bundle: the shared libraries (Linux .so*, macOS .dylib, Windows .dll),
including the SONAME copies (libggml.so.0 ...) that the libraries name as their NEEDED
dependencies and find through their RUNPATH $ORIGIN, and any data a GPU build puts there
(e.g. Metal shader sources). A GPU build's own backends (libggml-cuda, libggml-vulkan,
libggml-metal) are in the same folder and travel with it; their system dependencies (CUDA
runtime, Vulkan loader) are found by PyInstaller's binary dependency analysis, except the
driver itself (libcuda, the Vulkan ICD), which comes from the user's system.
"""

from __future__ import annotations

import re
from pathlib import Path

from PyInstaller.utils.hooks import get_package_paths

_BINARY_SUFFIXES = (".so", ".dylib", ".dll")
# pip installs the libraries' symlinks as copies: libggml.so (what ctypes opens),
# libggml.so.0 (the SONAME other libraries ask for) and libggml.so.0.25.3 (the file the
# symlinks pointed to, which nothing names). The last is left out; the spec turns the
# first into a symlink to the second in the finished bundle.
_FULL_VERSION = re.compile(r"^(?P<soname>.+\.so\.\d+)(\.\d+)+$")

_, package_dir = get_package_paths("llama_cpp")
binaries: list[tuple[str, str]] = []
datas: list[tuple[str, str]] = []
for folder in ("lib", "bin"):  # Windows wheels of some versions put the DLLs in bin/
    source = Path(package_dir) / folder
    if not source.is_dir():
        continue
    for path in sorted(source.iterdir()):
        if not path.is_file():
            continue
        target = f"llama_cpp/{folder}"
        name = path.name
        full = _FULL_VERSION.match(name)
        if full and (source / full["soname"]).exists():
            continue  # libggml.so.0.25.3: pip's copy of the real file; nothing names it
        if name.endswith(_BINARY_SUFFIXES) or ".so." in name:
            binaries.append((str(path), target))
        else:
            datas.append((str(path), target))

# The OpenAI-compatible server and its FastAPI stack are not used by Workbench.
excludedimports = ["llama_cpp.server", "uvicorn", "fastapi", "sse_starlette",
                   "starlette_context", "pydantic_settings"]
