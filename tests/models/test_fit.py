"""The fit planner's arithmetic on small GGUFs written here, checked by hand."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from workbench.hardware.snapshot import (
    CpuInfo,
    GpuInfo,
    HardwareSnapshot,
    LlamaBuild,
    MemoryInfo,
)
from workbench.models.fit import (
    RUNTIME_RESERVE_CPU,
    RUNTIME_RESERVE_GPU,
    DeviceBudget,
    FitRequest,
    ModelShape,
    budgets_from_snapshot,
    compute_bytes_formula,
    fixes_for,
    kv_bytes_per_layer,
    kv_cells,
    layout,
    plan,
)
from workbench.models.gguf import read_header

MiB = 2**20
N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF, N_VOCAB = 4, 64, 8, 2, 8, 128, 100


def write_model(path: Path, arch: str = "llama", window: int | None = None,
                tied: bool = False) -> Path:
    """A tiny model with grouped-query attention: 8 query heads share 2 KV heads."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(N_LAYER)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_context_length(8192)
    if window:
        w.add_sliding_window(window)
    w.add_token_list([f"t{i}".encode() for i in range(N_VOCAB)])
    w.add_tensor("token_embd.weight", np.zeros((N_VOCAB, N_EMBD), np.float32))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((N_EMBD, N_EMBD), np.float32))
        w.add_tensor(f"blk.{i}.attn_k.weight", np.zeros((16, N_EMBD), np.float32))
        w.add_tensor(f"blk.{i}.attn_v.weight", np.zeros((16, N_EMBD), np.float32))
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((N_FF, N_EMBD), np.float32))
    w.add_tensor("output_norm.weight", np.zeros(N_EMBD, np.float32))
    if not tied:
        w.add_tensor("output.weight", np.zeros((N_VOCAB, N_EMBD), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


LAYER_BYTES = 4 * N_EMBD * (N_EMBD + 16 + 16 + N_FF)  # f32 weights of one block
EMBD_BYTES = 4 * N_VOCAB * N_EMBD
OUTPUT_BYTES = EMBD_BYTES + 4 * N_EMBD  # projection + norm


@pytest.fixture
def shape(tmp_path: Path) -> ModelShape:
    return ModelShape.from_header(read_header(write_model(tmp_path / "gqa.gguf")))


def test_shape_from_a_gqa_header(shape: ModelShape) -> None:
    assert (shape.n_layer, shape.n_head, shape.n_head_kv) == (N_LAYER, N_HEAD, (2, 2, 2, 2))
    assert (shape.head_dim_k, shape.n_vocab, shape.output_tied) == (HEAD_DIM, N_VOCAB, False)
    assert shape.layer_bytes == (LAYER_BYTES,) * N_LAYER
    assert shape.output_bytes == OUTPUT_BYTES and shape.other_bytes == EMBD_BYTES


def test_kv_cache_per_layer_by_hand(shape: ModelShape) -> None:
    # 256 cells × 2 KV heads × 8 dims × (2 bytes K + 2 bytes V)
    assert kv_bytes_per_layer(shape, FitRequest(n_ctx=256)) == [256 * 2 * 8 * 4] * 4
    # 300 is padded to 512 cells, as llama.cpp does.
    assert kv_bytes_per_layer(shape, FitRequest(n_ctx=300))[0] == 512 * 2 * 8 * 4
    # q8_0 stores 32 values in 34 bytes.
    q8 = FitRequest(n_ctx=256, type_k="q8_0", type_v="q8_0", flash_attn=True)
    assert kv_bytes_per_layer(shape, q8)[0] == int(256 * 2 * 8 * 2 * 34 / 32)


def test_sliding_window_layers_keep_a_short_cache(tmp_path: Path) -> None:
    # gemma2 alternates: even layers use the 128-token window, odd layers see everything.
    shape = ModelShape.from_header(read_header(
        write_model(tmp_path / "swa.gguf", arch="gemma2", window=128)))
    assert shape.swa_layers == (True, False, True, False)
    req = FitRequest(n_ctx=4096, n_ubatch=512)
    assert [kv_cells(shape, req, i) for i in range(4)] == [768, 4096, 768, 4096]
    small = FitRequest(n_ctx=512, n_ubatch=512)
    assert kv_cells(shape, small, 0) == 512  # never more than the context itself


def test_cpu_only_plan_and_its_breakdown(shape: ModelShape) -> None:
    req = FitRequest(n_ctx=1024)
    result = plan(shape, req, [DeviceBudget("CPU", "cpu", 1 << 34)])
    assert (result.verdict, result.n_gpu_layers) == ("cpu", 0)
    cpu = result.devices[0]
    assert cpu.weights == EMBD_BYTES + N_LAYER * LAYER_BYTES + OUTPUT_BYTES
    assert cpu.kv == sum(kv_bytes_per_layer(shape, req)) and cpu.reserve == RUNTIME_RESERVE_CPU
    assert cpu.output == N_VOCAB * 4
    assert result.max_ctx == 8192  # bounded by the trained context
    assert result.method["weights"] == "tensor table" and "formula" in result.method["kv"]


def test_largest_context_and_fixes_when_memory_is_short(shape: ModelShape) -> None:
    fixed = layout(shape, FitRequest(n_ctx=256), 0, [DeviceBudget("CPU", "cpu", 1 << 40)])
    # Enough RAM for about 2,000 cells of KV cache beyond the rest.
    budget = fixed.devices[0].total - fixed.devices[0].kv + 2000 * 4 * 2 * 8 * 4
    result = plan(shape, FitRequest(n_ctx=8192), [DeviceBudget("CPU", "cpu", budget)])
    assert result.verdict == "wont_fit"
    assert 256 <= result.max_ctx < 8192 and result.max_ctx % 256 == 0
    fits = plan(shape, FitRequest(n_ctx=result.max_ctx), [DeviceBudget("CPU", "cpu", budget)])
    assert fits.verdict == "cpu"
    over = plan(shape, FitRequest(n_ctx=result.max_ctx + 256),
                [DeviceBudget("CPU", "cpu", budget)])
    assert over.verdict == "wont_fit"
    fixes = fixes_for(shape, result, bits_per_weight=32)
    assert any(f"{result.max_ctx:,}" in f for f in fixes) and any("q8_0" in f for f in fixes)


def test_gpu_offload_puts_the_output_layer_first(shape: ModelShape) -> None:
    req = FitRequest(n_ctx=512, flash_attn=True)
    big = [DeviceBudget("CPU", "cpu", 1 << 34), DeviceBudget("GPU0", "gpu", 1 << 34)]
    full = plan(shape, req, big)
    assert (full.verdict, full.n_gpu_layers) == ("full_gpu", N_LAYER + 1)
    cpu, gpu = full.devices
    assert cpu.weights == EMBD_BYTES  # the token embeddings stay on the CPU
    assert gpu.weights == N_LAYER * LAYER_BYTES + OUTPUT_BYTES and gpu.layers == N_LAYER
    assert gpu.compute == compute_bytes_formula(shape, req)
    # n_gpu_layers = 1 offloads only the output layer.
    one = layout(shape, req, 1, big)
    assert one.devices[1].weights == OUTPUT_BYTES and one.devices[1].layers == 0
    # A GPU with room for exactly the output layer and the last two blocks: partial, N = 3.
    three = layout(shape, req, 3, big).devices[1]
    tight = [big[0], DeviceBudget("GPU0", "gpu", three.total)]
    partial = plan(shape, req, tight)
    assert (partial.verdict, partial.n_gpu_layers) == ("partial", 3)
    assert partial.devices[1].layers == 2 and partial.devices[1].reserve == RUNTIME_RESERVE_GPU


def test_tied_embeddings_are_copied_only_when_the_output_is_offloaded(tmp_path: Path) -> None:
    shape = ModelShape.from_header(read_header(write_model(tmp_path / "t.gguf", tied=True)))
    assert shape.output_tied and shape.output_bytes == 4 * N_EMBD
    big = [DeviceBudget("CPU", "cpu", 1 << 34), DeviceBudget("GPU0", "gpu", 1 << 34)]
    req = FitRequest(n_ctx=256)
    assert layout(shape, req, 0, big).devices[0].weights == EMBD_BYTES + 4 * LAYER_BYTES + \
        4 * N_EMBD
    assert layout(shape, req, 1, big).devices[1].weights == 4 * N_EMBD + EMBD_BYTES


def test_problems_are_named(shape: ModelShape) -> None:
    result = plan(shape, FitRequest(n_ctx=16384, type_v="q8_0"),
                  [DeviceBudget("CPU", "cpu", 1 << 34)])
    text = " ".join(result.problems)
    assert "flash attention" in text and "trained" in text


def snapshot(gpus: tuple[GpuInfo, ...], offload: bool = True) -> HardwareSnapshot:
    return HardwareSnapshot(
        os="Linux", os_version="6", machine="x86_64",
        cpu=CpuInfo("cpu", 8, 16, ("avx2",)), memory=MemoryInfo(32 << 30, 20 << 30),
        gpus=gpus, llama=LlamaBuild(offload, (), ""))


def gpu(name: str, total: int, free: int, unified: bool = False) -> GpuInfo:
    return GpuInfo(vendor="nvidia", index=0, name=name, total_bytes=total, free_bytes=free,
                   used_bytes=total - free, driver="", unified_memory=unified)


def test_budgets_use_free_not_total_memory() -> None:
    budgets = budgets_from_snapshot(snapshot((gpu("A", 24 << 30, 23 << 30),
                                              gpu("B", 24 << 30, 4 << 30))))
    assert [(b.kind, b.free_bytes) for b in budgets] == [
        ("cpu", 20 << 30), ("gpu", 23 << 30), ("gpu", 4 << 30)]
    # A CPU-only llama.cpp build cannot use the GPUs at all.
    assert len(budgets_from_snapshot(snapshot((gpu("A", 8 << 30, 8 << 30),), False))) == 1


def test_unified_memory_is_one_pool(shape: ModelShape) -> None:
    apple = budgets_from_snapshot(snapshot((gpu("Apple M3", 24 << 30, 1 << 30, True),)))
    assert apple[1].shares_ram
    result = plan(shape, FitRequest(n_ctx=512), apple)
    cpu, gpu_use = result.devices
    assert cpu.free_bytes == (20 << 30) - gpu_use.total  # the GPU's use leaves the CPU less


def test_builtin_model_fits_on_this_machine(builtin_model: Path) -> None:
    from workbench.hardware import probe

    shape = ModelShape.from_header(read_header(builtin_model))
    result = plan(shape, FitRequest(n_ctx=2048), budgets_from_snapshot(probe()))
    assert result.verdict in ("cpu", "full_gpu", "partial")
    assert 150 * MiB < result.devices[0].total + sum(d.total for d in result.devices[1:]) \
        < 1024 * MiB


def test_negative_gpu_layers_mean_all_as_in_llama_cpp(shape: ModelShape) -> None:
    big = [DeviceBudget("CPU", "cpu", 1 << 34), DeviceBudget("GPU0", "gpu", 1 << 34)]
    assert plan(shape, FitRequest(n_ctx=256, n_gpu_layers=-1), big).verdict == "full_gpu"
    assert plan(shape, FitRequest(n_ctx=256, n_gpu_layers=0), big).verdict == "cpu"


def test_unknown_hardware_still_plans_and_labels_are_shared(shape: ModelShape) -> None:
    from workbench.models.fit import VERDICT_LABELS

    budgets = budgets_from_snapshot(None)  # before the first probe answers
    assert [b.kind for b in budgets] == ["cpu"]
    assert plan(shape, FitRequest(n_ctx=256), budgets).verdict == "cpu"
    assert set(VERDICT_LABELS) == {"full_gpu", "partial", "cpu", "wont_fit"}


def test_bits_per_weight_of_a_file(builtin_model: Path) -> None:
    header = read_header(builtin_model)
    assert header.bits_per_weight == 8 * header.file_size / header.n_params
    assert 5.0 < header.bits_per_weight < 6.5  # Q4_1 plus its f32 norms and metadata
