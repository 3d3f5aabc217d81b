"""Read a .safetensors file into numpy arrays, bfloat16 included, without torch.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the
tensor bytes. numpy has no bfloat16, so safetensors.numpy cannot load such tensors:
those files are read here directly and bfloat16 widened to float32 (a bfloat16 is the top
16 bits of a float32). The header is checked against the file size first, so a damaged
file ends in a message, not a huge allocation.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from workbench.lora.gguf_lora import AdapterError

# Far above any real header (a few KB per hundred tensors), far below a memory problem.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
}
_BF16 = "BF16"


def _damaged(path: Path, detail: str) -> AdapterError:
    return AdapterError(f"{path.name} is damaged: {detail}.",
                        "Save or download the adapter again.")


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensor entries of the header, checked to lie inside the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _damaged(path, "it is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", prefix)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise _damaged(path, f"its header claims {n:,} bytes")
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as exc:
        raise AdapterError(f"Cannot read {path.name}: {exc.strerror}.",
                           "Check that the file exists and can be read.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, "its header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a JSON object")
    data_size = size - 8 - n
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        _check_entry(path, name, entry, data_size)
        entries[name] = entry
    return entries


def _check_entry(path: Path, name: str, entry: Any, data_size: int) -> None:
    if not isinstance(entry, dict):
        raise _damaged(path, f"the entry for {name} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _damaged(path, f"{name} has no valid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        raise _damaged(path, f"{name} lies outside the file (a truncated download?)")
    if dtype == _BF16:
        width = 2
    elif dtype in _NUMPY_DTYPES:
        width = _NUMPY_DTYPES[dtype].itemsize
    else:
        raise AdapterError(
            f"{path.name}: {name} is stored as {dtype}, which cannot be converted "
            "(float32, float16 and bfloat16 can).",
            "Save the adapter in float32, float16 or bfloat16 (a quantized adapter "
            "must be dequantized first).")
    if offsets[1] - offsets[0] != width * int(np.prod(shape, dtype=np.int64)):
        raise _damaged(path, f"{name}'s size does not match its shape")


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: the same bits in the top half."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of `path` as float arrays (bfloat16 becomes float32). Raises AdapterError."""
    p = Path(path)
    entries = read_safetensors_header(p)
    if all(e["dtype"] != _BF16 for e in entries.values()):
        from safetensors.numpy import load_file

        try:
            return dict(load_file(p))
        except Exception as exc:  # the library's errors have no common base class
            raise _damaged(p, str(exc)) from exc
    return _read_raw(p, entries)


def _read_raw(path: Path, entries: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        start = 8 + n
        tensors: dict[str, np.ndarray] = {}
        for name, entry in entries.items():
            begin, end = entry["data_offsets"]
            fh.seek(start + begin)
            data = fh.read(end - begin)
            if len(data) != end - begin:
                raise _damaged(path, f"{name} is cut short")
            shape = tuple(entry["shape"])
            if entry["dtype"] == _BF16:
                array = bf16_to_float32(np.frombuffer(data, dtype="<u2"))
            else:
                array = np.frombuffer(data, dtype=_NUMPY_DTYPES[entry["dtype"]]).copy()
            tensors[name] = array.reshape(shape)
    return tensors
