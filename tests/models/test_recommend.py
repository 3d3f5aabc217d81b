"""Fit verdicts for a repository's files from one header, and the picks, on hand-made
shapes: a 10-layer model whose Q4 file holds 1,200 MiB of weights."""

from __future__ import annotations

import pytest

from workbench.models.fit import DeviceBudget, FitRequest, ModelShape, plan
from workbench.models.hub import GGUFFile, nominal_bits_per_weight
from workbench.models.recommend import fit_labels, recommend, scaled_shape

MiB = 2**20
GiB = 2**30
N_LAYER = 10
HEADER = 5 * MiB  # metadata and vocabulary: the same in every quantization


def shape_with(layer: int, embd: int, output: int) -> ModelShape:
    return ModelShape(
        architecture="llama", n_layer=N_LAYER, n_embd=512, n_ff=1024, n_head=8,
        n_head_kv=(8,) * N_LAYER, head_dim_k=64, head_dim_v=64, n_vocab=1000,
        n_ctx_train=4096, sliding_window=None, swa_layers=(False,) * N_LAYER,
        layer_bytes=(layer,) * N_LAYER, token_embd_bytes=embd, output_bytes=output,
        output_tied=False, weights_bytes=layer * N_LAYER + embd + output)


REF = shape_with(100 * MiB, 100 * MiB, 100 * MiB)  # read from the Q4 file
REF_SIZE = REF.weights_bytes + HEADER


def gguf_file(quant: str, weight_factor: float) -> GGUFFile:
    name = f"Model-{quant}.gguf"
    size = int(REF.weights_bytes * weight_factor) + HEADER
    return GGUFFile(name, (name,), size, (None,), quant, nominal_bits_per_weight(quant))


Q2, Q4, Q8, F16 = (gguf_file("Q2_K", 0.75), gguf_file("Q4_K_M", 1.0), gguf_file("Q8_0", 2.0),
                   gguf_file("F16", 4.0))
FILES = [F16, Q2, Q8, Q4]  # any order
REQ = FitRequest(n_ctx=1024)


def machine(gpu_mib: int | None, ram_mib: int = 16 * 1024) -> list[DeviceBudget]:
    budgets = [DeviceBudget("CPU", "cpu", ram_mib * MiB)]
    if gpu_mib is not None:
        budgets.append(DeviceBudget("GPU0", "gpu", gpu_mib * MiB))
    return budgets


def test_scaling_keeps_the_architecture_and_scales_the_weights() -> None:
    q8 = scaled_shape(REF, REF_SIZE, Q8.size)
    assert q8.layer_bytes == (200 * MiB,) * N_LAYER
    assert (q8.token_embd_bytes, q8.output_bytes) == (200 * MiB, 200 * MiB)
    assert q8.weights_bytes == 2 * REF.weights_bytes and q8.other_bytes == 2 * REF.other_bytes
    assert (q8.n_layer, q8.n_head_kv, q8.n_vocab) == (REF.n_layer, REF.n_head_kv, REF.n_vocab)
    assert scaled_shape(REF, REF_SIZE, REF_SIZE) is REF
    # A file no larger than the header carries no weights, not negative ones.
    assert scaled_shape(REF, REF_SIZE, HEADER // 2).weights_bytes == 0


def test_the_reference_file_gets_the_plain_plan() -> None:
    budgets = machine(gpu_mib=2000)
    labels = fit_labels(REF, REF_SIZE, [Q4], REQ, budgets)
    direct = plan(REF, REQ, budgets)
    assert labels[Q4.filename].verdict == direct.verdict
    assert labels[Q4.filename].devices == direct.devices


def test_gpu_machine_full_and_partial() -> None:
    # 2,000 MiB of GPU: Q2 and Q4 fit whole; Q8 and F16 only with some layers on the CPU.
    labels = fit_labels(REF, REF_SIZE, FILES, REQ, machine(gpu_mib=2000))
    assert {f.quant: labels[f.filename].verdict for f in FILES} == {
        "Q2_K": "full_gpu", "Q4_K_M": "full_gpu", "Q8_0": "partial", "F16": "partial"}
    assert labels[F16.filename].n_gpu_layers < labels[Q8.filename].n_gpu_layers
    pick = recommend(labels, FILES)
    assert (pick.best_full, pick.best_partial) == (Q4, F16)


def test_cpu_only_machine_counts_cpu_as_whole() -> None:
    # 3,000 MiB of RAM and no GPU: up to Q8 runs; F16 does not fit at all.
    labels = fit_labels(REF, REF_SIZE, FILES, REQ, machine(gpu_mib=None, ram_mib=3000))
    assert labels[Q8.filename].verdict == "cpu" and labels[F16.filename].verdict == "wont_fit"
    pick = recommend(labels, FILES)
    assert (pick.best_full, pick.best_partial) == (Q8, None)


def test_cpu_verdict_with_a_gpu_is_not_a_whole_fit() -> None:
    # A GPU too small for even its runtime: everything lands on the CPU, which is a
    # fallback on this machine, not a recommendation to run whole.
    labels = fit_labels(REF, REF_SIZE, FILES, REQ, machine(gpu_mib=100, ram_mib=3000))
    assert labels[Q4.filename].verdict == "cpu"
    assert recommend(labels, FILES) == recommend({}, FILES)
    assert recommend({}, FILES).best_full is None and recommend({}, FILES).best_partial is None


@pytest.mark.parametrize("gpu_mib", [2000, 4000, 10_000])
def test_more_memory_never_recommends_less(gpu_mib: int) -> None:
    labels = fit_labels(REF, REF_SIZE, FILES, REQ, machine(gpu_mib=gpu_mib))
    pick = recommend(labels, FILES)
    assert pick.best_full is not None
    smaller = recommend(fit_labels(REF, REF_SIZE, FILES, REQ, machine(gpu_mib=gpu_mib // 2)),
                        FILES).best_full
    assert smaller is None or smaller.size <= pick.best_full.size
    if gpu_mib == 10_000:  # everything fits: the most precise file, nothing to split
        assert pick.best_full == F16 and pick.best_partial is None
