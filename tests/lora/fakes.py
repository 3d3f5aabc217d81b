"""Small synthetic PEFT adapters and GGUF files for the LoRA tests (numpy only, no torch)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import save_file

# The built-in SmolLM2-135M: 30 blocks, n_embd 576, 9 heads, 3 KV heads (head_dim 64).
N_EMBD, N_FF, N_HEAD, N_HEAD_KV, HEAD_DIM = 576, 1536, 9, 3, 64
KV_DIM = N_HEAD_KV * HEAD_DIM
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
# module -> (n_in, n_out) in the built-in model
SHAPES: dict[str, tuple[int, int]] = {
    "q_proj": (N_EMBD, N_EMBD), "k_proj": (N_EMBD, KV_DIM), "v_proj": (N_EMBD, KV_DIM),
    "o_proj": (N_EMBD, N_EMBD), "gate_proj": (N_EMBD, N_FF), "up_proj": (N_EMBD, N_FF),
    "down_proj": (N_FF, N_EMBD),
}
GGUF_NAME = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def module_path(layer: int, module: str) -> str:
    group = "self_attn" if module in ATTN else "mlp"
    return f"model.layers.{layer}.{group}.{module}"


def peft_key(layer: int, module: str, side: str) -> str:
    return f"base_model.model.{module_path(layer, module)}.lora_{side}.weight"


def peft_config(**overrides: Any) -> dict[str, Any]:
    """adapter_config.json as peft 0.13+ writes it (the fields that matter)."""
    config: dict[str, Any] = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
        "target_modules": list(ATTN + MLP), "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
        "layers_to_transform": None, "init_lora_weights": True, "inference_mode": True,
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    config.update(overrides)
    return config


def lora_tensors(layers: Iterable[int] = (0, 5, 29), modules: Iterable[str] = ATTN + MLP,
                 rank: int | dict[str, int] = 4, seed: int = 0,
                 dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Random lora_A (r, n_in) and lora_B (n_out, r) for each layer and module."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for layer in layers:
        for module in modules:
            r = rank[module] if isinstance(rank, dict) else rank
            n_in, n_out = SHAPES[module]
            tensors[peft_key(layer, module, "A")] = rng.standard_normal((r, n_in)).astype(dtype)
            tensors[peft_key(layer, module, "B")] = rng.standard_normal((n_out, r)).astype(dtype)
    return tensors


def write_peft_adapter(folder: Path, tensors: dict[str, np.ndarray] | None = None,
                       **config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(peft_config(**config)))
    save_file(lora_tensors() if tensors is None else tensors,
              str(folder / "adapter_model.safetensors"))
    return folder


def write_bf16_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file with bfloat16 tensors (numpy cannot write them): float32 values
    truncated to their top 16 bits, which the reader must widen back exactly."""
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        bits = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16)
        blob = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def bf16_round(array: np.ndarray) -> np.ndarray:
    """What a float32 array becomes after a trip through bfloat16 (truncation)."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) & 0xFFFF0000
    return bits.view(np.float32)


def write_base_gguf(path: Path, arch: str = "llama", n_blocks: int = 2, n_embd: int = 64,
                    n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128,
                    name: str = "Tiny", weights: dict[str, np.ndarray] | None = None) -> Path:
    """A small base model GGUF with llama tensor names (zeros unless `weights` given)."""
    head_dim = n_embd // n_head
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_block_count(n_blocks)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    shapes = {"attn_q": (n_embd, n_embd), "attn_k": (n_head_kv * head_dim, n_embd),
              "attn_v": (n_head_kv * head_dim, n_embd), "attn_output": (n_embd, n_embd),
              "ffn_gate": (n_ff, n_embd), "ffn_up": (n_ff, n_embd), "ffn_down": (n_embd, n_ff)}
    weights = weights or {}
    for block in range(n_blocks):
        for tname, shape in shapes.items():  # numpy shape (n_out, n_in)
            full = f"blk.{block}.{tname}.weight"
            writer.add_tensor(full, weights.get(full, np.zeros(shape, dtype=np.float32)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_adapter_gguf(path: Path, tensors: dict[str, np.ndarray], arch: str = "llama",
                       general_type: str = "adapter", adapter_type: str | None = "lora",
                       alpha: float | int | None = 8.0,
                       extra: dict[str, str] | None = None) -> Path:
    """A GGUF adapter written by hand, for the reader's refusals."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(general_type)
    if adapter_type is not None:
        writer.add_string("adapter.type", adapter_type)
    if isinstance(alpha, float):
        writer.add_float32("adapter.lora.alpha", alpha)
    elif isinstance(alpha, int):
        writer.add_int32("adapter.lora.alpha", alpha)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    """Tensor name -> numpy array (numpy shape, i.e. GGUF dims reversed)."""
    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data).reshape(tuple(reversed([int(d) for d in t.shape])))
            for t in reader.tensors}
