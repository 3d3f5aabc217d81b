"""Reading GGUF LoRA adapters and checking them against a base model."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.lora.fakes import write_adapter_gguf
from workbench.lora.gguf_lora import (
    AdapterError,
    LoraPair,
    check_compatible,
    friendly_target,
    read_adapter,
)
from workbench.models.gguf import GGUFHeader, TensorInfo


def _pair(n_in: int, n_out: int, rank: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return (np.ones((rank, n_in), dtype=np.float32), np.ones((n_out, rank), dtype=np.float32))


def _adapter(path: Path, targets: dict[str, tuple[int, int]], rank: int = 2,
             **kwargs: object) -> Path:
    tensors: dict[str, np.ndarray] = {}
    for name, (n_in, n_out) in targets.items():
        tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"] = _pair(n_in, n_out, rank)
    return write_adapter_gguf(path, tensors, **kwargs)  # type: ignore[arg-type]


def test_read_converted_adapter(converted: Path) -> None:
    info = read_adapter(converted)
    assert info.architecture == "llama"
    assert info.alpha == 8.0 and info.rank == 4 and not info.ranks_differ
    assert info.target_modules == ("attn_k", "attn_output", "attn_q", "attn_v",
                                   "ffn_down", "ffn_gate", "ffn_up")
    assert info.n_layers_touched == 3 and len(info.tensors) == 21
    # Per layer: r·(n_in + n_out) for each module.
    per_layer = 4 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 2 + (1536 + 576))
    assert info.n_params == 3 * per_layer
    assert info.name == "smol-lora"
    assert info.base_model_name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert info.file_size == converted.stat().st_size
    q = next(t for t in info.tensors if t.base_name == "blk.5.attn_q.weight")
    assert q == LoraPair("blk.5.attn_q.weight", (576, 4), (4, 576)) and q.rank == 4
    k = next(t for t in info.tensors if t.base_name == "blk.0.attn_k.weight")
    assert k.lora_a_shape == (576, 4) and k.lora_b_shape == (4, 192)


def test_scale_and_share(converted: Path, base_header: GGUFHeader) -> None:
    info = read_adapter(converted)
    assert info.scale_at(1.0) == pytest.approx(2.0)  # s·α/r = 1·8/4
    assert info.scale_at(0.5) == pytest.approx(1.0)
    assert dataclasses.replace(info, alpha=0.0).scale_at(0.7) == pytest.approx(0.7)
    share = info.share_of(base_header.n_params)
    assert share == pytest.approx(info.n_params / base_header.n_params) and 0 < share < 0.01
    assert info.share_of(0) == 0.0


def test_converted_adapter_fits_the_builtin_model(converted: Path,
                                                  base_header: GGUFHeader) -> None:
    assert check_compatible(read_adapter(converted), base_header) == []


def test_friendly_targets() -> None:
    assert friendly_target("blk.12.ffn_down.weight") == "ffn_down"
    assert friendly_target("token_embd.weight") == "token_embd"
    assert friendly_target("output.weight") == "output"


def test_ranks_that_differ_are_noted(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray] = {}
    for name, rank in (("blk.0.attn_q.weight", 2), ("blk.0.attn_v.weight", 8)):
        tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"] = _pair(576, 576, rank)
    info = read_adapter(write_adapter_gguf(tmp_path / "a.gguf", tensors))
    assert info.rank == 8 and info.min_rank == 2 and info.ranks_differ
    assert any("Ranks differ" in note for note in info.notes)
    assert info.scale_at(1.0) == pytest.approx(1.0)  # α/r_max = 8/8


def test_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "adapter.gguf"
    bogus.write_text("just text, not an adapter\n" * 4)
    with pytest.raises(AdapterError, match="not a GGUF file") as err:
        read_adapter(bogus)
    assert "PEFT adapter folder" in err.value.hint


def test_old_ggla_format(tmp_path: Path) -> None:
    old = tmp_path / "old.bin"
    old.write_bytes(b"algg" + bytes(64))
    with pytest.raises(AdapterError, match="old format"):
        read_adapter(old)


def test_peft_folder_given_instead(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match="PEFT adapter folder") as err:
        read_adapter(tmp_path)
    assert "Import" in err.value.hint


def test_a_model_is_not_an_adapter(builtin_model: Path) -> None:
    with pytest.raises(AdapterError, match=r"is a model, not a LoRA adapter.*'model'") as err:
        read_adapter(builtin_model)
    assert "model itself is chosen separately" in err.value.hint


def test_an_old_model_without_general_type_is_named_a_model(tmp_path: Path) -> None:
    path = tmp_path / "old-model.gguf"
    writer = gguf.GGUFWriter(path, "llama")  # no general.type, plain weights
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(AdapterError, match="is a model, not a LoRA adapter"):
        read_adapter(path)


def test_another_kind_of_gguf_is_not_an_adapter(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (576, 576)},
                    general_type="mmproj")
    with pytest.raises(AdapterError, match=r"general\.type is 'mmproj'") as err:
        read_adapter(path)
    assert err.value.hint


def test_a_missing_file(tmp_path: Path) -> None:
    gone = tmp_path / "gone.gguf"
    with pytest.raises(AdapterError, match="does not exist") as err:
        read_adapter(gone)
    assert str(gone) in err.value.message and "moved or deleted" in err.value.hint


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_not_a_regular_file(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.gguf"
    os.mkfifo(pipe)  # opening it to read the magic would block
    with pytest.raises(AdapterError, match="is not a file"):
        read_adapter(pipe)


def test_no_lora_tensors(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="contains no LoRA tensors"):
        read_adapter(write_adapter_gguf(tmp_path / "empty.gguf", {}))


def test_an_adapter_that_is_not_a_lora(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "cv.gguf", {"blk.0.attn_q.weight": (576, 576)},
                    adapter_type="control_vector")
    with pytest.raises(AdapterError, match=r"not a LoRA .*control_vector"):
        read_adapter(path)


def test_lora_a_without_lora_b(tmp_path: Path) -> None:
    a, _ = _pair(576, 576)
    path = write_adapter_gguf(tmp_path / "half.gguf", {"blk.0.attn_q.weight.lora_a": a})
    with pytest.raises(AdapterError, match=r"blk\.0\.attn_q\.weight\.lora_a without .*lora_b"):
        read_adapter(path)


def test_factors_that_disagree_on_rank(tmp_path: Path) -> None:
    a, _ = _pair(576, 576, rank=2)
    _, b = _pair(576, 576, rank=4)
    path = write_adapter_gguf(tmp_path / "bad.gguf", {"blk.0.attn_q.weight.lora_a": a,
                                                      "blk.0.attn_q.weight.lora_b": b})
    with pytest.raises(AdapterError, match="disagree on the rank"):
        read_adapter(path)


def test_unexpected_tensor(tmp_path: Path) -> None:
    path = write_adapter_gguf(tmp_path / "x.gguf", {"blk.0.attn_q.weight": np.ones((4, 4),
                                                                                   np.float32)})
    with pytest.raises(AdapterError, match=r"neither \.lora_a nor \.lora_b"):
        read_adapter(path)


def test_norm_tensors_are_skipped_like_llama_cpp(tmp_path: Path) -> None:
    tensors = dict(zip(("blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"),
                       _pair(576, 576), strict=True))
    tensors["blk.0.attn_norm.weight"] = np.ones(576, np.float32)
    info = read_adapter(write_adapter_gguf(tmp_path / "n.gguf", tensors))
    assert len(info.tensors) == 1 and any("norm" in note for note in info.notes)


def test_truncated_adapter(converted: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = converted.read_bytes()
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(AdapterError, match="truncated") as err:
        read_adapter(cut)
    assert err.value.hint


def test_alpha_that_llama_cpp_cannot_read(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "int-alpha.gguf", {"blk.0.attn_q.weight": (576, 576)}, alpha=8)
    with pytest.raises(AdapterError, match="32-bit float"):
        read_adapter(path)


def test_missing_alpha_means_strength_alone(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "no-alpha.gguf", {"blk.0.attn_q.weight": (576, 576)}, alpha=None)
    info = read_adapter(path)
    assert info.alpha == 0.0 and info.scale_at(0.3) == pytest.approx(0.3)


def test_architecture_differs(tmp_path: Path, base_header: GGUFHeader) -> None:
    path = _adapter(tmp_path / "q.gguf", {"blk.0.attn_q.weight": (576, 576)}, arch="qwen2")
    problems = check_compatible(read_adapter(path), base_header)
    assert len(problems) == 1 and problems[0].fatal
    assert "qwen2" in problems[0].text and "llama" in problems[0].text


def test_target_missing_in_base(tmp_path: Path, base_header: GGUFHeader) -> None:
    path = _adapter(tmp_path / "deep.gguf", {"blk.0.attn_q.weight": (576, 576),
                                             "blk.40.attn_q.weight": (576, 576)})
    problems = check_compatible(read_adapter(path), base_header)
    assert [p.fatal for p in problems] == [True]
    assert "blk.40.attn_q.weight" in problems[0].text


def test_shape_mismatch(tmp_path: Path, base_header: GGUFHeader) -> None:
    # attn_k is [576, 192] in the model: an adapter for a 576-wide k_proj does not fit.
    path = _adapter(tmp_path / "wide.gguf", {"blk.0.attn_k.weight": (576, 576)})
    problems = check_compatible(read_adapter(path), base_header)
    assert len(problems) == 1 and problems[0].fatal
    assert "[576, 192]" in problems[0].text and "[576, 576]" in problems[0].text


def test_base_name_differs_is_soft(tmp_path: Path, base_header: GGUFHeader) -> None:
    path = _adapter(tmp_path / "named.gguf", {"blk.0.attn_q.weight": (576, 576)},
                    extra={"general.base_model.0.name": "Llama 3 8B"})
    problems = check_compatible(read_adapter(path), base_header)
    assert len(problems) == 1 and not problems[0].fatal
    assert "Llama 3 8B" in problems[0].text


def test_base_name_compared_loosely(tmp_path: Path, base_header: GGUFHeader) -> None:
    path = _adapter(tmp_path / "named.gguf", {"blk.0.attn_q.weight": (576, 576)},
                    extra={"general.base_model.0.name": "smollm2-135m 8k-lc100k-mix1-ep2"})
    assert check_compatible(read_adapter(path), base_header) == []


def test_token_embd_lora_uses_llama_cpp_flipped_layout(tmp_path: Path,
                                                       base_header: GGUFHeader) -> None:
    # llama.cpp: model ne[0] (n_embd) == b.ne[1], model ne[1] (n_vocab) == a.ne[1].
    tensors = {"token_embd.weight.lora_a": np.ones((49152, 2), np.float32),  # ne [2, 49152]
               "token_embd.weight.lora_b": np.ones((576, 2), np.float32)}    # ne [2, 576]
    info = read_adapter(write_adapter_gguf(tmp_path / "emb.gguf", tensors))
    assert info.rank == 2 and info.target_modules == ("token_embd",)
    assert check_compatible(info, base_header) == []
    # One more token in the model: checked flipped, so the n_vocab side does not fit.
    bigger = [TensorInfo(t.name, (576, 49153), t.type_id, t.offset)
              if t.name == "token_embd.weight" else t for t in base_header.tensors]
    problems = check_compatible(info, dataclasses.replace(base_header, tensors=bigger))
    assert len(problems) == 1 and problems[0].fatal
    assert "[576, 49153]" in problems[0].text and "[576, 49152]" in problems[0].text


def test_token_embd_is_known_by_the_end_of_its_name(tmp_path: Path,
                                                    base_header: GGUFHeader) -> None:
    # llama.cpp flips A and B for any tensor whose name ends in token_embd.weight.
    tensors = {"enc.token_embd.weight.lora_a": np.ones((100, 2), np.float32),
               "enc.token_embd.weight.lora_b": np.ones((8, 2), np.float32)}
    info = read_adapter(write_adapter_gguf(tmp_path / "enc.gguf", tensors))
    base = dataclasses.replace(base_header, tensors=[
        TensorInfo("enc.token_embd.weight", (8, 100), 0, 0)])
    assert check_compatible(info, base) == []


def test_moe_factors_with_an_expert_dimension(tmp_path: Path,
                                              base_header: GGUFHeader) -> None:
    # convert_lora_to_gguf stacks the experts' factors: a ne [n_in, r, n_expert],
    # b ne [r, n_out, n_expert]; llama.cpp compares ne[0] and ne[1] only.
    tensors = {"blk.0.ffn_up_exps.weight.lora_a": np.ones((4, 2, 576), np.float32),
               "blk.0.ffn_up_exps.weight.lora_b": np.ones((4, 1536, 2), np.float32)}
    info = read_adapter(write_adapter_gguf(tmp_path / "moe.gguf", tensors))
    assert info.rank == 2 and info.n_params == 4 * 2 * (576 + 1536)
    base = dataclasses.replace(base_header, tensors=[
        TensorInfo("blk.0.ffn_up_exps.weight", (576, 1536, 4), 0, 0)])
    assert check_compatible(info, base) == []
    flat = {"blk.0.attn_q.weight.lora_a": np.ones(576, np.float32),
            "blk.0.attn_q.weight.lora_b": np.ones(576, np.float32)}
    with pytest.raises(AdapterError, match="not matrices"):
        read_adapter(write_adapter_gguf(tmp_path / "flat.gguf", flat))


def test_without_the_tensor_table_only_metadata_is_checked(tmp_path: Path,
                                                           base_header: GGUFHeader) -> None:
    # The first part of a split model whose other parts cannot be read.
    deep = read_adapter(_adapter(tmp_path / "deep.gguf", {"blk.40.attn_q.weight": (576, 576)}))
    assert check_compatible(deep, base_header, tensors=False) == []
    assert check_compatible(deep, base_header)[0].fatal
    qwen = read_adapter(_adapter(tmp_path / "q.gguf", {"blk.0.attn_q.weight": (576, 576)},
                                 arch="qwen2"))
    assert check_compatible(qwen, base_header, tensors=False)[0].fatal


def test_a_base_that_is_an_adapter(converted: Path, tmp_path: Path) -> None:
    from workbench.models.gguf import read_header

    other = tmp_path / "other.gguf"
    shutil.copy(converted, other)
    problems = check_compatible(read_adapter(converted), read_header(other))
    assert len(problems) == 1 and "itself an adapter" in problems[0].text
