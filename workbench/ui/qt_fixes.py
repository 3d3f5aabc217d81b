"""Work-arounds for bugs in the Qt bindings that our code cannot avoid by writing it otherwise.

PySide6 6.12.0's `SignalInstance.emit()` and `SignalInstance.disconnect()` return `True` or
`False` without taking a reference to it (6.11 does not). Every such call from Python so
takes one reference from `True` for good; before Python 3.12 made `True` immortal, its count
reaches zero after some thousands of calls (two emits per streamed token) and the interpreter
aborts with "Fatal Python error: bool_dealloc", mid-chat or, sooner, at exit when the
legitimate references go. Every signal of the app is emitted so, so no call site can dodge
it: both methods are wrapped to add the missing reference, where a probe finds it missing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

_PROBE_CALLS = 64


@functools.cache
def _py_incref() -> Callable[[object], None]:
    """Py_IncRef, to take the reference a call failed to return (looked up only where the
    bug is)."""
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None
    return incref


class _Probe(QObject):
    sig = Signal()


def _noop() -> None:
    pass


def _returns_borrowed(call: Callable[[], object]) -> bool:
    """Whether `call`, which returns a bool, returns it without a reference of its own."""
    before = sys.getrefcount(True) + sys.getrefcount(False)
    held = [call() for _ in range(_PROBE_CALLS)]
    if not all(isinstance(result, bool) for result in held):
        return False
    # Each held result owns one reference if it was given one. Half the count, not all of
    # it, so that another thread touching True or False meanwhile cannot flip the answer.
    gained = sys.getrefcount(True) + sys.getrefcount(False) - before
    borrowed = gained < _PROBE_CALLS // 2
    if borrowed:
        for result in held:  # give back what the probe itself took
            _py_incref()(result)
    return borrowed


def _probe_calls() -> tuple[bool, bool]:
    """(emit borrows, disconnect borrows) for this PySide."""
    if sys.version_info >= (3, 12):  # True and False are immortal there: harmless
        return False, False
    probe = _Probe()

    def reconnect() -> object:
        probe.sig.connect(_noop)
        return probe.sig.disconnect(_noop)

    return _returns_borrowed(probe.sig.emit), _returns_borrowed(reconnect)


def fix_signal_refcounts() -> bool:
    """Make SignalInstance.emit() and .disconnect() keep the bools' counts right, where they
    do not; idempotent. Returns whether the wrappers are installed."""
    if getattr(SignalInstance.emit, "_workbench_fixed", False):
        return True
    emit_borrows, disconnect_borrows = _probe_calls()
    if not (emit_borrows or disconnect_borrows):
        return False
    incref = _py_incref()
    original_emit = SignalInstance.emit
    original_connect = SignalInstance.connect
    original_disconnect = SignalInstance.disconnect

    def emit(self: SignalInstance, *args: Any) -> Any:
        result = original_emit(self, *args)
        if emit_borrows:
            incref(result)  # the reference emit() should have returned
        return result

    def disconnect_once(self: SignalInstance, *args: Any) -> Any:
        result = original_disconnect(self, *args)
        if disconnect_borrows:
            incref(result)
        return result

    # `other.sig.emit` given as a slot is now a Python method of a SignalInstance, which
    # connect() cannot hold (it takes a weak reference to a method's object, and a
    # SignalInstance has none). Connect the signal itself instead: Qt forwards it in C++
    # without calling emit(). Where Qt refuses (the argument types differ), connect the
    # built-in emit, as before (which then loses a reference to True per forwarded call).
    def target(slot: Any) -> SignalInstance | None:
        return slot.__self__ if getattr(slot, "__func__", None) is emit else None

    def connect(self: SignalInstance, slot: Any, *args: Any, **kwargs: Any) -> Any:
        signal = target(slot)
        if signal is None:
            return original_connect(self, slot, *args, **kwargs)
        try:
            return original_connect(self, signal, *args, **kwargs)
        except RuntimeError:
            return original_connect(self, original_emit.__get__(signal), *args, **kwargs)

    def disconnect(self: SignalInstance, *args: Any) -> Any:
        signal = target(args[0]) if args else None
        if signal is None:
            return disconnect_once(self, *args)
        with warnings.catch_warnings():  # not connected as a signal: try the other way
            warnings.simplefilter("ignore", RuntimeWarning)
            if disconnect_once(self, signal):
                return True
        return disconnect_once(self, original_emit.__get__(signal))

    emit._workbench_fixed = True  # type: ignore[attr-defined]
    for wrapper, original in ((emit, original_emit), (connect, original_connect),
                              (disconnect, original_disconnect)):
        wrapper.__doc__ = original.__doc__
        setattr(SignalInstance, original.__name__, wrapper)
    return True
