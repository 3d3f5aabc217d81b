"""Read a GGUF file's header (metadata and tensor table) without touching the weights.

Used to reject a missing, truncated or non-GGUF file with a message a person can act on
before llama.cpp sees it. Every count and length read from the file is checked against
the file's size, so a malicious header ends in bounded time and memory.

The bytes come from a ByteSource: a local file here, a file on the Hugging Face Hub in
remote.py. Split models (several part files) are read as one model in split.py.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

GGUF_MAGIC = b"GGUF"
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 22
MAX_DIMS = 8
# llama.cpp's GGML_MAX_NAME: it refuses a tensor name of this many bytes or more.
MAX_TENSOR_NAME = 64
# A vocabulary with a repeated token makes llama.cpp abort the whole process (an assert in
# its vocabulary loader), so it is refused here. Vocabulary types with no token list skip it.
VOCAB_KEY = "tokenizer.ggml.tokens"
_NO_VOCAB = ("none", "no_vocab")
# Real files nest arrays at most once; a deeper nest is damage, and unbounded recursion
# would end in RecursionError instead of a message.
MAX_ARRAY_NESTING = 4
# The smallest possible key/value entry (empty key, 1-byte value) and tensor entry
# (empty name, no dims): a count that cannot fit in the file is refused at once.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8
_PREAMBLE_BYTES = 4 + 4 + 8 + 8
# How much the reader asks its source for at a time: few calls for a local file, and
# a window the remote source can serve from its cache.
_WINDOW = 1 << 20

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


def _shown(text: str, limit: int = 40) -> str:
    """Text read from a possibly damaged file, fit for a message: quoted, control
    characters escaped, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


@runtime_checkable
class ByteSource(Protocol):
    """Random access to the bytes of one GGUF file, wherever it lives.

    `name` is what a person knows the file as; messages use it. `read` returns up to `n`
    bytes at `offset`: fewer only where the source ends, and raises GGUFError when it
    cannot give any (a network failure, a size limit).
    """

    name: str
    size: int

    def read(self, offset: int, n: int) -> bytes: ...


class FileSource:
    """A local file, open until close() or the end of a with-block."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.exists():
            raise GGUFError(
                f"The model file {p} does not exist. It may have been moved or deleted.")
        if not p.is_file():
            raise GGUFError(f"{p} is not a file. Choose a .gguf model file.")
        try:
            self._fh = p.open("rb")
            self.size = os.fstat(self._fh.fileno()).st_size
        except OSError as exc:
            raise GGUFError(f"Cannot open {p.name}: {exc.strerror}.") from exc
        self.path = p
        self.name = p.name

    def read(self, offset: int, n: int) -> bytes:
        try:
            self._fh.seek(offset)
            return self._fh.read(n)
        except OSError as exc:
            raise GGUFError(f"Cannot read {self.name}: {exc.strerror}.") from exc

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BytesSource:
    """Bytes already in memory (tests, or a header fetched by other means)."""

    def __init__(self, data: bytes, name: str = "model.gguf") -> None:
        self.data, self.name, self.size = bytes(data), name, len(data)

    def read(self, offset: int, n: int) -> bytes:
        return self.data[offset:offset + n]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # relative to the data section of its part
    part: int = 0  # index of the file holding it, for split models

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


@dataclass(frozen=True)
class PartInfo:
    """One file of a (possibly split) model."""

    name: str
    size: int
    data_offset: int


@dataclass
class GGUFHeader:
    path: Path  # the file (part 1 for a split model); Path(filename) for a remote one
    version: int
    file_size: int  # all parts together for a split model
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0  # of part 1
    source_name: str = ""  # full local path, or "repo/file" on the Hub
    parts: list[PartInfo] = field(default_factory=list)  # empty means one part

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
    def bits_per_weight(self) -> float:
        """File bits per parameter (what quantization tables quote for a whole file)."""
        return 8 * self.file_size / max(self.n_params, 1)

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        # A damaged file may hold any type here; only a count means something.
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    def part_data_end(self, part: int) -> int | None:
        """Where part `part`'s last tensor ends in its file, or None if a type is unknown."""
        start = self.parts[part].data_offset if self.parts else self.data_offset
        end = start
        for t in self.tensors:
            if t.part != part:
                continue
            size = t.n_bytes
            if size is None:
                return None
            end = max(end, start + t.offset + size)
        return end

    @property
    def data_end(self) -> int | None:
        """Bytes the file must hold (all parts together for a split model, comparable with
        file_size), or None if a tensor type is unknown."""
        total = 0
        for part in range(max(1, len(self.parts))):
            end = self.part_data_end(part)
            if end is None:
                return None
            total += end
        return total


