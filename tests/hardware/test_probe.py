"""Whole snapshots: recorded machines through probe(), and the real probe on this machine."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from workbench.hardware import HardwareSnapshot, ProbeSources, probe
from workbench.hardware.amd import AmdSysfsSource
from workbench.hardware.apple import AppleSiliconSource
from workbench.hardware.cpu import SystemCpuSource
from workbench.hardware.fakes import (
    FakeNvml,
    FakeNvmlDevice,
    FakeSysfsCard,
    StaticCpuSource,
    StaticGpuSource,
    StaticLlamaSource,
    StaticMemorySource,
    StaticSystemSource,
    build_fake_sysfs,
    sysctl_from,
)
from workbench.hardware.nvidia import NvidiaSource
from workbench.hardware.snapshot import CpuInfo, LlamaBuild, MemoryInfo, OffloadDevice

GIB = 1024**3
CPU = CpuInfo("AMD Ryzen 9 7950X", 16, 32, ("avx", "avx2", "fma", "f16c", "avx512f"))
MEMORY = MemoryInfo(total_bytes=64 * GIB, available_bytes=50 * GIB)
CPU_ONLY_BUILD = LlamaBuild(False, (OffloadDevice("CPU", "AMD Ryzen 9 7950X", "cpu",
                                                  50 * GIB, 64 * GIB),), "CPU : AVX2 = 1 |")


def recorded(tmp_path: Path, **overrides: object) -> ProbeSources:
    """A machine with nothing but CPU and RAM; tests override the sources they exercise."""
    base: dict[str, object] = {
        "system": StaticSystemSource("Linux", "6.8.0-45-generic", "x86_64"),
        "cpu": StaticCpuSource(CPU),
        "memory": StaticMemorySource(MEMORY),
        "nvidia": NvidiaSource(api=FakeNvml.library_missing()),
        "amd": AmdSysfsSource(tmp_path / "sys"),
        "apple": AppleSiliconSource(sysctl=sysctl_from({}), system="Linux", machine="x86_64"),
        "llama": StaticLlamaSource(CPU_ONLY_BUILD),
    }
    return ProbeSources(**{**base, **overrides})  # type: ignore[arg-type]


def test_a_machine_with_no_gpu(tmp_path: Path) -> None:
    snapshot = probe(recorded(tmp_path))
    assert snapshot.gpus == () and not snapshot.has_gpu() and snapshot.gpu_free_bytes() == 0
    assert snapshot.notes == ()
    assert (snapshot.os, snapshot.os_version, snapshot.machine) == (
        "Linux", "6.8.0-45-generic", "x86_64")
    assert snapshot.cpu == CPU and snapshot.memory == MEMORY
    assert snapshot.llama == CPU_ONLY_BUILD


def test_two_nvidia_gpus_one_busy(tmp_path: Path) -> None:
    nvml = FakeNvml(devices=[
        FakeNvmlDevice("NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB, GIB),
        FakeNvmlDevice("NVIDIA GeForce RTX 4090", 24 * GIB, 4 * GIB, 20 * GIB,
                       compute=[(31337, 19 * GIB)]),
    ])
    nvidia = NvidiaSource(api=nvml, process_name=lambda pid: "llama-server")
    snapshot = probe(recorded(tmp_path, nvidia=nvidia))
    assert snapshot.has_gpu() and len(snapshot.gpus) == 2
    assert snapshot.gpu_free_bytes() == 27 * GIB
    busy = snapshot.gpus[1]
    assert busy.free_bytes < busy.total_bytes
    assert busy.processes[0].name == "llama-server"
    assert snapshot.to_dict()["gpus"][1]["processes"] == [
        {"pid": 31337, "name": "llama-server", "used_bytes": 19 * GIB}]


def test_gpus_from_every_vendor_are_collected_in_order(tmp_path: Path) -> None:
    root = build_fake_sysfs(tmp_path / "sys", [FakeSysfsCard(vram_total=8 * GIB, vram_used=0)])
    nvml = FakeNvml(devices=[FakeNvmlDevice("NVIDIA RTX A4000", 16 * GIB, 16 * GIB, 0)])
    snapshot = probe(recorded(tmp_path, nvidia=NvidiaSource(api=nvml),
                              amd=AmdSysfsSource(root, available_bytes=lambda: GIB)))
    assert [gpu.vendor for gpu in snapshot.gpus] == ["nvidia", "amd"]
    assert snapshot.gpu_free_bytes() == 24 * GIB


def test_an_apple_m_series_machine(tmp_path: Path) -> None:
    values = {"hw.memsize": str(36 * GIB), "machdep.cpu.brand_string": "Apple M3 Pro",
              "hw.optional.neon": "1", "hw.optional.arm.FEAT_DotProd": "1"}
    sources = recorded(
        tmp_path,
        system=StaticSystemSource("Darwin", "14.5", "arm64"),
        cpu=SystemCpuSource(system="Darwin", sysctl=sysctl_from(values),
                            core_counts=lambda: (11, 11)),
        apple=AppleSiliconSource(sysctl=sysctl_from(values), system="Darwin", machine="arm64",
                                 available_bytes=lambda: 30 * GIB),
    )
    snapshot = probe(sources)
    (gpu,) = snapshot.gpus
    assert gpu.unified_memory and gpu.total_bytes == 24 * GIB  # 2/3 of 36 GiB
    assert snapshot.cpu.model == "Apple M3 Pro" and snapshot.cpu.features == ("neon", "dotprod")


class Exploding:
    def read(self) -> object:
        raise RuntimeError("sysfs went away")


def test_a_failing_source_becomes_a_note_not_an_exception(tmp_path: Path) -> None:
    snapshot = probe(recorded(tmp_path, amd=Exploding(), cpu=Exploding(),
                              nvidia=StaticGpuSource(notes=("NVIDIA: odd",))))
    assert snapshot.gpus == ()
    assert snapshot.cpu.logical_cores >= 1 and snapshot.cpu.features == ()
    assert any("AMD" in note and "sysfs went away" in note for note in snapshot.notes)
    assert any(note.startswith("CPU:") for note in snapshot.notes)
    assert "NVIDIA: odd" in snapshot.notes


def test_to_dict_is_json_safe_and_complete(tmp_path: Path) -> None:
    snapshot = probe(recorded(tmp_path))
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert data["cpu"]["features"] == list(CPU.features)
    assert data["llama"]["devices"][0]["kind"] == "cpu"
    assert data["memory"] == {"total_bytes": 64 * GIB, "available_bytes": 50 * GIB}
    assert set(data) == {"os", "os_version", "machine", "cpu", "memory", "gpus", "llama",
                         "notes"}


def _machine_may_have_a_gpu() -> bool:
    """Cheap hints, independent of the code under test, that this box has a GPU we detect."""
    if Path("/proc/driver/nvidia").exists():
        return True
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True
    vendors = Path("/sys/class/drm").glob("card*/device/vendor")
    return any(vendor.read_text().strip() == "0x1002" for vendor in vendors)


def test_the_real_probe_on_this_machine() -> None:
    started = time.perf_counter()
    snapshot = probe()
    elapsed = time.perf_counter() - started
    assert isinstance(snapshot, HardwareSnapshot)
    assert snapshot.os == platform.system() and snapshot.machine == platform.machine()
    assert snapshot.cpu.logical_cores >= snapshot.cpu.physical_cores >= 1
    assert snapshot.memory.total_bytes > 0
    assert 0 < snapshot.memory.available_bytes <= snapshot.memory.total_bytes
    if not _machine_may_have_a_gpu():
        assert snapshot.gpus == () and not snapshot.has_gpu()
    assert snapshot.llama is not None, snapshot.notes
    assert any(device.kind == "cpu" for device in snapshot.llama.devices)
    assert snapshot.notes == ()
    json.dumps(snapshot.to_dict())
    # Generous against slow CI, yet catches a probe that hangs on a timeout.
    assert elapsed < 10
