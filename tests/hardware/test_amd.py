"""AMD GPUs from a fake sysfs tree: an APU reaching RAM through GTT, and a discrete card."""

from __future__ import annotations

from pathlib import Path

from workbench.hardware.amd import AmdSysfsSource
from workbench.hardware.fakes import FakeSysfsCard, build_fake_sysfs

GIB = 1024**3
MIB = 1024**2

# A Ryzen 7 7840U laptop (Radeon 780M, 512 MiB carve-out) ...
APU = FakeSysfsCard(device_id="0x15bf", vram_total=512 * MIB, vram_used=100 * MIB,
                    gtt_total=15 * GIB, gtt_used=GIB)
# ... with an eGPU, and an Intel iGPU the AMD source must ignore.
DISCRETE = FakeSysfsCard(device_id="0x744c", vram_total=24 * GIB, vram_used=2 * GIB,
                         gtt_total=15 * GIB, gtt_used=50 * MIB,
                         product_name="AMD Radeon RX 7900 XTX")
INTEL = FakeSysfsCard(vendor="0x8086", device_id="0xa7a0")


def test_apu_and_discrete_card(tmp_path: Path) -> None:
    root = build_fake_sysfs(tmp_path, [INTEL, APU, DISCRETE], amdgpu_version="6.8.5")
    finding = AmdSysfsSource(root, available_bytes=lambda: 40 * GIB).read()
    assert finding.notes == ()
    apu, card = finding.gpus
    assert [gpu.index for gpu in finding.gpus] == [0, 1]

    assert apu.unified_memory and apu.vendor == "amd" and apu.source == "sysfs"
    assert apu.total_bytes == 512 * MIB + 15 * GIB  # carve-out + GTT
    assert apu.free_bytes == (512 - 100) * MIB + 14 * GIB
    assert apu.used_bytes == 100 * MIB + GIB
    assert (apu.gtt_total_bytes, apu.gtt_used_bytes) == (15 * GIB, GIB)
    assert apu.name == "AMD Radeon integrated GPU (0x15bf)"  # no product_name on APUs

    assert not card.unified_memory
    assert (card.total_bytes, card.free_bytes, card.used_bytes) == (24 * GIB, 22 * GIB, 2 * GIB)
    assert card.gtt_total_bytes == 15 * GIB  # reported, but not counted as usable
    assert card.name == "AMD Radeon RX 7900 XTX"
    assert {apu.driver, card.driver} == {"6.8.5"}


def test_apu_free_memory_is_capped_by_available_ram(tmp_path: Path) -> None:
    root = build_fake_sysfs(tmp_path, [APU])
    (apu,) = AmdSysfsSource(root, available_bytes=lambda: 3 * GIB).read().gpus
    assert apu.free_bytes == (512 - 100) * MIB + 3 * GIB
    assert apu.total_bytes == 512 * MIB + 15 * GIB
    assert apu.driver == ""  # in-tree amdgpu has no module version file


def test_amd_card_without_memory_files_is_a_note(tmp_path: Path) -> None:
    root = build_fake_sysfs(tmp_path, [FakeSysfsCard(device_id="0x6779")])  # radeon driver
    finding = AmdSysfsSource(root, available_bytes=lambda: GIB).read()
    assert finding.gpus == ()
    assert len(finding.notes) == 1 and "card0" in finding.notes[0]


def test_no_sysfs_means_no_amd_gpus(tmp_path: Path) -> None:
    finding = AmdSysfsSource(tmp_path / "missing").read()
    assert finding.gpus == () and finding.notes == ()
    only_intel = build_fake_sysfs(tmp_path / "intel", [INTEL])
    assert AmdSysfsSource(only_intel).read().gpus == ()
