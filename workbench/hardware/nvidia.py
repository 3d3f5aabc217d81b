"""NVIDIA GPUs through NVML (the nvidia-ml-py package, module `pynvml`).

The NVML calls sit behind `NvmlApi`, a thin adapter, so tests replay recorded answers
(`workbench.hardware.fakes.FakeNvml`). No driver or no libnvidia-ml means "no NVIDIA GPUs",
never an exception."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import psutil

from workbench.hardware.base import GpuFinding
from workbench.hardware.snapshot import GpuInfo, GpuProcess

# (pid, used bytes or None where the driver cannot say, e.g. Windows WDDM)
ProcessRow = tuple[int, int | None]


class NvmlError(Exception):
    """An NVML call failed. `absent` marks the failures that only mean "this machine has no
    NVIDIA driver/library", which are not worth a note."""

    def __init__(self, message: str, *, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent


class NvmlApi(Protocol):
    """The NVML calls the probe needs, by device index. Every method raises NvmlError."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def device_count(self) -> int: ...
    def device_name(self, index: int) -> str: ...
    def device_memory(self, index: int) -> tuple[int, int, int]:
        """(total, free, used) bytes."""
        ...
    def compute_processes(self, index: int) -> list[ProcessRow]: ...
    def graphics_processes(self, index: int) -> list[ProcessRow]: ...


class PynvmlApi:
    """The real adapter over pynvml. pynvml is imported in `init` so merely importing this
    module never touches NVML."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}

    @contextmanager
    def _translate(self) -> Iterator[None]:
        nvml = self._nvml
        try:
            yield
        except nvml.NVMLError as error:
            absent = isinstance(error, (nvml.NVMLError_LibraryNotFound,
                                        nvml.NVMLError_DriverNotLoaded))
            raise NvmlError(str(error), absent=absent) from error

    def init(self) -> None:
        try:
            import pynvml
        except ImportError as error:  # a packaging fault, not a machine without NVIDIA
            raise NvmlError(f"nvidia-ml-py is not installed ({error})") from error
        self._nvml = pynvml
        with self._translate():
            pynvml.nvmlInit()

    def shutdown(self) -> None:
        if self._nvml is None:
            return
        self._handles.clear()
        with self._translate():
            self._nvml.nvmlShutdown()

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._nvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def driver_version(self) -> str:
        with self._translate():
            return _text(self._nvml.nvmlSystemGetDriverVersion())

    def device_count(self) -> int:
        with self._translate():
            return int(self._nvml.nvmlDeviceGetCount())

    def device_name(self, index: int) -> str:
        with self._translate():
            return _text(self._nvml.nvmlDeviceGetName(self._handle(index)))

    def device_memory(self, index: int) -> tuple[int, int, int]:
        with self._translate():
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle(index))
        return int(info.total), int(info.free), int(info.used)

    def compute_processes(self, index: int) -> list[ProcessRow]:
        with self._translate():
            rows = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle(index))
        return [(int(row.pid), _optional_int(row.usedGpuMemory)) for row in rows]

    def graphics_processes(self, index: int) -> list[ProcessRow]:
        with self._translate():
            rows = self._nvml.nvmlDeviceGetGraphicsRunningProcesses(self._handle(index))
        return [(int(row.pid), _optional_int(row.usedGpuMemory)) for row in rows]


def _text(value: str | bytes) -> str:
    # Old pynvml releases return bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def psutil_process_name(pid: int) -> str:
    """The process name, or "" when it cannot be seen (gone, another user, or a pid from the
    host's namespace when we run in a container)."""
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return ""


class NvidiaSource:
    def __init__(self, api: NvmlApi | None = None,
                 process_name: Callable[[int], str] = psutil_process_name) -> None:
        self._api = api
        self._process_name = process_name

    def read(self) -> GpuFinding:
        api = self._api if self._api is not None else PynvmlApi()
        try:
            api.init()
        except NvmlError as error:
            if error.absent:
                return GpuFinding()
            return GpuFinding(notes=(f"NVIDIA: NVML could not start: {error}",))
        try:
            return self._read_devices(api)
        finally:
            # nvmlInit is reference counted; every successful init needs its shutdown.
            with suppress(NvmlError):
                api.shutdown()

    def _read_devices(self, api: NvmlApi) -> GpuFinding:
        try:
            driver = api.driver_version()
        except NvmlError:
            driver = ""
        try:
            count = api.device_count()
        except NvmlError as error:
            return GpuFinding(notes=(f"NVIDIA: could not count GPUs: {error}",))
        gpus: list[GpuInfo] = []
        notes: list[str] = []
        # NVML numbers GPUs in PCI bus order; CUDA's default order may differ unless
        # CUDA_DEVICE_ORDER=PCI_BUS_ID, so `index` is NVML's.
        for index in range(count):
            try:
                name = api.device_name(index)
                total, free, used = api.device_memory(index)
            except NvmlError as error:  # e.g. a GPU that fell off the bus
                notes.append(f"NVIDIA GPU {index}: could not be read: {error}")
                continue
            gpus.append(GpuInfo(
                vendor="nvidia", index=index, name=name, total_bytes=total, free_bytes=free,
                used_bytes=used, driver=driver, unified_memory=False,
                processes=self._processes(api, index), source="nvml",
            ))
        return GpuFinding(tuple(gpus), tuple(notes))

    def _processes(self, api: NvmlApi, index: int) -> tuple[GpuProcess, ...]:
        used_by_pid: dict[int, int | None] = {}
        for query in (api.compute_processes, api.graphics_processes):
            try:
                rows = query(index)
            except NvmlError:
                # Not supported on some boards/drivers, or not permitted; the GPU still counts.
                continue
            for pid, used in rows:
                # A process doing both CUDA and graphics is listed twice with the same memory.
                known = used_by_pid.get(pid)
                if used is not None and (known is None or used > known):
                    used_by_pid[pid] = used
                else:
                    used_by_pid.setdefault(pid, known)
        return tuple(GpuProcess(pid=pid, name=self._process_name(pid), used_bytes=used)
                     for pid, used in sorted(used_by_pid.items()))
