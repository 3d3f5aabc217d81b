"""`probe()`: ask every source once and assemble one HardwareSnapshot.

Sources are bundled in ProbeSources so tests (and the fit planner's tests) can swap any of
them for recorded answers. probe() itself never raises: a source that blows up becomes a note
and a conservative fallback, because a hardware quirk must not stop the app from starting."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from workbench.hardware.amd import AmdSysfsSource
from workbench.hardware.apple import AppleSiliconSource
from workbench.hardware.base import (
    CpuSource,
    GpuFinding,
    GpuSource,
    LlamaFinding,
    LlamaSource,
    MemorySource,
    SystemSource,
)
from workbench.hardware.cpu import SystemCpuSource
from workbench.hardware.llama_build import LlamaCppSource
from workbench.hardware.memory import PsutilMemorySource
from workbench.hardware.nvidia import NvidiaSource
from workbench.hardware.snapshot import CpuInfo, GpuInfo, HardwareSnapshot, MemoryInfo

T = TypeVar("T")


class PlatformSystemSource:
    def read(self) -> tuple[str, str, str]:
        system = platform.system()
        if system == "Darwin":
            # platform.release() is the Darwin kernel (23.5.0); users know the macOS number.
            version = platform.mac_ver()[0] or platform.release()
        elif system == "Windows":
            version = platform.version()  # "10.0.22631": release() says only "10"/"11"
        else:
            version = platform.release()
        return system, version, platform.machine()


@dataclass(frozen=True)
class ProbeSources:
    """One object per source. Defaults are the real machine; override any field with a fake."""

    cpu: CpuSource = field(default_factory=SystemCpuSource)
    memory: MemorySource = field(default_factory=PsutilMemorySource)
    nvidia: GpuSource = field(default_factory=NvidiaSource)
    amd: GpuSource = field(default_factory=AmdSysfsSource)
    apple: GpuSource = field(default_factory=AppleSiliconSource)
    llama: LlamaSource = field(default_factory=LlamaCppSource)
    system: SystemSource = field(default_factory=PlatformSystemSource)


def _guarded(label: str, read: Callable[[], T], fallback: T, notes: list[str]) -> T:
    try:
        return read()
    except Exception as error:
        notes.append(f"{label}: probe failed ({type(error).__name__}: {error})")
        return fallback


def probe(sources: ProbeSources | None = None) -> HardwareSnapshot:
    sources = sources if sources is not None else ProbeSources()
    notes: list[str] = []
    system, version, machine = _guarded("System", sources.system.read,
                                        ("unknown", "", "unknown"), notes)
    logical = os.cpu_count() or 1
    cpu = _guarded("CPU", sources.cpu.read,
                   CpuInfo("unknown CPU", logical, logical, ()), notes)
    memory = _guarded("Memory", sources.memory.read, MemoryInfo(0, 0), notes)
    gpus: list[GpuInfo] = []
    for label, source in (("NVIDIA", sources.nvidia), ("AMD", sources.amd),
                          ("Apple", sources.apple)):
        finding = _guarded(label, source.read, GpuFinding(), notes)
        gpus += finding.gpus
        notes += finding.notes
    llama = _guarded("llama.cpp", sources.llama.read, LlamaFinding(None), notes)
    notes += llama.notes
    return HardwareSnapshot(
        os=system, os_version=version, machine=machine, cpu=cpu, memory=memory,
        gpus=tuple(gpus), llama=llama.build, notes=tuple(notes),
    )
