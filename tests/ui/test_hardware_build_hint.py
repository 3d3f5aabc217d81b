"""The Hardware page tells a GPU owner on a CPU-only build which build would use the GPU:
the download to install (frozen app) or the CMAKE_ARGS (source checkout). Machines are
recorded with the hardware fakes and go through the real probe()."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.hardware import ProbeSources, probe
from workbench.hardware.amd import AmdSysfsSource
from workbench.hardware.apple import AppleSiliconSource
from workbench.hardware.builds import gpu_build_for
from workbench.hardware.fakes import (
    FakeNvml,
    FakeNvmlDevice,
    FakeSysfsCard,
    StaticCpuSource,
    StaticLlamaSource,
    StaticMemorySource,
    StaticSystemSource,
    build_fake_sysfs,
    sysctl_from,
)
from workbench.hardware.nvidia import NvidiaSource
from workbench.hardware.snapshot import CpuInfo, LlamaBuild, MemoryInfo, OffloadDevice
from workbench.ui.hardware.page import HardwarePage, gpu_build_hint

GIB = 2**30
CPU_BUILD = LlamaBuild(False, (OffloadDevice("CPU", "CPU", "cpu", 8 * GIB, 16 * GIB),), "")
CUDA_BUILD = LlamaBuild(True, (OffloadDevice("CUDA0", "RTX 4070", "gpu", 11 * GIB, 12 * GIB),
                               OffloadDevice("CPU", "CPU", "cpu", 8 * GIB, 16 * GIB)), "")
APPLE_SYSCTL = {"hw.memsize": 16 * GIB, "machdep.cpu.brand_string": "Apple M2",
                "hw.optional.arm64": 1, "iogpu.wired_limit_mb": 0}


def machine(tmp_path: Path, build: LlamaBuild | None = CPU_BUILD, *, nvidia: bool = False,
            amd: FakeSysfsCard | None = None, apple: bool = False) -> ProbeSources:
    nvml = (FakeNvml(devices=[FakeNvmlDevice("NVIDIA GeForce RTX 4070", 12 * GIB, 11 * GIB,
                                             GIB)]) if nvidia else FakeNvml.library_missing())
    sysfs = build_fake_sysfs(tmp_path / "sys", [amd] if amd else [])
    system = ("Darwin", "24.1", "arm64") if apple else ("Linux", "6.8.0", "x86_64")
    return ProbeSources(
        system=StaticSystemSource(*system),
        cpu=StaticCpuSource(CpuInfo("Test CPU", 8, 16, ("avx2",))),
        memory=StaticMemorySource(MemoryInfo(16 * GIB, 8 * GIB)),
        nvidia=NvidiaSource(api=nvml),
        amd=AmdSysfsSource(sysfs),
        apple=AppleSiliconSource(sysctl=sysctl_from(APPLE_SYSCTL if apple else {}),
                                 system=system[0], machine=system[2]),
        llama=StaticLlamaSource(build),
    )


RADEON = FakeSysfsCard(vram_total=16 * GIB, vram_used=GIB, product_name="Radeon RX 7800 XT")


@pytest.mark.parametrize(("kind", "backend", "flag", "download"), [
    ("nvidia", "CUDA", "-DGGML_CUDA=on", "CUDA build"),
    ("amd", "Vulkan", "-DGGML_VULKAN=on", "Vulkan build"),
    ("apple", "Metal", "-DGGML_METAL=on", "macOS download"),
])
def test_each_gpu_gets_the_build_that_uses_it(qtbot, tmp_path: Path, kind: str, backend: str,
                                              flag: str, download: str) -> None:
    snapshot = probe(machine(tmp_path, nvidia=kind == "nvidia",
                             amd=RADEON if kind == "amd" else None, apple=kind == "apple"))
    assert snapshot.gpus and snapshot.gpus[0].vendor == kind
    choice = gpu_build_for(snapshot)
    assert choice is not None and (choice.backend, choice.cmake_args) == (backend, flag)

    frozen = gpu_build_hint(snapshot, "installer")  # an installed app: name the download
    assert download in frozen and backend in frozen and "CMAKE_ARGS" not in frozen
    source = gpu_build_hint(snapshot, "checkout")  # a checkout: the flag to rebuild with
    assert f'CMAKE_ARGS="{flag}" make run' in source
    pip = gpu_build_hint(snapshot, "package")  # pip: rebuild the binding with the flag
    assert f'CMAKE_ARGS="{flag}" pip install --force-reinstall' in pip
    assert "llama-cpp-python==0.3." in pip and "make" not in pip

    page = HardwarePage()
    qtbot.addWidget(page)
    page.show_snapshot(snapshot)
    assert flag in page.llama_label.text()  # pytest runs from source
    assert snapshot.gpus[0].name in page.llama_label.text()


def test_frozen_page_names_the_download(qtbot, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    page = HardwarePage()
    qtbot.addWidget(page)
    page.show_snapshot(probe(machine(tmp_path, nvidia=True)))
    text = page.llama_label.text()
    assert "install the CUDA build for Windows or Linux" in text and "make run" not in text


def test_nvidia_beside_an_integrated_gpu_gets_cuda(tmp_path: Path) -> None:
    igpu = FakeSysfsCard(device_id="0x15bf", vram_total=512 * 2**20, vram_used=0,
                         gtt_total=8 * GIB, gtt_used=0)
    snapshot = probe(machine(tmp_path, nvidia=True, amd=igpu))
    assert {g.vendor for g in snapshot.gpus} == {"nvidia", "amd"}
    assert gpu_build_for(snapshot).backend == "CUDA"  # type: ignore[union-attr]


@pytest.mark.parametrize("case", ["no gpu", "gpu build", "unknown build"])
def test_no_hint_without_a_reason(qtbot, tmp_path: Path, case: str) -> None:
    build = {"no gpu": CPU_BUILD, "gpu build": CUDA_BUILD, "unknown build": None}[case]
    snapshot = probe(machine(tmp_path, build, nvidia=case != "no gpu"))
    assert gpu_build_for(snapshot) is None
    assert {gpu_build_hint(snapshot, where) for where in ("installer", "checkout", "package")} \
        == {""}
    page = HardwarePage()
    qtbot.addWidget(page)
    page.show_snapshot(snapshot)
    assert "sits idle" not in page.llama_label.text()
