"""The small interfaces every hardware source implements, so `probe()` can be fed recorded
answers in tests and the real machine in the app."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from workbench.hardware.snapshot import CpuInfo, GpuInfo, LlamaBuild, MemoryInfo

# Reads one sysctl value by name; None when the key does not exist on this machine.
Sysctl = Callable[[str], str | None]


@dataclass(frozen=True)
class GpuFinding:
    """What one GPU source found. An absent driver is simply no GPUs, not a note: notes are
    for sources that exist but misbehaved."""

    gpus: tuple[GpuInfo, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LlamaFinding:
    build: LlamaBuild | None
    notes: tuple[str, ...] = ()


class CpuSource(Protocol):
    def read(self) -> CpuInfo: ...


class MemorySource(Protocol):
    def read(self) -> MemoryInfo: ...


class GpuSource(Protocol):
    def read(self) -> GpuFinding: ...


class LlamaSource(Protocol):
    def read(self) -> LlamaFinding: ...


class SystemSource(Protocol):
    def read(self) -> tuple[str, str, str]:
        """(os, os_version, machine), e.g. ("Linux", "6.8.0-45-generic", "x86_64")."""
        ...


def run_sysctl(name: str) -> str | None:
    """The real `sysctl -n NAME`; None when sysctl or the key is missing."""
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def sysctl_int(sysctl: Sysctl, name: str) -> int | None:
    value = sysctl(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
