"""Hardware probe: "what can my machine run?" as one typed HardwareSnapshot.

No Qt here: the probe runs in tests, tools and the engine process alike."""

from __future__ import annotations

from workbench.hardware.probe import ProbeSources, probe
from workbench.hardware.snapshot import (
    CpuInfo,
    GpuInfo,
    GpuProcess,
    HardwareSnapshot,
    LlamaBuild,
    MemoryInfo,
    OffloadDevice,
)

__all__ = [
    "CpuInfo",
    "GpuInfo",
    "GpuProcess",
    "HardwareSnapshot",
    "LlamaBuild",
    "MemoryInfo",
    "OffloadDevice",
    "ProbeSources",
    "probe",
]
