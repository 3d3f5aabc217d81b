"""Which build of Workbench (which llama.cpp backend) would use this machine's GPU.

The installers come as separate downloads per backend; a source checkout picks the
backend with CMAKE_ARGS. The README's "GPU builds" section lists the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.hardware.snapshot import HardwareSnapshot


@dataclass(frozen=True)
class GpuBuild:
    backend: str  # "CUDA" | "Vulkan" | "Metal"
    cmake_args: str  # what `make run` / the installer build passes to llama.cpp
    download: str  # the installer that carries it, in words
    gpu: str  # the GPU it is for, e.g. "NVIDIA RTX 4090"


CUDA = ("CUDA", "-DGGML_CUDA=on", "the CUDA build for Windows or Linux")
VULKAN = ("Vulkan", "-DGGML_VULKAN=on", "the Vulkan build for Windows or Linux")
METAL = ("Metal", "-DGGML_METAL=on", "the macOS download (Metal is its default)")


def gpu_build_for(snapshot: HardwareSnapshot) -> GpuBuild | None:
    """The build that would use this machine's GPU, when the installed llama.cpp build
    cannot offload to any GPU; None when there is no GPU, the build already offloads, or
    what the build can do is unknown."""
    build = snapshot.llama
    if not snapshot.gpus or build is None or build.supports_gpu_offload:
        return None
    by_vendor = {gpu.vendor: gpu for gpu in reversed(snapshot.gpus)}  # first of each
    # A discrete NVIDIA card beats an integrated GPU beside it; Apple Silicon is Metal.
    for vendor, choice in (("nvidia", CUDA), ("apple", METAL), ("amd", VULKAN),
                           ("intel", VULKAN), ("other", VULKAN)):
        if vendor in by_vendor:
            return GpuBuild(*choice, gpu=by_vendor[vendor].name)
    return GpuBuild(*VULKAN, gpu=snapshot.gpus[0].name)
