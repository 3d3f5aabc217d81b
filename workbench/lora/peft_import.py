"""Convert a PEFT LoRA adapter (a folder with adapter_config.json and
adapter_model.safetensors) into a GGUF LoRA for a given base GGUF model, without torch.

What llama.cpp's convert_lora_to_gguf.py does, for the architectures whose conversion we
can reproduce exactly:
- names: PEFT key `base_model.model.<module>.lora_A.weight` -> GGUF `<tensor>.lora_a`,
  where <tensor> is gguf's name for `<module>.weight` (gguf.get_tensor_name_map);
- layouts: lora_A (r, n_in) and lora_B (n_out, r) are written as they are (numpy shapes;
  GGUF dims [n_in, r] and [r, n_out], what src/llama-adapter.cpp checks);
- rotary layout: where the base model's converter permutes the rows of q_proj/k_proj
  (LlamaModel.modify_tensors), the same permutation is applied to lora_B's rows, since
  permute(B·A) = permute(B)·A; lora_A is left alone (LoraTorchTensor.permute/reshape
  reshape and permute only B when the row axis moves).
- scale: llama.cpp applies s·α/r with one α per adapter and r read from each tensor;
  PEFT applies α_m/r_m (or α_m/√r_m with rsLoRA) per module. We write α (α·√r for rsLoRA)
  and multiply lora_B by the remaining factor for any module whose scale would differ, so
  the adapter computes the same thing at every strength.

Usage: python -m workbench.lora.peft_import ADAPTER_DIR BASE.gguf OUT.gguf [--f16]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench.lora.gguf_lora import (
    KEY_ADAPTER_TYPE,
    KEY_ALPHA,
    AdapterError,
    AdapterInfo,
    check_compatible,
    read_adapter,
)
from workbench.lora.peft_config import (
    CONFIG_NAME,
    PeftLoraConfig,
    read_peft_config,
    refuse_unsupported,
)
from workbench.lora.safetensors_io import read_safetensors
from workbench.models.gguf import GGUFError, GGUFHeader
from workbench.models.split import read_model_header

log = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
# Architectures whose llama.cpp converter maps HF weights to GGUF by name alone, except
# for the q/k row permutation of LlamaModel (True: permuted). Verified in llama.cpp's
# conversion/llama.py (LlamaModel, SmolLM3Model(LlamaModel), undo_permute = True) and
# conversion/qwen.py (Qwen2Model, Qwen3Model: no change to the projections).
PERMUTES_QK: dict[str, bool] = {"llama": True, "smollm3": True, "qwen2": False, "qwen3": False}

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
_RELATIVE_TOLERANCE = 1e-6


@dataclass
class _Factors:
    """One adapted module: PEFT's factors, then the GGUF tensor they apply to."""

    module: str  # "model.layers.0.self_attn.q_proj"
    a: np.ndarray | None = None  # (r, n_in)
    b: np.ndarray | None = None  # (n_out, r)
    gguf_name: str = ""  # "blk.0.attn_q.weight"
    tensor_kind: Any = None  # gguf.MODEL_TENSOR


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's LlamaModel.permute, in numpy: reorder rows from HF's rotary layout
    (halves) to GGML's (interleaved pairs), head by head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def _adapter_folder(path: Path) -> Path:
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        return path.parent
    if not path.is_dir():
        raise AdapterError(f"{path} is not a folder.",
                           "Choose the folder PEFT saved the adapter into.")
    return path


def _weights_file(folder: Path) -> Path:
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        return weights
    if (folder / "adapter_model.bin").exists():
        raise AdapterError(
            f"{folder.name} holds adapter_model.bin (a pickled PyTorch file), which is not "
            "read without PyTorch and can run code when loaded.",
            "Save the adapter again with save_pretrained(..., safe_serialization=True).")
    raise AdapterError(f"{folder.name} has no {WEIGHTS_NAME}.",
                       "Choose the folder PEFT saved the adapter into.")


def _read_base(path: Path) -> GGUFHeader:
    try:
        base = read_model_header(path)
    except GGUFError as exc:
        raise AdapterError(str(exc), "Choose the base model's .gguf file.") from exc
    if base.metadata.get("general.type") == "adapter":
        raise AdapterError(f"{path.name} is an adapter, not a base model.",
                           "Choose the model the adapter was trained on.")
    return base


