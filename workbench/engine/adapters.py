"""Can a GGUF LoRA adapter be applied to the loaded model? Decided from headers alone.

llama.cpp refuses an unfit adapter as well, but it only logs why ("model arch and LoRA arch
mismatch") and hands back NULL. These checks mirror `llama_adapter_lora_init`
(src/llama-adapter.cpp) so the refusal says why in words a person can act on, and they cost
a header read instead of reading the weights. No llama.cpp here: testable without a process.

Shapes are in GGUF order (ne[0] first, ne[0] = the input width of a weight). A LoRA pair
for a base weight of shape [n_in, n_out] is lora_a [n_in, r] and lora_b [r, n_out]; for
token_embd ([n_embd, n_vocab]) A and B swap roles: lora_a [r, n_vocab], lora_b [r, n_embd].
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from workbench.models.gguf import GGUF_MAGIC, GGUFError, GGUFHeader, read_header

LORA_A, LORA_B = ".lora_a", ".lora_b"
_WRONG_MODEL_HINT = ("A LoRA adapter fits only the model it was trained on. Load that model, "
                     "or choose an adapter made for this one.")
_DAMAGED_HINT = "The file is damaged or was not written by a LoRA converter. Convert it again."


class AdapterRefused(Exception):
    """The adapter cannot be applied. The message says why, the hint what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def read_adapter_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """The adapter file's header; AdapterRefused if it is missing, not GGUF or truncated."""
    p = Path(path)
    if not p.is_file():
        what = "does not exist" if not p.exists() else "is not a file"
        raise AdapterRefused(f"The adapter file {p} {what}.",
                             "It may have been moved or deleted. Choose the file again.")
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise AdapterRefused(f"Cannot read the adapter file {p.name}: {exc.strerror}.") from exc
    if magic != GGUF_MAGIC:
        # The usual case: a PEFT adapter (adapter_model.safetensors) picked as it is.
        raise AdapterRefused(
            f"{p.name} is not a GGUF file, so llama.cpp cannot apply it as an adapter.",
            "Convert a PEFT/Hugging Face adapter with llama.cpp's convert_lora_to_gguf.py.")
    try:
        return read_header(p)
    except GGUFError as exc:
        raise AdapterRefused(str(exc), "Download or convert the adapter again.") from exc


def check_adapter(header: GGUFHeader, model_arch: str,
                  base_shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Raise AdapterRefused unless `header` is a LoRA adapter that fits the model.

    `base_shapes` maps the model's tensor names to their GGUF shapes; None skips the
    per-tensor checks (llama.cpp still makes them).
    """
    name = header.path.name
    general_type = header.metadata.get("general.type")
    if general_type != "adapter":
        if general_type == "model" or (general_type is None and _looks_like_model(header)):
            raise AdapterRefused(
                f"{name} is a model, not a LoRA adapter.",
                "Load it as a model from the Library. Here, choose a LoRA adapter (.gguf) "
                "made for the loaded model.")
        raise AdapterRefused(f"{name} is not a LoRA adapter (its general.type is "
                             f"{general_type!r}, not 'adapter').", _DAMAGED_HINT)
    adapter_type = header.metadata.get("adapter.type")
    if adapter_type != "lora":
        raise AdapterRefused(f"{name} is a {adapter_type!r} adapter; only LoRA adapters can be "
                             "applied.", "Choose a LoRA adapter.")
    arch = header.metadata.get("general.architecture")
    if arch != model_arch:
        raise AdapterRefused(
            f"This adapter was made for architecture {arch!r}; the loaded model is "
            f"{model_arch!r}.", _WRONG_MODEL_HINT)

    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for t in header.tensors:
        for suffix in (LORA_A, LORA_B):
            if t.name.endswith(suffix):
                pairs.setdefault(t.name[:-len(suffix)], {})[suffix] = t.shape
                break
        else:
            if t.name.endswith("_norm.weight"):
                continue  # llama.cpp ignores adapted norm vectors; so do we
            raise AdapterRefused(f"{name} holds a tensor {t.name!r} that is not a LoRA weight "
                                 "(their names end in .lora_a or .lora_b).", _DAMAGED_HINT)
    if not pairs:
        raise AdapterRefused(f"{name} holds no LoRA weights.", _DAMAGED_HINT)
    for base, pair in sorted(pairs.items()):
        a, b = pair.get(LORA_A), pair.get(LORA_B)
        if a is None or b is None:
            missing = LORA_A if a is None else LORA_B
            raise AdapterRefused(f"{name} lacks {base}{missing}, the other half of its LoRA "
                                 f"weight for {base}.", _DAMAGED_HINT)
        if len(a) < 2 or len(b) < 2:
            raise AdapterRefused(f"{name} has a LoRA weight for {base} with too few "
                                 "dimensions.", _DAMAGED_HINT)
        if base_shapes is None:
            continue
        shape = base_shapes.get(base)
        if shape is None:
            raise AdapterRefused(
                f"{name} adapts the tensor {base}, which the loaded model does not have.",
                _WRONG_MODEL_HINT)
        if len(shape) < 2:
            raise AdapterRefused(f"{name} adapts {base}, which is not a weight matrix in the "
                                 "loaded model.", _WRONG_MODEL_HINT)
        if base.endswith("token_embd.weight"):
            # llama.cpp applies this one transposed (a lookup, not a matmul).
            fits = shape[0] == b[1] and shape[1] == a[1]
            expects = (b[1], a[1])
        else:
            fits = shape[0] == a[0] and shape[1] == b[1]
            expects = (a[0], b[1])
        if not fits:
            raise AdapterRefused(
                f"{name} adapts {base} as a {expects[0]}×{expects[1]} weight, but in the "
                f"loaded model it is {shape[0]}×{shape[1]}: the adapter was made for a "
                "different model or size.",
                _WRONG_MODEL_HINT)
        if not base.endswith("token_embd.weight") and a[1] != b[0]:
            raise AdapterRefused(
                f"{name} has LoRA halves of different rank for {base} ({a[1]} and {b[0]}).",
                "The adapter may come from an old converter; convert it again with a current "
                "llama.cpp.")


def _looks_like_model(header: GGUFHeader) -> bool:
    """An older GGUF without general.type: a model has plain weights, an adapter none."""
    return any(t.name.endswith(".weight") for t in header.tensors)
