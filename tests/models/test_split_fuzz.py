"""Split GGUF models read as one (locally and from the loopback Hub), and fuzzing of the
header reader: damaged input must end in GGUFError, quickly, and nothing else."""

from __future__ import annotations

import struct
import tempfile
import time
from functools import cache
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.bench.hub_server import HubServer
from workbench.models.gguf import (
    MAX_KV,
    BytesSource,
    GGUFError,
    GGUFHeader,
    describe_quantization,
    read_header,
)
from workbench.models.remote import read_remote_model_header
from workbench.models.split import read_model_header, read_split_header, split_parts

TENSORS = {f"blk.{i}.weight": np.arange(8 * (i + 1), dtype=np.float32).reshape(i + 1, 8)
           for i in range(6)}
PARTS = [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def write_gguf(path: Path, *, split_max_tensors: int = 0, tensors: dict | None = None,
               extra: dict[str, int] | None = None) -> None:
    """A small llama-like GGUF (split into parts of `split_max_tensors` tensors if > 0)."""
    w = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_custom_alignment(64)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "b", "ab"])
    w.add_array("tokenizer.ggml.token_type", [3, 3, 1, 1, 1])
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    for key, value in (extra or {}).items():
        w.add_uint16(key, value)
    for name, array in (TENSORS if tensors is None else tensors).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def split_model(tmp_path: Path) -> list[Path]:
    write_gguf(tmp_path / "tiny.gguf", split_max_tensors=2)
    paths = [tmp_path / name for name in PARTS]
    assert all(p.exists() for p in paths)
    return paths


def test_split_parts_names() -> None:
    assert split_parts("m-00002-of-00003.gguf") == [
        "m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"]
    assert split_parts("Q4_K_M/big-model-00001-of-00002.gguf") == [
        "Q4_K_M/big-model-00001-of-00002.gguf", "Q4_K_M/big-model-00002-of-00002.gguf"]
    for plain in ("model.gguf", "m-00004-of-00003.gguf", "m-00000-of-00003.gguf",
                  "m-1-of-3.gguf", "m-00001-of-00003.bin"):
        assert split_parts(plain) == [plain]


def test_split_model_reads_as_one(split_model: list[Path]) -> None:
    for given_part in split_model:  # any part finds the others
        header = read_model_header(given_part)
        assert header.path == split_model[0] and header.name == "tiny"
        assert [t.name for t in header.tensors] == list(TENSORS)
        assert [t.part for t in header.tensors] == [0, 0, 1, 1, 2, 2]
        assert header.n_params == sum(a.size for a in TENSORS.values())
        assert header.file_size == sum(p.stat().st_size for p in split_model)
        assert header.context_length == 128 and header.chat_template
        assert [p.name for p in header.parts] == PARTS
        assert header.data_end is not None and header.data_end <= header.file_size
        assert describe_quantization(header) == "F32"
    assert read_split_header(list(split_model)).tensors == header.tensors
    # One part alone is still a valid GGUF file, with only its own tensors.
    assert len(read_header(split_model[1]).tensors) == 2


def test_missing_parts_are_named(split_model: list[Path]) -> None:
    split_model[2].unlink()
    with pytest.raises(GGUFError, match=r"tiny-00003-of-00003\.gguf is missing"):
        read_model_header(split_model[0])
    split_model[1].unlink()
    with pytest.raises(GGUFError, match=r"tiny-00002-of-00003\.gguf, tiny-00003-of-00003\.gguf"
                                        r" are missing"):
        read_model_header(split_model[0])


def test_truncated_part_is_named(split_model: list[Path]) -> None:
    data = split_model[1].read_bytes()
    split_model[1].write_bytes(data[:-100])
    with pytest.raises(GGUFError, match=r"tiny-00002-of-00003\.gguf is truncated"):
        read_model_header(split_model[0])


def test_parts_out_of_order_or_incomplete(split_model: list[Path]) -> None:
    p1, p2, p3 = split_model
    with pytest.raises(GGUFError, match="is part 2 of its model, but was given as part 1"):
        read_split_header([p2, p1, p3])
    with pytest.raises(GGUFError, match="split into 3 files, but 2 were given"):
        read_split_header([p1, p2])
    with pytest.raises(GGUFError, match="No model file"):
        read_split_header([])


def test_split_tensor_count_is_checked(tmp_path: Path) -> None:
    names = list(TENSORS)
    for no, chunk in enumerate((names[:2], names[2:4])):
        write_gguf(tmp_path / f"hand-0000{no + 1}-of-00002.gguf",
                   tensors={n: TENSORS[n] for n in chunk},
                   extra={"split.no": no, "split.count": 2, "split.tensors.count": 5})
    with pytest.raises(GGUFError, match="should have 5 tensors over its 2 parts, but they hold 4"):
        read_model_header(tmp_path / "hand-00001-of-00002.gguf")


