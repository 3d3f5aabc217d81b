"""CPU model, core counts and the instruction-set features llama.cpp's CPU kernels use.

Parsers take text (or a sysctl callable) rather than reading the machine, so tests feed
recorded /proc/cpuinfo samples and macOS sysctl answers."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import psutil

from workbench.hardware.base import Sysctl, run_sysctl, sysctl_int
from workbench.hardware.snapshot import CPU_FEATURES, CpuInfo

# /proc/cpuinfo spellings -> our names. x86 kernels use our names already; ARM kernels call
# NEON "asimd" on aarch64 ("neon" on 32-bit) and the dot-product extension "asimddp".
_LINUX_FLAG_NAMES: dict[str, str] = {
    **{name: name for name in CPU_FEATURES},
    "asimd": "neon",
    "asimddp": "dotprod",
}

# macOS: hw.optional.* keys that are "1" when the feature exists.
_MAC_OPTIONAL: dict[str, tuple[str, ...]] = {
    "avx": ("hw.optional.avx1_0",),
    "avx2": ("hw.optional.avx2_0",),
    "fma": ("hw.optional.fma",),
    "avx512f": ("hw.optional.avx512f",),
    "avx512_vnni": ("hw.optional.avx512vnni",),
    "neon": ("hw.optional.neon", "hw.optional.AdvSIMD"),
    "dotprod": ("hw.optional.arm.FEAT_DotProd",),
}
# Intel Macs also list features as upper-case words in machdep.cpu.(leaf7_)features; F16C
# only appears there.
_MAC_WORDS: dict[str, str] = {
    "AVX1.0": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c", "AVX512F": "avx512f",
    "AVX512VNNI": "avx512_vnni",
}

# aarch64 kernels often print no "model name"; the implementer/part ids identify the core.
_ARM_IMPLEMENTERS: dict[str, str] = {
    "0x41": "ARM", "0x42": "Broadcom", "0x46": "Fujitsu", "0x48": "HiSilicon",
    "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere",
}
_ARM_PARTS: dict[str, str] = {
    "0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
}


def _first_block_fields(text: str) -> dict[str, str]:
    """Key/value pairs of /proc/cpuinfo, first occurrence winning. Per-core blocks repeat the
    same model and flags, and on ARM the trailing board fields ("Hardware", "Model") are
    only printed once, so first-wins keeps both."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def parse_cpuinfo_features(text: str) -> tuple[str, ...]:
    """Features of interest from the "flags" (x86) or "Features" (ARM) line."""
    fields = _first_block_fields(text)
    raw = fields.get("flags") or fields.get("Features") or ""
    found = {_LINUX_FLAG_NAMES[flag] for flag in raw.lower().split() if flag in _LINUX_FLAG_NAMES}
    return tuple(name for name in CPU_FEATURES if name in found)


def parse_cpuinfo_model(text: str) -> str:
    """A human-readable CPU name, or "" when the text names none."""
    fields = _first_block_fields(text)
    if fields.get("model name"):
        return fields["model name"]
    # Old 32-bit ARM kernels: "Processor : ARMv7 Processor rev 4 (v7l)".
    if fields.get("Processor") and not fields["Processor"].isdigit():
        return fields["Processor"]
    implementer = fields.get("CPU implementer", "").lower()
    part = fields.get("CPU part", "").lower()
    if implementer:
        vendor = _ARM_IMPLEMENTERS.get(implementer, f"ARM implementer {implementer}")
        if implementer == "0x41" and part in _ARM_PARTS:
            return f"ARM {_ARM_PARTS[part]}"
        return f"{vendor} CPU (part {part})" if part else f"{vendor} CPU"
    return fields.get("Hardware") or fields.get("Model") or ""


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model, features) from /proc/cpuinfo text."""
    return parse_cpuinfo_model(text), parse_cpuinfo_features(text)


def mac_cpu_features(sysctl: Sysctl) -> tuple[str, ...]:
    found: set[str] = set()
    for name, keys in _MAC_OPTIONAL.items():
        if any(sysctl_int(sysctl, key) == 1 for key in keys):
            found.add(name)
    for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features"):
        for word in (sysctl(key) or "").upper().split():
            if word in _MAC_WORDS:
                found.add(_MAC_WORDS[word])
    return tuple(name for name in CPU_FEATURES if name in found)


def _read_proc_cpuinfo() -> str:
    return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")


def _psutil_core_counts() -> tuple[int | None, int | None]:
    return psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)


class SystemCpuSource:
    """The real CPU source. Every input is injectable: the OS name, the /proc/cpuinfo reader,
    sysctl and the (physical, logical) core counter."""

    def __init__(
        self,
        system: str | None = None,
        read_cpuinfo: Callable[[], str] = _read_proc_cpuinfo,
        sysctl: Sysctl = run_sysctl,
        core_counts: Callable[[], tuple[int | None, int | None]] = _psutil_core_counts,
    ) -> None:
        self._system = system if system is not None else platform.system()
        self._read_cpuinfo = read_cpuinfo
        self._sysctl = sysctl
        self._core_counts = core_counts

    def read(self) -> CpuInfo:
        physical, logical = self._core_counts()
        # psutil returns None where it cannot tell (some VMs, containers without /sys).
        logical = logical or os.cpu_count() or 1
        physical = physical or logical
        model, features = self._model_and_features()
        return CpuInfo(model=model or platform.processor() or "unknown CPU",
                       physical_cores=physical, logical_cores=logical, features=features)

    def _model_and_features(self) -> tuple[str, tuple[str, ...]]:
        if self._system == "Darwin":
            return self._sysctl("machdep.cpu.brand_string") or "", mac_cpu_features(self._sysctl)
        if self._system == "Windows":
            return "", ()  # no cheap, dependency-free feature query; the model comes from platform
        try:
            return parse_cpuinfo(self._read_cpuinfo())
        except OSError:
            # Sandboxes sometimes hide /proc; a CPU without feature flags is still a CPU.
            return "", ()
