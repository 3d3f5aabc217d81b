"""CPU model and feature flags from recorded /proc/cpuinfo text and macOS sysctl answers."""

from __future__ import annotations

from workbench.hardware.cpu import (
    SystemCpuSource,
    mac_cpu_features,
    parse_cpuinfo,
    parse_cpuinfo_model,
)
from workbench.hardware.fakes import sysctl_from

# Two cores of an AMD Zen 4 desktop (flags trimmed to a realistic subset, order kept).
X86_ZEN4 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 97
model name\t: AMD Ryzen 9 7950X 16-Core Processor
stepping\t: 2
cpu MHz\t\t: 4500.000
cpu cores\t: 16
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext \
lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand \
bmi1 avx2 smep bmi2 erms avx512f avx512dq rdseed adx avx512ifma clflushopt avx512cd sha_ni \
avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 7950X 16-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext
"""

# An AWS Graviton2 (Neoverse-N1): aarch64 kernels print no "model name".
ARM_GRAVITON2 = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""

# A Graviton3 (Neoverse-V1) has SVE as well.
ARM_GRAVITON3_FEATURES = """\
processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs \
paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""

# A 32-bit Raspberry Pi kernel: "neon" by name, the board in "Hardware"/"Model".
ARM_RPI_32 = """\
processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm
CPU implementer\t: 0x41
CPU part\t: 0xd03

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 3 Model B Rev 1.2
"""


def test_x86_cpuinfo_gives_model_and_the_avx_family() -> None:
    model, features = parse_cpuinfo(X86_ZEN4)
    assert model == "AMD Ryzen 9 7950X 16-Core Processor"
    assert features == ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16")
    # Look-alike flags (avx512vbmi, avx512_vbmi2) are not mistaken for ones we track.
    assert "amx_int8" not in features and "neon" not in features


def test_arm_cpuinfo_maps_asimd_to_neon_and_asimddp_to_dotprod() -> None:
    model, features = parse_cpuinfo(ARM_GRAVITON2)
    assert model == "ARM Neoverse-N1"
    assert features == ("neon", "dotprod")


def test_arm_cpuinfo_with_sve() -> None:
    model, features = parse_cpuinfo(ARM_GRAVITON3_FEATURES)
    assert model == "ARM Neoverse-V1"
    assert features == ("neon", "sve", "dotprod")


def test_32_bit_arm_uses_model_name_and_neon() -> None:
    model, features = parse_cpuinfo(ARM_RPI_32)
    assert model == "ARMv7 Processor rev 4 (v7l)"
    assert features == ("neon",)


def test_unknown_arm_part_still_names_the_vendor() -> None:
    text = "processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x001\n"
    assert parse_cpuinfo_model(text) == "Qualcomm CPU (part 0x001)"
    assert parse_cpuinfo("") == ("", ())


def test_linux_source_combines_cpuinfo_with_core_counts() -> None:
    source = SystemCpuSource(system="Linux", read_cpuinfo=lambda: X86_ZEN4,
                             core_counts=lambda: (16, 32))
    info = source.read()
    assert (info.model, info.physical_cores, info.logical_cores) == (
        "AMD Ryzen 9 7950X 16-Core Processor", 16, 32)
    assert "avx512f" in info.features


def test_linux_source_survives_unreadable_cpuinfo_and_unknown_counts() -> None:
    def hidden() -> str:
        raise PermissionError("/proc/cpuinfo")

    info = SystemCpuSource(system="Linux", read_cpuinfo=hidden,
                           core_counts=lambda: (None, 8)).read()
    assert info.features == ()
    assert (info.physical_cores, info.logical_cores) == (8, 8)
    assert info.model  # falls back to platform.processor() or "unknown CPU"


APPLE_M2_SYSCTL = {
    "machdep.cpu.brand_string": "Apple M2 Pro",
    "hw.optional.neon": "1",
    "hw.optional.AdvSIMD": "1",
    "hw.optional.arm.FEAT_DotProd": "1",
    "hw.optional.arm.FEAT_BF16": "1",
}

INTEL_MAC_SYSCTL = {
    "machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz",
    "hw.optional.avx1_0": "1",
    "hw.optional.avx2_0": "1",
    "hw.optional.fma": "1",
    "hw.optional.avx512f": "0",
    "machdep.cpu.features": "FPU VME DE PSE TSC SSE3 PCLMULQDQ FMA CX16 AVX1.0 RDRAND F16C",
    "machdep.cpu.leaf7_features": "RDWRFSGS TSC_THREAD_OFFSET SGX BMI1 AVX2 SMEP BMI2 ERMS",
}


def test_apple_silicon_features_and_brand_from_sysctl() -> None:
    source = SystemCpuSource(system="Darwin", sysctl=sysctl_from(APPLE_M2_SYSCTL),
                             core_counts=lambda: (12, 12))
    info = source.read()
    assert info.model == "Apple M2 Pro"
    assert info.features == ("neon", "dotprod")


def test_intel_mac_features_from_hw_optional_and_feature_words() -> None:
    features = mac_cpu_features(sysctl_from(INTEL_MAC_SYSCTL))
    assert features == ("avx", "avx2", "fma", "f16c")  # avx512f is "0" here
