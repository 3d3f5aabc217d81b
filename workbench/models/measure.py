"""Let llama.cpp size its own buffers for a model it never loads.

The GGUF header is copied into a sparse file of the model's full size (the weights are a
hole: no disk used, nothing read) and llama.cpp creates the model and a context with
`no_alloc` set, logging the KV, compute and output buffer sizes it would allocate. It
runs in a child process: llama.cpp answers some impossible configurations by aborting.

    python -m workbench.children --measure-fit MODEL.gguf '{"n_ctx": 4096, ...}'   (JSON)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from workbench.children import child_command
from workbench.models.fit import FitRequest, Measured
from workbench.models.gguf import GGUFError, GGUFHeader, read_header

_KV_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
_UNIT = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_COMPUTE = re.compile(r"^(\S+) compute buffer size\s*=\s*([\d.]+) (KiB|MiB|GiB)")
_OUTPUT = re.compile(r"(\S+)\s+output buffer size\s*=\s*([\d.]+) (KiB|MiB|GiB)")
_KV = re.compile(r"llama_kv_cache(?:_iswa)?: size =\s*([\d.]+) (KiB|MiB|GiB)")


class MeasureError(Exception):
    pass


def parse_log(lines: list[str]) -> Measured:
    """Buffer sizes from llama.cpp's log lines (the figures are rounded to 0.01 MiB)."""
    kv = output = 0
    compute: dict[str, int] = {}
    for line in lines:
        if m := _KV.search(line):
            kv += int(float(m[1]) * _UNIT[m[2]])
        elif m := _COMPUTE.search(line.split(":", 1)[-1].strip()):
            compute[m[1]] = compute.get(m[1], 0) + int(float(m[2]) * _UNIT[m[3]])
        elif m := _OUTPUT.search(line):
            output += int(float(m[2]) * _UNIT[m[3]])
    return Measured(kv_bytes=kv, compute_bytes=compute, output_bytes=output)


def write_sparse_copy(header: GGUFHeader, source: Path, target: Path) -> None:
    """The header's bytes, then a hole up to the file's full size."""
    with source.open("rb") as src, target.open("wb") as dst:
        dst.write(src.read(header.data_offset))
        dst.truncate(header.file_size)


def _measure_in_this_process(model: Path, req: FitRequest, no_alloc: bool) -> Measured:
    import llama_cpp

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(_level: int, text: bytes, _data: object) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(on_log, None)
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.no_alloc = no_alloc
    mp.n_gpu_layers = req.n_gpu_layers if req.n_gpu_layers is not None else 0
    if no_alloc:
        mp.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # the sizing pass maps nothing
    model_ptr = llama_cpp.llama_model_load_from_file(str(model).encode(), mp)
    if not model_ptr:
        raise MeasureError("llama.cpp could not read the model: " + "".join(lines[-3:]))
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = req.n_ctx, req.n_batch, req.n_ubatch
    cp.n_seq_max = req.n_seq
    cp.type_k, cp.type_v = _KV_TYPES[req.type_k], _KV_TYPES[req.type_v]
    cp.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if req.flash_attn
                          else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    ctx = llama_cpp.llama_init_from_model(model_ptr, cp)
    if not ctx:
        reason = lines[-1].split(":", 1)[-1].strip() if lines else "no reason given"
        raise MeasureError(f"llama.cpp refused this configuration: {reason}")
    measured = parse_log(lines)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model_ptr)
    return measured


def measure(model: str | Path, req: FitRequest, *, no_alloc: bool = True,
            timeout: float = 120) -> Measured:
    """llama.cpp's buffer sizes for `req`. With no_alloc (the default) only the header is
    used; no_alloc=False loads the model for real (for calibration)."""
    done = subprocess.run(
        child_command("--measure-fit", [str(model), json.dumps(asdict(req)),
                                        "--real" if not no_alloc else "--no-alloc"]),
        capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise MeasureError("llama.cpp could not size this configuration: " + " ".join(tail))
    result = json.loads(lines[-1])
    if "error" in result:
        raise MeasureError(result["error"])
    return Measured(result["kv_bytes"], result["compute_bytes"], result["output_bytes"])


def main(argv: list[str]) -> int:
    model, req = Path(argv[0]), FitRequest(**json.loads(argv[1]))
    real = len(argv) > 2 and argv[2] == "--real"
    try:
        if real:
            measured = _measure_in_this_process(model, req, no_alloc=False)
        else:
            header = read_header(model)
            with tempfile.TemporaryDirectory(prefix="workbench-fit-") as tmp:
                sparse = Path(tmp) / model.name
                write_sparse_copy(header, model, sparse)
                measured = _measure_in_this_process(sparse, req, no_alloc=True)
    except (GGUFError, MeasureError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps(asdict(measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
