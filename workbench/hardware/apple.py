"""The Apple Silicon GPU, whose memory is the Mac's own RAM.

Metal lets one process keep about `recommendedMaxWorkingSetSize` bytes resident on the GPU;
llama.cpp's Metal backend reports exactly that as the device's memory. Reading it needs Metal
(pyobjc), so we approximate it from sysctl: the `iogpu.wired_limit_mb` override when a user
set one, else macOS's default share of RAM. sysctl is injected so tests feed a dict."""

from __future__ import annotations

import platform
from collections.abc import Callable

from workbench.hardware.base import GpuFinding, Sysctl, run_sysctl, sysctl_int
from workbench.hardware.memory import available_memory_bytes
from workbench.hardware.snapshot import GpuInfo

GIB = 1024**3
MIB = 1024**2
# Observed defaults of recommendedMaxWorkingSetSize: 2/3 of RAM on machines up to 36 GB
# (16 GB -> 10.67 GB), 3/4 above (64 GB -> 48 GB). An approximation: Apple documents neither
# the ratio nor the threshold.
SMALL_MAC_MAX_BYTES = 36 * GIB


def default_working_set_bytes(memsize: int) -> int:
    if memsize <= SMALL_MAC_MAX_BYTES:
        return memsize * 2 // 3
    return memsize * 3 // 4


def metal_working_set_bytes(memsize: int, sysctl: Sysctl) -> int:
    """The GPU's usable share of RAM: the user's wired-limit override when non-zero, else the
    default. The override is capped at RAM because macOS ignores larger values."""
    limit_mb = sysctl_int(sysctl, "iogpu.wired_limit_mb")
    if limit_mb:
        return min(limit_mb * MIB, memsize)
    # macOS 13 spelled the same override in bytes under debug.
    limit = sysctl_int(sysctl, "debug.iogpu.wired_limit")
    if limit:
        return min(limit, memsize)
    return default_working_set_bytes(memsize)


class AppleSiliconSource:
    def __init__(
        self,
        sysctl: Sysctl = run_sysctl,
        system: str | None = None,
        machine: str | None = None,
        available_bytes: Callable[[], int] = available_memory_bytes,
    ) -> None:
        self._sysctl = sysctl
        self._system = system if system is not None else platform.system()
        self._machine = machine if machine is not None else platform.machine()
        self._available_bytes = available_bytes

    def _is_apple_silicon(self) -> bool:
        if self._system != "Darwin":
            return False
        # An x86_64 Python under Rosetta reports "x86_64" but still runs on Apple Silicon,
        # and a native llama.cpp engine would still get Metal.
        return self._machine == "arm64" or sysctl_int(self._sysctl, "hw.optional.arm64") == 1

    def read(self) -> GpuFinding:
        if not self._is_apple_silicon():
            return GpuFinding()
        memsize = sysctl_int(self._sysctl, "hw.memsize")
        if not memsize:
            return GpuFinding(notes=("Apple GPU: sysctl hw.memsize gave no answer",))
        total = metal_working_set_bytes(memsize, self._sysctl)
        # The GPU's share is ordinary RAM: what other apps hold is not free for the GPU either.
        free = max(min(total, self._available_bytes()), 0)
        version = self._sysctl("kern.osproductversion")
        gpu = GpuInfo(
            vendor="apple", index=0,
            name=self._sysctl("machdep.cpu.brand_string") or "Apple Silicon",
            total_bytes=total, free_bytes=free, used_bytes=total - free,
            # Metal ships with macOS, so the OS version is the driver version.
            driver=f"macOS {version}" if version else "",
            unified_memory=True, source="sysctl",
        )
        return GpuFinding((gpu,))
