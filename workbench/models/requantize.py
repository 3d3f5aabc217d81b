"""Write another quantization of a GGUF model with llama.cpp's own quantizer.

Used to give the compare view (and its tests and screenshot) a second quantization of the
built-in model without a download. Requantizing an already quantized file loses more than
quantizing the original weights would; the result is for comparison, not for use.
It runs in a child process: llama.cpp logs every tensor to stderr, and the caller (the GUI
or a test) should not load llama.cpp itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workbench.children import child_command

QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


class RequantizeError(Exception):
    pass


def requantize(src: Path, dst: Path, quant: str = "Q4_0", timeout: float = 300) -> Path:
    """Write `src` quantized as `quant` to `dst` (atomically) and return `dst`."""
    if quant not in QUANT_TYPES:
        raise RequantizeError(f"Unknown quantization {quant!r}; choose one of "
                              f"{', '.join(QUANT_TYPES)}.")
    tmp = dst.with_name(dst.name + ".partial")
    result = subprocess.run(
        child_command("--requantize", [str(src), str(tmp), quant]),
        capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise RequantizeError(f"llama.cpp could not quantize {src.name} to {quant}"
                              + (f": {tail[0]}" if tail else "."))
    os.replace(tmp, dst)
    return dst


def _quantize_here(src: str, dst: str, quant: str) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.allow_requantize = True
    params.nthread = max(1, (os.cpu_count() or 2))
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


def main(argv: list[str] | None = None) -> int:
    src, dst, quant = (argv if argv is not None else sys.argv[1:])[:3]
    return _quantize_here(src, dst, quant)


if __name__ == "__main__":
    sys.exit(main())
