"""System memory: how much there is and how much a new process could take right now."""

from __future__ import annotations

import psutil

from workbench.hardware.snapshot import MemoryInfo


class PsutilMemorySource:
    def read(self) -> MemoryInfo:
        vm = psutil.virtual_memory()
        # "available" (not "free") counts reclaimable page cache, which is what a model load
        # can actually get without swapping.
        return MemoryInfo(total_bytes=int(vm.total), available_bytes=int(vm.available))


def available_memory_bytes() -> int:
    """Used by the unified-memory GPU sources: their GPU share is ordinary RAM, so what is free
    for the GPU can never exceed what the system has available."""
    return int(psutil.virtual_memory().available)
