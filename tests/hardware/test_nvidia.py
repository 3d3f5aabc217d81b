"""NVIDIA GPUs from recorded NVML answers, and NVML failures that must not raise."""

from __future__ import annotations

from typing import Any

import pynvml
import pytest

from workbench.hardware.fakes import FakeNvml, FakeNvmlDevice
from workbench.hardware.nvidia import NvidiaSource, NvmlError, PynvmlApi

GIB = 1024**3
NAMES = {4242: "python3", 5151: "Xorg"}


def two_gpus_one_busy() -> FakeNvml:
    return FakeNvml(driver="550.54.15", devices=[
        FakeNvmlDevice("NVIDIA GeForce RTX 4090", total=24 * GIB, free=23 * GIB + 512 * 2**20,
                       used=512 * 2**20),
        FakeNvmlDevice(
            "NVIDIA GeForce RTX 3090", total=24 * GIB, free=6 * GIB, used=18 * GIB,
            compute=[(4242, 17 * GIB)],
            # Xorg draws; python3 shows up in both lists, as a CUDA+GL process does.
            graphics=[(5151, 300 * 2**20), (4242, 17 * GIB)],
        ),
    ])


def test_two_gpus_one_busy() -> None:
    nvml = two_gpus_one_busy()
    finding = NvidiaSource(api=nvml, process_name=lambda pid: NAMES.get(pid, "")).read()
    assert finding.notes == ()
    idle, busy = finding.gpus
    assert (idle.index, idle.name, idle.vendor, idle.source) == (
        0, "NVIDIA GeForce RTX 4090", "nvidia", "nvml")
    assert idle.processes == () and idle.free_bytes == 23 * GIB + 512 * 2**20
    assert busy.index == 1 and busy.free_bytes == 6 * GIB < busy.total_bytes
    assert busy.used_bytes == 18 * GIB
    assert [(p.pid, p.name, p.used_bytes) for p in busy.processes] == [
        (4242, "python3", 17 * GIB), (5151, "Xorg", 300 * 2**20)]
    assert {gpu.driver for gpu in finding.gpus} == {"550.54.15"}
    assert not any(gpu.unified_memory for gpu in finding.gpus)
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)


def test_process_memory_unknown_and_queries_unsupported() -> None:
    nvml = FakeNvml(devices=[
        FakeNvmlDevice("Tesla T4", total=16 * GIB, free=15 * GIB, used=GIB,
                       compute=[(7, None)]),
        FakeNvmlDevice("Quadro P400", total=2 * GIB, free=GIB, used=GIB,
                       processes_unsupported=True),
    ])
    t4, quadro = NvidiaSource(api=nvml, process_name=lambda pid: "").read().gpus
    assert [(p.pid, p.used_bytes) for p in t4.processes] == [(7, None)]
    assert quadro.processes == ()  # unsupported queries do not drop the GPU


def test_a_lost_gpu_is_skipped_with_a_note() -> None:
    nvml = two_gpus_one_busy()
    nvml.devices[0].broken = True
    finding = NvidiaSource(api=nvml, process_name=lambda pid: "").read()
    assert [gpu.index for gpu in finding.gpus] == [1]
    assert len(finding.notes) == 1 and "GPU 0" in finding.notes[0]
    assert nvml.shutdown_calls == 1


def test_library_missing_means_no_gpus_and_no_note() -> None:
    nvml = FakeNvml.library_missing()
    finding = NvidiaSource(api=nvml).read()
    assert finding.gpus == () and finding.notes == ()
    assert nvml.shutdown_calls == 0  # never initialised, so nothing to shut down


def test_an_unexpected_init_failure_is_a_note() -> None:
    finding = NvidiaSource(api=FakeNvml(init_error=NvmlError("Insufficient Permissions"))).read()
    assert finding.gpus == ()
    assert len(finding.notes) == 1 and "Insufficient Permissions" in finding.notes[0]


def test_real_nvml_on_a_machine_without_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    for code in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED):
        def fail(code: int = code) -> None:
            raise pynvml.NVMLError(code)

        monkeypatch.setattr(pynvml, "nvmlInit", fail)
        assert NvidiaSource().read().gpus == ()
        assert NvidiaSource().read().notes == ()


def test_real_nvml_other_init_errors_become_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    finding = NvidiaSource().read()
    assert finding.gpus == () and len(finding.notes) == 1


class _Row:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid, self.usedGpuMemory = pid, used


class _Memory:
    total, free, used = 8 * GIB, 5 * GIB, 3 * GIB


def test_pynvml_adapter_replays_a_recorded_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real adapter over pynvml with its C calls replaced: checks the translation layer
    (bytes names from old pynvml, None process memory, NotSupported, shutdown)."""
    calls: list[str] = []
    handle = object()

    def not_supported(_: Any) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    recorded: dict[str, Any] = {
        "nvmlInit": lambda: calls.append("init"),
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlSystemGetDriverVersion": lambda: b"535.183.01",
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda index: handle,
        "nvmlDeviceGetName": lambda h: b"NVIDIA RTX A2000" if h is handle else b"?",
        "nvmlDeviceGetMemoryInfo": lambda h: _Memory(),
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [_Row(99, None)],
        "nvmlDeviceGetGraphicsRunningProcesses": not_supported,
    }
    for name, fn in recorded.items():
        monkeypatch.setattr(pynvml, name, fn)
    (gpu,) = NvidiaSource(api=PynvmlApi(), process_name=lambda pid: "ollama").read().gpus
    assert (gpu.name, gpu.driver) == ("NVIDIA RTX A2000", "535.183.01")
    assert (gpu.total_bytes, gpu.free_bytes, gpu.used_bytes) == (8 * GIB, 5 * GIB, 3 * GIB)
    assert [(p.pid, p.name, p.used_bytes) for p in gpu.processes] == [(99, "ollama", None)]
    assert calls == ["init", "shutdown"]


def test_this_machine_has_no_nvml_and_says_nothing() -> None:
    # The real pynvml against the real (driverless) machine: no GPUs and, above all, no raise.
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    finding = NvidiaSource().read()
    assert finding.gpus == () and finding.notes == ()
