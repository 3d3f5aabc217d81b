"""Small GGUF LoRA adapters written the way llama.cpp's convert_lora_to_gguf.py writes them.

numpy shapes are GGUF shapes reversed: for a base weight of GGUF shape [n_in, n_out],
lora_a is numpy (r, n_in) and lora_b numpy (n_out, r), as PEFT stores A and B.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np

from workbench.models.gguf import read_header


def base_shapes(model: Path) -> dict[str, tuple[int, ...]]:
    """GGUF shapes of the model's tensors, read from its header."""
    return {t.name: t.shape for t in read_header(model).tensors}


def write_lora(path: Path, targets: Mapping[str, tuple[int, ...]], *, rank: int = 8,
               alpha: float | None = None, std: float = 0.05, seed: int = 0,
               arch: str = "llama", general_type: str = "adapter",
               adapter_type: str = "lora") -> Path:
    """A LoRA with random A and B for each base tensor in `targets` (name -> GGUF shape).

    alpha defaults to the rank, so scale s applies s * B @ A unchanged.
    """
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", general_type)
    writer.add_string("adapter.type", adapter_type)
    writer.add_float32("adapter.lora.alpha", float(rank if alpha is None else alpha))
    for name, (n_in, n_out) in targets.items():
        a = rng.normal(0.0, std, size=(rank, n_in)).astype(np.float32)
        b = rng.normal(0.0, std, size=(n_out, rank)).astype(np.float32)
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def every_block(shapes: Mapping[str, tuple[int, ...]], weight: str) -> dict[str, tuple[int, ...]]:
    """`weight` (e.g. "attn_q") in every block: name -> GGUF shape."""
    suffix = f".{weight}.weight"
    return {n: s for n, s in shapes.items() if n.startswith("blk.") and n.endswith(suffix)}
