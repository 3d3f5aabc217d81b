"""Against the real thing: an adapter saved by PEFT for a tiny random Llama (needs the
`train` extra: torch, transformers, peft; skipped without them).

The converted adapter must change each GGUF weight exactly as PEFT changes the HF weight,
with q/k in llama.cpp's row order: scale·B'·A' == permute(PEFT's delta weight).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import extra_skip_reason

WITHOUT_TRAIN = extra_skip_reason("train")
peft = pytest.importorskip("peft", reason=WITHOUT_TRAIN)
torch = pytest.importorskip("torch", reason=WITHOUT_TRAIN)
transformers = pytest.importorskip("transformers", reason=WITHOUT_TRAIN)
# peft calls a transformers API that transformers 5 deprecates; not ours to fix.
pytestmark = [pytest.mark.train,
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")]

from tests.lora.fakes import read_gguf_tensors, write_base_gguf  # noqa: E402
from workbench.lora.gguf_lora import read_adapter  # noqa: E402
from workbench.lora.peft_config import read_peft_config  # noqa: E402
from workbench.lora.peft_import import (  # noqa: E402
    WEIGHTS_NAME,
    _collect,
    convert_peft_adapter,
    permute,
)
from workbench.lora.safetensors_io import read_safetensors  # noqa: E402

HIDDEN, HEADS, KV_HEADS, LAYERS, VOCAB, FFN = 64, 4, 2, 2, 256, 128
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
        "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def _hf_module(model: Any, layer: int, name: str) -> Any:
    block = model.base_model.model.model.layers[layer]
    return getattr(block.self_attn if name in TARGETS[:4] else block.mlp, name)


def _saved_adapter(folder: Path, **lora: Any) -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, vocab_size=VOCAB)
    base = transformers.LlamaForCausalLM(config)
    model = peft.get_peft_model(base, peft.LoraConfig(target_modules=TARGETS, **lora))
    with torch.no_grad():  # lora_B starts at zero: give the adapter something to do
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    model.save_pretrained(str(folder))
    return model


def _base_gguf(path: Path, model: Any) -> Path:
    """The tiny model's base weights as llama.cpp's converter stores them (q/k permuted)."""
    weights: dict[str, np.ndarray] = {}
    for layer in range(LAYERS):
        for name in TARGETS:
            w = _hf_module(model, layer, name).base_layer.weight.detach().numpy()
            if name == "q_proj":
                w = permute(w, HEADS, HEADS)
            elif name == "k_proj":
                w = permute(w, HEADS, KV_HEADS)
            weights[f"blk.{layer}.{GGUF[name]}.weight"] = w
    return write_base_gguf(path, n_blocks=LAYERS, n_embd=HIDDEN, n_head=HEADS,
                           n_head_kv=KV_HEADS, n_ff=FFN, weights=weights)


def test_config_reader_agrees_with_peft(tmp_path: Path) -> None:
    _saved_adapter(tmp_path, r=4, lora_alpha=16, use_rslora=True,
                   rank_pattern={"v_proj": 8}, alpha_pattern={"down_proj": 4})
    theirs = peft.LoraConfig.from_pretrained(str(tmp_path))
    ours = read_peft_config(tmp_path)
    assert (ours.r, ours.lora_alpha, ours.use_rslora, ours.use_dora) == (
        theirs.r, theirs.lora_alpha, theirs.use_rslora, theirs.use_dora)
    assert isinstance(ours.target_modules, tuple)
    assert set(ours.target_modules) == set(theirs.target_modules) == set(TARGETS)
    assert (ours.fan_in_fan_out, ours.bias) == (theirs.fan_in_fan_out, theirs.bias)
    assert dict(ours.rank_pattern) == theirs.rank_pattern
    assert dict(ours.alpha_pattern) == theirs.alpha_pattern
    assert ours.peft_type == "LORA" and ours.task_type == theirs.task_type
    assert ours.rank_for("model.layers.1.self_attn.v_proj") == 8
    assert ours.alpha_for("model.layers.0.mlp.down_proj") == 4


def test_saved_keys_and_shapes_are_understood(tmp_path: Path) -> None:
    _saved_adapter(tmp_path, r=4, lora_alpha=8)
    factors = _collect(read_safetensors(tmp_path / WEIGHTS_NAME))
    assert len(factors) == LAYERS * len(TARGETS)
    shapes = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, 32), "v_proj": (HIDDEN, 32),
              "o_proj": (HIDDEN, HIDDEN), "gate_proj": (HIDDEN, FFN), "up_proj": (HIDDEN, FFN),
              "down_proj": (FFN, HIDDEN)}
    for f in factors:
        assert f.a is not None and f.b is not None
        n_in, n_out = shapes[f.module.rsplit(".", 1)[-1]]
        assert f.a.shape == (4, n_in) and f.b.shape == (n_out, 4), f.module


@pytest.mark.parametrize("lora", [
    {"r": 4, "lora_alpha": 8},
    {"r": 4, "lora_alpha": 8, "use_rslora": True},
    {"r": 4, "lora_alpha": 8, "rank_pattern": {"v_proj": 8}, "alpha_pattern": {"down_proj": 2}},
], ids=["plain", "rslora", "patterns"])
def test_converted_adapter_changes_weights_as_peft_does(tmp_path: Path,
                                                        lora: dict[str, Any]) -> None:
    model = _saved_adapter(tmp_path / "adapter", **lora)
    base = _base_gguf(tmp_path / "tiny.gguf", model)
    out = tmp_path / "tiny-lora.gguf"
    info = convert_peft_adapter(tmp_path / "adapter", base, out)
    tensors = read_gguf_tensors(out)
    for layer in range(LAYERS):
        for name in TARGETS:
            module = _hf_module(model, layer, name)
            with torch.no_grad():
                delta = module.get_delta_weight("default").numpy()
            if name == "q_proj":
                delta = permute(delta, HEADS, HEADS)
            elif name == "k_proj":
                delta = permute(delta, HEADS, KV_HEADS)
            prefix = f"blk.{layer}.{GGUF[name]}.weight"
            a, b = tensors[f"{prefix}.lora_a"], tensors[f"{prefix}.lora_b"]
            scale = info.alpha / b.shape[1]  # what llama.cpp applies at strength 1
            np.testing.assert_allclose(scale * b @ a, delta, rtol=1e-4, atol=1e-5,
                                       err_msg=prefix)
    assert read_adapter(out).n_layers_touched == LAYERS
