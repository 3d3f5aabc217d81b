"""Converting PEFT LoRA adapters to GGUF: layouts, the rotary permutation, scales."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.lora.fakes import (
    N_HEAD,
    N_HEAD_KV,
    bf16_round,
    lora_tensors,
    peft_key,
    read_gguf_tensors,
    write_base_gguf,
    write_bf16_safetensors,
    write_peft_adapter,
)
from workbench.lora.gguf_lora import read_adapter
from workbench.lora.peft_import import convert_peft_adapter, main, permute
from workbench.models.gguf import GGUFHeader


def _gguf_name(key: str) -> str:
    """PEFT key -> GGUF tensor name, by hand (independent of the converter's mapping)."""
    parts = key.split(".")
    layer, module, side = parts[4], parts[6], parts[7]
    short = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
             "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
             "down_proj": "ffn_down"}[module]
    return f"blk.{layer}.{short}.weight.lora_{side.removeprefix('lora_').lower()}"


def test_lora_a_unchanged_and_lora_b_permuted_for_q_and_k(
        converted: Path, peft_tensors: dict[str, np.ndarray]) -> None:
    out = read_gguf_tensors(converted)
    assert len(out) == len(peft_tensors) == 42
    for key, original in peft_tensors.items():
        name = _gguf_name(key)
        got = out[name]
        assert got.dtype == np.float32 and got.shape == original.shape, name
        if name.endswith("attn_q.weight.lora_b"):
            np.testing.assert_array_equal(got, permute(original, N_HEAD, N_HEAD))
            assert not np.array_equal(got, original)
        elif name.endswith("attn_k.weight.lora_b"):
            np.testing.assert_array_equal(got, permute(original, N_HEAD, N_HEAD_KV))
            assert not np.array_equal(got, original)
        else:  # every lora_a, and lora_b of v, o and the MLP
            np.testing.assert_array_equal(got, original)


def test_permute_is_llama_cpp_row_interleaving() -> None:
    # One head of dim 8: HF keeps rotary halves (0..3 | 4..7); GGML wants pairs (0,4),(1,5)...
    rows = np.arange(8).reshape(8, 1)
    assert permute(rows, 1, 1).ravel().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    # k with fewer KV heads: permute(w, n_head, n_head_kv) works per KV head.
    rows = np.arange(16).reshape(16, 1)
    assert permute(rows, 4, 2).ravel().tolist() == [0, 4, 1, 5, 2, 6, 3, 7,
                                                    8, 12, 9, 13, 10, 14, 11, 15]


def test_permuting_lora_b_permutes_the_whole_update() -> None:
    # Why only B: llama.cpp permutes the base weight's rows, so the update B·A must get the
    # same row order, and permute(B·A) == permute(B)·A.
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 576)), rng.standard_normal((192, 4))
    np.testing.assert_allclose(permute(b @ a, N_HEAD, N_HEAD_KV),
                               permute(b, N_HEAD, N_HEAD_KV) @ a)


def _convert(tmp_path: Path, base: Path, tensors: dict[str, np.ndarray] | None = None,
             **config: object) -> tuple[Path, dict[str, np.ndarray]]:
    folder = write_peft_adapter(tmp_path / "adapter", tensors, **config)
    out = tmp_path / "out" / "adapter.gguf"
    convert_peft_adapter(folder, base, out)
    return out, read_gguf_tensors(out)


def test_rslora_alpha_is_compensated(tmp_path: Path, builtin_model: Path,
                                     peft_tensors: dict[str, np.ndarray]) -> None:
    out, tensors = _convert(tmp_path, builtin_model, peft_tensors, use_rslora=True,
                            r=4, lora_alpha=8)
    info = read_adapter(out)
    # rsLoRA scales by α/√r = 8/2 = 4; llama.cpp by alpha/r, so alpha is written as α·√r.
    assert info.alpha == pytest.approx(16.0)
    assert info.scale_at(1.0) == pytest.approx(8 / math.sqrt(4))
    key = peft_key(0, "v_proj", "B")
    np.testing.assert_array_equal(tensors[_gguf_name(key)], peft_tensors[key])


