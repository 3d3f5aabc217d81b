"""Recorded-answer stand-ins for every hardware source, for tests and demos.

They live in the package (not tests/) so other components' tests, e.g. the fit planner's,
can describe a machine without owning one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench.hardware.base import GpuFinding, LlamaFinding, Sysctl
from workbench.hardware.nvidia import NvmlError, ProcessRow
from workbench.hardware.snapshot import CpuInfo, GpuInfo, LlamaBuild, MemoryInfo


@dataclass
class FakeNvmlDevice:
    name: str
    total: int
    free: int
    used: int
    compute: list[ProcessRow] = field(default_factory=list)
    graphics: list[ProcessRow] = field(default_factory=list)
    broken: bool = False  # every query on this device fails, like a GPU fallen off the bus
    processes_unsupported: bool = False


@dataclass
class FakeNvml:
    """Replays an NVML session. Counts init/shutdown so tests can check NVML is released."""

    devices: list[FakeNvmlDevice] = field(default_factory=list)
    driver: str = "550.54.15"
    init_error: NvmlError | None = None
    init_calls: int = 0
    shutdown_calls: int = 0

    @classmethod
    def library_missing(cls) -> FakeNvml:
        return cls(init_error=NvmlError("NVML Shared Library Not Found", absent=True))

    def init(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def shutdown(self) -> None:
        self.shutdown_calls += 1

    def driver_version(self) -> str:
        return self.driver

    def device_count(self) -> int:
        return len(self.devices)

    def _device(self, index: int) -> FakeNvmlDevice:
        device = self.devices[index]
        if device.broken:
            raise NvmlError("GPU is lost")
        return device

    def device_name(self, index: int) -> str:
        return self._device(index).name

    def device_memory(self, index: int) -> tuple[int, int, int]:
        device = self._device(index)
        return device.total, device.free, device.used

    def compute_processes(self, index: int) -> list[ProcessRow]:
        device = self._device(index)
        if device.processes_unsupported:
            raise NvmlError("Not Supported")
        return list(device.compute)

    def graphics_processes(self, index: int) -> list[ProcessRow]:
        device = self._device(index)
        if device.processes_unsupported:
            raise NvmlError("Not Supported")
        return list(device.graphics)


def sysctl_from(values: Mapping[str, str | int]) -> Sysctl:
    """A sysctl callable answering from recorded `sysctl -n` output; unknown keys -> None."""

    def sysctl(name: str) -> str | None:
        value = values.get(name)
        return None if value is None else str(value)

    return sysctl


@dataclass(frozen=True)
class FakeSysfsCard:
    """One DRM card of a fake sysfs tree. None leaves the file out, as the driver would."""

    vendor: str = "0x1002"
    device_id: str = "0x744c"
    vram_total: int | None = None
    vram_used: int | None = None
    gtt_total: int | None = None
    gtt_used: int | None = None
    product_name: str | None = None


def build_fake_sysfs(root: Path, cards: Sequence[FakeSysfsCard],
                     amdgpu_version: str | None = None) -> Path:
    """Write cards as <root>/class/drm/cardN/device/..., plus a connector entry per card so
    scanners must skip it, and return root."""
    files = {"vendor": "vendor", "device": "device_id", "mem_info_vram_total": "vram_total",
             "mem_info_vram_used": "vram_used", "mem_info_gtt_total": "gtt_total",
             "mem_info_gtt_used": "gtt_used", "product_name": "product_name"}
    for number, card in enumerate(cards):
        device = root / "class" / "drm" / f"card{number}" / "device"
        device.mkdir(parents=True)
        (root / "class" / "drm" / f"card{number}-DP-1").mkdir()
        for filename, attribute in files.items():
            value = getattr(card, attribute)
            if value is not None:
                (device / filename).write_text(f"{value}\n")
    if amdgpu_version is not None:
        module = root / "module" / "amdgpu"
        module.mkdir(parents=True)
        (module / "version").write_text(f"{amdgpu_version}\n")
    return root


@dataclass(frozen=True)
class StaticCpuSource:
    info: CpuInfo

    def read(self) -> CpuInfo:
        return self.info


@dataclass(frozen=True)
class StaticMemorySource:
    info: MemoryInfo

    def read(self) -> MemoryInfo:
        return self.info


@dataclass(frozen=True)
class StaticGpuSource:
    gpus: tuple[GpuInfo, ...] = ()
    notes: tuple[str, ...] = ()

    def read(self) -> GpuFinding:
        return GpuFinding(self.gpus, self.notes)


@dataclass(frozen=True)
class StaticLlamaSource:
    build: LlamaBuild | None = None
    notes: tuple[str, ...] = ()

    def read(self) -> LlamaFinding:
        return LlamaFinding(self.build, self.notes)


@dataclass(frozen=True)
class StaticSystemSource:
    os: str = "Linux"
    os_version: str = "6.8.0"
    machine: str = "x86_64"

    def read(self) -> tuple[str, str, str]:
        return self.os, self.os_version, self.machine
