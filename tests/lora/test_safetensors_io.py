"""Reading safetensors without torch: bfloat16 widening and damaged files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.lora.fakes import bf16_round, write_bf16_safetensors
from workbench.lora.gguf_lora import AdapterError
from workbench.lora.safetensors_io import bf16_to_float32, read_safetensors


def _raw_file(path: Path, header: dict[str, object], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_bf16_bits_widen_exactly() -> None:
    values = np.array([1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, 3.0e38, 1.0e-38, 0.15625],
                      dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(bf16_to_float32(bits), bf16_round(values))
    assert np.isnan(bf16_to_float32(np.array([0x7FC0], np.uint16)))[0]


def test_bf16_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32),
               "b": rng.standard_normal((7, 2)).astype(np.float32)}
    path = tmp_path / "bf16.safetensors"
    write_bf16_safetensors(path, tensors)
    got = read_safetensors(path)
    assert got.keys() == tensors.keys()
    for name, array in tensors.items():
        assert got[name].dtype == np.float32 and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], bf16_round(array))


def test_bf16_beside_f16_and_f32(tmp_path: Path) -> None:
    half = np.array([[1.5, -3.0]], dtype=np.float16).tobytes()
    single = np.array([0.25], dtype=np.float32).tobytes()
    bf = np.array([0x3F80], dtype="<u2").tobytes()  # 1.0
    header = {"__metadata__": {"format": "pt"},
              "h": {"dtype": "F16", "shape": [1, 2], "data_offsets": [0, 4]},
              "s": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
              "b": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [8, 10]}}
    got = read_safetensors(_raw_file(tmp_path / "mixed.safetensors", header,
                                     half + single + bf))
    np.testing.assert_array_equal(got["h"], np.array([[1.5, -3.0]], np.float16))
    assert got["s"].tolist() == [0.25] and got["b"].tolist() == [[1.0]]


def test_plain_file_through_the_library(tmp_path: Path) -> None:
    path = tmp_path / "f32.safetensors"
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_file({"x": array}, str(path))
    np.testing.assert_array_equal(read_safetensors(path)["x"], array)


def test_integer_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "i8.safetensors"
    save_file({"q": np.ones((2, 2), np.int8)}, str(path))
    with pytest.raises(AdapterError, match="stored as I8"):
        read_safetensors(path)


@pytest.mark.parametrize(("content", "message"), [
    (b"\x01", "too short"),
    (struct.pack("<Q", 10**12) + b"{}", "header claims"),
    (struct.pack("<Q", 4) + b"{{{{", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
])
def test_damaged_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(AdapterError, match=message):
        read_safetensors(path)


@pytest.mark.parametrize(("entry", "message"), [
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}, "outside the file"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}, "does not match its shape"),
    ({"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}, "no valid shape"),
])
def test_damaged_entries(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", {"t": entry}, bytes(16))
    with pytest.raises(AdapterError, match=message):
        read_safetensors(path)
