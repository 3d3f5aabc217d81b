"""What the llama.cpp build can offload to: fakes for the failure paths, the real library for
the device listing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workbench.hardware.llama_build import LlamaCppSource, device_kind, ggml_devices
from workbench.hardware.snapshot import OffloadDevice

CUDA_DEVICES = (
    OffloadDevice("CUDA0", "NVIDIA GeForce RTX 4090", "gpu", 23 * 2**30, 24 * 2**30),
    OffloadDevice("CPU", "AMD Ryzen 9 7950X", "cpu", 60 * 2**30, 64 * 2**30),
)


def fake_llama(offload: bool = True) -> Any:
    return SimpleNamespace(
        __file__="/nowhere/llama_cpp/__init__.py",
        llama_supports_gpu_offload=lambda: offload,
        llama_print_system_info=lambda: b"CUDA : ARCHS = 890 | CPU : AVX2 = 1 | ",
    )


def test_device_kinds_follow_the_ggml_enum() -> None:
    assert [device_kind(value) for value in range(4)] == ["cpu", "gpu", "igpu", "accel"]
    assert device_kind(17) == "accel"  # unknown types never count as offload targets


def test_a_cuda_build_from_recorded_answers() -> None:
    source = LlamaCppSource(import_llama=fake_llama, list_devices=lambda llama: CUDA_DEVICES)
    finding = source.read()
    assert finding.notes == ()
    assert finding.build is not None
    assert finding.build.supports_gpu_offload
    assert finding.build.devices == CUDA_DEVICES
    assert finding.build.system_info == "CUDA : ARCHS = 890 | CPU : AVX2 = 1 |"


def test_llama_cpp_missing_is_none_with_a_note() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'llama_cpp'")

    finding = LlamaCppSource(import_llama=missing).read()
    assert finding.build is None
    assert len(finding.notes) == 1 and "llama_cpp" in finding.notes[0]


def test_a_broken_device_listing_is_none_with_a_note() -> None:
    def broken(llama: Any) -> tuple[OffloadDevice, ...]:
        raise AttributeError("no ggml_backend_dev_count")

    finding = LlamaCppSource(import_llama=fake_llama, list_devices=broken).read()
    assert finding.build is None and "ggml_backend_dev_count" in finding.notes[0]


def test_a_module_without_libggml_raises_for_the_source_to_catch() -> None:
    with pytest.raises(AttributeError):
        ggml_devices(fake_llama())


def test_the_installed_build_lists_the_cpu_device() -> None:
    import llama_cpp

    devices = ggml_devices(llama_cpp)
    cpu = [device for device in devices if device.kind == "cpu"]
    assert len(cpu) == 1 and cpu[0].name == "CPU"
    assert cpu[0].total_bytes > 0 and 0 < cpu[0].free_bytes <= cpu[0].total_bytes
