"""The typed answer to "what can my machine run?": one immutable snapshot of CPU, memory,
GPUs and the llama.cpp build. Plain data only, so the fit planner, the UI and tests can share
it without touching any hardware."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# The CPU flags the planner cares about, in a fixed order so snapshots compare equal.
CPU_FEATURES: tuple[str, ...] = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8",
    "neon", "sve", "dotprod",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    physical_cores: int
    logical_cores: int
    features: tuple[str, ...]  # a subset of CPU_FEATURES, in that order


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_bytes: int | None  # None where the driver will not say (e.g. Windows WDDM)


@dataclass(frozen=True)
class GpuInfo:
    vendor: str  # "nvidia" | "amd" | "apple" | "intel" | "other"
    index: int  # position among this vendor's GPUs
    name: str
    # Memory the GPU can use: dedicated VRAM, or for unified/integrated parts the share of
    # system memory the GPU may use.
    total_bytes: int
    free_bytes: int
    used_bytes: int
    driver: str  # driver version, "" if unknown
    unified_memory: bool  # True for Apple Silicon and AMD APUs (memory shared with the CPU)
    gtt_total_bytes: int | None = None  # AMD GTT: system memory the GPU can map
    gtt_used_bytes: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    source: str = ""  # "nvml" | "sysfs" | "sysctl"


@dataclass(frozen=True)
class OffloadDevice:
    """A ggml backend device as the installed llama.cpp build sees it."""

    name: str
    description: str
    kind: str  # "cpu" | "gpu" | "igpu" | "accel"
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class LlamaBuild:
    supports_gpu_offload: bool
    devices: tuple[OffloadDevice, ...]
    system_info: str


@dataclass(frozen=True)
class HardwareSnapshot:
    os: str
    os_version: str
    machine: str
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple[GpuInfo, ...]
    llama: LlamaBuild | None
    notes: tuple[str, ...] = ()  # human-readable remarks about sources that failed unexpectedly

    def gpu_free_bytes(self) -> int:
        """Free memory summed over all GPUs. For unified-memory GPUs this overlaps with
        system memory, so callers must not add the two together."""
        return sum(gpu.free_bytes for gpu in self.gpus)

    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists; everything else is str/int/bool/None)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