def _head_counts(base: GGUFHeader) -> tuple[int, int]:
    arch = base.architecture
    n_head = base.metadata.get(f"{arch}.attention.head_count")
    n_head_kv = base.metadata.get(f"{arch}.attention.head_count_kv", n_head)
    for value in (n_head, n_head_kv):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise AdapterError(
                f"{base.path.name} does not give its attention head counts as plain numbers, "
                "which the q/k conversion needs.", "Use a GGUF made by a current converter.")
    return n_head, n_head_kv


def _block_count(base: GGUFHeader) -> int:
    value = base.metadata.get(f"{base.architecture}.block_count")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterError(f"{base.path.name} does not say how many layers it has.",
                           "Use a GGUF made by a current converter.")
    return value


def _collect(tensors: dict[str, np.ndarray]) -> list[_Factors]:
    """Pair lora_A/lora_B by module; refuse anything that is not a LoRA factor."""
    by_module: dict[str, _Factors] = {}
    for key, array in tensors.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise _not_lora(key, tensors)
        f = by_module.setdefault(m["module"], _Factors(m["module"]))
        if array.ndim != 2:
            raise AdapterError(f"{key} is not a matrix (shape {list(array.shape)}).",
                               "Only LoRA on linear layers can be converted.")
        if m["side"] == "A":
            f.a = array
        else:
            f.b = array
    for f in by_module.values():
        if f.a is None or f.b is None:
            have, lack = ("lora_A", "lora_B") if f.b is None else ("lora_B", "lora_A")
            raise AdapterError(f"The adapter has {have} but no {lack} for {f.module}.",
                               "The adapter file is incomplete; save it again.")
    if not by_module:
        raise AdapterError(f"{WEIGHTS_NAME} holds no LoRA tensors.",
                           "Choose the folder of a trained LoRA adapter.")
    return list(by_module.values())


def _not_lora(key: str, tensors: dict[str, np.ndarray]) -> AdapterError:
    if "lora_embedding_" in key:
        return AdapterError(
            f"The adapter changes the token embeddings ({key}), which this importer does "
            "not convert.", "Train with LoRA on the attention and MLP projections only.")
    if "lora_magnitude_vector" in key:
        return AdapterError("The adapter is a DoRA (it has magnitude vectors), which "
                            "llama.cpp cannot apply.", "Train a plain LoRA (use_dora=False).")
    if key.endswith(".lora_B.bias"):
        return AdapterError("The adapter has biases on lora_B (lora_bias), which llama.cpp "
                            "cannot apply.", "Train with lora_bias=False.")
    others = [k for k in tensors if not _LORA_KEY.match(k)]
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return AdapterError(
        f"The adapter holds tensors that are not LoRA factors: {shown} (fully trained "
        "modules, biases or norms?).",
        "Train without modules_to_save and with bias='none', or merge the adapter with "
        "PEFT and convert the merged model.")


def _map_to_base(factors: list[_Factors], base: GGUFHeader, config: PeftLoraConfig) -> None:
    """Fill in GGUF names; refuse modules the base lacks and shapes that do not fit."""
    import gguf

    arch_ids = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    name_map = gguf.get_tensor_name_map(arch_ids[base.architecture], _block_count(base))
    base_tensors = {t.name: t for t in base.tensors}
    refused_heads = (gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.OUTPUT)
    for f in factors:
        found = name_map.get_type_and_name(f"{f.module}.weight", try_suffixes=(".weight",))
        if found is not None and found[0] in refused_heads:
            raise AdapterError(
                f"The adapter changes {f.module} (the embeddings or the output head), which "
                "this importer does not convert.",
                "Train with LoRA on the attention and MLP projections only.")
        weight = base_tensors.get(found[1]) if found is not None else None
        if found is None or weight is None:
            raise AdapterError(
                f"The adapter changes {f.module}, which {base.path.name} does not have.",
                "Choose the model the adapter was trained on (same architecture and size).")
        f.tensor_kind, f.gguf_name = found
        assert f.a is not None and f.b is not None
        rank = f.a.shape[0]
        if f.b.shape[1] != rank:
            raise AdapterError(
                f"lora_A and lora_B of {f.module} disagree on the rank "
                f"({f.a.shape[0]} and {f.b.shape[1]}).", "The adapter file is damaged.")
        expected = config.rank_for(f.module)
        if rank != expected:
            raise AdapterError(
                f"{f.module} has rank {rank}, but {CONFIG_NAME} says {expected}.",
                "The config does not belong to these weights; save the adapter again.")
        # Base dims are GGUF ne = [n_in, n_out]; numpy shapes are (r, n_in) and (n_out, r).
        if len(weight.shape) != 2 or (f.a.shape[1], f.b.shape[0]) != weight.shape:
            raise AdapterError(
                f"{f.module} is {f.b.shape[0]}×{f.a.shape[1]} (out×in) in the adapter but "
                f"{_out_by_in(weight.shape)} in {base.path.name}.",
                "Choose the model the adapter was trained on (same size).")