def test_rank_pattern_alone_needs_no_compensation(tmp_path: Path,
                                                  builtin_model: Path) -> None:
    # llama.cpp divides by each tensor's own rank, as PEFT does: nothing to rescale.
    source = lora_tensors(layers=(1,), rank={"q_proj": 8, "k_proj": 4, "v_proj": 4,
                                             "o_proj": 4, "gate_proj": 4, "up_proj": 4,
                                             "down_proj": 2})
    out, tensors = _convert(tmp_path, builtin_model, source, r=4,
                            rank_pattern={"q_proj": 8, "model.layers.1.mlp.down_proj": 2})
    info = read_adapter(out)
    assert (info.rank, info.min_rank, info.alpha) == (8, 2, 8.0)
    for module in ("v_proj", "down_proj"):
        key = peft_key(1, module, "B")
        np.testing.assert_array_equal(tensors[_gguf_name(key)], source[key])


def test_alpha_pattern_is_folded_into_lora_b(tmp_path: Path, builtin_model: Path,
                                             peft_tensors: dict[str, np.ndarray]) -> None:
    out, tensors = _convert(tmp_path, builtin_model, peft_tensors, lora_alpha=8,
                            alpha_pattern={"model.layers.5.mlp.down_proj": 32, "v_proj": 4})
    assert read_adapter(out).alpha == 8.0
    for layer in (0, 5, 29):
        down, v, up = (peft_key(layer, m, "B") for m in ("down_proj", "v_proj", "up_proj"))
        down_factor = 4.0 if layer == 5 else 1.0  # 32/8 for the one matched module
        np.testing.assert_allclose(tensors[_gguf_name(down)], peft_tensors[down] * down_factor,
                                   rtol=1e-6)
        np.testing.assert_allclose(tensors[_gguf_name(v)], peft_tensors[v] * 0.5, rtol=1e-6)
        np.testing.assert_array_equal(tensors[_gguf_name(up)], peft_tensors[up])


def test_rslora_with_rank_pattern(tmp_path: Path, builtin_model: Path) -> None:
    source = lora_tensors(layers=(0,), modules=("v_proj", "o_proj"),
                          rank={"v_proj": 16, "o_proj": 4})
    _, tensors = _convert(tmp_path, builtin_model, source, use_rslora=True, r=4, lora_alpha=8,
                          rank_pattern={"v_proj": 16}, target_modules=["v_proj", "o_proj"])
    # written alpha 8·√4 = 16; v wants 8/√16 = 2 but gets 16/16 = 1: B doubles.
    v, o = peft_key(0, "v_proj", "B"), peft_key(0, "o_proj", "B")
    np.testing.assert_allclose(tensors[_gguf_name(v)], source[v] * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(tensors[_gguf_name(o)], source[o])


def test_bf16_adapter(tmp_path: Path, builtin_model: Path,
                      peft_tensors: dict[str, np.ndarray]) -> None:
    folder = write_peft_adapter(tmp_path / "bf16", peft_tensors)
    write_bf16_safetensors(folder / "adapter_model.safetensors", peft_tensors)
    out = tmp_path / "bf16.gguf"
    convert_peft_adapter(folder, builtin_model, out)
    tensors = read_gguf_tensors(out)
    key = peft_key(29, "gate_proj", "A")
    np.testing.assert_array_equal(tensors[_gguf_name(key)], bf16_round(peft_tensors[key]))
    key = peft_key(5, "q_proj", "B")
    np.testing.assert_array_equal(tensors[_gguf_name(key)],
                                  permute(bf16_round(peft_tensors[key]), N_HEAD, N_HEAD))


def test_f16_in_and_out(tmp_path: Path, builtin_model: Path) -> None:
    source = lora_tensors(layers=(2,), dtype=np.float16)
    folder = write_peft_adapter(tmp_path / "f16", source)
    out = tmp_path / "f16.gguf"
    convert_peft_adapter(folder, builtin_model, out, out_type="f16")
    tensors = read_gguf_tensors(out)
    key = peft_key(2, "up_proj", "B")
    assert tensors[_gguf_name(key)].dtype == np.float16
    np.testing.assert_array_equal(tensors[_gguf_name(key)], source[key])


def test_fan_in_fan_out_needs_no_transpose(tmp_path: Path, builtin_model: Path,
                                           peft_tensors: dict[str, np.ndarray]) -> None:
    # PEFT's lora_A/lora_B are nn.Linear(in, r)/(r, out) whatever fan_in_fan_out says; the
    # flag only transposes B·A when merging into a Conv1D weight.
    plain, _ = _convert(tmp_path / "plain", builtin_model, peft_tensors)
    flagged, _ = _convert(tmp_path / "flagged", builtin_model, peft_tensors,
                          fan_in_fan_out=True)
    a, b = read_gguf_tensors(plain), read_gguf_tensors(flagged)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_qwen2_is_not_permuted(tmp_path: Path) -> None:
    base = write_base_gguf(tmp_path / "qwen.gguf", arch="qwen2", n_blocks=1)
    rng = np.random.default_rng(3)
    source = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
              rng.standard_normal((2, 64)).astype(np.float32),
              "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":
              rng.standard_normal((64, 2)).astype(np.float32)}
    _, tensors = _convert(tmp_path, base, source, r=2, target_modules=["q_proj"])
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight.lora_b"],
                                  source["base_model.model.model.layers.0.self_attn.q_proj"
                                         ".lora_B.weight"])