@dataclass(frozen=True)
class ArraySummary:
    """Long arrays (the vocabulary) are not kept: only their type and length."""

    item_type: int
    length: int
    head: tuple[Any, ...] = ()


class _Reader:
    """Sequential reads from a ByteSource through a window, every length bounds-checked."""

    def __init__(self, source: ByteSource) -> None:
        self.source, self.size, self.name = source, source.size, source.name
        self.pos = 0
        self._buf = b""
        self._buf_start = 0
        # The first repeat in a list read with unique=True: (first index, repeat, text).
        self.repeated: tuple[int, int, str] | None = None

    def _truncated(self, detail: str = "") -> GGUFError:
        return GGUFError(
            f"{self.name} ends in the middle of its header{detail}: it is truncated "
            "or damaged. Download it again.")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise self._truncated()
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            want = min(max(n, _WINDOW), self.size - self.pos)
            data = self.source.read(self.pos, want)
            # A source may give less than asked near a limit; ask again for what is needed
            # so the source can say why it stops.
            while len(data) < n:
                more = self.source.read(self.pos + len(data), n - len(data))
                if not more:
                    raise self._truncated()
                data += more
            self._buf, self._buf_start, start = data, self.pos, 0
        self.pos += n
        return self._buf[start:start + n]

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_array_items: int = 16, depth: int = 0,
              unique: bool = False) -> Any:
        """One value of type `vtype`; `unique`: a list of strings none of which may repeat
        (the first repeat is kept in `repeated`)."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise GGUFError(f"{self.name} has a damaged header (lists nested too deep).")
            item_type = self.unpack("<I")
            length = self.unpack("<Q")
            # Each item takes at least one byte: a larger count cannot be honest.
            if length > self.size - self.pos:
                raise self._truncated(
                    f" (a list of {length:,} entries runs past the end of the file)")
            if item_type in _SCALARS:
                width = struct.calcsize(_SCALARS[item_type])
                raw = self.take(width * length)
                head = tuple(
                    struct.unpack_from(_SCALARS[item_type], raw, i * width)[0]
                    for i in range(min(length, keep_array_items))
                )
                return ArraySummary(item_type, length, head)
            if item_type == _STRING and unique:
                return self._unique_strings(length, keep_array_items)
            head_items = []
            for i in range(length):
                item = self.value(item_type, keep_array_items=0, depth=depth + 1)
                if i < keep_array_items:
                    head_items.append(item)
            return ArraySummary(item_type, length, tuple(head_items))
        raise GGUFError(f"{self.name} has a damaged header (unknown value type {vtype}).")

    def _unique_strings(self, length: int, keep: int) -> ArraySummary:
        # Compared as bytes: decoding replaces invalid UTF-8, which would make different
        # tokens look alike. Empty ones are exempt: llama.cpp renames them.
        first: dict[bytes, int] = {}
        head = []
        for i in range(length):
            raw = self.take(self.unpack("<Q"))
            if i < keep:
                head.append(raw.decode("utf-8", errors="replace"))
            seen = first.setdefault(raw, i)
            if seen != i and raw and self.repeated is None:
                self.repeated = (seen, i, raw.decode("utf-8", errors="replace"))
        return ArraySummary(_STRING, length, tuple(head))


def _alignment(metadata: dict[str, Any], name: str) -> int:
    value = metadata.get("general.alignment", 32)
    if value == 0:  # written by some old converters to mean "the default"
        return 32
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value & (value - 1):
        raise GGUFError(f"{name} has a damaged header (alignment {value!r}).")
    return value


def parse_source(source: ByteSource) -> GGUFHeader:
    """Read one file's header; no truncation check (see check_complete)."""
    r = _Reader(source)
    name = source.name
    if source.size == 0:
        raise GGUFError(f"{name} is empty (0 bytes): an interrupted download or copy? "
                        "Download it again.")
    magic = r.take(4) if source.size >= 4 else source.read(0, 4)
    if magic != GGUF_MAGIC:
        raise GGUFError(
            f"{name} is not a GGUF model file (it starts with {magic!r}, not b'GGUF'). "
            "Workbench loads llama.cpp GGUF files; convert other formats first."
        )
    version = r.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(f"{name} uses GGUF version {version}; versions 2 and 3 are supported.")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    claims = f"{n_tensors:,} tensors and {n_kv:,} keys"
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(f"{name} has a damaged header (claims {claims}).")
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > source.size - _PREAMBLE_BYTES:
        raise r._truncated(f" (it claims {claims}, more than its {source.size:,} bytes hold)")
    # A local file is known by its full path; other sources by their name ("repo/file").
    path = getattr(source, "path", None)
    header = GGUFHeader(
        path=path if isinstance(path, Path) else Path(name), version=version,
        file_size=source.size,
        source_name=str(path) if isinstance(source, FileSource) else name)
    for _ in range(n_kv):
        key = r.string()
        header.metadata[key] = r.value(r.unpack("<I"), unique=key == VOCAB_KEY)
    _check_vocabulary(header, r.repeated, name)
    seen: set[str] = set()
    for i in range(n_tensors):
        n_name = r.unpack("<Q")
        if n_name >= MAX_TENSOR_NAME:
            raise GGUFError(f"{name} has a damaged tensor table (the name of tensor {i:,} "
                            f"is {n_name:,} bytes long; llama.cpp allows "
                            f"{MAX_TENSOR_NAME - 1}). Download it again.")
        tname = r.take(n_name).decode("utf-8", errors="replace")
        n_dims = r.unpack("<I")
        if n_dims > MAX_DIMS:
            raise GGUFError(
                f"{name} has a damaged tensor table ({_shown(tname)}: {n_dims} dims).")
        if tname in seen:
            raise GGUFError(
                f"{name} has a damaged tensor table ({_shown(tname)} appears twice).")
        seen.add(tname)
        shape = tuple(r.unpack("<Q") for _ in range(n_dims))
        header.tensors.append(TensorInfo(tname, shape, r.unpack("<I"), r.unpack("<Q")))
    alignment = _alignment(header.metadata, name)
    header.data_offset = r.pos + (-r.pos % alignment)
    header.parts = [PartInfo(name, source.size, header.data_offset)]
    return header


