"""The LoRA adapters llama.cpp has read for the loaded model, and the set applied now.

Whether an adapter fits is decided by workbench.lora.gguf_lora from headers alone, before
llama.cpp sees the file: llama.cpp refuses an unfit adapter too, but only logs why and
hands back NULL (or, for a few faults, aborts the process). The UI makes the same checks.

Only the engine worker uses AdapterSlots. llama_cpp is imported inside its methods, so
importing this module loads no llama.cpp (the app's own process never does).
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.engine.protocol import AdapterSetting
from workbench.lora.gguf_lora import AdapterError, check_compatible, read_adapter
from workbench.models.gguf import GGUFError, GGUFHeader
from workbench.models.split import read_model_header

WRONG_MODEL_HINT = ("A LoRA adapter fits only the model it was trained on. Load that model, "
                    "or choose an adapter made for this one.")


@dataclass(frozen=True)
class _Read:
    """An adapter llama.cpp has read for the model (the model owns and frees it)."""

    ptr: Any  # llama_adapter_lora * (ctypes)
    mtime_ns: int  # of the file when read: a changed file is read again
    size: int


def _address(ptr: Any) -> int:
    """The address a ctypes pointer holds (pointer objects themselves do not compare)."""
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


def _key(path: str) -> str:
    return str(Path(path).expanduser().resolve())


class AdapterSlots:
    """The adapters read for one loaded model, by resolved path, and those applied now.

    Freeing the model frees the adapters still registered with it: with the model, drop
    this object too and never free its pointers again. A new model gets a new one.
    """

    def __init__(self, llm: Any, model_path: str, header: GGUFHeader) -> None:
        self._llm = llm  # llama_cpp.Llama
        self._model_path = model_path
        self._header = header
        # The first part of a split model lists only its own tensors: all parts are read
        # when an adapter first needs them.
        self._full: GGUFHeader | None = (
            header if header.metadata.get("split.count", 1) in (0, 1) else None)
        self._read: dict[str, _Read] = {}
        self._active: tuple[tuple[str, float, int], ...] = ()  # (key, scale, address)

    def apply(self, adapters: Sequence[AdapterSetting]) -> bool:
        """Make exactly those of `adapters` that apply active, at their scales.

        True when the applied set changed: every logit changes with it, so the caller
        empties the KV cache. The same set again is a no-op (llama.cpp compares as a set
        too) and keeps the cache. Raises AdapterError; then the previous set still applies.
        """
        wanted = [a for a in adapters if a.applies]
        for a in wanted:
            if not math.isfinite(a.scale):
                raise AdapterError(f"The scale of {Path(a.path).name} is not a number.",
                                   "Set a scale between -2 and 2.")
        keys = [_key(a.path) for a in wanted]
        if len(set(keys)) < len(keys):
            # llama.cpp keeps one scale per adapter; two would silently become one.
            raise AdapterError("The same adapter file is in the list twice.",
                               "Keep it once, with the scale you want.")
        stale: list[Any] = []
        ptrs = [self._get(a.path, key, stale) for a, key in zip(wanted, keys, strict=True)]
        # Scales as llama.cpp stores them (float32), so an unchanged set compares equal.
        applied = tuple((key, float(ctypes.c_float(a.scale).value), _address(ptr))
                        for a, key, ptr in zip(wanted, keys, ptrs, strict=True))
        changed = sorted(applied) != sorted(self._active)
        if changed:
            import llama_cpp

            n = len(ptrs)
            status = llama_cpp.llama_set_adapters_lora(
                self._llm._ctx.ctx, (llama_cpp.llama_adapter_lora_p_ctypes * n)(*ptrs), n,
                (ctypes.c_float * n)(*(scale for _, scale, _ in applied)))
            if status != 0:
                raise AdapterError(f"llama.cpp could not apply the adapters (error {status}).",
                                   "Try fewer adapters at once.")
            self._active = applied
        # Adapters dropped from the list (not merely disabled) and replaced ones are freed,
        # now that the context no longer points at them.
        listed = {_key(a.path) for a in adapters}
        active = {key for key, _, _ in self._active}
        for key in [k for k in self._read if k not in listed and k not in active]:
            stale.append(self._read.pop(key).ptr)
        _free(stale)
        return changed

    def _get(self, path: str, key: str, stale: list[Any]) -> Any:
        """The adapter at `path` read for the model: from the cache while its file is
        unchanged, else checked and read by llama.cpp. Raises AdapterError."""
        try:
            st: os.stat_result | None = os.stat(key)
        except OSError:
            st = None
        cached = self._read.get(key)
        # A file deleted since it was read is still in memory: a new scale needs no file.
        if cached is not None and (st is None or
                                   (cached.mtime_ns, cached.size) == (st.st_mtime_ns,
                                                                      st.st_size)):
            return cached.ptr
        self._check(path)
        import llama_cpp

        ptr = llama_cpp.llama_adapter_lora_init(self._llm._model.model, key.encode())
        if not ptr:  # a NULL pointer: llama.cpp logged why and freed what it had
            raise AdapterError(f"llama.cpp could not read the adapter {path}.",
                               "The file may be damaged or made for a newer llama.cpp.")
        if cached is not None and any(k == key for k, _, _ in self._active):
            stale.append(cached.ptr)  # still applied: freed once the new set replaces it
        elif cached is not None:
            _free([cached.ptr])
        st = st or os.stat(key)  # None only if the file appeared since: read it now
        self._read[key] = _Read(ptr, st.st_mtime_ns, st.st_size)
        return ptr

    def _check(self, path: str) -> None:
        """Refuse, with the reason, an adapter that does not fit the model."""
        info = read_adapter(path)
        full = self._full_header()
        # Without all tensors (a split model's parts unreadable now) only the metadata is
        # checked; llama.cpp checks the tensors itself.
        problems = check_compatible(info, full or self._header, tensors=full is not None)
        fatal = [p.text for p in problems if p.fatal]
        if fatal:
            raise AdapterError(" ".join(fatal), WRONG_MODEL_HINT)

    def _full_header(self) -> GGUFHeader | None:
        """The model's header with all its tensors (every part of a split model)."""
        if self._full is None:
            try:
                self._full = read_model_header(self._model_path)
            except GGUFError:
                return None  # tried again next time
        return self._full


def _free(ptrs: list[Any]) -> None:
    """Free adapters no context uses any more. In this llama.cpp, llama_adapter_lora_free
    also unregisters the adapter from its model, so the model will not free it again."""
    if not ptrs:
        return
    import llama_cpp

    for ptr in ptrs:
        llama_cpp.llama_adapter_lora_free(ptr)
