"""llama.cpp sizes its buffers from the header alone (a sparse file, no weights read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.models.fit import FitRequest, ModelShape, kv_bytes_per_layer
from workbench.models.gguf import read_header
from workbench.models.measure import MeasureError, measure, parse_log, write_sparse_copy

RECORDED = [
    "llama_context:        CPU  output buffer size =     0.19 MiB\n",
    "llama_kv_cache: size =   45.00 MiB (  2048 cells,  30 layers,  1/1 seqs), K (f16): ...\n",
    "sched_reserve:      CUDA0 compute buffer size =   302.75 MiB\n",
    "sched_reserve:  CUDA_Host compute buffer size =    12.01 MiB\n",
]


def test_parse_log_reads_every_device() -> None:
    m = parse_log(RECORDED)
    assert m.kv_bytes == 45 * 2**20 and m.output_bytes == int(0.19 * 2**20)
    assert m.compute_bytes == {"CUDA0": int(302.75 * 2**20), "CUDA_Host": int(12.01 * 2**20)}


def test_sparse_copy_holds_only_the_header(tmp_path: Path, builtin_model: Path) -> None:
    header = read_header(builtin_model)
    sparse = tmp_path / "s.gguf"
    write_sparse_copy(header, builtin_model, sparse)
    assert sparse.stat().st_size == builtin_model.stat().st_size
    assert sparse.stat().st_blocks * 512 < 8 * 2**20  # the weights are a hole
    assert read_header(sparse).tensors == header.tensors


@pytest.mark.engine
def test_llama_cpp_sizes_the_builtin_model_from_its_header(builtin_model: Path) -> None:
    req = FitRequest(n_ctx=2048)
    sized = measure(builtin_model, req)
    shape = ModelShape.from_header(read_header(builtin_model))
    assert sized.kv_bytes == sum(kv_bytes_per_layer(shape, req))  # formula and llama.cpp agree
    # The n_vocab × n_ubatch logits dominate a small model's compute buffer.
    assert sized.compute_bytes["CPU"] > shape.n_vocab * 512 * 4
    with pytest.raises(MeasureError, match="flash_attn"):
        measure(builtin_model, FitRequest(n_ctx=2048, type_v="q8_0"))
