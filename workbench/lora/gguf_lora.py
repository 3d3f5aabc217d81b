"""Inspect a GGUF LoRA adapter and check it against a base model, before llama.cpp sees it.

llama.cpp (src/llama-adapter.cpp, llama_adapter_lora_init_impl) loads an adapter file whose
metadata says general.type = "adapter", adapter.type = "lora" and general.architecture =
the base model's, and whose tensors come in pairs `<base tensor>.lora_a` / `.lora_b`.
For a base weight with GGUF dims ne = [n_in, n_out] it requires

    lora_a.ne = [n_in, r]      (numpy shape (r, n_in), the PEFT lora_A layout)
    lora_b.ne = [r, n_out]     (numpy shape (n_out, r), the PEFT lora_B layout)

("model_tensor->ne[0] != w.a->ne[0] || model_tensor->ne[1] != w.b->ne[1]" and
"w.a->ne[1] != w.b->ne[0]" are its refusals). token_embd is the exception: its A and B
are flipped (model ne[0] == b.ne[1], model ne[1] == a.ne[1]). Only ne[0] and ne[1] are
compared: a MoE adapter's factors for stacked experts carry a third dimension.

Applied, a LoRA changes a layer's output to  h = W·x + s·(α/r)·B·A·x, with s the strength
the user picks, α = adapter.lora.alpha and r = lora_b.ne[0] of that tensor (llama.cpp's
llama_adapter_lora_weight::get_scale; α = 0 means "no alpha": the factor is s alone).

Every error here is an AdapterError with a message and a hint a person can act on; a
mismatch with a base model is a list of Problems, so the UI can show all of them at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from workbench.models.gguf import GGUFError, GGUFHeader, TensorInfo, read_header

KEY_TYPE = "general.type"
KEY_ARCH = "general.architecture"
KEY_ADAPTER_TYPE = "adapter.type"
KEY_ALPHA = "adapter.lora.alpha"
KEY_BASE_NAME = "general.base_model.0.name"

SUFFIX_A, SUFFIX_B = ".lora_a", ".lora_b"
# llama.cpp skips these (norm vectors from mergekit-extract-lora) instead of refusing.
_IGNORED_SUFFIX = "_norm.weight"
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.(.+?)(?:\.weight)?$")
# The old llama.cpp LoRA format ("finetune" example), no longer loadable.
_GGLA_MAGIC = b"algg"
# llama.cpp flips A and B for a tensor whose name ends so (str_endswith in llama-adapter.cpp).
_TOKEN_EMBD = "token_embd.weight"


def _is_token_embd(base_name: str) -> bool:
    return base_name.endswith(_TOKEN_EMBD)


class AdapterError(Exception):
    """An adapter cannot be used or made. `str()` is the message; `hint` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One reason an adapter does not fit a base model. A soft one (fatal=False) is worth
    showing but does not stop llama.cpp from loading the adapter."""

    text: str
    fatal: bool = True


class LoraPair(NamedTuple):
    """One adapted base tensor; shapes are GGUF dims (ne), innermost first."""

    base_name: str
    lora_a_shape: tuple[int, ...]
    lora_b_shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        # llama.cpp reads the rank from b->ne[0] (for token_embd too).
        return self.lora_b_shape[0]


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    file_size: int
    name: str | None  # general.name of the adapter itself
    architecture: str
    base_model_name: str | None  # the model it was made for, where the file says
    alpha: float  # adapter.lora.alpha; 0.0 when absent
    rank: int  # the largest rank among its tensors
    min_rank: int
    target_modules: tuple[str, ...]  # friendly names: "attn_q", "ffn_down", ...
    n_layers_touched: int
    n_params: int  # elements of all lora_a and lora_b tensors
    tensors: tuple[LoraPair, ...]
    notes: tuple[str, ...] = ()  # things worth knowing that are not errors

    @property
    def ranks_differ(self) -> bool:
        return self.min_rank != self.rank

    def scale_at(self, strength: float = 1.0) -> float:
        """What llama.cpp multiplies B·A·x by at `strength` s: s·α/r, or s when α is 0.

        h = W·x + s·(α/r)·B·A·x. Where ranks differ per tensor each tensor uses its own r;
        this is the factor for the largest rank.
        """
        if self.alpha == 0:
            return strength
        return strength * self.alpha / self.rank

    def share_of(self, base_params: int) -> float:
        """The adapter's size as a fraction of the base model's parameter count."""
        return self.n_params / base_params if base_params > 0 else 0.0


def friendly_target(base_name: str) -> str:
    """'blk.3.attn_q.weight' -> 'attn_q'; 'token_embd.weight' -> 'token_embd'."""
    m = _BLOCK_TENSOR.match(base_name)
    if m:
        return m.group(2)
    return base_name.removesuffix(".weight")


def _block_of(base_name: str) -> int | None:
    m = _BLOCK_TENSOR.match(base_name)
    return int(m.group(1)) if m else None


def _read_gguf_header(path: Path) -> GGUFHeader:
    if not path.exists():
        # Full path: the file was chosen earlier (a saved list), so its folder matters.
        raise AdapterError(f"The adapter file {path} does not exist.",
                           "It may have been moved or deleted. Choose the file again.")
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            raise AdapterError(
                f"{path.name} is a PEFT adapter folder, not a GGUF adapter file.",
                "Import it first: it is converted to a .gguf adapter for your base model.")
        raise AdapterError(f"{path} is a folder, not an adapter file.",
                           "Choose the adapter's .gguf file.")
    if not path.is_file():
        raise AdapterError(f"{path} is not a file.", "Choose the adapter's .gguf file.")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise AdapterError(f"Cannot open {path.name}: {exc.strerror}.",
                           "Check that the file exists and can be read.") from exc
    if magic == _GGLA_MAGIC:
        raise AdapterError(
            f"{path.name} is a LoRA in llama.cpp's old format, which llama.cpp no longer loads.",
            "Convert the original PEFT adapter again to get a GGUF adapter.")
    if magic != b"GGUF":
        raise AdapterError(
            f"{path.name} is not a GGUF file.",
            "A LoRA adapter for llama.cpp is a .gguf file; a PEFT adapter folder "
            "(adapter_config.json + adapter_model.safetensors) can be imported.")
    try:
        return read_header(path)
    except GGUFError as exc:
        raise AdapterError(str(exc), "Download or convert the adapter again.") from exc


def _check_metadata(path: Path, header: GGUFHeader) -> tuple[str, float]:
    """(architecture, alpha), refusing what llama.cpp would refuse or crash on."""
    meta = header.metadata
    general_type = meta.get(KEY_TYPE)
    if general_type == "model" or (general_type is None and _looks_like_model(header)):
        # The usual mistake: the base model picked where its adapter belongs.
        why = (f"general.type is {general_type!r}" if general_type is not None
               else "it has plain weights and no general.type")
        raise AdapterError(f"{path.name} is a model, not a LoRA adapter ({why}).",
                           "Choose the adapter file; the model itself is chosen separately.")
    if general_type != "adapter":
        what = f"a {general_type}" if isinstance(general_type, str) else "not marked as an adapter"
        raise AdapterError(
            f"{path.name} is not a LoRA adapter (it is {what}: general.type is "
            f"{general_type!r}, not 'adapter').",
            "Choose the adapter file; the model itself is chosen separately.")
    adapter_type = meta.get(KEY_ADAPTER_TYPE)
    if adapter_type != "lora":
        raise AdapterError(
            f"{path.name} is an adapter, but not a LoRA (adapter.type is {adapter_type!r}).",
            "Only LoRA adapters can be applied; control vectors are loaded elsewhere.")
    arch = meta.get(KEY_ARCH)
    if not isinstance(arch, str) or not arch:
        raise AdapterError(f"{path.name} does not say which model architecture it is for.",
                           "Convert the adapter again with a current converter.")
    alpha = meta.get(KEY_ALPHA, 0.0)
    # llama.cpp reads alpha with gguf_get_val_f32, which aborts the process on any other
    # type: an int, or a float64, must be refused here.
    if isinstance(alpha, bool) or not isinstance(alpha, float) or not _alpha_is_float32(path):
        raise AdapterError(
            f"{path.name} stores its LoRA alpha ({alpha!r}) in a form llama.cpp cannot read "
            "(it needs a 32-bit float).",
            "Convert the adapter again with a current converter.")
    return arch, alpha


def _looks_like_model(header: GGUFHeader) -> bool:
    """An older GGUF without general.type: a model has plain weights, an adapter none."""
    return any(t.name.endswith(".weight") and not t.name.endswith(_IGNORED_SUFFIX)
               for t in header.tensors)


def _alpha_is_float32(path: Path) -> bool:
    """Whether adapter.lora.alpha, if present, is a float32 (our header reader does not
    keep value types). Only called on small files already checked to be adapters."""
    import gguf

    try:
        field = gguf.GGUFReader(path).fields.get(KEY_ALPHA)
    except (OSError, ValueError, IndexError) as exc:  # what gguf raises on a damaged file
        raise AdapterError(f"{path.name} is damaged ({exc}).",
                           "Download or convert the adapter again.") from exc
    return field is None or field.types == [gguf.GGUFValueType.FLOAT32]


def _pair_tensors(path: Path, tensors: list[TensorInfo]) -> tuple[list[LoraPair], int]:
    """LoRA pairs in file order, and how many norm tensors llama.cpp will skip."""
    a_of: dict[str, TensorInfo] = {}
    b_of: dict[str, TensorInfo] = {}
    order: list[str] = []
    skipped = 0
    for t in tensors:
        if t.name.endswith(SUFFIX_A):
            base, side = t.name.removesuffix(SUFFIX_A), a_of
        elif t.name.endswith(SUFFIX_B):
            base, side = t.name.removesuffix(SUFFIX_B), b_of
        elif t.name.endswith(_IGNORED_SUFFIX):
            skipped += 1
            continue
        else:
            raise AdapterError(
                f"{path.name} holds a tensor llama.cpp does not accept in an adapter: "
                f"{t.name} (neither .lora_a nor .lora_b).",
                "The file is not a plain LoRA adapter; convert the adapter again.")
        if base not in a_of and base not in b_of:
            order.append(base)
        side[base] = t
    pairs: list[LoraPair] = []
    for base in order:
        a, b = a_of.get(base), b_of.get(base)
        if a is None or b is None:
            have, lack = ("lora_a", "lora_b") if b is None else ("lora_b", "lora_a")
            raise AdapterError(
                f"{path.name} has {base}.{have} without {base}.{lack}.",
                "The adapter is incomplete or damaged; convert or download it again.")
        # Two dimensions at least; a MoE adapter stacks its experts' factors in a third.
        if len(a.shape) < 2 or len(b.shape) < 2:
            raise AdapterError(
                f"{path.name}: the LoRA tensors of {base} are not matrices "
                f"(lora_a {list(a.shape)}, lora_b {list(b.shape)}).",
                "Convert the adapter again.")
        # The two factors must agree on r: a.ne[1] == b.ne[0]. For token_embd llama.cpp does
        # not check a.ne[0] == b.ne[0], but its graph asserts it (ggml_mul_mat) and would
        # abort the process.
        a_rank = a.shape[0] if _is_token_embd(base) else a.shape[1]
        if a_rank != b.shape[0]:
            raise AdapterError(
                f"{path.name}: lora_a and lora_b of {base} disagree on the rank "
                f"(lora_a {list(a.shape)}, lora_b {list(b.shape)}).",
                "This is not a LoRA that llama.cpp can load (an adapter from the old "
                "'finetune' example?). Convert the original adapter again.")
        pairs.append(LoraPair(base, tuple(a.shape), tuple(b.shape)))
    return pairs, skipped


def read_adapter(path: str | os.PathLike[str]) -> AdapterInfo:
    """Read and check a GGUF LoRA adapter's header. Raises AdapterError."""
    p = Path(path)
    header = _read_gguf_header(p)
    arch, alpha = _check_metadata(p, header)
    pairs, skipped = _pair_tensors(p, header.tensors)
    if not pairs:
        raise AdapterError(f"{p.name} contains no LoRA tensors.",
                           "The adapter is empty or damaged; convert it again.")
    ranks = [pair.rank for pair in pairs]
    notes: list[str] = []
    if min(ranks) != max(ranks):
        notes.append(f"Ranks differ between tensors ({min(ranks)} to {max(ranks)}); "
                     "rank shows the largest.")
    if skipped:
        notes.append(f"{skipped} norm tensor(s) in the file are ignored by llama.cpp.")
    if alpha == 0:
        notes.append("The adapter has no alpha: llama.cpp applies it at the strength alone.")
    blocks = {b for pair in pairs if (b := _block_of(pair.base_name)) is not None}
    base_name = header.metadata.get(KEY_BASE_NAME)
    name = header.metadata.get("general.name")
    return AdapterInfo(
        path=p,
        file_size=header.file_size,
        name=name if isinstance(name, str) and name else None,
        architecture=arch,
        base_model_name=base_name if isinstance(base_name, str) and base_name else None,
        alpha=alpha,
        rank=max(ranks),
        min_rank=min(ranks),
        target_modules=tuple(sorted({friendly_target(pair.base_name) for pair in pairs})),
        n_layers_touched=len(blocks),
        n_params=sum(_elements(pair.lora_a_shape) + _elements(pair.lora_b_shape)
                     for pair in pairs),
        tensors=tuple(pairs),
        notes=tuple(notes),
    )


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _normalized(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _base_names(base: GGUFHeader) -> list[str]:
    """Every name the base model's file gives itself or its own ancestors."""
    meta = base.metadata
    names = [meta.get("general.name"), meta.get("general.basename")]
    count = meta.get("general.base_model.count")
    if isinstance(count, int) and not isinstance(count, bool):
        names += [meta.get(f"general.base_model.{i}.name") for i in range(min(count, 16))]
    return [n for n in names if isinstance(n, str) and n.strip()]


def check_compatible(info: AdapterInfo, base: GGUFHeader, *,
                     tensors: bool = True) -> list[Problem]:
    """Problems applying `info` to the model `base` (empty: it fits). Mirrors the checks
    llama.cpp makes when it loads the adapter; a name mismatch is only a soft problem.

    tensors=False: `base` does not list all of the model's tensors (the first part of a
    split model whose other parts cannot be read), so only its metadata is checked;
    llama.cpp still checks the tensors when it reads the adapter.
    """
    problems: list[Problem] = []
    if base.metadata.get(KEY_TYPE) == "adapter":
        return [Problem(f"{base.path.name} is itself an adapter, not a model to adapt.")]
    if info.architecture != base.architecture:
        problems.append(Problem(
            f"The adapter is for the {info.architecture} architecture, but the model is "
            f"{base.architecture}."))
        return problems  # tensor names mean different things across architectures
    if tensors:
        problems += _tensor_problems(info, base)
    names = _base_names(base)
    if info.base_model_name and names:
        wanted = _normalized(info.base_model_name)
        if all(_normalized(n) != wanted for n in names):
            problems.append(Problem(
                f"The adapter was made for “{info.base_model_name}”; this model is "
                f"“{names[0]}”. If they are the same model under different names, "
                "this is fine.", fatal=False))
    return problems


def _tensor_problems(info: AdapterInfo, base: GGUFHeader) -> list[Problem]:
    """Adapted tensors the model lacks, or has in another shape."""
    problems: list[Problem] = []
    by_name = {t.name: t for t in base.tensors}
    missing: list[str] = []
    for pair in info.tensors:
        weight = by_name.get(pair.base_name)
        if weight is None:
            missing.append(pair.base_name)
            continue
        if len(weight.shape) < 2:
            problems.append(Problem(f"{pair.base_name} in the model is not a matrix."))
            continue
        a, b = pair.lora_a_shape, pair.lora_b_shape
        if _is_token_embd(pair.base_name):
            fits = weight.shape[0] == b[1] and weight.shape[1] == a[1]
        else:
            fits = weight.shape[0] == a[0] and weight.shape[1] == b[1]
        if not fits:
            problems.append(Problem(
                f"{pair.base_name} has shape {list(weight.shape[:2])} in the model, but the "
                f"adapter changes a {_adapted_shape(pair)} matrix."))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                          else "")
        problems.append(Problem(
            f"The model has no tensor {shown}: the adapter was made for a different model "
            "(more layers or other modules)."))
    return problems


def _adapted_shape(pair: LoraPair) -> list[int]:
    a, b = pair.lora_a_shape, pair.lora_b_shape
    if _is_token_embd(pair.base_name):
        return [b[1], a[1]]
    return [a[0], b[1]]
