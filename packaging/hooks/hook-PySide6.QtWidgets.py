"""PySide6.QtWidgets, as PyInstaller's own hook collects it, less the Qt plugins and translations
Workbench does not use (qt_trim.py)."""

import os
import sys

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

sys.path.insert(0, os.path.dirname(__file__))
from qt_trim import trimmed  # noqa: E402

hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries, datas = trimmed(binaries), trimmed(datas)
