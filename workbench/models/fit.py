"""The fit planner: will this GGUF run on this machine, with what context and offload —
and where does the memory go?

Per device it adds up weights (per layer, plus the token embeddings that llama.cpp keeps
on the CPU and the output layer that `n_gpu_layers` offloads first), the KV cache per
layer (GQA heads, key/value widths, sliding-window layers), the output buffer, the
compute buffer and a runtime reserve. KV and compute come from formulas, or from
llama.cpp itself when `measure.py` sized them from the header (`no_alloc`); every figure
records which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workbench.models.gguf import GGUFHeader

MiB = 2**20
CTX_PAD = 256  # llama.cpp pads the context (and SWA cache sizes) to this many cells
# The engine process around a model: Python (24 MiB idle), llama.cpp's libraries, numpy,
# the vocabulary's tables and thread arenas. Calibrated with `python -m workbench.bench
# fit` on Linux x86_64 (RSS minus weights, KV and compute across its grid).
RUNTIME_RESERVE_CPU = 70 * MiB
# A GPU context (CUDA/ROCm/Metal runtime, kernels) takes memory before any buffer.
RUNTIME_RESERVE_GPU = 320 * MiB
BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
# Layer patterns of sliding-window models: layer i uses the window if i % p < p - 1.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "llama4": 4}


def pad(n: int, to: int = CTX_PAD) -> int:
    return (n + to - 1) // to * to


class FitError(Exception):
    """The header lacks what the planner needs (say which key)."""


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs from a GGUF header."""

    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    n_ctx_train: int
    sliding_window: int | None
    swa_layers: tuple[bool, ...]
    layer_bytes: tuple[int, ...]
    token_embd_bytes: int
    output_bytes: int  # the output.* tensors (projection and norm) in the file
    output_tied: bool  # no output.weight: the token embeddings double as the projection
    weights_bytes: int  # every tensor

    @property
    def other_bytes(self) -> int:
        """Weights outside the blocks and the output layer (embeddings, rope tables…):
        llama.cpp keeps them on the CPU."""
        return self.weights_bytes - sum(self.layer_bytes) - self.output_bytes

    @classmethod
    def from_header(cls, header: GGUFHeader) -> ModelShape:
        md, arch = header.metadata, header.architecture

        def num(key: str, default: Any = None) -> Any:
            value = md.get(f"{arch}.{key}", default)
            if value is None:
                raise FitError(f"The model's metadata lacks {arch}.{key}.")
            return value

        n_layer = int(num("block_count"))
        n_embd = int(num("embedding_length"))
        n_head = _first(num("attention.head_count"))
        kv = md.get(f"{arch}.attention.head_count_kv", n_head)
        heads_kv = _per_layer(kv, n_layer)
        head_k = int(md.get(f"{arch}.attention.key_length") or n_embd // max(n_head, 1))
        head_v = int(md.get(f"{arch}.attention.value_length") or head_k)
        vocab = md.get("tokenizer.ggml.tokens")
        n_vocab = int(getattr(vocab, "length", 0) or md.get(f"{arch}.vocab_size", 0))
        if not n_vocab:
            raise FitError("The model's metadata gives no vocabulary size.")
        window = md.get(f"{arch}.attention.sliding_window")
        swa = _swa_layers(md, arch, n_layer, window)
        per_layer = [0] * n_layer
        token_embd = output = 0
        for t in header.tensors:
            size = t.n_bytes or 0
            if t.name.startswith("blk."):
                index = int(t.name.split(".")[1])
                if index < n_layer:  # extra (MTP) blocks stay on the CPU side
                    per_layer[index] += size
            elif t.name.startswith("token_embd."):
                token_embd += size
            elif t.name.startswith("output"):
                output += size
        return cls(
            architecture=arch, n_layer=n_layer, n_embd=n_embd,
            n_ff=_first(md.get(f"{arch}.feed_forward_length", 4 * n_embd)), n_head=n_head,
            n_head_kv=heads_kv, head_dim_k=head_k, head_dim_v=head_v, n_vocab=n_vocab,
            n_ctx_train=int(md.get(f"{arch}.context_length", 4096)),
            sliding_window=int(window) if window else None, swa_layers=swa,
            layer_bytes=tuple(per_layer), token_embd_bytes=token_embd, output_bytes=output,
            output_tied=not any(t.name == "output.weight" for t in header.tensors),
            weights_bytes=sum(t.n_bytes or 0 for t in header.tensors),
        )


def _first(value: Any) -> int:
    head = getattr(value, "head", None)
    return int(max(head)) if head else int(value)


def _per_layer(value: Any, n_layer: int) -> tuple[int, ...]:
    head = getattr(value, "head", None)
    if head is not None:
        if len(head) == n_layer:
            return tuple(int(v) for v in head)
        # Only a prefix was kept by the reader: assume the largest for the rest (safe side).
        return tuple(int(v) for v in head) + (int(max(head)),) * (n_layer - len(head))
    return (int(value),) * n_layer


def _swa_layers(md: dict, arch: str, n_layer: int, window: Any) -> tuple[bool, ...]:
    if not window:
        return (False,) * n_layer
    pattern = md.get(f"{arch}.attention.sliding_window_pattern")
    head = getattr(pattern, "head", None)
    if head is not None and len(head) == n_layer:
        return tuple(bool(v) for v in head)
    p = int(pattern) if isinstance(pattern, int) and pattern > 0 else SWA_PATTERNS.get(arch)
    if p is None:  # every layer uses the window (Mistral-style)
        return (True,) * n_layer
    return tuple(i % p < p - 1 for i in range(n_layer))


@dataclass(frozen=True)
class FitRequest:
    n_ctx: int = 4096
    type_k: str = "f16"
    type_v: str = "f16"
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: bool = False
    n_gpu_layers: int | None = None  # None: the planner chooses; negative: all (llama.cpp)
    n_seq: int = 1


@dataclass(frozen=True)
class DeviceBudget:
    name: str
    kind: str  # "cpu" | "gpu"
    free_bytes: int
    shares_ram: bool = False  # unified memory: what the GPU uses, the CPU no longer has


@dataclass(frozen=True)
class Measured:
    """Buffer sizes llama.cpp reported for one configuration (see measure.py)."""

    kv_bytes: int
    compute_bytes: dict[str, int]  # device name ("CPU", "CUDA0", …) -> bytes
    output_bytes: int


@dataclass
class DeviceUse:
    device: str
    kind: str
    free_bytes: int
    layers: int = 0
    weights: int = 0
    kv: int = 0
    compute: int = 0
    output: int = 0
    reserve: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.output + self.reserve

    @property
    def fits(self) -> bool:
        return self.total <= self.free_bytes


@dataclass
class FitPlan:
    verdict: str  # "full_gpu" | "partial" | "cpu" | "wont_fit"
    n_gpu_layers: int
    request: FitRequest
    devices: list[DeviceUse]
    method: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    max_ctx: int = 0

    @property
    def summary(self) -> str:
        return {
            "full_gpu": "Fits entirely on the GPU",
            "partial": f"Fits with {self.n_gpu_layers} layers on the GPU, the rest on the CPU",
            "cpu": "Fits in system memory (CPU only)",
            "wont_fit": "Does not fit",
        }[self.verdict]


# ---------------------------------------------------------------- formulas


def kv_cells(shape: ModelShape, req: FitRequest, layer: int) -> int:
    n_ctx = pad(req.n_ctx)
    if shape.swa_layers[layer] and shape.sliding_window:
        # llama.cpp sizes a sliding-window layer's cache to the window plus one ubatch.
        return min(n_ctx, pad(shape.sliding_window * req.n_seq + req.n_ubatch))
    return n_ctx


def kv_bytes_per_layer(shape: ModelShape, req: FitRequest) -> list[int]:
    k_size, v_size = BYTES_PER_ELEMENT[req.type_k], BYTES_PER_ELEMENT[req.type_v]
    return [
        int(kv_cells(shape, req, i) * shape.n_head_kv[i]
            * (shape.head_dim_k * k_size + shape.head_dim_v * v_size))
        for i in range(shape.n_layer)
    ]


def compute_bytes_formula(shape: ModelShape, req: FitRequest) -> int:
    """The graph's scratch memory, approximated by its largest tensors: the logits of a
    full ubatch (n_vocab × n_ubatch floats — dominant for small models with big
    vocabularies), or without flash attention the attention scores over the whole
    context, plus one layer's activations."""
    ubatch = min(req.n_ubatch, req.n_batch)
    logits = shape.n_vocab * ubatch * 4
    scores = 0 if req.flash_attn else shape.n_head * ubatch * pad(req.n_ctx) * 4
    activations = ubatch * (2 * shape.n_embd + shape.n_ff) * 4
    return max(logits, scores) + activations


def cpu_resident_compute(shape: ModelShape, req: FitRequest) -> int:
    """The part of the CPU compute memory a chat really touches. On the CPU, memory is
    committed page by page as it is written: the worst-case logits (n_vocab × n_ubatch)
    that llama.cpp reserves are never written when only the last token's logits are
    asked for. Without flash attention the scores over the context are, and ggml-cpu
    also converts them to f16 for the value product in a work buffer of its own that
    llama.cpp's logged sizes leave out."""
    ubatch = min(req.n_ubatch, req.n_batch)
    logits = shape.n_vocab * req.n_seq * 4
    scores = 0 if req.flash_attn else shape.n_head * ubatch * pad(req.n_ctx) * 4
    activations = ubatch * (2 * shape.n_embd + shape.n_ff) * 4
    return max(logits, scores) + activations + scores // 2


def output_bytes(shape: ModelShape, req: FitRequest) -> int:
    return shape.n_vocab * 4 * req.n_seq


# ---------------------------------------------------------------- planning


def problems_of(shape: ModelShape, req: FitRequest) -> list[str]:
    problems = []
    if req.type_v != "f16" and not req.flash_attn:
        problems.append("A quantized V cache needs flash attention: turn flash attention on, "
                        "or keep the V cache at f16.")
    if req.n_ctx > shape.n_ctx_train:
        problems.append(f"The context ({req.n_ctx:,}) is longer than the model was trained "
                        f"on ({shape.n_ctx_train:,}); quality drops beyond it.")
    return problems


def layout(shape: ModelShape, req: FitRequest, n_gpu_layers: int,
           budgets: Sequence[DeviceBudget], measured: Measured | None = None) -> FitPlan:
    """Memory per device for one n_gpu_layers, as llama.cpp would place it."""
    cpu_budget = next(b for b in budgets if b.kind == "cpu")
    gpu_budgets = [b for b in budgets if b.kind == "gpu"]
    if n_gpu_layers < 0:  # llama.cpp's "all"
        n_gpu_layers = shape.n_layer + 1
    n_gpu_layers = min(n_gpu_layers, shape.n_layer + 1) if gpu_budgets else 0
    # llama.cpp: layers i >= n_layer + 1 - N are offloaded; "layer" n_layer is the output.
    first_gpu = shape.n_layer + 1 - n_gpu_layers
    on_gpu = [i >= first_gpu for i in range(shape.n_layer)]
    output_on_gpu = n_gpu_layers >= 1
    kv_layers = kv_bytes_per_layer(shape, req)
    method = {"weights": "tensor table", "kv": "formula", "compute": "formula",
              "output": "formula", "reserve": "constant"}
    if measured is not None:
        # llama.cpp's own total; split over layers in the formula's proportions.
        scale = measured.kv_bytes / max(sum(kv_layers), 1)
        kv_layers = [int(x * scale) for x in kv_layers]
        method["kv"] = "llama.cpp (no_alloc)"

    cpu = DeviceUse("CPU", "cpu", cpu_budget.free_bytes, reserve=RUNTIME_RESERVE_CPU)
    gpu = DeviceUse(" + ".join(b.name for b in gpu_budgets) or "GPU", "gpu",
                    sum(b.free_bytes for b in gpu_budgets),
                    reserve=RUNTIME_RESERVE_GPU * len(gpu_budgets) if n_gpu_layers else 0)
    cpu.weights = shape.other_bytes
    for i in range(shape.n_layer):
        target = gpu if on_gpu[i] else cpu
        target.layers += 1
        target.weights += shape.layer_bytes[i]
        target.kv += kv_layers[i]
    (gpu if output_on_gpu else cpu).weights += shape.output_bytes
    if shape.output_tied and output_on_gpu:
        gpu.weights += shape.token_embd_bytes  # a second copy of the embeddings, offloaded

    compute = compute_bytes_formula(shape, req)
    if not n_gpu_layers:
        # RAM: what becomes resident. (GPU memory is physical when allocated, so GPUs
        # below are charged the whole buffer.)
        cpu.compute = cpu_resident_compute(shape, req)
        method["compute"] = "formula (CPU pages a chat writes)"
    elif measured is not None and measured.compute_bytes:
        method["compute"] = "llama.cpp (no_alloc)"
        gpu.compute = sum(v for k, v in measured.compute_bytes.items() if k.upper() != "CPU")
        cpu.compute = measured.compute_bytes.get("CPU", 0)
    else:
        # The GPU holds the graph of its layers; the host keeps a small staging buffer
        # and, when the output stays on the CPU, the logits.
        gpu.compute = compute
        cpu.compute = min(req.n_ubatch, req.n_batch) * shape.n_embd * 4 * 2
        if not output_on_gpu:
            cpu.compute += shape.n_vocab * min(req.n_ubatch, req.n_batch) * 4
    cpu.output = measured.output_bytes if measured else output_bytes(shape, req)
    if measured is not None:
        method["output"] = "llama.cpp (no_alloc)"

    devices = [cpu] + ([gpu] if gpu_budgets else [])
    if any(b.shares_ram for b in gpu_budgets):
        # One pool of RAM: the CPU's share shrinks by what the GPU takes from it.
        cpu.free_bytes = max(cpu.free_bytes - gpu.total, 0)
    if not all(d.fits for d in devices):
        verdict = "wont_fit"
    elif n_gpu_layers >= shape.n_layer + 1:
        verdict = "full_gpu"
    elif n_gpu_layers > 0:
        verdict = "partial"
    else:
        verdict = "cpu"
    return FitPlan(verdict, n_gpu_layers, req, devices, method, problems_of(shape, req))


def plan(shape: ModelShape, req: FitRequest, budgets: Sequence[DeviceBudget],
         measured: Measured | None = None) -> FitPlan:
    """The verdict, the n_gpu_layers to load with, the breakdown and the largest context."""
    has_gpu = any(b.kind == "gpu" for b in budgets)
    if req.n_gpu_layers is not None or not has_gpu:
        chosen = layout(shape, req, req.n_gpu_layers or 0, budgets, measured)
    else:
        # As many layers on the GPU as fit: full offload first, then one fewer at a time.
        chosen = None
        for n in range(shape.n_layer + 1, -1, -1):
            candidate = layout(shape, req, n, budgets, measured)
            if candidate.verdict != "wont_fit":
                chosen = candidate
                break
        chosen = chosen or layout(shape, req, 0, budgets, measured)
    chosen.max_ctx = largest_context(shape, req, budgets, chosen.n_gpu_layers)
    return chosen


def largest_context(shape: ModelShape, req: FitRequest, budgets: Sequence[DeviceBudget],
                    n_gpu_layers: int) -> int:
    """The longest context (a multiple of 256, at most the trained length) that fits with
    this offload, by the formulas (0 if not even 256 fits)."""
    lo, hi = 0, max(shape.n_ctx_train // CTX_PAD, 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = layout(shape, replace(req, n_ctx=mid * CTX_PAD), n_gpu_layers, budgets)
        if trial.verdict != "wont_fit":
            lo = mid
        else:
            hi = mid - 1
    return lo * CTX_PAD


# Short labels for lists and tables.
VERDICT_LABELS = {"full_gpu": "fits on GPU", "partial": "partial offload", "cpu": "fits (CPU)",
                  "wont_fit": "too large"}


def budgets_from_snapshot(snapshot: Any | None) -> list[DeviceBudget]:
    """CPU: available RAM. GPUs: free memory (not total: another program may hold the
    rest), and only where the llama.cpp build can offload to them. With no snapshot yet,
    an unbounded CPU, so plans still show their breakdown."""
    if snapshot is None:
        return [DeviceBudget("CPU", "cpu", 1 << 62)]
    budgets = [DeviceBudget("CPU", "cpu", int(snapshot.memory.available_bytes))]
    llama = getattr(snapshot, "llama", None)
    if llama is not None and getattr(llama, "supports_gpu_offload", False):
        budgets += [DeviceBudget(g.name, "gpu", int(g.free_bytes), g.unified_memory)
                    for g in snapshot.gpus]
    return budgets


def fixes_for(shape: ModelShape, plan_: FitPlan, bits_per_weight: float) -> list[str]:
    """Concrete ways out when a configuration does not fit."""
    if plan_.verdict != "wont_fit":
        return []
    req = plan_.request
    fixes = []
    if plan_.max_ctx >= CTX_PAD:
        fixes.append(f"Use a context of {plan_.max_ctx:,} tokens or less.")
    if req.type_k == "f16":
        fixes.append("Store the KV cache as q8_0 (half the memory; needs flash attention "
                     "for the V cache).")
    if plan_.n_gpu_layers > 0:
        fixes.append("Offload fewer layers to the GPU.")
    if bits_per_weight > 5:
        smaller = shape.weights_bytes * 4.8 / bits_per_weight / MiB
        fixes.append(f"Pick a smaller quantization (about {smaller:,.0f} MiB at Q4_K_M).")
    return fixes
