# Before any of the UI emits a signal: PySide6 6.12.0 loses a reference to True per emit.
from workbench.ui.qt_fixes import fix_signal_refcounts

fix_signal_refcounts()