def test_renamed_part_is_refused(tmp_path: Path, split_model: list[Path]) -> None:
    renamed = split_model[0].rename(tmp_path / "tiny.gguf")
    with pytest.raises(GGUFError, match="Restore the original file names"):
        read_model_header(renamed)


def test_plain_file_through_read_model_header(tmp_path: Path) -> None:
    write_gguf(tmp_path / "plain.gguf")
    header = read_model_header(tmp_path / "plain.gguf")
    assert len(header.tensors) == 6 and len(header.parts) == 1
    assert header.data_end is not None and header.data_end <= header.file_size


def test_remote_split_model(hub: HubServer, split_model: list[Path]) -> None:
    repo = "someone/tiny-GGUF"
    for p in split_model:
        hub.add_file(repo, f"F32/{p.name}", p)
    remote = read_remote_model_header(repo, f"F32/{PARTS[1]}", endpoint=hub.endpoint)
    local = read_model_header(split_model[0])
    assert remote.tensors == local.tensors and remote.metadata == local.metadata
    assert remote.file_size == local.file_size and remote.n_params == local.n_params
    commit = hub.repos[repo].commit
    # Parts 2 and 3 are read at the commit part 1 resolved to.
    assert all(f"/resolve/{commit}/" in r.path for name in PARTS[1:]
               for r in hub.requests_for(name, "HEAD"))


def test_remote_split_missing_part(hub: HubServer, split_model: list[Path]) -> None:
    repo = "someone/tiny-GGUF"
    for p in split_model[:2]:
        hub.add_file(repo, p.name, p)
    with pytest.raises(GGUFError, match=r"part 3, tiny-00003-of-00003\.gguf, is missing from "
                                        r"someone/tiny-GGUF"):
        read_remote_model_header(repo, PARTS[0], endpoint=hub.endpoint)


# -- hostile headers --------------------------------------------------------------------


@pytest.mark.parametrize(("n_tensors", "n_kv"), [(0, 1 << 40), (1 << 40, 0), (1 << 40, 1 << 40),
                                                 (MAX_KV, MAX_KV), (2**64 - 1, 2**64 - 1)])
def test_huge_counts_fail_fast(n_tensors: int, n_kv: int) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + b"\0" * 4096
    started = time.perf_counter()
    with pytest.raises(GGUFError, match=r"damaged|truncated"):
        read_header(BytesSource(data))
    assert time.perf_counter() - started < 0.1


def test_deeply_nested_arrays_fail_cleanly() -> None:
    key = b"general.x"
    nest = struct.pack("<IQ", 9, 1) * 5000  # a list of a list of a list ...
    data = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<I", 9) + nest + struct.pack("<IQ", 4, 0))
    with pytest.raises(GGUFError, match="nested too deep"):
        read_header(BytesSource(data))


def test_bad_alignment_is_refused(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "a.gguf", "llama")
    w.add_string("general.alignment", "big")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="alignment"):
        read_header(tmp_path / "a.gguf")


@cache
def _small_gguf() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.gguf"
        write_gguf(path, tensors=dict(list(TENSORS.items())[:3]))
        return path.read_bytes()


@cache
def _split_bytes() -> tuple[bytes, ...]:
    with tempfile.TemporaryDirectory() as folder:
        write_gguf(Path(folder) / "tiny.gguf", split_max_tensors=2)
        return tuple((Path(folder) / name).read_bytes() for name in PARTS)


def _use(header: GGUFHeader) -> None:
    """Everything the app reads from a header must work on whatever was parsed."""
    _ = (header.architecture, header.name, header.n_params, header.context_length,
         header.chat_template, header.data_end, describe_quantization(header))


_HUGE = st.sampled_from([2**63, 2**64 - 1, 2**40, 2**32, 2**31 - 1, 1 << 20, 255])


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "byte", "u64", "cut"]))
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            out[pos] = draw(st.integers(0, 255))
        elif kind == "u64":  # lengths and counts are u64s: make one absurd
            value = draw(_HUGE | st.integers(0, 2**64 - 1))
            out[pos:pos + 8] = struct.pack("<Q", value)
        else:
            del out[pos:]
    return bytes(out)


_FUZZ = settings(max_examples=200, deadline=500, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=st.data())
def test_fuzzed_file_fails_only_with_gguf_error(data: st.DataObject) -> None:
    damaged = data.draw(mutations(_small_gguf()))
    started = time.perf_counter()
    try:
        header = read_header(BytesSource(damaged))
    except GGUFError:
        pass
    else:
        _use(header)
    assert time.perf_counter() - started < 0.5


@_FUZZ
@given(data=st.data(), which=st.integers(0, 2))
def test_fuzzed_split_part_fails_only_with_gguf_error(data: st.DataObject, which: int) -> None:
    parts = list(_split_bytes())
    parts[which] = data.draw(mutations(parts[which]))
    try:
        sources = [BytesSource(b, name) for b, name in zip(parts, PARTS, strict=True)]
        header = read_split_header(list(sources))
    except GGUFError:
        pass
    else:
        _use(header)