def _out_by_in(ne: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in reversed(ne)) + (" (out×in)" if len(ne) == 2 else "")


def _written_alpha(config: PeftLoraConfig) -> float:
    # rsLoRA scales by α/√r; llama.cpp by alpha/r: alpha = α·√r gives α·√r/r = α/√r.
    return config.lora_alpha * math.sqrt(config.r) if config.use_rslora else config.lora_alpha


def _compensate_scales(factors: list[_Factors], config: PeftLoraConfig, alpha: float) -> None:
    """Scale lora_B where PEFT's per-module factor differs from llama.cpp's alpha/r."""
    for f in factors:
        assert f.b is not None
        rank = f.b.shape[1]
        wanted = config.scaling_for(f.module, rank)
        ratio = wanted / (alpha / rank)
        if abs(ratio - 1.0) > _RELATIVE_TOLERANCE:
            f.b = f.b * ratio
            log.info("%s: lora_B scaled by %.6g (PEFT scale %.6g, one alpha for all)",
                     f.module, ratio, wanted)


def _apply_rotary_permutation(factors: list[_Factors], base: GGUFHeader) -> None:
    import gguf

    if not PERMUTES_QK[base.architecture]:
        return
    n_head, n_head_kv = _head_counts(base)
    heads_of = {gguf.MODEL_TENSOR.ATTN_Q: n_head, gguf.MODEL_TENSOR.ATTN_K: n_head_kv}
    for f in factors:
        heads = heads_of.get(f.tensor_kind)
        if heads is None:
            continue
        assert f.b is not None
        if f.b.shape[0] % (2 * heads):
            raise AdapterError(
                f"{f.module} has {f.b.shape[0]} outputs, not a multiple of 2×{heads} heads.",
                "Choose the model the adapter was trained on.")
        # q: permute(w, n_head, n_head); k: permute(w, n_head, n_head_kv) - as the base.
        f.b = permute(f.b, n_head, heads)


def _base_hints(config: PeftLoraConfig, base: GGUFHeader) -> tuple[str | None, str | None]:
    """(name, repo url) of the base model, for general.base_model.0.*."""
    name = base.metadata.get("general.name")
    repo = config.base_model_name_or_path
    url = None
    # A Hub id ("org/name"), not a local path: recorded as a link, nothing is fetched.
    if repo and re.fullmatch(r"[\w.-]+/[\w.-]+", repo) and not Path(repo).exists():
        url = f"https://huggingface.co/{repo}"
    return (name if isinstance(name, str) and name else None), url


def _write_gguf(path: Path, factors: list[_Factors], base: GGUFHeader,
                config: PeftLoraConfig, alpha: float, adapter_name: str,
                out_type: Literal["f32", "f16"]) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, base.architecture)  # writes general.architecture
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(KEY_ADAPTER_TYPE, "lora")
    writer.add_float32(KEY_ALPHA, alpha)
    writer.add_name(adapter_name)
    base_name, base_url = _base_hints(config, base)
    if base_name or base_url:
        writer.add_base_model_count(1)
        if base_name:
            writer.add_base_model_name(0, base_name)
        if base_url:
            writer.add_base_model_repo_url(0, base_url)
    if config.alora_invocation_tokens:
        writer.add_key_value(gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS,
                             list(config.alora_invocation_tokens),
                             gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32)
    dtype = np.float16 if out_type == "f16" else np.float32
    for f in factors:
        assert f.a is not None and f.b is not None
        writer.add_tensor(f"{f.gguf_name}.lora_a", np.ascontiguousarray(f.a, dtype=dtype))
        writer.add_tensor(f"{f.gguf_name}.lora_b", np.ascontiguousarray(f.b, dtype=dtype))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _block_order(f: _Factors) -> tuple[int, str]:
    m = re.match(r"blk\.(\d+)\.", f.gguf_name)
    return (int(m.group(1)) if m else -1, f.gguf_name)