def _check_vocabulary(header: GGUFHeader, repeated: tuple[int, int, str] | None,
                      name: str) -> None:
    if repeated is None or header.metadata.get("tokenizer.ggml.model") in _NO_VOCAB:
        return
    first, again, text = repeated
    raise GGUFError(
        f"{name} has a damaged vocabulary: tokens {first:,} and {again:,} are both "
        f"{_shown(text)}. llama.cpp cannot load a vocabulary with a repeated token (it "
        "would stop instead of loading). Download the file again, or use another "
        "conversion of the model.")


def check_complete(header: GGUFHeader, part: int = 0) -> None:
    """Refuse a part whose file is shorter than its tensor table says."""
    info = header.parts[part]
    end = header.part_data_end(part)
    if end is not None and end > info.size:
        missing = end - info.size
        raise GGUFError(
            f"{info.name} is truncated: {missing:,} bytes of its weights are missing "
            f"({info.size:,} of {end:,} bytes present). An interrupted download? "
            "Download it again."
        )


@contextmanager
def open_source(source: str | os.PathLike[str] | ByteSource) -> Iterator[ByteSource]:
    """A ByteSource for a path (closed afterwards) or the given source (left open)."""
    if isinstance(source, (str, os.PathLike)):
        with FileSource(source) as fs:
            yield fs
    else:
        yield source


def read_header(source: str | os.PathLike[str] | ByteSource) -> GGUFHeader:
    """Read and check a GGUF header. Raises GGUFError with a message for the user."""
    with open_source(source) as src:
        header = parse_source(src)
    check_complete(header)
    return header


def describe_quantization(header: GGUFHeader) -> str:
    """The dominant weight type, e.g. 'Q4_1' (by bytes)."""
    by_type: dict[str, int] = {}
    for t in header.tensors:
        name = GGML_TYPES.get(t.type_id, (f"type{t.type_id}", 1, 1))[0]
        by_type[name] = by_type.get(name, 0) + (t.n_bytes or 0)
    return max(by_type, key=by_type.__getitem__) if by_type else "unknown"
