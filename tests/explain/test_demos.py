"""The header-based demos on the built-in model, checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.explain.demos import causal_mask, kv_cache, lora_parameters, quantization
from workbench.models.fit import ModelShape
from workbench.models.gguf import read_header


@pytest.fixture(scope="module")
def header(builtin_model: Path):
    return read_header(builtin_model)


def test_kv_cache_demo_matches_llama_cpp(header) -> None:
    shape = ModelShape.from_header(header)
    demo = kv_cache(shape, 2048, "f16", used_tokens=100)
    # SmolLM2-135M: 30 layers × 3 KV heads × (64 + 64) dims × 2 bytes per token.
    assert demo.bytes_per_token == 30 * 3 * 128 * 2
    assert demo.total_bytes == 45 * 2**20  # llama.cpp logs "size = 45.00 MiB" at 2048
    assert demo.used_bytes == 100 * 30 * 3 * 128 * 2
    assert kv_cache(shape, 2048, "q8_0").total_bytes < demo.total_bytes * 0.54


def test_quantization_demo(header) -> None:
    demo = quantization(header)
    assert demo.current_type == "Q4_1" and 5.0 < demo.current_bpw < 6.0
    sizes = dict((name, size) for name, _bpw, size in demo.alternatives)
    assert sizes["Q2_K"] < sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["F16"]
    assert sizes["F16"] == demo.n_params * 2


def test_lora_parameters_from_real_shapes(header) -> None:
    demo = lora_parameters(header, rank=8, targets=("attn_q", "attn_v"))
    # attn_q: 576 → 576, attn_v: 576 → 192 (3 KV heads × 64), in 30 layers.
    assert dict(demo.per_target) == {"attn_q": 30 * 8 * (576 + 576),
                                     "attn_v": 30 * 8 * (576 + 192)}
    assert 0 < demo.share < 0.01
    assert lora_parameters(header, 16, ("attn_q", "attn_v")).trainable == 2 * demo.trainable


def test_causal_mask() -> None:
    mask = causal_mask(4)
    assert mask[0] == [True, False, False, False] and mask[3] == [True] * 4
    assert sum(map(sum, mask)) == 10  # n(n+1)/2
