"""Opening a model with llama.cpp in the engine worker, and saying why it failed.

llama-cpp-python raises one of two bare messages ("Failed to load model from file",
"Failed to create llama_context"); the reasons are in llama.cpp's log (llama_log). A
context that does not fit is not a damaged file: the message names the context size and
the memory llama.cpp asked for, and the hint the fixes.
"""

from __future__ import annotations

import re
from typing import Any

from workbench.engine import llama_log
from workbench.engine.protocol import LoadSpec
from workbench.models.gguf import GGUFHeader

_KV_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
_BUFFER = re.compile(r"failed to allocate (\S+) buffer of size (\d+)")
_CONTEXT = re.compile(r"failed to initialize the context: (.+)")
_MODEL = re.compile(r"error loading model: (.+)")


class LoadFailure(Exception):
    """The model could not be opened; `message` and `hint` are written for users."""

    def __init__(self, kind: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


def open_llama(spec: LoadSpec, header: GGUFHeader, threads: int) -> Any:
    """A llama_cpp.Llama for `spec`; raises LoadFailure saying why not."""
    from llama_cpp import Llama

    llama_log.capture()
    position = llama_log.mark()
    try:
        return Llama(
            model_path=spec.model_path,
            n_ctx=spec.n_ctx,
            n_gpu_layers=spec.n_gpu_layers,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=spec.n_batch,
            n_ubatch=spec.n_ubatch,
            flash_attn=spec.flash_attn,
            type_k=_KV_TYPES[spec.type_k],
            type_v=_KV_TYPES[spec.type_v],
            verbose=False,
        )
    except Exception as exc:
        raise load_failure(spec, header, str(exc), llama_log.since(position)) from exc


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def load_failure(spec: LoadSpec, header: GGUFHeader, error: str, log: str) -> LoadFailure:
    """What to tell the user about a failed Llama(...): `error` is the binding's exception
    text, `log` what llama.cpp logged meanwhile."""
    context = _CONTEXT.search(log)
    if context is not None or "llama_context" in error:
        return _context_failure(spec, header, log, context.group(1) if context else "")
    cause = _MODEL.search(log)
    detail = f" llama.cpp said: {cause.group(1).strip()}." if cause else ""
    return LoadFailure(
        "load_failed", f"llama.cpp could not load {header.path.name}.{detail}",
        "The file may be damaged or made for a newer llama.cpp: download it again, or "
        "choose another quantization of the model.")


def _context_failure(spec: LoadSpec, header: GGUFHeader, log: str,
                     reason: str) -> LoadFailure:
    buffers = _BUFFER.findall(log)
    wanted = ""
    if buffers:
        device, size = buffers[-1]
        wanted = f" It asked for {fmt_bytes(int(size))} of {device} memory"
        wanted += f" ({reason.strip()}) and could not get it." if reason else \
            " and could not get it."
    elif reason:
        wanted = f" llama.cpp said: {reason.strip()}."
    trained = header.context_length
    smaller = (f"a smaller context (the model was trained on {trained:,} tokens)"
               if trained and trained < spec.n_ctx else "a smaller context")
    fixes = [smaller]
    if spec.type_k == "f16" or spec.type_v == "f16":
        fixes.append("a quantized KV cache (q8_0 halves it; a quantized V cache needs flash "
                     "attention)")
    if spec.n_gpu_layers != 0:
        fixes.append("fewer GPU layers")
    return LoadFailure(
        "load_failed",
        f"llama.cpp could not create a context of {spec.n_ctx:,} tokens for "
        f"{header.name}.{wanted}",
        "Load it with " + ", ".join(fixes[:-1]) + (" or " if len(fixes) > 1 else "")
        + fixes[-1] + ". The file itself is fine.")
