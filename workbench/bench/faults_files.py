"""Damaged GGUF files for the fault benchmark (faults.py): made from the built-in model's
bytes one at a time, each handed to the app's own header check and to the real engine.

A file gives a clear error when the engine answers its load with an EngineError a person
can act on within CLEAR_WITHIN_S. A crash is the engine process dying, a load that hangs,
or a damaged file loading as if it were fine. A bit flip inside a text value (a token, the
model's name) may leave a file llama.cpp can use: those are `loaded_anyway`, not crashes."""

from __future__ import annotations

import io
import random
import shutil
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import ChatMessage, EngineDied, LoadSpec, Sampling
from workbench.models.gguf import MAX_KV, MAX_TENSORS, FileSource, GGUFError, _Reader
from workbench.models.split import read_model_header

CLEAR_WITHIN_S = 2.0
HANG_S = 30.0  # a load still unanswered after this long is a hang
N_CTX = 512
BITFLIPS_HEADER, BITFLIPS_TABLE, FLIP_WINDOW = 20, 6, 4096
SEED = 20240613


@dataclass(frozen=True)
class Layout:
    """Where the parts of the model file start and end (bytes)."""

    size: int
    keys: dict[str, tuple[int, int]]  # key -> (start, end) of its whole entry
    kv_end: int  # the tensor table (its first entry) starts here
    table_end: int
    data_offset: int


def read_layout(path: Path) -> Layout:
    """Walk the (valid) model's header once, noting offsets. Uses the app's own reader:
    this is the model file, not one of the damaged ones."""
    with FileSource(path) as src:
        r = _Reader(src)
        r.take(8)  # magic, version
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        keys: dict[str, tuple[int, int]] = {}
        for _ in range(n_kv):
            start = r.pos
            key = r.string()
            r.value(r.unpack("<I"), keep_array_items=0)
            keys[key] = (start, r.pos)
        kv_end = r.pos
        for _ in range(n_tensors):
            r.string()
            for _ in range(r.unpack("<I")):
                r.unpack("<Q")
            r.take(4 + 8)
        table_end = r.pos
    header = read_model_header(path)
    return Layout(src.size, keys, kv_end, table_end, header.data_offset)


