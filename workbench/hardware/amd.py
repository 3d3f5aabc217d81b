"""AMD GPUs on Linux, read from the amdgpu driver's sysfs files (no ROCm needed).

`root` stands for "/sys", so tests build a fake tree under tmp_path. A machine without the
files (no AMD GPU, not Linux) simply yields no GPUs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from workbench.hardware.base import GpuFinding
from workbench.hardware.memory import available_memory_bytes
from workbench.hardware.snapshot import GpuInfo

AMD_PCI_VENDOR = "0x1002"
GIB = 1024**3
# APUs get a small BIOS carve-out of "VRAM" (typically 512 MiB to 2 GiB) and reach the rest
# of RAM through GTT. A discrete card with only 2 GiB would be misread as an APU; such cards
# are too small for LLM offload to matter.
APU_MAX_VRAM_BYTES = 2 * GIB

_CARD = re.compile(r"card(\d+)")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class AmdSysfsSource:
    def __init__(self, root: str | Path = "/sys",
                 available_bytes: Callable[[], int] = available_memory_bytes) -> None:
        self._root = Path(root)
        self._available_bytes = available_bytes

    def _card_devices(self) -> list[tuple[str, Path]]:
        """(card name, device dir) for each AMD card, in card-number order. Connector entries
        like card0-DP-1 and render nodes are skipped; one device is listed once."""
        drm = self._root / "class" / "drm"
        try:
            numbered = [(int(match.group(1)), entry) for entry in drm.iterdir()
                        if (match := _CARD.fullmatch(entry.name))]
        except OSError:
            return []
        found: list[tuple[str, Path]] = []
        seen: set[Path] = set()
        for _, entry in sorted(numbered):
            device = entry / "device"
            if (_read(device / "vendor") or "").lower() != AMD_PCI_VENDOR:
                continue
            real = device.resolve()
            if real not in seen:
                seen.add(real)
                found.append((entry.name, device))
        return found

    def read(self) -> GpuFinding:
        gpus: list[GpuInfo] = []
        notes: list[str] = []
        driver = _read(self._root / "module" / "amdgpu" / "version") or ""
        for card, device in self._card_devices():
            vram_total = _read_int(device / "mem_info_vram_total")
            if vram_total is None:
                # The old `radeon` driver, or amdgpu without memory reporting: nothing to plan
                # with, so say why the GPU is missing instead of inventing numbers.
                notes.append(f"AMD GPU {card}: no memory information in sysfs "
                             "(not driven by amdgpu?)")
                continue
            gpus.append(self._gpu(len(gpus), device, vram_total, driver))
        return GpuFinding(tuple(gpus), tuple(notes))

    def _gpu(self, index: int, device: Path, vram_total: int, driver: str) -> GpuInfo:
        vram_used = min(_read_int(device / "mem_info_vram_used") or 0, vram_total)
        gtt_total = _read_int(device / "mem_info_gtt_total")
        gtt_used = _read_int(device / "mem_info_gtt_used")
        unified = vram_total <= APU_MAX_VRAM_BYTES and bool(gtt_total)
        if unified and gtt_total:
            # An APU: llama.cpp's HIP and Vulkan backends can allocate from GTT (system RAM
            # the GPU maps), so the usable total is carve-out + GTT. GTT is ordinary RAM, so
            # its free part is capped by what the system has available right now.
            gtt_used_now = min(gtt_used or 0, gtt_total)
            gtt_free = min(gtt_total - gtt_used_now, max(self._available_bytes(), 0))
            total = vram_total + gtt_total
            free = (vram_total - vram_used) + gtt_free
        else:
            # A discrete card: only VRAM counts. GTT over PCIe is far too slow for weights,
            # and llama.cpp reports VRAM alone for these devices.
            total = vram_total
            free = vram_total - vram_used
        return GpuInfo(
            vendor="amd", index=index, name=self._name(device, unified), total_bytes=total,
            free_bytes=free, used_bytes=total - free, driver=driver, unified_memory=unified,
            gtt_total_bytes=gtt_total, gtt_used_bytes=gtt_used, source="sysfs",
        )

    @staticmethod
    def _name(device: Path, unified: bool) -> str:
        product = _read(device / "product_name")
        if product:
            return product
        # product_name comes from the VBIOS and is missing on most APUs and older cards.
        pci_id = _read(device / "device") or "unknown"
        kind = "integrated GPU" if unified else "GPU"
        return f"AMD Radeon {kind} ({pci_id})"
