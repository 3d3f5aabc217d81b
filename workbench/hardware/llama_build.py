"""What the installed llama.cpp build (llama-cpp-python) can offload to.

The build decides more than the hardware does: a CPU-only wheel on a machine with an RTX card
runs on the CPU. We ask llama.cpp itself, and list ggml's backend devices through ctypes on
the libggml that llama_cpp ships (llama-cpp-python does not bind the ggml device API)."""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from workbench.hardware.base import LlamaFinding
from workbench.hardware.snapshot import LlamaBuild, OffloadDevice

# enum ggml_backend_dev_type in ggml/include/ggml-backend.h: CPU, GPU (dedicated memory),
# IGPU (integrated, host memory), ACCEL (BLAS/AMX helpers used alongside the CPU backend).
DEVICE_KINDS: dict[int, str] = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}

# The ggml accessors are looked up through llama_cpp's own libllama handle first: dlsym on a
# handle also searches its dependencies, so this reaches the very libggml llama.cpp uses.
# Loading lib/libggml.so by path is only a fallback: pip installs the .so/.so.0 symlinks as
# separate copies, and a second copy would be a second ggml with its own device registry.
_GGML_NAMES = ("libggml.so", "libggml.dylib", "ggml.dll", "libggml.dll")
# Windows' GetProcAddress does not search dependencies, and the dev_* accessors live here.
_GGML_BASE_NAMES = ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll",
                    "libggml-base.dll")

ListDevices = Callable[[Any], tuple[OffloadDevice, ...]]


def device_kind(value: int) -> str:
    # A type a newer ggml adds is treated as a helper device: claiming it can hold offloaded
    # layers would be the worse mistake.
    return DEVICE_KINDS.get(value, "accel")


def _load_first(lib_dir: Path, names: tuple[str, ...]) -> ctypes.CDLL | None:
    for name in names:
        path = lib_dir / name
        if path.exists():
            return ctypes.CDLL(str(path))
    return None


class _Ggml:
    """The handful of ggml device functions, typed for ctypes."""

    def __init__(self, llama: Any) -> None:
        self.lib_dir = Path(llama.__file__).parent / "lib"
        loaded = getattr(getattr(llama, "llama_cpp", None), "_lib", None)
        # A fresh CDLL over the same handle: our restype/argtypes must not leak into the
        # function objects llama_cpp caches on its own CDLL.
        self._libs: list[ctypes.CDLL] = (
            [ctypes.CDLL(loaded._name, handle=loaded._handle)]
            if isinstance(loaded, ctypes.CDLL) else [])
        self._fallbacks = [_GGML_NAMES, _GGML_BASE_NAMES]
        vp, size_t, text = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        self.dev_count = self._fn("ggml_backend_dev_count", size_t, [])
        self.dev_get = self._fn("ggml_backend_dev_get", vp, [size_t])
        self.dev_name = self._fn("ggml_backend_dev_name", text, [vp])
        self.dev_description = self._fn("ggml_backend_dev_description", text, [vp])
        self.dev_type = self._fn("ggml_backend_dev_type", ctypes.c_int, [vp])
        self.dev_memory = self._fn("ggml_backend_dev_memory", None,
                                   [vp, ctypes.POINTER(size_t), ctypes.POINTER(size_t)])
        self.load_all_from_path = self._fn("ggml_backend_load_all_from_path", None, [text],
                                           required=False)

    def _fn(self, name: str, restype: Any, argtypes: list[Any], required: bool = True) -> Any:
        while True:
            for lib in self._libs:
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype, fn.argtypes = restype, argtypes
                    return fn
            if not self._fallbacks:
                break
            lib = _load_first(self.lib_dir, self._fallbacks.pop(0))
            if lib is not None:
                self._libs.append(lib)
        if required:
            raise AttributeError(f"no {name} in libllama or libggml under {self.lib_dir}")
        return None


def ggml_devices(llama: Any) -> tuple[OffloadDevice, ...]:
    """ggml's backend devices, in llama.cpp's order, for the imported llama_cpp module.
    Raises when libggml cannot be used.

    Asking a CUDA/HIP device for its memory creates a driver context in this process (a few
    hundred MB of VRAM until exit); that is the price of seeing exactly what llama.cpp sees."""
    ggml = _Ggml(llama)
    if ggml.dev_count() == 0 and ggml.load_all_from_path is not None:
        # Builds with GGML_BACKEND_DL register nothing until the backend plugins are loaded;
        # llama.cpp would load the same ones from its own directory before using them.
        ggml.load_all_from_path(str(ggml.lib_dir).encode())
    devices: list[OffloadDevice] = []
    for index in range(ggml.dev_count()):
        dev = ggml.dev_get(index)
        if not dev:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(OffloadDevice(
            name=_text(ggml.dev_name(dev)), description=_text(ggml.dev_description(dev)),
            kind=device_kind(int(ggml.dev_type(dev))), free_bytes=int(free.value),
            total_bytes=int(total.value),
        ))
    return tuple(devices)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _import_llama_cpp() -> ModuleType:
    # Imported on demand: loading libllama takes a moment and may fail on a broken install,
    # and neither should happen merely because workbench.hardware was imported.
    return importlib.import_module("llama_cpp")


class LlamaCppSource:
    def __init__(self, import_llama: Callable[[], Any] = _import_llama_cpp,
                 list_devices: ListDevices = ggml_devices) -> None:
        self._import_llama = import_llama
        self._list_devices = list_devices

    def read(self) -> LlamaFinding:
        # Any failure here (missing package, ABI mismatch, missing symbol) means "we cannot
        # tell what the build does", which is not the same answer as "CPU only": None.
        try:
            llama = self._import_llama()
        except Exception as error:
            return LlamaFinding(None, (f"llama.cpp: could not load llama_cpp: {error}",))
        try:
            offload = bool(llama.llama_supports_gpu_offload())
            info = _text(llama.llama_print_system_info()).strip()
            devices = self._list_devices(llama)
        except Exception as error:
            return LlamaFinding(None, (f"llama.cpp: could not query the build: {error}",))
        return LlamaFinding(LlamaBuild(supports_gpu_offload=offload, devices=devices,
                                       system_info=info))