def test_metadata_and_alora_tokens(tmp_path: Path, builtin_model: Path,
                                   peft_tensors: dict[str, np.ndarray]) -> None:
    import gguf

    out, _ = _convert(tmp_path, builtin_model, peft_tensors, alora_invocation_tokens=[1, 2, 3])
    fields = gguf.GGUFReader(out).fields
    text = {k: fields[k].contents() for k in ("general.type", "adapter.type",
                                              "general.architecture",
                                              "general.base_model.0.repo_url")}
    assert text == {"general.type": "adapter", "adapter.type": "lora",
                    "general.architecture": "llama",
                    "general.base_model.0.repo_url":
                    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert fields["adapter.lora.alpha"].types == [gguf.GGUFValueType.FLOAT32]
    assert fields["adapter.alora.invocation_tokens"].contents() == [1, 2, 3]


def test_a_failed_write_leaves_nothing(tmp_path: Path, builtin_model: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.lora.peft_import as peft_import

    def broken(path: Path, *args: object) -> None:
        path.write_bytes(b"GGUF half written")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(peft_import, "_write_gguf", broken)
    folder = write_peft_adapter(tmp_path / "adapter")
    out_dir = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        convert_peft_adapter(folder, builtin_model, out_dir / "a.gguf")
    assert list(out_dir.iterdir()) == []


def test_cli(tmp_path: Path, builtin_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_peft_adapter(tmp_path / "adapter")
    out = tmp_path / "cli.gguf"
    assert main([str(folder), str(builtin_model), str(out)]) == 0
    assert "Wrote" in capsys.readouterr().out and out.is_file()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "use_dora": True}))
    assert main([str(folder), str(builtin_model), str(tmp_path / "no.gguf")]) == 2
    err = capsys.readouterr().err
    assert "error: The adapter uses DoRA" in err and "hint:" in err
    assert not (tmp_path / "no.gguf").exists()


def test_cli_runs_as_module(tmp_path: Path, builtin_model: Path) -> None:
    import subprocess
    import sys

    folder = write_peft_adapter(tmp_path / "adapter")
    done = subprocess.run(
        [sys.executable, "-m", "workbench.lora.peft_import", str(folder), str(builtin_model),
         str(tmp_path / "m.gguf")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "21 tensors in 3 layers" in done.stdout


def test_converted_file_fits_by_llama_cpp_rules(converted: Path,
                                                base_header: GGUFHeader) -> None:
    # GGUF dims: lora_a [n_in, r], lora_b [r, n_out] against the base's [n_in, n_out].
    base = {t.name: t.shape for t in base_header.tensors}
    for pair in read_adapter(converted).tensors:
        n_in, n_out = base[pair.base_name]
        assert pair.lora_a_shape == (n_in, 4) and pair.lora_b_shape == (4, n_out)


def test_the_converted_file_has_ordinary_permissions(converted) -> None:
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(converted.stat().st_mode) == 0o666 & ~umask
