"""llama.cpp's log, kept in memory by the engine worker.

llama.cpp says why a load failed only in its log (the Python binding raises a bare
"Failed to create llama_context"), and llama-cpp-python silences that log unless it is
verbose. The worker routes the log here instead, so a failed load can name the memory
llama.cpp asked for. Only the engine worker calls `capture()`.
"""

from __future__ import annotations

import collections
import ctypes
from typing import Any

_KEPT = 2000  # lines: a model load logs a few hundred
_lines: collections.deque[str] = collections.deque(maxlen=_KEPT)
_count = 0  # lines ever appended, for since()
_partial = ""  # text of a line still being written (llama.cpp logs in pieces)
_callback: Any = None  # the ctypes callback; referenced so it is never collected


def _on_log(_level: int, text: bytes | None, _user_data: Any) -> None:
    global _count, _partial
    if not text:
        return
    _partial += text.decode("utf-8", errors="replace")
    *done, _partial = _partial.split("\n")
    for line in done:
        _lines.append(line)
        _count += 1


def capture() -> None:
    """Route llama.cpp's log to this module (once per process; it replaces the binding's
    own handler, which would print only when verbose)."""
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    _callback = llama_cpp.llama_log_callback(_on_log)
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def mark() -> int:
    """A position in the log: since(mark()) later gives what was logged in between."""
    return _count


def since(position: int) -> str:
    """The lines logged after `position` (as many of them as are still kept)."""
    kept = list(_lines)
    new = min(_count - position, len(kept))
    lines = kept[len(kept) - new:] if new > 0 else []
    if _partial:
        lines.append(_partial)
    return "\n".join(lines)
