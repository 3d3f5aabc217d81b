"""The Apple Silicon GPU from recorded sysctl answers."""

from __future__ import annotations

from workbench.hardware.apple import AppleSiliconSource, default_working_set_bytes
from workbench.hardware.fakes import sysctl_from

GIB = 1024**3

M2_PRO_32 = {
    "hw.memsize": str(32 * GIB),
    "machdep.cpu.brand_string": "Apple M2 Pro",
    "kern.osproductversion": "14.5",
    "hw.optional.arm64": "1",
    "iogpu.wired_limit_mb": "0",  # the default: no override
}


def apple(values: dict[str, str], available: int = 20 * GIB,
          machine: str = "arm64") -> AppleSiliconSource:
    return AppleSiliconSource(sysctl=sysctl_from(values), system="Darwin", machine=machine,
                              available_bytes=lambda: available)


def test_default_limit_is_two_thirds_of_ram_on_a_32_gb_mac() -> None:
    finding = apple(M2_PRO_32).read()
    assert finding.notes == ()
    (gpu,) = finding.gpus
    assert (gpu.vendor, gpu.index, gpu.name, gpu.source) == ("apple", 0, "Apple M2 Pro", "sysctl")
    assert gpu.unified_memory and gpu.driver == "macOS 14.5"
    assert gpu.total_bytes == 32 * GIB * 2 // 3
    assert gpu.free_bytes == 20 * GIB and gpu.used_bytes == gpu.total_bytes - 20 * GIB


def test_wired_limit_override_wins() -> None:
    (gpu,) = apple({**M2_PRO_32, "iogpu.wired_limit_mb": "28672"}, available=30 * GIB).read().gpus
    assert gpu.total_bytes == 28 * GIB
    assert gpu.free_bytes == 28 * GIB  # more is available than the GPU may take


def test_big_macs_default_to_three_quarters() -> None:
    values = {**M2_PRO_32, "hw.memsize": str(64 * GIB), "machdep.cpu.brand_string": "Apple M1 Max"}
    del values["iogpu.wired_limit_mb"]  # key absent, as on macOS 13
    (gpu,) = apple(values, available=60 * GIB).read().gpus
    assert gpu.total_bytes == 48 * GIB and gpu.free_bytes == 48 * GIB
    assert default_working_set_bytes(16 * GIB) == 16 * GIB * 2 // 3


def test_rosetta_python_still_finds_the_gpu() -> None:
    assert len(apple(M2_PRO_32, machine="x86_64").read().gpus) == 1
    intel_mac = {**M2_PRO_32, "hw.optional.arm64": "0"}
    assert apple(intel_mac, machine="x86_64").read().gpus == ()


def test_not_a_mac_means_no_apple_gpu() -> None:
    source = AppleSiliconSource(sysctl=sysctl_from(M2_PRO_32), system="Linux", machine="arm64")
    assert source.read().gpus == ()


def test_missing_memsize_is_a_note() -> None:
    finding = apple({"machdep.cpu.brand_string": "Apple M3"}).read()
    assert finding.gpus == () and len(finding.notes) == 1
