"""llama.cpp's own benchmark, `llama-bench`, as the reference for generation speed.

It is not part of llama-cpp-python's wheel: build it from the vendored llama.cpp in the
pinned sdist (the README's "Headless" section says how) and name the binary in
LLAMA_BENCH. Without it the benchmarks report no `ratio_vs_native`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

TG_TOKENS = 128  # llama-bench's tg128


def llama_bench() -> str | None:
    """The llama-bench binary named by LLAMA_BENCH (a path or a name on PATH), or None."""
    named = os.environ.get("LLAMA_BENCH")
    if not named:
        return None
    found = shutil.which(named) or (named if Path(named).is_file() else None)
    return found


def parse_tg(output: str) -> float:
    """Tokens/s of the generation test in `llama-bench -o json` output."""
    records = json.loads(output)
    speeds = [float(r["avg_ts"]) for r in records
              if int(r.get("n_gen", 0)) > 0 and int(r.get("n_prompt", 0)) == 0]
    if not speeds:
        raise ValueError("llama-bench reported no generation test")
    return max(speeds)


def native_tg(model: Path, *, threads: int, n_gpu_layers: int = 0,
              repetitions: int = 3, timeout: float = 600) -> float | None:
    """llama-bench's tg128 tokens/s for `model`, or None without LLAMA_BENCH."""
    binary = llama_bench()
    if binary is None:
        return None
    done = subprocess.run(
        [binary, "-m", str(model), "-p", "0", "-n", str(TG_TOKENS), "-t", str(threads),
         "-ngl", str(n_gpu_layers), "-r", str(repetitions), "-o", "json"],
        capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"llama-bench failed ({done.returncode}): {tail}")
    return parse_tg(done.stdout)
