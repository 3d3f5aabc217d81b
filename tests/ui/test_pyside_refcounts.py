"""Signals keep True's and False's reference counts right. PySide6 6.12.0 did not: its
emit() and disconnect() return True/False without a reference of their own, and on Python
3.11 the app aborted at exit ("Fatal Python error: bool_dealloc") after some chatting.
pyproject.toml keeps it out; these fail on a PySide that does it again."""

from __future__ import annotations

import sys
import warnings

from PySide6.QtCore import QObject, Signal

CALLS = 2000


class Source(QObject):
    plain = Signal()
    number = Signal(int)
    anything = Signal(object)
    text = Signal(str)


def bools() -> int:
    return sys.getrefcount(True) + sys.getrefcount(False)


def test_emit_keeps_the_count_of_true(qapp) -> None:
    source, seen = Source(), []
    source.number.connect(seen.append)
    before = bools()
    for i in range(CALLS):
        source.number.emit(i)
        source.plain.emit()
    # Unfixed, 2 * CALLS references lost; a few either way are other code's.
    assert abs(bools() - before) < 50
    assert len(seen) == CALLS


def test_disconnect_keeps_the_count_of_true_and_false(qapp) -> None:
    source = Source()

    def slot() -> None:
        pass

    before = bools()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Failed to disconnect"
        for _ in range(CALLS // 2):
            source.plain.connect(slot)
            assert source.plain.disconnect(slot) is True
            assert source.plain.disconnect(slot) is False
    assert abs(bools() - before) < 50
