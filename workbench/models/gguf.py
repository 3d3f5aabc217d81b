"""Read a GGUF file's header (metadata and tensor table) without touching the weights.

Used to reject a missing, truncated or non-GGUF file with a message a person can act on
before llama.cpp sees it. Every count and length read from the file is checked against
the file's size, so a malicious header ends in bounded time and memory.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 22
MAX_DIMS = 8

# value type id -> struct format (scalar types)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}


class GGUFError(Exception):
    """The file cannot be used as a model. The message says why and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # relative to the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int | None:
        known = GGML_TYPES.get(self.type_id)
        if known is None:
            return None
        _, block, size = known
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name") or self.path.stem)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def data_end(self) -> int | None:
        """Where the last tensor's bytes end, or None if a tensor type is unknown."""
        end = self.data_offset
        for t in self.tensors:
            size = t.n_bytes
            if size is None:
                return None
            end = max(end, self.data_offset + t.offset + size)
        return end


@dataclass(frozen=True)
class ArraySummary:
    """Long arrays (the vocabulary) are not kept: only their type and length."""

    item_type: int
    length: int
    head: tuple[Any, ...] = ()


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, path: Path) -> None:
        self.fh, self.size, self.path = fh, size, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.fh.tell() + n > self.size:
            raise GGUFError(
                    f"{self.path.name} ends in the middle of its header: the file is truncated "
                "or damaged. Download it again."
            )
        return self.fh.read(n)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_array_items: int = 16) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.unpack("<I")
            length = self.unpack("<Q")
            # Each item takes at least one byte: a larger count cannot be honest.
            if length > self.size - self.fh.tell():
                raise GGUFError(
                    f"{self.path.name} ends in the middle of its header (a list of {length:,} "
                    "entries runs past the end of the file): it is truncated or damaged. "
                    "Download it again.")
            if item_type in _SCALARS:
                width = struct.calcsize(_SCALARS[item_type])
                raw = self.take(width * length)
                head = tuple(
                    struct.unpack_from(_SCALARS[item_type], raw, i * width)[0]
                    for i in range(min(length, keep_array_items))
                )
                return ArraySummary(item_type, length, head)
            head_items = []
            for i in range(length):
                item = self.value(item_type, keep_array_items=0)
                if i < keep_array_items:
                    head_items.append(item)
            return ArraySummary(item_type, length, tuple(head_items))
        raise GGUFError(f"{self.path.name} has a damaged header (unknown value type {vtype}).")


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read and check a GGUF header. Raises GGUFError with a message for the user."""
    p = Path(path)
    if not p.exists():
        raise GGUFError(f"The model file {p} does not exist. It may have been moved or deleted.")
    if not p.is_file():
        raise GGUFError(f"{p} is not a file. Choose a .gguf model file.")
    size = p.stat().st_size
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise GGUFError(f"Cannot open {p.name}: {exc.strerror}.") from exc
    with fh:
        r = _Reader(fh, size, p)
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFError(
                f"{p.name} is not a GGUF model file (it starts with {magic!r}, not b'GGUF'). "
                "Workbench loads llama.cpp GGUF files; convert other formats first."
            )
        version = r.unpack("<I")
        if version not in (2, 3):
            raise GGUFError(
                f"{p.name} uses GGUF version {version}; versions 2 and 3 are supported.")
        n_tensors = r.unpack("<Q")
        n_kv = r.unpack("<Q")
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise GGUFError(
                f"{p.name} has a damaged header (claims {n_tensors} tensors and {n_kv} keys)."
            )
        header = GGUFHeader(path=p, version=version, file_size=size)
        for _ in range(n_kv):
            key = r.string()
            header.metadata[key] = r.value(r.unpack("<I"))
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if n_dims > MAX_DIMS:
                raise GGUFError(f"{p.name} has a damaged tensor table ({name}: {n_dims} dims).")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            header.tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
        alignment = int(header.metadata.get("general.alignment", 32) or 32)
        pos = fh.tell()
        header.data_offset = pos + (-pos % alignment)
    end = header.data_end
    if end is not None and end > size:
        missing = end - size
        raise GGUFError(
            f"{p.name} is truncated: {missing:,} bytes of its weights are missing "
            f"({size:,} of {end:,} bytes present). An interrupted download? Download it again."
        )
    return header


def describe_quantization(header: GGUFHeader) -> str:
    """The dominant weight type, e.g. 'Q4_1' (by bytes)."""
    by_type: dict[str, int] = {}
    for t in header.tensors:
        name = GGML_TYPES.get(t.type_id, (f"type{t.type_id}", 1, 1))[0]
        by_type[name] = by_type.get(name, 0) + (t.n_bytes or 0)
    return max(by_type, key=by_type.__getitem__) if by_type else "unknown"