def where(layout: Layout, offset: int) -> str:
    """In words, which part of the header `offset` is in."""
    if offset < 24:
        return ("magic", "version", "tensor count", "tensor count", "key count",
                "key count")[offset // 4]
    for key, (start, end) in layout.keys.items():
        if start <= offset < end:
            return key
    if offset < layout.table_end:
        return "tensor table"
    return "tensor data"


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # "truncated" | "bitflip" | "counts" | "version" | "table" | "other"
    note: str
    make: Callable[[Path, Path], None]  # (model, out) -> writes the damaged file


def _head(n: int) -> Callable[[Path, Path], None]:
    """The first `n` bytes: a download or copy cut short."""
    def make(model: Path, out: Path) -> None:
        with model.open("rb") as src:
            out.write_bytes(src.read(n))
    return make


def _patched(offset: int, data: bytes | Callable[[bytes], bytes], width: int = 0
             ) -> Callable[[Path, Path], None]:
    """A full copy with bytes at `offset` replaced (or transformed, reading `width`)."""
    def make(model: Path, out: Path) -> None:
        shutil.copyfile(model, out)
        with out.open("r+b") as fh:
            fh.seek(offset)
            new = data(fh.read(width)) if callable(data) else data
            fh.seek(offset)
            fh.write(new)
    return make


def _bytes(content: bytes) -> Callable[[Path, Path], None]:
    return lambda _model, out: out.write_bytes(content)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("README.txt", "This archive holds no model.\n" * 200)
    return buf.getvalue()


def _flip(bit: int) -> Callable[[bytes], bytes]:
    return lambda b: bytes([b[0] ^ (1 << bit)])


def _truncations(lay: Layout) -> list[Case]:
    tokens = lay.keys["tokenizer.ggml.tokens"][0]
    points = {
        "magic": 2, "version": 6, "counts": 20, "first_key": 40,
        "token_list": tokens + 5000, "kv_end": lay.kv_end - 3,
        "tensor_table_start": lay.kv_end + 10,
        "tensor_table_mid": (lay.kv_end + lay.table_end) // 2,
        "tensor_table_end": lay.table_end - 4, "no_weights": lay.data_offset,
        "weights_4k": lay.data_offset + 4096, "weights_25pct": lay.size // 4,
        "weights_50pct": lay.size // 2, "weights_90pct": lay.size * 9 // 10,
        "last_byte": lay.size - 1,
    }
    return [Case(f"truncated_{label}", "truncated", f"first {n:,} of {lay.size:,} bytes",
                 _head(n)) for label, n in points.items()]


def _counts(lay: Layout, n_tensors: int, n_kv: int) -> list[Case]:
    def count(name: str, offset: int, value: int) -> Case:
        return Case(name, "counts", f"{value:,}", _patched(offset, struct.pack("<Q", value)))

    return [
        count("tensor_count_2e40", 8, 1 << 40), count("key_count_2e40", 16, 1 << 40),
        count("tensor_count_at_limit", 8, MAX_TENSORS), count("key_count_at_limit", 16, MAX_KV),
        count("tensor_count_plus_1", 8, n_tensors + 1),
        count("tensor_count_minus_1", 8, n_tensors - 1),
        count("key_count_plus_1", 16, n_kv + 1), count("key_count_minus_1", 16, n_kv - 1),
    ]


def cases(model: Path, quick: bool = False) -> list[Case]:
    lay = read_layout(model)
    header = read_model_header(model)
    rng = random.Random(SEED)
    n_tensors, n_kv = len(header.tensors), len(header.metadata)
    found: list[Case] = [
        Case("empty", "other", "0 bytes", _bytes(b"")),
        Case("zip_file", "other", "a zip of a text file", _bytes(_zip_bytes())),
        Case("random_bytes", "other", "64 KiB of noise", _bytes(rng.randbytes(1 << 16))),
        Case("magic_then_noise", "other", "GGUF v3 magic, then noise",
             _bytes(b"GGUF" + struct.pack("<I", 3) + rng.randbytes(1 << 16))),
        Case("version_1", "version", "GGUF v1", _patched(4, struct.pack("<I", 1))),
        Case("version_99", "version", "GGUF v99", _patched(4, struct.pack("<I", 99))),
        Case("version_0", "version", "GGUF v0", _patched(4, struct.pack("<I", 0))),
        *_truncations(lay), *_counts(lay, n_tensors, n_kv), *_tensor_entry(lay, model),
    ]
    for i, offset in enumerate(sorted(rng.sample(range(FLIP_WINDOW), BITFLIPS_HEADER))):
        bit = rng.randrange(8)
        found.append(Case(f"bitflip_header_{i:02d}", "bitflip",
                          f"bit {bit} of byte {offset:,} ({where(lay, offset)})",
                          _patched(offset, _flip(bit), 1)))
    for i, offset in enumerate(sorted(rng.sample(range(lay.kv_end, lay.table_end),
                                                 BITFLIPS_TABLE))):
        bit = rng.randrange(8)
        found.append(Case(f"bitflip_table_{i:02d}", "bitflip",
                          f"bit {bit} of byte {offset:,} (tensor table)",
                          _patched(offset, _flip(bit), 1)))
    if quick:
        # One of each kind, and the repeated token that used to stop the engine.
        keep = {"empty", "zip_file", "version_99", "tensor_count_2e40", "truncated_token_list",
                "truncated_weights_50pct", "tensor_type_200", "bitflip_header_17",
                "bitflip_table_02"}
        found = [c for c in found if c.name in keep]
    return found


def _tensor_entry(lay: Layout, model: Path) -> list[Case]:
    """The first tensor's entry: name, dimension count, dimensions, type, data offset."""
    with model.open("rb") as fh:
        fh.seek(lay.kv_end)
        name_len = struct.unpack("<Q", fh.read(8))[0]
        fh.seek(lay.kv_end + 8 + name_len)
        n_dims = struct.unpack("<I", fh.read(4))[0]
    dims = lay.kv_end + 8 + name_len + 4
    type_at = dims + 8 * n_dims
    return [
        Case("tensor_type_200", "table", "first tensor's type id 200",
             _patched(type_at, struct.pack("<I", 200))),
        Case("tensor_offset_2e60", "table", "first tensor's data offset 2^60",
             _patched(type_at + 4, struct.pack("<Q", 1 << 60))),
        Case("tensor_offset_unaligned", "table", "first tensor's data offset + 1",
             _patched(type_at + 4, lambda b: struct.pack("<Q", struct.unpack("<Q", b)[0] + 1),
                      8)),
        Case("tensor_dim_2e62", "table", "first tensor's first dimension 2^62",
             _patched(dims, struct.pack("<Q", 1 << 62))),
        Case("tensor_dim_0", "table", "first tensor's first dimension 0",
             _patched(dims, struct.pack("<Q", 0))),
        Case("tensor_dims_9", "table", "first tensor claims 9 dimensions",
             _patched(dims - 4, struct.pack("<I", 9))),
    ]


def precheck(path: Path) -> str:
    """What the app's own check (run before a load) says: 'GGUFError', 'ok', or the type
    of anything else it raised (a bug in the reader)."""
    try:
        read_model_header(path)
    except GGUFError:
        return "GGUFError"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


class Loader:
    """The engine as the app holds it: the good model loaded, then a damaged file asked for.
    An engine that died or hung is replaced, as the app's next load would."""

    def __init__(self, model: Path) -> None:
        self.good = LoadSpec(str(model), n_ctx=N_CTX)
        self.engine = BlockingEngine()

    def close(self) -> None:
        self.engine.close()

    def replace_engine(self) -> None:
        self.engine.close()
        self.engine = BlockingEngine()

    def load_good(self) -> None:
        self.engine.load(self.good, timeout=HANG_S)

    def try_load(self, path: Path, group: str) -> tuple[str, float, str]:
        """(outcome, seconds to the answer, message) for loading `path`."""
        started = time.perf_counter()
        try:
            self.engine.load(LoadSpec(str(path), n_ctx=N_CTX), timeout=HANG_S)
        except EngineFailure as exc:
            seconds = time.perf_counter() - started
            event = exc.event
            if isinstance(event, EngineDied):
                return "engine_died", seconds, event.message
            if event.kind == "internal" or not event.message.strip():
                return "unclear_error", seconds, event.message
            return ("clear_error" if seconds <= CLEAR_WITHIN_S else "slow_error",
                    seconds, event.message)
        except TimeoutError:
            self.replace_engine()
            return "hung", time.perf_counter() - started, f"no answer in {HANG_S:.0f} s"
        seconds = time.perf_counter() - started
        if group != "bitflip":
            return "loaded_damaged", seconds, "loaded as if it were fine"
        return self._chat_after_load(seconds)

    def _chat_after_load(self, seconds: float) -> tuple[str, float, str]:
        """A flipped bit that still loads: does the model then reply, or bring the engine
        down?"""
        try:
            result = self.engine.chat([ChatMessage("user", "Hi")],
                                      Sampling(temperature=0.0, max_tokens=8, seed=1),
                                      timeout=HANG_S)
        except EngineFailure as exc:
            if isinstance(exc.event, EngineDied):
                return "died_on_chat", seconds, exc.event.message
            return "loaded_anyway", seconds, f"loaded; chat refused: {exc.event.message}"
        except TimeoutError:
            self.replace_engine()
            return "hung", seconds, "loaded, then chat hung"
        return "loaded_anyway", seconds, f"loaded and replied {result.done.text!r}"


CRASHES = frozenset({"engine_died", "hung", "loaded_damaged", "died_on_chat"})


def run_cases(model: Path, folder: Path, quick: bool = False) -> tuple[list[dict], bool]:
    """One row per damaged file, and whether the engine still loads the good model after
    them all. Each file exists only while it is tested (a full copy is ~100 MB)."""
    rows = []
    loader = Loader(model)
    try:
        for case in cases(model, quick):
            path = folder / f"{case.name}.gguf"
            case.make(model, path)
            try:
                loader.load_good()
            except (EngineFailure, TimeoutError):
                loader.replace_engine()  # the previous file left it unusable: start over
                loader.load_good()
            checked = precheck(path)
            outcome, seconds, message = loader.try_load(path, case.group)
            path.unlink()
            rows.append({"name": case.name, "damage": case.note, "outcome": outcome,
                         "seconds": round(seconds, 3), "precheck": checked,
                         "message": " ".join(message.split())[:100]})
        try:
            loader.load_good()
            usable = True
        except (EngineFailure, TimeoutError):
            usable = False
    finally:
        loader.close()
    return rows, usable
