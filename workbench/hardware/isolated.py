"""Run the probe in a child process and read its snapshot back.

The GUI never loads llama.cpp itself (and asking a CUDA or HIP device for its memory
would pin a driver context, hundreds of MB of VRAM, in the asking process), so it
probes through `python -m workbench.children --probe-hardware` (`workbench
--probe-hardware` when frozen), which prints the snapshot as JSON.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from workbench.children import child_command
from workbench.hardware.snapshot import (
    CpuInfo,
    GpuInfo,
    GpuProcess,
    HardwareSnapshot,
    LlamaBuild,
    MemoryInfo,
    OffloadDevice,
)


def snapshot_from_dict(data: dict[str, Any]) -> HardwareSnapshot:
    """The inverse of HardwareSnapshot.to_dict()."""
    gpus = tuple(
        GpuInfo(**{**g, "processes": tuple(GpuProcess(**p) for p in g.get("processes", ()))})
        for g in data.get("gpus", ())
    )
    llama = data.get("llama")
    return HardwareSnapshot(
        os=data["os"], os_version=data["os_version"], machine=data["machine"],
        cpu=CpuInfo(**{**data["cpu"], "features": tuple(data["cpu"]["features"])}),
        memory=MemoryInfo(**data["memory"]),
        gpus=gpus,
        llama=LlamaBuild(llama["supports_gpu_offload"],
                         tuple(OffloadDevice(**d) for d in llama["devices"]),
                         llama["system_info"]) if llama else None,
        notes=tuple(data.get("notes", ())),
    )


def probe_command() -> list[str]:
    return child_command("--probe-hardware")


def probe_isolated(timeout: float = 60) -> HardwareSnapshot:
    done = subprocess.run(probe_command(), capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        raise RuntimeError(f"The hardware probe failed: {tail or 'no output'}")
    return snapshot_from_dict(json.loads(lines[-1]))
