"""What the PEFT importer refuses, with a message that names the reason, and leaves behind
nothing where the adapter would have been written."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.lora.fakes import lora_tensors, peft_key, write_base_gguf, write_peft_adapter
from workbench.lora.gguf_lora import AdapterError
from workbench.lora.peft_import import convert_peft_adapter

# A case builds (adapter folder, base model) in a folder, given the built-in model.
Case = Callable[[Path, Path], tuple[Path, Path]]


def _with(**config: object) -> Case:
    return lambda root, base: (write_peft_adapter(root / "adapter", **config), base)


def _with_tensors(edit: Callable[[dict[str, np.ndarray]], None], **config: object) -> Case:
    def build(root: Path, base: Path) -> tuple[Path, Path]:
        tensors = lora_tensors(layers=(0,))
        edit(tensors)
        return write_peft_adapter(root / "adapter", tensors, **config), base
    return build


def _drop_b(t: dict[str, np.ndarray]) -> None:
    del t[peft_key(0, "k_proj", "B")]


def _rank_mismatch(t: dict[str, np.ndarray]) -> None:
    t[peft_key(0, "v_proj", "B")] = np.ones((192, 8), np.float32)


def _wrong_n_in(t: dict[str, np.ndarray]) -> None:
    t[peft_key(0, "down_proj", "A")] = np.ones((4, 2048), np.float32)


def _wrong_n_out(t: dict[str, np.ndarray]) -> None:
    t[peft_key(0, "k_proj", "B")] = np.ones((576, 4), np.float32)


def _layer_beyond_base(t: dict[str, np.ndarray]) -> None:
    t.update(lora_tensors(layers=(30,), modules=("q_proj",)))


def _unknown_module(t: dict[str, np.ndarray]) -> None:
    for side, shape in (("A", (4, 576)), ("B", (576, 4))):
        t[f"base_model.model.model.layers.0.self_attn.rotary.lora_{side}.weight"] = np.ones(
            shape, np.float32)


def _lm_head(t: dict[str, np.ndarray]) -> None:
    t["base_model.model.lm_head.lora_A.weight"] = np.ones((4, 576), np.float32)
    t["base_model.model.lm_head.lora_B.weight"] = np.ones((49152, 4), np.float32)


def _embedding(t: dict[str, np.ndarray]) -> None:
    t["base_model.model.model.embed_tokens.lora_embedding_A"] = np.ones((4, 49152), np.float32)
    t["base_model.model.model.embed_tokens.lora_embedding_B"] = np.ones((576, 4), np.float32)


def _magnitude(t: dict[str, np.ndarray]) -> None:
    t["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = np.ones(
        576, np.float32)


def _lora_bias(t: dict[str, np.ndarray]) -> None:
    t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"] = np.ones(576, np.float32)


def _saved_module(t: dict[str, np.ndarray]) -> None:
    t["base_model.model.model.norm.weight"] = np.ones(576, np.float32)


def _no_safetensors(root: Path, base: Path) -> tuple[Path, Path]:
    folder = write_peft_adapter(root / "adapter")
    (folder / "adapter_model.safetensors").unlink()
    return folder, base


def _pickle_only(root: Path, base: Path) -> tuple[Path, Path]:
    folder, _ = _no_safetensors(root, base)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04 pickle")
    return folder, base


def _corrupt_config(root: Path, base: Path) -> tuple[Path, Path]:
    folder = write_peft_adapter(root / "adapter")
    (folder / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ')
    return folder, base


def _no_config(root: Path, base: Path) -> tuple[Path, Path]:
    folder = write_peft_adapter(root / "adapter")
    (folder / "adapter_config.json").unlink()
    return folder, base


def _corrupt_safetensors(root: Path, base: Path) -> tuple[Path, Path]:
    folder = write_peft_adapter(root / "adapter")
    (folder / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    return folder, base


def _truncated_safetensors(root: Path, base: Path) -> tuple[Path, Path]:
    folder = write_peft_adapter(root / "adapter")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return folder, base


def _unknown_arch(root: Path, base: Path) -> tuple[Path, Path]:
    tiny = write_base_gguf(root / "gpt2.gguf", arch="gpt2", n_blocks=1)
    return write_peft_adapter(root / "adapter"), tiny


def _base_is_an_adapter(root: Path, base: Path) -> tuple[Path, Path]:
    folder = write_peft_adapter(root / "first")
    adapter = root / "first.gguf"
    convert_peft_adapter(folder, base, adapter)
    return write_peft_adapter(root / "adapter"), adapter


def _no_base(root: Path, base: Path) -> tuple[Path, Path]:
    return write_peft_adapter(root / "adapter"), root / "missing.gguf"


CASES: dict[str, tuple[Case, str]] = {
    "dora": (_with(use_dora=True), r"uses DoRA"),
    "dora-tensors": (_with_tensors(_magnitude), r"is a DoRA"),
    "modules_to_save": (_with(modules_to_save=["lm_head", "score"]),
                        r"modules_to_save: lm_head, score"),
    "lm_head-target": (_with(target_modules=["q_proj", "lm_head"]), r"output head \(lm_head\)"),
    "lm_head-tensor": (_with_tensors(_lm_head), r"changes lm_head"),
    "embedding-tensor": (_with_tensors(_embedding), r"token embeddings .*embed_tokens"),
    "bias": (_with(bias="lora_only"), r"bias='lora_only'"),
    "lora_bias": (_with(lora_bias=True), r"bias on lora_B"),
    "lora_bias-tensor": (_with_tensors(_lora_bias), r"biases on lora_B"),
    "pissa": (_with(init_lora_weights="pissa_niter_4"), r"pissa_niter_4.*base model's weights"),
    "not-lora": (_with(peft_type="IA3"), r"IA3 adapter, not a LoRA"),
    "alpha-zero": (_with(lora_alpha=0), r"lora_alpha is 0"),
    "half-pair": (_with_tensors(_drop_b), r"lora_A but no lora_B for model\.layers\.0\.self_attn"
                                          r"\.k_proj"),
    "rank-mismatch": (_with_tensors(_rank_mismatch), r"v_proj disagree on the rank"),
    "config-rank": (_with(r=8), r"proj has rank 4, but adapter_config\.json says 8"),
    "shape-n_in": (_with_tensors(_wrong_n_in), r"down_proj is 576×2048 .* but 576×1536"),
    "shape-n_out": (_with_tensors(_wrong_n_out), r"k_proj is 576×576 .* but 192×576"),
    "layer-missing": (_with_tensors(_layer_beyond_base), r"layers\.30\.self_attn\.q_proj, which"
                                                         r" .* does not have"),
    "module-unknown": (_with_tensors(_unknown_module), r"self_attn\.rotary, which"),
    "saved-module": (_with_tensors(_saved_module), r"not LoRA factors: .*model\.norm\.weight"),
    "no-safetensors": (_no_safetensors, r"has no adapter_model\.safetensors"),
    "pickle-only": (_pickle_only, r"adapter_model\.bin"),
    "corrupt-config": (_corrupt_config, r"adapter_config\.json cannot be read"),
    "config-type": (_with(r="eight"), r"r must be a positive whole number"),
    "no-config": (_no_config, r"has no adapter_config\.json"),
    "corrupt-safetensors": (_corrupt_safetensors, r"is damaged"),
    "truncated-safetensors": (_truncated_safetensors, r"outside the file"),
    "unknown-arch": (_unknown_arch, r"gpt2 architecture cannot be imported"),
    "base-is-adapter": (_base_is_an_adapter, r"is an adapter, not a base model"),
    "no-base": (_no_base, r"missing\.gguf does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusal(case: str, tmp_path: Path, builtin_model: Path) -> None:
    build, message = CASES[case]
    folder, base = build(tmp_path, builtin_model)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(AdapterError, match=message) as err:
        convert_peft_adapter(folder, base, out_dir / "adapter.gguf")
    assert err.value.hint, "every refusal says what to do"
    assert list(out_dir.iterdir()) == [], "nothing is left behind"


def test_refused_output_over_the_base_model(tmp_path: Path, builtin_model: Path) -> None:
    base = tmp_path / "model.gguf"
    shutil.copy(builtin_model, base)
    before = base.stat().st_size
    with pytest.raises(AdapterError, match="is the base model itself"):
        convert_peft_adapter(write_peft_adapter(tmp_path / "adapter"), base, base)
    assert base.stat().st_size == before


def test_an_existing_output_survives_a_refusal(tmp_path: Path, builtin_model: Path) -> None:
    out = tmp_path / "adapter.gguf"
    out.write_bytes(b"the user's older adapter")
    with pytest.raises(AdapterError):
        convert_peft_adapter(write_peft_adapter(tmp_path / "a", use_dora=True), builtin_model,
                             out)
    assert out.read_bytes() == b"the user's older adapter"
