"""Numbers for the explainer's live demos, computed from the loaded model's own header:
KV cache memory, what other quantizations would weigh, LoRA's trainable parameters from
the real tensor shapes, and the causal attention mask. (The next-token distribution,
tokenizer and perplexity demos ask the engine.)"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.models.fit import BYTES_PER_ELEMENT, FitRequest, ModelShape, kv_bytes_per_layer
from workbench.models.gguf import GGUFHeader, describe_quantization
from workbench.models.hub import nominal_bits_per_weight

# The types shown beside the loaded file (their typical bits per weight come from
# models.hub; a real file mixes types, so its own figure differs a little).
COMPARED_TYPES = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
LORA_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                "ffn_down")


@dataclass(frozen=True)
class KvCacheDemo:
    n_ctx: int
    cache_type: str
    total_bytes: int
    bytes_per_token: float
    used_tokens: int

    @property
    def used_bytes(self) -> int:
        return int(self.used_tokens * self.bytes_per_token)


def kv_cache(shape: ModelShape, n_ctx: int, cache_type: str = "f16",
             used_tokens: int = 0) -> KvCacheDemo:
    """The cache llama.cpp allocates at this context and type, and what this chat fills."""
    req = FitRequest(n_ctx=n_ctx, type_k=cache_type, type_v=cache_type,
                     flash_attn=cache_type != "f16")
    total = sum(kv_bytes_per_layer(shape, req))
    per_token = sum(shape.n_head_kv[i] * (shape.head_dim_k + shape.head_dim_v)
                    * BYTES_PER_ELEMENT[cache_type] for i in range(shape.n_layer))
    return KvCacheDemo(n_ctx, cache_type, total, per_token, min(used_tokens, n_ctx))


@dataclass(frozen=True)
class QuantDemo:
    current_type: str
    current_bpw: float
    current_bytes: int
    n_params: int
    alternatives: tuple[tuple[str, float, int], ...]  # (type, bits per weight, bytes)


def quantization(header: GGUFHeader) -> QuantDemo:
    """Bits per weight of the loaded file, and the size other quantizations would have."""
    n_params = header.n_params
    weights = sum(t.n_bytes or 0 for t in header.tensors)
    alternatives = tuple((name, bpw, int(n_params * bpw / 8)) for name in COMPARED_TYPES
                         if (bpw := nominal_bits_per_weight(name)) is not None)
    return QuantDemo(describe_quantization(header), 8 * weights / max(n_params, 1), weights,
                     n_params, alternatives)


@dataclass(frozen=True)
class LoraDemo:
    rank: int
    targets: tuple[str, ...]
    trainable: int
    base_params: int
    per_target: tuple[tuple[str, int], ...]

    @property
    def share(self) -> float:
        return self.trainable / max(self.base_params, 1)


def lora_parameters(header: GGUFHeader, rank: int,
                    targets: tuple[str, ...] = ("attn_q", "attn_v")) -> LoraDemo:
    """LoRA adds B (out × r) and A (r × in) beside each targeted matrix W (out × in):
    r·(in + out) trainable numbers per matrix, per layer. Shapes come from the file
    (GGUF stores a weight as ne = [in, out])."""
    per_target: dict[str, int] = {}
    for t in header.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets \
                and parts[3] == "weight" and len(t.shape) == 2:
            n_in, n_out = t.shape
            per_target[parts[2]] = per_target.get(parts[2], 0) + rank * (n_in + n_out)
    return LoraDemo(rank, targets, sum(per_target.values()), header.n_params,
                    tuple(sorted(per_target.items())))


def causal_mask(n_tokens: int) -> list[list[bool]]:
    """mask[i][j]: may token i attend to token j? Only to itself and earlier tokens."""
    return [[j <= i for j in range(n_tokens)] for i in range(n_tokens)]