def convert_peft_adapter(adapter_dir: str | os.PathLike[str],
                         base_gguf_path: str | os.PathLike[str],
                         out_path: str | os.PathLike[str],
                         out_type: Literal["f32", "f16"] = "f32") -> AdapterInfo:
    """Convert the PEFT LoRA in `adapter_dir` for the model `base_gguf_path`, writing a
    GGUF LoRA to `out_path`. Raises AdapterError; a failure leaves nothing at out_path."""
    folder = _adapter_folder(Path(adapter_dir))
    base_path, out = Path(base_gguf_path), Path(out_path)
    if out.exists() and base_path.exists() and out.resolve() == base_path.resolve():
        raise AdapterError("The output file is the base model itself.",
                           "Choose another name for the adapter file.")
    config = read_peft_config(folder)
    refuse_unsupported(config)
    if config.raw.get("invocation_string") and not config.alora_invocation_tokens:
        raise AdapterError("The adapter is an activated LoRA whose invocation is given as "
                           "text only; converting it needs the model's tokenizer.",
                           "Add alora_invocation_tokens to adapter_config.json.")
    if config.lora_alpha == 0:
        raise AdapterError("The adapter's lora_alpha is 0, so it changes nothing.",
                           f"Check lora_alpha in {CONFIG_NAME}.")
    weights = _weights_file(folder)
    base = _read_base(base_path)
    if base.architecture not in PERMUTES_QK:
        supported = ", ".join(sorted(PERMUTES_QK))
        raise AdapterError(
            f"Adapters for the {base.architecture} architecture cannot be imported yet "
            f"(supported: {supported}).",
            "Convert it with llama.cpp's convert_lora_to_gguf.py, then open the .gguf.")
    factors = _collect(read_safetensors(weights))
    _map_to_base(factors, base, config)
    factors = [_as_float32(f) for f in sorted(factors, key=_block_order)]
    alpha = _written_alpha(config)
    _compensate_scales(factors, config, alpha)
    _apply_rotary_permutation(factors, base)
    return _write_and_check(out, factors, base, config, alpha, folder.name, out_type)


def _as_float32(f: _Factors) -> _Factors:
    assert f.a is not None and f.b is not None
    f.a, f.b = f.a.astype(np.float32), f.b.astype(np.float32)
    return f


def _write_and_check(out: Path, factors: list[_Factors], base: GGUFHeader,
                     config: PeftLoraConfig, alpha: float, adapter_name: str,
                     out_type: Literal["f32", "f16"]) -> AdapterInfo:
    out.parent.mkdir(parents=True, exist_ok=True)
    # A temporary file beside the target, renamed into place only when complete.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_gguf(tmp, factors, base, config, alpha, adapter_name, out_type)
        info = read_adapter(tmp)
        fatal = [p.text for p in check_compatible(info, base) if p.fatal]
        if fatal:  # a bug here, not the user's: the checks above should have caught it
            raise AdapterError("The converted adapter does not fit the model: "
                               + " ".join(fatal), "Please report this.")
        # mkstemp makes the file private (0600); the adapter is an ordinary file.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return read_adapter(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.lora.peft_import",
        description="Convert a PEFT LoRA adapter folder into a GGUF LoRA for a base model.")
    parser.add_argument("adapter_dir", type=Path,
                        help="folder with adapter_config.json and adapter_model.safetensors")
    parser.add_argument("base", type=Path, help="the base model's .gguf file")
    parser.add_argument("out", type=Path, help="the .gguf adapter file to write")
    parser.add_argument("--f16", action="store_true", help="store float16 (default float32)")
    args = parser.parse_args(argv)
    try:
        info = convert_peft_adapter(args.adapter_dir, args.base, args.out,
                                    out_type="f16" if args.f16 else "f32")
    except AdapterError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    print(f"Wrote {info.path} ({info.file_size:,} bytes): rank {info.rank}, "
          f"alpha {info.alpha:g}, {len(info.tensors)} tensors in {info.n_layers_touched} "
          f"layers ({', '.join(info.target_modules)}), {info.n_params:,} parameters.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
